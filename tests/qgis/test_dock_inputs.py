"""Issue 13 in the dock: a layer group as one input, a table for band files, the model that
uses every picked input, and result legends that say what the user must know."""

from pathlib import Path

import numpy as np
import pytest
from faultcases import write_raster
from qgis.core import QgsLayerTreeModel, QgsProject, QgsRasterLayer

from landfuse.models.registry import get_model_spec
from landfuse.models.sensors import SENTINEL2_L1C

pytestmark = pytest.mark.qgis

S2_FILES = tuple(SENTINEL2_L1C.band_names)  # file names as delivered: …_B8A.tif


def _add(path: Path, name: str, group=None) -> QgsRasterLayer:
    layer = QgsRasterLayer(str(path), name)
    assert layer.isValid()
    project = QgsProject.instance()
    project.addMapLayer(layer, group is None)
    if group is not None:
        group.addLayer(layer)
    return layer


def _band_files(folder: Path, names=S2_FILES) -> list:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    return [
        write_raster(folder / f"T31TCJ_20240601_{name}.tif", rng.integers(0, 4000, (1, 24, 24)))
        for name in reversed(names)  # any order: the file names say the band
    ]


def test_a_layer_group_is_one_input_with_a_table_of_its_band_files(dock, tmp_path):
    from landfuse.ui.band_files_button import layer_groups
    from landfuse.ui.widgets import BY_FILE_NAME, NOT_FOUND

    group = QgsProject.instance().layerTreeRoot().addGroup("S2 2024-06-01")
    files = _band_files(tmp_path / "bands")
    for path in files:
        _add(path, path.stem[-3:], group)
    groups = layer_groups()
    assert [name for name, _ in groups] == ["S2 2024-06-01"]
    assert sorted(groups[0][1]) == sorted(str(p) for p in files)
    panel = dock.landcover
    panel.model_combo.setCurrentIndex(panel.model_combo.findData("amm_fusenet_s2_dem_hunan"))
    panel.file_buttons["s2"].set_group(*groups[0])
    dem = write_raster(tmp_path / "dem.tif", np.full((1, 24, 24), 120.0, np.float32))
    panel.layer_combos["dem"].setLayer(_add(dem, "DEM"))
    assert panel.layer_combos["s2"].currentLayer() is None  # the group replaces a layer
    assert "13 band files of the layer group 'S2 2024-06-01'" in panel.layer_details["s2"].text()
    table = panel.mapping_box.file_tables["s2"]
    assert table.matched() == [BY_FILE_NAME] * 13
    assert table.item(8, 0).text() == "B8A" and table.item(8, 1).text().endswith("_B8A.tif")
    dock.show()
    dock.show_panel(panel)
    panel.mapping_box.setCollapsed(False)
    assert table.isVisible()
    assert panel.mapping_box.title() == "Band mapping: all 14 matched"
    # A band missing from the group: its row says so, and the run is refused before it starts.
    panel.file_buttons["s2"].set_files([str(p) for p in files if "B8A" not in p.name])
    table = panel.mapping_box.file_tables["s2"]
    assert table.matched()[8] == NOT_FOUND and table.item(8, 1).text() == "— missing —"
    assert "1 of 14 not matched" in panel.mapping_box.title()
    assert any("B8A" in p for p in panel.problems())
    request_files = [s.path for s in dock.landcover.slot_sources("s2")]
    assert len(request_files) == 12


