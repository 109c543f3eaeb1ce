"""The networks a run trains, what they are fed and the loss they learn from.

Building a network for an entry, loading ResNet weights into its encoders, fine-tuning from
another run's weights (the classifier replaced when the classes differ), the per-band
statistics of the training data and the normaliser built from them, the check of a sample's
inputs against the entry, and the recipe's loss (:func:`training_loss`).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...models import weights as weights_io
from ...models.errors import WeightsMismatchError
from ...models.registry import (
    ClassSpec,
    ModalitySpec,
    ModelSpec,
    NormalisationSpec,
    build_architecture,
)
from ...models.resnet import ResNet, load_torchvision_state_dict
from ..datasets import LabelledDataset, Normaliser
from ..normalisation import normalise
from ..tasks import get_task
from .base import PathLike, TrainingError, TrainingRecipe

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# Networks


def input_modalities(spec: ModelSpec) -> tuple[int, ...]:
    """Modality index of each network input (land cover: one per modality; change: both 0)."""
    return tuple(spec.modalities.index(m) for m in get_task(spec.task).input_modalities(spec))


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


def init_encoders_from(model: nn.Module, spec: ModelSpec, text: str) -> dict[str, object]:
    """Start encoders from files or catalogued pretrained weights (downloaded when needed).

    Args:
        model: The network.
        spec: Its entry (the modality of each encoder, in order, and the encoder depth).
        text: ``FILE_OR_KEY`` for every encoder, or ``s2=KEY,s1=FILE`` per modality
            (:func:`landfuse.models.encoders.parse_init_encoders`).

    Returns:
        The provenance: the encoders filled, and per encoder the file, its sha256 and the
        catalogue key.

    Raises:
        TrainingError: a modality the network has no encoder for, or catalogued weights of
            another depth than the network's encoder.
    """
    from ...models.encoders import catalogue_key, parse_init_encoders
    from ..downloads import encoder_file

    try:
        wanted = parse_init_encoders(text)
    except ValueError as error:
        raise TrainingError(f"--init-encoders: {error}.") from None
    encoders = encoders_of(model)
    if not encoders:
        raise TrainingError("This network has no ResNet encoder to initialise.")
    keys = [m.key for m in spec.modalities]
    by_modality = dict(zip(keys, encoders)) if len(keys) == len(encoders) else {}
    unknown = [k for k in wanted if k != "*" and k not in by_modality]
    if unknown:
        raise TrainingError(
            f"{spec.name} has no encoder for {', '.join(unknown)}; its encoders take "
            f"{', '.join(by_modality) or 'one shared input'}."
        )
    info: dict[str, object] = {}
    for key, value in wanted.items():
        row = catalogue_key(value)
        if row is not None and row.encoder != spec.encoder:
            raise TrainingError(
                f"{row.key} is a {row.encoder} encoder; this network's is {spec.encoder}: train "
                f"with the encoder {row.encoder} (--encoder {row.encoder})."
            )
        path = encoder_file(value)
        state = weights_io.extract_state_dict(weights_io.safe_torch_load(path))
        targets = encoders if key == "*" else [by_modality[key]]
        for name, encoder in targets:
            load_torchvision_state_dict(encoder, state)
            info[name] = {
                "file": str(path),
                "sha256": weights_io.file_sha256(path),
                "catalogue": row.key if row is not None else None,
                "normalisation it expects": row.normalisation if row is not None else None,
            }
            logger.info("Encoder %s initialised from %s.", name, path)
    return {"encoders": list(info), "per_encoder": info}


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
        balance = (
            torch.tensor(recipe.class_weights, dtype=logits.dtype, device=logits.device)
            if len(recipe.class_weights) == logits.shape[1]
            else None
        )
        if recipe.loss == "cross_entropy":
            if valid.any():
                term = F.cross_entropy(
                    logits, label, weight=balance, ignore_index=recipe.ignore_index
                )
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
            if balance is not None:  # each pixel weighted by its class's weight
                mask = mask * balance[torch.where(valid, label, 0)].unsqueeze(1)
            denominator = mask.sum() * classes
            term = (per_pixel * mask).sum() / denominator.clamp_min(1.0)
        terms.append(term * weight)
    return torch.stack(terms).sum()
