"""Results → styled layers in a group named after the run, and a one-line summary.

Runs on the main thread only (the task's ``finished`` → the dock's ``done`` slot). The engine
writes a QML style beside each raster; QGIS applies a ``<name>.qml`` automatically when the
layer is created, and it is applied again explicitly here so the result does not depend on that.
"""

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

from qgis.core import (
    QgsApplication,
    QgsDefaultRasterLayerLegend,
    QgsLayerTreeGroup,
    QgsMapLayer,
    QgsProject,
    QgsRasterLayer,
    QgsSimpleLegendNode,
)
from qgis.PyQt import sip

from ..core.products import PRODUCTS
from ..core.tasks import get_task
from ..models.weights_info import DEMO_LABEL

#: Every task's products, main products first within each task.
PRODUCT_LIST = tuple(p for products in PRODUCTS.values() for p in products)


@dataclass(frozen=True)
class RunSummary:
    """What the message bar says about a finished run."""

    task: str
    text: str
    seconds: Optional[float]


def summarise(result: Dict[str, Any]) -> RunSummary:
    """A one-line summary of a worker result: the task's areas, and the time."""
    task_name = result.get("task", "")
    summary = result.get("summary") or {}
    seconds = (summary.get("timings_s") or {}).get("total")
    took = f" in {seconds:.1f} s" if isinstance(seconds, (int, float)) else ""
    try:
        task = get_task(task_name)
    except KeyError:
        task = None
    areas = task.describe_areas(summary.get("areas")) if task is not None else ""
    if task is not None and areas:
        text = f"{task.map_title} ready{took}: {areas}."
        if summary.get("demo_weights"):
            text += f" Made with {DEMO_LABEL}."
        text += device_sentence(summary)
    else:
        text = f"LandFuse run finished{took}."
    return RunSummary(task_name, text, seconds if isinstance(seconds, (int, float)) else None)


def device_sentence(summary: Dict[str, Any]) -> str:
    """Which device ran, at what precision and speed, and a batch lowered after running out of
    memory (" " + the sentence; "" when the summary says nothing of it)."""
    device = summary.get("device")
    if not device:
        return ""
    name = summary.get("device_name")
    where = f"{device} ({name})" if name and name != device else str(device)
    speed = summary.get("throughput_tiles_per_s")
    text = f" Ran on {where}, {summary.get('precision', '')}"
    text += f", {speed:.1f} tiles/s." if isinstance(speed, (int, float)) else "."
    tiles = summary.get("tiles") or {}
    if tiles.get("final_batch") and tiles.get("batch") and tiles["final_batch"] < tiles["batch"]:
        text += (
            f" The GPU ran out of memory: the batch went from {tiles['batch']} to "
            f"{tiles['final_batch']} tiles."
        )
    return text


#: What a layer's name says when the run warned that its inputs are unlike the model's data.
UNLIKE_LABEL = "check: inputs unlike the model's data"


def layer_notes(result: Dict[str, Any]) -> List[str]:
    """What the result layers' names must say: demo weights, inputs unlike the model's."""
    summary = result.get("summary") or {}
    codes = {w.get("code") for w in summary.get("warnings") or [] if isinstance(w, dict)}
    notes = [DEMO_LABEL] if summary.get("demo_weights") else []
    if "input_values" in codes:
        notes.append(UNLIKE_LABEL)
    return notes


class NotedLegend(QgsDefaultRasterLayerLegend):
    """The layer's usual legend, with what the user must know first (demo weights, inputs
    unlike the model's data), so that a legend in the Layers panel or a print layout says it."""

    def __init__(self, layer: QgsRasterLayer, notes: List[str]) -> None:
        super().__init__(layer)
        self.notes = list(notes)

    def createLayerTreeModelLegendNodes(self, node_layer):
        icon = QgsApplication.getThemeIcon("/mIconWarning.svg")
        notes = [QgsSimpleLegendNode(node_layer, f"⚠ {note}", icon) for note in self.notes]
        for node in notes:
            sip.transferto(node, None)  # the layer tree model owns its legend nodes
        return notes + list(super().createLayerTreeModelLegendNodes(node_layer))


def _group_name(result: Dict[str, Any]) -> str:
    outputs = result.get("outputs") or {}
    report = outputs.get("report", "")
    name = Path(report).name.replace("_report.json", "") if report else result.get("task", "run")
    return f"LandFuse {name}"


def add_result_layers(
    result: Dict[str, Any], project: Optional[QgsProject] = None
) -> List[QgsMapLayer]:
    """Add a run's rasters to the project, styled, in a group named after the run.

    Args:
        result: the worker's result (``outputs``: product key → path).
        project: the project (default: the current one).

    Returns:
        The layers added, main product first.
    """
    project = project or QgsProject.instance()
    outputs = result.get("outputs") or {}
    root = project.layerTreeRoot()
    group: QgsLayerTreeGroup = root.insertGroup(0, _group_name(result))
    added: List[QgsMapLayer] = []
    for product in PRODUCT_LIST:
        path = outputs.get(product.key)
        if not path or not os.path.isfile(path):
            continue
        notes = layer_notes(result)
        title = product.title + "".join(f" ({note})" for note in notes)
        layer = QgsRasterLayer(path, title, "gdal")
        if not layer.isValid():
            continue
        style = os.path.splitext(path)[0] + ".qml"
        if os.path.isfile(style):
            layer.loadNamedStyle(style)
        if notes:
            layer.setLegend(NotedLegend(layer, notes))
        project.addMapLayer(layer, False)
        node = group.addLayer(layer)
        node.setItemVisibilityChecked(product.visible)
        node.setExpanded(product.main)
        added.append(layer)
    return added
