"""Issue 16: the PyTorch environment the plugin makes for itself. GPU detection and the CUDA
build with mocked ``nvidia-smi`` outputs, Apple silicon, and a real installation from a Python
without torch (slow): a land-cover run through the worker, a no-op second call, and a cancel
that leaves nothing the plugin would use."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from landfuse.processing import managed_env as me

ROOT = Path(__file__).resolve().parents[2]
BASE_PYTHON = "/usr/bin/python3"  # QGIS's Python on Debian: no torch on this machine


def _smi(stdout: str, code: int = 0):
    def run(command, **kwargs):
        assert command[0] == "nvidia-smi"
        return subprocess.CompletedProcess(command, code, stdout, "")

    return run


def test_gpus_and_the_torch_build_that_fits() -> None:
    gpus = me.detect_nvidia(_smi("NVIDIA GeForce RTX 3060, 575.51.02, 12288\n"))
    assert gpus == [me.GpuInfo("NVIDIA GeForce RTX 3060", "575.51.02", 12288)]
    plan = me.choose_build(gpus)
    assert plan.build == "cuda" and plan.index_url == "https://download.pytorch.org/whl/cu128"
    assert plan.pip_arguments() == [
        f"torch=={me.TORCH_VERSION}", "--index-url", "https://download.pytorch.org/whl/cu128"
    ]  # fmt: skip
    assert me.choose_build([me.GpuInfo("T4", "535.104.05", 15360)]).index_url.endswith("cu121")
    assert me.choose_build([me.GpuInfo("K80", "470.82", 11441)]).index_url.endswith("cu118")
    old = me.choose_build([me.GpuInfo("GTX 680", "390.157", 2048)])
    assert old.build == "cpu" and "update the driver" in old.why
    assert me.detect_nvidia(_smi("", 9)) == []  # no driver: nvidia-smi fails

    def missing(command, **kwargs):
        raise FileNotFoundError("nvidia-smi")

    assert me.detect_nvidia(missing) == []
    assert me.choose_build([]).build == "cpu" and me.choose_build([]).index_url is None
    assert me.is_apple_silicon("Darwin", "arm64") and not me.is_apple_silicon("Darwin", "x86_64")
    assert me.choose_build([], apple_silicon=True).build == "mps"


def test_an_environment_without_its_marker_is_not_used(tmp_path) -> None:
    folder = tmp_path / "env"
    (folder / "bin").mkdir(parents=True)
    (folder / "bin" / "python").write_text("")
    assert me.read_state(folder) is None  # half made: never used
    (folder / me.MARKER).write_text(json.dumps({"torch": "2.13.0+cpu"}))
    assert me.read_state(folder)["torch"] == "2.13.0+cpu"
    me.remove(folder)
    assert not folder.exists()


def _no_torch(python: str) -> bool:
    return subprocess.run([python, "-c", "import torch"], capture_output=True).returncode != 0


@pytest.mark.slow
def test_a_real_installation_from_a_python_without_torch(tmp_path, weights_and_scene) -> None:
    if not _no_torch(BASE_PYTHON):
        pytest.skip(f"{BASE_PYTHON} has torch already")
    # Cancelled mid-install: nothing is left that the plugin would use.
    cancelled_folder = tmp_path / "cancelled"
    lines = []
    with pytest.raises(me.InstallCancelledError):
        me.install(
            cancelled_folder,
            BASE_PYTHON,
            me.choose_build([]),
            log=lines.append,
            cancelled=lambda: any("pip" in line for line in lines),
        )
    assert not cancelled_folder.exists() and me.read_state(cancelled_folder) is None
    # The installation.
    folder = tmp_path / "env"
    steps = []
    python = me.install(
        folder, BASE_PYTHON, me.choose_build([]), progress=lambda f, t: steps.append(t)
    )
    state = me.read_state(folder)
    assert state["torch"].startswith(me.TORCH_VERSION) and state["build"] == "cpu"
    assert steps[-1].startswith("PyTorch") and "installed" in steps[-1]
    numpy_here = subprocess.run(
        [BASE_PYTHON, "-c", "import numpy; print(numpy.__version__)"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    assert state["numpy"] == numpy_here  # QGIS's numpy, untouched
    # A land-cover run through the worker with the new interpreter.
    request, out = weights_and_scene
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "plugins")}
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "landfuse").symlink_to(ROOT)
    done = subprocess.run(
        [str(python), "-m", "landfuse.core.worker", str(request)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.splitlines()[-1])["type"] == "result"
    assert list(out.glob("*_classes.tif"))
    # A second call is a no-op.
    started = time.monotonic()
    again = me.install(folder, BASE_PYTHON, me.choose_build([]))
    assert again == python and time.monotonic() - started < 5


@pytest.fixture
def weights_and_scene(tmp_path):
    """A land-cover request for the worker: the demo scene and the shipped demo weights."""
    from landfuse.core.demo_scene import write_landcover_scene
    from landfuse.core.requests import LandCoverRequest, ModalityInput, request_to_dict

    scene = write_landcover_scene(tmp_path / "scene", size=64, seed=3)
    out = tmp_path / "out"
    request = LandCoverRequest(
        inputs=(
            ModalityInput("s2", (str(scene.s2),)),
            ModalityInput("s1", (str(scene.s1),)),
            ModalityInput("dem", (str(scene.dem),)),
        ),
        weights=str(ROOT / "demo" / "weights" / "landcover_demo.pt"),
        model="",
        output_dir=str(out),
        precision="fp32",
        device="cpu",
    )
    path = tmp_path / "request.json"
    path.write_text(json.dumps(request_to_dict(request)))
    return path, out


def test_the_installer_runs_as_it_is_shipped() -> None:
    """The module needs no QGIS: the dock runs it in a background task."""
    done = subprocess.run(
        [sys.executable, "-c", "import sys; sys.modules['qgis'] = None; "
         "import landfuse.processing.managed_env as m; print(m.TORCH_VERSION)"],
        capture_output=True,
        text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
