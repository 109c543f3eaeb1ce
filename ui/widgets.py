"""Small widgets of the dock: the band mapping table and the model card."""

import html
import os
from typing import Any, List, Optional, Sequence, Tuple

from qgis.PyQt.QtCore import pyqtSignal
from qgis.PyQt.QtGui import QBrush, QColor
from qgis.PyQt.QtWidgets import QComboBox, QHeaderView, QTableWidget, QTableWidgetItem

from ..core.band_mapping import (
    MATCHED_BY_POSITION,
    BandMapping,
    FileBands,
    band_from_file_name,
    band_key,
    resolve_bands,
    suggest_band_mapping,
)
from ..core.errors import LandFuseError

#: How a row of the band mapping was matched, as the table says it.
BY_NAME, BY_POSITION, BY_USER = "by name", "by position: check", "chosen"
#: How a band file was matched to a model band, as the band-files table says it.
BY_FILE_NAME, NOT_FOUND = "by file name", "no file"


class BandMappingTable(QTableWidget):
    """One row per model band; a combo box per row picks the raster band that feeds it, and a
    third column says how: by the band's description, by its position (a warning), or chosen.

    Filled from the layer's band descriptions (:func:`suggest_band_mapping`) and editable.
    """

    changed = pyqtSignal()

    def __init__(self, parent=None) -> None:
        super().__init__(0, 3, parent)
        self.setHorizontalHeaderLabels(["Model band", "Layer band", "Matched"])
        self.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeToContents)
        self.horizontalHeader().setSectionResizeMode(1, QHeaderView.Stretch)
        self.horizontalHeader().setSectionResizeMode(2, QHeaderView.ResizeToContents)
        self.verticalHeader().setVisible(False)
        self._model_bands: Tuple[str, ...] = ()
        self._band_count = 0

    def set_bands(
        self,
        model_bands: Sequence[str],
        band_tips: Sequence[str],
        layer_descriptions: Optional[Sequence[str]],
        sensor: Any = None,
    ) -> BandMapping:
        """Show the model's bands and pre-select the layer's matching bands.

        Args:
            model_bands: the model's band names for this modality.
            band_tips: a tooltip per model band (its description and unit).
            layer_descriptions: the layer's band descriptions, or None without a layer.
            sensor: the modality's sensor (its band aliases match descriptions), or None.

        Returns:
            The suggested mapping.
        """
        self.blockSignals(True)
        descriptions = list(layer_descriptions or [])
        mapping = suggest_band_mapping(descriptions, model_bands, sensor)
        self._model_bands = tuple(model_bands)
        self._band_count = len(descriptions)
        self.setRowCount(len(model_bands))
        for row, (name, tip) in enumerate(zip(model_bands, band_tips)):
            item = QTableWidgetItem(name)
            item.setToolTip(tip)
            self.setItem(row, 0, item)
            combo = QComboBox(self)
            combo.addItem("— not set —", None)
            for index, text in enumerate(descriptions, start=1):
                combo.addItem(f"Band {index}" + (f": {text}" if text else ""), index)
            chosen = mapping.raster_bands[row]
            combo.setCurrentIndex(0 if chosen is None else chosen)
            how = "" if chosen is None else (BY_NAME if mapping.by_description else BY_POSITION)
            self.setItem(row, 2, self._how_item(how))
            combo.currentIndexChanged.connect(lambda _index, r=row: self._edited(r))
            self.setCellWidget(row, 1, combo)
        self.resizeRowsToContents()
        height = self.horizontalHeader().height() + sum(
            self.rowHeight(r) for r in range(self.rowCount())
        )
        self.setFixedHeight(min(height + 4, 260))
        self.blockSignals(False)
        return mapping

    @staticmethod
    def _how_item(how: str) -> QTableWidgetItem:
        item = QTableWidgetItem(how)
        if how == BY_POSITION:
            item.setForeground(QBrush(QColor("#a15c00")))
            item.setToolTip(
                "The layer's bands carry no descriptions that name them: band i is taken for the "
                "model's band i. If the layer's bands are in another order, the map is wrong."
            )
        return item

    def _edited(self, row: int) -> None:
        self.setItem(row, 2, self._how_item(BY_USER))
        self.changed.emit()

    def matched(self) -> List[str]:
        """How each row is matched (:data:`BY_NAME`, :data:`BY_POSITION`, :data:`BY_USER`)."""
        return [self.item(r, 2).text() if self.item(r, 2) else "" for r in range(self.rowCount())]

    def position_rows(self) -> List[str]:
        """The model bands still matched by position alone."""
        return [
            self.item(r, 0).text() for r, how in enumerate(self.matched()) if how == BY_POSITION
        ]

    def mapping(self) -> BandMapping:
        """The mapping as the user left it."""
        chosen: List[Optional[int]] = []
        for row in range(self.rowCount()):
            combo = self.cellWidget(row, 1)
            chosen.append(combo.currentData() if combo is not None else None)
        return BandMapping(self._model_bands, tuple(chosen), False)

    def set_band(self, row: int, band: Optional[int]) -> None:
        """Choose raster band ``band`` (1-based; None to clear) for model band ``row``."""
        combo = self.cellWidget(row, 1)
        combo.setCurrentIndex(0 if band is None else band)

    @property
    def layer_band_count(self) -> int:
        return self._band_count


