"""What consumes the streamed windows: the tiled GeoTIFF writer and the per-class area tally.

:class:`StreamingGeoTiff` writes one single-band tiled DEFLATE GeoTIFF window by window, holding
only the blocks not yet whole; :class:`AreaTally` counts class pixels and areas over the same
bands of rows.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import rasterio
from affine import Affine
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.windows import Window

from ..raster import Grid
from .base import CHANGE_COLOUR, CLASS_NODATA, WRITE_ERRORS, ProductSpec, _wrap_io_error

logger = logging.getLogger(__name__)


class StreamingGeoTiff:
    """A single-band tiled DEFLATE GeoTIFF written window by window.

    Windows may come in any order (a band of rows across the whole width, or the part of it a
    vertical stripe owns), each pixel once. Blocks are assembled in memory until they are
    whole and then written once, so no compressed block is rewritten (no file growth), and
    memory holds only the blocks being assembled: along the bottom and right edges of the
    windows handed in so far.

    Args:
        path: File to create.
        grid: The output grid.
        product: What is written (dtype, nodata, description, class table).
        block: Block edge (256: GDAL's and QGIS's usual tile size).
        zlevel: DEFLATE level (low for temporaries that become COGs).

    Raises:
        OutputError: if the file cannot be created.
    """

    def __init__(
        self, path: Path, grid: Grid, product: ProductSpec, block: int = 256, zlevel: int = 6
    ) -> None:
        self.path = Path(path)
        self.grid = grid
        self.product = product
        self._block = block
        self._next_row = 0
        self._pixels_written = 0
        # Blocks being assembled: (block row, block col) -> (buffer, pixels filled so far).
        self._partial: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        self._done = np.zeros((-(-grid.height // block), -(-grid.width // block)), dtype=bool)
        profile: dict[str, Any] = {
            "driver": "GTiff",
            "width": grid.width,
            "height": grid.height,
            "count": 1,
            "dtype": product.dtype,
            "nodata": product.nodata,
            "tiled": True,
            "blockxsize": block,
            "blockysize": block,
            "compress": "deflate",
            "zlevel": zlevel,
            "predictor": 2 if product.dtype == "uint8" else 3,
            "bigtiff": "IF_SAFER",
        }
        if grid.crs is not None:
            profile["crs"] = grid.crs
        if grid.crs is not None or grid.transform != Affine.identity():
            # A pixel grid has no geotransform: writing the identity one would only warn.
            profile["transform"] = grid.transform
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)  # pixel grids: by design
                self._dst = rasterio.open(self.path, "w", **profile)
            self._dst.set_band_description(1, product.description)
            if product.classes:
                self._dst.write_colormap(1, _colormap(product))
                names = {str(c.value): c.name for c in product.classes}
                self._dst.update_tags(1, LANDFUSE_CLASSES=json.dumps(names))
        except WRITE_ERRORS as error:
            raise _wrap_io_error(error, self.path) from None

    @property
    def rows_written(self) -> int:
        """Rows handed in so far by :meth:`write_rows`."""
        return self._next_row

    @property
    def pixels_written(self) -> int:
        """Pixels handed in so far (by either method)."""
        return self._pixels_written

    @property
    def pending_pixels(self) -> int:
        """Pixels held in blocks not yet whole (the writer's memory, in pixels)."""
        return sum(buffer.size for buffer, _ in self._partial.values())

    def write_rows(self, row: int, data: np.ndarray) -> None:
        """Append rows ``row .. row + len(data)`` (full width, in order).

        Args:
            row: First row; must follow the previous call's last row.
            data: ``[rows, width]`` values of the product's dtype.

        Raises:
            ValueError: if rows come out of order or the width is wrong.
            OutputError: if writing fails (DiskSpaceError when the disk is full).
        """
        if row != self._next_row:
            raise ValueError(f"Rows must come in order: expected row {self._next_row}, got {row}.")
        if data.ndim != 2 or data.shape[1] != self.grid.width:
            raise ValueError(f"Expected [rows, {self.grid.width}] rows, got {data.shape}.")
        self.write_window(row, 0, data)
        self._next_row += data.shape[0]

    def write_window(self, row: int, col: int, data: np.ndarray) -> None:
        """Write ``data`` at ``row, col``; every pixel of the raster must be written once.

        Args:
            row: First row.
            col: First column.
            data: ``[rows, cols]`` values of the product's dtype.

        Raises:
            ValueError: if the window leaves the raster or covers pixels already written.
            OutputError: if writing fails (DiskSpaceError when the disk is full).
        """
        if data.ndim != 2:
            raise ValueError(f"Expected a [rows, cols] array, got {data.shape}.")
        h, w = (int(n) for n in data.shape)
        height, width = self.grid.height, self.grid.width
        if h == 0 or w == 0:
            return
        if row < 0 or col < 0 or row + h > height or col + w > width:
            raise ValueError(
                f"Window rows {row}..{row + h}, cols {col}..{col + w} leaves the "
                f"{width} x {height} raster."
            )
        data = np.asarray(data, dtype=self.product.dtype)
        size = self._block
        for block_row in range(row // size, (row + h - 1) // size + 1):
            top = block_row * size
            r0, r1 = max(row, top), min(row + h, top + size, height)
            block_h = min(size, height - top)
            run: Optional[tuple[int, int]] = None  # whole blocks straight from data: one write
            for block_col in range(col // size, (col + w - 1) // size + 1):
                left = block_col * size
                c0, c1 = max(col, left), min(col + w, left + size, width)
                block_w = min(size, width - left)
                key = (block_row, block_col)
                if self._done[key]:
                    raise ValueError(
                        f"Pixels at rows {r0}..{r1}, cols {c0}..{c1} were already written."
                    )
                whole = (r1 - r0, c1 - c0) == (block_h, block_w)
                if whole and key not in self._partial:
                    run = (run[0], c1) if run is not None else (c0, c1)
                    self._done[key] = True
                    continue
                if run is not None:
                    self._write(data[r0 - row : r1 - row, run[0] - col : run[1] - col], r0, run[0])
                    run = None
                buffer, filled = self._partial.get(key) or (
                    np.empty((block_h, block_w), dtype=self.product.dtype),
                    np.zeros((block_h, block_w), dtype=bool),
                )
                inside = (slice(r0 - top, r1 - top), slice(c0 - left, c1 - left))
                if filled[inside].any():
                    raise ValueError(
                        f"Pixels at rows {r0}..{r1}, cols {c0}..{c1} were already written."
                    )
                buffer[inside] = data[r0 - row : r1 - row, c0 - col : c1 - col]
                filled[inside] = True
                if filled.all():
                    self._partial.pop(key, None)
                    self._done[key] = True
                    self._write(buffer, top, left)
                else:
                    self._partial[key] = (buffer, filled)
            if run is not None:
                self._write(data[r0 - row : r1 - row, run[0] - col : run[1] - col], r0, run[0])
        self._pixels_written += h * w

    def _write(self, data: np.ndarray, row: int, col: int) -> None:
        rows, cols = data.shape
        try:
            self._dst.write(data, 1, window=Window(col, row, cols, rows))
        except WRITE_ERRORS as error:
            raise _wrap_io_error(error, self.path) from None

    def close(self) -> None:
        """Check that every pixel was written and close the file.

        Raises:
            ValueError: if not every pixel was written.
            OutputError: if writing fails.
        """
        if self._dst.closed:
            return
        total = self.grid.width * self.grid.height
        if self._pixels_written != total or self._partial:
            self.abort()
            rows = self._pixels_written // max(1, self.grid.width)
            raise ValueError(
                f"Only {rows} of {self.grid.height} rows were written "
                f"({self._pixels_written} of {total} pixels)."
            )
        try:
            self._dst.close()
        except WRITE_ERRORS as error:
            raise _wrap_io_error(error, self.path) from None

    def abort(self) -> None:
        """Close without finishing (the file is removed with the temporary folder)."""
        if not self._dst.closed:
            try:
                self._dst.close()
            except (RasterioError, OSError):
                logger.debug("Closing an aborted output failed", exc_info=True)


def _colormap(product: ProductSpec) -> dict[int, tuple[int, int, int, int]]:
    table: dict[int, tuple[int, int, int, int]] = {}
    for item in product.classes:
        r, g, b = item.color
        if product.style == "change":
            # Overlay colours: change stands out, no change lets the imagery show through.
            (r, g, b), alpha = (CHANGE_COLOUR, 255) if item.value else ((255, 255, 255), 0)
        else:
            alpha = 255
        table[int(item.value)] = (int(r), int(g), int(b), alpha)
    table[CLASS_NODATA] = (0, 0, 0, 0)
    return table


# --- areas ----------------------------------------------------------------------------------


class AreaTally:
    """Per-class pixel counts and areas, accumulated over bands of rows.

    Args:
        class_values: The class values to count (others, e.g. nodata, are ignored).
        grid: The output grid (pixel areas come from it; None areas for pixel grids).
    """

    def __init__(self, class_values: Sequence[int], grid: Grid) -> None:
        self.values = tuple(int(v) for v in class_values)
        self.grid = grid
        self.pixels = np.zeros(len(self.values), dtype=np.int64)
        self._area_m2: Optional[np.ndarray] = (
            np.zeros(len(self.values), dtype=np.float64) if grid.crs is not None else None
        )
        self._lookup = np.full(256, -1, dtype=np.int64)
        for position, value in enumerate(self.values):
            self._lookup[value] = position

    def add(self, row: int, classes: np.ndarray) -> None:
        """Count the class values of rows ``row .. row + len(classes)``.

        Args:
            row: First row of ``classes`` in the output grid.
            classes: ``uint8 [rows, width]``.
        """
        positions = self._lookup[classes]
        rows = classes.shape[0]
        # One pass per class keeps memory at one boolean band (classes are few).
        counts = np.stack(
            [(positions == k).sum(axis=1) for k in range(len(self.values))], axis=1
        ).astype(np.int64)
        self.pixels += counts.sum(axis=0)
        if self._area_m2 is not None:
            areas = self.grid.pixel_areas_m2(row, rows)
            if areas is None:
                self._area_m2 = None
            else:
                self._area_m2 += (counts * areas[:, None]).sum(axis=0)

    def hectares(self) -> Optional[list[float]]:
        """Area of each class in hectares (None for pixel grids / unknown units)."""
        if self._area_m2 is None:
            return None
        return [float(a) / 10_000.0 for a in self._area_m2]

    def summary(self, names: Sequence[str]) -> list[dict[str, Any]]:
        """Return ``[{value, name, pixels, hectares, percent}]`` for the report."""
        total = int(self.pixels.sum())
        hectares = self.hectares()
        rows = []
        for position, (value, name) in enumerate(zip(self.values, names)):
            pixels = int(self.pixels[position])
            rows.append(
                {
                    "value": value,
                    "name": name,
                    "pixels": pixels,
                    "hectares": None if hectares is None else round(hectares[position], 4),
                    "percent": round(100.0 * pixels / total, 4) if total else 0.0,
                }
            )
        return rows
