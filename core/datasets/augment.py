"""The training view of a dataset: normalisation, joint augmentation, tensors.

:class:`JointAugmentation` flips and rotates every input and the label alike;
:class:`PreparedDataset` wraps a :class:`~landfuse.core.datasets.base.LabelledDataset` for a
DataLoader, with randomness derived from (seed, epoch, index).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch

from .base import LabelledDataset


@dataclass(frozen=True)
class JointAugmentation:
    """Random flips and 90° rotations applied identically to every input and the label.

    Both dates of a change pair and all modalities of a land-cover sample must move together,
    or the network would learn from misregistered pairs (NETWORKS.md §3: joint flips and
    rotation).

    Attributes:
        horizontal_flip: Flip left-right with probability 0.5.
        vertical_flip: Flip up-down with probability 0.5.
        rotate90: Rotate by a random multiple of 90° (only 0° or 180° for non-square chips).
    """

    horizontal_flip: bool = True
    vertical_flip: bool = True
    rotate90: bool = True

    def __call__(
        self, inputs: Sequence[np.ndarray], label: np.ndarray, rng: np.random.Generator
    ) -> tuple[list[np.ndarray], np.ndarray]:
        """Transform ``inputs`` (``[C, H, W]`` each) and ``label`` (``[H, W]``) alike.

        Returns:
            The transformed inputs and label (contiguous copies).
        """
        arrays = [*inputs, label[None]]
        # Draw every random number whatever the options so that the stream stays aligned.
        flip_h, flip_v, turns = rng.random() < 0.5, rng.random() < 0.5, int(rng.integers(4))
        if self.horizontal_flip and flip_h:
            arrays = [a[..., ::-1] for a in arrays]
        if self.vertical_flip and flip_v:
            arrays = [a[..., ::-1, :] for a in arrays]
        if self.rotate90:
            square = label.shape[0] == label.shape[1]
            k = turns if square else 2 * (turns % 2)
            if k:
                arrays = [np.rot90(a, k, axes=(-2, -1)) for a in arrays]
        arrays = [np.ascontiguousarray(a) for a in arrays]
        return arrays[:-1], arrays[-1][0]


#: ``(input_index, data [C, H, W], valid [H, W] or None) -> normalised float32 data``.
Normaliser = Callable[[int, np.ndarray, Optional[np.ndarray]], np.ndarray]


@dataclass
class PreparedDataset(torch.utils.data.Dataset):
    """A dataset ready for a DataLoader: normalised, jointly augmented, as tensors.

    Each item is ``{"inputs": [float32 tensor [C, H, W], ...], "label": int64 [H, W],
    "name": str}``. The augmentation's random numbers come from ``(seed, epoch, index)``, so
    they do not depend on worker processes, and a resumed run repeats them exactly; call
    :meth:`set_epoch` at the start of every epoch.

    Attributes:
        base: The raw dataset.
        normalise: A :data:`Normaliser` (see ``training.make_normaliser``), or None.
        augmentation: Joint augmentation, or None (validation, test).
        seed: Seed of the augmentation stream.
    """

    base: LabelledDataset
    normalise: Optional[Normaliser] = None
    augmentation: Optional[JointAugmentation] = None
    seed: int = 0
    epoch: int = field(default=0)

    def set_epoch(self, epoch: int) -> None:
        """Choose the augmentation stream of an epoch."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.base.read(index)
        inputs = sample.inputs
        if self.normalise is not None:
            # Invalid (nodata) pixels come out as 0 and are left out of per-tile statistics,
            # as in the engine (core/normalisation.py).
            inputs = [self.normalise(i, a, sample.valid) for i, a in enumerate(inputs)]
        label = sample.label
        if self.augmentation is not None:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            inputs, label = self.augmentation(inputs, label, rng)
        return {
            "inputs": [torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)) for a in inputs],
            "label": torch.from_numpy(np.ascontiguousarray(label, dtype=np.int64)),
            "name": sample.name,
        }
