"""A PyTorch environment for LandFuse, made and kept by the plugin (issue 16).

Installing torch is the first hurdle of every QGIS deep-learning plugin. This module makes a
virtual environment in the QGIS profile folder from QGIS's own Python, with
``--system-site-packages`` so that QGIS's numpy, GDAL and rasterio stay visible and are never
replaced (pip runs with a constraint pinning QGIS's numpy), installs the torch build that fits
the machine (CPU; the CUDA build matching the NVIDIA driver; the standard build on Apple silicon,
which has MPS), checks the result by importing it, and only then marks it ready
(``landfuse-env.json``). The worker then uses its interpreter. Nothing from it is imported into
QGIS's process, and a cancelled or failed installation is removed: no half environment is ever
marked ready.

No QGIS import here: the dock drives it from a background task, and the tests call it directly.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, List, Optional, Sequence

__all__ = [
    "CUDA_BUILDS",
    "MARKER",
    "TORCH_VERSION",
    "GpuInfo",
    "InstallCancelledError",
    "InstallError",
    "InstallPlan",
    "choose_build",
    "detect_nvidia",
    "env_python",
    "install",
    "is_apple_silicon",
    "read_state",
    "remove",
]

#: The torch release LandFuse is tested with.
TORCH_VERSION = "2.13.0"
#: The file that says an environment is complete (written last).
MARKER = "landfuse-env.json"
#: PyTorch's CUDA wheel indexes by the lowest NVIDIA driver (major version) they run on, newest
#: first (NVIDIA's CUDA toolkit/driver compatibility table: CUDA 12.8 needs 570, 12.6 needs
#: 560, 12.1 needs 530, 11.8 needs 450).
CUDA_BUILDS = ((570, "cu128"), (560, "cu126"), (530, "cu121"), (450, "cu118"))
TORCH_INDEX = "https://download.pytorch.org/whl/{tag}"


class InstallError(RuntimeError):
    """The installation failed; the message says at which step and what pip said."""


class InstallCancelledError(InstallError):
    """The user cancelled; nothing is left behind."""


@dataclass(frozen=True)
class GpuInfo:
    name: str
    driver: str
    memory_mb: int

    @property
    def driver_major(self) -> int:
        try:
            return int(self.driver.split(".")[0])
        except ValueError:
            return 0


def detect_nvidia(
    run: Callable[..., subprocess.CompletedProcess] = subprocess.run,
) -> List[GpuInfo]:
    """The NVIDIA GPUs ``nvidia-smi`` lists (none without a driver)."""
    command = [
        "nvidia-smi",
        "--query-gpu=name,driver_version,memory.total",
        "--format=csv,noheader,nounits",
    ]
    try:
        done = run(command, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return []
    if done.returncode != 0:
        return []
    gpus = []
    for line in done.stdout.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) >= 3 and parts[0]:
            try:
                memory = int(float(parts[2]))
            except ValueError:
                memory = 0
            gpus.append(GpuInfo(parts[0], parts[1], memory))
    return gpus


def is_apple_silicon(system: str = "", machine: str = "") -> bool:
    return (system or platform.system()) == "Darwin" and (machine or platform.machine()) in (
        "arm64",
        "aarch64",
    )


@dataclass(frozen=True)
class InstallPlan:
    """What to install and why: ``build`` is ``cpu``, ``cuda`` or ``mps``."""

    build: str
    requirement: str
    index_url: Optional[str]
    why: str

    def pip_arguments(self) -> List[str]:
        return [self.requirement] + (["--index-url", self.index_url] if self.index_url else [])


def choose_build(gpus: Sequence[GpuInfo], apple_silicon: bool = False) -> InstallPlan:
    """The torch build that fits: CUDA for the driver's CUDA version, else MPS or the CPU."""
    requirement = f"torch=={TORCH_VERSION}"
    if apple_silicon:
        return InstallPlan("mps", requirement, None, "Apple silicon: the standard build has MPS")
    if gpus:
        driver = max(g.driver_major for g in gpus)
        tag = next((t for minimum, t in CUDA_BUILDS if driver >= minimum), None)
        names = ", ".join(g.name for g in gpus)
        if tag is not None:
            return InstallPlan(
                "cuda",
                requirement,
                TORCH_INDEX.format(tag=tag),
                f"{names} with driver {gpus[0].driver}: the {tag} build",
            )
        return InstallPlan(
            "cpu",
            requirement,
            None,
            f"{names} has driver {gpus[0].driver}, older than any CUDA build of torch "
            f"{TORCH_VERSION} supports (update the driver for the GPU): the CPU build",
        )
    return InstallPlan("cpu", requirement, None, "no NVIDIA GPU found: the CPU build")


