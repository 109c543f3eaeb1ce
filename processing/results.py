"""Results → styled layers in a group named after the run, and a one-line summary.

Runs on the main thread only (the task's ``finished`` → the dock's ``done`` slot). The engine
writes a QML style beside each raster; QGIS applies a ``<name>.qml`` automatically when the
layer is created, and it is applied again explicitly here so the result does not depend on that.
"""

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

from qgis.core import QgsLayerTreeGroup, QgsMapLayer, QgsProject, QgsRasterLayer

# Product key → (layer title, checked in the legend).
PRODUCTS = {
    "classes": ("Land cover", True),
    "confidence": ("Confidence (%)", False),
    "change": ("Change", True),
    "probability": ("Change probability", False),
}


@dataclass(frozen=True)
class RunSummary:
    """What the message bar says about a finished run."""

    task: str
    text: str
    seconds: Optional[float]


def _format_hectares(value: Optional[float]) -> str:
    if value is None:
        return "n/a"
    if value >= 100:
        return f"{value:,.0f} ha"
    return f"{value:,.2f} ha"


def summarise(result: Dict[str, Any]) -> RunSummary:
    """A one-line summary of a worker result: areas per class or changed area, and the time."""
    task = result.get("task", "")
    summary = result.get("summary") or {}
    areas = summary.get("areas")
    seconds = (summary.get("timings_s") or {}).get("total")
    took = f" in {seconds:.1f} s" if isinstance(seconds, (int, float)) else ""
    if task == "change" and isinstance(areas, dict):
        text = (
            f"Change map ready{took}: {_format_hectares(areas.get('changed_hectares'))} changed "
            f"({areas.get('changed_percent', 0):.2f} % of the mapped area)."
        )
    elif isinstance(areas, list) and areas:
        top = sorted(areas, key=lambda row: -row.get("pixels", 0))
        parts = [
            f"{row['name']} {_format_hectares(row.get('hectares'))}"
            if row.get("hectares") is not None
            else f"{row['name']} {row.get('percent', 0):.1f} %"
            for row in top
            if row.get("pixels", 0) > 0
        ]
        text = f"Land-cover map ready{took}: " + ", ".join(parts) + "."
    else:
        text = f"LandFuse run finished{took}."
    return RunSummary(task, text, seconds if isinstance(seconds, (int, float)) else None)


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
    for key, (title, visible) in PRODUCTS.items():
        path = outputs.get(key)
        if not path or not os.path.isfile(path):
            continue
        layer = QgsRasterLayer(path, title, "gdal")
        if not layer.isValid():
            continue
        style = os.path.splitext(path)[0] + ".qml"
        if os.path.isfile(style):
            layer.loadNamedStyle(style)
        project.addMapLayer(layer, False)
        node = group.addLayer(layer)
        node.setItemVisibilityChecked(visible)
        node.setExpanded(key in ("classes", "change"))
        added.append(layer)
    return added
