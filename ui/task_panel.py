"""A task's panel in the dock: model, weights, one layer per input slot, outputs, band mapping.

One :class:`TaskPanel` serves every task (:mod:`landfuse.core.tasks`): its model list is the
registry's models of the task, and the layer pickers are the task's input slots for the chosen
model (``s2``/``s1``/``dem``, ``rgbir``/``dsm``, ``before``/``after``...), so a model added to
the registry appears here with its own inputs. Choosing a weights file selects the model its
sidecar names and shows the file's own bands and classes; weights of another model are a
problem shown before the run. The panel never reads pixels.
"""

import html
import os
from dataclasses import replace
from typing import Dict, List, Optional, Tuple

from qgis.core import QgsMapLayerProxyModel, QgsProject, QgsRasterLayer
from qgis.gui import QgsFileWidget, QgsMapLayerComboBox
from qgis.PyQt.QtCore import Qt, pyqtSignal
from qgis.PyQt.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QSizePolicy,
    QWidget,
)

from ..core.requests import RasterSource
from ..core.tasks import InputSlot, Task, get_task
from ..models.registry import ModelSpec, list_model_specs
from ..models.sensors import sensor_of
from ..models.weights_info import WeightsInfo, peek_weights, trained_tile, weights_summary
from ..processing import layers
from .band_files_button import BandFilesButton
from .mapping_box import MappingBox
from .panel_checks import PanelChecks
from .run_options import option_value, option_widget
from .widgets import BandMappingTable, model_card_html

__all__ = ["ChangePanel", "LandCoverPanel", "TaskPanel", "panel_class"]


def _raster_combo(parent: QWidget) -> QgsMapLayerComboBox:
    combo = QgsMapLayerComboBox(parent)
    combo.setFilters(QgsMapLayerProxyModel.RasterLayer)
    combo.setAllowEmptyLayer(True)
    combo.setLayer(None)
    return combo


def layer_detail(layer: QgsRasterLayer) -> str:
    """ "S2L1C/ · 13 bands · EPSG:32650 · 264 × 264 px": what tells a layer from its namesakes."""
    source = layer.source().split("|", 1)[0]
    folder = os.path.basename(os.path.dirname(source)) if os.path.sep in source else ""
    crs = layer.crs().authid() or ("custom CRS" if layer.crs().isValid() else "no CRS")
    bands = layer.bandCount()
    parts = [f"{folder}/" if folder else "", f"{bands} band{'s' if bands != 1 else ''}", crs]
    parts.append(f"{layer.width()} × {layer.height()} px")
    return " · ".join(p for p in parts if p)


def _project_rasters() -> List[QgsRasterLayer]:
    found = [
        layer
        for layer in QgsProject.instance().mapLayers().values()
        if isinstance(layer, QgsRasterLayer) and layer.isValid()
    ]
    return sorted(found, key=lambda layer: layer.name().lower())


