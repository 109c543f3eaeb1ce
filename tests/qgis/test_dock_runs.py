"""The dock builds a request from its widgets; the task runs the worker process to the end,
adds styled layers, cancels cleanly, and survives a crashing worker."""

import stat
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from qgis.core import QgsApplication, QgsProject, QgsRasterLayer

from landfuse.core.requests import ChangeRequest, LandCoverRequest
from landfuse.models.registry import get_model_spec, list_model_specs
from landfuse.processing import environment
from landfuse.processing.task import InferenceTask, wait_for
from landfuse.ui.dock import LandFuseDock

pytestmark = pytest.mark.qgis


def _add(path: Path, name: str) -> QgsRasterLayer:
    layer = QgsRasterLayer(str(path), name)
    assert layer.isValid()
    QgsProject.instance().addMapLayer(layer)
    return layer


def _wait_until_done(dock, timeout=180):
    start = time.monotonic()
    while dock.task is not None and time.monotonic() - start < timeout:
        QgsApplication.processEvents()
        time.sleep(0.02)
    assert dock.task is None, "the run did not finish in time"


def test_request_from_widgets(dock, scenes, weights, tmp_path):
    s2 = _add(scenes["s2"], "S2")
    s1 = _add(scenes["s1"], "S1")
    panel = dock.landcover
    panel.layer_combos["s2"].setLayer(s2)
    panel.layer_combos["s1"].setLayer(s1)
    models = [panel.model_combo.itemData(i) for i in range(panel.model_combo.count())]
    assert models == [s.name for s in list_model_specs("landcover")]  # every land-cover model
    assert any("Choose a weights file" in p for p in panel.problems())
    # Weights of another model are a problem before the run; the file's own model has none.
    panel.model_combo.setCurrentIndex(panel.model_combo.findData("amm_fusenet_s2_s1_dem"))
    assert not panel.layer_combos["dem"].isHidden() and not panel.layer_combos["s1"].isHidden()
    panel.weights.setFilePath(str(weights["landcover"]))
    assert panel.model_combo.currentData() == "amm_fusenet_s2_s1_hunan"  # the sidecar's model
    assert panel.layer_combos["dem"].isHidden()
    assert panel.problems() == []
    panel.model_combo.setCurrentIndex(panel.model_combo.findData("amm_fusenet_s2_s1_dem"))
    assert any("holds weights for 'amm_fusenet_s2_s1_hunan'" in p for p in panel.problems())
    panel.model_combo.setCurrentIndex(panel.model_combo.findData("amm_fusenet_s2_s1_hunan"))
    assert panel.problems() == []
    assert panel.tables["s2"].mapping().raster_bands == tuple(range(1, 14))
    dock.output_dir.setFilePath(str(tmp_path))
    dock.tile.setValue(64)
    dock.batch.setValue(2)
    dock.precision.setCurrentIndex(dock.precision.findData("fp32"))
    request = dock.build_request()
    assert isinstance(request, LandCoverRequest)
    assert [m.key for m in request.inputs] == ["s2", "s1"]
    assert request.inputs[1].sources[0].bands == (1, 2)
    assert (request.tile, request.batch, request.precision) == (64, 2, "fp32")
    assert request.output_dir == str(tmp_path) and request.name == "landcover_001"
    assert request.outputs == ("classes", "confidence")
    # A band the model needs is unmapped: the dock says so before the run.
    panel.tables["s1"].set_band(1, None)
    assert any("VH" in p for p in panel.problems())
    assert not dock.problem_label_hidden(panel)


def test_landcover_run_adds_styled_layers(dock, scenes, weights, tmp_path):
    panel = dock.landcover
    panel.layer_combos["s2"].setLayer(_add(scenes["s2"], "S2"))
    panel.layer_combos["s1"].setLayer(_add(scenes["s1"], "S1"))
    panel.weights.setFilePath(str(weights["landcover"]))
    dock.output_dir.setFilePath(str(tmp_path))
    dock.tile.setValue(64)
    dock.run()
    assert dock.task is not None and not dock.run_button.isEnabled()
    dock.run()  # a second run while one runs is refused, not started
    _wait_until_done(dock)
    assert dock.last_failure is None, dock.last_failure
    root = QgsProject.instance().layerTreeRoot()
    group = root.findGroup("LandFuse landcover_001")
    assert group is not None
    names = [node.layer().name() for node in group.findLayers()]
    assert names == ["Land cover", "Confidence (%)"]
    classes = group.findLayers()[0]
    assert classes.isVisible() and not group.findLayers()[1].isVisible()
    renderer = classes.layer().renderer()
    assert renderer.type() == "paletted"
    labels = [c.label for c in renderer.classes()]
    assert labels[:3] == ["cropland", "forest", "grassland"]
    assert dock.progress.value() == 100
    assert "Land-cover map ready" in dock.last_summary.text
    assert (tmp_path / "landcover_001_report.json").is_file()


