"""The pieces every writer shares: nodata values, product specs and write-error handling.

The reserved nodata values and the temporary-folder prefix, :class:`ProductSpec` (what one raster
product is), and how a failed write becomes an :class:`~landfuse.core.errors.OutputError` (a
:class:`~landfuse.core.errors.DiskSpaceError` when the disk is full).
"""

from __future__ import annotations

import errno
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Protocol

import numpy as np
from rasterio._err import CPLE_BaseError
from rasterio.errors import RasterioError

from ..errors import DiskSpaceError, OutputError
from ..products import CLASS_NODATA, PROBABILITY_NODATA  # noqa: F401 (the writers' nodata)

#: Name prefix of the temporary folders inside an output folder.
TEMP_PREFIX = ".landfuse-tmp-"
#: Colour of "change" in the change mask (a saturated red, like the AMFNet paper's FP colour).
CHANGE_COLOUR = (230, 30, 30)


class ClassLike(Protocol):
    """A class entry (``models.registry.ClassSpec`` has these fields)."""

    value: int
    name: str
    color: tuple[int, int, int]


@dataclass(frozen=True)
class ProductSpec:
    """What the writers need of one product of a run: a
    :class:`~landfuse.core.products.Product` with its description filled in for the model and
    the model's class table (``classes``) for paletted products. The other fields mean what
    they mean there.
    """

    key: str
    suffix: str
    dtype: str
    nodata: float
    description: str
    style: str
    overview_resampling: str
    classes: tuple[Any, ...] = ()
    value_range: tuple[float, float] = (0.0, 1.0)

    @property
    def bytes_per_pixel(self) -> int:
        """Uncompressed size of one pixel."""
        return int(np.dtype(self.dtype).itemsize)


#: What writing a raster may raise: OS errors, rasterio's, and GDAL's own (which rasterio raises
#: as ``CPLE_*`` classes outside its RasterioError family, e.g. "IO error writing tag data").
WRITE_ERRORS = (RasterioError, CPLE_BaseError, OSError)

#: Below this much free space, a write error is taken for a full disk whatever GDAL's wording.
_FULL_DISK_BYTES = 1 << 20


def _free_bytes(path: Path) -> Optional[int]:
    for candidate in (path, *path.parents):
        try:
            return shutil.disk_usage(candidate).free
        except OSError:
            continue
    return None


def _is_disk_full(error: BaseException, path: Optional[Path] = None) -> bool:
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(error).lower()
    if "no space left" in text or "disk full" in text or "not enough space" in text:
        return True
    # GDAL often reports only the consequence ("IO error writing tag data"): look at the disk.
    free = _free_bytes(path) if path is not None else None
    return free is not None and free < _FULL_DISK_BYTES


def _wrap_io_error(error: BaseException, path: Path) -> OutputError:
    if isinstance(error, OutputError):  # already explained (it is an OSError too)
        return error
    if _is_disk_full(error, path):
        free = _free_bytes(path)
        left = f" ({free / 1e6:.1f} MB left)" if free is not None else ""
        return DiskSpaceError(
            f"The disk is full{left}: it filled up while writing {path}. The partial "
            "outputs were removed; free some space or choose another output folder, then run "
            "again."
        )
    return OutputError(f"Writing {path} failed ({error}); check the output folder.")
