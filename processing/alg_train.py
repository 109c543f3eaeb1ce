"""Processing: train (or fine-tune) a land-cover or change model on the user's own labels.

Chips are cut from the chosen rasters (aligned as the engine aligns them) with a label raster
or labelled polygons; the published recipe of the architecture is the default (NETWORKS.md),
with the epochs, batch, chip size and encoder a CPU user will want to change exposed here.
The weights written load in the mapping algorithms and the dock.
"""

import os
from pathlib import Path
from typing import Any, Dict, Optional

from qgis.core import (
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputFile,
    QgsProcessingOutputNumber,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterEnum,
    QgsProcessingParameterField,
    QgsProcessingParameterFile,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsProcessingParameterVectorLayer,
)

from ..core.errors import CancelledError, LandFuseError
from ..core.run_options import DEVICE
from ..core.tasks import Task, get_task
from ..models.encoders import ENCODER_WEIGHTS, get_encoder_weights, init_text
from ..models.registry import get_model_spec, list_model_specs
from .alg_base import (
    WEIGHTS_FILE_FILTER,
    LandFuseAlgorithm,
    advanced,
    option_parameter,
    with_help,
)
from .layers import layer_file_path, write_polygons

ENCODERS = ("resnet18", "resnet34", "resnet50")


class _TrainAlgorithm(LandFuseAlgorithm):
    """Shared parameters and the call of :func:`landfuse.core.training.train`."""

    GROUP = "Training and assessment"
    GROUP_ID = "training"
    TASK = ""

    @property
    def task(self) -> Task:
        return get_task(self.TASK)

    def initAlgorithm(self, config=None) -> None:
        specs = list_model_specs(self.TASK)
        names = [s.name for s in specs]
        self.addParameter(
            with_help(
                QgsProcessingParameterEnum("MODEL", "Model", names, False, names[0], False, True),
                "The registry model to train: "
                + "; ".join(f"{s.name}: {s.title}" for s in specs)
                + ".",
            )
        )
        for slot in self.task.slot_keys(specs):
            self.addParameter(
                with_help(
                    QgsProcessingParameterRasterLayer(slot.key.upper(), slot.title, optional=True),
                    f"{slot.help} Give it when the model takes it.",
                )
            )
        self.add_label_parameters()
        self.add_training_parameters(default_epochs=20, default_chip=128)

    def run_algorithm(
        self,
        parameters: Dict[str, Any],
        context: QgsProcessingContext,
        feedback: QgsProcessingFeedback,
    ) -> Dict[str, Any]:
        spec = get_model_spec(self.parameterAsEnumString(parameters, "MODEL", context))
        inputs = []
        for slot in self.task.slots(spec):
            layer = self.parameterAsRasterLayer(parameters, slot.key.upper(), context)
            if layer is None:
                raise QgsProcessingException(f"The model '{spec.title}' needs {slot.title}.")
            inputs.append(self.source_for(layer, slot.title))
        return self.train_model(parameters, context, feedback, spec, inputs)

    def add_label_parameters(self) -> None:
        self.addParameter(
            with_help(
                QgsProcessingParameterRasterLayer("LABELS", "Label raster", optional=True),
                "Class indices per pixel (0, 1, 2…; 255 = unlabelled), on any grid: it is read on "
                "the first image's grid with nearest neighbour.",
            )
        )
        self.addParameter(
            with_help(
                QgsProcessingParameterVectorLayer(
                    "POLYGONS",
                    "…or labelled polygons",
                    [QgsProcessing.TypeVectorPolygon],
                    optional=True,
                ),
                "Polygons with a class field of text or numbers (a scratch layer too); the "
                "field's values name the classes; pixels outside every polygon are not used.",
            )
        )
        self.addParameter(
            QgsProcessingParameterField(
                "FIELD",
                "Class field of the polygons",
                parentLayerParameterName="POLYGONS",
                optional=True,
            )
        )
        self.addParameter(
            with_help(
                QgsProcessingParameterVectorLayer(
                    "VAL_POLYGONS",
                    "Validation polygons (optional)",
                    [QgsProcessing.TypeVectorPolygon],
                    optional=True,
                ),
                "Labelled polygons kept out of training, with the same class field: the model is "
                "scored on them after every epoch and the best epoch is kept. Without them a "
                "spatial split keeps 30 % of the labelled chips apart for that.",
            )
        )

    def add_training_parameters(self, default_epochs: int, default_chip: int) -> None:
        self.addParameter(
            with_help(
                QgsProcessingParameterString(
                    "CLASSES", "Class names (comma separated; empty: the model's)", optional=True
                ),
                "Your own legend, e.g. 'water,forest,crops,built-up': label value i is class i.",
            )
        )
        self.addParameter(
            advanced(
                with_help(
                    QgsProcessingParameterString("LABEL_MAP", "Label value mapping", optional=True),
                    "Source value → class index, e.g. '0:255,1:0,2:1' (255 drops a value).",
                )
            )
        )
        self.addParameter(
            with_help(
                QgsProcessingParameterEnum("ENCODER", "Encoder", list(ENCODERS), False, 0),
                "ResNet-18 trains fastest on a CPU; the papers use ResNet-50 (AMM-FuseNet) and "
                "ResNet-34 (AMFNet).",
            )
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                "EPOCHS",
                "Epochs",
                QgsProcessingParameterNumber.Integer,
                default_epochs,
                False,
                1,
                10000,
            )
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                "BATCH", "Batch size (≥ 2)", QgsProcessingParameterNumber.Integer, 4, False, 2, 512
            )
        )
        self.addParameter(
            with_help(
                QgsProcessingParameterNumber(
                    "CHIP",
                    "Chip size (px)",
                    QgsProcessingParameterNumber.Integer,
                    default_chip,
                    False,
                    32,
                    2048,
                ),
                "Training chips are cut on a regular grid; a multiple of 32.",
            )
        )
        self.addParameter(
            advanced(
                QgsProcessingParameterNumber(
                    "LR",
                    "Learning rate (0: the recipe's)",
                    QgsProcessingParameterNumber.Double,
                    0.0,
                    False,
                    0.0,
                    10.0,
                )
            )
        )
        self.addParameter(
            with_help(
                QgsProcessingParameterFile(
                    "FINETUNE",
                    "Fine-tune from weights (optional)",
                    QgsProcessingParameterFile.File,
                    optional=True,
                    fileFilter=WEIGHTS_FILE_FILTER,
                ),
                "Start from a LandFuse weights file or a published checkpoint; the classifier is "
                "replaced when your class table differs.",
            )
        )
        self.addParameter(
            advanced(
                with_help(
                    QgsProcessingParameterFile(
                        "INIT_ENCODERS",
                        "Initialise encoders from (optional)",
                        QgsProcessingParameterFile.File,
                        optional=True,
                    ),
                    "A torchvision ResNet state_dict (e.g. ImageNet weights you have), adapted "
                    "to the band count.",
                )
            )
        )
        self.addParameter(
            advanced(
                with_help(
                    QgsProcessingParameterEnum(
                        "INIT_FROM",
                        "…or start the encoder from pretrained weights (downloaded)",
                        list(ENCODER_WEIGHTS),
                        False,
                        None,
                        True,
                        True,
                    ),
                    "A public pretrained encoder of the catalogue ("
                    + "; ".join(
                        f"{r.key}: {r.title}, {r.licence}" for r in ENCODER_WEIGHTS.values()
                    )
                    + "), downloaded once into the cache with its sha256 checked. It sets the "
                    "encoder to its depth and starts the encoder of its modality.",
                )
            )
        )
        self.addParameter(
            advanced(
                QgsProcessingParameterNumber(
                    "SEED", "Random seed", QgsProcessingParameterNumber.Integer, 0
                )
            )
        )
        self.addParameter(
            with_help(
                QgsProcessingParameterBoolean("BALANCE", "Balance the classes", True),
                "Weight the loss by each class's rarity in the labels (rarer classes weigh "
                "more), as the dock's Train tab does by default.",
            )
        )
        self.addParameter(advanced(with_help(option_parameter(DEVICE), DEVICE.help)))
        self.addParameter(
            advanced(
                with_help(
                    QgsProcessingParameterNumber(
                        "THREADS",
                        "CPU threads (0: automatic)",
                        QgsProcessingParameterNumber.Integer,
                        0,
                        False,
                        0,
                        256,
                    ),
                    "Torch threads on the CPU; automatic takes half the cores, since all the "
                    "cores of a busy machine run many times slower than fewer.",
                )
            )
        )
        self.addParameter(QgsProcessingParameterFolderDestination("OUTPUT", "Output folder"))
        self.addOutput(QgsProcessingOutputFile("WEIGHTS", "Weights file"))
        self.addOutput(QgsProcessingOutputFile("LOG", "Training log (CSV)"))
        self.addOutput(QgsProcessingOutputFile("PLOT", "Learning curves (PNG)"))
        self.addOutput(QgsProcessingOutputFile("ASSESSMENT", "Assessment with its baseline (JSON)"))
        self.addOutput(QgsProcessingOutputNumber("BEST_SCORE", "Validation score (mIoU / F1)"))

    # -- the session -------------------------------------------------------------------------
    def label_file(self, parameters, context, output: str, prefix: str = "") -> Optional[tuple]:
        """The labels as a file and its class field: a label raster's file, or the polygons
        (a scratch layer too: written to the output folder first)."""
        raster = (
            self.parameterAsRasterLayer(parameters, f"{prefix}LABELS", context)
            if not prefix
            else None
        )
        polygons = self.parameterAsVectorLayer(parameters, f"{prefix}POLYGONS", context)
        field = self.parameterAsString(parameters, "FIELD", context) or None
        if raster is not None and polygons is not None:
            raise QgsProcessingException(
                "Give either a label raster or labelled polygons, not both."
            )
        if raster is not None:
            return layer_file_path(raster), None
        if polygons is None:
            return None
        if not field:
            raise QgsProcessingException("Choose the polygons' class field.")
        if field not in polygons.fields().names():
            raise QgsProcessingException(
                f"'{polygons.name()}' has no field '{field}'; choose one of "
                f"{', '.join(polygons.fields().names())}."
            )
        path = polygons.source().split("|", 1)[0]
        if polygons.providerType() != "ogr" or not os.path.isfile(path) or "|" in polygons.source():
            name = f"{prefix.lower()}labels"
            try:
                path = str(write_polygons(polygons, False, Path(output), name, "the labels"))
            except LandFuseError as error:
                raise QgsProcessingException(str(error)) from None
        return path, field

    def session_request(self, parameters, context, spec, inputs: Dict[str, Any]):
        """The :class:`~landfuse.core.training.session.TrainRequest` of the parameters."""
        from ..core.train_cli import parse_label_map
        from ..core.train_requests import TrainRequest

        output = self.parameterAsString(parameters, "OUTPUT", context)
        label = self.label_file(parameters, context, output)
        if label is None:
            raise QgsProcessingException("Give the labels: a label raster or labelled polygons.")
        validation = self.label_file(parameters, context, output, prefix="VAL_")
        text = self.parameterAsString(parameters, "LABEL_MAP", context)
        try:
            label_map = parse_label_map(text) if text else None
        except (LandFuseError, ValueError) as error:
            raise QgsProcessingException(f"Label value mapping: {error}") from None
        names = [
            n.strip() for n in self.parameterAsString(parameters, "CLASSES", context).split(",")
        ]
        classes = tuple(
            {"value": index, "name": name} for index, name in enumerate(n for n in names if n)
        )
        encoder = ENCODERS[self.parameterAsEnum(parameters, "ENCODER", context)]
        init = self.parameterAsFile(parameters, "INIT_ENCODERS", context) or None
        pretrained = self.parameterAsEnumString(parameters, "INIT_FROM", context)
        if pretrained:
            row = get_encoder_weights(pretrained)
            init, encoder = init_text(row, spec), row.encoder
        return TrainRequest(
            task=self.TASK,
            model=spec.name,
            inputs=inputs,
            labels=label[0],
            label_field=label[1],
            validation=validation[0] if validation else None,
            output_dir=output,
            classes=classes,
            label_map=label_map,
            epochs=self.parameterAsInt(parameters, "EPOCHS", context),
            batch=self.parameterAsInt(parameters, "BATCH", context),
            chip=self.parameterAsInt(parameters, "CHIP", context),
            learning_rate=self.parameterAsDouble(parameters, "LR", context),
            encoder=encoder,
            device=self.parameterAsEnumString(parameters, "DEVICE", context),
            threads=self.parameterAsInt(parameters, "THREADS", context),
            seed=self.parameterAsInt(parameters, "SEED", context),
            finetune_from=self.parameterAsFile(parameters, "FINETUNE", context) or None,
            init_encoders=init,
            balance=self.parameterAsBool(parameters, "BALANCE", context),
        )

    def train_model(self, parameters, context, feedback, spec, inputs) -> Dict[str, Any]:
        self.require_torch()
        from .worker_run import run_in_worker, torch_in_process

        if torch_in_process():
            from ..core.training.session import run_session

        keyed = {slot.key: (source,) for slot, source in zip(self.task.slots(spec), inputs)}
        try:
            request = self.session_request(parameters, context, spec, keyed)

            def progress(event: Dict[str, Any]) -> None:
                feedback.setProgress(100.0 * float(event.get("fraction") or 0.0))
                if event.get("phase") == "epoch":
                    scores = ", ".join(
                        f"{k} {v:.4f}"
                        for k, v in (event.get("metrics") or {}).items()
                        if isinstance(v, float)
                    )
                    feedback.pushInfo(f"Epoch {event['epoch']}/{event['epochs']}: {scores}")
                elif event.get("stage") != "train" and event.get("message"):
                    feedback.pushInfo(str(event["message"]))

            if torch_in_process():
                result = run_session(
                    request,
                    progress=progress,
                    cancel=feedback.isCanceled,
                    warn=lambda warning: self.push_warning(feedback, warning.message),
                )
            else:  # QGIS's Python has no torch: the worker trains
                result = run_in_worker(
                    request,
                    feedback,
                    on_warning=lambda w: self.push_warning(feedback, str(w.get("message", ""))),
                )
        except (CancelledError, LandFuseError) as error:
            raise QgsProcessingException(str(error)) from None
        outputs = result["outputs"]
        feedback.pushInfo(f"Weights: {outputs['weights']}")
        feedback.pushInfo(f"Assessment: {result['assessment']['verdict']}")
        network = result["assessment"].get("network") or {}
        return {
            "OUTPUT": request.output_dir,
            "WEIGHTS": outputs["weights"],
            "LOG": outputs["log"],
            "PLOT": outputs["plot"] or None,
            "ASSESSMENT": outputs["assessment"],
            "BEST_SCORE": self.task.headline(network)[1],
        }


