"""From the user's layers and labels to weights and an honest assessment: one training session.

The dock's Train tab, Processing and the command line describe a session as a
:class:`TrainRequest` (plain data, JSON in the worker protocol) and :func:`run_session` runs it:

1. the labels become a class table (:mod:`.labels`: the values of a polygon field, a known
   product legend, or the names and colours the user gave) and a label mapping;
2. chips are cut from the inputs as the engine aligns them; without validation labels of their
   own, :func:`~.baselines.spatial_split` keeps whole chips apart for validation;
3. :func:`~landfuse.core.training.train` trains (the weights of the best validation epoch);
4. the weights are scored on the validation pixels, with the classical baseline of the task on
   exactly those pixels (a per-pixel random forest fitted on the training pixels for land
   cover, change-vector analysis + Otsu for change), and the verdict says which is better.

The outputs: the weights to map with (``model.pt`` and its sidecar) at the top of the output
folder, ``assessment.json`` and ``confusion_matrix.csv`` (class names), the log and curves, and
the resumable checkpoint under ``checkpoints/`` (never confused with the weights).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

from ...models.registry import get_model_spec
from ...models.specs import ClassSpec
from ..errors import DatasetError, RequestError
from ..requests import RasterSource
from ..tasks import get_task
from .labels import LabelClasses, colour_for, parse_colour, polygon_classes, raster_classes

logger = logging.getLogger(__name__)

__all__ = [
    "TrainRequest",
    "default_threads",
    "label_classes",
    "run_session",
    "train_request_from_dict",
]


def default_threads() -> int:
    """Torch threads when the user gives none: half the cores (at least 1, at most 8), since
    all the cores of a busy machine run many times slower than fewer."""
    return max(1, min(8, (os.cpu_count() or 2) // 2))


@dataclass(frozen=True)
class TrainRequest:
    """One training session (what the Train tab, Processing or the CLI asked for).

    Attributes:
        task: A task name (``landcover``, ``change``).
        model: Registry model to train.
        inputs: Slot key (``s2``, ``s1``, ``dem``, ``before``…) → its raster sources.
        labels: A label raster, or a vector file of labelled polygons (then ``label_field``).
        output_dir: Folder of the weights, assessment, log and checkpoints.
        label_field: The polygons' class field (text or numbers).
        validation: Validation polygons or raster of their own (same classes); None: a spatial
            split of the labels keeps ``holdout`` of them apart.
        holdout: Share of every class's labelled pixels kept for validation.
        classes: The class table: ``{"value": label value, "name": ..., "color": ...}`` per
            class (colour as ``#rrggbb``, ``r,g,b`` or ``[r, g, b]``); empty: from the labels.
        epochs, batch, chip, learning_rate, encoder: The recipe's values (0 / "": defaults).
        device: ``auto``, ``cpu``, ``cuda``, ``mps``.
        threads: Torch CPU threads (0: :func:`default_threads`).
        seed: Initialisation, split and sampling seed.
        finetune_from: Weights to continue from (e.g. the last session's, to iterate).
        init_encoders: A ResNet state_dict for the encoders (e.g. ImageNet weights).
        label_map: Label value → class index (255: not used), instead of the values' order.
        baseline: Fit and score the classical baseline.
    """

    task: str
    model: str
    inputs: Mapping[str, tuple[RasterSource, ...]]
    labels: str
    output_dir: str
    label_field: Optional[str] = None
    validation: Optional[str] = None
    holdout: float = 0.3
    classes: tuple[Mapping[str, Any], ...] = ()
    epochs: int = 20
    batch: int = 4
    chip: int = 64
    learning_rate: float = 0.0
    encoder: str = "resnet18"
    device: str = "auto"
    threads: int = 0
    seed: int = 0
    finetune_from: Optional[str] = None
    init_encoders: Optional[str] = None
    label_map: Optional[Mapping[Any, int]] = None
    baseline: bool = True
    kind: str = field(default="train", init=False)

    def __post_init__(self) -> None:
        if not self.labels:
            raise RequestError("Give the labels: labelled polygons or a label raster.")
        if not 0.0 <= self.holdout < 0.9:
            raise RequestError(f"The validation share must be in [0, 0.9), got {self.holdout}.")
        if self.epochs < 1 or self.batch < 2 or self.chip < 32 or self.chip % 32:
            raise RequestError(
                "Epochs must be ≥ 1, the batch ≥ 2 and the chip size a multiple of 32 (≥ 32)."
            )
        if self.threads < 0:
            raise RequestError("Threads must be ≥ 0 (0: automatic).")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data (:func:`train_request_from_dict` reverses it)."""
        data = asdict(self)
        data["inputs"] = {k: [asdict(s) for s in v] for k, v in self.inputs.items()}
        data["classes"] = [dict(c) for c in self.classes]
        # JSON keys are text: the pairs keep numbers as numbers.
        data["label_map"] = [[k, v] for k, v in self.label_map.items()] if self.label_map else None
        return data


def train_request_from_dict(data: Mapping[str, Any]) -> TrainRequest:
    """The request of :meth:`TrainRequest.to_dict`.

    Raises:
        RequestError: for unknown or missing fields.
    """
    body = {k: v for k, v in dict(data).items() if k != "kind"}
    known = {f.name for f in fields(TrainRequest) if f.init}
    unknown = sorted(set(body) - known)
    if unknown:
        raise RequestError(f"Unknown fields of a training request: {', '.join(unknown)}.")
    try:
        body["inputs"] = {
            str(k): tuple(_source(item) for item in v)
            for k, v in dict(body.get("inputs") or {}).items()
        }
        body["classes"] = tuple(dict(c) for c in body.get("classes") or ())
        pairs = body.get("label_map")
        if isinstance(pairs, list):
            body["label_map"] = {k: int(v) for k, v in pairs}
        return TrainRequest(**body)
    except TypeError as error:
        raise RequestError(f"The training request is incomplete: {error}.") from None


def _source(item: Any) -> RasterSource:
    if isinstance(item, Mapping):
        return RasterSource(
            str(item.get("path", "")), tuple(item.get("bands") or ()), item.get("nodata")
        )
    return RasterSource(str(item))


def vector_values(path: str, field_name: str) -> list[Any]:
    from osgeo import ogr

    ds = ogr.Open(str(path))
    if ds is None or ds.GetLayerCount() == 0:
        raise DatasetError(f"Cannot read polygons from {path}; give a vector file with a layer.")
    layer = ds.GetLayer(0)
    definition = layer.GetLayerDefn()
    names = [definition.GetFieldDefn(i).GetName() for i in range(definition.GetFieldCount())]
    if field_name not in names:
        raise DatasetError(
            f"The polygons have no field '{field_name}'; choose one of {', '.join(names)}."
        )
    return [feature.GetField(field_name) for feature in layer]


def _raster_values(path: str) -> tuple[list[int], list[str]]:
    import numpy as np
    import rasterio

    with rasterio.open(path) as src:
        step = max(1, max(src.width, src.height) // 1024)  # sampled: enough to see every class
        data = src.read(1, out_shape=(max(1, src.height // step), max(1, src.width // step)))
        nodata = src.nodata
    from osgeo import gdal

    ds = gdal.Open(path)
    names = list(ds.GetRasterBand(1).GetCategoryNames() or []) if ds is not None else []
    values = np.unique(data)
    if nodata is not None:
        values = values[values != nodata]
    return [int(v) for v in values], names


def label_classes(request: TrainRequest, spec: Any) -> LabelClasses:
    """The class table and label mapping of a session's labels.

    A task that keeps its model's classes (change: no change, change) maps the labels onto
    them; otherwise the classes come from the request (names, colours, an explicit label
    mapping), else from the labels (:mod:`.labels`).

    Raises:
        DatasetError: labels without classes, or a malformed colour.
    """
    task = get_task(request.task)
    is_vector = Path(request.labels).suffix.lower() in VECTOR_SUFFIXES
    if is_vector and not request.label_field:
        raise DatasetError("Choose the polygons' class field.")
    values = vector_values(request.labels, request.label_field or "") if is_vector else None
    if not task.classes_from_labels:
        if request.label_map:
            mapping = dict(request.label_map)
        elif values is not None:
            mapping = task.polygon_label_map(polygon_classes(values))
        else:
            mapping = task.default_label_map(request.labels) or {0: 0, 1: 1}
        return LabelClasses(tuple(spec.classes), mapping)
    if request.label_map:
        mapping = dict(request.label_map)
        count = 1 + max((v for v in mapping.values() if v != 255), default=-1)
        names = [str(c.get("name")) for c in request.classes] or [c.name for c in spec.classes]
        if len(names) < count:
            names += [f"class {i}" for i in range(len(names), count)]
        colours = [c.get("color") for c in request.classes] + [None] * count
        table = tuple(
            ClassSpec(i, names[i], _colour(colours[i], names[i], i)) for i in range(count)
        )
        return LabelClasses(table, mapping)
    if request.classes:
        table, mapping = [], {}
        for index, entry in enumerate(request.classes):
            name = str(entry.get("name") or f"class {entry.get('value', index)}")
            table.append(ClassSpec(index, name, _colour(entry.get("color"), name, index)))
            mapping[entry.get("value", index)] = index
        for raw in values or ():  # text values as the features spell them
            if raw not in mapping and raw is not None and str(raw).strip() in mapping:
                mapping[raw] = mapping[str(raw).strip()]
        return LabelClasses(tuple(table), mapping)
    if values is not None:
        return polygon_classes(values)
    found, names = _raster_values(request.labels)
    return raster_classes(found, names)


def _colour(value: Any, name: str, index: int) -> tuple[int, int, int]:
    return parse_colour(value) if value not in (None, "") else colour_for(name, index)


VECTOR_SUFFIXES = {".gpkg", ".shp", ".geojson", ".json", ".kml", ".gml", ".sqlite", ".fgb"}


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
    from . import TrainingConfig, evaluate_weights, recipe_for, train
    from .baselines import ChipSubset, spatial_split

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
    out = Path(request.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    changes: dict[str, Any] = {
        "epochs": request.epochs,
        "max_iterations": None,
        "batch_size": min(request.batch, max(2, len(train_set))),
    }
    if request.learning_rate > 0:
        changes["learning_rate"] = request.learning_rate
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
    change_class = task.change_class
    assessment: dict[str, Any] = {
        "split": split,
        "train_chips": len(train_set),
        "validation_chips": len(val_set),
        "classes": [c.to_dict() for c in result.spec.classes],
        "threads": threads,
        "train_seconds": round(time.monotonic() - started, 1),
    }
    report = None
    if len(val_set):
        report = evaluate_weights(result.weights_path, val_set, device=request.device)
        if change_class is not None and report.change is None:  # scored as change too
            report = metrics.accuracy_report(report.confusion_matrix, names, change_class)
        assessment["network"] = report_summary(report, names)
        metrics.write_confusion_csv(report, out / "confusion_matrix.csv")
        if request.baseline:
            baseline = task.baseline(train_set, val_set, names, seed=request.seed, threads=threads)
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
    keep = ("oa", "miou", "kappa", "per_class", "confusion_matrix", "change")
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
    text = f"On {chips} validation chips the network scores {metric} {net:.3f}"
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


def with_classes(request: TrainRequest, classes: Sequence[Mapping[str, Any]]) -> TrainRequest:
    """The request with another class table (the Train tab's edited names and colours)."""
    return replace(request, classes=tuple(dict(c) for c in classes))
