"""Metrics against hand-computed confusion matrices."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch

from landfuse.core import metrics as M

# Rows: reference class, columns: predicted class (hand-made example used throughout).
HAND = np.array([[5, 1, 0], [2, 3, 1], [0, 0, 4]], dtype=np.int64)


def _pixels_from_matrix(matrix: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Reference and prediction pixel vectors that produce ``matrix``, in a shuffled order."""
    ref, pred = [], []
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            ref += [i] * int(matrix[i, j])
            pred += [j] * int(matrix[i, j])
    order = np.random.default_rng(seed).permutation(len(ref))
    return np.array(pred)[order], np.array(ref)[order]


@pytest.mark.unit
def test_confusion_matrix_accumulates_batches_and_skips_ignore() -> None:
    pred, ref = _pixels_from_matrix(HAND)
    # Ignored pixels: no reference label, and a prediction nodata, in both batches.
    pred = np.concatenate([pred, [0, 255, 2]])
    ref = np.concatenate([ref, [255, 1, 255]])
    cm = M.ConfusionMatrix(3, ignore_index=255)
    half = len(pred) // 2
    cm.update(pred[:half].reshape(1, -1), ref[:half].reshape(1, -1))
    cm.update(torch.from_numpy(pred[half:]), torch.from_numpy(ref[half:]))
    np.testing.assert_array_equal(cm.matrix, HAND)
    assert cm.ignored == 3
    assert cm.total == 16


@pytest.mark.unit
def test_scores_equal_hand_computed_values() -> None:
    report = M.accuracy_report(HAND, class_names=["a", "b", "c"])
    assert report.overall_accuracy == pytest.approx(12 / 16)
    # p_e = (6*7 + 6*4 + 4*5) / 16^2 = 86/256; kappa = (192 - 86) / (256 - 86).
    assert report.kappa == pytest.approx(106 / 170)
    np.testing.assert_allclose(report.iou, [5 / 8, 3 / 7, 4 / 5])
    np.testing.assert_allclose(report.precision, [5 / 7, 3 / 4, 4 / 5])
    np.testing.assert_allclose(report.recall, [5 / 6, 3 / 6, 4 / 4])
    np.testing.assert_allclose(report.f1, [10 / 13, 6 / 10, 8 / 9])
    assert report.mean_iou == pytest.approx((5 / 8 + 3 / 7 + 4 / 5) / 3)
    assert report.mean_accuracy == pytest.approx((5 / 6 + 1 / 2 + 1) / 3)
    assert report.frequency_weighted_iou == pytest.approx(
        6 / 16 * 5 / 8 + 6 / 16 * 3 / 7 + 4 / 16 * 4 / 5
    )
    scalars = report.scalars()
    assert scalars["miou"] == report.mean_iou and "change_f1" not in scalars


@pytest.mark.unit
def test_absent_class_is_nan_and_left_out_of_means() -> None:
    matrix = np.array([[3, 1, 0], [1, 5, 0], [0, 0, 0]])
    iou = M.per_class_iou(matrix)
    assert math.isnan(iou[2])
    assert M.mean_iou(matrix) == pytest.approx((3 / 5 + 5 / 7) / 2)
    assert math.isnan(M.cohen_kappa(np.zeros((2, 2))))
    # A single class everywhere: chance agreement is 1, kappa undefined.
    assert math.isnan(M.cohen_kappa(np.array([[4, 0], [0, 0]])))


@pytest.mark.unit
def test_change_metrics_hand_computed() -> None:
    matrix = np.array([[10, 2], [3, 5]])  # TN, FP / FN, TP
    ch = M.change_metrics(matrix, change_class=1)
    assert (ch.true_positive, ch.false_positive, ch.false_negative, ch.true_negative) == (
        5,
        2,
        3,
        10,
    )
    assert ch.precision == pytest.approx(5 / 7)
    assert ch.recall == pytest.approx(5 / 8)
    assert ch.f1 == pytest.approx(2 / 3)
    assert ch.iou == pytest.approx(0.5)
    report = M.accuracy_report(matrix, ["no change", "change"], change_class=1)
    assert report.scalars()["change_f1"] == pytest.approx(2 / 3)
    # Kappa for a 2x2: p_o = 15/20, p_e = (12*13 + 8*7)/400.
    p_e = (12 * 13 + 8 * 7) / 400
    assert report.kappa == pytest.approx((0.75 - p_e) / (1 - p_e))


@pytest.mark.unit
def test_out_of_range_values_and_shape_mismatch_raise() -> None:
    cm = M.ConfusionMatrix(2)
    with pytest.raises(M.MetricsInputError, match=r"\[3\]"):
        cm.update(np.array([0, 3]), np.array([0, 1]))
    with pytest.raises(M.MetricsInputError, match="shape"):
        cm.update(np.zeros((2, 2)), np.zeros((4,)))
    with pytest.raises(M.MetricsInputError):
        M.ConfusionMatrix(0)


@pytest.mark.unit
def test_change_visualisation_colours() -> None:
    pred = np.array([[1, 1, 0], [0, 1, 0]])
    ref = np.array([[1, 0, 1], [0, 255, 0]])
    rgb = M.change_visualisation(pred, ref, ignore_index=255)
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 3, 3)
    assert tuple(rgb[0, 0]) == (255, 255, 255)  # true positive
    assert tuple(rgb[0, 1]) == (255, 0, 0)  # false positive
    assert tuple(rgb[0, 2]) == (0, 255, 0)  # false negative
    assert tuple(rgb[1, 0]) == (0, 0, 0)  # true negative
    assert tuple(rgb[1, 1]) == M.CHANGE_IGNORED


@pytest.mark.unit
def test_report_files(tmp_path) -> None:
    matrix = np.array([[3, 1, 0], [1, 5, 0], [0, 0, 0]])
    report = M.accuracy_report(matrix, ["x", "y", "z"])
    path = M.write_report_json(report, tmp_path / "r.json", prediction="map.tif")
    data = json.loads(path.read_text())
    assert data["prediction"] == "map.tif"
    assert data["per_class"][2]["iou"] is None  # nan written as null, valid JSON
    assert data["confusion_matrix"] == matrix.tolist()
    rows = list(csv.reader(M.write_confusion_csv(report, tmp_path / "cm.csv").open()))
    assert rows[0][1:4] == ["x", "y", "z"]
    assert rows[2][:4] == ["y", "1", "5", "0"]
    assert rows[4][0] == "total" and rows[4][1:4] == ["4", "6", "0"]
