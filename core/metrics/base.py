"""The confusion matrix every score derives from, its input error and the change colours.

:class:`ConfusionMatrix` accumulates reference/prediction counts over batches (numpy arrays or
torch tensors); :class:`MetricsInputError` is what the metrics raise for inputs that cannot be
compared; the ``CHANGE_*`` colours are those of the AMFNet paper's change figure.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from ...models.errors import MetricsInputError

ArrayLike = Any  # numpy array or torch tensor (kept loose: torch is optional here)

#: Colours of the AMFNet paper's change visualisation (seed README, NETWORKS.md §3).
CHANGE_TRUE_POSITIVE = (255, 255, 255)
CHANGE_FALSE_POSITIVE = (255, 0, 0)
CHANGE_FALSE_NEGATIVE = (0, 255, 0)
CHANGE_TRUE_NEGATIVE = (0, 0, 0)
#: Pixels without a reference label (not part of the paper's figure, which has none).
CHANGE_IGNORED = (128, 128, 128)


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
