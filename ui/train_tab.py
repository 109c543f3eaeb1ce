"""The dock's Train tab: from the user's layers and a few labels to weights, an honest
assessment and a map, without leaving QGIS (issue 14).

The inputs are picked as in the mapping tabs (a :class:`~landfuse.ui.task_panel.TaskPanel` in
training mode: layers, band files, band mapping, "start from" weights); the labels are a
polygon layer (scratch layers too) with a class field of text or numbers, or a label raster
(a known product legend is recognised); the classes' names and colours are editable. A spatial
split keeps validation chips apart unless validation polygons are given. Training runs in the
worker process (:class:`~landfuse.processing.task.InferenceTask` with a
:class:`~landfuse.core.train_requests.TrainRequest`), with live progress and curves and Cancel;
at the end the assessment says plainly whether the network beats the classical baseline on
the same pixels, the new weights are selected in the mapping tab with their own classes, and
"Map the scene" maps it.
"""

import html
import math
from pathlib import Path
from typing import Any, Dict, List, Optional

from qgis.core import (
    Qgis,
    QgsApplication,
    QgsCoordinateTransform,
    QgsMapLayerProxyModel,
    QgsProject,
    QgsRasterLayer,
    QgsVectorLayer,
)
from qgis.gui import QgsFieldComboBox, QgsMapLayerComboBox
from qgis.PyQt.QtCore import Qt, pyqtSignal
from qgis.PyQt.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from ..core.errors import LandFuseError
from ..core.label_classes import LabelClasses, polygon_classes, raster_classes
from ..core.tasks import TASKS, get_task
from ..core.train_requests import TrainRequest, raster_values, repeats_for
from ..models.encoders import fitting, get_encoder_weights, init_text
from ..models.registry import get_model_spec
from ..processing import environment, layers
from ..processing.task import InferenceTask, RunFailure
from .task_panel import TaskPanel, panel_class
from .train_widgets import ClassTable, CurvesWidget, assessment_html

__all__ = ["CPU_SECONDS_PER_CHIP", "TrainTab", "estimate_seconds"]

#: Seconds per 64-px chip and optimiser step on one CPU thread (forward and backward, batch
#: 4, ResNet-18 encoders), measured on the project's 2-core Debian machine (see
#: docs/training.md); other chip sizes scale with their area (small chips cost at least half).
CPU_SECONDS_PER_CHIP = {
    "amm_fusenet_lite_s2_s1_dem": 0.021,
    "amm_fusenet": 0.33,
    "amfnet_lite_s2": 0.015,
    "amfnet": 0.073,
}
#: A GPU runs these networks tens of times faster than one CPU thread.
GPU_SPEED_UP = 30.0


def estimate_seconds(
    model: str, chips: int, chip: int, epochs: int, gpu: bool, batch: int = 8
) -> float:
    """About how long a training of ``chips`` chips takes: the chips an epoch shows (repeated
    for at least :data:`~landfuse.core.train_requests.MIN_STEPS` steps), with validation,
    reading and the baseline (×1.6, from a measured session)."""
    spec = get_model_spec(model)
    per_chip = CPU_SECONDS_PER_CHIP.get(model, CPU_SECONDS_PER_CHIP.get(spec.architecture, 0.3))
    samples = chips * repeats_for(chips, batch, epochs) * epochs
    seconds = 1.6 * per_chip * samples * max(0.5, (chip / 64.0) ** 2)
    return seconds / GPU_SPEED_UP if gpu else seconds


def _is_polygons(layer: Any) -> bool:
    return isinstance(layer, QgsVectorLayer) and layer.isValid()


