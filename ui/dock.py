"""The LandFuse dock: land cover and change detection runs, and the project's raster layers.

The dock reads its widgets into a frozen request (:mod:`landfuse.core.requests`), hands it to
:class:`~landfuse.processing.task.InferenceTask` and, when the task ends, shows the result. It
never reads pixels and never builds a network (DESIGN.md §2).
"""

import contextlib
import html
import json
import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from qgis.core import (
    Qgis,
    QgsApplication,
    QgsMapLayer,
    QgsMapLayerProxyModel,
    QgsMessageLog,
    QgsProject,
    QgsRasterLayer,
    QgsSettings,
)
from qgis.gui import QgsCollapsibleGroupBox, QgsDockWidget, QgsFileWidget, QgsMapLayerComboBox
from qgis.PyQt.QtCore import QProcess, QProcessEnvironment, Qt, QTimer, QUrl
from qgis.PyQt.QtGui import QDesktopServices
from qgis.PyQt.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QRadioButton,
    QScrollArea,
    QSizePolicy,
    QSpinBox,
    QTabWidget,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..core.errors import LandFuseError
from ..core.requests import ChangeRequest, LandCoverRequest, ModalityInput
from ..models.registry import ModelSpec, list_model_specs
from ..processing import environment, layers
from ..processing.layer_info import RasterLayerInfo, describe_raster_layer
from ..processing.results import RunSummary, add_result_layers, summarise
from ..processing.task import LOG_TAG, InferenceTask, RunFailure
from .widgets import BandMappingTable, model_card_html

SETTINGS_SHOW_BANDS = "LandFuse/dock/show_band_details"
PROJECT_SCOPE = "LandFuse"

EMPTY_TEXT = (
    "No raster layers in this project yet. Add a Sentinel-2, Sentinel-1 or DEM raster, or a "
    "before/after pair (Layer ▸ Add Layer ▸ Add Raster Layer)."
)

LANDCOVER_SLOTS = (
    ("s2", "Sentinel-2", False, "Multispectral Sentinel-2 image (the 13 bands the model needs)."),
    ("s1", "Sentinel-1", True, "Backscatter VV and VH (dB); choose one for S2 + S1 models."),
    ("dem", "Elevation (DEM)", True, "Elevation in metres; choose one for S2 + DEM models."),
)
DEVICE_VALUES = ("auto", "cpu", "cuda", "mps")
PRECISION_VALUES = ("auto", "fp32", "bf16", "fp16")
PRECISION_LABELS = (
    "Automatic (bf16/fp16 where supported)",
    "fp32 (exact)",
    "bf16",
    "fp16 (GPU only)",
)
NORMALISATION_VALUES = ("auto", "minmax_per_tile", "fixed_bounds", "scale", "fixed_stats")
NORMALISATION_LABELS = (
    "From the weights / model (recommended)",
    "Per-tile min-max (reference)",
    "Fixed bounds",
    "Scale (e.g. /255)",
    "Fixed per-band statistics",
)


# --------------------------------------------------------------------------------------------
# Layers tab: what matters about each raster before a run
# --------------------------------------------------------------------------------------------
def _format_extent(info: RasterLayerInfo) -> str:
    xmin, ymin, xmax, ymax = info.extent
    return f"{xmin:.6g}, {ymin:.6g} : {xmax:.6g}, {ymax:.6g}"


def _format_resolution(info: RasterLayerInfo) -> str:
    rx, ry = info.resolution
    unit = info.resolution_unit
    if abs(rx - ry) <= 1e-9 * max(abs(rx), abs(ry), 1.0):
        return f"{rx:.6g} {unit}"
    return f"{rx:.6g} × {ry:.6g} {unit}"


def layer_rows(info: RasterLayerInfo) -> List[Tuple[str, str]]:
    """The (property, value) rows shown under a layer, in display order."""
    if info.has_crs:
        crs = f"{info.crs_authid} – {info.crs_description}"
    else:
        crs = "none (not georeferenced)"
    return [
        ("Bands", str(info.band_count)),
        ("Data type", info.data_types),
        ("CRS", crs),
        ("Resolution", _format_resolution(info)),
        ("Size", f"{info.width} × {info.height} px"),
        ("Extent", _format_extent(info)),
        ("Nodata", info.nodata_summary),
        ("Source", info.source),
    ]


def layer_summary(info: RasterLayerInfo) -> str:
    """One line for the layer's own row, e.g. "13 bands · UInt16 · EPSG:32631 · 10 m"."""
    crs = info.crs_authid or ("custom CRS" if info.has_crs else "no CRS")
    plural = "band" if info.band_count == 1 else "bands"
    return f"{info.band_count} {plural} · {info.data_types} · {crs} · {_format_resolution(info)}"


def project_raster_layers() -> List[QgsRasterLayer]:
    """The valid raster layers of the project, sorted by name."""
    found = [
        layer
        for layer in QgsProject.instance().mapLayers().values()
        if isinstance(layer, QgsRasterLayer) and layer.isValid()
    ]
    return sorted(found, key=lambda layer: layer.name().lower())