class TrainLandCoverAlgorithm(_TrainAlgorithm):
    """Train or fine-tune AMM-FuseNet on labelled rasters or polygons."""

    TASK = "landcover"

    NAME = "trainlandcover"
    DISPLAY_NAME = "Train a land-cover model"
    HELP = (
        "Trains AMM-FuseNet (or fine-tunes existing weights) on your own data: a Sentinel-2 "
        "image with Sentinel-1 and/or a DEM, and labels as a raster of class indices or as "
        "polygons with a class field. Chips are cut from the images aligned on the "
        "Sentinel-2 grid. The published recipe (SGD, poly learning-rate decay, cross-entropy "
        "ignoring 255) is the default; normalisation statistics are computed from your data "
        "and stored in the weights. Writes the weights (.pt + .json), a CSV log and learning "
        "curves to the output folder. On a CPU keep the encoder at ResNet-18, chips small and "
        "epochs few; the paper shows fine-tuning from few labels works."
    )


class TrainChangeAlgorithm(_TrainAlgorithm):
    """Train or fine-tune AMFNet on a labelled before/after pair."""

    TASK = "change"

    NAME = "trainchange"
    DISPLAY_NAME = "Train a change-detection model"
    HELP = (
        "Trains AMFNet (or fine-tunes existing weights) on a before/after pair with a change "
        "label raster (1 or 255 = change, 0 = no change) or polygons of changed areas with a "
        "class field (1 = change). Chips are cut from both dates aligned on the 'before' "
        "grid and augmented jointly. The published recipe (Adam, poly decay, BCE with deep "
        "supervision 1 / 0.5 / 0.4 / 0.3) is the default. Writes the weights, a CSV log and "
        "learning curves to the output folder."
    )
