"""A slot's second way in: Sentinel-2 as delivered, band files or a product folder (issue 13).

Beside each layer picker of a task panel, a *Files* button offers "Band files…" (one file per
band, in any order) and "Product or folder…" (a ``.SAFE`` product, a folder of band files).
The files are named by their file names (:func:`~landfuse.core.band_files.expand_folders`,
:func:`~landfuse.core.band_mapping.band_from_file_name`) and handed to the engine as they are:
nothing is stacked or resampled on disk.
"""

from typing import Any, List, Optional, Sequence

from qgis.PyQt.QtCore import pyqtSignal
from qgis.PyQt.QtWidgets import QFileDialog, QMenu, QToolButton, QWidget

from ..core.band_files import RASTER_SUFFIXES, expand_folders
from ..core.band_mapping import MATCHED_BY_POSITION, FileBands, resolve_bands
from ..core.errors import LandFuseError

__all__ = ["BandFilesButton"]


class BandFilesButton(QToolButton):
    """Chooses band files or a folder for one slot; :attr:`files` holds them."""

    changed = pyqtSignal()

    def __init__(self, key: str, parent: QWidget = None) -> None:
        super().__init__(parent)
        self.key = key
        self.files: List[str] = []
        self.origin = ""
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

    def set_files(self, paths: Sequence[str], sensor: Any = None) -> None:
        """Take these files or folders (a folder becomes its band files)."""
        self.origin = paths[0] if len(paths) == 1 else ""
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