class LayersPanel(QWidget):
    """The project's raster layers with bands, type, CRS, resolution, extent and nodata."""

    def __init__(self, parent: QWidget = None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.show_bands = QCheckBox("Show every band", self)
        self.show_bands.setToolTip(
            "List each band with its description, data type and nodata value "
            "(band descriptions such as B04 or VV are used to match bands to a model)."
        )
        self.show_bands.setChecked(QgsSettings().value(SETTINGS_SHOW_BANDS, True, type=bool))
        self.show_bands.toggled.connect(self._on_show_bands_toggled)
        layout.addWidget(self.show_bands)
        self.tree = QTreeWidget(self)
        self.tree.setObjectName("LandFuseLayerTree")
        self.tree.setColumnCount(2)
        self.tree.setHeaderLabels(["Layer", "Details"])
        self.tree.setAlternatingRowColors(True)
        self.tree.setUniformRowHeights(True)
        layout.addWidget(self.tree, 1)
        self.empty_label = QLabel(EMPTY_TEXT, self)
        self.empty_label.setWordWrap(True)
        self.empty_label.setObjectName("LandFuseEmptyLabel")
        self.empty_label.setAlignment(Qt.AlignTop | Qt.AlignLeft)
        layout.addWidget(self.empty_label, 1)

    def _on_show_bands_toggled(self, checked: bool) -> None:
        QgsSettings().setValue(SETTINGS_SHOW_BANDS, bool(checked))
        self.refresh()

    def refresh(self) -> None:
        """Rebuild the list from the project's current raster layers."""
        expanded = {
            self.tree.topLevelItem(i).data(0, Qt.UserRole)
            for i in range(self.tree.topLevelItemCount())
            if self.tree.topLevelItem(i).isExpanded()
        }
        self.tree.clear()
        rasters = project_raster_layers()
        for layer in rasters:
            info = describe_raster_layer(layer)
            item = QTreeWidgetItem([info.name, layer_summary(info)])
            item.setData(0, Qt.UserRole, info.layer_id)
            item.setToolTip(0, info.source)
            item.setToolTip(1, layer_summary(info))
            for key, value in layer_rows(info):
                child = QTreeWidgetItem([key, value])
                child.setToolTip(1, value)
                item.addChild(child)
                if key == "Bands" and self.show_bands.isChecked():
                    for band in info.bands:
                        nodata = "none" if band.nodata is None else f"{band.nodata:g}"
                        description = band.description or "(no description)"
                        child.addChild(
                            QTreeWidgetItem(
                                [
                                    f"Band {band.index}",
                                    f"{description} · {band.data_type} · nodata {nodata}",
                                ]
                            )
                        )
            self.tree.addTopLevelItem(item)
            item.setExpanded(info.layer_id in expanded or len(rasters) == 1)
            if item.isExpanded() and item.childCount():
                item.child(0).setExpanded(True)
        self.tree.resizeColumnToContents(0)
        self.empty_label.setVisible(not rasters)
        self.tree.setVisible(bool(rasters))


# --------------------------------------------------------------------------------------------
# Task panels
# --------------------------------------------------------------------------------------------
def _raster_combo(parent: QWidget, allow_empty: bool) -> QgsMapLayerComboBox:
    combo = QgsMapLayerComboBox(parent)
    combo.setFilters(QgsMapLayerProxyModel.RasterLayer)
    combo.setAllowEmptyLayer(allow_empty)
    if allow_empty:
        combo.setLayer(None)
    return combo


class _TaskPanel(QWidget):
    """Shared part of the two task panels: model picker, weights, model card, band mapping."""

    task = ""

    def __init__(self, parent: QWidget = None) -> None:
        super().__init__(parent)
        self.form = QFormLayout(self)
        self.form.setContentsMargins(0, 0, 0, 0)
        self.form.setFieldGrowthPolicy(QFormLayout.AllNonFixedFieldsGrow)
        self.model_combo = QComboBox(self)
        self.model_combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.model_combo.setMinimumContentsLength(18)
        self.model_combo.setToolTip(
            "Models from the LandFuse registry that take the inputs chosen above."
        )
        self.weights = QgsFileWidget(self)
        self.weights.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Fixed)
        self.weights.setFilter("Weights (*.pt *.pth *.ckpt *.tar);;All files (*)")
        self.weights.setDialogTitle("Choose a weights file")
        self.weights.setToolTip(
            "A LandFuse weights file (.pt with its .json sidecar), or a published reference "
            "checkpoint of the chosen model."
        )
        self.card = QLabel(self)
        self.card.setWordWrap(True)
        self.card.setTextFormat(Qt.RichText)
        self.card.setObjectName("LandFuseModelCard")
        self.card.setStyleSheet("QLabel { background: palette(base); padding: 4px; }")
        self.mapping_box = QgsCollapsibleGroupBox("Band mapping", self)
        self.mapping_box.setObjectName(f"LandFuseBandMapping_{self.task}")
        self.mapping_box.setToolTip(
            "Which band of each layer feeds each band the model expects; filled from the band "
            "descriptions and editable."
        )
        self.mapping_layout = QVBoxLayout(self.mapping_box)
        self.problem = QLabel(self)
        self.problem.setWordWrap(True)
        self.problem.setObjectName("LandFuseProblem")
        self.problem.setStyleSheet("QLabel { color: #b00020; }")
        self.tables: Dict[str, BandMappingTable] = {}
        self.weights.fileChanged.connect(self.update_card)
        self.model_combo.currentIndexChanged.connect(self._on_model_changed)

    # the model list -------------------------------------------------------------------------
    def candidate_specs(self) -> List[ModelSpec]:
        raise NotImplementedError

    def current_spec(self) -> Optional[ModelSpec]:
        name = self.model_combo.currentData()
        for spec in list_model_specs(self.task):
            if spec.name == name:
                return spec
        return None

    def refresh_models(self) -> None:
        """Show only the models whose inputs are chosen; keep the current one if it fits."""
        current = self.model_combo.currentData()
        self.model_combo.blockSignals(True)
        self.model_combo.clear()
        for spec in self.candidate_specs():
            self.model_combo.addItem(spec.title, spec.name)
            self.model_combo.setItemData(
                self.model_combo.count() - 1, spec.weights_note, Qt.ToolTipRole
            )
        index = self.model_combo.findData(current)
        self.model_combo.setCurrentIndex(index if index >= 0 else 0)
        self.model_combo.blockSignals(False)
        self._on_model_changed()

    def _on_model_changed(self, *_args) -> None:
        self.update_card()
        self.refresh_mapping()

    def update_card(self, *_args) -> None:
        spec = self.current_spec()
        if spec is None:
            self.card.setText(f"<i>{html.escape(self.no_model_text())}</i>")
            return
        self.card.setText(model_card_html(spec, weights_summary(self.weights.filePath())))

    def no_model_text(self) -> str:
        """Why the model list is empty."""
        return "No model in the registry takes the chosen inputs."

    # band mapping ---------------------------------------------------------------------------
    def layer_for_modality(self, key: str) -> Optional[QgsRasterLayer]:
        raise NotImplementedError

    def refresh_mapping(self) -> None:
        for table in self.tables.values():
            table.setParent(None)
            table.deleteLater()
        self.tables = {}
        while self.mapping_layout.count():
            item = self.mapping_layout.takeAt(0)
            widget = item.widget()
            if widget is not None:
                widget.hide()  # deleteLater() keeps it painted until the event loop runs
                widget.setParent(None)
                widget.deleteLater()
        spec = self.current_spec()
        if spec is not None:
            for modality in spec.modalities:
                layer = self.layer_for_modality(modality.key)
                title = QLabel(f"<b>{html.escape(modality.title)}</b>", self.mapping_box)
                self.mapping_layout.addWidget(title)
                table = BandMappingTable(self.mapping_box)
                table.setObjectName(f"LandFuseBands_{modality.key}")
                table.set_bands(
                    [b.name for b in modality.bands],
                    [f"{b.description} ({b.unit})" for b in modality.bands],
                    layers.band_descriptions(layer) if layer is not None else None,
                )
                table.changed.connect(self.check)
                self.mapping_layout.addWidget(table)
                self.tables[modality.key] = table
                # A collapsed QgsCollapsibleGroupBox hides its children only when it collapses.
                title.setVisible(not self.mapping_box.isCollapsed())
                table.setVisible(not self.mapping_box.isCollapsed())
        self.check()

    def mapping_summary(self) -> str:
        """The band-mapping box title: how many model bands are matched."""
        total = matched = 0
        for table in self.tables.values():
            mapping = table.mapping()
            total += len(mapping.model_bands)
            matched += sum(1 for i in mapping.raster_bands if i is not None)
        if not total:
            return "Band mapping"
        if matched == total:
            return f"Band mapping: all {total} model bands matched"
        return f"Band mapping: {total - matched} of {total} model bands not matched"

    def problems(self) -> List[str]:
        """What stops a run with the current choices (shown before the run, not after it)."""
        spec = self.current_spec()
        if spec is None:
            return [self.no_model_text()]
        found = []
        for modality in spec.modalities:
            layer = self.layer_for_modality(modality.key)
            if layer is None:
                found.append(f"Choose a layer for {modality.title}.")
                continue
            table = self.tables.get(modality.key)
            if table is not None:
                problem = table.mapping().problem(layer.bandCount())
                if problem:
                    found.append(f"{layer.name()}: {problem}")
        if not self.weights.filePath():
            found.append(
                "Choose a weights file: no model weights are bundled or downloaded "
                "(train one with LandFuse ▸ Train, or use a published checkpoint)."
            )
        elif not os.path.isfile(self.weights.filePath()):
            found.append(f"The weights file does not exist: {self.weights.filePath()}")
        return found

    def check(self, *_args) -> List[str]:
        self.mapping_box.setTitle(self.mapping_summary())
        found = self.problems()
        self.problem.setText("<br>".join(html.escape(p) for p in found))
        self.problem.setVisible(bool(found))
        return found

    def mapped_bands(self, key: str) -> Tuple[int, ...]:
        mapping = self.tables[key].mapping()
        return tuple(int(i) for i in mapping.raster_bands if i is not None)