class TaskPanel(PanelChecks, QWidget):
    """The panel of one task; subclasses only name the task."""

    task_name = ""
    #: A link under the weights was clicked: ``"demo"`` (try the demo scene) or ``"train"``.
    start_requested = pyqtSignal(str)
    #: The panel checked its choices: True when something stops a run.
    checked_problems = pyqtSignal(bool)

    def __init__(self, parent: QWidget = None, training: bool = False) -> None:
        super().__init__(parent)
        self.task: Task = get_task(self.task_name)
        #: The inputs of the Train tab: no run options or products; the weights, optional,
        #: are those to start from.
        self.training = training
        self.form = QFormLayout(self)
        self.form.setContentsMargins(0, 0, 0, 0)
        self.form.setFieldGrowthPolicy(QFormLayout.AllNonFixedFieldsGrow)
        self.model_combo = QComboBox(self)
        self.model_combo.setObjectName(f"LandFuseModel_{self.task_name}")
        self.model_combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.model_combo.setMinimumContentsLength(18)
        self.model_combo.setToolTip(
            f"The {self.task.noun} models of the LandFuse registry; a weights file selects its "
            "own model."
        )
        self.weights = QgsFileWidget(self)
        self.weights.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Fixed)
        self.weights.setFilter("Weights (*.pt *.pth *.ckpt *.tar);;All files (*)")
        self.weights.setDialogTitle("Choose a weights file")
        self.weights.setToolTip(
            "A LandFuse weights file (.pt with its .json sidecar, which names its model), or a "
            "published reference checkpoint of the chosen model."
        )
        self.start = QLabel(
            "No weights yet? <a href='demo'>Try LandFuse on a demo scene</a> (synthetic, with "
            "the demo weights) or <a href='train'>train a model on your labels</a>.",
            self,
        )
        self.start.setObjectName("LandFuseStart")
        self.start.setWordWrap(True)
        self.start.linkActivated.connect(self.start_requested.emit)
        self.card = QLabel(self)
        self.card.setWordWrap(True)
        self.card.setTextFormat(Qt.RichText)
        self.card.setObjectName("LandFuseModelCard")
        self.card.setStyleSheet("QLabel { background: palette(base); padding: 4px; }")
        self.slots_box = QWidget(self)
        self.slots_grid = QGridLayout(self.slots_box)
        self.slots_grid.setContentsMargins(0, 0, 0, 0)
        self.slots_grid.setColumnStretch(1, 1)
        self.layer_combos: Dict[str, QgsMapLayerComboBox] = {}
        self._slot_labels: Dict[str, QLabel] = {}
        #: Under each picker: the chosen layer's folder, bands, CRS and size, which tell apart
        #: layers of the same name (one file name per modality folder).
        self.layer_details: Dict[str, QLabel] = {}
        #: Beside each picker: band files or a product folder instead of a layer.
        self.file_buttons: Dict[str, BandFilesButton] = {}
        self.option_widgets = {
            option.name: option_widget(option, self) for option in self.task.options
        }
        self.product_boxes: Dict[str, QCheckBox] = {}
        outputs = QWidget(self)
        row = QHBoxLayout(outputs)
        row.setContentsMargins(0, 0, 0, 0)
        for product in self.task.products:
            if product.main:
                continue
            box = QCheckBox(product.title, outputs)
            box.setObjectName(f"LandFuseProduct_{product.key}")
            box.setToolTip(product.help)
            box.setChecked(True)
            row.addWidget(box)
            self.product_boxes[product.key] = box
        row.addStretch(1)
        self.mapping_box = MappingBox(self.task_name, self)
        self.problem = QLabel(self)
        self.problem.setWordWrap(True)
        self.problem.setObjectName("LandFuseProblem")
        self.problem.setStyleSheet("QLabel { color: #b00020; }")
        self.warning = QLabel(self)
        self.warning.setWordWrap(True)
        self.warning.setObjectName("LandFuseCheck")
        self.warning.setStyleSheet("QLabel { color: #8a5300; }")
        self.warning.setTextFormat(Qt.RichText)
        self.warning.linkActivated.connect(self._on_warning_link)
        #: The model that takes every picked layer, offered when the chosen one does not.
        self.offered_model = ""
        #: What the last 'Check inputs' found (cleared when the inputs change).
        self.checked: List[str] = []

        self.form.addRow("Model", self.model_combo)
        self.form.addRow("Start from" if training else "Weights", self.weights)
        self.form.addRow(self.start)
        self.form.addRow(self.card)
        self.form.addRow(self.slots_box)
        for option in () if training else self.task.options:
            self.form.addRow(option.label, self.option_widgets[option.name])
        if self.product_boxes and not training:
            self.form.addRow("Also write", outputs)
        if training:
            self.card.hide()  # the classes come from the labels
            outputs.hide()
            for widget in self.option_widgets.values():
                widget.hide()
            self.weights.setToolTip(
                "Optional: weights to continue from (your last training, to retrain after "
                "adding polygons, or a published checkpoint); empty trains from scratch."
            )
        self.form.addRow(self.mapping_box)
        self.form.addRow(self.warning)
        self.form.addRow(self.problem)
        self.mapping_box.setCollapsed(True)

        #: Whether the user chose the model (then picking layers never changes it).
        self.model_chosen = False
        self.weights.fileChanged.connect(self._on_weights_changed)
        self.model_combo.currentIndexChanged.connect(self._on_model_changed)
        self.model_combo.activated.connect(self._on_model_activated)
        self.refresh_models()

    # -- the models and their slots ----------------------------------------------------------
    def specs(self) -> List[ModelSpec]:
        return list(list_model_specs(self.task_name))

    def current_spec(self) -> Optional[ModelSpec]:
        """The chosen registry model, with the weights file's bands and classes when the file
        is for it."""
        name = self.model_combo.currentData()
        spec = next((s for s in self.specs() if s.name == name), None)
        if spec is None:
            return None
        metadata = self.weights_info().metadata
        if metadata is not None and metadata.model_name == spec.name and metadata.modalities:
            spec = replace(
                spec,
                modalities=tuple(metadata.modalities),
                classes=tuple(metadata.classes) or spec.classes,
                tile_size=trained_tile(metadata) or spec.tile_size,
            )
        return spec

    def slots(self) -> Tuple[InputSlot, ...]:
        spec = self.current_spec()
        return self.task.slots(spec) if spec is not None else ()

    def weights_info(self) -> WeightsInfo:
        path = self.weights.filePath()
        return peek_weights(path) if path and os.path.isfile(path) else WeightsInfo(path, None)

    def _ensure_slots(self, specs: List[ModelSpec]) -> None:
        """One layer picker per slot key of the task's models (kept when the model changes)."""
        for slot in self.task.slot_keys(specs):
            if slot.key in self.layer_combos:
                continue
            row = 2 * len(self.layer_combos)
            label = QLabel(slot.title, self.slots_box)
            label.setWordWrap(True)  # "Before: Sentinel-2 L1C, 13 bands" in a narrow dock
            combo = _raster_combo(self.slots_box)
            combo.setObjectName(f"LandFuseLayer_{slot.key}")
            detail = QLabel(self.slots_box)
            detail.setObjectName(f"LandFuseLayerDetail_{slot.key}")
            detail.setStyleSheet("QLabel { color: #666; }")
            detail.setWordWrap(True)
            combo.layerChanged.connect(self._on_layers_changed)
            files = BandFilesButton(slot.key, self.slots_box)
            files.changed.connect(lambda key=slot.key: self._on_files_changed(key))
            self.slots_grid.addWidget(label, row, 0)
            self.slots_grid.addWidget(combo, row, 1)
            self.slots_grid.addWidget(files, row, 2)
            self.slots_grid.addWidget(detail, row + 1, 1, 1, 2)
            self.file_buttons[slot.key] = files
            self.layer_combos[slot.key] = combo
            self._slot_labels[slot.key] = label
            self.layer_details[slot.key] = detail

    def refresh_models(self) -> None:
        """List the task's registry models (the registry may have grown) and keep the choice."""
        current = self.model_combo.currentData() or self.weights_info().model_name
        specs = self.specs()
        self._ensure_slots(specs)
        self.model_combo.blockSignals(True)
        self.model_combo.clear()
        for spec in specs:
            self.model_combo.addItem(spec.title, spec.name)
            self.model_combo.setItemData(
                self.model_combo.count() - 1, f"{spec.name}: {spec.weights_note}", Qt.ToolTipRole
            )
        index = self.model_combo.findData(current)
        self.model_combo.setCurrentIndex(index if index >= 0 else 0)
        self.model_combo.blockSignals(False)
        self._on_model_changed()

    def _on_weights_changed(self, *_args) -> None:
        named = self.weights_info().model_name
        index = self.model_combo.findData(named) if named else -1
        if index >= 0 and index != self.model_combo.currentIndex():
            self.model_combo.setCurrentIndex(index)  # refreshes everything
            return
        self._on_model_changed()

    def _on_model_changed(self, *_args) -> None:
        wanted = {slot.key: slot for slot in self.slots()}
        for key, combo in self.layer_combos.items():
            slot = wanted.get(key)
            label = self._slot_labels[key]
            combo.setVisible(slot is not None)
            label.setVisible(slot is not None)
            self.file_buttons[key].setVisible(slot is not None)
            if slot is not None:
                label.setText(slot.title)
                combo.setToolTip(slot.help)
                self.file_buttons[key].sensor = sensor_of(slot.modality)
        self.suggest_layers()
        self.show_layer_details()
        self.update_card()
        self.refresh_mapping()

    def _on_model_activated(self, *_args) -> None:
        self.model_chosen = True

    def picked_keys(self) -> set:
        """The slots given a layer or band files (shown or not)."""
        return {
            key
            for key, combo in self.layer_combos.items()
            if combo.currentLayer() is not None or self.file_buttons[key].files
        }

    def model_for_inputs(self) -> Optional[ModelSpec]:
        """The model that uses every picked input with the fewest inputs left to pick."""
        picked = self.picked_keys()
        fits = [s for s in self.specs() if picked <= {x.key for x in self.task.slots(s)}]
        return min(fits, key=lambda s: len(self.task.slots(s)), default=None)

    def follow_inputs(self) -> bool:
        """Choose the model that uses all the picked inputs, unless the user chose a model or a
        weights file (then the warning offers it instead). True when the model changed."""
        if self.model_chosen or self.weights.filePath():
            return False
        if self.picked_keys() <= {slot.key for slot in self.slots()}:
            return False
        fits = self.model_for_inputs()
        index = self.model_combo.findData(fits.name) if fits is not None else -1
        if index < 0 or index == self.model_combo.currentIndex():
            return False
        self.model_combo.setCurrentIndex(index)  # refreshes everything
        return True

    def _on_layers_changed(self, *_args) -> None:
        for key, combo in self.layer_combos.items():  # a layer replaces files given before
            if combo.currentLayer() is not None and self.file_buttons[key].files:
                self.file_buttons[key].blockSignals(True)
                self.file_buttons[key].set_files([])
                self.file_buttons[key].blockSignals(False)
        if self.follow_inputs():
            return
        self.show_layer_details()
        self.refresh_mapping()

    def _on_files_changed(self, key: str) -> None:
        combo = self.layer_combos[key]
        if self.file_buttons[key].files and combo.currentLayer() is not None:
            combo.blockSignals(True)
            combo.setLayer(None)  # files replace the layer
            combo.blockSignals(False)
        if self.follow_inputs():
            return
        self.show_layer_details()
        self.refresh_mapping()

    def show_layer_details(self) -> None:
        wanted = {slot.key for slot in self.slots()}
        for key, combo in self.layer_combos.items():
            detail, layer = self.layer_details[key], combo.currentLayer()
            button = self.file_buttons[key]
            detail.setVisible(key in wanted and (layer is not None or bool(button.files)))
            if button.files:
                where = f" in {os.path.basename(button.origin)}" if button.origin else ""
                where = f" of the layer group '{button.group}'" if button.group else where
                detail.setText(f"{len(button.files)} band files{where}, named by their file names")
                continue
            if layer is None:
                continue
            text = layer_detail(layer)
            detail.setText(text)
            combo.setToolTip(f"{layer.name()}: {layer.source()}")

    def refresh_layers(self) -> None:
        """The project's layers changed: suggest layers for empty slots, redo the mapping."""
        self.suggest_layers()
        self.show_layer_details()
        self.refresh_mapping()

    def suggest_layers(self) -> None:
        """Fill each empty slot of the model with a project layer of the slot's band count
        that no other slot uses (the user can change it)."""
        used = {c.currentLayer().id() for c in self.layer_combos.values() if c.currentLayer()}
        band_files = {path for button in self.file_buttons.values() for path in button.files}
        for slot in self.slots():
            combo = self.layer_combos[slot.key]
            if combo.currentLayer() is not None or self.file_buttons[slot.key].files:
                continue
            count = len(slot.modality.bands)
            match = next(
                (
                    layer
                    for layer in _project_rasters()
                    if layer.bandCount() == count
                    and layer.id() not in used
                    and layer.source() not in band_files
                ),
                None,
            )
            if match is not None:
                combo.blockSignals(True)
                combo.setLayer(match)
                combo.blockSignals(False)
                used.add(match.id())

    def layer_for(self, key: str) -> Optional[QgsRasterLayer]:
        combo = self.layer_combos.get(key)
        return combo.currentLayer() if combo is not None else None

    def reference_layer(self) -> Optional[QgsRasterLayer]:
        """The layer whose grid the outputs use (the task's reference slot)."""
        slot = next((s for s in self.slots() if s.reference), None)
        return self.layer_for(slot.key) if slot is not None else None

    def update_card(self, *_args) -> None:
        self.start.setVisible(not self.training and not self.weights.filePath())
        spec = self.current_spec()
        if spec is None:
            self.card.setText(f"<i>No {html.escape(self.task.noun)} model is in the registry.</i>")
            return
        self.card.setText(model_card_html(spec, weights_summary(self.weights.filePath())))

    # -- band mapping ------------------------------------------------------------------------
    def mapping_slots(self) -> Tuple[InputSlot, ...]:
        """The slots with a mapping table: all, or the first when the slots share bands."""
        slots = tuple(s for s in self.slots() if not self.file_buttons[s.key].files)
        return slots[:1] if self.task.shared_bands else slots

    def file_slots(self) -> Tuple[InputSlot, ...]:
        """The slots fed by band files (each gets a read-only table of its files)."""
        return tuple(s for s in self.slots() if self.file_buttons[s.key].files)

    @property
    def tables(self) -> Dict[str, BandMappingTable]:
        """The editable band-mapping table of each layer slot."""
        return self.mapping_box.tables

    def refresh_mapping(self) -> None:
        self.checked = []  # the inputs changed: an earlier check says nothing about them
        self.mapping_box.refresh(
            self.mapping_slots(),
            self.file_slots(),
            self.layer_for,
            lambda key: self.file_buttons[key].files,
            self.check,
        )
        self.check()

    def mapped_bands(self, key: str) -> Tuple[int, ...]:
        table = self.tables[key] if key in self.tables else next(iter(self.tables.values()))
        return tuple(int(i) for i in table.mapping().raster_bands if i is not None)

    # -- the request -------------------------------------------------------------------------
    def outputs(self) -> Tuple[str, ...]:
        """The products to write: the main one and the checked ones."""
        return tuple(
            p.key
            for p in self.task.products
            if p.main or (p.key in self.product_boxes and self.product_boxes[p.key].isChecked())
        )

    def slot_sources(self, key: str) -> tuple:
        """The files of one input: its band files, or its layer with the mapped bands."""
        files = self.file_buttons[key].files
        if files:
            return tuple(RasterSource(path) for path in files)
        return (layers.raster_source(self.layer_for(key), self.mapped_bands(key)),)

    def build_request(self, common: dict):
        """The frozen request from the panel and the dock's common fields."""
        spec = self.current_spec()
        sources = {slot.key: self.slot_sources(slot.key) for slot in self.slots()}
        fields = {
            option.name: option_value(option, self.option_widgets[option.name])
            for option in self.task.options
        }
        return self.task.make_request(
            spec.name,
            self.weights.filePath(),
            sources,
            outputs=self.outputs(),
            **fields,
            **common,
        )


class LandCoverPanel(TaskPanel):
    """Land cover: one layer per modality of the chosen model."""

    task_name = "landcover"


class ChangePanel(TaskPanel):
    """Change detection: a before and an after layer."""

    task_name = "change"

    @property
    def before(self) -> QgsMapLayerComboBox:
        return self.layer_combos["before"]

    @property
    def after(self) -> QgsMapLayerComboBox:
        return self.layer_combos["after"]


def panel_class(task_name: str) -> type:
    """The panel class of a task: one of the above, or a plain :class:`TaskPanel` for it."""
    for cls in (LandCoverPanel, ChangePanel):
        if cls.task_name == task_name:
            return cls
    return type(f"TaskPanel_{task_name}", (TaskPanel,), {"task_name": task_name})
