"""Training, fine-tuning and evaluation of the registry networks (issue 6).

The papers' workflow is train → test → predict; this module is the train and test part, with
the published recipes as defaults (spec/NETWORKS.md):

- AMM-FuseNet (§2, "Published training recipe"): SGD momentum 0.9, weight decay 1e-4, lr 0.01
  with poly decay (power 0.9) per iteration over 50k iterations, batch 10, cross-entropy with
  ignore 255, BatchNorm momentum 0.01 in the encoders. Batches of one raise in BatchNorm after
  global pooling, so the last incomplete batch of an epoch is dropped.
- AMFNet (§3): Adam lr 1e-4, poly decay (0.9) per epoch over 200 epochs, batch 32,
  ``BCEWithLogits`` on the one-hot target with deep supervision
  ``main + 0.5·aux1 + 0.4·aux2 + 0.3·aux3``.

Every number is a field of :class:`TrainingRecipe` (change them with ``dataclasses.replace``).
The models the plugin trains use fixed per-band statistics computed from the training data
(normalisation mode ``fixed_stats``), stored in the weights file, so every tile of a scene sees
the same scaling at inference (no seams, unlike per-tile min-max).

A run (:func:`train`) writes into its output folder: ``checkpoint.pt`` after every epoch (model,
optimiser, scheduler, epoch, best score and weights, RNG states, history), ``training_log.csv``
(metrics per epoch), ``learning_curves.png``, and the final weights (``model.pt`` + JSON
sidecar, :func:`landfuse.models.weights.save_weights`: those of the best validation epoch) with
classes, bands, normalisation, provenance and validation metrics.

Determinism: the initialisation comes from the seed, the sample order of epoch ``e`` from
``(seed, e)`` and the augmentation of sample ``i`` in epoch ``e`` from ``(seed, e, i)``; the
global RNG states (dropout) are saved with every checkpoint. A run interrupted at any point and
resumed (``TrainingConfig.resume``) restarts from the last finished epoch and, on the CPU, ends
with exactly the weights of an uninterrupted run. On GPUs cuDNN runs in deterministic mode, but
some CUDA kernels (e.g. the backward pass of bilinear upsampling) use atomic additions, so two
GPU runs may differ in the last bits.

Example (a short script)::

    from landfuse.core import datasets, training

    train_set = datasets.AmmFuseNetDataset(root, "train", modalities=("s2", "s1"),
                                           hunan_remap=True)
    val_set = datasets.AmmFuseNetDataset(root, "val", modalities=("s2", "s1"), hunan_remap=True)
    config = training.TrainingConfig(
        model="amm_fusenet_s2_s1_hunan", output_dir="runs/hunan", encoder="resnet18",
        recipe=training.recipe_for("amm_fusenet_s2_s1_hunan", epochs=30, max_iterations=None))
    result = training.train(config, train_set, val_set)
    print(result.weights_path, result.best_score)
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import datetime as _dt
import json
import logging
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..models import weights as weights_io
from ..models.errors import LandFuseError, WeightsMismatchError
from ..models.registry import (
    ClassSpec,
    ModalitySpec,
    ModelSpec,
    NormalisationSpec,
    build_architecture,
    get_model_spec,
)
from ..models.resnet import ResNet, load_torchvision_state_dict, set_bn_momentum
from .datasets import (
    VECTOR_EXTENSIONS,
    JointAugmentation,
    LabelledDataset,
    Normaliser,
    PreparedDataset,
    as_sources,
)
from .device import resolve_device
from .errors import CancelledError
from .metrics import AccuracyReport, ConfusionMatrix, accuracy_report, to_jsonable
from .normalisation import normalise
from .protection import ProtectedFiles, check_destinations

logger = logging.getLogger(__name__)

PathLike = Union[str, Path]

CHECKPOINT_NAME = "checkpoint.pt"
LOG_NAME = "training_log.csv"
PLOT_NAME = "learning_curves.png"
#: During a run the plot is redrawn at most this often (seconds); always at the end.
PLOT_INTERVAL_S = 60.0
CHECKPOINT_VERSION = 1

#: ``(sample name, predicted classes [H, W], reference label [H, W])``.
PredictionCallback = Callable[[str, np.ndarray, np.ndarray], None]


class TrainingError(LandFuseError):
    """A training run cannot start or continue as configured; the message says what to change."""


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
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainingRecipe:
        """Rebuild from :meth:`to_dict` output."""
        values = dict(data)
        aug = values.get("augmentation")
        values["augmentation"] = JointAugmentation(**aug) if aug else None
        values["output_weights"] = tuple(values.get("output_weights", (1.0,)))
        return cls(**values)


#: AMM-FuseNet as published (NETWORKS.md §2); the augmentation is a LandFuse addition.
AMM_FUSENET_RECIPE = TrainingRecipe()

#: AMFNet as published (NETWORKS.md §3).
AMFNET_RECIPE = TrainingRecipe(
    optimizer="adam",
    learning_rate=1e-4,
    momentum=0.0,
    weight_decay=0.0,
    poly_power=0.9,
    schedule_unit="epoch",
    loss="bce_one_hot",
    output_weights=(1.0, 0.5, 0.4, 0.3),
    bn_momentum=None,
    batch_size=32,
    epochs=200,
    max_iterations=None,
)

_RECIPES = {"amm_fusenet": AMM_FUSENET_RECIPE, "amfnet": AMFNET_RECIPE}


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
    elif model in _RECIPES:
        architecture = model
    else:
        architecture = get_model_spec(model).architecture
    try:
        return dataclasses.replace(_RECIPES[architecture], **changes)
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
        resume: Continue from ``output_dir/checkpoint.pt`` when it exists.
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


def input_modalities(spec: ModelSpec) -> tuple[int, ...]:
    """Modality index of each network input (land cover: one per modality; change: both 0)."""
    if spec.task == "change":
        return (0, 0)
    return tuple(range(len(spec.modalities)))


def build_model(spec: ModelSpec) -> nn.Module:
    """A fresh network for an entry (random initialisation from torch's current RNG)."""
    return build_architecture(spec.architecture, spec.model_config())


def classifier_keys(spec: ModelSpec) -> frozenset[str]:
    """state_dict keys whose shape depends on the class count (the final classifier layers).

    Found by comparing the shapes of the network built for ``n`` and ``n + 1`` classes (on the
    ``meta`` device, so nothing is allocated): AMM-FuseNet's ``classifier.classifier.3``, AMFNet's
    ``output`` and auxiliary heads' last convolutions.
    """
    config = spec.model_config()
    with torch.device("meta"):
        one = build_architecture(spec.architecture, config).state_dict()
        two = build_architecture(
            spec.architecture, {**config, "num_classes": int(config["num_classes"]) + 1}
        ).state_dict()
    return frozenset(k for k in one if one[k].shape != two[k].shape)


def encoders_of(model: nn.Module) -> list[tuple[str, ResNet]]:
    """The ResNet encoders of a network, by module name (``backbone1``, ``net.net``...)."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, ResNet)]


def init_encoders_from_file(model: nn.Module, path: PathLike) -> list[str]:
    """Load a ResNet state_dict (e.g. torchvision ImageNet weights) into every encoder.

    Args:
        model: The network.
        path: A torch file holding a ResNet state_dict (``fc.*`` ignored; ``conv1`` adapted to
            each encoder's band count, see ``models.resnet.adapt_conv1_weight``).

    Returns:
        The names of the encoders filled.

    Raises:
        TrainingError: The network has no ResNet encoder.
        WeightsError: The file is missing, unsafe, damaged, or not a ResNet of the encoder's
            depth (WeightsMismatchError).
    """
    state = weights_io.extract_state_dict(weights_io.safe_torch_load(path))
    encoders = encoders_of(model)
    if not encoders:
        raise TrainingError("This network has no ResNet encoder to initialise.")
    for name, encoder in encoders:
        load_torchvision_state_dict(encoder, state)
        logger.info("Encoder %s initialised from %s.", name, path)
    return [name for name, _ in encoders]


@dataclass(frozen=True)
class FinetuneSource:
    """What a fine-tuning run started from."""

    path: str
    sha256: str
    model_name: str
    classes: tuple[ClassSpec, ...]
    modalities: tuple[ModalitySpec, ...]
    replaced_keys: tuple[str, ...]


def _read_finetune_source(
    path: PathLike, spec: ModelSpec
) -> tuple[dict[str, torch.Tensor], str, str, tuple[ClassSpec, ...], tuple[ModalitySpec, ...]]:
    """State dict, sha256, model name, classes and modalities of a project or published file."""
    try:
        state, meta, sha = weights_io.read_weights(path)
    except WeightsMismatchError:
        # Not a LandFuse file: a published reference checkpoint of the run's registry model.
        model, meta, sha = weights_io.load_model(path, model_name=spec.name)
        state = model.state_dict()
    return dict(state), sha, meta.model_name, tuple(meta.classes), tuple(meta.modalities)


def load_for_finetuning(model: nn.Module, spec: ModelSpec, path: PathLike) -> FinetuneSource:
    """Fill a network with the weights of another run, replacing the classifier if needed.

    Every tensor is copied except the final classifier layers (see :func:`classifier_keys`)
    when the source's class table differs from ``spec.classes`` (another count, or other names);
    those keep their fresh initialisation. Anything else that does not fit is an error: the
    encoders and heads must be the same architecture and bands.

    Args:
        model: The network built for ``spec`` (the new class table).
        spec: The run's entry.
        path: A project weights file or a published reference checkpoint of ``spec.name``.

    Returns:
        A description of the source.

    Raises:
        WeightsMismatchError: The source is another architecture, encoder or band count.
        WeightsError: The file is unreadable, unsafe or corrupted.
    """
    state, sha, name, classes, modalities = _read_finetune_source(path, spec)
    same_classes = [(c.value, c.name) for c in classes] == [(c.value, c.name) for c in spec.classes]
    replace = frozenset() if same_classes else classifier_keys(spec)
    target = model.state_dict()
    missing = [k for k in target if k not in state and k not in replace]
    unexpected = [k for k in state if k not in target]
    mismatched = [
        (k, tuple(state[k].shape), tuple(target[k].shape))
        for k in state
        if k in target and k not in replace and state[k].shape != target[k].shape
    ]
    if missing or unexpected or mismatched:
        details = []
        if mismatched:
            details.append(
                "mis-shaped: " + ", ".join(f"{k} {a} vs {b}" for k, a, b in mismatched[:5])
            )
        if missing:
            details.append("missing: " + ", ".join(missing[:5]))
        if unexpected:
            details.append("unexpected: " + ", ".join(unexpected[:5]))
        raise WeightsMismatchError(
            f"{path} (model {name}) cannot be fine-tuned as {spec.name} with encoder "
            f"{spec.encoder} and bands {spec.in_channels}: " + "; ".join(details) + ". Use the "
            "same model, encoder and band counts as the source.",
            missing=missing,
            unexpected=unexpected,
            mismatched=mismatched,
        )
    merged = {k: (target[k] if k in replace else state[k]) for k in target}
    model.load_state_dict(merged, strict=True)
    if replace:
        logger.info(
            "Fine-tuning from %s: %d classes -> %d; replaced %s.",
            path,
            len(classes),
            spec.num_classes,
            ", ".join(sorted(replace)),
        )
    return FinetuneSource(
        path=str(path),
        sha256=sha,
        model_name=name,
        classes=tuple(classes),
        modalities=tuple(modalities),
        replaced_keys=tuple(sorted(replace)),
    )


# ---------------------------------------------------------------------------------------------
# Normalisation


def compute_band_statistics(
    dataset: LabelledDataset,
    spec: ModelSpec,
    max_samples: Optional[int] = None,
) -> tuple[NormalisationSpec, ...]:
    """Per-band mean and standard deviation of the training data, one spec per modality.

    Only valid pixels count (nodata and non-finite values are left out). Both dates of a change
    pair share one modality, so their pixels are pooled. Means and variances are merged sample
    by sample (Chan et al.'s parallel formula) in float64, so large reflectance values do not
    lose precision.

    Args:
        dataset: The raw training samples (not augmented).
        spec: The run's entry (modalities and band counts).
        max_samples: Read at most this many samples, evenly spread (None: all).

    Returns:
        ``NormalisationSpec("fixed_stats", mean, std)`` per modality; a constant band gets std 1.

    Raises:
        TrainingError: The dataset is empty or has no valid pixel.
    """
    n = len(dataset)
    if n == 0:
        raise TrainingError("The training dataset is empty.")
    indices: Sequence[int] = range(n)
    if max_samples is not None and max_samples < n:
        indices = sorted({int(i) for i in np.linspace(0, n - 1, max_samples)})
    mapping = input_modalities(spec)
    counts = [np.zeros(len(m.bands)) for m in spec.modalities]
    means = [np.zeros(len(m.bands)) for m in spec.modalities]
    m2s = [np.zeros(len(m.bands)) for m in spec.modalities]
    for index in indices:
        sample = dataset.read(index)
        _check_sample(sample.inputs, spec, sample.name)
        for i, data in enumerate(sample.inputs):
            m = mapping[i]
            valid = np.isfinite(data).all(axis=0)
            if sample.valid is not None:
                valid &= sample.valid
            values = data[:, valid].astype(np.float64)
            k = values.shape[1]
            if k == 0:
                continue
            mean_b = values.mean(axis=1)
            m2_b = ((values - mean_b[:, None]) ** 2).sum(axis=1)
            total = counts[m] + k
            delta = mean_b - means[m]
            means[m] = means[m] + delta * k / total
            m2s[m] = m2s[m] + m2_b + delta**2 * counts[m] * k / total
            counts[m] = total
    out = []
    for m, modality in enumerate(spec.modalities):
        if not np.all(counts[m] > 0):
            raise TrainingError(
                f"No valid pixel of modality '{modality.key}' in the training data; check nodata."
            )
        std = np.sqrt(m2s[m] / counts[m])
        std = np.where(std > 1e-6 * np.maximum(1.0, np.abs(means[m])), std, 1.0)
        out.append(
            NormalisationSpec(
                "fixed_stats",
                mean=tuple(float(v) for v in means[m]),
                std=tuple(float(v) for v in std),
            )
        )
    return tuple(out)


def with_normalisation(spec: ModelSpec, norms: Sequence[NormalisationSpec]) -> ModelSpec:
    """The entry with another normalisation per modality."""
    modalities = tuple(
        dataclasses.replace(m, normalisation=n) for m, n in zip(spec.modalities, norms)
    )
    return dataclasses.replace(spec, modalities=modalities)


class SpecNormaliser:
    """The per-input normalisation of an entry, as :class:`PreparedDataset` calls it.

    Applies :func:`landfuse.core.normalisation.normalise`, the same code the engine applies to
    its tiles. A class rather than a closure so that DataLoader worker processes started with
    ``spawn`` (macOS, Windows) can pickle it.

    Args:
        spec: The entry with its modalities' normalisation.
    """

    def __init__(self, spec: ModelSpec) -> None:
        self.input_modality = input_modalities(spec)
        self.norms = tuple(m.normalisation for m in spec.modalities)

    def __call__(self, index: int, data: np.ndarray, valid: Optional[np.ndarray]) -> np.ndarray:
        """Normalise input ``index`` (``[C, H, W]``); invalid pixels become 0."""
        return normalise(data, self.norms[self.input_modality[index]], valid)


def make_normaliser(spec: ModelSpec) -> Normaliser:
    """The per-input normalisation of an entry (a :class:`SpecNormaliser`)."""
    return SpecNormaliser(spec)


def _check_sample(inputs: Sequence[np.ndarray], spec: ModelSpec, name: str) -> None:
    mapping = input_modalities(spec)
    if len(inputs) != len(mapping):
        raise TrainingError(
            f"Sample {name} has {len(inputs)} inputs; {spec.name} needs {len(mapping)} "
            f"({', '.join(spec.modalities[m].key for m in mapping)})."
        )
    for i, data in enumerate(inputs):
        modality = spec.modalities[mapping[i]]
        if data.shape[0] != len(modality.bands):
            raise TrainingError(
                f"Input {i + 1} of sample {name} has {data.shape[0]} bands; modality "
                f"'{modality.key}' of {spec.name} needs {len(modality.bands)} "
                f"({', '.join(modality.band_names)}). Select the bands, or give other "
                "modalities in the training configuration."
            )


# ---------------------------------------------------------------------------------------------
# Loss


def training_loss(
    outputs: Union[torch.Tensor, Sequence[torch.Tensor]],
    label: torch.Tensor,
    recipe: TrainingRecipe,
) -> torch.Tensor:
    """The recipe's loss over the network outputs (deep supervision when there are several).

    Args:
        outputs: Logits ``[B, C, H, W]``, or a sequence of them (AMFNet: main, aux1..3).
        label: int64 ``[B, H, W]`` with ``recipe.ignore_index`` where unlabelled.
        recipe: Loss kind, output weights, ignore value.

    Returns:
        The scalar loss (0, still attached to the graph, when no pixel is labelled).

    Raises:
        TrainingError: Fewer outputs than weights.
    """
    outs = [outputs] if isinstance(outputs, torch.Tensor) else list(outputs)
    if len(outs) < len(recipe.output_weights):
        raise TrainingError(
            f"The network returns {len(outs)} outputs but the recipe weights "
            f"{len(recipe.output_weights)}; set output_weights to {len(outs)} values."
        )
    valid = label != recipe.ignore_index
    terms = []
    for logits, weight in zip(outs, recipe.output_weights):
        if recipe.loss == "cross_entropy":
            if valid.any():
                term = F.cross_entropy(logits, label, ignore_index=recipe.ignore_index)
            else:
                term = logits.sum() * 0.0
        else:
            # AMFNet: BCEWithLogits on the 2-channel one-hot target (NETWORKS.md §3); unlabelled
            # pixels are masked out of the mean.
            classes = logits.shape[1]
            target = F.one_hot(torch.where(valid, label, 0), classes).permute(0, 3, 1, 2)
            per_pixel = F.binary_cross_entropy_with_logits(
                logits, target.to(logits.dtype), reduction="none"
            )
            mask = valid.unsqueeze(1).to(logits.dtype)
            denominator = mask.sum() * classes
            term = (per_pixel * mask).sum() / denominator.clamp_min(1.0)
        terms.append(term * weight)
    return torch.stack(terms).sum()


# ---------------------------------------------------------------------------------------------
# Evaluation


def spec_from_metadata(metadata: weights_io.WeightsMetadata) -> ModelSpec:
    """The registry entry of a weights file with the file's bands, normalisation and classes.

    Raises:
        UnknownModelError: The file's model is not in this registry.
    """
    spec = get_model_spec(metadata.model_name)
    changes: dict[str, Any] = {
        "modalities": tuple(metadata.modalities),
        "classes": tuple(metadata.classes),
    }
    if metadata.config.get("encoder"):
        changes["encoder"] = str(metadata.config["encoder"])
    if metadata.config.get("output_stride"):
        changes["output_stride"] = int(metadata.config["output_stride"])
    return dataclasses.replace(spec, **changes)


def size_multiple(spec: ModelSpec) -> int:
    """The multiple that chip and tile sizes must be: AMFNet 32, AMM-FuseNet 16.

    16 is safe for AMM-FuseNet at either output stride (NETWORKS.md); the engine uses the same
    rule.
    """
    return max(int(spec.output_stride), 16)


def _pad_to_stride(x: torch.Tensor, stride: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    ph, pw = (-h) % stride, (-w) % stride
    if not (ph or pw):
        return x
    # Reflection keeps image statistics at the border, as the engine pads its tiles.
    mode = "reflect" if min(h, w) > max(ph, pw) else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)


def _predict_logits(model: nn.Module, inputs: Sequence[torch.Tensor], stride: int) -> torch.Tensor:
    h, w = inputs[0].shape[-2:]
    padded = [_pad_to_stride(x, stride) for x in inputs]
    # Every LandFuse network has predict() (the contract between models/ and core/).
    predict: Callable[..., torch.Tensor] = getattr(model, "predict")  # noqa: B009
    return predict(*padded)[..., :h, :w]


def _run_evaluation(
    model: nn.Module,
    dataset: PreparedDataset,
    spec: ModelSpec,
    device: torch.device,
    batch_size: int,
    ignore_index: int,
    recipe: Optional[TrainingRecipe] = None,
    on_prediction: Optional[PredictionCallback] = None,
) -> tuple[AccuracyReport, Optional[float]]:
    """Confusion matrix (and the main output's loss when a recipe is given) over a dataset."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
    cm = ConfusionMatrix(spec.num_classes, ignore_index=ignore_index)
    loss_sum, loss_count = 0.0, 0
    main_only = dataclasses.replace(recipe, output_weights=(1.0,)) if recipe is not None else None
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for batch in loader:
                inputs = [x.to(device) for x in batch["inputs"]]
                label = batch["label"].to(device)
                logits = _predict_logits(model, inputs, size_multiple(spec))
                if main_only is not None and bool((label != ignore_index).any()):
                    loss_sum += float(training_loss(logits, label, main_only)) * label.shape[0]
                    loss_count += label.shape[0]
                predicted = logits.argmax(dim=1).cpu()
                cm.update(predicted, batch["label"])
                if on_prediction is not None:
                    for name, pred, ref in zip(batch["name"], predicted, batch["label"]):
                        on_prediction(name, pred.numpy(), ref.numpy())
    finally:
        model.train(was_training)
    report = accuracy_report(
        cm,
        class_names=[c.name for c in spec.classes],
        change_class=1 if spec.task == "change" else None,
    )
    return report, (loss_sum / loss_count if loss_count else None)


def evaluate_model(
    model: nn.Module,
    dataset: LabelledDataset,
    spec: ModelSpec,
    device: Union[str, torch.device] = "cpu",
    batch_size: int = 4,
    ignore_index: int = 255,
    on_prediction: Optional[PredictionCallback] = None,
) -> AccuracyReport:
    """Score a network on a labelled dataset (the seeds' ``test.py``).

    Samples are normalised with ``spec``'s normalisation (the same code as the engine), padded
    by reflection to a multiple of the output stride, and predicted with ``model.predict``.

    Args:
        model: The network (its device is ``device``).
        dataset: Raw labelled samples (e.g. an :class:`~landfuse.core.datasets.AmmFuseNetDataset`
            test split).
        spec: The model's entry with its bands, normalisation and classes (see
            :func:`spec_from_metadata`).
        device: Where the model is.
        batch_size: Samples per batch (they must share a size to be batched).
        ignore_index: Label value left out of the scores.
        on_prediction: Called with ``(sample name, predicted classes [H, W], label [H, W])``
            for every sample, e.g. to save the change visualisation.

    Returns:
        The accuracy report (change scores for a change model).
    """
    torch_device = torch.device(device) if isinstance(device, str) else device
    view = PreparedDataset(dataset, make_normaliser(spec), None)
    report, _ = _run_evaluation(
        model, view, spec, torch_device, batch_size, ignore_index, None, on_prediction
    )
    return report


def evaluate_weights(
    weights: PathLike,
    dataset: LabelledDataset,
    model_name: Optional[str] = None,
    device: str = "auto",
    batch_size: int = 4,
    ignore_index: int = 255,
    on_prediction: Optional[PredictionCallback] = None,
) -> AccuracyReport:
    """Load a weights file and score it on a labelled dataset.

    Args:
        weights: A LandFuse weights file, or a published reference checkpoint (then
            ``model_name``).
        dataset: Raw labelled samples.
        model_name: Registry model (required for reference checkpoints; checked otherwise).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"mps"``...
        batch_size: Samples per batch.
        ignore_index: Label value left out of the scores.
        on_prediction: See :func:`evaluate_model`.

    Returns:
        The accuracy report.

    Raises:
        WeightsError: The file is missing, unsafe, damaged or for another model.
        TrainingError: The dataset's bands do not fit the model.
    """
    torch_device = resolve_device(device)
    model, metadata, _ = weights_io.load_model(weights, model_name=model_name, device=torch_device)
    spec = spec_from_metadata(metadata)
    if len(dataset):
        first = dataset.read(0)
        _check_sample(first.inputs, spec, first.name)
    return evaluate_model(
        model, dataset, spec, torch_device, batch_size, ignore_index, on_prediction
    )


# ---------------------------------------------------------------------------------------------
# Logs and plots


def write_history_csv(history: Sequence[Mapping[str, Any]], path: PathLike) -> Path:
    """Write the per-epoch metrics as CSV (one row per epoch, columns in first-seen order)."""
    path = Path(path)
    columns: list[str] = []
    for row in history:
        columns.extend(k for k in row if k not in columns)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in history:
            writer.writerow(
                {
                    k: ("" if v is None or (isinstance(v, float) and not math.isfinite(v)) else v)
                    for k, v in row.items()
                }
            )
    os.replace(tmp, path)
    return path


def plot_learning_curves(
    history: Sequence[Mapping[str, Any]], path: PathLike, monitor: str = "miou"
) -> Optional[Path]:
    """Draw the loss and validation curves per epoch as a PNG.

    Uses matplotlib's Agg canvas directly (no pyplot, no global backend change, so it is safe
    inside QGIS). Returns None, with a warning in the log, when matplotlib is not installed.

    Args:
        history: Rows of :func:`train` (``epoch``, ``train_loss``, ``val_loss``, scores).
        path: PNG to write.
        monitor: Score drawn prominently (e.g. ``miou`` or ``change_f1``).

    Returns:
        The path written, or None.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        logger.warning("matplotlib is not installed: no learning-curve plot written.")
        return None

    def series(key: str) -> tuple[list[int], list[float]]:
        xs, ys = [], []
        for row in history:
            value = row.get(key)
            if isinstance(value, (int, float)) and math.isfinite(float(value)):
                xs.append(int(row["epoch"]))
                ys.append(float(value))
        return xs, ys

    figure = Figure(figsize=(10, 4), dpi=100)
    FigureCanvasAgg(figure)
    loss_ax, score_ax = figure.subplots(1, 2)
    for key, label in (("train_loss", "training loss"), ("val_loss", "validation loss")):
        xs, ys = series(key)
        if xs:
            loss_ax.plot(xs, ys, marker="o", label=label)
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("loss")
    loss_ax.set_title("Loss")
    loss_ax.grid(True, alpha=0.3)
    if loss_ax.get_legend_handles_labels()[0]:
        loss_ax.legend()
    keys = [monitor] + [k for k in ("oa", "miou", "kappa", "change_f1") if k != monitor]
    for key in keys:
        xs, ys = series(key)
        if xs:
            score_ax.plot(xs, ys, marker="o", linewidth=2.5 if key == monitor else 1.2, label=key)
    score_ax.set_xlabel("epoch")
    score_ax.set_ylabel("validation score")
    score_ax.set_title("Validation")
    score_ax.grid(True, alpha=0.3)
    if score_ax.get_legend_handles_labels()[0]:
        score_ax.legend()
    figure.tight_layout()
    path = Path(path)
    tmp = path.with_name(path.stem + ".tmp.png")
    figure.savefig(tmp)
    os.replace(tmp, path)
    return path


# ---------------------------------------------------------------------------------------------
# The training loop


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


def _derive_seed(seed: int, *parts: int) -> int:
    """A 63-bit seed from the run's seed and some counters (e.g. the epoch)."""
    return int(np.random.SeedSequence([seed, *parts]).generate_state(1, np.uint64)[0]) >> 1


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state() -> dict[str, Any]:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(np.asarray(keys, dtype=np.int64)), pos, has_gauss, gauss],
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        with contextlib.suppress(RuntimeError):  # another GPU count than when saved
            torch.cuda.set_rng_state_all(state["cuda"])


@contextlib.contextmanager
def _deterministic() -> Iterator[None]:
    """cuDNN in deterministic mode during the run, restored afterwards."""
    saved = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved


def _plan(recipe: TrainingRecipe, steps_per_epoch: int) -> tuple[int, int]:
    """(epochs, total optimiser steps) of a run."""
    if recipe.max_iterations is not None:
        epochs = math.ceil(recipe.max_iterations / steps_per_epoch)
        if recipe.epochs is not None:
            epochs = min(epochs, recipe.epochs)
        return epochs, min(recipe.max_iterations, epochs * steps_per_epoch)
    epochs = int(recipe.epochs or 1)
    return epochs, epochs * steps_per_epoch


def _make_optimizer(model: nn.Module, recipe: TrainingRecipe) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(
            params,
            lr=recipe.learning_rate,
            momentum=recipe.momentum,
            weight_decay=recipe.weight_decay,
        )
    return torch.optim.Adam(params, lr=recipe.learning_rate, weight_decay=recipe.weight_decay)


def _check_size(sample_inputs: Sequence[np.ndarray], spec: ModelSpec, name: str) -> None:
    h, w = sample_inputs[0].shape[-2:]
    stride = size_multiple(spec)
    if h % stride or w % stride:
        raise TrainingError(
            f"Training sample {name} is {w}×{h} px; {spec.name} needs sizes that are multiples "
            f"of {stride}. Cut chips of e.g. {max(stride, (min(h, w) // stride) * stride)} px."
        )


def _choose_normalisation(
    recipe: TrainingRecipe,
    spec: ModelSpec,
    train_data: LabelledDataset,
    finetune: Optional[FinetuneSource],
) -> tuple[tuple[NormalisationSpec, ...], str]:
    mode = recipe.normalisation
    if mode == "auto":
        mode = "weights" if finetune is not None else "fixed_stats"
    if mode == "weights":
        if finetune is None:
            raise TrainingError("normalisation 'weights' needs a weights file to fine-tune from.")
        norms = tuple(m.normalisation for m in finetune.modalities)
        if len(norms) != len(spec.modalities):
            raise TrainingError(
                f"The fine-tuning source has {len(norms)} modalities, the model "
                f"{len(spec.modalities)}."
            )
        return norms, f"taken from {Path(finetune.path).name}"
    if mode == "registry":
        return tuple(m.normalisation for m in spec.modalities), "registry entry's"
    norms = compute_band_statistics(train_data, spec, recipe.stats_max_samples)
    used = len(train_data) if recipe.stats_max_samples is None else recipe.stats_max_samples
    return norms, f"fixed_stats from {min(used, len(train_data))} training samples"


def _save_checkpoint(path: Path, payload: Mapping[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(dict(payload), tmp)
    os.replace(tmp, path)


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()}


def _load_checkpoint(path: Path, config: TrainingConfig, n_train: int) -> dict[str, Any]:
    state = weights_io.safe_torch_load(path)
    if not isinstance(state, Mapping) or state.get("format") != "landfuse-checkpoint":
        raise TrainingError(f"{path} is not a LandFuse training checkpoint.")
    saved = json.loads(state["config_json"])
    current = json.loads(json.dumps(config.fingerprint()))
    differ = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
    if differ:
        raise TrainingError(
            f"The checkpoint in {path.parent} was written with other settings ({', '.join(differ)}"
            "); resume with the same options, or train into another folder."
        )
    if int(state["train_samples"]) != n_train:
        raise TrainingError(
            f"The checkpoint was trained on {state['train_samples']} samples, this dataset has "
            f"{n_train}; resume with the same training data."
        )
    return dict(state)


def training_outputs(config: TrainingConfig, out: Path) -> dict[str, str]:
    """The files a training run writes into its output folder (what → path)."""
    weights = out / config.weights_name
    return {
        "the trained weights": str(weights),
        "the weights' sidecar": str(weights) + ".json",
        "the training checkpoint": str(out / CHECKPOINT_NAME),
        "the training log": str(out / LOG_NAME),
        "the learning curves": str(out / PLOT_NAME),
    }


def _check_outputs_spare_inputs(
    config: TrainingConfig, out: Path, datasets: Sequence[Optional[LabelledDataset]]
) -> None:
    """Refuse to start when a training output would replace an input (issue 11)."""
    protected = ProtectedFiles()
    for dataset in datasets:
        for scene in getattr(dataset, "scenes", ()):
            for value in scene.inputs:
                for source in as_sources(value):
                    protected.add_raster(source.path, f"the training input {source.path}")
            if Path(scene.label).suffix.lower() in VECTOR_EXTENSIONS:
                protected.add_vector(scene.label, f"the labels {scene.label}")
            else:
                protected.add_raster(scene.label, f"the labels {scene.label}")
    for path in (config.finetune_from, config.init_encoders):
        protected.add_weights(path)
    check_destinations(
        training_outputs(config, out),
        protected,
        with_derived=False,
        fix="train into another output folder",
    )


def train(
    config: TrainingConfig,
    train_data: LabelledDataset,
    val_data: Optional[LabelledDataset] = None,
    progress: Optional[Callable[[TrainingProgress], None]] = None,
    should_stop: Optional[Callable[[], bool]] = None,
) -> TrainingResult:
    """Train (or fine-tune, or resume) a registry network and write its weights.

    Args:
        config: The run (model, recipe, seed, device, output folder, init / fine-tune / resume).
        train_data: Raw training samples (normalised and augmented here).
        val_data: Raw validation samples, scored after every epoch (best weights, early stop).
        progress: Called after every step and every epoch with a :class:`TrainingProgress`.
        should_stop: Polled after every step; returning True cancels the run (the checkpoint of
            the last finished epoch stays, so ``resume`` continues from there).

    Returns:
        The :class:`TrainingResult`.

    Raises:
        TrainingError: The configuration, data or checkpoint do not allow training.
        WeightsError: An initialisation or fine-tuning file is unusable.
        CancelledError: ``should_stop`` returned True.
        DeviceError: The device is not available.
    """
    recipe = config.effective_recipe
    out = Path(config.output_dir)
    _check_outputs_spare_inputs(config, out, (train_data, val_data))
    out.mkdir(parents=True, exist_ok=True)
    spec = resolve_model_spec(config)
    device = resolve_device(config.device)
    monitor = recipe.monitor or ("change_f1" if spec.task == "change" else "miou")
    if recipe.batch_size < 2:
        raise TrainingError(
            "Train with batches of at least 2: BatchNorm after global pooling cannot normalise "
            "a single sample (NETWORKS.md)."
        )
    if config.seed < 0:
        raise TrainingError(f"The seed must be 0 or more, got {config.seed}.")
    if config.init_encoders and config.finetune_from:
        raise TrainingError(
            "Give either encoder initialisation or a model to fine-tune from, not both."
        )
    n_train = len(train_data)
    steps_per_epoch = (
        n_train // recipe.batch_size if recipe.drop_last else math.ceil(n_train / recipe.batch_size)
    )
    if steps_per_epoch == 0:
        raise TrainingError(
            f"{n_train} training sample(s) do not fill one batch of {recipe.batch_size}; add "
            "samples (smaller chips, more overlap) or lower the batch size."
        )
    epochs, total_steps = _plan(recipe, steps_per_epoch)
    first = train_data.read(0)
    _check_sample(first.inputs, spec, first.name)
    _check_size(first.inputs, spec, first.name)

    checkpoint_path = out / CHECKPOINT_NAME
    state: Optional[dict[str, Any]] = None
    if checkpoint_path.exists():
        if not config.resume:
            raise TrainingError(
                f"{out} already holds a training checkpoint; resume it (--resume) or train "
                "into another folder."
            )
        state = _load_checkpoint(checkpoint_path, config, n_train)

    _seed_everything(config.seed)
    started = time.monotonic()
    with _deterministic():
        finetune: Optional[FinetuneSource] = None
        init_info: Optional[dict[str, Any]] = None
        if state is not None:
            norms = tuple(NormalisationSpec.from_dict(n) for n in json.loads(state["norms_json"]))
            norm_note = str(state["norm_note"])
            spec = with_normalisation(spec, norms)
            model = build_model(spec)
            provenance_extra = json.loads(state["provenance_json"])
        else:
            model = build_model(spec)
            provenance_extra = {}
            if config.finetune_from:
                finetune = load_for_finetuning(model, spec, config.finetune_from)
                provenance_extra["finetune_from"] = {
                    "file": finetune.path,
                    "sha256": finetune.sha256,
                    "model_name": finetune.model_name,
                    "source_classes": [c.name for c in finetune.classes],
                    "replaced": list(finetune.replaced_keys),
                }
            if config.init_encoders:
                encoders = init_encoders_from_file(model, config.init_encoders)
                init_info = {
                    "file": str(config.init_encoders),
                    "sha256": weights_io.file_sha256(config.init_encoders),
                    "encoders": encoders,
                }
                provenance_extra["init_encoders"] = init_info
            norms, norm_note = _choose_normalisation(recipe, spec, train_data, finetune)
            spec = with_normalisation(spec, norms)
        model.to(device)
        if recipe.bn_momentum is not None:
            for _, encoder in encoders_of(model):
                set_bn_momentum(encoder, recipe.bn_momentum)
        optimizer = _make_optimizer(model, recipe)
        scheduler = torch.optim.lr_scheduler.PolynomialLR(
            optimizer,
            total_iters=total_steps if recipe.schedule_unit == "iteration" else epochs,
            power=recipe.poly_power,
        )
        start_epoch, global_step = 0, 0
        history: list[dict[str, Any]] = []
        best_score: Optional[float] = None
        best_epoch: Optional[int] = None
        best_state: Optional[dict[str, torch.Tensor]] = None
        best_report: Optional[dict[str, Any]] = None
        since_best = 0
        stopped_early = False
        if state is not None:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            start_epoch = int(state["epoch"])
            global_step = int(state["global_step"])
            history = json.loads(state["history_json"])
            best_score = state["best_score"]
            best_epoch = state["best_epoch"]
            # The best weights are the checkpoint's own model when the last epoch was the best.
            best_state = state["model"] if state["best_is_last"] else state["best_model"]
            best_report = json.loads(state["best_report_json"])
            since_best = int(state["since_best"])
            stopped_early = bool(state["stopped_early"])
            _set_rng_state(state["rng"])
            logger.info("Resuming %s after epoch %d (step %d).", out, start_epoch, global_step)

        normaliser = make_normaliser(spec)
        train_view = PreparedDataset(train_data, normaliser, recipe.augmentation, config.seed)
        val_view = PreparedDataset(val_data, normaliser, None) if val_data is not None else None
        val_batch = recipe.validation_batch_size or recipe.batch_size
        steps_this_call = 0
        last_plot = time.monotonic()
        finished = stopped_early or global_step >= total_steps or start_epoch >= epochs
        epoch = start_epoch
        while not finished:
            train_view.set_epoch(epoch)
            generator = torch.Generator()
            generator.manual_seed(_derive_seed(config.seed, epoch))
            loader = torch.utils.data.DataLoader(
                train_view,
                batch_size=recipe.batch_size,
                shuffle=True,
                generator=generator,
                drop_last=recipe.drop_last,
                num_workers=recipe.num_workers,
            )
            epoch_lr = float(optimizer.param_groups[0]["lr"])
            model.train()
            loss_sum, loss_n = 0.0, 0
            epoch_start = time.monotonic()
            for step, batch in enumerate(loader, start=1):
                inputs = [x.to(device, non_blocking=True) for x in batch["inputs"]]
                label = batch["label"].to(device, non_blocking=True)
                optimizer.zero_grad(set_to_none=True)
                loss = training_loss(model(*inputs), label, recipe)
                if not torch.isfinite(loss):
                    raise TrainingError(
                        f"The loss became {float(loss)} at epoch {epoch + 1}, step {step}; lower "
                        "the learning rate, or check the inputs for extreme or nodata values."
                    )
                loss.backward()
                optimizer.step()
                if recipe.schedule_unit == "iteration":
                    scheduler.step()
                global_step += 1
                steps_this_call += 1
                loss_sum += float(loss.detach())
                loss_n += 1
                if progress is not None:
                    elapsed = time.monotonic() - started
                    eta = elapsed / steps_this_call * (total_steps - global_step)
                    progress(
                        TrainingProgress(
                            "train", epoch + 1, epochs, step, steps_per_epoch, global_step,
                            total_steps, loss_sum / loss_n,
                            float(optimizer.param_groups[0]["lr"]), elapsed, eta,
                        )
                    )  # fmt: skip
                if should_stop is not None and should_stop():
                    raise CancelledError(
                        f"Training cancelled during epoch {epoch + 1}. The checkpoint of epoch "
                        f"{epoch} is in {out}; continue with --resume."
                    )
                if global_step >= total_steps:
                    break
            if recipe.schedule_unit == "epoch":
                scheduler.step()
            row: dict[str, Any] = {
                "epoch": epoch + 1,
                "global_step": global_step,
                "learning_rate": epoch_lr,
                "train_loss": loss_sum / max(1, loss_n),
            }
            if val_view is not None:
                report, val_loss = _run_evaluation(
                    model, val_view, spec, device, val_batch, recipe.ignore_index, recipe
                )
                row["val_loss"] = val_loss
                row.update(report.scalars())
                score = row.get(monitor)
                if score is None:
                    raise TrainingError(
                        f"Unknown validation score '{monitor}'; use one of "
                        f"{', '.join(report.scalars())}."
                    )
                if math.isfinite(score) and (
                    best_score is None or score > best_score + recipe.min_delta
                ):
                    best_score, best_epoch, since_best = float(score), epoch + 1, 0
                    best_state = _cpu_state(model)
                    best_report = report.to_dict()
                else:
                    since_best += 1
            row["seconds"] = round(time.monotonic() - epoch_start, 3)
            history.append(row)
            epoch += 1
            if (
                recipe.patience is not None
                and val_view is not None
                and since_best >= recipe.patience
            ):
                stopped_early = True
                logger.info(
                    "Early stop after epoch %d: %s has not improved for %d epochs.",
                    epoch, monitor, since_best,
                )  # fmt: skip
            finished = stopped_early or global_step >= total_steps or epoch >= epochs
            _save_checkpoint(
                checkpoint_path,
                {
                    "format": "landfuse-checkpoint",
                    "version": CHECKPOINT_VERSION,
                    "config_json": json.dumps(config.fingerprint()),
                    "norms_json": json.dumps([m.normalisation.to_dict() for m in spec.modalities]),
                    "norm_note": norm_note,
                    "provenance_json": json.dumps(provenance_extra),
                    "train_samples": n_train,
                    "epoch": epoch,
                    "global_step": global_step,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "best_score": best_score,
                    "best_epoch": best_epoch,
                    # Not stored twice when the last epoch is the best (the usual case early on).
                    "best_is_last": best_epoch == epoch,
                    "best_model": None if best_epoch == epoch else best_state,
                    "best_report_json": json.dumps(best_report),
                    "since_best": since_best,
                    "stopped_early": stopped_early,
                    "history_json": json.dumps(to_jsonable(history)),
                    "rng": _rng_state(),
                },
            )
            write_history_csv(history, out / LOG_NAME)
            if time.monotonic() - last_plot >= PLOT_INTERVAL_S:
                plot_learning_curves(history, out / PLOT_NAME, monitor)
                last_plot = time.monotonic()
            logger.info(
                "Epoch %d/%d: %s",
                epoch,
                epochs,
                ", ".join(f"{k} {v:.4g}" for k, v in row.items() if isinstance(v, float)),
            )
            if progress is not None:
                elapsed = time.monotonic() - started
                progress(
                    TrainingProgress(
                        "epoch", epoch, epochs, loss_n, steps_per_epoch, global_step, total_steps,
                        row["train_loss"], float(optimizer.param_groups[0]["lr"]), elapsed,
                        elapsed / max(1, steps_this_call) * (total_steps - global_step),
                        dict(row),
                    )
                )  # fmt: skip

    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    log_path = write_history_csv(history, out / LOG_NAME)
    plot_path = plot_learning_curves(history, out / PLOT_NAME, monitor)
    training_info = {
        "task": spec.task,
        "data": {
            "description": config.data_description,
            "train_samples": n_train,
            "validation_samples": len(val_data) if val_data is not None else 0,
            "train_dataset": type(train_data).__name__,
        },
        "recipe": recipe.to_dict(),
        "seed": config.seed,
        "encoder": spec.encoder,
        "epochs_planned": epochs,
        "epochs_run": len(history),
        "steps": global_step,
        "best_epoch": best_epoch,
        "stopped_early": stopped_early,
        "normalisation": norm_note,
        "device": str(device),
        "torch": torch.__version__,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": config.command,
        **provenance_extra,
    }
    metrics: dict[str, Any] = {"monitor": monitor, "best_score": best_score}
    if best_report is not None:
        metrics["validation"] = best_report
    if history:
        metrics["last_epoch"] = to_jsonable(history[-1])
    metadata = weights_io.WeightsMetadata(
        model_name=spec.name,
        architecture=spec.architecture,
        config=dict(getattr(model, "config")),  # noqa: B009 - every network has .config
        modalities=spec.modalities,
        classes=spec.classes,
        training=to_jsonable(training_info),
        metrics=to_jsonable(metrics),
    )
    weights_path = out / config.weights_name
    sha = weights_io.save_weights(weights_path, model, metadata)
    return TrainingResult(
        weights_path=weights_path,
        sha256=sha,
        model=model,
        metadata=metadata,
        spec=spec,
        history=tuple(history),
        best_epoch=best_epoch,
        best_score=best_score,
        monitor=monitor,
        stopped_early=stopped_early,
        epochs_run=len(history),
        checkpoint_path=checkpoint_path,
        log_path=log_path,
        plot_path=plot_path,
        report=best_report,
    )
