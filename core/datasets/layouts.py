"""The published layouts: AMM-FuseNet (files paired by stem) and LEVIR-CD (paired by name).

:func:`pair_files` pairs the raster files of several folders by name, naming every file without
a partner; :class:`AmmFuseNetDataset` and :class:`LevirCDDataset` read the samples.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence

import numpy as np

from .base import (
    RASTER_EXTENSIONS,
    DatasetError,
    DatasetPairingError,
    LabelledDataset,
    PathLike,
    RawSample,
    _hunan_label_map,
    _read_label,
    _read_raster,
    remap_labels,
)


def _check_root(root: Path) -> None:
    if not root.is_dir():
        raise DatasetError(f"The dataset root {root} does not exist or is not a folder.")


def _list_rasters(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise DatasetError(f"Folder {folder} does not exist; check the dataset root and layout.")
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in RASTER_EXTENSIONS
    )


def _index_by(files: Sequence[Path], key: Callable[[Path], str], folder: Path) -> dict[str, Path]:
    index: dict[str, Path] = {}
    for path in files:
        k = key(path)
        if k in index:
            raise DatasetPairingError(
                f"Files {index[k].name} and {path.name} in {folder} have the same name "
                f"'{k}'; keep one file per sample."
            )
        index[k] = path
    return index


def pair_files(folders: Mapping[str, Path], by: str = "stem") -> list[tuple[str, dict[str, Path]]]:
    """Pair the raster files of several folders by name.

    Args:
        folders: Role (e.g. ``"s2"``, ``"label"``) → folder.
        by: ``"stem"`` (name without extension, AMM-FuseNet layout) or ``"name"`` (full file
            name, LEVIR-CD layout).

    Returns:
        ``(key, {role: path})`` for every key found in all folders, sorted by key.

    Raises:
        DatasetPairingError: A file has no partner in another folder (every such file is named),
            or two files of one folder share a key.
        DatasetError: A folder is missing or holds no rasters.
    """
    key: Callable[[Path], str] = (lambda p: p.stem) if by == "stem" else (lambda p: p.name)
    indexes = {
        role: _index_by(_list_rasters(folder), key, folder) for role, folder in folders.items()
    }
    for role, index in indexes.items():
        if not index:
            raise DatasetError(
                f"No raster files ({', '.join(RASTER_EXTENSIONS)}) in {folders[role]}."
            )
    all_keys = sorted(set().union(*(set(i) for i in indexes.values())))
    problems = []
    for role, index in indexes.items():
        missing = [k for k in all_keys if k not in index]
        if missing:
            shown = ", ".join(missing[:20]) + (" ..." if len(missing) > 20 else "")
            problems.append(f"{len(missing)} missing in {folders[role]} ({role}): {shown}")
    if problems:
        raise DatasetPairingError(
            "Unpaired samples, every file needs a partner with the same "
            f"{'stem' if by == 'stem' else 'name'} in each folder: " + "; ".join(problems)
        )
    return [(k, {role: indexes[role][k] for role in folders}) for k in all_keys]


class AmmFuseNetDataset(LabelledDataset):
    """The AMM-FuseNet layout: ``<root>/<modality>_dir/<split>/`` and ``<root>/ann_dir/<split>/``.

    Args:
        root: Dataset root (the folder holding ``ann_dir``, ``s2_dir``...).
        split: ``"train"``, ``"val"`` or ``"test"`` (any sub-folder name).
        modalities: Folder prefixes in the model's branch order, e.g. ``("s2", "s1")`` for the
            Hunan S2+S1 model or ``("s2", "dem")`` for S2+DEM.
        label_dir: Name of the label folder.
        hunan_remap: Apply the Hunan label remapping (NETWORKS.md §2).
        label_map: Any other value → class mapping (ignored if ``hunan_remap``).
        ignore_index: Label value that is not learnt nor scored.

    Raises:
        DatasetPairingError: A file has no partner in another folder (named in the message).
        DatasetError: A folder is missing.
    """

    def __init__(
        self,
        root: PathLike,
        split: str = "train",
        modalities: Sequence[str] = ("s2", "s1"),
        label_dir: str = "ann_dir",
        hunan_remap: bool = False,
        label_map: Optional[Mapping[int, int]] = None,
        ignore_index: int = 255,
    ) -> None:
        self.root = Path(root)
        _check_root(self.root)
        self.split = split
        self.modalities = tuple(modalities)
        if not self.modalities:
            raise DatasetError("Name at least one modality folder, e.g. ('s2', 's1').")
        self.ignore_index = ignore_index
        self.label_map: Optional[Mapping[int, int]] = (
            _hunan_label_map(ignore_index) if hunan_remap else label_map
        )
        folders = {m: self.root / f"{m}_dir" / split for m in self.modalities}
        folders["label"] = self.root / label_dir / split
        self._pairs = pair_files(folders, by="stem")

    def __len__(self) -> int:
        return len(self._pairs)

    @property
    def names(self) -> list[str]:
        """Sample stems in index order."""
        return [k for k, _ in self._pairs]

    def files(self, index: int) -> dict[str, Path]:
        """The files of one sample by role (modality keys and ``"label"``)."""
        return dict(self._pairs[index][1])

    def read(self, index: int) -> RawSample:
        """Read one sample (all modalities and the label).

        Raises:
            DatasetError: The files of the sample differ in size, or a label value is unknown.
        """
        name, files = self._pairs[index]
        inputs = [_read_raster(files[m]) for m in self.modalities]
        label = _read_label(files["label"])
        shapes = {m: a.shape[1:] for m, a in zip(self.modalities, inputs)}
        shapes["label"] = label.shape
        if len(set(shapes.values())) != 1:
            raise DatasetError(
                f"Sample {name} has files of different sizes {shapes}; all modalities and the "
                "label of a sample must be co-registered chips of the same size."
            )
        if self.label_map is not None:
            label = remap_labels(label, self.label_map, str(files["label"]), self.ignore_index)
        return _with_validity(RawSample(inputs=inputs, label=label, name=name), self.ignore_index)


class LevirCDDataset(LabelledDataset):
    """The LEVIR-CD layout: ``A/`` before, ``B/`` after, ``label/`` change mask (0/255).

    Either ``<root>/<split>/A`` (the official release), or ``<root>/A`` with an optional
    ``<root>/list/<split>.txt`` of file names (the BIT/ChangeFormer sample layout), or ``<root>/A``
    with ``split=None`` for every pair.

    Args:
        root: Dataset root.
        split: Split name, or None for the folders directly under ``root``.
        names: Restrict to these file names (e.g. to hold pairs out), in any order.
        ignore_index: Label value meaning "no label" (kept as it is; other values than 0, 1
            and 255 are refused).

    Raises:
        DatasetPairingError: A file has no partner (named), or a listed name is absent.
        DatasetError: The folders are missing.
    """

    def __init__(
        self,
        root: PathLike,
        split: Optional[str] = None,
        names: Optional[Sequence[str]] = None,
        ignore_index: int = 255,
    ) -> None:
        self.root = Path(root)
        _check_root(self.root)
        self.ignore_index = ignore_index
        base = self.root
        listed: Optional[list[str]] = None
        if split is not None:
            if (self.root / split / "A").is_dir():
                base = self.root / split
            elif (self.root / "list" / f"{split}.txt").is_file():
                text = (self.root / "list" / f"{split}.txt").read_text(encoding="utf-8")
                listed = [line.strip() for line in text.splitlines() if line.strip()]
            else:
                raise DatasetError(
                    f"No split '{split}' in {self.root}: expected {self.root / split / 'A'} or "
                    f"{self.root / 'list' / (split + '.txt')}."
                )
        pairs = pair_files({"A": base / "A", "B": base / "B", "label": base / "label"}, by="name")
        wanted = list(names) if names is not None else listed
        if wanted is not None:
            by_name = dict(pairs)
            absent = [n for n in wanted if n not in by_name]
            if absent:
                raise DatasetPairingError(
                    f"Listed pairs not found in {base}/A, B and label: {', '.join(absent[:20])}."
                )
            pairs = [(n, by_name[n]) for n in sorted(set(wanted))]
        self._pairs = pairs

    def __len__(self) -> int:
        return len(self._pairs)

    @property
    def names(self) -> list[str]:
        """Pair file names in index order."""
        return [k for k, _ in self._pairs]

    def files(self, index: int) -> dict[str, Path]:
        """The files of one pair: ``{"A": before, "B": after, "label": mask}``."""
        return dict(self._pairs[index][1])

    def read(self, index: int) -> RawSample:
        """Read one pair: inputs ``[before, after]`` and the 0/1 change label.

        Raises:
            DatasetError: Sizes differ, or the label holds values other than 0 and 255 (or 0/1).
        """
        name, files = self._pairs[index]
        before = _read_raster(files["A"])
        after = _read_raster(files["B"])
        label = _read_label(files["label"])
        if not before.shape == after.shape or before.shape[1:] != label.shape:
            raise DatasetError(
                f"Pair {name}: before {before.shape}, after {after.shape} and label "
                f"{label.shape} differ; the three files must have the same size and bands."
            )
        # LEVIR-CD masks are 0/255; already-binary 0/1 masks are accepted as well.
        label = remap_labels(label, {0: 0, 255: 1, 1: 1}, str(files["label"]), self.ignore_index)
        return RawSample(inputs=[before, after], label=label, name=name)


def _with_validity(sample: RawSample, ignore_index: int) -> RawSample:
    """Mark non-finite input pixels invalid, zero them, and ignore them in the label."""
    invalid = np.zeros(sample.label.shape, dtype=bool)
    for arr in sample.inputs:
        invalid |= ~np.isfinite(arr).all(axis=0)
    if invalid.any():
        for arr in sample.inputs:
            arr[:, invalid] = 0.0
        sample.label = sample.label.copy()
        sample.label[invalid] = ignore_index
        sample.valid = ~invalid if sample.valid is None else (sample.valid & ~invalid)
    return sample
