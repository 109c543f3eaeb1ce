"""The "Band mapping" box of a task panel: a table per input, and how each band was matched.

A layer's table is editable (:class:`~landfuse.ui.widgets.BandMappingTable`); band files get a
read-only table (:class:`~landfuse.ui.widgets.FileBandsTable`), since their file names decide.
The box's title counts the matched bands and those matched by position only.
"""

import html
from typing import Callable, Dict, List, Optional, Sequence

from qgis.gui import QgsCollapsibleGroupBox
from qgis.PyQt.QtWidgets import QLabel, QVBoxLayout, QWidget

from ..models.sensors import sensor_of
from ..processing import layers
from .widgets import BY_POSITION, BandMappingTable, FileBandsTable

__all__ = ["MappingBox"]


class MappingBox(QgsCollapsibleGroupBox):
    """The tables of one panel; :attr:`tables` (layers) and :attr:`file_tables` (band files)."""

    def __init__(self, task_name: str, parent: QWidget = None) -> None:
        super().__init__("Band mapping", parent)
        self.setObjectName(f"LandFuseBandMapping_{task_name}")
        self.setToolTip(
            "Which band of each input feeds each band the model expects, and how it was "
            "matched: by the band descriptions, the file names, or by position (check those)."
        )
        self.tables: Dict[str, BandMappingTable] = {}
        self.file_tables: Dict[str, FileBandsTable] = {}
        self._layout = QVBoxLayout(self)
        self.collapsedStateChanged.connect(self._show)

    def _clear(self) -> None:
        self.tables, self.file_tables = {}, {}
        while self._layout.count():
            widget = self._layout.takeAt(0).widget()
            if widget is not None:
                widget.hide()  # deleteLater() keeps it painted until the event loop runs
                widget.setParent(None)
                widget.deleteLater()

    def _title(self, text: str) -> None:
        self._layout.addWidget(QLabel(f"<b>{html.escape(text)}</b>", self))

    def refresh(
        self,
        layer_slots: Sequence,
        file_slots: Sequence,
        layer_for: Callable[[str], Optional[object]],
        files_for: Callable[[str], List[str]],
        on_edit: Callable[[], None],
    ) -> None:
        """Rebuild the tables: an editable one per layer slot, a read-only one per file slot."""
        self._clear()
        for slot in layer_slots:
            modality, layer = slot.modality, layer_for(slot.key)
            self._title(slot.title)
            table = BandMappingTable(self)
            table.setObjectName(f"LandFuseBands_{slot.key}")
            table.set_bands(
                [b.name for b in modality.bands],
                [f"{b.description} ({b.unit})" for b in modality.bands],
                layers.band_descriptions(layer) if layer is not None else None,
                sensor=sensor_of(modality),
            )
            table.changed.connect(on_edit)
            self._layout.addWidget(table)
            self.tables[slot.key] = table
        for slot in file_slots:
            self._title(f"{slot.title}: band files")
            table = FileBandsTable(self)
            table.setObjectName(f"LandFuseFileBands_{slot.key}")
            table.set_files(slot.modality.band_names, files_for(slot.key), sensor_of(slot.modality))
            self._layout.addWidget(table)
            self.file_tables[slot.key] = table
        self._show(self.isCollapsed())

    def _show(self, collapsed: bool) -> None:
        # Widgets added while the box is collapsed stay hidden when it expands: show them.
        for index in range(self._layout.count()):
            widget = self._layout.itemAt(index).widget()
            if widget is not None:
                widget.setVisible(not collapsed)

    def summary(self) -> str:
        """The box title: how many model bands are matched, and how many by position."""
        total = matched = by_position = 0
        for table in self.tables.values():
            mapping = table.mapping()
            total += len(mapping.model_bands)
            matched += sum(1 for i in mapping.raster_bands if i is not None)
            if len(mapping.model_bands) > 1:  # one band in, one band out: nothing to check
                by_position += len(table.position_rows())
        for table in self.file_tables.values():
            rows = table.matched()
            total += len(rows)
            matched += sum(1 for how in rows if table.is_matched(how))
            by_position += rows.count(BY_POSITION)
        if not total:
            return "Band mapping"
        # Short: the box's title does not wrap, and the dock is narrow.
        checked = f", {by_position} by position: check" if by_position else ""
        if matched == total:
            return f"Band mapping: all {total} matched{checked}"
        return f"Band mapping: {total - matched} of {total} not matched{checked}"

    def update_title(self) -> None:
        self.setTitle(self.summary())
