"""A training session as plain data: what the Train tab, Processing and the CLI ask for.

:class:`TrainRequest` travels to the worker as JSON (``"kind": "train"``); the class table of
its labels (:func:`label_classes`) is also what the Train tab shows before a run. No torch here:
QGIS's own Python imports this module whether or not it has torch.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping, Optional

from ..models.specs import ClassSpec
from .errors import DatasetError, RequestError
from .label_classes import LabelClasses, colour_for, parse_colour, polygon_classes, raster_classes
from .requests import RasterSource
from .tasks import get_task
from .vector_labels import VECTOR_EXTENSIONS, open_class_layer

__all__ = [
    "MIN_STEPS",
    "TrainRequest",
    "default_threads",
    "label_classes",
    "raster_values",
    "repeats_for",
    "train_request_from_dict",
    "vector_values",
]

#: Optimiser steps a session makes at least: a few labelled polygons give a handful of chips,
#: and an epoch of them is one or two steps; each epoch then shows every chip several times,
#: each time augmented anew.
MIN_STEPS = 300


def repeats_for(chips: int, batch: int, epochs: int) -> int:
    """How many times an epoch shows each training chip, for at least :data:`MIN_STEPS`."""
    steps = max(1, chips // max(2, batch)) * epochs
    return max(1, -(-MIN_STEPS // steps))


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
        balance: Weight the loss by class, rarer classes more (the square root of the inverse
            frequency of the training chips' labelled pixels, between 0.2 and 5); on by
            default, as measured in docs/training.md §6.
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
    balance: bool = True
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
    """The class field's value of every feature of a vector file's first layer.

    Raises:
        DatasetError: the file cannot be read or has no such field.
    """
    _ds, layer = open_class_layer(path, field_name)
    return [feature.GetField(field_name) for feature in layer]


def raster_values(path: str) -> tuple[list[int], list[str]]:
    """The distinct values of a label raster (sampled) and its category names."""
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
    is_vector = Path(request.labels).suffix.lower() in VECTOR_EXTENSIONS
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
    found, names = raster_values(request.labels)
    return raster_classes(found, names)


def _colour(value: Any, name: str, index: int) -> tuple[int, int, int]:
    return parse_colour(value) if value not in (None, "") else colour_for(name, index)
