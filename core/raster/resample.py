"""How a source is put on the work grid, and the numpy resampling of coarser sources.

The choice between a direct read (:func:`_integer_offset`), the separable numpy resampling of
a source in the grid's CRS with pixels at least as large (:func:`_scaled_axes`,
:func:`_axis_samples`, :func:`_resample_block`, with GDAL's bilinear / nearest conventions) and
GDAL's warper (:func:`_resampling`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Optional

import numpy as np
from rasterio.enums import Resampling

from ..errors import AlignmentError
from .grid import Grid


def _resampling(name: str) -> Resampling:
    try:
        return Resampling[name]
    except KeyError:
        raise AlignmentError(
            f"Unknown resampling '{name}'; the registry must use 'bilinear', 'nearest', 'cubic'..."
        ) from None


def _integer_offset(src: Any, grid: Grid) -> Optional[tuple[int, int]]:
    """Return ``(row, col)`` of ``grid``'s origin in ``src`` pixels when no resampling is needed.

    That is when both have the same CRS, no rotation, the same pixel size (to 1e-9 relative)
    and origins a whole number of pixels apart (to 1e-3 pixel): e.g. Sentinel-2 / DEM tiles
    of one product, whose origins may differ by floating-point noise.
    """
    s, g = src.transform, grid.transform
    if (src.crs or None) != grid.crs or s.b or s.d or g.b or g.d:
        return None
    if not (math.isclose(s.a, g.a, rel_tol=1e-9) and math.isclose(s.e, g.e, rel_tol=1e-9)):
        return None
    col = (g.c - s.c) / s.a
    row = (g.f - s.f) / s.e
    if abs(col - round(col)) > 1e-3 or abs(row - round(row)) > 1e-3:
        return None
    return round(row), round(col)


#: Resampling methods that :class:`_AxisSampler` computes itself (as GDAL's warper does).
_SEPARABLE = frozenset({"bilinear", "nearest"})
#: GDAL's warper treats a pixel whose kernel weights of valid neighbours sum below this as
#: having no data; the same threshold here keeps masks identical at nodata borders.
_MIN_WEIGHT = 1e-5


def _scaled_axes(src: Any, grid: Grid) -> Optional[tuple[float, float, float, float]]:
    """Source pixel coordinates of the grid's first pixel centre and the step per grid pixel.

    Only for a source in the grid's CRS, without rotation, with the same axis directions and
    pixels at least as large as the grid's (e.g. Sentinel-2 20/60 m bands on the 10 m grid):
    bilinear and nearest resampling then separate into rows and columns, which numpy computes
    far faster than GDAL's general warper (which transforms every pixel's coordinates).

    Returns:
        ``(col0, col_step, row0, row_step)`` in source pixels (edges at integers), or None.
    """
    s, g = src.transform, grid.transform
    if (src.crs or None) != grid.crs or s.b or s.d or g.b or g.d:
        return None
    col_step, row_step = g.a / s.a, g.e / s.e
    if not (0.0 < col_step <= 1.0 + 1e-9 and 0.0 < row_step <= 1.0 + 1e-9):
        return None
    col0 = (g.c + 0.5 * g.a - s.c) / s.a
    row0 = (g.f + 0.5 * g.e - s.f) / s.e
    return col0, col_step, row0, row_step


@dataclass(frozen=True)
class _AxisSamples:
    """Along one axis of a window: the source pixels each output pixel reads, and weights.

    Attributes:
        first: Source index of the first neighbour of each output pixel, relative to ``low``
            and shifted by one (index 0 is a pad of no data before the source block).
        second: The second neighbour (bilinear; ``first + 1``), same convention.
        centre: Same for the source pixel under the output pixel's centre.
        weight: ``float32 [size, 1]``-broadcastable weight of the second neighbour (bilinear).
        rest: ``1 - weight``: the weight of the first neighbour.
        inside: Output pixels whose centre lies inside the source.
        low: First source pixel of the block to read.
        count: Source pixels to read (0 when no output pixel lies inside).
        interior: Every output pixel lies inside and reads real source pixels only (no pad).
    """

    first: np.ndarray
    second: np.ndarray
    centre: np.ndarray
    weight: np.ndarray
    rest: np.ndarray
    inside: np.ndarray
    low: int
    count: int
    interior: bool


@lru_cache(maxsize=512)
def _axis_samples(
    start: float, step: float, offset: int, size: int, source_size: int, bilinear: bool
) -> _AxisSamples:
    """Plan one axis: ``size`` output pixels from ``offset`` on, read from a source axis.

    GDAL's conventions (``gdalwarpkernel.cpp``, checked against ``WarpedVRT`` by the tests): a
    pixel is inside when its centre ``x`` satisfies ``0 <= x`` and ``floor(x) < source_size``,
    and has data only when the source pixel ``floor(x)`` under its centre has; nearest takes
    that pixel; bilinear takes pixels ``floor(x - 0.5)`` and the next with weights ``1 - f``
    and ``f``, neighbours without data (or outside the source) dropping out of the average.

    Plans are cached (and read-only): every tile of a row of tiles shares its row plan, every
    tile of a column its column plan, and bands of one resolution share both.
    """
    centres = start + (offset + np.arange(size, dtype=np.float64)) * step
    under = np.floor(centres + 1e-10)
    inside = (centres >= 0.0) & (under < source_size)
    if bilinear:
        shifted = centres - 0.5
        first_abs = np.floor(shifted)
        weight = (shifted - first_abs).astype(np.float32)
    else:
        first_abs = under
        weight = np.zeros(size, dtype=np.float32)
    first_abs = first_abs.astype(np.int64)
    under = under.astype(np.int64)
    reach = 1 if bilinear else 0
    if inside.any():
        low = min(max(int(first_abs[inside].min()), 0), source_size - 1)
        high = min(max(int(first_abs[inside].max()) + reach, 0), source_size - 1)
        count = high - low + 1
    else:
        low, count = 0, 0
    # Relative to the block padded by one pixel of no data on each side.
    first = np.clip(first_abs - low + 1, 0, count + 1)
    second = np.clip(first_abs + reach - low + 1, 0, count + 1)
    centre = np.clip(under - low + 1, 0, count + 1)
    interior = bool(count and inside.all() and first.min() >= 1 and second.max() <= count)
    rest = (1.0 - weight).astype(np.float32)
    for array in (first, second, centre, weight, rest, inside):
        array.setflags(write=False)
    return _AxisSamples(first, second, centre, weight, rest, inside, low, count, interior)


def _lerp(first: np.ndarray, second: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """``first + (second - first) * weight``, in place in ``first`` (both are fresh copies)."""
    second -= first
    second *= weight
    first += second
    return first


def _resample_block(
    data: np.ndarray,
    valid: Optional[np.ndarray],
    rows: _AxisSamples,
    cols: _AxisSamples,
    bilinear: bool,
    out: Optional[np.ndarray] = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Resample a source block (padded by one no-data pixel per side) onto the output window.

    Columns are interpolated first, on the source's (fewer) rows, so that the costly gathers
    along the last axis touch fewer elements; the rows then are whole-row copies.

    Args:
        data: ``float32 [bands, rows.count + 2, cols.count + 2]``, pad included.
        valid: ``bool`` of the same shape, per band (as GDAL's warper keeps it), or None when
            every real pixel is valid (the pad is then the only no data).
        rows: Row plan.
        cols: Column plan.
        bilinear: Bilinear (else nearest).
        out: ``float32 [bands, h, w]`` to write into; None: a new array.

    Returns:
        ``(float32 [bands, h, w], bool [h, w])``; the first is ``out`` when given.
    """
    inside = rows.inside[:, None] & cols.inside[None, :]
    if valid is not None:
        centre = np.take(np.take(valid, rows.centre, axis=1), cols.centre, axis=2)
        inside &= np.all(centre, axis=0)
    if not bilinear:
        picked = np.take(np.take(data, rows.first, axis=1), cols.first, axis=2)
        if out is None:
            return picked, inside
        out[...] = picked
        return out, inside
    wr = rows.weight[:, None]
    wc = cols.weight
    if valid is None and rows.interior and cols.interior:
        # Every neighbour is real data: plain separable interpolation.
        stage = _lerp(np.take(data, cols.first, axis=2), np.take(data, cols.second, axis=2), wc)
        top = np.take(stage, rows.first, axis=1)
        result = _lerp(top, np.take(stage, rows.second, axis=1), wr)
        if out is None:
            return result, inside
        out[...] = result
        return out, inside
    # Weights of valid neighbours only, then renormalised (what GDAL's warper does).
    if valid is None:
        mask = np.ones((1, *data.shape[1:]), dtype=np.float32)
    else:
        mask = valid.astype(np.float32)
    mask[:, 0, :] = mask[:, -1, :] = 0.0
    mask[:, :, 0] = mask[:, :, -1] = 0.0
    weighted = data * mask
    rr, rc = rows.rest[:, None], cols.rest
    stage = weighted[:, :, cols.first] * rc + weighted[:, :, cols.second] * wc
    stage_w = mask[:, :, cols.first] * rc + mask[:, :, cols.second] * wc
    total = stage[:, rows.first] * rr + stage[:, rows.second] * wr
    weights = stage_w[:, rows.first] * rr + stage_w[:, rows.second] * wr
    has_weight = weights >= _MIN_WEIGHT
    ok = inside & np.all(has_weight, axis=0)
    if out is None:
        out = np.empty(total.shape, dtype=np.float32)
    out[...] = 0.0
    np.divide(total, weights, out=out, where=has_weight)
    return out, ok
