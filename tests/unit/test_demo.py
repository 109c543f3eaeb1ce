"""Tests of the demo (`make demo`): the bundled demo weights, scripts/demo.py, the training script.

The weights tests read the committed files in demo/weights/. The end-to-end tests run the real
scripts in a child process on reduced scenes and are marked ``slow``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from types import ModuleType

import pytest
import torch

from landfuse.models import weights as weights_io

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
WEIGHTS = ROOT / "demo" / "weights"
FILES = {"landcover_demo.pt": "amm_fusenet_lite_s2_s1_dem", "change_demo.pt": "amfnet_lite_s2"}
WEIGHT_SUFFIXES = (".pt", ".pth", ".safetensors", ".ckpt", ".onnx")
BUDGET_BYTES = 20 * 1024 * 1024


def _script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"test_{name}", ROOT / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up in sys.modules
    spec.loader.exec_module(module)
    return module


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"  # the machine is shared: keep the child's threads modest
    return env


@pytest.mark.parametrize(("file_name", "model_name"), sorted(FILES.items()))
def test_demo_weights_load_and_say_they_are_demo_weights(file_name: str, model_name: str) -> None:
    path = WEIGHTS / file_name
    assert path.is_file(), f"{path} is missing: run python scripts/train_demo_weights.py"
    model, metadata, sha = weights_io.load_model(path, model_name=model_name)
    assert sha == weights_io.file_sha256(path)
    assert not model.training
    demo = metadata.training["demo"]
    assert demo["demo_weights"] is True and "synthetic" in demo["note"]
    assert demo["command"].startswith("python scripts/train_demo_weights.py")
    # The demo scene's seed was never a training, validation or held-out seed.
    used = {*demo["train_scene_seeds"], demo["validation_scene_seed"], demo["held_out_scene_seed"]}
    assert demo["demo_scene_seed"] not in used
    assert metadata.training["seed"] == demo["training_seed"] and demo["epochs"] >= 1
    held_out = metadata.metrics["held_out_scene"]
    assert "oa" in held_out and "per_class" in held_out
    sidecar = json.loads(weights_io.sidecar_path(path).read_text())
    assert sidecar["sha256"] == sha and sidecar["metadata"]["training"]["demo"] == demo
    torch.manual_seed(0)
    with torch.inference_mode():
        if metadata.architecture == "amfnet":
            out = model.predict(torch.rand(1, 13, 64, 64), torch.rand(1, 13, 64, 64))
        else:
            out = model.predict(*(torch.rand(1, c, 64, 64) for c in (13, 2, 1)))
    assert out.shape == (1, len(metadata.classes), 64, 64) and torch.isfinite(out).all()


def test_demo_weights_record_useful_accuracy() -> None:
    """The held-out scores the training script recorded are those of working networks."""
    _, landcover, _ = weights_io.read_weights(WEIGHTS / "landcover_demo.pt")
    _, change, _ = weights_io.read_weights(WEIGHTS / "change_demo.pt")
    assert landcover.metrics["held_out_scene"]["oa"] > 0.85
    assert change.metrics["held_out_scene"]["change"]["f1"] > 0.6


def test_all_committed_weights_stay_under_20_mb() -> None:
    files = [
        p
        for p in ROOT.rglob("*")
        if p.suffix in WEIGHT_SUFFIXES
        and p.is_file()
        and not {".venv", "build", "dist", ".git"}.intersection(p.relative_to(ROOT).parts)
    ]
    assert {p.name for p in files} >= set(FILES)
    total = sum(p.stat().st_size for p in files) + sum(
        weights_io.sidecar_path(p).stat().st_size
        for p in files
        if weights_io.sidecar_path(p).is_file()
    )
    assert total < BUDGET_BYTES, f"{total / 1e6:.1f} MB of weights: {sorted(map(str, files))}"


def test_demo_weights_readme_says_how_they_were_made() -> None:
    text = (ROOT / "demo" / "README.md").read_text(encoding="utf-8")
    assert "scripts/train_demo_weights.py" in text and "synthetic" in text
    for name in FILES:
        assert name in text


def test_missing_weights_say_how_to_make_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    demo = _script("demo")
    code = demo.main(["--weights", str(tmp_path / "none"), "--out", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert code == 2
    assert "python scripts/train_demo_weights.py" in out and "--train-missing" in out
    assert not (tmp_path / "out").exists()  # nothing generated before the weights are there


@pytest.mark.slow
def test_demo_end_to_end_on_a_reduced_scene(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "demo.py"), "--out", str(out), "--size", "256",
         "--change-size", "256", "--threads", "1", "--precision", "fp32"],
        capture_output=True, text=True, env=_env(), cwd=str(tmp_path), timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    text = done.stdout
    assert "DEMO WEIGHTS" in text and "synthetic" in text
    assert "overall accuracy" in text and "F1" in text
    summary = json.loads((out / "demo_summary.json").read_text())
    for task, keys in (("landcover", ("classes", "report")), ("change", ("change", "report"))):
        for key in keys:
            assert Path(summary["outputs"][task][key]).is_file(), (task, key)
    assert Path(summary["outputs"]["landcover"]["classes"]).with_suffix(".qml").is_file()
    # Working weights on a scene they never saw (random weights give OA ~0.3, F1 ~0.1).
    assert summary["accuracy"]["landcover"]["oa"] > 0.75
    assert summary["accuracy"]["change"]["change"]["f1"] > 0.4
    assert summary["demo_weights"]["landcover"]["demo_weights"] is True
    from PIL import Image

    for name in ("inputs_true_colour.png", "landcover_map.png", "change_map.png"):
        with Image.open(out / name) as image:
            assert image.format == "PNG" and min(image.size) > 300, name
            assert len(set(image.convert("RGB").resize((64, 32)).getdata())) > 20, name
    project = out / "landfuse_demo.qgz"
    if importlib.util.find_spec("qgis") is None:
        assert "QGIS project skipped" in text
        return
    assert project.is_file()
    with zipfile.ZipFile(project) as archive:
        qgs = next(n for n in archive.namelist() if n.endswith(".qgs"))
        xml = archive.read(qgs).decode("utf-8")
    assert "Land cover (LandFuse)" in xml and "Change (LandFuse)" in xml
    layers = {layer["name"]: layer for layer in summary["qgis_project"]["layers"]}
    assert all(layer["valid"] for layer in layers.values())
    assert layers["Land cover (LandFuse)"]["renderer"] == "paletted"
    assert layers["Change (LandFuse)"]["renderer"] == "paletted"
    assert layers["Ground truth (demo)"]["renderer"] == "paletted"
    assert layers["Sentinel-2 (true colour)"]["renderer"] == "multibandcolor"
    assert layers["Change probability"]["renderer"] == "singlebandpseudocolor"
    assert {layer["group"] for layer in layers.values()} == {
        "Land cover (AMM-FuseNet lite, demo weights)",
        "Change (AMFNet lite, demo weights)",
    }


@pytest.mark.slow
def test_training_script_quick_run_is_deterministic(tmp_path: Path) -> None:
    def run(name: str) -> dict[str, str]:
        done = subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "train_demo_weights.py"), "--quick",
             "--task", "change", "--threads", "1", "--out", str(tmp_path / name),
             "--work", str(tmp_path / "work")],
            capture_output=True, text=True, env=_env(), timeout=600,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return json.loads((tmp_path / name / "change_demo.pt.json").read_text())

    first, second = run("a"), run("b")
    assert first["tensors_sha256"] == second["tensors_sha256"]
    demo = first["metadata"]["training"]["demo"]
    assert demo["demo_weights"] is True and demo["epochs"] == 1
    assert "--quick" in demo["command"]
    model, _, _ = weights_io.load_model(tmp_path / "a" / "change_demo.pt")
    assert model.config["width"] == 16


def test_make_demo_sets_up_first_and_runs_the_demo_script() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert "\ndemo: setup\n" in makefile and "scripts/demo.py" in makefile
    assert "make demo" in makefile  # in `make help`
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    commands = readme[readme.index("```bash") : readme.index("```", readme.index("```bash") + 3)]
    assert commands.splitlines()[1].startswith("make demo")  # the first command