def test_a_warning_of_the_run_reaches_the_dock(dock, scenes, weights, tmp_path):
    """Issue 11: reflectances scaled 0-1 still give a map, but the dock says what to check."""
    import numpy as np
    import rasterio
    from faultcases import S2_NAMES, write_raster

    with rasterio.open(scenes["s2"]) as src:
        scaled = (src.read() / 10000.0).astype("float32")
    s2 = write_raster(tmp_path / "s2_scaled.tif", scaled, 10, descriptions=S2_NAMES)
    panel = dock.landcover
    panel.layer_combos["s2"].setLayer(_add(s2, "S2 0-1"))
    panel.layer_combos["s1"].setLayer(_add(scenes["s1"], "S1"))
    panel.weights.setFilePath(str(weights["landcover"]))
    dock.output_dir.setFilePath(str(tmp_path / "out"))
    dock.tile.setValue(64)
    dock.run()
    _wait_until_done(dock)
    assert dock.last_failure is None, dock.last_failure
    assert [w["code"] for w in dock.last_warnings] == ["input_values"]
    assert "multiply them by 10000" in dock.last_warnings[0]["message"]
    assert "Check before trusting this map" in dock.status.text()
    assert np.isfinite(scaled).all()


def test_cancel_adds_nothing_and_leaves_no_files(dock, scenes, weights, tmp_path):
    request = ChangeRequest(
        before=(str(scenes["before"]),),
        after=(str(scenes["after"]),),
        model="amfnet_rgb_levir",
        weights=str(weights["change"]),
        output_dir=str(tmp_path),
        tile=32,
        overlap=0,
        batch=1,
        precision="fp32",
    )
    task = InferenceTask(request, sys.executable)
    seen = []
    task.progress_text.connect(seen.append)
    QgsApplication.taskManager().addTask(task)
    start = time.monotonic()
    while not any("tile" in text for text in seen) and time.monotonic() - start < 120:
        QgsApplication.processEvents()
        time.sleep(0.01)
    layers_before = len(QgsProject.instance().mapLayers())
    task.cancel()
    assert wait_for(task, 60)
    assert task.cancelled_by_user and task.result is None and task.failure is None
    assert len(QgsProject.instance().mapLayers()) == layers_before
    assert list(tmp_path.iterdir()) == []


def test_crashing_worker_leaves_qgis_running(dock, scenes, weights, tmp_path):
    fake = tmp_path / "crashing-python"
    fake.write_text('#!/bin/sh\necho \'{"type": "started", "pid": 1}\'\nkill -SEGV $$\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    request = ChangeRequest(
        before=(str(scenes["before"]),),
        after=(str(scenes["after"]),),
        model="amfnet_rgb_levir",
        weights=str(weights["change"]),
        output_dir=str(tmp_path / "out"),
    )
    task = InferenceTask(request, str(fake))
    QgsApplication.taskManager().addTask(task)
    assert wait_for(task, 60)
    assert task.failure is not None and task.failure.kind == "WorkerCrash"
    assert not task.failure.expected
    assert "stopped unexpectedly" in task.failure.message
    assert QgsApplication.instance() is not None  # still here


def test_bad_input_is_reported_by_the_worker(dock, scenes, weights, tmp_path):
    request = ChangeRequest(
        before=(str(scenes["before"]),),
        after=(str(scenes["s2"]),),
        model="amfnet_rgb_levir",
        weights=str(weights["change"]),
        output_dir=str(tmp_path),
    )
    task = InferenceTask(request, sys.executable)
    QgsApplication.taskManager().addTask(task)
    assert wait_for(task, 120)
    assert task.failure is not None and task.failure.expected, task.failure
    assert task.result is None
    assert list(tmp_path.iterdir()) == []


def test_torch_missing_banner(dock, tmp_path):
    probe = environment.PythonProbe("/usr/bin/python3", error="ModuleNotFoundError: torch")
    dock.show_probe(probe)
    assert dock.torch_banner.isVisibleTo(dock)
    text = dock.torch_banner.text()
    assert "PyTorch is missing" in text and "pip install" in text


def test_dock_remembers_its_settings_in_the_project(dock, scenes, weights, tmp_path, qgis_iface):
    s2 = _add(scenes["s2"], "S2")
    s1 = _add(scenes["s1"], "S1")
    dock.landcover.layer_combos["s2"].setLayer(s2)
    dock.landcover.layer_combos["s1"].setLayer(s1)
    dock.landcover.weights.setFilePath(str(weights["landcover"]))
    dock.tile.setValue(128)
    dock.area_extent.setChecked(True)
    dock.output_dir.setFilePath(str(tmp_path))
    dock.save_project_settings()
    project_file = tmp_path / "project.qgz"
    assert QgsProject.instance().write(str(project_file))
    QgsProject.instance().clear()
    assert QgsProject.instance().read(str(project_file))  # readProject restores the dock
    again = LandFuseDock(None, qgis_iface)
    try:
        assert again.landcover.layer_combos["s1"].currentLayer().name() == "S1"
        assert again.landcover.weights.filePath() == str(weights["landcover"])
        assert again.tile.value() == 128 and again.area_extent.isChecked()
        assert again.output_dir.filePath() == str(tmp_path)
    finally:
        again.cleanup()
        again.deleteLater()


