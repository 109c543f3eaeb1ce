"""Classical baselines on exactly the network's labels, and the spatial split they share.

A trained network is worth using only where it beats what a user gets from a classical method
on the same labels, scored on pixels neither saw:

- land cover: a per-pixel random forest (scikit-learn, optional) fitted on the training chips'
  labelled pixels (each pixel once, even where chips overlap) and scored on the validation
  chips;
- change: change-vector analysis with an Otsu threshold (unsupervised: it needs no labels),
  scored on the same validation pixels.

:func:`spatial_split` keeps whole chips apart (no pixel on both sides) and sends to validation
about ``holdout`` of every class's labelled pixels, so a class is scored where it exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np

from .. import metrics
from ..datasets import LabelledDataset, RasterChipDataset, RawSample

__all__ = [
    "SKLEARN_MISSING",
    "Baseline",
    "ChipSubset",
    "balanced_weights",
    "change_vector_analysis",
    "cva_baseline",
    "fit_random_forest",
    "labelled_pixels",
    "otsu_threshold",
    "predict_forest",
    "random_forest_baseline",
    "score_maps",
    "sklearn_available",
    "spatial_split",
]

#: What is said when the random forest cannot be fitted.
SKLEARN_MISSING = (
    "The random-forest baseline needs scikit-learn, which this Python lacks: install it "
    "(Debian/Ubuntu: apt-get install python3-sklearn; elsewhere: pip install scikit-learn) to "
    "see whether the network beats it."
)


class ChipSubset(LabelledDataset):
    """Some chips of a :class:`~landfuse.core.datasets.RasterChipDataset` (a spatial split)."""

    def __init__(self, base: RasterChipDataset, indices: Sequence[int]) -> None:
        self.base = base
        self.indices = [int(i) for i in indices]
        self.ignore_index = base.ignore_index

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def names(self) -> list[str]:
        """Chip names in index order."""
        all_names = self.base.names
        return [all_names[i] for i in self.indices]

    def read(self, index: int) -> RawSample:
        """Read one chip of the subset."""
        return self.base.read(self.indices[index])


def _chip_counts(chips: RasterChipDataset, num_classes: int) -> np.ndarray:
    """Labelled pixels of each class in each chip, ``[chips, classes]`` (from the labels only)."""
    counts = np.zeros((len(chips), num_classes), np.int64)
    for i in range(len(chips)):
        scene, window = chips.chip(i)
        label = chips._labels[chips.scenes.index(scene)]
        r0, c0 = int(window.row_off), int(window.col_off)
        part = label[r0 : r0 + int(window.height), c0 : c0 + int(window.width)]
        part = part[(part >= 0) & (part < num_classes)]
        counts[i] = np.bincount(part, minlength=num_classes)[:num_classes]
    return counts


def balanced_weights(
    chips: RasterChipDataset, indices: Sequence[int], num_classes: int
) -> tuple[float, ...]:
    """Loss weights per class from the labelled pixels of some chips: the square root of the
    inverse frequency, scaled to a mean of 1 and kept within [0.2, 5] (a class absent from
    these chips gets the largest)."""
    counts = _chip_counts(chips, num_classes)[list(indices)].sum(axis=0).astype(np.float64)
    share = counts / max(1.0, counts.sum())
    raw = np.where(share > 0, 1.0 / np.sqrt(np.maximum(share, 1e-12)), np.nan)
    raw = np.where(np.isnan(raw), np.nanmax(raw) if np.isfinite(raw).any() else 1.0, raw)
    weights = np.clip(raw / raw.mean(), 0.2, 5.0)
    return tuple(round(float(w), 4) for w in weights)


def spatial_split(
    chips: RasterChipDataset, num_classes: int, holdout: float = 0.3, seed: int = 0
) -> tuple[list[int], list[int]]:
    """Split chips (cut without overlap) into training and validation by whole chips.

    Chips are visited in a seeded random order; a chip goes to validation while every class
    it holds is still under ``holdout`` of its labelled pixels there, and a class seen in one
    chip only stays in training (it cannot be both learnt and scored).

    Returns:
        ``(training chip indices, validation chip indices)``; validation may be empty when
        every chip is needed for training.
    """
    if chips.stride < chips.chip_size:
        raise ValueError("spatial_split needs chips cut without overlap (stride = chip size)")
    counts = _chip_counts(chips, num_classes)
    totals = counts.sum(axis=0)
    chips_with = (counts > 0).sum(axis=0)
    taken = np.zeros(num_classes, np.int64)
    train, val = [], []
    order = np.random.default_rng(seed).permutation(len(chips))
    for index in order.tolist():
        present = counts[index] > 0
        fits = bool(present.any()) and bool(
            np.all((taken + counts[index])[present] <= holdout * totals[present] * 1.25)
            and np.all(chips_with[present] > 1)
            and np.any(taken[present] < holdout * totals[present])
        )
        if fits:
            val.append(index)
            taken += counts[index]
        else:
            train.append(index)
    if not train:  # one chip: it must be learnt from
        train, val = val, []
    return sorted(train), sorted(val)


def labelled_pixels(dataset: LabelledDataset, ignore_index: int = 255) -> tuple[np.ndarray, ...]:
    """Every labelled pixel of a dataset once: features ``[N, bands]`` and classes ``[N]``.

    Overlapping chips of one scene share pixels; each pixel is taken once.
    """
    features, labels = [], []
    taken: dict[str, np.ndarray] = {}
    base = getattr(dataset, "base", dataset)
    indices = getattr(dataset, "indices", range(len(dataset)))
    for i, base_index in enumerate(indices):
        sample = dataset.read(i)
        keep = sample.label != ignore_index
        if isinstance(base, RasterChipDataset):
            scene, window = base.chip(base_index)
            grid = base.grid(base.scenes.index(scene))
            mask = taken.setdefault(scene.title, np.zeros((grid.height, grid.width), bool))
            r0, c0 = int(window.row_off), int(window.col_off)
            r1, c1 = r0 + int(window.height), c0 + int(window.width)
            keep &= ~mask[r0:r1, c0:c1]
            mask[r0:r1, c0:c1] |= keep
        stack = np.concatenate(sample.inputs, axis=0)
        features.append(stack[:, keep].T)
        labels.append(sample.label[keep])
    if not features:
        return np.zeros((0, 0), np.float32), np.zeros(0, np.int64)
    return np.concatenate(features).astype(np.float32), np.concatenate(labels)


def sklearn_available() -> bool:
    try:
        import sklearn.ensemble  # noqa: F401
    except ImportError:
        return False
    return True


def fit_random_forest(
    x: np.ndarray,
    y: np.ndarray,
    trees: int = 100,
    max_samples: Optional[float] = None,
    seed: int = 0,
    threads: int = 1,
) -> Any:
    """A per-pixel random forest on features ``[N, bands]`` and classes ``[N]``.

    Raises:
        ImportError: scikit-learn is missing (:data:`SKLEARN_MISSING` says what to do).
    """
    from sklearn.ensemble import RandomForestClassifier

    forest = RandomForestClassifier(
        n_estimators=trees, max_samples=max_samples, n_jobs=threads, random_state=seed
    )
    return forest.fit(x, y)


def predict_forest(forest: Any, dataset: LabelledDataset) -> list[np.ndarray]:
    """The forest's class map of every sample of a dataset (same bands as its training)."""
    maps = []
    for i in range(len(dataset)):
        sample = dataset.read(i)
        stack = np.concatenate(sample.inputs, axis=0)
        flat = np.nan_to_num(stack.reshape(stack.shape[0], -1).T)
        maps.append(forest.predict(flat).reshape(sample.label.shape).astype(np.int64))
    return maps