class TrainTab(QWidget):
    """Train a model of a task on the user's labels; see the module docstring."""

    #: A training ended with new weights: (task name, weights path).
    trained = pyqtSignal(str, str)

    def __init__(self, parent: QWidget = None, dock: Any = None) -> None:
        super().__init__(parent)
        self.dock = dock
        self.task: Optional[InferenceTask] = None
        self.last_result: Optional[Dict[str, Any]] = None
        self.last_failure: Optional[RunFailure] = None
        self.gpu = False
        #: Which device the worker found (the dock's probe), shown with the estimate.
        self.device_note = ""
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)

        form = QFormLayout()
        self.task_combo = QComboBox(self)
        self.task_combo.setObjectName("LandFuseTrainTask")
        for task in TASKS:
            self.task_combo.addItem(task.title, task.name)
        form.addRow("Train for", self.task_combo)
        layout.addLayout(form)
        self.stack = QStackedWidget(self)
        self.inputs: Dict[str, TaskPanel] = {}
        for task in TASKS:
            panel = panel_class(task.name)(self.stack, training=True)
            panel.setObjectName(f"LandFuseTrainInputs_{task.name}")
            self.inputs[task.name] = panel
            self.stack.addWidget(panel)
        layout.addWidget(self.stack)

        labels_box = QGroupBox("Labels", self)
        labels_form = QFormLayout(labels_box)
        self.labels = QgsMapLayerComboBox(labels_box)
        self.labels.setObjectName("LandFuseTrainLabels")
        self.labels.setFilters(
            QgsMapLayerProxyModel.PolygonLayer | QgsMapLayerProxyModel.RasterLayer
        )
        self.labels.setAllowEmptyLayer(True)
        self.labels.setLayer(None)
        self.labels.setToolTip(
            "Polygons you drew (a scratch layer is fine) with a class field, or a label raster "
            "such as an ESA WorldCover or Esri land-cover tile."
        )
        self.field = QgsFieldComboBox(labels_box)
        self.field.setObjectName("LandFuseTrainField")
        self.field.setToolTip("The field that names each polygon's class (text or numbers).")
        self.classes = ClassTable(labels_box)
        self.classes.setObjectName("LandFuseTrainClasses")
        self.legend_note = QLabel(labels_box)
        self.legend_note.setWordWrap(True)
        self.validation = QgsMapLayerComboBox(labels_box)
        self.validation.setObjectName("LandFuseTrainValidation")
        self.validation.setFilters(
            QgsMapLayerProxyModel.PolygonLayer | QgsMapLayerProxyModel.RasterLayer
        )
        self.validation.setAllowEmptyLayer(True)
        self.validation.setLayer(None)
        self.validation.setToolTip(
            "Polygons (or a raster) of validation labels kept out of training; empty: a "
            "spatial split of your labels keeps whole chips apart for validation."
        )
        self.holdout = QSpinBox(labels_box)
        self.holdout.setRange(10, 60)
        self.holdout.setValue(30)
        self.holdout.setSuffix(" % of the labelled chips")
        labels_form.addRow("Labels", self.labels)
        labels_form.addRow("Class field", self.field)
        labels_form.addRow(self.classes)
        labels_form.addRow(self.legend_note)
        labels_form.addRow("Validation", self.validation)
        labels_form.addRow("Empty: keep apart", self.holdout)
        layout.addWidget(labels_box)

        recipe = QGroupBox("Training", self)
        recipe_form = QFormLayout(recipe)
        self.epochs = QSpinBox(recipe)
        self.epochs.setRange(1, 1000)
        self.epochs.setValue(20)
        self.chip = QSpinBox(recipe)
        self.chip.setRange(32, 1024)
        self.chip.setSingleStep(32)
        self.chip.setValue(64)
        self.chip.setSuffix(" px")
        self.batch = QSpinBox(recipe)
        self.batch.setRange(2, 256)
        self.batch.setValue(8)
        self.init_from = QComboBox(recipe)
        self.init_from.setObjectName("LandFuseTrainInitFrom")
        self.init_from.setToolTip(
            "Start the encoder from public pretrained weights (downloaded once into the cache, "
            "sha256 checked): their encoder depth is used (ResNet-50 trains slower on a CPU)."
        )
        self.balance = QCheckBox("Balance the classes (rarer ones weigh more)", recipe)
        self.balance.setObjectName("LandFuseTrainBalance")
        self.balance.setChecked(True)
        self.balance.setToolTip(
            "Weights the loss by the square root of each class's rarity in your labels; it "
            "raised mIoU on half-labelled real tiles (docs/training.md §6)."
        )
        self.resume = QCheckBox("Continue from the last weights", recipe)
        self.resume.setToolTip("After adding polygons: retrain from where the last run ended.")
        self.resume.setEnabled(False)
        self.estimate = QLabel(recipe)
        self.estimate.setObjectName("LandFuseTrainEstimate")
        self.estimate.setWordWrap(True)
        recipe_form.addRow("Epochs", self.epochs)
        recipe_form.addRow("Chip size", self.chip)
        recipe_form.addRow("Batch", self.batch)
        recipe_form.addRow("Initialise from", self.init_from)
        recipe_form.addRow(self.balance)
        recipe_form.addRow(self.resume)
        recipe_form.addRow(self.estimate)
        layout.addWidget(recipe)

        buttons = QHBoxLayout()
        self.train_button = QPushButton("Train", self)
        self.train_button.setObjectName("LandFuseTrainRun")
        self.train_button.clicked.connect(self.train)
        self.cancel_button = QPushButton("Cancel", self)
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        buttons.addWidget(self.train_button, 1)
        buttons.addWidget(self.cancel_button)
        layout.addLayout(buttons)
        self.progress = QProgressBar(self)
        self.progress.setRange(0, 100)
        layout.addWidget(self.progress)
        self.status = QLabel("Pick the inputs and the labels, then Train.", self)
        self.status.setObjectName("LandFuseTrainStatus")
        self.status.setWordWrap(True)
        layout.addWidget(self.status)
        self.curves = CurvesWidget(self)
        self.curves.setObjectName("LandFuseTrainCurves")
        layout.addWidget(self.curves)
        self.assessment = QLabel(self)
        self.assessment.setObjectName("LandFuseTrainAssessment")
        self.assessment.setWordWrap(True)
        self.assessment.setTextFormat(Qt.RichText)
        self.assessment.setTextInteractionFlags(Qt.TextSelectableByMouse)
        layout.addWidget(self.assessment)
        self.map_button = QPushButton("Map the scene with these weights", self)
        self.map_button.setObjectName("LandFuseTrainMap")
        self.map_button.setEnabled(False)
        self.map_button.clicked.connect(self.map_scene)
        layout.addWidget(self.map_button)
        layout.addStretch(1)

        self.task_combo.currentIndexChanged.connect(self._on_task_changed)
        self.labels.layerChanged.connect(self._on_labels_changed)
        self.field.fieldChanged.connect(self.refresh_classes)
        for widget in (self.epochs, self.chip, self.batch):
            widget.valueChanged.connect(self.update_estimate)
        for panel in self.inputs.values():
            panel.model_combo.currentIndexChanged.connect(self.update_estimate)
            panel.model_combo.currentIndexChanged.connect(self.refresh_init_from)
        self._on_task_changed()

    # -- the choices ----------------------------------------------------------------------------
    @property
    def task_name(self) -> str:
        return str(self.task_combo.currentData())

    def panel(self) -> TaskPanel:
        """The inputs of the chosen task."""
        return self.inputs[self.task_name]

    def refresh_init_from(self, *_args) -> None:
        """The pretrained encoders that fit the chosen model's inputs."""
        spec = self.panel().current_spec()
        current = self.init_from.currentData()
        self.init_from.clear()
        self.init_from.addItem("Nothing: random start", "")
        for row in fitting(spec) if spec is not None else []:
            self.init_from.addItem(f"{row.title} ({row.licence.split(' (')[0]})", row.key)
            self.init_from.setItemData(
                self.init_from.count() - 1,
                f"{row.key}: expects {row.normalisation}; {row.url}",
                Qt.ToolTipRole,
            )
        index = self.init_from.findData(current)
        self.init_from.setCurrentIndex(max(index, 0))

    def _on_task_changed(self, *_args) -> None:
        self.stack.setCurrentWidget(self.panel())
        self.refresh_init_from()
        self.set_device(self.gpu)
        self.refresh_classes()

    def set_device(self, gpu: bool) -> None:
        """The default model: the published network on a GPU, the lite one on a CPU (unless
        the user chose one)."""
        self.gpu = gpu
        for name, panel in self.inputs.items():
            task = get_task(name)
            if panel.model_chosen or not task.cpu_training_model:
                continue
            wanted = panel.specs()[0].name if gpu else task.cpu_training_model
            index = panel.model_combo.findData(wanted)
            if index >= 0:
                panel.model_combo.setCurrentIndex(index)
        self.update_estimate()

    def _on_labels_changed(self, *_args) -> None:
        layer = self.labels.currentLayer()
        self.field.setLayer(layer if _is_polygons(layer) else None)
        self.field.setEnabled(_is_polygons(layer))
        if _is_polygons(layer) and not self.field.currentField():
            names = layer.fields().names()
            guess = next(
                (n for n in names if n.lower() in ("class", "classe", "label", "landuse", "type")),
                None,
            )
            self.field.setField(guess or (names[0] if names else ""))
        self.refresh_classes()

    def found_classes(self) -> Optional[LabelClasses]:
        """The classes of the chosen labels (None until labels are chosen)."""
        layer = self.labels.currentLayer()
        task = get_task(self.task_name)
        spec = self.panel().current_spec()
        if _is_polygons(layer) and self.field.currentField():
            index = layer.fields().indexOf(self.field.currentField())
            values = [v for v in layer.uniqueValues(index) if v is not None and str(v) != "NULL"]
            found = polygon_classes(values)
            if not task.classes_from_labels and spec is not None:
                return LabelClasses(tuple(spec.classes), task.polygon_label_map(found))
            return found
        if isinstance(layer, QgsRasterLayer) and layer.isValid():
            path = layers.layer_file_path(layer)
            if not task.classes_from_labels and spec is not None:
                return LabelClasses(tuple(spec.classes), task.default_label_map(path) or {})
            values, names = raster_values(path)
            return raster_classes(values, names)
        return None

    def refresh_classes(self, *_args) -> None:
        task = get_task(self.task_name)
        try:
            found = self.found_classes()
            self.legend_note.setText(
                f"Recognised legend: {found.legend}." if found is not None and found.legend else ""
            )
        except LandFuseError as error:
            found = None
            self.legend_note.setText(
                f"<span style='color:#b00020'>{html.escape(str(error))}</span>"
            )
        if found is not None and not task.classes_from_labels:
            self.classes.set_classes(None)
            mapped = ", ".join(
                f"{value} → {found.classes[i].name}"
                for value, i in found.label_map.items()
                if i < len(found.classes)
            )
            self.legend_note.setText(f"Label values: {html.escape(mapped)}")
        else:
            self.classes.set_classes(found)
        self.update_estimate()

    def chip_count(self) -> int:
        """About how many chips the labels cover on the reference input's grid."""
        reference = self.panel().reference_layer()
        labels = self.labels.currentLayer()
        if reference is None or labels is None:
            return 0
        size = self.chip.value()
        xres = reference.rasterUnitsPerPixelX() or 1.0
        yres = reference.rasterUnitsPerPixelY() or 1.0
        extent = reference.extent()
        transform = QgsCoordinateTransform(labels.crs(), reference.crs(), QgsProject.instance())
        boxes = (
            [
                transform.transformBoundingBox(f.geometry().boundingBox())
                for f in labels.getFeatures()
            ]
            if _is_polygons(labels)
            else [transform.transformBoundingBox(labels.extent())]
        )
        cells = set()
        for box in boxes:
            box = box.intersect(extent)
            if box.isEmpty():
                continue
            c0 = int((box.xMinimum() - extent.xMinimum()) / xres // size)
            c1 = math.ceil((box.xMaximum() - extent.xMinimum()) / xres / size)
            r0 = int((extent.yMaximum() - box.yMaximum()) / yres // size)
            r1 = math.ceil((extent.yMaximum() - box.yMinimum()) / yres / size)
            cells.update(
                (r, c) for r in range(r0, max(r1, r0 + 1)) for c in range(c0, max(c1, c0 + 1))
            )
        return len(cells)

    def update_estimate(self, *_args) -> None:
        spec = self.panel().current_spec()
        chips = self.chip_count()
        if spec is None or not chips:
            self.estimate.setText("")
            return
        seconds = estimate_seconds(
            spec.name, chips, self.chip.value(), self.epochs.value(), self.gpu, self.batch.value()
        )
        where = "on the GPU" if self.gpu else "on the CPU"
        minutes = f"{seconds / 60:.0f} min" if seconds >= 90 else f"{max(1, round(seconds))} s"
        self.estimate.setText(
            f"About {chips} chips of {self.chip.value()} px: roughly {minutes} {where} "
            f"for {self.epochs.value()} epochs of {spec.title}. {self.device_note}".strip()
        )

    # -- the request ----------------------------------------------------------------------------
    def _label_file(self, layer: Any, folder: Path, name: str) -> str:
        if _is_polygons(layer):
            return str(layers.write_polygons(layer, False, folder, name, "the labels"))
        return layers.layer_file_path(layer)

    def output_folder(self) -> Path:
        """A new folder for this training under the dock's output folder."""
        chosen = self.dock.output_dir.filePath() if self.dock is not None else ""
        root = Path(chosen) if chosen else layers.output_folder_default()
        index = 1
        while (root / f"training_{self.task_name}_{index:03d}").exists():
            index += 1
        return root / f"training_{self.task_name}_{index:03d}"

    def problems(self) -> List[str]:
        """What stops a training (shown before it starts)."""
        panel = self.panel()
        found = list(panel.problems())
        if self.labels.currentLayer() is None:
            found.append("Choose the labels: polygons with a class field, or a label raster.")
        elif _is_polygons(self.labels.currentLayer()) and not self.field.currentField():
            found.append("Choose the polygons' class field.")
        elif get_task(self.task_name).classes_from_labels and self.classes.rowCount() < 2:
            found.append("The labels hold fewer than two classes: label at least two.")
        return found

    def build_request(self) -> TrainRequest:
        """The training request from the widgets (raises LandFuseError with what to fix)."""
        problems = self.problems()
        if problems:
            raise layers.LayerSourceError(" ".join(problems))
        panel = self.panel()
        spec = panel.current_spec()
        folder = self.output_folder()
        labels = self._label_file(self.labels.currentLayer(), folder, "labels")
        validation = self.validation.currentLayer()
        task = get_task(self.task_name)
        start = panel.weights.filePath() or None
        if self.resume.isChecked() and self.last_result is not None:
            start = self.last_result["outputs"]["weights"]
        encoder, init = "resnet18", None
        if self.init_from.currentData() and not start:  # weights to continue from come first
            row = get_encoder_weights(self.init_from.currentData())
            encoder, init = row.encoder, init_text(row, spec)
        device = "auto"
        if self.dock is not None and hasattr(self.dock, "device"):
            device = str(self.dock.device.currentData() or "auto")
        return TrainRequest(
            task=self.task_name,
            model=spec.name,
            inputs={slot.key: panel.slot_sources(slot.key) for slot in panel.slots()},
            labels=labels,
            label_field=self.field.currentField() or None
            if _is_polygons(self.labels.currentLayer())
            else None,
            validation=self._label_file(validation, folder, "validation") if validation else None,
            holdout=self.holdout.value() / 100.0,
            classes=tuple(self.classes.classes()) if task.classes_from_labels else (),
            label_map=self.classes.label_map if task.classes_from_labels else None,
            output_dir=str(folder),
            epochs=self.epochs.value(),
            chip=self.chip.value(),
            batch=self.batch.value(),
            device=device,
            finetune_from=start,
            encoder=encoder,
            init_encoders=init,
            balance=self.balance.isChecked(),
        )

    # -- the run ----------------------------------------------------------------------------------
    def train(self) -> None:
        if self.task is not None:
            return
        try:
            request = self.build_request()
        except LandFuseError as error:
            self.status.setText(f"<span style='color:#b00020'>{html.escape(str(error))}</span>")
            return
        self.last_failure = None
        self.curves.clear()
        self.curves.score_name = get_task(request.task).headline({})[0]
        self.assessment.setText("")
        self.map_button.setEnabled(False)
        self.task = InferenceTask(
            request,
            environment.worker_python(),
            description=f"LandFuse: training {get_model_spec(request.model).title}",
        )
        self.task.progress_text.connect(self.status.setText)
        self.task.progressChanged.connect(lambda value: self.progress.setValue(int(value)))
        self.task.progress_event.connect(self._on_event)
        self.task.done.connect(self._on_done)
        self.train_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.status.setText("Starting the training …")
        QgsApplication.taskManager().addTask(self.task)

    def cancel(self) -> None:
        if self.task is not None:
            self.status.setText("Cancelling …")
            self.task.cancel()

    def _on_event(self, event: Dict[str, Any]) -> None:
        if event.get("phase") != "epoch":
            return
        metrics = event.get("metrics") or {}
        name = self.curves.score_name
        score = metrics.get("change_f1") if name == "change F1" else metrics.get("miou")
        self.curves.add_epoch(metrics.get("train_loss", event.get("loss")), score)

    def _on_done(self, task: InferenceTask) -> None:
        self.task = None
        self.train_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        if task.cancelled_by_user:
            self.status.setText("Training cancelled; the weights of earlier runs are untouched.")
            return
        if task.failure is not None:
            self.last_failure = task.failure
            self.status.setText(
                f"<span style='color:#b00020'>{html.escape(task.failure.message)}</span>"
            )
            return
        result = task.result or {}
        self.last_result = result
        weights = result.get("outputs", {}).get("weights", "")
        task_name = result.get("task", self.task_name)
        headline = get_task(task_name).headline({})[0]
        self.assessment.setText(assessment_html(result.get("assessment") or {}, headline))
        self.progress.setValue(100)
        self.status.setText(f"Weights: {html.escape(weights)}")
        self.resume.setEnabled(True)
        self.map_button.setEnabled(bool(weights))
        self.select_weights(task_name, weights)
        self.trained.emit(task_name, weights)
        if self.dock is not None:
            self.dock.show_message(
                f"Training finished: {result.get('assessment', {}).get('verdict', '')}",
                Qgis.Success,
            )

    def select_weights(self, task_name: str, weights: str) -> None:
        """Give the mapping tab the new weights (their own classes) and the training's inputs."""
        if self.dock is None or not weights:
            return
        source = self.inputs[task_name]
        target = self.dock.panel_for(task_name)
        if target is None:
            return
        target.weights.setFilePath(weights)
        for key, combo in source.layer_combos.items():
            if key not in target.layer_combos:
                continue
            files = source.file_buttons[key].files
            if files:
                target.file_buttons[key].set_files(list(files))
            elif combo.currentLayer() is not None:
                target.layer_combos[key].setLayer(combo.currentLayer())
        target.refresh_mapping()

    def map_scene(self) -> None:
        """Map the training's scene with the new weights in the mapping tab."""
        if self.dock is None or self.last_result is None:
            return
        target = self.dock.panel_for(str(self.last_result.get("task")))
        if target is not None:
            self.dock.show_panel(target)
            self.dock.run()