def env_python(folder: Path) -> Path:
    """The interpreter of an environment folder."""
    return folder / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def read_state(folder: Path) -> Optional[dict]:
    """The marker of a complete environment (torch version, build, date), or None."""
    try:
        state = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return state if env_python(folder).exists() else None


def remove(folder: Path) -> None:
    """Remove an environment (the marker first, so a half-removed one is never used)."""
    (folder / MARKER).unlink(missing_ok=True)
    shutil.rmtree(folder, ignore_errors=True)


Log = Callable[[str], None]


def _run(command: List[str], log: Log, cancelled: Callable[[], bool], step: str) -> None:
    log(f"$ {' '.join(command)}")
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONNOUSERSITE": "1"},
    )
    tail: List[str] = []
    assert process.stdout is not None
    for line in process.stdout:
        log(line.rstrip())
        tail = [*tail, line.rstrip()][-15:]
        if cancelled():
            process.kill()
            process.wait()
            raise InstallCancelledError("The installation was cancelled.")
    if process.wait() != 0:
        raise InstallError(f"{step} failed (exit {process.returncode}):\n" + "\n".join(tail))
    if cancelled():
        raise InstallCancelledError("The installation was cancelled.")


def install(
    folder: Path,
    base_python: str = sys.executable,
    plan: Optional[InstallPlan] = None,
    log: Log = lambda line: None,
    cancelled: Callable[[], bool] = lambda: False,
    progress: Callable[[float, str], None] = lambda fraction, text: None,
) -> Path:
    """Make (or keep) the environment and return its interpreter.

    A complete environment with the same torch is kept as it is (a second call is a no-op).

    Raises:
        InstallCancelledError: ``cancelled`` returned True; the folder is removed.
        InstallError: a step failed (its output's end in the message); the folder is removed.
    """
    folder = Path(folder)
    plan = plan or choose_build(detect_nvidia(), is_apple_silicon())
    state = read_state(folder)
    if state is not None and state.get("torch", "").split("+")[0] == TORCH_VERSION:
        log(f"{folder} already holds torch {state.get('torch')}: nothing to do.")
        progress(1.0, "PyTorch is already installed")
        return env_python(folder)
    remove(folder)
    try:
        progress(0.05, "Creating the environment")
        _run([base_python, "-m", "venv", "--system-site-packages", str(folder)], log, cancelled,
             "Creating the virtual environment")  # fmt: skip
        python = str(env_python(folder))
        numpy = subprocess.run(
            [python, "-c", "import numpy; print(numpy.__version__)"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        constraints = folder / "landfuse-constraints.txt"
        constraints.write_text(f"numpy=={numpy}\n" if numpy else "", encoding="utf-8")
        progress(0.15, f"Installing PyTorch {TORCH_VERSION} ({plan.build}): {plan.why}")
        _run([python, "-m", "pip", "install", "--constraint", str(constraints),
              *plan.pip_arguments()], log, cancelled, "Installing PyTorch")  # fmt: skip
        progress(0.9, "Checking the installation")
        check = subprocess.run(
            [python, "-c", "import json, numpy, torch; print(json.dumps({'torch': "
             "torch.__version__, 'numpy': numpy.__version__, 'cuda': torch.version.cuda}))"],
            capture_output=True,
            text=True,
        )  # fmt: skip
        if check.returncode != 0:
            raise InstallError("The new environment cannot import torch:\n" + check.stderr[-2000:])
        found = json.loads(check.stdout.strip().splitlines()[-1])
        if numpy and found.get("numpy") != numpy:
            raise InstallError(f"numpy changed from {numpy} to {found.get('numpy')}: refused.")
        state = {**found, "build": plan.build, "plan": asdict(plan), "base_python": base_python,
                 "date": time.strftime("%Y-%m-%d %H:%M:%S")}  # fmt: skip
        (folder / MARKER).write_text(json.dumps(state, indent=1), encoding="utf-8")
    except BaseException:
        remove(folder)
        raise
    progress(1.0, f"PyTorch {found.get('torch')} is installed")
    log(f"Ready: {python} (torch {found.get('torch')}, numpy {found.get('numpy')}).")
    return Path(python)
