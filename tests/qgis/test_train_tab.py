"""Issue 14: the dock's Train tab, headless: its request from the widgets (a scratch layer
with a text field, a label raster with a known legend), and a short training from the tab that
selects the new weights in the mapping tab and maps the scene with them."""

import json
import time
from pathlib import Path

import numpy as np
import pytest
from labelled_scene import ORIGIN, SIZE, labelled_scene, write_tif
from qgis.core import (
    QgsApplication,
    QgsFeature,
    QgsGeometry,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
    QgsVectorLayer,
)

pytestmark = pytest.mark.qgis


def _add_rasters(files: dict) -> dict:
    added = {}
    for key, path in files.items():
        layer = QgsRasterLayer(path, key.upper())
        assert layer.isValid()
        QgsProject.instance().addMapLayer(layer)
        added[key] = layer
    return added


def _scratch(classes=("Water", "trees", "built-up")) -> QgsVectorLayer:
    """A memory layer with a text field: one polygon inside each stripe, as a user draws them."""
    layer = QgsVectorLayer("Polygon?crs=EPSG:32631&field=landuse:string", "labels", "memory")
    stripe = SIZE // 3 * 10
    features = []
    for i, name in enumerate(classes):
        x0 = ORIGIN[0] + i * stripe + 20
        feature = QgsFeature(layer.fields())
        rect = QgsRectangle(x0, ORIGIN[1] - SIZE * 10 + 20, x0 + stripe - 40, ORIGIN[1] - 20)
        feature.setGeometry(QgsGeometry.fromRect(rect))
        feature.setAttribute("landuse", name)
        features.append(feature)
    layer.dataProvider().addFeatures(features)
    QgsProject.instance().addMapLayer(layer)
    return layer


def _wait(tab_or_dock, timeout=300):
    start = time.monotonic()
    while tab_or_dock.task is not None and time.monotonic() - start < timeout:
        QgsApplication.processEvents()
        time.sleep(0.02)
    assert tab_or_dock.task is None, "did not finish in time"


