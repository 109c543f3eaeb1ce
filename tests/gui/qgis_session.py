"""Run inside a real QGIS (``qgis --code``) by the GUI tests; not a pytest module.

Reads a scenario (JSON) from ``LANDFUSE_GUI_SCENARIO``, drives the QGIS main window and the
LandFuse dock the way a user does (toolbar button, layer pickers, Run), saves screenshots, writes
what it saw as JSON to ``LANDFUSE_GUI_RESULT`` and quits QGIS.

Scenario keys: ``shots`` (folder), ``layers`` ({name: path}); optional ``landcover`` and
``change`` runs ({"s2": name, "s1": name, "weights": path} / {"before": name, "after": name,
"weights": path}), ``output_dir``; ``train`` ({"s2", "s1", "dem": layer names, "polygons": a
vector file copied into a scratch layer, "field", "epochs", "chip"}) trains from the Train tab,
maps the scene with the new weights and records the assessment.
"""

import json
import os
import time
import traceback
from pathlib import Path

from qgis.core import (
    QgsApplication,
    QgsContrastEnhancement,
    QgsFeatureRequest,
    QgsMultiBandColorRenderer,
    QgsProject,
    QgsRasterLayer,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import QTimer
from qgis.utils import iface, plugins

with open(os.environ["LANDFUSE_GUI_SCENARIO"], encoding="utf-8") as _handle:
    SCENARIO = json.load(_handle)
RESULT = os.environ["LANDFUSE_GUI_RESULT"]
SHOTS = SCENARIO["shots"]
state = {"plugins": sorted(plugins.keys()), "errors": [], "runs": {}}
layers = {}


def finish() -> None:
    with open(RESULT, "w", encoding="utf-8") as handle:
        json.dump(state, handle, indent=1)
    QgsApplication.exit(0)


def shot(widget, name: str) -> None:
    widget.grab().save(os.path.join(SHOTS, name))


def wait(predicate, timeout: float) -> bool:
    start = time.monotonic()
    while not predicate() and time.monotonic() - start < timeout:
        QgsApplication.processEvents()
        time.sleep(0.02)
    return predicate()


def settle(seconds: float = 1.0) -> None:
    """Let the canvas render and the widgets repaint before a screenshot."""
    wait(lambda: False, seconds)
    iface.mapCanvas().waitWhileRendering()


def true_colour(layer) -> None:
    """Show a 13-band Sentinel-2 layer as B04/B03/B02 with a min-max stretch, as an analyst
    would set it (QGIS's default shows bands 1-2-3)."""
    renderer = QgsMultiBandColorRenderer(layer.dataProvider(), 4, 3, 2)
    for band, setter in ((4, renderer.setRedContrastEnhancement),
                         (3, renderer.setGreenContrastEnhancement),
                         (2, renderer.setBlueContrastEnhancement)):  # fmt: skip
        enhancement = QgsContrastEnhancement(layer.dataProvider().dataType(band))
        enhancement.setContrastEnhancementAlgorithm(QgsContrastEnhancement.StretchToMinimumMaximum)
        enhancement.setMinimumValue(200)
        enhancement.setMaximumValue(2500)
        setter(enhancement)
    layer.setRenderer(renderer)


def run_from_dock(dock, kind: str, spec: dict) -> None:
    if kind == "landcover":
        dock.show_panel(dock.landcover)
        panel = dock.landcover
        panel.layer_combos["s2"].setLayer(layers[spec["s2"]])
        for key in ("s1", "dem"):
            panel.layer_combos[key].setLayer(layers[spec[key]] if spec.get(key) else None)
    else:
        dock.show_panel(dock.change)
        panel = dock.change
        panel.before.setLayer(layers[spec["before"]])
        panel.after.setLayer(layers[spec["after"]])
    if spec.get("model"):
        panel.model_combo.setCurrentIndex(panel.model_combo.findData(spec["model"]))
    panel.weights.setFilePath(spec["weights"])
    dock.output_dir.setFilePath(SCENARIO["output_dir"])
    # The band-mapping box, expanded as a user would: its tables must show (issue 13).
    panel.mapping_box.setCollapsed(False)
    settle(0.5)
    state.setdefault("mapping", {})[kind] = {
        "title": panel.mapping_box.title(),
        "tables_visible": bool(panel.tables) and all(t.isVisible() for t in panel.tables.values()),
        "rows": sum(t.rowCount() for t in panel.tables.values()),
    }
    area = dock.tabs.currentWidget()
    if hasattr(area, "ensureWidgetVisible"):  # the tab scrolls: bring the tables into view
        area.ensureWidgetVisible(next(iter(panel.tables.values()), panel.mapping_box), 0, 0)
        settle(0.3)
    shot(dock, f"dock_{kind}_bands.png")
    panel.mapping_box.setCollapsed(True)
    if hasattr(area, "verticalScrollBar"):
        area.verticalScrollBar().setValue(0)
    settle(0.5)
    shot(dock, f"dock_{kind}_before.png")
    if spec.get("executor"):  # Advanced ▸ Executor, checked as a user would (issue 17)
        dock.advanced_box.setCollapsed(False)
        dock.executor.setEditText(spec["executor"])
        dock.executor_check.button.click()
        wait(lambda: dock.executor_check.process is None, 60)
        settle(0.5)
        state.setdefault("executor_check", {})[kind] = dock.executor_check.answer.text()
        shot(dock, f"dock_{kind}_executor.png")
    dock.run_button.click()
    seen_progress = wait(lambda: dock.task is None or dock.progress.value() > 0, 120)
    if dock.task is not None and seen_progress:
        shot(dock, f"dock_{kind}_during.png")
    finished = wait(lambda: dock.task is None, 900)
    record = {"finished": finished, "status": dock.status.text()}
    if dock.last_failure is not None and finished:
        record["failure"] = dock.last_failure.message
    if dock.last_summary is not None:
        record["summary"] = dock.last_summary.text
    root = QgsProject.instance().layerTreeRoot()
    record["groups"] = {
        group.name(): [node.layer().name() for node in group.findLayers()]
        for group in root.findGroups()
    }
    reports = sorted(Path(SCENARIO["output_dir"]).glob(f"{kind}*_report.json"))
    if reports:
        record["executor"] = json.loads(reports[-1].read_text()).get("executor")
    state["runs"][kind] = record
    first_group = root.findGroups()[0] if root.findGroups() else None
    if first_group is not None and first_group.findLayers():
        iface.setActiveLayer(first_group.findLayers()[0].layer())
        iface.mapCanvas().setExtent(first_group.findLayers()[0].layer().extent())
        iface.mapCanvas().refresh()
    settle(2.0)
    shot(dock, f"dock_{kind}_after.png")
    shot(iface.mainWindow(), f"map_{kind}.png")


def train_from_dock(dock, spec: dict) -> None:
    """Train from the Train tab on polygons drawn in a scratch layer, then map with the result."""
    tab = dock.train
    dock.show_panel(tab)
    panel = tab.panel()
    for key in ("s2", "s1", "dem"):
        panel.layer_combos[key].setLayer(layers[spec[key]])
    drawn = QgsVectorLayer(spec["polygons"], "drawn", "ogr")
    scratch = drawn.materialize(QgsFeatureRequest())  # a memory layer, as a user's sketch is
    scratch.setName("My training polygons")
    QgsProject.instance().addMapLayer(scratch)
    tab.labels.setLayer(scratch)
    tab.field.setField(spec["field"])
    tab.epochs.setValue(spec["epochs"])
    tab.chip.setValue(spec["chip"])
    dock.output_dir.setFilePath(SCENARIO["output_dir"])
    settle(0.5)
    record = {
        "model": panel.model_combo.currentData(),
        "classes": [c["name"] for c in tab.classes.classes()],
        "estimate": tab.estimate.text(),
    }
    shot(dock, "dock_train_before.png")
    tab.train_button.click()
    wait(lambda: tab.task is None or len(tab.curves.loss) >= 2, 600)
    if tab.task is not None:
        shot(dock, "dock_train_during.png")
    record["finished"] = wait(lambda: tab.task is None, 1200)
    if tab.last_failure is not None:
        record["failure"] = tab.last_failure.message
    result = tab.last_result or {}
    record["assessment"] = result.get("assessment")
    record["weights"] = (result.get("outputs") or {}).get("weights")
    record["curves"] = len(tab.curves.loss)
    area = dock.tabs.currentWidget()
    if hasattr(area, "ensureWidgetVisible"):
        area.ensureWidgetVisible(tab.assessment, 0, 0)
    settle(0.5)
    shot(dock, "dock_train_after.png")
    shot(tab.assessment, "dock_train_assessment.png")
    record["mapping_weights"] = dock.landcover.weights.filePath()
    tab.map_button.click()
    wait(lambda: dock.task is None or dock.progress.value() > 0, 60)
    record["mapped"] = wait(lambda: dock.task is None, 900)
    if dock.last_failure is not None:
        record["map_failure"] = dock.last_failure.message
    root = QgsProject.instance().layerTreeRoot()
    group = root.findGroups()[0] if root.findGroups() else None
    if group is not None and group.findLayers():
        classes = group.findLayers()[0].layer()
        record["class_map"] = classes.source()
        iface.setActiveLayer(classes)
        iface.mapCanvas().setExtent(classes.extent())
        iface.mapCanvas().refresh()
    state["train"] = record
    settle(2.0)
    shot(iface.mainWindow(), "map_train.png")


def install_torch(dock) -> None:
    """Without torch: install it from the dock, then map the demo scene with it."""
    from landfuse.processing import managed_env

    record = {"button": dock.install_torch.isVisible()}
    dock.advanced_box.setCollapsed(False)
    task = dock.torch_setup.start(managed_env.choose_build([]))  # the CPU build, no question
    wait(lambda: dock.torch_setup.log.blockCount() > 3 or task.isCanceled(), 120)
    dock.tabs.hide()  # room for the installation's state, Cancel and pip's log in the shot
    dock.area_box.hide()
    settle(0.5)
    shot(dock, "no_torch_installing.png")
    dock.tabs.show()
    dock.area_box.show()
    record["installed"] = wait(lambda: dock.torch_setup.task is None, 900)
    record["state"] = dock.torch_setup.state.text()
    record["worker_python"] = dock.worker_python.filePath()
    wait(lambda: dock.probe is not None and dock.probe.has_torch, 120)
    record["probe_torch"] = dock.probe.torch if dock.probe is not None else None
    record["banner_after"] = dock.torch_banner.isVisible()
    record["device_line"] = dock.device_line.text()
    dock.advanced_box.setCollapsed(True)
    dock.output_dir.setFilePath(SCENARIO["output_dir"])
    dock.landcover.start.linkActivated.emit("demo")  # a map through the new environment
    record["mapped"] = wait(lambda: dock.task is None, 600)
    if dock.last_failure is not None:
        record["map_failure"] = dock.last_failure.message
    record["summary"] = dock.last_summary.text if dock.last_summary is not None else ""
    state["install"] = record
    settle(1.0)
    shot(dock, "no_torch_installed.png")


def main() -> None:
    try:
        plugin = plugins.get("landfuse")
        if plugin is None:
            state["errors"].append("the landfuse plugin is not loaded")
            return
        for name, path in SCENARIO["layers"].items():
            layer = QgsRasterLayer(path, name)
            state.setdefault("layers_valid", {})[name] = layer.isValid()
            if layer.bandCount() == 13:
                true_colour(layer)
            QgsProject.instance().addMapLayer(layer)
            layers[name] = layer
        if layers:
            iface.mapCanvas().setExtent(next(iter(layers.values())).extent())
        iface.mainWindow().resize(1600, 1000)
        plugin.actions[0].trigger()  # the toolbar button opens the dock
        dock = plugin.dock
        wait(lambda: dock.probe is not None, 60)  # the background torch probe
        state["dock_visible"] = bool(dock.isVisible())
        state["toolbar_checked"] = plugin.actions[0].isChecked()
        state["torch_banner"] = dock.torch_banner.isVisible()
        state["torch_banner_text"] = dock.torch_banner.text()
        dock.show_panel(dock.layers_panel)
        tree = dock.tree
        state["dock_layers"] = [
            [tree.topLevelItem(i).text(0), tree.topLevelItem(i).text(1)]
            for i in range(tree.topLevelItemCount())
        ]
        settle(1.0)
        prefix = SCENARIO.get("shot_prefix", "")
        if not prefix:
            shot(iface.mainWindow(), "qgis_main_window.png")
        elif dock.torch_banner.isVisible():
            dock.show_panel(dock.landcover)
            settle(0.3)
        shot(dock, f"{prefix}landfuse_dock.png")
        for kind in ("landcover", "change"):
            if SCENARIO.get(kind):
                run_from_dock(dock, kind, SCENARIO[kind])
        if SCENARIO.get("train"):
            train_from_dock(dock, SCENARIO["train"])
        if SCENARIO.get("install_torch"):
            install_torch(dock)
    except Exception:  # report anything to the test, then quit QGIS
        state["errors"].append(traceback.format_exc())
    finally:
        finish()


QTimer.singleShot(500, main)
