"""Shared pieces of the dataset readers.

File extensions, the Hunan label table and :func:`remap_labels`, the dataset errors,
:class:`RawSample`, the :class:`LabelledDataset` base class, and the readers of raster and label
files used by the published layouts.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Union

import numpy as np
import rasterio
import torch
from rasterio.errors import NotGeoreferencedWarning

from ..errors import DatasetError, DatasetPairingError  # noqa: F401 (the package exports them)
from ..vector_labels import VECTOR_EXTENSIONS  # noqa: F401 (the package exports it)

PathLike = Union[str, Path]

#: File extensions read as rasters by the layout readers (sidecars such as .aux.xml are skipped).
RASTER_EXTENSIONS = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp", ".img", ".jp2", ".vrt")
#: File extensions read as vector files (labelled polygons).

#: Hunan label remapping (NETWORKS.md §2): 255 → 12 first, then the published table
#: ``[255, 0, 1, 2, 1, 3, 4, 6, 6, 5, 6, 7, 255]``, whose 7 and 255 are both ignored.
HUNAN_TABLE = (255, 0, 1, 2, 1, 3, 4, 6, 6, 5, 6, 7, 255)


def _hunan_label_map(ignore_index: int = 255) -> dict[int, int]:
    mapping = {code: (ignore_index if v in (7, 255) else v) for code, v in enumerate(HUNAN_TABLE)}
    mapping[255] = mapping[12]
    return mapping


#: The Hunan remapping as a value → class mapping (ignore = 255).
HUNAN_LABEL_MAP: Mapping[int, int] = _hunan_label_map()


@dataclass
class RawSample:
    """One labelled sample before normalisation.

    Attributes:
        inputs: One float32 array ``[bands, H, W]`` per input (modality, or before/after date).
        label: int64 ``[H, W]`` class map; ``ignore_index`` where there is no usable label.
        name: Identifies the sample in messages (file stem, or scene and chip offset).
        valid: bool ``[H, W]``, False where an input has nodata (those pixels are also ignored
            in the label); None when every pixel is valid.
    """

    inputs: list[np.ndarray]
    label: np.ndarray
    name: str
    valid: Optional[np.ndarray] = None


def _read_raster(path: Path) -> np.ndarray:
    """Read every band of a raster file as float32 ``[bands, H, W]``."""
    try:
        with warnings.catch_warnings():
            # LEVIR-CD and DSIFN samples are plain PNGs without georeferencing.
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as src:
                return src.read().astype(np.float32, copy=False)
    except rasterio.errors.RasterioIOError as exc:
        raise DatasetError(f"Cannot read raster {path}: {exc}. Check that it is a raster.") from exc


def _read_label(path: Path) -> np.ndarray:
    """Read a single-band label raster as int64 ``[H, W]``."""
    data = _read_raster(path)
    # Some label PNGs are saved as RGB with equal channels; anything else is ambiguous.
    if data.shape[0] > 1 and not all(
        np.array_equal(data[0], data[b]) for b in range(1, data.shape[0])
    ):
        raise DatasetError(
            f"Label {path} has {data.shape[0]} different bands; save the labels as a "
            "single-band raster of class values."
        )
    return data[0].astype(np.int64)


def remap_labels(
    label: np.ndarray,
    mapping: Mapping[int, int],
    source: str,
    ignore_index: int = 255,
) -> np.ndarray:
    """Map label values to class indices with a lookup table.

    Args:
        label: Integer label array.
        mapping: Source value → class index (``ignore_index`` to leave a value out).
        source: File or scene name used in the error message.
        ignore_index: Value already meaning "no label"; kept as it is if not in ``mapping``.

    Returns:
        The remapped int64 array.

    Raises:
        DatasetError: A value of ``label`` is not in ``mapping``.
    """
    values = np.unique(label)
    unknown = [int(v) for v in values if int(v) not in mapping and int(v) != ignore_index]
    if unknown:
        raise DatasetError(
            f"Label values {unknown[:20]} of {source} are not in the label mapping "
            f"{dict(mapping)}; add them (use {ignore_index} to ignore a value)."
        )
    out = np.full(label.shape, ignore_index, dtype=np.int64)
    for value in values:
        value = int(value)
        out[label == value] = mapping.get(value, ignore_index)
    return out


class LabelledDataset(torch.utils.data.Dataset):
    """Base of the readers: ``read(index)`` returns a :class:`RawSample`.

    ``__getitem__`` returns the raw sample too; wrap the dataset in :class:`PreparedDataset`
    for training (normalisation, augmentation, tensors).
    """

    ignore_index: int = 255

    def __len__(self) -> int:  # pragma: no cover - overridden
        raise NotImplementedError

    def read(self, index: int) -> RawSample:  # pragma: no cover - overridden
        """Read one sample."""
        raise NotImplementedError

    @property
    def names(self) -> list[str]:  # pragma: no cover - overridden
        """Sample names in index order."""
        raise NotImplementedError

    def __getitem__(self, index: int) -> RawSample:
        return self.read(index)
