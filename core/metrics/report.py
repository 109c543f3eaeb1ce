"""The accuracy report of one confusion matrix and the files it is written to (JSON, CSV).

:func:`accuracy_report` computes every score into an :class:`AccuracyReport`;
:func:`to_jsonable` turns numpy values and ``nan`` into JSON-ready ones.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np

from .base import ConfusionMatrix, MetricsInputError
from .scores import (
    ChangeMetrics,
    _as_matrix,
    change_metrics,
    cohen_kappa,
    frequency_weighted_iou,
    mean_accuracy,
    mean_iou,
    overall_accuracy,
    per_class_f1,
    per_class_iou,
    per_class_precision,
    per_class_recall,
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