def test_the_dock_says_how_bands_were_matched_and_which_layers_go_unused(dock, scenes, weights):
    """Issue 13: matching by position is said before the run, in the table and under it; a
    layer the chosen model does not take is named, with a model that takes it."""
    from landfuse.ui.widgets import BY_NAME, BY_POSITION, BY_USER

    panel = dock.change
    panel.weights.setFilePath(str(weights["change"]))
    panel.before.setLayer(_add(scenes["before"], "before"))
    panel.after.setLayer(_add(scenes["after"], "after"))
    table = panel.tables["before"]
    assert table.matched() == [BY_POSITION] * 3  # the RGB pair has no band descriptions
    assert "3 by position: check" in panel.mapping_box.title()
    assert any("matched by position only" in w for w in panel.warnings())
    assert panel.problems() == []  # a check, not a refusal
    table.set_band(0, 2)  # the user picks another band for R
    assert table.matched()[0] == BY_USER and len(table.position_rows()) == 2
    lc = dock.landcover
    lc.weights.setFilePath(str(weights["landcover"]))
    lc.layer_combos["s2"].setLayer(_add(scenes["s2"], "S2"))
    lc.layer_combos["s1"].setLayer(_add(scenes["s1"], "S1"))
    assert lc.tables["s2"].matched() == [BY_NAME] * 13
    assert lc.warnings() == []
    lc.layer_combos["dem"].setLayer(_add(scenes["s1"], "a DEM"))
    assert lc.warnings() == [
        "amm_fusenet_s2_s1_hunan does not use 'a DEM'; "
        f"{get_model_spec('amm_fusenet_s2_s1_dem').title} (amm_fusenet_s2_s1_dem) uses all the "
        "layers picked."
    ]
    lc.check()
    assert "model:amm_fusenet_s2_s1_dem" in lc.warning.text()  # a link: "Use it"
    lc.warning.linkActivated.emit("model:amm_fusenet_s2_s1_dem")
    assert lc.model_combo.currentData() == "amm_fusenet_s2_s1_dem"


def test_layers_made_with_demo_weights_say_so(qgis_new_project, tmp_path):
    """Issue 13: the layer names and the summary of a run with demo weights say what they are."""
    import rasterio
    from rasterio.transform import from_origin

    from landfuse.models.weights_info import DEMO_LABEL
    from landfuse.processing.results import add_result_layers, summarise

    path = tmp_path / "run_classes.tif"
    with rasterio.open(
        path, "w", driver="GTiff", width=4, height=4, count=1, dtype="uint8",
        crs="EPSG:32631", transform=from_origin(0, 40, 10, 10),
    ) as dst:  # fmt: skip
        dst.write(np.zeros((1, 4, 4), np.uint8))
    areas = [{"name": "water", "pixels": 16, "hectares": 0.16, "percent": 100.0}]
    result = {
        "task": "landcover",
        "outputs": {"classes": str(path), "report": str(tmp_path / "run_report.json")},
        "summary": {"areas": areas, "demo_weights": True, "timings_s": {"total": 1.0}},
    }
    added = add_result_layers(result, QgsProject.instance())
    assert [layer.name() for layer in added] == [f"Land cover ({DEMO_LABEL})"]
    assert summarise(result).text.endswith(f"Made with {DEMO_LABEL}.")
    result["summary"]["demo_weights"] = False
    assert "DEMO" not in summarise(result).text
    # Inputs unlike the model's data (a warning of the run): the layer's name says so too.
    from landfuse.processing.results import UNLIKE_LABEL

    result["summary"]["warnings"] = [{"code": "input_values", "message": "…"}]
    again = add_result_layers(result, QgsProject.instance())
    assert [layer.name() for layer in again] == [f"Land cover ({UNLIKE_LABEL})"]


