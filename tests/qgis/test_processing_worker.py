"""Issue 16: Processing without torch in QGIS's Python runs the engine in the worker process,
with progress and cancel forwarded; without torch anywhere it says what to do."""

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest
import rasterio
from qgis.core import QgsProcessingException, QgsProcessingFeedback, QgsSettings

from landfuse.processing import environment, worker_run

pytestmark = pytest.mark.qgis

ROOT = Path(__file__).resolve().parents[2]
QGIS_PYTHON = "/usr/bin/python3"  # Debian's: QGIS's own, without torch on this machine


class Recorder(QgsProcessingFeedback):
    def __init__(self):
        super().__init__()
        self.progress = []
        self.infos = []
        self.progressChanged.connect(self.progress.append)

    def pushInfo(self, info):
        self.infos.append(info)
        super().pushInfo(info)


@pytest.fixture
def no_torch_here(monkeypatch):
    """QGIS's Python as if it had no torch; the worker is the venv's Python (it has torch)."""
    monkeypatch.setattr(worker_run, "torch_in_process", lambda: False)
    settings = QgsSettings()
    before = settings.value(environment.SETTINGS_WORKER_PYTHON, "")
    settings.setValue(environment.SETTINGS_WORKER_PYTHON, sys.executable)
    yield
    settings.setValue(environment.SETTINGS_WORKER_PYTHON, before)


def _landcover(scenes, weights, out: Path) -> dict:
    return {
        "S2": str(scenes["s2"]),
        "S1": str(scenes["s1"]),
        "MODEL": "amm_fusenet_s2_s1_hunan",
        "WEIGHTS": str(weights["landcover"]),
        "OUTPUT": str(out),
        "TILE": 64,
        "PRECISION": "fp32",
    }


def test_processing_runs_in_the_worker_when_qgis_python_has_no_torch(
    provider, scenes, weights, tmp_path, no_torch_here
):
    import processing

    feedback = Recorder()
    out = tmp_path / "lc.tif"
    result = processing.run(
        "landfuse:landcover", _landcover(scenes, weights, out), feedback=feedback
    )
    assert result["OUTPUT"] == str(out)
    with rasterio.open(out) as src:
        assert src.read(1).shape == (96, 96)
    assert Path(result["REPORT"]).is_file()
    assert any("Running in the LandFuse worker" in i for i in feedback.infos)
    assert max(feedback.progress) == pytest.approx(100.0) and len(feedback.progress) > 2
    # Same map as in QGIS's own Python.
    direct = tmp_path / "direct.tif"
    worker_run.torch_in_process = lambda: True  # restored by monkeypatch
    processing.run("landfuse:landcover", _landcover(scenes, weights, direct))
    with rasterio.open(out) as a, rasterio.open(direct) as b:
        assert np.array_equal(a.read(1), b.read(1))


def test_without_torch_anywhere_processing_says_what_to_do(
    provider, scenes, weights, tmp_path, no_torch_here
):
    import processing

    QgsSettings().setValue(environment.SETTINGS_WORKER_PYTHON, QGIS_PYTHON)
    worker_run._probe.cache_clear()
    if worker_run.worker_has_torch(QGIS_PYTHON):
        pytest.skip(f"{QGIS_PYTHON} has torch on this machine")
    with pytest.raises(QgsProcessingException, match="Worker Python"):
        processing.run("landfuse:landcover", _landcover(scenes, weights, tmp_path / "x.tif"))
    assert not (tmp_path / "x.tif").exists()


def test_cancelling_stops_the_worker(provider, scenes, weights, tmp_path, no_torch_here):
    import processing

    feedback = Recorder()
    feedback.progressChanged.connect(lambda value: feedback.cancel() if value > 1 else None)
    with pytest.raises(QgsProcessingException, match="Cancelled"):
        processing.run(
            "landfuse:landcover",
            {**_landcover(scenes, weights, tmp_path / "c.tif"), "TILE": 32},
            feedback=feedback,
        )
    assert not (tmp_path / "c.tif").exists()


def test_qgis_process_without_torch_uses_the_worker(scenes, weights, tmp_path):
    """``qgis_process`` in QGIS's own Python (no torch there) with the worker set in the
    profile maps and reports progress."""
    if worker_run.worker_has_torch(QGIS_PYTHON):
        pytest.skip(f"{QGIS_PYTHON} has torch on this machine")
    from qgis_process_env import qgis_process_binary, qgis_process_env

    binary = qgis_process_binary()
    env = qgis_process_env(tmp_path, f"\n[LandFuse]\nworker_python={sys.executable}\n")
    env.pop("PYTHONPATH", None)  # QGIS's own Python only: no torch
    venv_site = sysconfig.get_paths()["purelib"]
    assert venv_site not in env.get("PYTHONPATH", "")
    out = tmp_path / "lc.tif"
    proc = subprocess.run(
        [binary, "run", "landfuse:landcover", "--"]
        + [f"{k}={v}" for k, v in _landcover(scenes, weights, out).items()],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Running in the LandFuse worker" in proc.stdout + proc.stderr
    assert out.is_file()
    # Every file path it prints (outputs, the report) is there after the run: none is temporary.
    import re

    printed = set(re.findall(r"(/[^\s'\",]+\.(?:tif|json|qml))", proc.stdout))
    assert any(p.endswith("_report.json") for p in printed), proc.stdout[-2000:]
    assert [p for p in printed if not os.path.exists(p)] == [], proc.stdout[-3000:]


def test_training_in_processing_runs_in_the_worker_too(provider, tmp_path, no_torch_here):
    import json

    from labelled_scene import labelled_scene, polygons_file

    import processing

    files = labelled_scene(tmp_path)
    feedback = Recorder()
    trained = processing.run(
        "landfuse:trainlandcover",
        {
            "MODEL": "amm_fusenet_lite_s2_s1_dem",
            "S2": files["s2"],
            "S1": files["s1"],
            "DEM": files["dem"],
            "POLYGONS": polygons_file(tmp_path / "labels.geojson"),
            "FIELD": "landuse",
            "EPOCHS": 1,
            "CHIP": 32,
            "THREADS": 1,
            "OUTPUT": str(tmp_path / "run"),
        },
        feedback=feedback,
    )
    assert any("Running in the LandFuse worker" in i for i in feedback.infos)
    assessment = json.loads(Path(trained["ASSESSMENT"]).read_text())
    assert assessment["network"]["class_names"] == ["Water", "built-up", "trees"]
    assert Path(trained["WEIGHTS"]).is_file() and max(feedback.progress) > 90