def test_the_model_follows_the_inputs_until_the_user_chooses_one(dock, tmp_path):
    """The default model is the one that uses every picked layer; once the user picks a model
    (or a weights file) it stays, and the warning offers the one that fits instead."""
    rng = np.random.default_rng(0)
    s2 = write_raster(tmp_path / "s2.tif", rng.integers(0, 3000, (13, 16, 16)).astype("uint16"))
    s1 = write_raster(tmp_path / "s1.tif", rng.normal(-12, 3, (2, 16, 16)).astype("float32"))
    dem = write_raster(tmp_path / "dem.tif", rng.normal(300, 20, (1, 16, 16)).astype("float32"))
    panel = dock.landcover
    panel.model_combo.setCurrentIndex(panel.model_combo.findData("amm_fusenet_s2_s1_hunan"))
    panel.layer_combos["s2"].setLayer(_add(s2, "S2"))
    panel.layer_combos["s1"].setLayer(_add(s1, "S1"))
    assert panel.model_combo.currentData() == "amm_fusenet_s2_s1_hunan"
    panel.layer_combos["dem"].setLayer(_add(dem, "DEM"))
    chosen = panel.model_combo.currentData()
    assert {s.key for s in panel.slots()} == {"s2", "s1", "dem"}, chosen
    assert panel.unused_layers() == []
    # The user chooses the S2+S1 model: picking layers no longer changes it.
    panel.model_combo.setCurrentIndex(panel.model_combo.findData("amm_fusenet_s2_s1_hunan"))
    panel.model_combo.activated.emit(panel.model_combo.currentIndex())
    panel.layer_combos["dem"].setLayer(None)
    panel.layer_combos["dem"].setLayer(QgsProject.instance().mapLayersByName("DEM")[0])
    assert panel.model_combo.currentData() == "amm_fusenet_s2_s1_hunan"
    fits = get_model_spec(panel.model_for_inputs().name)
    assert panel.unused_layers() == [
        f"amm_fusenet_s2_s1_hunan does not use 'DEM'; {fits.title} ({fits.name}) uses all the "
        "layers picked."
    ]


def test_result_legends_say_what_the_user_must_know(qgis_new_project, tmp_path):
    """Demo weights and inputs unlike the model's data are said in the legend, first."""
    from landfuse.models.weights_info import DEMO_LABEL
    from landfuse.processing.results import UNLIKE_LABEL, add_result_layers

    path = write_raster(tmp_path / "run_classes.tif", np.zeros((1, 4, 4), np.uint8))
    result = {
        "task": "landcover",
        "outputs": {"classes": str(path), "report": str(tmp_path / "run_report.json")},
        "summary": {"demo_weights": True, "warnings": [{"code": "input_values"}]},
    }
    project = QgsProject.instance()
    (layer,) = add_result_layers(result, project)
    model = QgsLayerTreeModel(project.layerTreeRoot())
    labels = [n.data(0) for n in model.layerLegendNodes(project.layerTreeRoot().findLayer(layer))]
    assert labels[:2] == [f"⚠ {DEMO_LABEL}", f"⚠ {UNLIKE_LABEL}"]
    result["summary"] = {}
    (plain,) = add_result_layers(result, project)
    model = QgsLayerTreeModel(project.layerTreeRoot())
    labels = [n.data(0) for n in model.layerLegendNodes(project.layerTreeRoot().findLayer(plain))]
    assert not any(isinstance(label, str) and label.startswith("⚠") for label in labels)


def test_run_is_off_while_problems_are_listed_or_torch_is_missing(dock, tmp_path):
    """Issue 16: Run is enabled only when nothing stops the run; without torch for the worker
    it stays off and says why, instead of failing with "No module named 'torch'"."""
    from landfuse.processing import environment

    rng = np.random.default_rng(0)
    s2 = write_raster(tmp_path / "s2.tif", rng.integers(0, 3000, (13, 16, 16)).astype("uint16"))
    s1 = write_raster(tmp_path / "s1.tif", rng.normal(-12, 3, (2, 16, 16)).astype("float32"))
    dock.show_panel(dock.landcover)
    panel = dock.landcover
    panel.model_combo.setCurrentIndex(panel.model_combo.findData("amm_fusenet_s2_s1_hunan"))
    dock.show_probe(environment.PythonProbe(sys_python(), torch="2.13.0"))
    assert not dock.run_button.isEnabled()  # no weights, no layers: listed in red
    assert "red" in dock.run_button.toolTip()
    panel.layer_combos["s2"].setLayer(_add(s2, "S2"))
    panel.layer_combos["s1"].setLayer(_add(s1, "S1"))
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"")
    panel.weights.setFilePath(str(weights))
    assert panel.problems() == [] and dock.run_button.isEnabled()
    dock.show_probe(environment.PythonProbe("/usr/bin/python3", error="No module named 'torch'"))
    assert not dock.run_button.isEnabled() and "orange box" in dock.run_button.toolTip()
    dock.run()  # e.g. from a script: refused with the guidance, no worker started
    assert dock.task is None and "PyTorch is missing" in dock.status.text()


def sys_python() -> str:
    import sys

    return sys.executable