def _training_note(training: dict) -> str:
    """The one line a weights file gives about where it comes from."""
    demo = training.get("demo")
    if isinstance(demo, dict) and demo.get("demo_weights"):
        return "DEMO weights trained on synthetic scenes only: not for real imagery"
    for key in ("note", "data", "source"):
        value = training.get(key)
        if isinstance(value, dict):
            value = value.get("description")
        if isinstance(value, str) and value:
            return value
    return ""


def weights_summary(path: str) -> str:
    """One line about a weights file from its JSON sidecar (no torch import)."""
    if not path:
        return ""
    side = Path(path + ".json")
    if not os.path.isfile(path):
        return f"file not found: {path}"
    if not side.is_file():
        return f"{Path(path).name} (no sidecar: a published checkpoint is assumed)"
    try:
        meta = json.loads(side.read_text(encoding="utf-8")).get("metadata", {})
    except (OSError, ValueError):
        return f"{Path(path).name} (sidecar unreadable)"
    training = meta.get("training") or {}
    note = _training_note(training)
    encoder = (meta.get("config") or {}).get("encoder")
    text = f"{Path(path).name}: {meta.get('model_name', '?')}"
    if encoder:
        text += f" ({encoder} encoder)"
    return f"{text}; {note}" if note else text


class LandCoverPanel(_TaskPanel):
    """Sentinel-2 (+ optional Sentinel-1, DEM) layers and a land-cover model."""

    task = "landcover"

    def __init__(self, parent: QWidget = None) -> None:
        super().__init__(parent)
        self.layer_combos: Dict[str, QgsMapLayerComboBox] = {}
        for key, label, optional, tip in LANDCOVER_SLOTS:
            combo = _raster_combo(self, optional)
            combo.setObjectName(f"LandFuseLayer_{key}")
            combo.setToolTip(tip)
            combo.layerChanged.connect(self._on_layers_changed)
            self.layer_combos[key] = combo
            self.form.addRow(f"{label}{' (optional)' if optional else ''}", combo)
        self.form.addRow("Model", self.model_combo)
        self.form.addRow("Weights", self.weights)
        self.form.addRow(self.card)
        self.form.addRow(self.mapping_box)
        self.form.addRow(self.problem)
        self.mapping_box.setCollapsed(True)
        self.refresh_models()

    def no_model_text(self) -> str:
        if self.layer_combos["s2"].currentLayer() is None:
            return (
                "Choose a Sentinel-2 layer (and Sentinel-1 and/or a DEM): the models that take "
                "them are then listed."
            )
        return "No model takes these inputs: add Sentinel-1 or a DEM."

    def chosen_modalities(self) -> List[str]:
        return [key for key, combo in self.layer_combos.items() if combo.currentLayer() is not None]

    def candidate_specs(self) -> List[ModelSpec]:
        chosen = set(self.chosen_modalities())
        return [
            spec
            for spec in list_model_specs("landcover")
            if {m.key for m in spec.modalities} <= chosen
        ]

    def layer_for_modality(self, key: str) -> Optional[QgsRasterLayer]:
        combo = self.layer_combos.get(key)
        return combo.currentLayer() if combo is not None else None

    def _on_layers_changed(self, *_args) -> None:
        self.refresh_models()

    def build_request(self, common: dict) -> LandCoverRequest:
        spec = self.current_spec()
        inputs = tuple(
            ModalityInput(
                m.key,
                (layers.raster_source(self.layer_for_modality(m.key), self.mapped_bands(m.key)),),
            )
            for m in spec.modalities
        )
        return LandCoverRequest(
            inputs=inputs, model=spec.name, weights=self.weights.filePath(), **common
        )

    def reference_layer(self) -> Optional[QgsRasterLayer]:
        return self.layer_for_modality("s2")


