"""Cutting a raster into overlapping tiles (pure functions, no I/O).

DESIGN.md §2.4: tiles of ``tile`` pixels with the chosen overlap; the last row and column of
tiles are shifted inward so that they end exactly at the raster edge (every tile then holds real
pixels only, which matters for the per-tile min-max normalisation of the reference models); a
raster smaller than a tile along an axis gets one tile along that axis, padded by reflection up
to the next multiple of the network's output stride (:func:`reflect_pad`).

Tiles come in row-major order (all tiles of one row of tiles, left to right, then the next row),
which is what lets the blender flush finished rows of the output early
(:mod:`landfuse.core.blending`). A scene wider than ``stripe_width`` is cut into vertical stripes
of whole tile columns, processed one after the other (each stripe top to bottom, row-major
inside it): the blocks a reader keeps decoded, the blending band and the output blocks being
assembled are then bounded by the stripe's width instead of the scene's, so memory does not
grow with the scene at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Sequence

import numpy as np

from .errors import RequestError

__all__ = [
    "Tile",
    "TileLayout",
    "axis_starts",
    "batch_groups",
    "padded_size",
    "plan_tiles",
    "reflect_pad",
    "stripe_starts",
]


@dataclass(frozen=True)
class Tile:
    """One tile of a raster, in pixel coordinates of the area being processed.

    Attributes:
        index: Position in row-major order (0-based).
        row: First row of the tile's real pixels.
        col: First column of the tile's real pixels.
        height: Number of real rows (``<= padded_height`` of the layout).
        width: Number of real columns.
        tile_row: Index of the row of tiles this tile belongs to.
        stripe: Index of the vertical stripe this tile belongs to (0 when the scene is one
            stripe).
    """

    index: int
    row: int
    col: int
    height: int
    width: int
    tile_row: int
    stripe: int = 0


@dataclass(frozen=True)
class TileLayout:
    """All tiles of a raster and the shape the network sees.

    Attributes:
        height: Raster height in pixels.
        width: Raster width in pixels.
        tile: Requested tile edge.
        overlap: Requested overlap in pixels.
        padded_height: Height of every array handed to the network (tile, or the raster height
            rounded up to the output stride when the raster is smaller than a tile).
        padded_width: Same for the width.
        row_starts: First row of each row of tiles.
        col_starts: First column of each column of tiles.
        stripe_starts: Index (into ``col_starts``) of the first tile column of each vertical
            stripe; ``(0,)`` for a single stripe as wide as the scene.
    """

    height: int
    width: int
    tile: int
    overlap: int
    padded_height: int
    padded_width: int
    row_starts: tuple[int, ...]
    col_starts: tuple[int, ...]
    stripe_starts: tuple[int, ...] = (0,)

    @property
    def tile_height(self) -> int:
        """Real rows in every tile (``min(tile, height)``)."""
        return min(self.tile, self.height)

    @property
    def tile_width(self) -> int:
        """Real columns in every tile (``min(tile, width)``)."""
        return min(self.tile, self.width)

    def __len__(self) -> int:
        return len(self.row_starts) * len(self.col_starts)

    def __iter__(self) -> Iterator[Tile]:
        index = 0
        for stripe in range(self.stripes):
            first, end = self.stripe_columns(stripe)
            cols = self.col_starts[first:end]
            for tile_row, row in enumerate(self.row_starts):
                for col in cols:
                    yield Tile(index, row, col, self.tile_height, self.tile_width, tile_row, stripe)
                    index += 1

    def tiles(self) -> list[Tile]:
        """Return every tile in processing order (stripe by stripe, row-major in each)."""
        return list(self)

    @property
    def stripes(self) -> int:
        """Number of vertical stripes."""
        return len(self.stripe_starts)

    def stripe_columns(self, stripe: int) -> tuple[int, int]:
        """Return the tile-column indices ``first, end`` (end excluded) of ``stripe``."""
        first = self.stripe_starts[stripe]
        end = (
            self.stripe_starts[stripe + 1]
            if stripe + 1 < len(self.stripe_starts)
            else len(self.col_starts)
        )
        return first, end

    def stripe_span(self, stripe: int) -> tuple[int, int]:
        """Return the raster columns ``start, end`` that the tiles of ``stripe`` cover."""
        first, end = self.stripe_columns(stripe)
        return self.col_starts[first], self.col_starts[end - 1] + self.tile_width

    def stripe_owned(self, stripe: int) -> tuple[int, int]:
        """Return the raster columns ``start, end`` that are final once ``stripe`` is done.

        A stripe owns the columns from its first tile up to the first tile of the next stripe;
        the columns beyond, which the next stripe's tiles overlap, are finished there.
        """
        first, _ = self.stripe_columns(stripe)
        start = self.col_starts[first]
        if stripe + 1 < len(self.stripe_starts):
            return start, self.col_starts[self.stripe_starts[stripe + 1]]
        return start, self.width

    @property
    def max_stripe_width(self) -> int:
        """Widest column span of a stripe (the width of the blending band)."""
        return max(b - a for a, b in (self.stripe_span(s) for s in range(self.stripes)))

    def rows_complete_after(self, tile_row: int) -> int:
        """Return how many output rows are final once every tile up to ``tile_row`` is blended.

        A row is final when no later tile covers it: rows above the start of the next row of
        tiles, or every row after the last row of tiles.

        Args:
            tile_row: Index of the last row of tiles fully processed.

        Returns:
            The number of leading raster rows that no later tile touches.
        """
        if tile_row + 1 < len(self.row_starts):
            return self.row_starts[tile_row + 1]
        return self.height


def batch_groups(layout: TileLayout, batch: int) -> Callable[[Tile], tuple[int, int, int]]:
    """Which batch a tile belongs to: chunks of ``batch`` tile columns of one row of tiles of
    one stripe, counted from the stripe's first column.

    The network's result for a tile can change in the last bits with the batch it is computed
    in (the CPU's convolution kernels depend on the batch size), so the batches are fixed by
    the scene's tile grid and not by the order tiles happen to come in: a job that computes a
    band of rows (:mod:`landfuse.core.engine.jobs`) then batches each of its tiles with the
    same neighbours as a run of the whole scene, and the maps are byte-identical.
    """
    size = max(1, int(batch))
    column = {start: index for index, start in enumerate(layout.col_starts)}
    firsts = layout.stripe_starts

    def group(tile: Tile) -> tuple[int, int, int]:
        return tile.stripe, tile.tile_row, (column[tile.col] - firsts[tile.stripe]) // size

    return group


def axis_starts(size: int, tile: int, overlap: int) -> tuple[int, ...]:
    """Return the start offsets of the tiles along one axis.

    The step is ``tile - overlap``; the last tile is shifted inward so that it ends at
    ``size`` (its overlap with the previous one is then larger than asked, never smaller).

    Args:
        size: Raster size along the axis (pixels, > 0).
        tile: Tile edge (pixels, > 0).
        overlap: Overlap between neighbours (``0 <= overlap < tile``).

    Returns:
        Strictly increasing offsets; ``(0,)`` when the raster fits in one tile.

    Raises:
        RequestError: if a size is not positive or the overlap is not smaller than the tile.
    """
    if size <= 0 or tile <= 0:
        raise RequestError(f"Raster size ({size}) and tile size ({tile}) must be positive.")
    if not 0 <= overlap < tile:
        raise RequestError(
            f"The overlap ({overlap} px) must be at least 0 and smaller than the tile ({tile} px)."
        )
    if size <= tile:
        return (0,)
    step = tile - overlap
    starts = list(range(0, size - tile, step))
    starts.append(size - tile)
    return tuple(starts)


def padded_size(size: int, tile: int, stride: int) -> int:
    """Return the network-side size along one axis.

    Args:
        size: Raster size along the axis.
        tile: Tile edge (a multiple of ``stride``).
        stride: The network's output stride; inputs must be multiples of it.

    Returns:
        ``tile`` when the raster is at least one tile long, else ``size`` rounded up to a
        multiple of ``stride``.
    """
    if size >= tile:
        return tile
    return -(-size // stride) * stride


def stripe_starts(
    columns: int, tile: int, overlap: int, stripe_width: Optional[int]
) -> tuple[int, ...]:
    """Split ``columns`` tile columns into vertical stripes at most ``stripe_width`` px wide.

    Args:
        columns: Number of tile columns.
        tile: Tile edge.
        overlap: Overlap between neighbouring tiles.
        stripe_width: Widest stripe wanted in pixels (at least one tile column per stripe);
            None for a single stripe.

    Returns:
        The index of the first tile column of each stripe; stripes differ by one column at most.
    """
    if stripe_width is None or columns <= 1:
        return (0,)
    step = tile - overlap
    per_stripe = max(1, (int(stripe_width) - overlap) // step)
    count = -(-columns // per_stripe)
    # Spread the columns evenly: no narrow last stripe.
    return tuple((k * columns) // count for k in range(count))


def plan_tiles(
    height: int,
    width: int,
    tile: int,
    overlap: int,
    stride: int = 1,
    stripe_width: Optional[int] = None,
) -> TileLayout:
    """Plan the tiles of a ``height`` × ``width`` raster.

    Args:
        height: Raster height in pixels.
        width: Raster width in pixels.
        tile: Tile edge in pixels; must be a multiple of ``stride``.
        overlap: Overlap between neighbouring tiles in pixels (``0 <= overlap < tile``).
        stride: The network's output stride (AMM-FuseNet 16, AMFNet 32): every array handed to
            the network must have a size divisible by it.
        stripe_width: Process the raster in vertical stripes at most this many pixels wide
            (whole tile columns; None: one stripe, the whole width).

    Returns:
        The :class:`TileLayout`.

    Raises:
        RequestError: if the tile is not a positive multiple of the stride, or the overlap is
            out of range.
    """
    if stride <= 0:
        raise RequestError(f"The output stride must be positive, got {stride}.")
    if tile <= 0 or tile % stride:
        raise RequestError(
            f"The tile size must be a positive multiple of the model's output stride {stride}; "
            f"got {tile}. Try {max(stride, round(tile / stride) * stride)}."
        )
    col_starts = axis_starts(width, tile, overlap)
    return TileLayout(
        height=height,
        width=width,
        tile=tile,
        overlap=overlap,
        padded_height=padded_size(height, tile, stride),
        padded_width=padded_size(width, tile, stride),
        row_starts=axis_starts(height, tile, overlap),
        col_starts=col_starts,
        stripe_starts=stripe_starts(len(col_starts), tile, overlap, stripe_width),
    )


def reflect_pad(array: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Pad the last two axes of ``array`` at the bottom and right, by reflection, to ``shape``.

    Reflection (mirror without repeating the edge pixel) keeps image statistics and texture at
    the border, so the network sees plausible content instead of a constant frame. Arrays one
    pixel wide along an axis are repeated instead, as there is nothing to mirror.

    Args:
        array: ``[..., h, w]``.
        shape: Target ``(H, W)`` with ``H >= h`` and ``W >= w``.

    Returns:
        The padded array (``array`` itself when no padding is needed).

    Raises:
        RequestError: if the target is smaller than the array.
    """
    h, w = array.shape[-2:]
    target_h, target_w = int(shape[0]), int(shape[1])
    if target_h < h or target_w < w:
        raise RequestError(f"Cannot pad a {h}x{w} array to a smaller {target_h}x{target_w}.")
    if (target_h, target_w) == (h, w):
        return array
    pad = [(0, 0)] * (array.ndim - 2) + [(0, target_h - h), (0, target_w - w)]
    # numpy's "reflect" repeats the mirror as often as needed for pads longer than the array,
    # but needs at least two samples to mirror.
    if min(h, w) > 1:
        return np.pad(array, pad, mode="reflect")
    return np.pad(array, pad, mode="edge")
