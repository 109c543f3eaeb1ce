"""The dock's choices saved in the QGIS project (the .qgz) and restored when it is opened.

Every task panel's layers, model, weights, outputs and own options, the run options, the area
and the output folder, each as text under the ``LandFuse`` scope of the project.
"""

import contextlib
from typing import Any, Callable, Dict, Tuple

from qgis.core import QgsProject

from .run_options import option_text, set_option_text

PROJECT_SCOPE = "LandFuse"


def project_widgets(dock: Any) -> Dict[str, Tuple[Callable[[], str], Callable[[str], None]]]:
    """Each remembered choice of the dock: key → (read as text, restore from text)."""

    def layer_pair(combo):
        return (
            lambda: combo.currentLayer().id() if combo.currentLayer() else "",
            lambda value: combo.setLayer(QgsProject.instance().mapLayer(value) if value else None),
        )

    def combo_pair(combo):
        return (
            lambda: str(combo.currentData()),
            lambda value: combo.setCurrentIndex(max(0, combo.findData(value))),
        )

    def file_pair(widget):
        return (widget.filePath, widget.setFilePath)

    def spin_pair(spin):
        return (lambda: str(spin.value()), lambda value: spin.setValue(int(value)))

    def check_pair(box):
        return (
            lambda: "1" if box.isChecked() else "0",
            lambda value: box.setChecked(value == "1"),
        )

    def files_pair(button):
        return (
            lambda: button.origin or "\n".join(button.files),
            lambda value: button.set_files([v for v in value.split("\n") if v]),
        )

    def option_pair(widget):
        return (lambda: option_text(widget), lambda value: set_option_text(widget, value))

    pairs = {}
    for panel in dock.panels:
        name = panel.task_name
        pairs.update({f"{name}/{k}": layer_pair(c) for k, c in panel.layer_combos.items()})
        pairs[f"{name}/model"] = combo_pair(panel.model_combo)
        pairs[f"{name}/weights"] = file_pair(panel.weights)
        pairs.update({f"{name}/files/{k}": files_pair(b) for k, b in panel.file_buttons.items()})
        pairs.update({f"{name}/output/{k}": check_pair(b) for k, b in panel.product_boxes.items()})
        pairs.update({f"{name}/{k}": option_pair(w) for k, w in panel.option_widgets.items()})
    pairs.update({f"advanced/{k}": option_pair(w) for k, w in dock.option_widgets.items()})
    pairs.update(
        {
            "area/polygons": layer_pair(dock.polygon_layer),
            "advanced/output_dir": file_pair(dock.output_dir),
            "tab": (
                lambda: str(dock.tabs.currentIndex()),
                lambda v: dock.tabs.setCurrentIndex(int(v)),
            ),
            "area/mode": (
                lambda: str(dock.area_group.checkedId()),
                lambda v: dock.area_group.button(int(v)).setChecked(True),
            ),
            "area/selected_only": check_pair(dock.selected_only),
            "advanced/pixel_grid": check_pair(dock.pixel_grid),
        }
    )
    return pairs


def save(dock: Any) -> None:
    """Remember the dock's choices in the project (saved with the .qgz)."""
    project = QgsProject.instance()
    for key, (getter, _setter) in project_widgets(dock).items():
        project.writeEntry(PROJECT_SCOPE, key, getter())


def restore(dock: Any) -> None:
    """Restore the choices saved in the project, if any (layers first, then the models)."""
    project = QgsProject.instance()
    order = sorted(project_widgets(dock).items(), key=lambda kv: kv[0].endswith("/model"))
    for key, (_getter, setter) in order:
        value, found = project.readEntry(PROJECT_SCOPE, key, "")
        if found and value != "":
            with contextlib.suppress(ValueError, TypeError, AttributeError):
                setter(value)