def score_maps(
    predictions: Sequence[np.ndarray],
    references: Sequence[np.ndarray],
    class_names: Sequence[str],
    ignore_index: int = 255,
    change_class: Optional[int] = None,
) -> metrics.AccuracyReport:
    """The accuracy report of class maps against their references (``change_class``: the
    change scores of that class, for change masks)."""
    cm = metrics.ConfusionMatrix(len(class_names), ignore_index)
    for predicted, reference in zip(predictions, references):
        cm.update(predicted, reference)
    return metrics.accuracy_report(cm, list(class_names), change_class=change_class)


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold: the cut of a histogram that maximises the between-class variance.

    Returns:
        The threshold (values above it are the upper class); the value itself when all are
        equal.
    """
    values = np.asarray(values, dtype=np.float64).ravel()
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return lo
    counts, edges = np.histogram(values, bins=bins, range=(lo, hi))
    centres = (edges[:-1] + edges[1:]) / 2
    weight_low = np.cumsum(counts)
    weight_high = weight_low[-1] - weight_low
    sum_low = np.cumsum(counts * centres)
    mean_low = sum_low / np.maximum(weight_low, 1)
    mean_high = (sum_low[-1] - sum_low) / np.maximum(weight_high, 1)
    between = weight_low * weight_high * (mean_low - mean_high) ** 2
    return float(edges[int(np.argmax(between[:-1])) + 1])


def change_vector_analysis(before: np.ndarray, after: np.ndarray) -> tuple[np.ndarray, float]:
    """Change-vector analysis with an Otsu threshold: the classical unsupervised baseline.

    Args:
        before: ``[bands, H, W]``.
        after: ``[bands, H, W]`` (same bands).

    Returns:
        ``(change mask 0/1 [H, W], threshold)``: change where the Euclidean norm of the spectral
        difference exceeds Otsu's threshold of the magnitudes.
    """
    magnitude = np.sqrt(((after.astype(np.float64) - before.astype(np.float64)) ** 2).sum(axis=0))
    threshold = otsu_threshold(magnitude)
    return (magnitude > threshold).astype(np.int64), threshold


@dataclass(frozen=True)
class Baseline:
    """A baseline's scores on the validation pixels, or why it could not run."""

    name: str
    report: Optional[metrics.AccuracyReport]
    note: str = ""


