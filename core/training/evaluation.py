"""Scoring networks on labelled data, and the record of a run's scores.

:func:`evaluate_model` and :func:`evaluate_weights` (the seeds' ``test.py``) and the validation
of every epoch share :func:`_run_evaluation`: samples normalised as the engine does, padded by
reflection to the network's size multiple, predicted with ``model.predict``. The per-epoch rows
are written as CSV (:func:`write_history_csv`) and drawn as learning curves
(:func:`plot_learning_curves`).
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import math
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...models import weights as weights_io
from ...models.registry import ModelSpec, get_model_spec
from ..datasets import LabelledDataset, PreparedDataset
from ..device import resolve_device
from ..metrics import AccuracyReport, ConfusionMatrix, accuracy_report
from ..tasks import get_task
from .base import PathLike, TrainingRecipe
from .networks import _check_sample, make_normaliser, training_loss

logger = logging.getLogger(__name__)


#: ``(sample name, predicted classes [H, W], reference label [H, W])``.
PredictionCallback = Callable[[str, np.ndarray, np.ndarray], None]


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
        change_class=get_task(spec.task).change_class,
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
