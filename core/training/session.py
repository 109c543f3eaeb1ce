"""From the user's layers and labels to weights and an honest assessment: one training session.

The dock's Train tab, Processing and the command line describe a session as a
:class:`~landfuse.core.train_requests.TrainRequest` (plain data, JSON in the worker protocol)
and :func:`run_session` runs it:

1. the labels become a class table (:func:`~landfuse.core.train_requests.label_classes`: the
   values of a polygon field, a known product legend, or the names and colours the user gave)
   and a label mapping;
2. chips are cut from the inputs as the engine aligns them; without validation labels of their
   own, :func:`~.baselines.spatial_split` keeps whole chips apart for validation;
3. :func:`~landfuse.core.training.train` trains (the weights of the best validation epoch);
4. the weights are scored on the validation pixels, with the task's classical baseline on
   exactly those pixels (a per-pixel random forest fitted on the training pixels for land
   cover, change-vector analysis + Otsu for change), and the verdict says which is better.

The outputs: the weights to map with (``model.pt`` and its sidecar) at the top of the output
folder, ``assessment.json`` and ``confusion_matrix.csv`` (class names), the log and curves, and
the resumable checkpoint under ``checkpoints/`` (never confused with the weights).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

from ...models.registry import get_model_spec
from ..errors import DatasetError, RequestError
from ..tasks import get_task
from ..train_requests import TrainRequest, default_threads, label_classes, repeats_for

__all__ = ["FEW_PIXELS", "Progress", "report_summary", "run_session", "verdict"]

#: Under this many validation pixels the verdict says its scores are rough.
FEW_PIXELS = 2000


Progress = Callable[[dict[str, Any]], None]


def run_session(
    request: TrainRequest,
    progress: Optional[Progress] = None,
    cancel: Optional[Callable[[], bool]] = None,
    warn: Optional[Callable[[Any], None]] = None,
) -> dict[str, Any]:
    """Train, score and compare with the baseline; the worker's ``result`` fields.

    Args:
        request: The session.
        progress: Receives ``{"stage": "train", "fraction", "epoch", "epochs", "loss",
            "eta_seconds", "message", "metrics"}`` after every step and epoch, then
            ``{"stage": "assess", ...}``.
        cancel: Polled between steps; True stops the session (:class:`CancelledError`).
        warn: Receives the datasets' :class:`~landfuse.core.run_warnings.RunWarning`.

    Returns:
        ``{"task", "outputs": {"weights", "assessment", "confusion", "log", "plot",
        "checkpoint"}, "assessment": {...}, "classes": [...], "history": [...]}``.
    """
    import torch

    from .. import metrics
    from ..datasets import RasterChipDataset, RasterScene
    from . import TrainingConfig, evaluate_model, recipe_for, train
    from .baselines import ChipSubset, balanced_weights, spatial_split

    started = time.monotonic()
    emit = progress or (lambda event: None)
    threads = request.threads or default_threads()
    torch.set_num_threads(threads)
    task = get_task(request.task)
    spec = get_model_spec(request.model)
    if spec.task != request.task:
        raise RequestError(f"{spec.name} is a {spec.task} model, not a {request.task} model.")
    found = label_classes(request, spec)
    if task.classes_from_labels and len(found.classes) < 2:
        raise DatasetError(
            f"The labels hold one class only ({found.names[0]}): label at least two classes."
        )
    inputs = []
    for slot in task.slots(spec):
        sources = request.inputs.get(slot.key)
        if not sources:
            raise RequestError(f"{spec.title} needs {slot.title}; give it.")
        inputs.append(tuple(sources))

    def chips(labels: str) -> RasterChipDataset:
        scene = RasterScene(
            tuple(inputs), labels, label_field=request.label_field, label_map=found.label_map
        )
        dataset = RasterChipDataset(
            [scene],
            chip_size=request.chip,
            nearest_inputs=task.nearest_inputs(spec),
            modalities=task.input_modalities(spec),
            preload=True,
        )
        for warning in dataset.warnings:
            if warning not in seen_warnings:
                seen_warnings.append(warning)
                if warn is not None:
                    warn(warning)
        return dataset

    seen_warnings: list[Any] = []
    emit({"stage": "prepare", "fraction": 0.0, "message": "Cutting training chips"})
    base = chips(request.labels)
    classes = tuple(found.classes)
    if request.validation:
        train_set = ChipSubset(base, range(len(base)))
        val_base = chips(request.validation)
        val_set = ChipSubset(val_base, range(len(val_base)))
        split = "validation labels of their own"
    else:
        train_idx, val_idx = spatial_split(base, len(classes), request.holdout, request.seed)
        train_set, val_set = ChipSubset(base, train_idx), ChipSubset(base, val_idx)
        split = (
            f"spatial split: {len(val_idx)} of {len(base)} chips of {request.chip} px kept apart"
        )
    if len(train_set) < 1:
        raise DatasetError("No training chip: label more areas, or use smaller chips.")
    chips_seen = len(train_set)
    fit_set = train_set  # each chip once: the class weights and the baseline's pixels
    repeats = repeats_for(chips_seen, request.batch, request.epochs)
    if repeats > 1:  # each repetition is augmented anew (flips, rotations)
        train_set = ChipSubset(base, list(fit_set.indices) * repeats)
    out = Path(request.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    changes: dict[str, Any] = {
        "epochs": request.epochs,
        "max_iterations": None,
        "batch_size": min(request.batch, max(2, len(train_set))),
    }
    if request.learning_rate > 0:
        changes["learning_rate"] = request.learning_rate
    if request.balance:
        changes["class_weights"] = balanced_weights(base, fit_set.indices, len(classes))
    config = TrainingConfig(
        model=spec.name,
        output_dir=str(out),
        recipe=recipe_for(spec.name, **changes),
        encoder=request.encoder or None,
        classes=classes if task.classes_from_labels else None,
        seed=request.seed,
        device=request.device,
        finetune_from=request.finetune_from or None,
        init_encoders=request.init_encoders or None,
        data_description=f"{len(base)} chips of {request.chip} px from "
        + ", ".join(os.path.basename(s[0].path) for s in inputs)
        + f"; labels {os.path.basename(request.labels)}; {split}",
        command="landfuse training session",
    )

    def on_step(update: Any) -> None:
        event = {
            "stage": "train",
            "phase": update.phase,
            "fraction": 0.02 + 0.9 * update.fraction,
            "epoch": update.epoch,
            "epochs": update.epochs,
            "loss": update.loss,
            "eta_seconds": update.eta_s,
            "message": f"epoch {update.epoch}/{update.epochs}, loss {update.loss:.3f}",
        }
        if update.phase == "epoch":
            event["metrics"] = {
                k: v for k, v in update.metrics.items() if isinstance(v, (int, float))
            }
        emit(event)

    result = train(
        config,
        train_set,
        val_set if len(val_set) else None,
        progress=on_step,
        should_stop=cancel,
    )
    emit({"stage": "assess", "fraction": 0.93, "message": "Scoring on the validation pixels"})
    names = [c.name for c in result.spec.classes]
    assessment: dict[str, Any] = {
        "split": split,
        "train_chips": chips_seen,
        "chip_repeats_per_epoch": repeats,
        "validation_chips": len(val_set),
        "classes": [c.to_dict() for c in result.spec.classes],
        "threads": threads,
        "train_seconds": round(time.monotonic() - started, 1),
    }
    report = None
    if len(val_set):
        # The trained network as it is in memory: the weights file holds the same tensors.
        device = next(result.model.parameters()).device
        report = evaluate_model(result.model, val_set, result.spec, device)
        assessment["network"] = report_summary(report, names)
        metrics.write_confusion_csv(report, out / "confusion_matrix.csv")
        if request.baseline:
            baseline = task.baseline(fit_set, val_set, names, seed=request.seed, threads=threads)
            assessment["baseline"] = {
                "name": baseline.name,
                "note": baseline.note,
                **(report_summary(baseline.report, names) if baseline.report else {}),
            }
        assessment["verdict"] = verdict(assessment, request.task)
    else:
        assessment["verdict"] = (
            "Not assessed: every labelled chip was needed for training. Label more areas or "
            "give validation polygons to see how good the map is."
        )
    assessment_path = out / "assessment.json"
    assessment_path.write_text(json.dumps(metrics.to_jsonable(assessment), indent=2))
    checkpoint = result.checkpoint_path
    emit({"stage": "done", "fraction": 1.0, "message": assessment["verdict"]})
    return {
        "task": request.task,
        "mode": "train",
        "outputs": {
            "weights": str(result.weights_path),
            "assessment": str(assessment_path),
            "confusion": str(out / "confusion_matrix.csv") if report else "",
            "log": str(result.log_path),
            "plot": str(result.plot_path) if result.plot_path else "",
            "checkpoint": str(checkpoint),
        },
        "assessment": assessment,
        "classes": [c.to_dict() for c in result.spec.classes],
        "history": [
            {k: v for k, v in row.items() if isinstance(v, (int, float, str))}
            for row in result.history
        ],
        "label_legend": found.legend,
    }


def report_summary(report: Any, names: Sequence[str]) -> dict[str, Any]:
    """The scores the Train tab shows: OA, mIoU, per-class IoU/F1, change F1, the matrix."""
    from ..metrics import to_jsonable

    data = report.to_dict()
    keep = ("oa", "miou", "kappa", "per_class", "confusion_matrix", "change", "counted_pixels")
    summary = {k: data[k] for k in keep if k in data}
    summary["class_names"] = list(names)
    return to_jsonable(summary)


def verdict(assessment: Mapping[str, Any], task_name: str) -> str:
    """One plain sentence: how good the map is on unseen pixels, and against the baseline."""
    task = get_task(task_name)
    metric, net = task.headline(assessment.get("network") or {})
    if net is None:
        return "Not assessed."
    chips = assessment.get("validation_chips", 0)
    pixels = (assessment.get("network") or {}).get("counted_pixels")
    counted = f" ({pixels} labelled pixels)" if isinstance(pixels, int) else ""
    text = f"On {chips} validation chips{counted} the network scores {metric} {net:.3f}"
    if isinstance(pixels, int) and pixels < FEW_PIXELS:
        text = f"Few validation pixels, so the scores are rough. {text}"
    base = assessment.get("baseline") or {}
    _, base_score = task.headline(base)
    if base_score is None:
        note = base.get("note", "")
        return text + (f"; no baseline ({note})." if note else ".")
    if net > base_score + 0.01:
        return text + f", better than the {base['name']} ({base_score:.3f}) on the same pixels."
    if net < base_score - 0.01:
        return (
            text
            + f", worse than the {base['name']} ({base_score:.3f}) on the same pixels: label more "
            "areas, train longer, or use the baseline's map."
        )
    return text + f", about the same as the {base['name']} ({base_score:.3f})."