class FileBandsTable(QTableWidget):
    """Band files instead of a layer: one row per model band, the file that feeds it and how it
    was matched (read-only: the file names decide; rename a file to change it)."""

    def __init__(self, parent=None) -> None:
        super().__init__(0, 3, parent)
        self.setHorizontalHeaderLabels(["Model band", "Band file", "Matched"])
        self.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeToContents)
        self.horizontalHeader().setSectionResizeMode(1, QHeaderView.Stretch)
        self.horizontalHeader().setSectionResizeMode(2, QHeaderView.ResizeToContents)
        self.verticalHeader().setVisible(False)
        self.setEditTriggers(QTableWidget.NoEditTriggers)

    def set_files(
        self, model_bands: Sequence[str], files: Sequence[str], sensor: Any = None
    ) -> List[str]:
        """Show which file feeds each model band.

        Returns:
            How each row was matched (:data:`BY_FILE_NAME`, :data:`BY_NAME`,
            :data:`BY_POSITION` or :data:`NOT_FOUND`).
        """
        try:
            items = [FileBands(f, ("",), sensor=sensor) for f in files]
            resolved = resolve_bands(items, model_bands)
            choices: List[Optional[Tuple[int, int]]] = list(resolved.choices)
            how = {
                MATCHED_BY_POSITION: BY_POSITION,
                "file name": BY_FILE_NAME,
            }.get(resolved.how, BY_NAME)
        except LandFuseError:  # show what the file names do give; the panel says the error
            names = [band_from_file_name(f, sensor) for f in files]
            choices = [
                (names.index(key), 1) if key in names else None
                for key in (band_key(b, sensor) for b in model_bands)
            ]
            how = BY_FILE_NAME
        self.setRowCount(len(model_bands))
        matched = []
        for row, name in enumerate(model_bands):
            choice = choices[row] if row < len(choices) else None
            self.setItem(row, 0, QTableWidgetItem(name))
            path = files[choice[0]] if choice is not None else ""
            item = QTableWidgetItem(os.path.basename(path) if path else "— missing —")
            item.setToolTip(path)
            self.setItem(row, 1, item)
            row_how = how if choice is not None else NOT_FOUND
            how_item = QTableWidgetItem(row_how)
            if row_how in (BY_POSITION, NOT_FOUND):
                how_item.setForeground(QBrush(QColor("#a15c00")))
            self.setItem(row, 2, how_item)
            matched.append(row_how)
        self.resizeRowsToContents()
        height = self.horizontalHeader().height() + sum(
            self.rowHeight(r) for r in range(self.rowCount())
        )
        self.setFixedHeight(min(height + 4, 260))
        return matched

    def matched(self) -> List[str]:
        """How each row was matched, as :meth:`set_files` returned it."""
        return [self.item(r, 2).text() for r in range(self.rowCount())]

    @staticmethod
    def is_matched(how: str) -> bool:
        return how != NOT_FOUND


def _swatch(color: Tuple[int, int, int]) -> str:
    r, g, b = color
    return (
        f'<span style="background-color: rgb({r},{g},{b}); color: rgb({r},{g},{b});">'
        "&#9632;&#9632;</span>"
    )


def model_card_html(spec, weights_text: str = "") -> str:
    """The model card shown under the model picker: inputs, classes, normalisation, weights.

    Args:
        spec: a registry :class:`~landfuse.models.registry.ModelSpec`.
        weights_text: one line about the chosen weights file ("" when none is chosen).
    """
    parts = [f"<b>{html.escape(spec.title)}</b>"]
    inputs = []
    for modality in spec.modalities:
        bands = " ".join(b.name for b in modality.bands)
        unit = modality.bands[0].unit if modality.bands else ""
        norm = modality.normalisation.mode.replace("_", " ")
        inputs.append(
            f"{html.escape(modality.title)}: {html.escape(bands)} "
            f"<span style='color:#666'>({html.escape(unit)}; {html.escape(norm)})</span>"
        )
    parts.append("<b>Inputs</b><br>" + "<br>".join(inputs))
    classes = " ".join(f"{_swatch(c.color)}&nbsp;{html.escape(c.name)}" for c in spec.classes)
    parts.append(f"<b>Classes</b> ({len(spec.classes)})<br>{classes}")
    parts.append(
        f"<b>Network</b> {html.escape(spec.architecture)} · {html.escape(spec.encoder)} · "
        f"tile {spec.tile_size} px · output stride {spec.output_stride}"
    )
    parts.append(f"<b>Weights</b> {html.escape(weights_text or spec.weights_note)}")
    return "<br>".join(parts)


def torch_banner_html(python: str) -> str:
    """The dock's orange box when the worker's Python has no torch: the exact commands."""
    from ..processing.environment import torch_install_help

    lines = torch_install_help(python).splitlines()
    formatted = [
        f"<code>{html.escape(line.strip())}</code>" if line.startswith("  ") else html.escape(line)
        for line in lines
    ]
    return (
        "<b>PyTorch is missing</b> for the Python that runs LandFuse "
        f"(<code>{html.escape(python)}</code>). The dock works; maps and training need torch "
        "(Run stays off until then).<br>" + "<br>".join(formatted)
    )
