"""The executor option on the QGIS surfaces: Processing's EXECUTOR parameter, the dock's
Advanced ▸ Executor with its check, and a dock run on a local process pool."""

import json
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from qgis.core import QgsApplication, QgsProject, QgsRasterLayer

pytestmark = pytest.mark.qgis


def _wait(condition, timeout=120):
    start = time.monotonic()
    while not condition() and time.monotonic() - start < timeout:
        QgsApplication.processEvents()
        time.sleep(0.02)
    assert condition(), "timed out"


def test_processing_runs_on_a_process_pool_with_the_same_map(provider, scenes, weights, tmp_path):
    import processing

    algorithm = provider.algorithm("landcover")
    assert algorithm.parameterDefinition("EXECUTOR").defaultValue() == "in-process"
    maps = {}
    for executor in ("in-process", "process:2"):
        out = tmp_path / executor.replace(":", "_") / "lc.tif"
        result = processing.run(
            "landfuse:landcover",
            {
                "S2": str(scenes["s2"]), "S1": str(scenes["s1"]),
                "WEIGHTS": str(weights["landcover"]), "OUTPUT": str(out), "TILE": 64,
                "BATCH": 2, "PRECISION": "fp32", "EXECUTOR": executor,
            },
        )  # fmt: skip
        with rasterio.open(result["OUTPUT"]) as src:
            maps[executor] = src.read(1)
        report = json.loads(Path(result["REPORT"]).read_text())
    assert report["executor"]["workers"] == 2 and report["executor"]["jobs"] >= 1
    assert np.array_equal(maps["in-process"], maps["process:2"])


def test_a_bad_executor_is_a_processing_error(provider, scenes, weights, tmp_path):
    from qgis.core import QgsProcessingException

    import processing

    with pytest.raises(QgsProcessingException, match="dask://HOST:PORT"):
        processing.run(
            "landfuse:landcover",
            {"S2": str(scenes["s2"]), "S1": str(scenes["s1"]),
             "WEIGHTS": str(weights["landcover"]), "OUTPUT": str(tmp_path / "lc.tif"),
             "EXECUTOR": "yarn://x"},
        )  # fmt: skip
    assert not (tmp_path / "lc.tif").exists()


def test_the_dock_checks_the_executor(dock):
    from distributed import LocalCluster

    combo, check = dock.executor, dock.executor_check
    combo.setEditText("yarn")
    check.check()
    assert "not understood" in check.answer.text() and "dask://" in check.answer.text()
    combo.setEditText("local:2")
    check.check()
    _wait(lambda: check.process is None)
    assert "LocalCluster (2 workers)" in check.answer.text(), check.answer.text()
    with LocalCluster(n_workers=3, threads_per_worker=1, processes=False, protocol="tcp",
                      dashboard_address=None) as cluster:  # fmt: skip
        combo.setEditText(cluster.scheduler_address.replace("tcp://", "dask://"))
        check.check()
        _wait(lambda: check.process is None)
    assert "answers: 3 worker(s)" in check.answer.text(), check.answer.text()


def test_a_dock_run_on_a_process_pool_adds_the_layers(dock, scenes, weights, tmp_path):
    panel = dock.landcover
    for key in ("s2", "s1"):
        layer = QgsRasterLayer(str(scenes[key]), key.upper())
        QgsProject.instance().addMapLayer(layer)
        panel.layer_combos[key].setLayer(layer)
    panel.weights.setFilePath(str(weights["landcover"]))
    dock.output_dir.setFilePath(str(tmp_path))
    dock.tile.setValue(64)
    dock.executor.setEditText("process:2")
    assert dock.build_request().executor == "process:2"
    dock.run()
    _wait(lambda: dock.task is None, timeout=240)
    assert dock.last_failure is None, dock.last_failure
    group = QgsProject.instance().layerTreeRoot().findGroup("LandFuse landcover_001")
    assert [n.layer().name() for n in group.findLayers()] == ["Land cover", "Confidence (%)"]
    report = json.loads((tmp_path / "landcover_001_report.json").read_text())
    assert report["executor"]["kind"] == "processes" and report["executor"]["workers"] == 2
