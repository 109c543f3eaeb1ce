"""A slot's second way in: Sentinel-2 as delivered, band files or a product folder (issue 13).

Beside each layer picker of a task panel, a *Files* button offers "Band files…" (one file per
band, in any order), "Product or folder…" (a ``.SAFE`` product, a folder of band files) and
"Layer group" (a group of the project's layer tree whose raster layers are the band files, as
QGIS shows a product opened band by band).
The files are named by their file names (:func:`~landfuse.core.band_files.expand_folders`,
:func:`~landfuse.core.band_mapping.band_from_file_name`) and handed to the engine as they are:
nothing is stacked or resampled on disk.
"""

import os
from typing import Any, List, Optional, Sequence

from qgis.core import QgsLayerTreeGroup, QgsProject, QgsRasterLayer
from qgis.PyQt.QtCore import pyqtSignal
from qgis.PyQt.QtWidgets import QFileDialog, QMenu, QToolButton, QWidget

from ..core.band_files import RASTER_SUFFIXES, expand_folders
from ..core.band_mapping import MATCHED_BY_POSITION, FileBands, resolve_bands
from ..core.errors import LandFuseError

__all__ = ["BandFilesButton", "layer_groups"]


class BandFilesButton(QToolButton):
    """Chooses band files or a folder for one slot; :attr:`files` holds them."""

    changed = pyqtSignal()

    def __init__(self, key: str, parent: QWidget = None) -> None:
        super().__init__(parent)
        self.key = key
        self.files: List[str] = []
        self.origin = ""
        #: The layer group the files came from ("" when they did not).
        self.group = ""
        #: Why the chosen folder gave no band files ("" when it did).
        self.error = ""
        #: The slot's sensor (set by the panel): its band names name the files.
        self.sensor: Any = None
        self.setText("Files…")
        self.setObjectName(f"LandFuseFiles_{key}")
        self.setToolTip(
            "Use the band files as delivered instead of a layer: one file per band in any "
            "order (…_B02.jp2, …_B8A.tif), or a Sentinel-2 product folder (.SAFE)."
        )
        self.setPopupMode(QToolButton.InstantPopup)
        menu = QMenu(self)
        menu.addAction("Band files…", self._pick_files)
        menu.addAction("Product or folder…", self._pick_folder)
        self.groups_menu = menu.addMenu("Layer group")
        self.groups_menu.setToolTip("The raster layers of a group of the Layers panel")
        self.groups_menu.aboutToShow.connect(self._list_groups)
        menu.addAction("Clear", lambda: self.set_files([]))
        self.setMenu(menu)

    def _pick_files(self) -> None:
        patterns = " ".join(f"*{s}" for s in RASTER_SUFFIXES)
        paths, _ = QFileDialog.getOpenFileNames(self, "Band files", "", f"Rasters ({patterns})")
        if paths:
            self.set_files(paths)

    def _pick_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "A product (.SAFE) or a folder")
        if folder:
            self.set_files([folder])

    def _list_groups(self) -> None:
        self.groups_menu.clear()
        groups = layer_groups()
        for name, files in groups:
            self.groups_menu.addAction(
                f"{name} ({len(files)} layers)",
                lambda name=name, files=files: self.set_group(name, files),
            )
        if not groups:
            self.groups_menu.addAction("No group of raster files in the project").setEnabled(False)

    def set_group(self, name: str, files: Sequence[str]) -> None:
        """Take the files of a layer group's raster layers as band files."""
        self.set_files(files, group=name)

    def set_files(self, paths: Sequence[str], sensor: Any = None, group: str = "") -> None:
        """Take these files or folders (a folder becomes its band files); ``group``: the layer
        group they are the layers of."""
        self.origin = paths[0] if len(paths) == 1 else ""
        self.group = group
        sensor = sensor if sensor is not None else self.sensor
        try:
            self.files = expand_folders(list(paths), sensor) if paths else []
            self.error = ""
        except LandFuseError as error:
            self.files, self.error = [], str(error)
        self.setText(f"Files ({len(self.files)})" if self.files else "Files…")
        self.changed.emit()

    def problem(self, band_names: Sequence[str], sensor: Any) -> Optional[str]:
        """Why the files cannot feed the model's bands ("" when they can; None: no files)."""
        if self.error:
            return self.error
        if not self.files:
            return None
        try:
            resolved = resolve_bands(
                [FileBands(f, ("",), sensor=sensor) for f in self.files], band_names
            )
        except LandFuseError as error:
            return str(error)
        if resolved.how == MATCHED_BY_POSITION and len(band_names) > 1:
            return (
                "The file names do not say which band each file holds (…_B02.tif, …_B8A.jp2): "
                "name them so, or give a stack whose bands are described."
            )
        return ""


def layer_groups(project: Optional[QgsProject] = None) -> List[tuple]:
    """The project's layer groups that hold raster layers read from files, as
    ``(group name, [file, ...])`` in layer-tree order (nested groups by their own name)."""
    project = project or QgsProject.instance()
    found = []

    def visit(group: QgsLayerTreeGroup) -> None:
        for child in group.children():
            if not isinstance(child, QgsLayerTreeGroup):
                continue
            files = [
                layer.source()
                for layer in (node.layer() for node in child.findLayers())
                if isinstance(layer, QgsRasterLayer) and os.path.isfile(layer.source())
            ]
            if files:
                found.append((child.name(), files))
            visit(child)

    visit(project.layerTreeRoot())
    return found