def test_layers_of_the_same_name_are_told_apart(dock, tmp_path):
    """Issue 13: one file name per modality folder gives layers of one name; under each picker
    the folder, bands, CRS and size say which is which."""
    from faultcases import write_raster

    rng = np.random.default_rng(0)
    files = {}
    for folder, bands in (("S2L1C", 13), ("S1RTC", 2), ("DEM", 1)):
        (tmp_path / folder).mkdir()
        data = rng.integers(0, 3000, (bands, 32, 32)).astype("uint16")
        files[folder] = write_raster(tmp_path / folder / "637U_59R_1_3.tif", data, 10)
    panel = dock.landcover
    panel.model_combo.setCurrentIndex(panel.model_combo.findData("amm_fusenet_s2_s1_dem"))
    for key, folder in (("s2", "S2L1C"), ("s1", "S1RTC"), ("dem", "DEM")):
        panel.layer_combos[key].setLayer(_add(files[folder], "637U_59R_1_3"))
    details = {key: panel.layer_details[key].text() for key in ("s2", "s1", "dem")}
    assert details["s2"].startswith("S2L1C/ · 13 bands · EPSG:32631 · 32 × 32 px")
    assert details["s1"].startswith("S1RTC/ · 2 bands")
    assert details["dem"].startswith("DEM/ · 1 band ·")
    assert "S1RTC" in panel.layer_combos["s1"].toolTip()


@pytest.mark.realdata
def test_the_rennes_band_files_from_the_dock(dock, realdata, repo_root, tmp_path):
    """Issue 13: the OSCD pair as delivered (13 band files per date, no VRT): chosen as
    folders beside the layer pickers, mapped in the worker, the same map as the engine's."""
    import rasterio

    from landfuse.core import engine
    from landfuse.core.requests import ChangeRequest

    root = realdata / "oscd/Onera Satellite Change Detection dataset - Images/rennes"
    weights = repo_root / "demo" / "weights" / "change_demo.pt"
    panel = dock.change
    dock.show_panel(panel)
    panel.weights.setFilePath(str(weights))
    panel.file_buttons["before"].set_files([str(root / "imgs_1")])
    panel.file_buttons["after"].set_files(sorted(str(p) for p in (root / "imgs_2").glob("*.tif")))
    assert panel.problems() == []
    dock.save_project_settings()  # the files are kept with the project, as layers are
    panel.file_buttons["before"].set_files([])
    dock.restore_project_settings()
    assert len(panel.file_buttons["before"].files) == 13
    assert "13 band files in imgs_1" in panel.layer_details["before"].text()
    request = dock.build_request()
    assert [len(request.before), len(request.after)] == [13, 13]
    dock.output_dir.setFilePath(str(tmp_path / "dock"))
    dock.tile.setValue(256)
    dock.precision.setCurrentIndex(dock.precision.findData("fp32"))
    dock.run()
    _wait_until_done(dock, timeout=300)
    assert dock.last_failure is None, dock.last_failure
    expected = engine.run(
        ChangeRequest(
            before=str(root / "imgs_1"),
            after=str(root / "imgs_2"),
            weights=str(weights),
            model="",
            tile=256,
            precision="fp32",
            output_dir=str(tmp_path / "engine"),
        )
    )
    produced = sorted((tmp_path / "dock").glob("*_mask.tif"))
    with rasterio.open(produced[0]) as a, rasterio.open(expected.outputs["change"]) as b:
        assert (a.width, a.height) == (563, 339)
        assert (a.read(1) == b.read(1)).all()
    # A folder whose files do not name their bands is refused before the run.
    (tmp_path / "plain").mkdir()
    panel.file_buttons["before"].set_files([str(tmp_path / "plain")])
    assert any("no band files whose names say their band" in p for p in panel.problems())


def test_check_inputs_shows_the_statistics_warning_before_any_run(dock, scenes, weights, tmp_path):
    """Issue 13: 'Check inputs' runs every check of a run in the worker (values against the
    model's statistics included) and lists what to check under the panel; nothing is written."""
    import rasterio
    from faultcases import S2_NAMES, write_raster

    with rasterio.open(scenes["s2"]) as src:
        scaled = (src.read() / 10000.0).astype("float32")
    s2 = write_raster(tmp_path / "s2_scaled.tif", scaled, 10, descriptions=S2_NAMES)
    panel = dock.landcover
    panel.weights.setFilePath(str(weights["landcover"]))
    panel.layer_combos["s2"].setLayer(_add(s2, "S2 0-1"))
    panel.layer_combos["s1"].setLayer(_add(scenes["s1"], "S1"))
    dock.output_dir.setFilePath(str(tmp_path / "out"))
    dock.tile.setValue(64)
    assert panel.warnings() == []
    dock.check_button.click()
    _wait_until_done(dock)
    assert dock.last_failure is None, dock.last_failure
    assert any("multiply them by 10000" in w for w in panel.warnings())
    assert "multiply them by 10000" in panel.warning.text()
    assert "1 thing(s) to check" in dock.status.text()
    assert dock.last_summary is None
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("*.tif"))
    panel.layer_combos["s1"].setLayer(_add(scenes["s1"], "S1 again"))  # inputs changed
    assert not any("multiply them by 10000" in w for w in panel.warnings())
