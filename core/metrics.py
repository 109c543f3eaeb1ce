"""Accuracy metrics from an accumulated confusion matrix, and the change visualisation.

Everything here derives from one confusion matrix accumulated over batches (rows: reference
class, columns: predicted class), so a metric of a whole validation set is exact whatever the
batch size. The definitions follow the two papers (spec/NETWORKS.md: AMM-FuseNet reports overall
accuracy, mean IoU, per-class IoU, F1 and frequency-weighted accuracy; AMFNet reports the change
class precision, recall, F1, IoU, plus OA and kappa).

Undefined values (a class that is neither in the reference nor predicted, a precision without
any prediction) are ``nan`` and left out of the means; :func:`to_jsonable` turns them into
``None`` for reports.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np

from ..models.errors import LandFuseError

logger = logging.getLogger(__name__)

ArrayLike = Any  # numpy array or torch tensor (kept loose: torch is optional here)

#: Colours of the AMFNet paper's change visualisation (seed README, NETWORKS.md §3).
CHANGE_TRUE_POSITIVE = (255, 255, 255)
CHANGE_FALSE_POSITIVE = (255, 0, 0)
CHANGE_FALSE_NEGATIVE = (0, 255, 0)
CHANGE_TRUE_NEGATIVE = (0, 0, 0)
#: Pixels without a reference label (not part of the paper's figure, which has none).
CHANGE_IGNORED = (128, 128, 128)


class MetricsInputError(LandFuseError, ValueError):
    """A prediction or reference handed to the metrics cannot be compared as given."""


def _to_numpy(values: ArrayLike) -> np.ndarray:
    """Return ``values`` as a numpy array (torch tensors are detached and moved to the CPU)."""
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    return np.asarray(values)


class ConfusionMatrix:
    """A confusion matrix accumulated over batches, with an ignore value.

    Rows are the reference classes, columns the predicted classes; ``matrix[i, j]`` counts the
    pixels of reference class ``i`` predicted as ``j``. Pixels whose reference or prediction
    equals ``ignore_index`` are skipped (a reference without label, or a class map's nodata).

    Args:
        num_classes: Number of classes; valid class values are ``0 .. num_classes - 1``.
        ignore_index: Value that marks pixels to leave out, or None to accept none.

    Raises:
        MetricsInputError: ``num_classes`` is below 1.
    """

    def __init__(self, num_classes: int, ignore_index: Optional[int] = 255) -> None:
        if num_classes < 1:
            raise MetricsInputError(
                f"A confusion matrix needs at least one class, got num_classes={num_classes}."
            )
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.matrix = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)
        self.ignored = 0

    def reset(self) -> None:
        """Clear the counts."""
        self.matrix[:] = 0
        self.ignored = 0

    def update(self, prediction: ArrayLike, reference: ArrayLike) -> None:
        """Add one batch (or one map) of predicted and reference class values.

        Args:
            prediction: Predicted class values, any shape (numpy array or torch tensor).
            reference: Reference class values, same shape as ``prediction``.

        Raises:
            MetricsInputError: The shapes differ, or a value is neither a class nor the ignore
                value.
        """
        pred = _to_numpy(prediction)
        ref = _to_numpy(reference)
        if pred.shape != ref.shape:
            raise MetricsInputError(
                f"Prediction shape {pred.shape} differs from reference shape {ref.shape}; "
                "compare maps on the same grid."
            )
        pred = pred.reshape(-1).astype(np.int64, copy=False)
        ref = ref.reshape(-1).astype(np.int64, copy=False)
        keep = np.ones(pred.shape, dtype=bool)
        if self.ignore_index is not None:
            keep = (pred != self.ignore_index) & (ref != self.ignore_index)
        self.ignored += int(keep.size - np.count_nonzero(keep))
        pred = pred[keep]
        ref = ref[keep]
        for name, values in (("reference", ref), ("prediction", pred)):
            bad = (values < 0) | (values >= self.num_classes)
            if np.any(bad):
                found = np.unique(values[bad])[:10].tolist()
                raise MetricsInputError(
                    f"The {name} holds values {found} outside the classes 0..{self.num_classes - 1}"
                    f" (ignore value {self.ignore_index}); check the class table or remap labels."
                )
        counts = np.bincount(ref * self.num_classes + pred, minlength=self.num_classes**2)
        self.matrix += counts.reshape(self.num_classes, self.num_classes)

    def merge(self, other: ConfusionMatrix) -> None:
        """Add the counts of another matrix of the same size (e.g. from another process).

        Raises:
            MetricsInputError: The matrices have different sizes.
        """
        if other.num_classes != self.num_classes:
            raise MetricsInputError(
                f"Cannot merge a {other.num_classes}-class matrix into a "
                f"{self.num_classes}-class one."
            )
        self.matrix += other.matrix
        self.ignored += other.ignored

    @property
    def total(self) -> int:
        """Number of counted (not ignored) pixels."""
        return int(self.matrix.sum())


def _divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """Element-wise ratio with ``nan`` where the denominator is zero."""
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.asarray(denominator, dtype=np.float64)
    out = np.full(np.broadcast(numerator, denominator).shape, np.nan, dtype=np.float64)
    np.divide(numerator, denominator, out=out, where=denominator != 0)
    return out


def _as_matrix(cm: Union[ConfusionMatrix, np.ndarray]) -> np.ndarray:
    matrix = cm.matrix if isinstance(cm, ConfusionMatrix) else np.asarray(cm)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise MetricsInputError(f"A confusion matrix must be square, got shape {matrix.shape}.")
    return matrix.astype(np.float64)


def overall_accuracy(cm: Union[ConfusionMatrix, np.ndarray]) -> float:
    """Share of counted pixels on the diagonal (``nan`` for an empty matrix)."""
    m = _as_matrix(cm)
    return float(_divide(np.trace(m), m.sum()))


def cohen_kappa(cm: Union[ConfusionMatrix, np.ndarray]) -> float:
    """Cohen's kappa: agreement beyond chance, ``(p_o - p_e) / (1 - p_e)``.

    ``nan`` when the matrix is empty or chance agreement is 1 (a single class everywhere).
    """
    m = _as_matrix(cm)
    total = m.sum()
    if total == 0:
        return math.nan
    p_o = np.trace(m) / total
    p_e = float(np.sum(m.sum(axis=0) * m.sum(axis=1))) / total**2
    return float(_divide(p_o - p_e, 1.0 - p_e))


def per_class_precision(cm: Union[ConfusionMatrix, np.ndarray]) -> np.ndarray:
    """Precision (user's accuracy) per class: ``TP / predicted``."""
    m = _as_matrix(cm)
    return _divide(np.diag(m), m.sum(axis=0))


def per_class_recall(cm: Union[ConfusionMatrix, np.ndarray]) -> np.ndarray:
    """Recall (producer's accuracy) per class: ``TP / reference``."""
    m = _as_matrix(cm)
    return _divide(np.diag(m), m.sum(axis=1))


def per_class_f1(cm: Union[ConfusionMatrix, np.ndarray]) -> np.ndarray:
    """F1 per class: ``2 TP / (reference + predicted)``."""
    m = _as_matrix(cm)
    return _divide(2.0 * np.diag(m), m.sum(axis=0) + m.sum(axis=1))


def per_class_iou(cm: Union[ConfusionMatrix, np.ndarray]) -> np.ndarray:
    """Intersection over union per class: ``TP / (reference + predicted - TP)``."""
    m = _as_matrix(cm)
    tp = np.diag(m)
    return _divide(tp, m.sum(axis=0) + m.sum(axis=1) - tp)


def _nanmean(values: np.ndarray) -> float:
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else math.nan


def mean_iou(cm: Union[ConfusionMatrix, np.ndarray]) -> float:
    """Mean of the per-class IoU over the classes present in the reference or the prediction."""
    return _nanmean(per_class_iou(cm))


def mean_accuracy(cm: Union[ConfusionMatrix, np.ndarray]) -> float:
    """Mean of the per-class recall over the classes present in the reference."""
    return _nanmean(per_class_recall(cm))


def frequency_weighted_iou(cm: Union[ConfusionMatrix, np.ndarray]) -> float:
    """Per-class IoU weighted by each class's share of the reference pixels.

    This is the quantity the AMM-FuseNet code reports as "FreqW Acc" (its stream metrics sum
    ``freq * IoU`` over the classes with reference pixels); the frequency-weighted mean of the
    per-class recall would simply equal the overall accuracy.
    """
    m = _as_matrix(cm)
    total = m.sum()
    if total == 0:
        return math.nan
    freq = m.sum(axis=1) / total
    iou = per_class_iou(m)
    present = freq > 0
    return float(np.sum(freq[present] * iou[present]))


@dataclass(frozen=True)
class ChangeMetrics:
    """Scores of the change class of a binary change map (AMFNet paper, NETWORKS.md §3)."""

    precision: float
    recall: float
    f1: float
    iou: float
    true_positive: int
    false_positive: int
    false_negative: int
    true_negative: int


def change_metrics(cm: Union[ConfusionMatrix, np.ndarray], change_class: int = 1) -> ChangeMetrics:
    """Precision, recall, F1 and IoU of the change class, all others counted as no change.

    Args:
        cm: Confusion matrix (rows reference, columns prediction).
        change_class: Index of the change class.

    Returns:
        The change-class scores and the four pixel counts.

    Raises:
        MetricsInputError: ``change_class`` is not a class of the matrix.
    """
    m = _as_matrix(cm)
    if not 0 <= change_class < m.shape[0]:
        raise MetricsInputError(
            f"change_class {change_class} is not a class of a {m.shape[0]}-class matrix."
        )
    tp = m[change_class, change_class]
    fp = m[:, change_class].sum() - tp
    fn = m[change_class, :].sum() - tp
    tn = m.sum() - tp - fp - fn
    return ChangeMetrics(
        precision=float(_divide(tp, tp + fp)),
        recall=float(_divide(tp, tp + fn)),
        f1=float(_divide(2 * tp, 2 * tp + fp + fn)),
        iou=float(_divide(tp, tp + fp + fn)),
        true_positive=int(tp),
        false_positive=int(fp),
        false_negative=int(fn),
        true_negative=int(tn),
    )


@dataclass(frozen=True)
class AccuracyReport:
    """All the scores of one confusion matrix, ready for a table, a log or a JSON report.

    Attributes:
        class_names: One name per class (index order).
        confusion_matrix: Counts, rows reference, columns prediction.
        overall_accuracy, kappa, mean_iou, mean_accuracy, frequency_weighted_iou: Summary scores.
        iou, precision, recall, f1: Per-class scores (``nan`` where undefined).
        ignored_pixels: Pixels left out (no reference label or no prediction).
        change: Change-class scores when the report is for a change map, else None.
    """

    class_names: tuple[str, ...]
    confusion_matrix: np.ndarray
    overall_accuracy: float
    kappa: float
    mean_iou: float
    mean_accuracy: float
    frequency_weighted_iou: float
    iou: tuple[float, ...]
    precision: tuple[float, ...]
    recall: tuple[float, ...]
    f1: tuple[float, ...]
    ignored_pixels: int = 0
    change: Optional[ChangeMetrics] = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def scalars(self) -> dict[str, float]:
        """The summary scores as a flat mapping (keys used in training logs and early stopping).

        Keys: ``oa``, ``kappa``, ``miou``, ``mean_accuracy``, ``fw_iou`` and, for change maps,
        ``change_precision``, ``change_recall``, ``change_f1``, ``change_iou``.
        """
        out = {
            "oa": self.overall_accuracy,
            "kappa": self.kappa,
            "miou": self.mean_iou,
            "mean_accuracy": self.mean_accuracy,
            "fw_iou": self.frequency_weighted_iou,
        }
        if self.change is not None:
            out.update(
                change_precision=self.change.precision,
                change_recall=self.change.recall,
                change_f1=self.change.f1,
                change_iou=self.change.iou,
            )
        return out

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary (``nan`` becomes None)."""
        per_class = [
            {
                "index": i,
                "name": name,
                "iou": self.iou[i],
                "precision": self.precision[i],
                "recall": self.recall[i],
                "f1": self.f1[i],
                "reference_pixels": int(self.confusion_matrix[i, :].sum()),
                "predicted_pixels": int(self.confusion_matrix[:, i].sum()),
            }
            for i, name in enumerate(self.class_names)
        ]
        out: dict[str, Any] = {
            **self.scalars(),
            "ignored_pixels": self.ignored_pixels,
            "counted_pixels": int(self.confusion_matrix.sum()),
            "per_class": per_class,
            "confusion_matrix": self.confusion_matrix.tolist(),
            "confusion_matrix_axes": "rows: reference, columns: prediction",
        }
        if self.change is not None:
            out["change"] = {
                "precision": self.change.precision,
                "recall": self.change.recall,
                "f1": self.change.f1,
                "iou": self.change.iou,
                "true_positive": self.change.true_positive,
                "false_positive": self.change.false_positive,
                "false_negative": self.change.false_negative,
                "true_negative": self.change.true_negative,
            }
        out.update(self.extra)
        return to_jsonable(out)


def accuracy_report(
    cm: Union[ConfusionMatrix, np.ndarray],
    class_names: Optional[Sequence[str]] = None,
    change_class: Optional[int] = None,
) -> AccuracyReport:
    """Compute every score of a confusion matrix.

    Args:
        cm: The accumulated matrix (or a square count array).
        class_names: Names in class order; default ``class_0``, ``class_1``...
        change_class: Index of the change class for a change map (adds the change scores).

    Returns:
        The report.

    Raises:
        MetricsInputError: The names do not match the matrix size.
    """
    m = _as_matrix(cm)
    n = m.shape[0]
    names = tuple(class_names) if class_names is not None else tuple(f"class_{i}" for i in range(n))
    if len(names) != n:
        raise MetricsInputError(f"{len(names)} class names given for a {n}-class matrix.")
    return AccuracyReport(
        class_names=names,
        confusion_matrix=m.astype(np.int64),
        overall_accuracy=overall_accuracy(m),
        kappa=cohen_kappa(m),
        mean_iou=mean_iou(m),
        mean_accuracy=mean_accuracy(m),
        frequency_weighted_iou=frequency_weighted_iou(m),
        iou=tuple(float(v) for v in per_class_iou(m)),
        precision=tuple(float(v) for v in per_class_precision(m)),
        recall=tuple(float(v) for v in per_class_recall(m)),
        f1=tuple(float(v) for v in per_class_f1(m)),
        ignored_pixels=cm.ignored if isinstance(cm, ConfusionMatrix) else 0,
        change=change_metrics(m, change_class) if change_class is not None else None,
    )


def to_jsonable(value: Any) -> Any:
    """Recursively convert numpy values to Python ones and ``nan``/``inf`` to None."""
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    return value


def write_report_json(report: AccuracyReport, path: Union[str, Path], **extra: Any) -> Path:
    """Write a report (plus any extra fields, e.g. input files) as JSON.

    Returns:
        The path written.
    """
    path = Path(path)
    data = report.to_dict()
    data.update(to_jsonable(extra))
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")
    return path


def write_confusion_csv(report: AccuracyReport, path: Union[str, Path]) -> Path:
    """Write the confusion matrix as a CSV table with class names, totals and per-class scores.

    Rows are reference classes, columns predicted classes; the last columns hold the row total,
    recall (producer's accuracy), IoU and F1, and the last row the column totals and precision
    (user's accuracy).

    Returns:
        The path written.
    """
    path = Path(path)
    m = report.confusion_matrix

    def fmt(v: float) -> str:
        return "" if not math.isfinite(v) else f"{v:.6f}"

    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["reference \\ prediction", *report.class_names, "total", "recall", "iou", "f1"]
        )
        for i, name in enumerate(report.class_names):
            writer.writerow(
                [
                    name,
                    *(int(v) for v in m[i]),
                    int(m[i].sum()),
                    fmt(report.recall[i]),
                    fmt(report.iou[i]),
                    fmt(report.f1[i]),
                ]
            )
        writer.writerow(["total", *(int(v) for v in m.sum(axis=0)), int(m.sum()), "", "", ""])
        writer.writerow(["precision", *(fmt(v) for v in report.precision), "", "", "", ""])
    return path


def change_visualisation(
    prediction: ArrayLike,
    reference: ArrayLike,
    change_class: int = 1,
    ignore_index: Optional[int] = 255,
) -> np.ndarray:
    """The AMFNet paper's change figure: TP white, FP red, FN green, TN black.

    Args:
        prediction: Predicted class map ``[H, W]``.
        reference: Reference class map ``[H, W]``.
        change_class: Value of the change class in both maps (others count as no change).
        ignore_index: Reference or prediction value drawn grey (no label / nodata), or None.

    Returns:
        ``uint8`` array ``[H, W, 3]`` (RGB).

    Raises:
        MetricsInputError: The maps are not 2-D arrays of the same shape.
    """
    pred = _to_numpy(prediction)
    ref = _to_numpy(reference)
    if pred.shape != ref.shape or pred.ndim != 2:
        raise MetricsInputError(
            f"The change visualisation needs two 2-D maps of the same shape, got {pred.shape} "
            f"and {ref.shape}."
        )
    p = pred == change_class
    r = ref == change_class
    out = np.zeros((*pred.shape, 3), dtype=np.uint8)
    out[p & r] = CHANGE_TRUE_POSITIVE
    out[p & ~r] = CHANGE_FALSE_POSITIVE
    out[~p & r] = CHANGE_FALSE_NEGATIVE
    out[~p & ~r] = CHANGE_TRUE_NEGATIVE
    if ignore_index is not None:
        out[(pred == ignore_index) | (ref == ignore_index)] = CHANGE_IGNORED
    return out


def _category_names(path: str) -> Optional[list[str]]:
    """Class names stored in a class map (GDAL category names, as the engine writes them)."""
    try:
        from osgeo import gdal
    except ImportError:  # pragma: no cover - GDAL's Python bindings come with rasterio on Debian
        return None
    dataset = gdal.Open(str(path))
    if dataset is None:
        return None
    names = dataset.GetRasterBand(1).GetCategoryNames()
    return [str(n) for n in names] if names else None


def change_label_map(path: Union[str, Path]) -> Optional[dict[int, int]]:
    """How to read a reference change mask: 0/255 (LEVIR-CD, OSCD) means 0 no change, 255
    change; 0/1 masks are used as they are.

    Args:
        path: The reference raster.

    Returns:
        ``{0: 0, 255: 1}`` for a 0/255 mask, else None.

    Raises:
        InputFileError: The file cannot be read (missing, damaged).
    """
    import rasterio

    from .integrity import read_failure
    from .raster import READ_ERRORS, inspect_raster

    info = inspect_raster(str(path))
    step = max(1, max(info.width, info.height) // 512)
    shape = (max(1, info.height // step), max(1, info.width // step))
    try:
        with rasterio.open(str(path)) as src:
            sample = src.read(1, out_shape=shape)
    except READ_ERRORS as error:
        from rasterio.windows import Window

        raise read_failure(str(path), Window(0, 0, info.width, info.height), error) from None
    nodata = info.nodata
    values = set(np.unique(sample).tolist()) - ({nodata} if nodata is not None else set())
    if values and values <= {0, 255}:
        return {0: 0, 255: 1}
    return None


def assess_class_map(
    prediction: Union[str, Path],
    reference: Union[str, Path],
    label_field: Optional[str] = None,
    label_map: Optional[Mapping[Any, int]] = None,
    class_names: Optional[Sequence[str]] = None,
    ignore_index: int = 255,
    change_class: Optional[int] = None,
    visualisation: Optional[Union[str, Path]] = None,
    block_rows: int = 1024,
) -> AccuracyReport:
    """Assess a class map against a reference raster or labelled polygons.

    The reference is read on the class map's grid (nearest for a raster, whatever its CRS or
    pixel size; polygons are burnt onto it), block of rows by block of rows, so the memory use
    does not grow with the map. Pixels without reference label, and the map's nodata (255, or
    the file's nodata), are left out.

    Args:
        prediction: The class map (band 1), e.g. ``<name>_classes.tif`` from the engine.
        reference: A reference raster, or a vector file of labelled polygons (``label_field``).
        label_field: The polygons' class attribute.
        label_map: Reference value → class index (``ignore_index`` drops a value).
        class_names: Names in class order; default the map's category names, else ``class_N``
            for every value found.
        ignore_index: Value meaning "no label / no data".
        change_class: Index of the change class for a change map (adds the change scores).
        visualisation: Also write the AMFNet paper's red/green visualisation of a change map
            here (RGB GeoTIFF on the map's grid; needs ``change_class``).
        block_rows: Rows read at a time.

    Returns:
        The accuracy report; ``extra`` records the files.

    Raises:
        MetricsInputError: A value is outside the class table, or a visualisation was asked
            for without a change class.
        InputError: A file cannot be read or aligned (the engine's errors).
    """
    import rasterio
    from rasterio.windows import Window

    from .datasets import VECTOR_EXTENSIONS, read_label_on_grid
    from .integrity import read_failure
    from .protection import ProtectedFiles, check_destinations
    from .raster import READ_ERRORS, inspect_raster

    if visualisation is not None and change_class is None:
        raise MetricsInputError("The change visualisation needs the change class (e.g. 1).")
    if visualisation is not None:
        protected = ProtectedFiles().add_raster(str(prediction), f"the map {prediction}")
        if Path(reference).suffix.lower() in VECTOR_EXTENSIONS:
            protected.add_vector(str(reference), f"the reference {reference}")
        else:
            protected.add_raster(str(reference), f"the reference {reference}")
        check_destinations({"the change visualisation": str(visualisation)}, protected)
    info = inspect_raster(str(prediction))
    grid = info.grid
    pixel_grid = not info.georeferenced
    names = list(class_names) if class_names is not None else _category_names(str(prediction))
    size = len(names) if names else 256
    cm = ConfusionMatrix(size, ignore_index=ignore_index)
    nodata = info.nodata
    writer = None
    staged = (
        Path(visualisation).with_name(f".{Path(visualisation).name}.landfuse-partial")
        if visualisation is not None
        else None
    )
    done = False
    try:
        if staged is not None:
            profile = {
                "driver": "GTiff",
                "width": grid.width,
                "height": grid.height,
                "count": 3,
                "dtype": "uint8",
                "tiled": True,
                "compress": "deflate",
                "photometric": "RGB",
            }
            if not pixel_grid:
                profile.update(crs=grid.crs, transform=grid.transform)
            writer = rasterio.open(str(staged), "w", **profile)
        # Plain images (no georeferencing) are compared pixel for pixel, whole.
        whole = (
            read_label_on_grid(str(reference), grid, label_field, label_map, ignore_index, True)
            if pixel_grid
            else None
        )
        with rasterio.open(str(prediction)) as src:
            for row in range(0, grid.height, block_rows):
                rows = min(block_rows, grid.height - row)
                window = Window(0, row, grid.width, rows)
                try:
                    pred = src.read(1, window=window).astype(np.int64)
                except READ_ERRORS as error:
                    raise read_failure(str(prediction), window, error) from None
                if nodata is not None and nodata != ignore_index:
                    pred[pred == int(nodata)] = ignore_index
                if whole is not None:
                    ref = whole[row : row + rows]
                else:
                    ref = read_label_on_grid(
                        str(reference), grid.window_grid(window), label_field, label_map,
                        ignore_index,
                    )  # fmt: skip
                cm.update(pred, ref)
                if writer is not None and change_class is not None:
                    rgb = change_visualisation(pred, ref, change_class, ignore_index)
                    writer.write(np.moveaxis(rgb, -1, 0), window=window)
        done = True
    finally:
        if writer is not None:
            writer.close()
        if staged is not None and visualisation is not None:
            if done:
                os.replace(staged, visualisation)
            else:
                staged.unlink(missing_ok=True)  # nothing half-written under the user's name
    matrix = cm.matrix
    if not names:
        used = np.flatnonzero(matrix.sum(axis=0) + matrix.sum(axis=1))
        n = int(used.max()) + 1 if used.size else 1
        if change_class is not None:
            n = max(n, change_class + 1)
        matrix = matrix[:n, :n]
        names = [f"class_{i}" for i in range(n)]
    report = accuracy_report(matrix, names, change_class)
    return dataclasses.replace(
        report,
        ignored_pixels=cm.ignored,
        extra={
            "prediction": str(prediction),
            "reference": str(reference),
            "label_field": label_field,
            "visualisation": str(visualisation) if visualisation is not None else None,
        },
    )