class ChangePanel(_TaskPanel):
    """A before and an after layer and a change-detection model."""

    task = "change"

    def __init__(self, parent: QWidget = None) -> None:
        super().__init__(parent)
        self.before = _raster_combo(self, False)
        self.before.setObjectName("LandFuseLayer_before")
        self.before.setToolTip(
            "The earlier image. AMFNet is not symmetric: keep the dates in order."
        )
        self.after = _raster_combo(self, False)
        self.after.setObjectName("LandFuseLayer_after")
        self.after.setToolTip("The later image, with the same bands as the earlier one.")
        self.before.layerChanged.connect(self._on_model_changed)
        self.after.layerChanged.connect(self._on_model_changed)
        self.form.addRow("Before", self.before)
        self.form.addRow("After", self.after)
        self.form.addRow("Model", self.model_combo)
        self.form.addRow("Weights", self.weights)
        self.form.addRow(self.card)
        self.form.addRow(self.mapping_box)
        self.form.addRow(self.problem)
        self.mapping_box.setCollapsed(True)
        self.refresh_models()

    def candidate_specs(self) -> List[ModelSpec]:
        return list(list_model_specs("change"))

    def layer_for_modality(self, key: str) -> Optional[QgsRasterLayer]:
        return self.before.currentLayer()

    def problems(self) -> List[str]:
        found = super().problems()
        before, after = self.before.currentLayer(), self.after.currentLayer()
        if after is None:
            found.insert(0, "Choose the 'after' layer.")
        elif before is not None:
            if before.id() == after.id():
                found.insert(0, "Before and after are the same layer: choose two dates.")
            elif before.bandCount() != after.bandCount():
                found.append(
                    f"'{before.name()}' has {before.bandCount()} bands and '{after.name()}' has "
                    f"{after.bandCount()}: both dates need the same bands."
                )
        return found

    def build_request(self, common: dict) -> ChangeRequest:
        spec = self.current_spec()
        bands = self.mapped_bands(spec.modalities[0].key)
        return ChangeRequest(
            before=(layers.raster_source(self.before.currentLayer(), bands),),
            after=(layers.raster_source(self.after.currentLayer(), bands),),
            model=spec.name,
            weights=self.weights.filePath(),
            **common,
        )

    def reference_layer(self) -> Optional[QgsRasterLayer]:
        return self.before.currentLayer()


# --------------------------------------------------------------------------------------------
# The dock
# --------------------------------------------------------------------------------------------
def _scrolled(panel: QWidget) -> QScrollArea:
    """A tab page that scrolls vertically and wraps its text instead of clipping it sideways."""
    area = QScrollArea()
    area.setWidgetResizable(True)
    area.setFrameShape(QScrollArea.NoFrame)
    area.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
    panel.setContentsMargins(4, 4, 4, 4)
    area.setWidget(panel)
    return area