def test_the_train_tabs_request_from_its_widgets(dock, tmp_path):
    tab = dock.train
    assert dock.tabs.tabText(dock.tabs.indexOf(tab.parentWidget().parentWidget())) == "Train"
    rasters = _add_rasters(labelled_scene(tmp_path))
    panel = tab.panel()
    assert panel.model_combo.currentData() == "amm_fusenet_lite_s2_s1_dem"  # lite on a CPU
    for key, layer in rasters.items():
        panel.layer_combos[key].setLayer(layer)
    assert tab.problems() == ["Choose the labels: polygons with a class field, or a label raster."]
    tab.labels.setLayer(_scratch())
    assert tab.field.currentField() == "landuse"  # guessed from its name
    assert [c["name"] for c in tab.classes.classes()] == ["Water", "built-up", "trees"]
    colours = {c["name"]: c["color"] for c in tab.classes.classes()}
    assert colours["trees"] == "#1e782d" and colours["Water"] == "#286ec8"
    tab.classes.item(0, 1).setText("open water")  # the user renames a class
    assert "chips of 64 px" in tab.estimate.text() and "on the CPU" in tab.estimate.text()
    dock.output_dir.setFilePath(str(tmp_path / "out"))
    request = tab.build_request()
    assert request.model == "amm_fusenet_lite_s2_s1_dem" and request.label_field == "landuse"
    assert Path(request.labels).name == "labels.gpkg" and Path(request.labels).is_file()
    assert [c["name"] for c in request.classes] == ["open water", "built-up", "trees"]
    assert request.label_map == {"Water": 0, "built-up": 1, "trees": 2}
    assert {k: len(v) for k, v in request.inputs.items()} == {"s2": 1, "s1": 1, "dem": 1}
    assert request.validation is None and request.holdout == 0.3
    assert request.init_encoders is None and request.encoder == "resnet18" and request.balance
    # Initialise from a catalogued pretrained encoder: its modality's encoder, its depth.
    keys = [tab.init_from.itemData(i) for i in range(tab.init_from.count())]
    assert keys == ["", "ssl4eo_s12_s2_moco", "ssl4eo_s12_s1_moco"]
    tab.init_from.setCurrentIndex(1)
    started = tab.build_request()
    assert started.init_encoders == "s2=ssl4eo_s12_s2_moco" and started.encoder == "resnet50"
    tab.init_from.setCurrentIndex(0)
    # A label raster with ESA WorldCover values: the legend names the classes.
    values = np.array([10, 50, 80])[np.arange(SIZE) * 3 // SIZE][None, :].repeat(SIZE, 0)
    worldcover = QgsRasterLayer(
        write_tif(tmp_path / "worldcover.tif", values[None].astype(np.uint8)), "WorldCover"
    )
    QgsProject.instance().addMapLayer(worldcover)
    tab.labels.setLayer(worldcover)
    assert "ESA WorldCover" in tab.legend_note.text()
    assert [c["name"] for c in tab.classes.classes()] == ["trees", "built-up", "permanent water"]
    assert tab.build_request().label_map == {10: 0, 50: 1, 80: 2}


@pytest.mark.slow
def test_training_from_the_tab_selects_the_weights_and_maps_the_scene(dock, tmp_path):
    tab = dock.train
    rasters = _add_rasters(labelled_scene(tmp_path))
    panel = tab.panel()
    for key, layer in rasters.items():
        panel.layer_combos[key].setLayer(layer)
    tab.labels.setLayer(_scratch())
    tab.epochs.setValue(2)
    tab.chip.setValue(32)
    tab.batch.setValue(4)
    dock.output_dir.setFilePath(str(tmp_path / "out"))
    dock.tile.setValue(64)
    tab.train()
    assert tab.task is not None
    _wait(tab)
    assert tab.last_failure is None, tab.last_failure
    assert len(tab.curves.loss) == 2 and len(tab.curves.score) == 2
    text = tab.assessment.text()
    assert "random forest" in text and "Water" in text and "Confusion matrix" in text
    weights = tab.last_result["outputs"]["weights"]
    mapping = dock.landcover
    assert mapping.weights.filePath() == weights
    assert mapping.model_combo.currentData() == "amm_fusenet_lite_s2_s1_dem"
    assert [c.name for c in mapping.current_spec().classes] == ["Water", "built-up", "trees"]
    assert mapping.current_spec().tile_size == 32  # maps with the chip size it learnt on
    assert mapping.layer_combos["dem"].currentLayer() is rasters["dem"]
    assert tab.resume.isEnabled() and tab.map_button.isEnabled()
    tab.map_scene()
    _wait(dock)
    assert dock.last_failure is None, dock.last_failure
    classes = QgsProject.instance().mapLayersByName("Land cover")
    assert classes, [layer.name() for layer in QgsProject.instance().mapLayers().values()]
    style = Path(classes[0].source()).with_suffix(".qml").read_text()
    assert "Water" in style and "trees" in style
    saved = json.loads(Path(tab.last_result["outputs"]["assessment"]).read_text())
    assert saved["baseline"]["name"].startswith("random forest")


@pytest.mark.slow
def test_a_first_run_without_weights_tries_the_demo_scene(dock, tmp_path):
    """Issue 14: after installing the zip there are weights to try: the link writes the demo
    scene, loads it, chooses the shipped demo weights and maps; the layers say DEMO."""
    from landfuse.models.weights_info import DEMO_LABEL

    panel = dock.landcover
    assert panel.start.isVisibleTo(panel) and "demo scene" in panel.start.text()
    dock.output_dir.setFilePath(str(tmp_path / "out"))
    panel.start.linkActivated.emit("demo")
    assert dock.task is not None, dock.status.text()
    assert panel.weights.filePath().endswith("landcover_demo.pt")
    assert not panel.start.isVisibleTo(panel)
    _wait(dock)
    assert dock.last_failure is None, dock.last_failure
    names = [layer.name() for layer in QgsProject.instance().mapLayers().values()]
    assert f"Land cover ({DEMO_LABEL})" in names and "demo s2" in names
    # The other link leads to the Train tab, for the task of the tab.
    dock.change.start.linkActivated.emit("train")
    assert dock.tabs.currentWidget() is dock.train_page and dock.train.task_name == "change"


def test_the_change_train_tab_maps_polygon_values_to_change(dock, scenes, tmp_path):
    """Change keeps its two classes: text values such as "no change" / "new building" map to
    no change / change; the request says so, with the pair as inputs."""
    tab = dock.train
    tab.task_combo.setCurrentIndex(tab.task_combo.findData("change"))
    panel = tab.panel()
    assert panel.model_combo.currentData() == "amfnet_lite_s2"  # the CPU default
    panel.model_combo.setCurrentIndex(panel.model_combo.findData("amfnet_rgb_levir"))
    for key in ("before", "after"):
        layer = QgsRasterLayer(str(scenes[key]), key)
        QgsProject.instance().addMapLayer(layer)
        panel.layer_combos[key].setLayer(layer)
    layer = QgsVectorLayer("Polygon?crs=EPSG:32631&field=what:string", "changes", "memory")
    features = []
    for name, x0 in (("no change", 500000.0), ("new building", 500010.0)):
        feature = QgsFeature(layer.fields())
        rect = QgsRectangle(x0, 4499970.0, x0 + 8.0, 4499990.0)
        feature.setGeometry(QgsGeometry.fromRect(rect))
        feature.setAttribute("what", name)
        features.append(feature)
    layer.dataProvider().addFeatures(features)
    QgsProject.instance().addMapLayer(layer)
    tab.labels.setLayer(layer)
    tab.field.setField("what")
    assert "new building → change" in tab.legend_note.text()
    assert "no change → no change" in tab.legend_note.text()
    dock.output_dir.setFilePath(str(tmp_path / "out"))
    request = tab.build_request()
    assert request.task == "change" and request.classes == () and request.label_map is None
    assert set(request.inputs) == {"before", "after"} and request.label_field == "what"
    tab.init_from.setCurrentIndex(tab.init_from.findData("imagenet_resnet34"))
    shared = tab.build_request()  # AMFNet's one encoder serves both dates
    assert shared.init_encoders == "imagenet_resnet34" and shared.encoder == "resnet34"
