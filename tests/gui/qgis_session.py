"""Run inside a real QGIS (``qgis --code``) by test_real_qgis.py; not a pytest module.

Reads its instructions from environment variables, drives the QGIS main window, saves
screenshots and writes what it saw as JSON, then quits QGIS.
"""

import json
import os
import traceback

from qgis.core import QgsApplication, QgsProject, QgsRasterLayer
from qgis.PyQt.QtCore import QTimer
from qgis.utils import iface, plugins

RESULT = os.environ["LANDFUSE_GUI_RESULT"]
SHOTS = os.environ["LANDFUSE_GUI_SHOTS"]
RASTER = os.environ["LANDFUSE_GUI_RASTER"]
state = {"plugins": sorted(plugins.keys()), "errors": []}


def finish() -> None:
    with open(RESULT, "w", encoding="utf-8") as handle:
        json.dump(state, handle, indent=1)
    QgsApplication.exit(0)


def capture() -> None:
    try:
        plugin = plugins["landfuse"]
        dock = plugin.dock
        state["dock_visible"] = bool(dock is not None and dock.isVisible())
        tree = dock.tree
        state["dock_layers"] = [
            [tree.topLevelItem(i).text(0), tree.topLevelItem(i).text(1)]
            for i in range(tree.topLevelItemCount())
        ]
        state["toolbar_checked"] = plugin.actions[0].isChecked()
        iface.mainWindow().grab().save(os.path.join(SHOTS, "qgis_main_window.png"))
        dock.grab().save(os.path.join(SHOTS, "landfuse_dock.png"))
    except Exception:
        state["errors"].append(traceback.format_exc())
    finish()


def start() -> None:
    try:
        if "landfuse" not in plugins:
            state["errors"].append("the landfuse plugin is not loaded")
            finish()
            return
        layer = QgsRasterLayer(RASTER, "Sentinel-2 demo (B04 B03 B02)")
        state["layer_valid"] = layer.isValid()
        QgsProject.instance().addMapLayer(layer)
        iface.mapCanvas().setExtent(layer.extent())
        # Open the dock the way a user does: the toolbar button.
        plugins["landfuse"].actions[0].trigger()
        iface.mainWindow().resize(1600, 1000)
        QTimer.singleShot(2500, capture)
    except Exception:
        state["errors"].append(traceback.format_exc())
        finish()


QTimer.singleShot(500, start)
