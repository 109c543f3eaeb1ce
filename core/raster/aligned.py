"""One raster file read on the work grid, window by window: :class:`AlignedSource`.

Direct reads, the numpy resampling of :mod:`.resample` or a ``WarpedVRT``; the validity of
each pixel; the cheap probes of valid pixels and sample values; its block-cache estimate.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import numpy as np
import rasterio
from rasterio.enums import MaskFlags
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from ..integrity import read_failure
from ..requests import RasterSource
from .grid import READ_ERRORS, Grid, _array_bounds, _open, _round_window, intersect_windows
from .resample import (
    _SEPARABLE,
    _axis_samples,
    _integer_offset,
    _resample_block,
    _resampling,
    _scaled_axes,
)

#: Side of the full-resolution windows :meth:`AlignedSource.has_valid_pixels` tries first, and
#: where they lie (fractions of the height and width): the centre, then the four quarters.
_PROBE = 32
_PROBE_SPOTS = ((0.5, 0.5), (0.25, 0.25), (0.25, 0.75), (0.75, 0.25), (0.75, 0.75))


class AlignedSource:
    """One raster file read on the work grid, window by window.

    Args:
        source: The request's source (path, band selection, nodata override).
        bands: Resolved 1-based band indexes.
        grid: The work grid (reference grid cut to the work window).
        resampling: ``"bilinear"`` for continuous data, ``"nearest"`` for classes.
        pixel_grid: Read pixels as they are (inputs without georeferencing).

    Raises:
        InputFileError: if the file cannot be opened.
    """

    def __init__(
        self,
        source: RasterSource,
        bands: Sequence[int],
        grid: Grid,
        resampling: str = "bilinear",
        pixel_grid: bool = False,
    ) -> None:
        self.path = source.path
        self.bands = tuple(bands)
        self.grid = grid
        self._override = source.nodata
        self._src = _open(source.path)
        self._vrt: Optional[WarpedVRT] = None
        self._alpha: Optional[int] = None
        self._offset: Optional[tuple[int, int]] = None
        self._scaled: Optional[tuple[float, float, float, float]] = None
        self._bilinear = resampling == "bilinear"
        if pixel_grid:
            self._offset = (0, 0)
        else:
            offset = _integer_offset(self._src, grid)
            inside = offset is not None and (
                offset[0] >= 0
                and offset[1] >= 0
                and offset[0] + grid.height <= self._src.height
                and offset[1] + grid.width <= self._src.width
            )
            scaled = _scaled_axes(self._src, grid) if resampling in _SEPARABLE else None
            if inside:
                self._offset = offset
            elif scaled is not None:
                self._scaled = scaled
            else:
                nodata = self._override if self._override is not None else self._src.nodata
                options: dict[str, Any] = {
                    "crs": grid.crs,
                    "transform": grid.transform,
                    "width": grid.width,
                    "height": grid.height,
                    "resampling": _resampling(resampling),
                    "dtype": "float32",
                }
                if nodata is not None:
                    options.update(src_nodata=nodata, nodata=nodata)
                else:
                    # Without a nodata value, an alpha band is the only way to tell the area
                    # outside the source from real zeros.
                    options["add_alpha"] = True
                self._vrt = WarpedVRT(self._src, **options)
                if nodata is None:
                    # GDAL derives no usable mask from a float32 alpha band: read it directly.
                    self._alpha = self._vrt.count
        self.warped = self._vrt is not None or self._scaled is not None
        self._plan_validity()

    def _plan_validity(self) -> None:
        """Choose the cheapest exact way to tell valid pixels, once, from GDAL's mask flags.

        Reading GDAL masks costs a second read per tile; when a band's mask is only its nodata
        value (or it has none), comparing the values read is exact and free.
        """
        dataset: Any = self._vrt if self._vrt is not None else self._src
        flags = [set(dataset.mask_flag_enums[b - 1]) for b in self.bands]
        self._read_masks = False
        self._nodata_values: Optional[np.ndarray] = None
        if self._alpha is None:
            if all(f == {MaskFlags.all_valid} for f in flags):
                pass
            elif all(f == {MaskFlags.nodata} for f in flags):
                values = [dataset.nodatavals[b - 1] for b in self.bands]
                self._nodata_values = np.asarray(values, dtype=np.float32).reshape(-1, 1, 1)
            else:
                self._read_masks = True  # per-dataset masks, alpha bands in the file...
        if self._override is not None and self._vrt is None:
            override = np.full((len(self.bands), 1, 1), self._override, dtype=np.float32)
            self._nodata_values = override
        if self._nodata_values is not None and np.isnan(self._nodata_values).any():
            # NaN never equals itself; the finiteness check below covers a NaN nodata value.
            self._nodata_values = None
        self._check_finite = any(
            np.issubdtype(np.dtype(self._src.dtypes[b - 1]), np.floating) for b in self.bands
        )

    def read(
        self, window: Window, out: Optional[np.ndarray] = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Read the selected bands and their validity on ``window`` of the work grid.

        Args:
            window: Integer window of the work grid.
            out: ``float32 [bands, h, w]`` array to read into (e.g. this source's slice of a
                modality's stack, which then needs no concatenation); None: a new array.

        Returns:
            ``(data float32 [bands, h, w], valid bool [h, w])``; ``data`` is ``out`` if given.

        Raises:
            InputFileError: naming the file and the window, when GDAL cannot read it (a file
                cut short, a VRT source gone or changed during the run).
        """
        try:
            return self._read(window, out)
        except READ_ERRORS as error:
            raise read_failure(self.path, window, error) from None

    def _read(
        self, window: Window, out: Optional[np.ndarray] = None
    ) -> tuple[np.ndarray, np.ndarray]:
        if self._scaled is not None:
            return self._read_scaled(window, out)
        if self._vrt is not None:
            dataset: Any = self._vrt
            read_window = window
        else:
            dataset = self._src
            row, col = self._offset or (0, 0)
            read_window = Window(
                window.col_off + col, window.row_off + row, window.width, window.height
            )
        bands = list(self.bands)
        if self._alpha is not None:
            # One warp for the data and its alpha band together.
            stacked = dataset.read([*bands, self._alpha], window=read_window, out_dtype="float32")
            data, valid = stacked[:-1], stacked[-1] > 0
            if out is not None:
                out[...] = data
                data = out
        else:
            if out is None:
                data = dataset.read(bands, window=read_window, out_dtype="float32")
            else:
                data = dataset.read(bands, window=read_window, out=out)
            if self._read_masks:
                valid = np.all(dataset.read_masks(bands, window=read_window) > 0, axis=0)
            else:
                valid = np.ones(data.shape[1:], dtype=bool)
        if self._nodata_values is not None:
            valid &= np.all(data != self._nodata_values, axis=0)
        if self._check_finite:
            valid &= np.all(np.isfinite(data), axis=0)
        return data, valid

    def _read_scaled(
        self, window: Window, out: Optional[np.ndarray] = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Read ``window`` of the work grid from a coarser source in the same CRS."""
        if self._scaled is None:
            raise RuntimeError("Not a scaled source (internal error).")
        col0, col_step, row0, row_step = self._scaled
        src = self._src
        h, w = int(window.height), int(window.width)
        rows = _axis_samples(row0, row_step, int(window.row_off), h, src.height, self._bilinear)
        cols = _axis_samples(col0, col_step, int(window.col_off), w, src.width, self._bilinear)
        bands = list(self.bands)
        if rows.count == 0 or cols.count == 0:
            if out is None:
                out = np.empty((len(bands), h, w), np.float32)
            out[...] = 0.0
            return out, np.zeros((h, w), bool)
        block = Window(cols.low, rows.low, cols.count, rows.count)
        padded = np.zeros((len(bands), rows.count + 2, cols.count + 2), dtype=np.float32)
        inner = padded[:, 1:-1, 1:-1]
        inner[...] = src.read(bands, window=block, out_dtype="float32")
        # Validity per band, as GDAL's warper keeps it; the tile's mask is their AND.
        valid: Optional[np.ndarray] = None
        if self._read_masks:
            valid = src.read_masks(bands, window=block) > 0
        if self._nodata_values is not None:
            ok = inner != self._nodata_values
            valid = ok if valid is None else valid & ok
        if self._check_finite:
            ok = np.isfinite(inner)
            if not ok.all():
                inner[~ok] = 0.0  # keep NaN out of the weighted sums
            valid = ok if valid is None else valid & ok
        padded_valid: Optional[np.ndarray] = None
        if valid is not None and not valid.all():
            padded_valid = np.zeros(padded.shape, dtype=bool)
            padded_valid[:, 1:-1, 1:-1] = valid
        return _resample_block(padded, padded_valid, rows, cols, self._bilinear, out)

    def has_valid_pixels(self, window: Window, sample: int = 256) -> bool:
        """Tell whether any pixel of the file under ``window`` (work grid) is valid.

        The check reads the file itself, not the warp (a decimated read of a warped scene would
        warp all of it): first a few small windows at full resolution (the usual answer, for
        the cost of a block or two each), then decimated (at most ``sample`` pixels a side,
        cheap with overviews or JPEG2000 resolution levels, but a decoding of every block of a
        plain compressed GeoTIFF), then, only when that finds nothing, at full resolution in
        strips of a few MB, so a small valid area is never missed.

        Args:
            window: Integer window of the work grid.
            sample: Side of the decimated read.

        Returns:
            True when at least one pixel is valid.

        Raises:
            InputFileError: when GDAL cannot read the file.
        """
        try:
            return self._has_valid_pixels(window, sample)
        except READ_ERRORS as error:
            raise read_failure(self.path, window, error) from None

    def _has_valid_pixels(self, window: Window, sample: int) -> bool:
        native = self._native_window(window)
        if native is None:
            return False
        h, w = int(native.height), int(native.width)
        if h > sample or w > sample:
            ph, pw = min(_PROBE, h), min(_PROBE, w)
            for fy, fx in _PROBE_SPOTS:
                top = int(native.row_off) + int((h - ph) * fy)
                left = int(native.col_off) + int((w - pw) * fx)
                if self._native_valid(Window(left, top, pw, ph), (ph, pw)):
                    return True
        shape = (min(h, sample), min(w, sample))
        if self._native_valid(native, shape):
            return True
        if shape == (h, w):
            return False
        strip = max(1, (4 << 20) // max(1, w * len(self.bands)))
        for top in range(0, h, strip):
            rows = min(strip, h - top)
            part = Window(native.col_off, native.row_off + top, w, rows)
            if self._native_valid(part, (rows, w)):
                return True
        return False

    def sample_values(self, window: Window, size: int = 64, grid: int = 3) -> np.ndarray:
        """Valid values of the selected bands, from a few small windows of the file itself.

        ``grid`` × ``grid`` windows of ``size`` pixels spread over the file's part under
        ``window`` are read at full resolution (a block or two each, never the whole file), so
        the statistics check of a run costs milliseconds whatever the scene size.

        Args:
            window: Integer window of the work grid.
            size: Edge of each sampled window (file pixels).
            grid: Windows per axis.

        Returns:
            ``float32 [bands, n]``: the values of the pixels valid in every selected band
            (``n`` may be 0).

        Raises:
            InputFileError: when GDAL cannot read the file.
        """
        native = self._native_window(window)
        if native is None:
            return np.empty((len(self.bands), 0), np.float32)
        h, w = int(native.height), int(native.width)
        ph, pw = min(size, h), min(size, w)
        spots = [(k + 0.5) / grid for k in range(grid)]
        parts = []
        for fy in spots:
            for fx in spots:
                top = int(native.row_off) + int((h - ph) * fy)
                left = int(native.col_off) + int((w - pw) * fx)
                part = Window(left, top, pw, ph)
                try:
                    data = self._src.read(list(self.bands), window=part, out_dtype="float32")
                    masks = self._src.read_masks(list(self.bands), window=part)
                except READ_ERRORS as error:
                    raise read_failure(self.path, window, error) from None
                valid = np.all(masks > 0, axis=0) & np.all(np.isfinite(data), axis=0)
                if self._override is not None:
                    valid &= np.all(data != np.float32(self._override), axis=0)
                parts.append(data[:, valid])
        return np.concatenate(parts, axis=1) if parts else np.empty((len(self.bands), 0))

    @property
    def band_dtypes(self) -> tuple[str, ...]:
        """Data type of each selected band in the file."""
        return tuple(self._src.dtypes[b - 1] for b in self.bands)

    def _native_window(self, window: Window) -> Optional[Window]:
        """The file's own pixels under ``window`` of the work grid (None when it has none)."""
        if self._offset is not None:
            row, col = self._offset or (0, 0)
            return Window(window.col_off + col, window.row_off + row, window.width, window.height)
        transform = rasterio.windows.transform(window, self.grid.transform)
        bounds = _array_bounds(int(window.height), int(window.width), transform)
        src = self._src
        if src.crs != self.grid.crs:
            bounds = transform_bounds(self.grid.crs, src.crs, *bounds, densify_pts=21)
        found = rasterio.windows.from_bounds(*bounds, transform=src.transform)
        return intersect_windows(_round_window(found), Window(0, 0, src.width, src.height))

    def _native_valid(self, window: Window, shape: tuple[int, int]) -> bool:
        bands = list(self.bands)
        src = self._src
        masks = src.read_masks(bands, window=window, out_shape=(len(bands), *shape))
        valid = np.all(masks > 0, axis=0)
        if not valid.any():
            return False
        data = src.read(bands, window=window, out_shape=(len(bands), *shape), out_dtype="float32")
        valid &= np.all(np.isfinite(data), axis=0)
        if self._override is not None:
            valid &= np.all(data != np.float32(self._override), axis=0)
        return bool(valid.any())

    def block_cache_bytes(self, rows: int, cols: Optional[int] = None) -> int:
        """Estimate the decoded blocks GDAL keeps to read ``rows`` × ``cols`` pixels of the grid.

        When the block cache holds them, tiles that overlap (side by side, and the next row of
        tiles) reuse decoded blocks instead of decoding them again; more does not help, as the
        tiles move down the scene and never come back.

        Args:
            rows: Rows of the work grid read while their blocks are still useful (a row of
                tiles and the next one).
            cols: Columns read side by side (a stripe of tiles); None for the full width.

        Returns:
            Bytes of decoded blocks of the file (every band of it, as a pixel-interleaved file
            decodes them together), plus the warped blocks of a ``WarpedVRT``.
        """
        src = self._src
        full = Window(0, 0, self.grid.width, self.grid.height)
        native = self._native_window(full)
        if native is None:
            return 0
        block_h, block_w = src.block_shapes[0]
        itemsize = max(np.dtype(d).itemsize for d in src.dtypes)
        cols = self.grid.width if cols is None else min(int(cols), self.grid.width)
        native_rows = math.ceil(rows * float(native.height) / max(1, self.grid.height))
        native_cols = math.ceil(cols * float(native.width) / max(1, self.grid.width))
        height = min(src.height, (math.ceil(native_rows / block_h) + 1) * block_h)
        # A window that does not start on a block boundary straddles one more block.
        width = min(src.width, (math.ceil(native_cols / block_w) + 1) * block_w)
        total = height * width * itemsize * src.count
        if self._vrt is not None:
            vrt_h, vrt_w = self._vrt.block_shapes[0]
            vrt_rows = min(self.grid.height, rows + 2 * vrt_h)
            vrt_cols = min(self.grid.width, cols + 2 * vrt_w)
            total += vrt_rows * vrt_cols * 4 * self._vrt.count
        return int(total)

    def close(self) -> None:
        """Close the warp and the file."""
        if self._vrt is not None:
            self._vrt.close()
            self._vrt = None
        self._src.close()