class LandFuseDock(QgsDockWidget):
    """The LandFuse panel."""

    def __init__(self, parent: QWidget = None, iface=None) -> None:
        super().__init__("LandFuse", parent)
        self.setObjectName("LandFuseDock")
        self.setMinimumWidth(420)
        self.iface = iface
        self.task: Optional[InferenceTask] = None
        self.last_summary: Optional[RunSummary] = None
        self.last_warnings: List[Dict[str, Any]] = []
        self.last_failure: Optional[RunFailure] = None
        self.probe: Optional[environment.PythonProbe] = None
        self._probe_process: Optional[QProcess] = None
        self._closed = False

        body = QWidget(self)
        outer = QVBoxLayout(body)
        outer.setContentsMargins(4, 4, 4, 4)

        self.torch_banner = QLabel(body)
        self.torch_banner.setObjectName("LandFuseTorchBanner")
        self.torch_banner.setWordWrap(True)
        self.torch_banner.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.torch_banner.setStyleSheet(
            "QLabel { background: #fff4e5; border: 1px solid #e0a040; padding: 6px; }"
        )
        self.torch_banner.hide()
        outer.addWidget(self.torch_banner)

        self.tabs = QTabWidget(body)
        self.landcover = LandCoverPanel(self.tabs)
        self.change = ChangePanel(self.tabs)
        self.layers_panel = LayersPanel(self.tabs)
        self.tabs.addTab(_scrolled(self.landcover), "Land cover")
        self.tabs.addTab(_scrolled(self.change), "Change detection")
        self.tabs.addTab(self.layers_panel, "Layers")
        self.tabs.currentChanged.connect(self._update_run_button)
        outer.addWidget(self.tabs, 1)

        outer.addWidget(self._build_area_box(body))
        outer.addWidget(self._build_advanced_box(body))

        buttons = QHBoxLayout()
        self.run_button = QPushButton("Run", body)
        self.run_button.setObjectName("LandFuseRun")
        self.run_button.setDefault(True)
        self.run_button.clicked.connect(self.run)
        self.cancel_button = QPushButton("Cancel", body)
        self.cancel_button.setObjectName("LandFuseCancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        buttons.addWidget(self.run_button, 1)
        buttons.addWidget(self.cancel_button)
        outer.addLayout(buttons)
        self.progress = QProgressBar(body)
        self.progress.setRange(0, 100)
        self.progress.setValue(0)
        outer.addWidget(self.progress)
        self.status = QLabel("Ready.", body)
        self.status.setObjectName("LandFuseStatus")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextBrowserInteraction)
        self.status.setOpenExternalLinks(False)
        self.status.linkActivated.connect(self._open_link)
        outer.addWidget(self.status)
        self.setWidget(body)

        project = QgsProject.instance()
        self._connections: List[Tuple[object, Callable]] = []
        self._connect(project.layersAdded, self._on_layers_changed)
        self._connect(project.layersRemoved, self._on_layers_changed)
        self._connect(project.cleared, self._on_layers_changed)
        self._connect(project.readProject, self._on_project_read)
        self._renamed_layers: List[QgsMapLayer] = []
        self._on_layers_changed()
        self.restore_project_settings()
        self._wire_checks()
        QTimer.singleShot(0, self.probe_environment)

    # -- building blocks ------------------------------------------------------------------------
    def _build_area_box(self, parent: QWidget) -> QGroupBox:
        box = QGroupBox("Area", parent)
        layout = QVBoxLayout(box)
        self.area_group = QButtonGroup(box)
        self.area_whole = QRadioButton("Whole layer (where all inputs overlap)", box)
        self.area_extent = QRadioButton("Current map extent", box)
        self.area_polygons = QRadioButton("Polygons of a layer", box)
        for index, button in enumerate((self.area_whole, self.area_extent, self.area_polygons)):
            self.area_group.addButton(button, index)
            layout.addWidget(button)
        self.area_whole.setChecked(True)
        row = QHBoxLayout()
        self.polygon_layer = QgsMapLayerComboBox(box)
        self.polygon_layer.setFilters(QgsMapLayerProxyModel.PolygonLayer)
        self.polygon_layer.setObjectName("LandFusePolygonLayer")
        self.selected_only = QCheckBox("Selected features only", box)
        row.addWidget(self.polygon_layer, 1)
        row.addWidget(self.selected_only)
        layout.addLayout(row)
        self.area_group.buttonToggled.connect(self._on_area_changed)
        self._on_area_changed()
        return box

    def _build_advanced_box(self, parent: QWidget) -> QgsCollapsibleGroupBox:
        box = QgsCollapsibleGroupBox("Advanced", parent)
        box.setObjectName("LandFuseAdvanced")
        form = QFormLayout(box)
        self.tile = QSpinBox(box)
        self.tile.setRange(0, 4096)
        self.tile.setSingleStep(32)
        self.tile.setSpecialValueText("model default")
        self.tile.setToolTip("Tile edge in pixels (a multiple of the model's output stride).")
        self.overlap = QSpinBox(box)
        self.overlap.setRange(-1, 2048)
        self.overlap.setSpecialValueText("automatic (1/8 of the tile)")
        self.overlap.setValue(-1)
        self.overlap.setToolTip("Overlap between neighbouring tiles; blended to avoid seams.")
        self.batch = QSpinBox(box)
        self.batch.setRange(1, 256)
        self.batch.setValue(4)
        self.batch.setToolTip("Tiles per forward pass; halved automatically on GPU out-of-memory.")
        self.device = QComboBox(box)
        for value, label in zip(
            DEVICE_VALUES, ("Automatic (best present)", "CPU", "CUDA", "Apple MPS")
        ):
            self.device.addItem(label, value)
        self.precision = QComboBox(box)
        for value, label in zip(PRECISION_VALUES, PRECISION_LABELS):
            self.precision.addItem(label, value)
        self.normalisation = QComboBox(box)
        for value, label in zip(NORMALISATION_VALUES, NORMALISATION_LABELS):
            self.normalisation.addItem(label, value)
        self.want_confidence = QCheckBox("Confidence / change probability layer", box)
        self.want_confidence.setChecked(True)
        self.pixel_grid = QCheckBox("Inputs are plain images without georeferencing", box)
        self.pixel_grid.setToolTip(
            "Pixel-grid mode for images such as LEVIR-CD PNGs: all inputs must have the same "
            "width and height; the outputs carry no CRS. Not possible with a map area."
        )
        self.output_dir = QgsFileWidget(box)
        self.output_dir.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Fixed)
        self.output_dir.setStorageMode(QgsFileWidget.GetDirectory)
        self.output_dir.setObjectName("LandFuseOutputDir")
        self.output_hint = QLabel(box)
        self.output_hint.setWordWrap(True)
        self.output_hint.setStyleSheet("QLabel { color: #555; }")
        self.output_dir.fileChanged.connect(self._update_output_hint)
        self.worker_python = QgsFileWidget(box)
        self.worker_python.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Fixed)
        self.worker_python.setStorageMode(QgsFileWidget.GetFile)
        self.worker_python.setToolTip(
            "The Python interpreter that runs the network (needs torch). Empty: QGIS's own Python."
        )
        self.worker_python.setFilePath(
            QgsSettings().value(environment.SETTINGS_WORKER_PYTHON, "", type=str)
        )
        self.worker_python.fileChanged.connect(self._on_worker_python_changed)
        form.addRow("Tile (px)", self.tile)
        form.addRow("Overlap (px)", self.overlap)
        form.addRow("Batch", self.batch)
        form.addRow("Device", self.device)
        form.addRow("Precision", self.precision)
        form.addRow("Normalisation", self.normalisation)
        form.addRow(self.want_confidence)
        form.addRow(self.pixel_grid)
        form.addRow("Output folder", self.output_dir)
        form.addRow(self.output_hint)
        form.addRow("Worker Python", self.worker_python)
        box.setCollapsed(True)
        self._update_output_hint()
        return box

    def _wire_checks(self) -> None:
        for panel in (self.landcover, self.change):
            panel.weights.fileChanged.connect(panel.check)
            panel.model_combo.currentIndexChanged.connect(self._update_run_button)
        self._update_run_button()

    # -- signal bookkeeping: everything connected here is disconnected in cleanup() ------------
    def _connect(self, signal, slot) -> None:
        signal.connect(slot)
        self._connections.append((signal, slot))

    def cleanup(self) -> None:
        """Disconnect every project signal; cancel a running task (called by ``unload``)."""
        self._closed = True
        for signal, slot in self._connections:
            # TypeError/RuntimeError: the sender is already gone (project cleared, layer deleted)
            with contextlib.suppress(TypeError, RuntimeError):
                signal.disconnect(slot)
        self._connections = []
        self._untrack_layer_names()
        self._stop_probe()
        if self.task is not None:
            with contextlib.suppress(RuntimeError):
                self.task.cancel()
            self.task = None

    def _untrack_layer_names(self) -> None:
        for layer in self._renamed_layers:
            with contextlib.suppress(TypeError, RuntimeError):
                layer.nameChanged.disconnect(self._on_layers_changed)
        self._renamed_layers = []

    # -- compatibility with the Layers tab for callers that knew the first dock --------------
    @property
    def tree(self) -> QTreeWidget:
        return self.layers_panel.tree

    @property
    def empty_label(self) -> QLabel:
        return self.layers_panel.empty_label

    @property
    def show_bands(self) -> QCheckBox:
        return self.layers_panel.show_bands

    def refresh(self, *_args) -> None:
        self._on_layers_changed()

    # -- reactions --------------------------------------------------------------------------
    def _on_layers_changed(self, *_args) -> None:
        self._untrack_layer_names()
        for layer in project_raster_layers():
            layer.nameChanged.connect(self._on_layers_changed)
            self._renamed_layers.append(layer)
        self.layers_panel.refresh()
        if hasattr(self, "run_button"):
            self.landcover.refresh_models()
            self.change.refresh_mapping()
            self._update_run_button()

    def _on_area_changed(self, *_args) -> None:
        polygons = self.area_polygons.isChecked()
        self.polygon_layer.setEnabled(polygons)
        self.selected_only.setEnabled(polygons)

    def _on_worker_python_changed(self, path: str) -> None:
        QgsSettings().setValue(environment.SETTINGS_WORKER_PYTHON, path)
        self.probe_environment()

    def _update_output_hint(self, *_args) -> None:
        folder = self.output_dir.filePath() or str(layers.output_folder_default())
        self.output_hint.setText(f"Outputs go to {folder}")

    def current_panel(self) -> Optional[_TaskPanel]:
        widget = self.tabs.currentWidget()
        if isinstance(widget, QScrollArea):
            widget = widget.widget()
        return widget if isinstance(widget, _TaskPanel) else None

    def show_panel(self, panel: QWidget) -> None:
        """Bring the tab holding ``panel`` to the front."""
        for index in range(self.tabs.count()):
            page = self.tabs.widget(index)
            if page is panel or (isinstance(page, QScrollArea) and page.widget() is panel):
                self.tabs.setCurrentIndex(index)
                return

    def _update_run_button(self, *_args) -> None:
        panel = self.current_panel()
        running = self.task is not None
        self.run_button.setEnabled(panel is not None and not running)
        self.cancel_button.setEnabled(running)
        if panel is not None:
            panel.check()

    def probe_environment(self) -> None:
        """Look at the worker's Python (torch, GPUs) in the background; show what is missing.

        A QProcess, so that importing torch in the probe never freezes QGIS.
        """
        if self._closed:
            return
        self._stop_probe()
        python = environment.worker_python()
        process = QProcess(self)
        env = QProcessEnvironment.systemEnvironment()
        for key, value in environment.worker_environment().items():
            env.insert(key, value)
        process.setProcessEnvironment(env)
        process.finished.connect(
            lambda code, _status: self._on_probe_finished(process, python, code)
        )
        process.errorOccurred.connect(lambda _error: self._on_probe_finished(process, python, -1))
        self._probe_process = process
        command = environment.probe_command(python)
        process.start(command[0], command[1:])

    def _stop_probe(self) -> None:
        process, self._probe_process = self._probe_process, None
        if process is not None:
            process.blockSignals(True)  # no slot may run on a half-destroyed dock
            process.kill()
            process.waitForFinished(3000)
            process.deleteLater()

    def _on_probe_finished(self, process: QProcess, python: str, code: int) -> None:
        if process is not self._probe_process:
            return
        self._probe_process = None
        stdout = bytes(process.readAllStandardOutput()).decode("utf-8", "replace")
        stderr = bytes(process.readAllStandardError()).decode("utf-8", "replace")
        if code == -1 and not stdout:
            stderr = stderr or f"cannot run {python}: {process.errorString()}"
        self.show_probe(environment.parse_probe(python, code, stdout, stderr))
        process.deleteLater()

    def show_probe(self, probe: environment.PythonProbe) -> None:
        """Show what the worker's Python offers: device names, or how to get torch."""
        self.probe = probe
        python = probe.python
        if self.probe.has_torch:
            self.torch_banner.hide()
            labels = self.probe.device_labels()
            for index, label in enumerate(labels):
                self.device.setItemText(index, label)
        else:
            lines = environment.torch_install_help(python).splitlines()
            formatted = [
                f"<code>{html.escape(line.strip())}</code>"
                if line.startswith("  ")
                else html.escape(line)
                for line in lines
            ]
            self.torch_banner.setText(
                "<b>PyTorch is missing</b> for the Python that runs LandFuse "
                f"(<code>{html.escape(python)}</code>). The dock works, but runs need torch.<br>"
                + "<br>".join(formatted)
            )
            self.torch_banner.show()

    # -- project settings ---------------------------------------------------------------------
    def _project_widgets(self) -> Dict[str, Tuple[Callable[[], str], Callable[[str], None]]]:
        def layer_pair(combo):
            return (
                lambda: combo.currentLayer().id() if combo.currentLayer() else "",
                lambda value: combo.setLayer(
                    QgsProject.instance().mapLayer(value) if value else None
                ),
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

        pairs = {f"landcover/{k}": layer_pair(c) for k, c in self.landcover.layer_combos.items()}
        pairs.update(
            {
                "landcover/model": combo_pair(self.landcover.model_combo),
                "landcover/weights": file_pair(self.landcover.weights),
                "change/before": layer_pair(self.change.before),
                "change/after": layer_pair(self.change.after),
                "change/model": combo_pair(self.change.model_combo),
                "change/weights": file_pair(self.change.weights),
                "area/polygons": layer_pair(self.polygon_layer),
                "advanced/tile": spin_pair(self.tile),
                "advanced/overlap": spin_pair(self.overlap),
                "advanced/batch": spin_pair(self.batch),
                "advanced/device": combo_pair(self.device),
                "advanced/precision": combo_pair(self.precision),
                "advanced/normalisation": combo_pair(self.normalisation),
                "advanced/output_dir": file_pair(self.output_dir),
                "tab": (
                    lambda: str(self.tabs.currentIndex()),
                    lambda v: self.tabs.setCurrentIndex(int(v)),
                ),
                "area/mode": (
                    lambda: str(self.area_group.checkedId()),
                    lambda v: self.area_group.button(int(v)).setChecked(True),
                ),
                "area/selected_only": (
                    lambda: "1" if self.selected_only.isChecked() else "0",
                    lambda v: self.selected_only.setChecked(v == "1"),
                ),
                "advanced/confidence": (
                    lambda: "1" if self.want_confidence.isChecked() else "0",
                    lambda v: self.want_confidence.setChecked(v == "1"),
                ),
                "advanced/pixel_grid": (
                    lambda: "1" if self.pixel_grid.isChecked() else "0",
                    lambda v: self.pixel_grid.setChecked(v == "1"),
                ),
            }
        )
        return pairs

    def save_project_settings(self) -> None:
        """Remember the dock's choices in the project (saved with the .qgz)."""
        project = QgsProject.instance()
        for key, (getter, _setter) in self._project_widgets().items():
            project.writeEntry(PROJECT_SCOPE, key, getter())

    def restore_project_settings(self) -> None:
        """Restore the choices saved in the project, if any."""
        project = QgsProject.instance()
        order = sorted(self._project_widgets().items(), key=lambda kv: kv[0].endswith("/model"))
        for key, (_getter, setter) in order:  # layers first, so the model lists are filled
            value, found = project.readEntry(PROJECT_SCOPE, key, "")
            if found and value != "":
                with contextlib.suppress(ValueError, TypeError, AttributeError):
                    setter(value)

    def _on_project_read(self, *_args) -> None:
        self._on_layers_changed()
        self.restore_project_settings()

    @staticmethod
    def problem_label_hidden(panel: "_TaskPanel") -> bool:
        """Whether the panel's problem text is hidden (nothing stops a run)."""
        return panel.problem.isHidden()

    # -- run ----------------------------------------------------------------------------------
    def common_options(self) -> dict:
        """The request fields both tasks share, read from the Area and Advanced widgets."""
        panel = self.current_panel()
        folder = self.output_dir.filePath() or str(layers.output_folder_default())
        options = {
            "output_dir": folder,
            "tile": self.tile.value() or None,
            "overlap": None if self.overlap.value() < 0 else self.overlap.value(),
            "batch": self.batch.value(),
            "device": self.device.currentData(),
            "precision": self.precision.currentData(),
            "normalisation": self.normalisation.currentData(),
            "pixel_grid": self.pixel_grid.isChecked(),
            "name": None,
        }
        if panel is self.landcover:
            options["outputs"] = (
                ("classes", "confidence") if self.want_confidence.isChecked() else ("classes",)
            )
        else:
            options["outputs"] = (
                ("change", "probability") if self.want_confidence.isChecked() else ("change",)
            )
        if self.area_extent.isChecked():
            canvas = self.iface.mapCanvas() if self.iface is not None else None
            if canvas is None:
                raise layers.LayerSourceError("There is no map canvas to take the extent from.")
            options["aoi"] = layers.extent_area(
                canvas.extent(), canvas.mapSettings().destinationCrs()
            )
        elif self.area_polygons.isChecked():
            run_folder = Path(folder) / ".landfuse_aoi"
            options["aoi"] = layers.export_polygons(
                self.polygon_layer.currentLayer(), self.selected_only.isChecked(), run_folder
            )
        return options

    def build_request(self):
        """The frozen request for the current tab (raises LandFuseError with what to fix)."""
        panel = self.current_panel()
        if panel is None:
            raise layers.LayerSourceError("Choose the Land cover or Change detection tab to run.")
        problems = panel.check()
        if problems:
            raise layers.LayerSourceError(" ".join(problems))
        request = panel.build_request(self.common_options())
        name = self._unique_name(Path(request.output_dir), request.task)
        return type(request)(**{**request.__dict__, "name": name})

    @staticmethod
    def _unique_name(folder: Path, task: str) -> str:
        index = 1
        while any(folder.glob(f"{task}_{index:03d}*")):
            index += 1
        return f"{task}_{index:03d}"

    def run(self) -> None:
        """Start a run of the current tab in the background (refused while one runs)."""
        if self.task is not None:
            self.show_message(
                "A LandFuse run is already going: wait for it or cancel it.", Qgis.Warning
            )
            return
        try:
            request = self.build_request()
        except LandFuseError as error:
            self.status.setText(f"<span style='color:#b00020'>{html.escape(str(error))}</span>")
            self.show_message(str(error), Qgis.Warning)
            return
        self.save_project_settings()
        self.task = InferenceTask(request, environment.worker_python())
        self.task.progress_text.connect(self._on_progress_text)
        self.task.progressChanged.connect(lambda value: self.progress.setValue(int(value)))
        self.task.done.connect(self._on_task_done)
        self.progress.setValue(0)
        self.status.setText(f"Starting {request.name} …")
        self._update_run_button()
        QgsApplication.taskManager().addTask(self.task)

    def cancel(self) -> None:
        if self.task is not None:
            self.status.setText("Cancelling …")
            self.task.cancel()

    def _on_progress_text(self, text: str) -> None:
        self.status.setText(html.escape(text))

    def _on_task_done(self, task: InferenceTask) -> None:
        self.task = None
        self._update_run_button()
        if task.cancelled_by_user:
            self.progress.setValue(0)
            self.status.setText("Cancelled: nothing was written.")
            self.show_message("LandFuse run cancelled: nothing was written.", Qgis.Info)
            return
        if task.failure is not None:
            self.last_failure = task.failure
            self.progress.setValue(0)
            self.status.setText(
                f"<span style='color:#b00020'>{html.escape(task.failure.message)}</span>"
            )
            self.show_failure(task.failure)
            return
        summary = summarise(task.result)
        self.last_summary = summary
        added = add_result_layers(task.result, QgsProject.instance())
        self.progress.setValue(100)
        report = task.result.get("report", "")
        link = (
            f" <a href='{QUrl.fromLocalFile(report).toString()}'>Open the report</a>"
            if report
            else ""
        )
        self.last_warnings = list(task.warnings)
        warned = ""
        if task.warnings:
            items = "".join(f"<li>{html.escape(w.get('message', ''))}</li>" for w in task.warnings)
            warned = (
                "<br><span style='color:#8a5300'><b>Check before trusting this map:</b></span>"
                f"<ul style='margin:0'>{items}</ul>"
            )
        self.status.setText(html.escape(summary.text) + link + warned)
        self.show_success(summary, report, added)
        for warning in task.warnings:
            self.show_message(f"Check the map: {warning.get('message', '')}", Qgis.Warning)

    def _open_link(self, link: str) -> None:
        QDesktopServices.openUrl(QUrl(link))

    # -- message bar --------------------------------------------------------------------------
    def show_message(self, text: str, level=Qgis.Info) -> None:
        QgsMessageLog.logMessage(text, LOG_TAG, level)
        if self.iface is not None:
            self.iface.messageBar().pushMessage("LandFuse", text, level=level, duration=8)

    def show_success(self, summary: RunSummary, report: str, added: list) -> None:
        QgsMessageLog.logMessage(
            summary.text + (f" Report: {report}" if report else ""), LOG_TAG, Qgis.Success
        )
        if self.iface is None:
            return
        bar = self.iface.messageBar()
        item = bar.createMessage("LandFuse", summary.text)
        if report:
            button = QPushButton("Open report", item)
            button.clicked.connect(lambda: QDesktopServices.openUrl(QUrl.fromLocalFile(report)))
            item.layout().addWidget(button)
        bar.pushWidget(item, Qgis.Success, 15)

    def show_failure(self, failure: RunFailure) -> None:
        level = Qgis.Warning if failure.expected else Qgis.Critical
        text = failure.message
        if not failure.expected:
            text = f"Unexpected error: {failure.message} See the LandFuse tab of the log panel."
        QgsMessageLog.logMessage(f"{failure.message}\n{failure.details}", LOG_TAG, level)
        if self.iface is None:
            return
        bar = self.iface.messageBar()
        item = bar.createMessage("LandFuse", text)
        button = QPushButton("Details", item)
        button.clicked.connect(lambda: self._show_details(failure))
        item.layout().addWidget(button)
        bar.pushWidget(item, level, 0)

    def _show_details(self, failure: RunFailure) -> None:
        box = QMessageBox(QMessageBox.Warning, "LandFuse", failure.message, QMessageBox.Ok, self)
        box.setDetailedText(failure.details or "(no details)")
        box.exec_()