def random_forest_baseline(
    train_set: LabelledDataset,
    val_set: LabelledDataset,
    class_names: Sequence[str],
    trees: int = 100,
    seed: int = 0,
    threads: int = 1,
    max_pixels: int = 200_000,
) -> Baseline:
    """A per-pixel random forest fitted on ``train_set``'s labelled pixels, scored on
    ``val_set`` (at most ``max_pixels`` training pixels, evenly drawn, for a CPU's minutes)."""
    name = "random forest (per pixel)"
    if not sklearn_available():
        return Baseline(name, None, SKLEARN_MISSING)
    x, y = labelled_pixels(train_set, train_set.ignore_index)
    if len(y) == 0:
        return Baseline(name, None, "no labelled training pixel")
    if len(y) > max_pixels:
        keep = np.random.default_rng(seed).choice(len(y), max_pixels, replace=False)
        x, y = x[keep], y[keep]
    forest = fit_random_forest(np.nan_to_num(x), y, trees=trees, seed=seed, threads=threads)
    predicted = predict_forest(forest, val_set)
    references = [val_set.read(i).label for i in range(len(val_set))]
    report = score_maps(predicted, references, class_names, val_set.ignore_index)
    return Baseline(name, report, f"{trees} trees on {len(y)} training pixels")


def cva_baseline(val_set: LabelledDataset, class_names: Sequence[str]) -> Baseline:
    """Change-vector analysis on the validation chips, with one Otsu threshold for all their
    magnitudes (as for one scene; no labels needed)."""
    magnitudes, references = [], []
    for i in range(len(val_set)):
        sample = val_set.read(i)
        before, after = (np.nan_to_num(x.astype(np.float64)) for x in sample.inputs[:2])
        magnitudes.append(np.sqrt(((after - before) ** 2).sum(axis=0)))
        references.append(sample.label)
    if not magnitudes:
        return Baseline("change-vector analysis + Otsu", None, "no validation pixel")
    threshold = otsu_threshold(np.concatenate([m.ravel() for m in magnitudes]))
    predicted = [(m > threshold).astype(np.int64) for m in magnitudes]
    report = score_maps(predicted, references, class_names, val_set.ignore_index, change_class=1)
    return Baseline(
        "change-vector analysis + Otsu", report, f"unsupervised; threshold {threshold:.4g}"
    )
