"""Scores of a confusion matrix: OA, kappa, per-class precision/recall/F1/IoU, their means,
and the change-class scores of a binary change map.

Undefined values are ``nan`` and left out of the means.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Union

import numpy as np

from .base import ConfusionMatrix, MetricsInputError


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
