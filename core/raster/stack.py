"""The sources of one modality together: :class:`AlignedStack`, :func:`open_aligned`.

Also GDAL's block cache, bounded for the duration of a run (:func:`bounded_block_cache`).
"""

from __future__ import annotations

import contextlib
import threading
from typing import Iterator, Optional, Sequence

import numpy as np
from rasterio.windows import Window

from ..errors import AlignmentError
from ..requests import RasterSource
from .aligned import AlignedSource
from .grid import Grid


class AlignedStack:
    """The sources of one modality, bands concatenated in order, on the work grid.

    Args:
        sources: Opened :class:`AlignedSource` objects, in band order.
        order: For each network band, its position among the bands as read (files in order,
            each file's selected bands in order); None: as read. Lets bands named in any order
            across files reach the network in its order
            (:meth:`landfuse.core.band_mapping.ResolvedBands.read_order`).
    """

    def __init__(
        self, sources: Sequence[AlignedSource], order: Optional[Sequence[int]] = None
    ) -> None:
        self.sources = tuple(sources)
        identity = order is None or list(order) == list(range(len(order)))
        self.order: Optional[list[int]] = None if identity else list(order or ())

    @property
    def band_count(self) -> int:
        """Total number of bands."""
        return sum(len(s.bands) for s in self.sources)

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """Read every band on ``window``.

        Args:
            window: Integer window of the work grid.

        Returns:
            ``(data float32 [bands, h, w], valid bool [h, w])``: valid where every band is.
        """
        data, valid = self._read_as_stored(window)
        if self.order is not None:
            data = data[self.order]
        return data, valid

    def _read_as_stored(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        if not self.sources:
            raise AlignmentError("A modality without any source cannot be read.")
        if len(self.sources) == 1:
            return self.sources[0].read(window)
        # Each source reads straight into its slice: no concatenation copy of the tile.
        stacked = np.empty((self.band_count, int(window.height), int(window.width)), np.float32)
        valid: Optional[np.ndarray] = None
        start = 0
        for source in self.sources:
            count = len(source.bands)
            _, ok = source.read(window, out=stacked[start : start + count])
            start += count
            valid = ok if valid is None else (valid & ok)
        if valid is None:
            raise AlignmentError("A modality without any source cannot be read.")
        return stacked, valid

    def block_cache_bytes(self, rows: int, cols: Optional[int] = None) -> int:
        """Sum of :meth:`AlignedSource.block_cache_bytes` over the sources."""
        return sum(source.block_cache_bytes(rows, cols) for source in self.sources)

    def close(self) -> None:
        """Close every source."""
        for source in self.sources:
            source.close()


_cache_lock = threading.Lock()
_cache_users = 0
_cache_saved: Optional[int] = None


@contextlib.contextmanager
def bounded_block_cache(max_bytes: int) -> Iterator[int]:
    """Lower GDAL's block cache to ``max_bytes`` for the duration of a run, then restore it.

    GDAL's default cache (5 % of the RAM) keeps every decoded block of every input until it is
    full, so a run's memory would grow with the scene size long after the blocks stopped
    being useful (issue 4: memory must not grow with the scene). The cache is process-wide:
    it is only ever lowered (never raised above what the user or QGIS configured), runs that
    overlap in one process share the lowest setting, and the last one to end restores it.

    Args:
        max_bytes: The cache size wanted (see :meth:`AlignedStack.block_cache_bytes`).

    Yields:
        The cache size in effect.
    """
    global _cache_users, _cache_saved
    from osgeo import gdal  # rasterio exposes no setter for the cache size

    with _cache_lock:
        current = int(gdal.GetCacheMax())
        if _cache_users == 0:
            _cache_saved = current
        _cache_users += 1
        wanted = max(1 << 20, min(current, int(max_bytes)))
        if wanted < current:
            gdal.SetCacheMax(wanted)
        in_effect = min(current, wanted)
    try:
        yield in_effect
    finally:
        with _cache_lock:
            _cache_users -= 1
            if _cache_users == 0 and _cache_saved is not None:
                gdal.SetCacheMax(_cache_saved)
                _cache_saved = None


def open_aligned(
    sources: Sequence[RasterSource],
    bands: Sequence[Sequence[int]],
    grid: Grid,
    resampling: str = "bilinear",
    pixel_grid: bool = False,
    order: Optional[Sequence[int]] = None,
) -> AlignedStack:
    """Open the sources of one modality on the work grid.

    Args:
        sources: The request's sources.
        bands: Resolved band indexes of each source.
        grid: The work grid.
        resampling: Resampling of this modality (from the registry).
        pixel_grid: Pixel-grid mode.
        order: Network order of the bands read (see :class:`AlignedStack`).

    Returns:
        The :class:`AlignedStack` (close it when done; sources opened before a failure are
        closed again).

    Raises:
        InputFileError: if a file cannot be opened.
    """
    opened: list[AlignedSource] = []
    try:
        for source, indexes in zip(sources, bands):
            opened.append(AlignedSource(source, indexes, grid, resampling, pixel_grid))
    except BaseException:
        for item in opened:
            item.close()
        raise
    return AlignedStack(opened, order)
