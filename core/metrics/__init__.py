"""Accuracy metrics from an accumulated confusion matrix, and the change visualisation.

Everything here derives from one confusion matrix accumulated over batches (rows: reference
class, columns: predicted class), so a metric of a whole validation set is exact whatever the
batch size. The definitions follow the two papers (spec/NETWORKS.md: AMM-FuseNet reports overall
accuracy, mean IoU, per-class IoU, F1 and frequency-weighted accuracy; AMFNet reports the change
class precision, recall, F1, IoU, plus OA and kappa).

Undefined values (a class that is neither in the reference nor predicted, a precision without
any prediction) are ``nan`` and left out of the means; :func:`to_jsonable` turns them into
``None`` for reports.

The package: ``base`` (the confusion matrix, the input error, the change colours),
``scores`` (the scores of a matrix), ``report`` (the accuracy report and its JSON/CSV files),
``assess`` (assessing map files, the change visualisation).
"""

from __future__ import annotations

import logging

from .assess import assess_class_map, change_label_map, change_visualisation
from .base import (
    CHANGE_FALSE_NEGATIVE,
    CHANGE_FALSE_POSITIVE,
    CHANGE_IGNORED,
    CHANGE_TRUE_NEGATIVE,
    CHANGE_TRUE_POSITIVE,
    ArrayLike,
    ConfusionMatrix,
    MetricsInputError,
)
from .report import (
    AccuracyReport,
    accuracy_report,
    to_jsonable,
    write_confusion_csv,
    write_report_json,
)
from .scores import (
    ChangeMetrics,
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

logger = logging.getLogger(__name__)

__all__ = [
    "CHANGE_FALSE_NEGATIVE",
    "CHANGE_FALSE_POSITIVE",
    "CHANGE_IGNORED",
    "CHANGE_TRUE_NEGATIVE",
    "CHANGE_TRUE_POSITIVE",
    "AccuracyReport",
    "ArrayLike",
    "ChangeMetrics",
    "ConfusionMatrix",
    "MetricsInputError",
    "accuracy_report",
    "assess_class_map",
    "change_label_map",
    "change_metrics",
    "change_visualisation",
    "cohen_kappa",
    "frequency_weighted_iou",
    "mean_accuracy",
    "mean_iou",
    "overall_accuracy",
    "per_class_f1",
    "per_class_iou",
    "per_class_precision",
    "per_class_recall",
    "to_jsonable",
    "write_confusion_csv",
    "write_report_json",
]
