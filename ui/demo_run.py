"""'Try LandFuse on a demo scene': a first run that works right after installing the zip.

The plugin ships the demo weights (``demo/weights``, trained on synthetic scenes only) and the
scene generator (:mod:`landfuse.core.demo_scene`). This writes the task's demo scene into the
output folder, adds its layers to the project in a group, chooses the demo weights and the
layers in the task's tab and starts the run. The maps it gives say "DEMO weights" in their
names and legends: they show the workflow, not a map of anywhere.
"""

from pathlib import Path
from typing import Any, Optional

from qgis.core import Qgis, QgsProject, QgsRasterLayer

from ..core.tasks import get_task
from ..processing import layers

__all__ = ["demo_weights_path", "start_link", "try_demo"]

#: The plugin's folder (the repository root in a checkout).
PLUGIN_ROOT = Path(__file__).resolve().parents[1]


def demo_weights_path(task_name: str) -> Optional[Path]:
    """The shipped demo weights of a task, or None when the installation lacks them."""
    name = get_task(task_name).demo_weights
    path = PLUGIN_ROOT / "demo" / "weights" / name if name else None
    return path if path is not None and path.is_file() else None


def try_demo(dock: Any, task_name: str) -> bool:
    """Write the demo scene of ``task_name``, load it, choose the demo weights and run.

    Returns:
        Whether the run started (the reason is shown in the dock when it did not).
    """
    weights = demo_weights_path(task_name)
    if weights is None:
        dock.show_message(
            "This installation has no demo weights (demo/weights in the plugin folder): "
            "reinstall the plugin zip, or train a model in the Train tab.",
            Qgis.Warning,
        )
        return False
    chosen = dock.output_dir.filePath()
    folder = (Path(chosen) if chosen else layers.output_folder_default()) / "demo_scene"
    panel = dock.panel_for(task_name)
    dock.status.setText("Writing the demo scene …")
    try:
        files = get_task(task_name).demo_inputs(folder / task_name)
    except ImportError as error:  # scipy shapes the demo landscape
        dock.show_message(
            f"The demo scene needs {error.name or 'a module'} in QGIS's Python: {error}.",
            Qgis.Warning,
        )
        return False
    project = QgsProject.instance()
    group = project.layerTreeRoot().insertGroup(0, f"LandFuse demo scene ({task_name})")
    added = {}
    for key, path in files.items():
        layer = QgsRasterLayer(path, f"demo {key}")
        if not layer.isValid():
            continue
        project.addMapLayer(layer, False)
        node = group.addLayer(layer)
        node.setItemVisibilityChecked(key != "truth")
        added[key] = layer
    panel.model_chosen = False
    panel.weights.setFilePath(str(weights))  # selects the demo weights' model
    for slot in panel.slots():
        if slot.key in added:
            panel.file_buttons[slot.key].set_files([])
            panel.layer_combos[slot.key].setLayer(added[slot.key])
    dock.show_panel(panel)
    if panel.check():
        return False
    dock.run()
    return dock.task is not None


def start_link(dock: Any, panel: Any, link: str) -> None:
    """The links of a mapping tab without weights: the demo scene, or the Train tab."""
    if link == "demo":
        try_demo(dock, panel.task_name)
    elif link == "train":
        dock.train.task_combo.setCurrentIndex(dock.train.task_combo.findData(panel.task_name))
        dock.show_panel(dock.train)
