"""The vocabulary of a training run: its error, recipes, configuration, progress and result.

:class:`TrainingError`; the names of the files a run writes; :class:`TrainingRecipe`, the
published recipes and :func:`recipe_for`; :class:`TrainingConfig` and
:func:`resolve_model_spec` (the registry entry with a run's overrides); the records handed back
during and after a run (:class:`TrainingProgress`, :class:`TrainingResult`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Union

from torch import nn

from ...models import weights as weights_io
from ...models.architectures import ARCHITECTURES, get_architecture
from ...models.errors import LandFuseError, TrainingError
from ...models.registry import ClassSpec, ModalitySpec, ModelSpec, get_model_spec
from ..datasets import JointAugmentation

PathLike = Union[str, Path]


#: The resumable checkpoint, kept apart from the weights to map with (``model.pt``).
CHECKPOINT_NAME = "checkpoints/checkpoint.pt"
LOG_NAME = "training_log.csv"
PLOT_NAME = "learning_curves.png"
#: During a run the plot is redrawn at most this often (seconds); always at the end.
PLOT_INTERVAL_S = 60.0
CHECKPOINT_VERSION = 1


# ---------------------------------------------------------------------------------------------
# Recipes


@dataclass(frozen=True)
class TrainingRecipe:
    """How to train: optimiser, schedule, loss, batches, augmentation, stopping.

    Attributes:
        optimizer: ``"sgd"`` or ``"adam"``.
        learning_rate: Initial learning rate.
        momentum: SGD momentum (unused by Adam).
        weight_decay: L2 weight decay.
        poly_power: Power of the poly decay ``lr · (1 - t/T)^power``.
        schedule_unit: ``"iteration"`` (AMM-FuseNet) or ``"epoch"`` (AMFNet): what ``t`` counts.
        loss: ``"cross_entropy"`` or ``"bce_one_hot"`` (BCE with logits on the one-hot target).
        output_weights: Loss weight of each network output in order (deep supervision:
            AMFNet returns main, aux1, aux2, aux3); outputs beyond these are not supervised.
        ignore_index: Label value that is neither learnt nor scored.
        bn_momentum: BatchNorm momentum set in every encoder, or None to keep torch's 0.1.
        batch_size: Training batch size (at least 2: BatchNorm on pooled features).
        epochs: Number of epochs, or None when ``max_iterations`` decides.
        max_iterations: Stop after this many optimiser steps (the poly schedule spans them), or
            None for ``epochs`` full epochs. With both set, whichever comes first.
        drop_last: Drop the last incomplete batch (a batch of one would fail in BatchNorm).
        augmentation: Joint flips / 90° rotations, or None.
        normalisation: ``"auto"`` (fixed statistics from the training data, or the normalisation
            of the weights being fine-tuned), ``"fixed_stats"``, ``"registry"`` (the registry
            entry's, e.g. the published per-tile min-max) or ``"weights"`` (the fine-tune
            source's).
        stats_max_samples: Samples read to compute the statistics (None: all).
        monitor: Validation score for early stopping and the best weights (``"miou"``,
            ``"change_f1"``, ``"oa"``, ``"kappa"``, ``"fw_iou"``...); None: ``miou`` for land
            cover, ``change_f1`` for change.
        patience: Stop when the monitored score has not improved for this many validations
            (needs validation data); None never stops early.
        min_delta: Smallest improvement that counts.
        validation_batch_size: Batch size of validation (None: ``batch_size``).
        num_workers: DataLoader worker processes (0: in the main process).
    """

    optimizer: str = "sgd"
    learning_rate: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    poly_power: float = 0.9
    schedule_unit: str = "iteration"
    loss: str = "cross_entropy"
    output_weights: tuple[float, ...] = (1.0,)
    class_weights: tuple[float, ...] = ()
    ignore_index: int = 255
    bn_momentum: Optional[float] = 0.01
    batch_size: int = 10
    epochs: Optional[int] = None
    max_iterations: Optional[int] = 50_000
    drop_last: bool = True
    augmentation: Optional[JointAugmentation] = field(default_factory=JointAugmentation)
    normalisation: str = "auto"
    stats_max_samples: Optional[int] = None
    monitor: Optional[str] = None
    patience: Optional[int] = None
    min_delta: float = 0.0
    validation_batch_size: Optional[int] = None
    num_workers: int = 0

    def __post_init__(self) -> None:
        checks = [
            (self.optimizer in ("sgd", "adam"), "optimizer must be 'sgd' or 'adam'"),
            (self.schedule_unit in ("iteration", "epoch"), "schedule_unit: iteration or epoch"),
            (self.loss in ("cross_entropy", "bce_one_hot"), "loss: cross_entropy or bce_one_hot"),
            (self.learning_rate > 0, "learning_rate must be positive"),
            (self.batch_size >= 1, "batch_size must be at least 1"),
            (self.epochs is not None or self.max_iterations is not None,
             "give epochs or max_iterations"),
            (self.epochs is None or self.epochs >= 1, "epochs must be at least 1"),
            (self.max_iterations is None or self.max_iterations >= 1,
             "max_iterations must be at least 1"),
            (len(self.output_weights) >= 1, "output_weights needs at least one weight"),
            (all(w > 0 for w in self.class_weights), "class_weights must be positive"),
            (self.normalisation in ("auto", "fixed_stats", "registry", "weights"),
             "normalisation: auto, fixed_stats, registry or weights"),
            (self.patience is None or self.patience >= 1, "patience must be at least 1"),
            (self.num_workers >= 0, "num_workers must be >= 0"),
        ]  # fmt: skip
        for ok, message in checks:
            if not ok:
                raise TrainingError(f"Invalid training recipe: {message}.")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description (for checkpoints and the weights' provenance)."""
        data = dataclasses.asdict(self)
        data["output_weights"] = list(self.output_weights)
        data["class_weights"] = list(self.class_weights)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainingRecipe:
        """Rebuild from :meth:`to_dict` output."""
        values = dict(data)
        aug = values.get("augmentation")
        values["augmentation"] = JointAugmentation(**aug) if aug else None
        values["output_weights"] = tuple(values.get("output_weights", (1.0,)))
        values["class_weights"] = tuple(values.get("class_weights", ()))
        return cls(**values)


def _published(architecture: str) -> TrainingRecipe:
    """The recipe of an architecture's row (fields it does not give keep their defaults)."""
    return TrainingRecipe(**dict(get_architecture(architecture).recipe))


#: AMM-FuseNet as published (NETWORKS.md §2); the augmentation is a LandFuse addition.
AMM_FUSENET_RECIPE = _published("amm_fusenet")
#: AMFNet as published (NETWORKS.md §3).
AMFNET_RECIPE = _published("amfnet")


def recipe_for(model: Union[str, ModelSpec], **changes: Any) -> TrainingRecipe:
    """The published recipe of a model's architecture, with optional changes.

    Args:
        model: Registry name, architecture name (``"amm_fusenet"``, ``"amfnet"``) or entry.
        **changes: Fields to change, e.g. ``epochs=20, max_iterations=None, batch_size=4``.

    Returns:
        The recipe.

    Raises:
        UnknownModelError: Unknown model name.
        TrainingError: A changed value is invalid.
    """
    if isinstance(model, ModelSpec):
        architecture = model.architecture
    elif model in ARCHITECTURES:
        architecture = model
    else:
        architecture = get_model_spec(model).architecture
    try:
        return dataclasses.replace(_published(architecture), **changes)
    except TypeError as exc:
        raise TrainingError(f"Unknown recipe field: {exc}.") from exc


# ---------------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class TrainingConfig:
    """One training run.

    Attributes:
        model: Registry name of the network (its task, architecture, modalities and classes).
        output_dir: Folder for the checkpoint, log, plot and weights.
        recipe: The recipe (default: the architecture's published one).
        encoder: Another ResNet for the encoders (e.g. ``"resnet18"``: the light variant).
        output_stride: Another AMM-FuseNet output stride (16 or 8).
        classes: A new class table (values 0..n-1), e.g. for fine-tuning to another legend.
        modalities: Other input bands per modality (same count and keys as the entry), e.g. a
            12-band Sentinel-2 L2A instead of 13-band L1C.
        seed: Seed of the initialisation, sampling and augmentation.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``.
        init_encoders: A ResNet state_dict file (e.g. torchvision ImageNet weights) loaded into
            every encoder before training (``conv1`` adapted to the band count).
        finetune_from: A project weights file or a published reference checkpoint to start from;
            the final classifier layer(s) are replaced when the class table differs.
        resume: Continue from ``output_dir/checkpoints/checkpoint.pt`` when it exists.
        weights_name: File name of the final weights in ``output_dir``.
        data_description: Free text for the provenance (e.g. the dataset and its split).
        command: The command line that started the run (provenance).
    """

    model: str
    output_dir: str
    recipe: Optional[TrainingRecipe] = None
    encoder: Optional[str] = None
    output_stride: Optional[int] = None
    classes: Optional[tuple[ClassSpec, ...]] = None
    modalities: Optional[tuple[ModalitySpec, ...]] = None
    seed: int = 0
    device: str = "auto"
    init_encoders: Optional[str] = None
    finetune_from: Optional[str] = None
    resume: bool = False
    weights_name: str = "model.pt"
    data_description: str = ""
    command: str = ""

    @property
    def effective_recipe(self) -> TrainingRecipe:
        """The recipe, defaulting to the architecture's published one."""
        return self.recipe if self.recipe is not None else recipe_for(self.model)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description (recorded in checkpoints and weights)."""
        return {
            "model": self.model,
            "output_dir": str(self.output_dir),
            "recipe": self.effective_recipe.to_dict(),
            "encoder": self.encoder,
            "output_stride": self.output_stride,
            "classes": [c.to_dict() for c in self.classes] if self.classes else None,
            "modalities": [m.to_dict() for m in self.modalities] if self.modalities else None,
            "seed": self.seed,
            "device": self.device,
            "init_encoders": self.init_encoders,
            "finetune_from": self.finetune_from,
            "weights_name": self.weights_name,
            "data_description": self.data_description,
            "command": self.command,
        }

    def fingerprint(self) -> dict[str, Any]:
        """The fields a resumed run must share with the run it continues."""
        data = self.to_dict()
        for key in ("output_dir", "device", "command", "data_description"):
            data.pop(key)
        return data


def resolve_model_spec(config: TrainingConfig) -> ModelSpec:
    """The registry entry of a run with its overrides (encoder, stride, classes, bands).

    Raises:
        UnknownModelError: Unknown model name.
        TrainingError: The overrides do not fit the entry.
    """
    spec = get_model_spec(config.model)
    changes: dict[str, Any] = {}
    if config.encoder:
        changes["encoder"] = config.encoder
    if config.output_stride:
        changes["output_stride"] = int(config.output_stride)
    if config.classes:
        changes["classes"] = tuple(config.classes)
    if config.modalities:
        if len(config.modalities) != len(spec.modalities):
            raise TrainingError(
                f"{spec.name} takes {len(spec.modalities)} modalities; "
                f"{len(config.modalities)} were given."
            )
        changes["modalities"] = tuple(config.modalities)
    if not changes:
        return spec
    try:
        return dataclasses.replace(spec, **changes)
    except LandFuseError as exc:
        raise TrainingError(f"The overrides do not fit {spec.name}: {exc}") from exc


# ---------------------------------------------------------------------------------------------
# Progress and result


@dataclass(frozen=True)
class TrainingProgress:
    """Where a run stands, handed to the progress callback after every step and epoch.

    Attributes:
        phase: ``"train"`` (after a step), ``"epoch"`` (after an epoch and its validation).
        epoch: Current epoch, 1-based.
        epochs: Planned epochs.
        step: Step within the epoch, 1-based.
        steps_per_epoch: Steps of a full epoch.
        global_step: Optimiser steps so far.
        total_steps: Planned optimiser steps.
        loss: Mean training loss of the epoch so far.
        learning_rate: Current learning rate.
        elapsed_s: Seconds since this call of :func:`train` started.
        eta_s: Estimated seconds left (None until a step has been timed).
        metrics: The epoch's row (``phase == "epoch"``), else empty.
    """

    phase: str
    epoch: int
    epochs: int
    step: int
    steps_per_epoch: int
    global_step: int
    total_steps: int
    loss: float
    learning_rate: float
    elapsed_s: float
    eta_s: Optional[float]
    metrics: Mapping[str, Any] = field(default_factory=dict)

    @property
    def fraction(self) -> float:
        """Share of the planned steps done (0..1)."""
        return min(1.0, self.global_step / max(1, self.total_steps))


@dataclass(frozen=True)
class TrainingResult:
    """What a finished run produced.

    Attributes:
        weights_path: The final weights file (best validation epoch, else the last).
        sha256: Its sha256.
        model: The network with those weights, in eval mode, on the training device.
        metadata: The metadata written with the weights.
        spec: The entry as trained (bands, normalisation, classes).
        history: One row per epoch (also in the CSV log).
        best_epoch: Epoch of the best validation score (None without validation).
        best_score: That score.
        monitor: Name of the score.
        stopped_early: Whether early stopping ended the run.
        epochs_run: Epochs completed.
        checkpoint_path: The resumable checkpoint.
        log_path: The CSV log.
        plot_path: The learning-curve PNG (None without matplotlib).
        report: Validation report of the best epoch (None without validation).
    """

    weights_path: Path
    sha256: str
    model: nn.Module
    metadata: weights_io.WeightsMetadata
    spec: ModelSpec
    history: tuple[dict[str, Any], ...]
    best_epoch: Optional[int]
    best_score: Optional[float]
    monitor: str
    stopped_early: bool
    epochs_run: int
    checkpoint_path: Path
    log_path: Path
    plot_path: Optional[Path]
    report: Optional[dict[str, Any]]
