"""The reference grid, windows on it, and what an input file holds.

:class:`Grid` (size, transform, CRS, pixel areas), window arithmetic on a grid, and the inputs'
metadata read once at validation (:class:`SourceInfo`, :func:`inspect_raster`): their
georeferencing, band selection, the choice of the reference file and each file's footprint on
the reference grid.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np
import rasterio
from affine import Affine
from rasterio._err import CPLE_BaseError
from rasterio.crs import CRS
from rasterio.errors import CRSError, NotGeoreferencedWarning, RasterioError, RasterioIOError
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from ..band_mapping import FileBands, select_file_bands
from ..errors import AlignmentError, GeoreferenceError, InputFileError
from ..integrity import check_raster_file

#: Authalic radius of WGS 84 (m): a sphere with the ellipsoid's surface area, for pixel areas
#: of geographic grids (error well below 0.5 % at any latitude).
_AUTHALIC_RADIUS_M = 6_371_007.2
#: Tolerance, in pixels, under which a window edge is taken as lying on a pixel edge.
_EDGE_TOLERANCE = 1e-6


@dataclass(frozen=True)
class Grid:
    """A raster grid: size, affine transform and CRS (None for pixel-grid mode).

    Attributes:
        width: Columns.
        height: Rows.
        transform: Pixel (col, row) to map (x, y).
        crs: The CRS, or None for a plain pixel grid.
    """

    width: int
    height: int
    transform: Affine
    crs: Optional[CRS]

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(xmin, ymin, xmax, ymax)`` in the grid's CRS."""
        return _array_bounds(self.height, self.width, self.transform)

    @property
    def res(self) -> tuple[float, float]:
        """Pixel size ``(x, y)``, positive."""
        return abs(self.transform.a), abs(self.transform.e)

    @property
    def georeferenced(self) -> bool:
        """Whether the grid has a CRS."""
        return self.crs is not None

    def window_grid(self, window: Window) -> Grid:
        """Return the grid of ``window`` (integer offsets and sizes) of this grid."""
        return Grid(
            width=int(window.width),
            height=int(window.height),
            transform=rasterio.windows.transform(window, self.transform),
            crs=self.crs,
        )

    def describe(self) -> dict[str, Any]:
        """Return a JSON-compatible description for run reports."""
        return {
            "width": self.width,
            "height": self.height,
            "transform": list(self.transform)[:6],
            "crs": _crs_text(self.crs),
            "bounds": list(self.bounds),
            "pixel_size": list(self.res),
        }

    def pixel_areas_m2(self, row: int, rows: int) -> Optional[np.ndarray]:
        """Return the area of one pixel of each row ``row .. row + rows``, in square metres.

        Projected grids: ``|det(transform)|`` times the squared unit. Geographic grids: the
        area of a latitude band on the authalic sphere, which shrinks with ``cos(latitude)``.

        Args:
            row: First row.
            rows: Number of rows.

        Returns:
            ``float64 [rows]``, or None for a pixel grid or a CRS whose units are unknown.
        """
        if self.crs is None:
            return None
        t = self.transform
        if self.crs.is_geographic:
            if t.b or t.d:
                return None
            tops = t.f + t.e * np.arange(row, row + rows, dtype=np.float64)
            lat1 = np.radians(np.clip(tops, -90.0, 90.0))
            lat2 = np.radians(np.clip(tops + t.e, -90.0, 90.0))
            lon_span = math.radians(abs(t.a))
            return _AUTHALIC_RADIUS_M**2 * lon_span * np.abs(np.sin(lat1) - np.sin(lat2))
        try:
            _, factor = self.crs.linear_units_factor
        except CRSError:
            return None
        area = abs(t.a * t.e - t.b * t.d) * float(factor) ** 2
        return np.full(rows, area, dtype=np.float64)


def _array_bounds(height: int, width: int, transform: Affine) -> tuple[float, float, float, float]:
    corners = [transform * (c, r) for c in (0, width) for r in (0, height)]
    xs = [p[0] for p in corners]
    ys = [p[1] for p in corners]
    return min(xs), min(ys), max(xs), max(ys)


def _crs_text(crs: Optional[CRS]) -> Optional[str]:
    if crs is None:
        return None
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else crs.to_wkt()


@dataclass(frozen=True)
class SourceInfo:
    """What a raster file holds (read once at validation; the file is closed again).

    Attributes:
        path: The file.
        width: Columns.
        height: Rows.
        count: Number of bands.
        crs: Its CRS, or None.
        transform: Its geotransform (identity when it has none).
        has_geotransform: Whether the file has a real geotransform.
        nodata: The file's nodata value (of band 1), or None.
        dtypes: Data type of each band.
        descriptions: GDAL description of each band ('' when absent).
    """

    path: str
    width: int
    height: int
    count: int
    crs: Optional[CRS]
    transform: Affine
    has_geotransform: bool
    nodata: Optional[float]
    dtypes: tuple[str, ...]
    descriptions: tuple[str, ...]

    @property
    def georeferenced(self) -> bool:
        """Whether the file has both a CRS and a geotransform."""
        return self.crs is not None and self.has_geotransform

    @property
    def grid(self) -> Grid:
        """The file's own grid."""
        return Grid(self.width, self.height, self.transform, self.crs)


def _open(path: str) -> rasterio.io.DatasetReader:
    """Open ``path`` read-only, turning every failure into an :class:`InputFileError`."""
    if not os.path.exists(path):
        raise InputFileError(f"Input raster {path} does not exist; check the path.")
    if os.path.isdir(path):
        raise InputFileError(f"Input {path} is a folder; give the raster file inside it.")
    if not os.access(path, os.R_OK):
        raise InputFileError(f"Input raster {path} cannot be read (permissions).")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(path, "r")
    except (RasterioIOError, OSError) as error:
        raise InputFileError(
            f"GDAL cannot read {path} as a raster ({error}); check that it is a complete "
            "GeoTIFF, JPEG2000, VRT or other GDAL raster."
        ) from None


#: What GDAL and rasterio raise when pixels cannot be read (CPLE_* errors derive from
#: CPLE_BaseError, rasterio's own from RasterioError).
READ_ERRORS: tuple[type[BaseException], ...] = (RasterioError, CPLE_BaseError, OSError)


def inspect_raster(path: str) -> SourceInfo:
    """Read the metadata of a raster file.

    Args:
        path: The file.

    Returns:
        Its :class:`SourceInfo`.

    Raises:
        InputFileError: if the file is missing, a folder, unreadable or not a raster, or is
            damaged (cut short, a VRT whose sources are missing: :mod:`~landfuse.core.integrity`).
    """
    with _open(path) as src:
        check_raster_file(path)
        # GDAL reports the identity transform (y down) when a file has none.
        has_transform = src.transform != Affine.identity()
        return SourceInfo(
            path=path,
            width=src.width,
            height=src.height,
            count=src.count,
            crs=src.crs if src.crs else None,
            transform=src.transform,
            has_geotransform=has_transform,
            nodata=src.nodata,
            dtypes=tuple(src.dtypes),
            descriptions=tuple(d or "" for d in src.descriptions),
        )


def check_georeferenced(info: SourceInfo) -> None:
    """Raise unless ``info`` has a CRS and a geotransform.

    Args:
        info: The file's metadata.

    Raises:
        GeoreferenceError: naming what is missing and pointing to pixel-grid mode for plain
            images.
    """
    if info.georeferenced:
        return
    missing = " and ".join(
        part
        for part, absent in (
            ("a CRS", info.crs is None),
            ("a geotransform", not info.has_geotransform),
        )
        if absent
    )
    raise GeoreferenceError(
        f"{info.path} has no georeferencing ({missing} missing). Assign it in QGIS or with "
        "gdal_edit.py -a_srs / -a_ullr; or, for plain images that share one pixel grid (e.g. "
        "LEVIR-CD PNG tiles), use the pixel-grid mode (--pixel-grid)."
    )


def select_bands(info: SourceInfo, bands: Sequence[int | str]) -> tuple[int, ...]:
    """Resolve a band selection to 1-based band indexes of ``info``.

    Args:
        info: The file's metadata.
        bands: 1-based indices or band descriptions (``"B8A"``, ``"VV"``), compared as
            :func:`~landfuse.core.band_mapping.normalise_band_name` does (``"B2"`` = ``"B02"``
            = ``"S2_B2"``). Empty: all bands.

    Returns:
        Band indexes in the order asked.

    Raises:
        BandMismatchError: for an index out of range or a name no band carries.
    """
    return select_file_bands(FileBands(info.path, info.descriptions, tuple(bands)))


def choose_reference(infos: Sequence[SourceInfo], reference: Optional[str] = None) -> SourceInfo:
    """Pick the raster whose grid the run uses.

    Args:
        infos: The files of the first modality (Sentinel-2, or the 'before' image).
        reference: An explicit reference file (may be any readable raster).

    Returns:
        The explicit reference, else the file with the finest pixel size among those sharing
        the first file's CRS (first one on ties): for Sentinel-2 bands given as separate files
        this is the first 10 m band.

    Raises:
        InputFileError: if the explicit reference cannot be read.
    """
    if reference is not None:
        for info in infos:
            if os.path.abspath(info.path) == os.path.abspath(reference):
                return info
        return inspect_raster(reference)
    first = infos[0]
    same_crs = [i for i in infos if i.crs == first.crs]
    return min(same_crs, key=lambda i: abs(i.transform.a * i.transform.e))


def _round_window(window: Window) -> Window:
    """Round a fractional window outwards to whole pixels (edges within 1e-6 px snap)."""
    col0 = math.floor(window.col_off + _EDGE_TOLERANCE)
    row0 = math.floor(window.row_off + _EDGE_TOLERANCE)
    col1 = math.ceil(window.col_off + window.width - _EDGE_TOLERANCE)
    row1 = math.ceil(window.row_off + window.height - _EDGE_TOLERANCE)
    return Window(col0, row0, max(0, col1 - col0), max(0, row1 - row0))


def intersect_windows(first: Window, second: Window) -> Optional[Window]:
    """Return the intersection of two integer windows, or None when they do not overlap."""
    col0 = max(first.col_off, second.col_off)
    row0 = max(first.row_off, second.row_off)
    col1 = min(first.col_off + first.width, second.col_off + second.width)
    row1 = min(first.row_off + first.height, second.row_off + second.height)
    if col1 <= col0 or row1 <= row0:
        return None
    return Window(int(col0), int(row0), int(col1 - col0), int(row1 - row0))


def _bounds_window(bounds: Sequence[float], grid: Grid) -> Optional[Window]:
    """Window of ``grid`` covering ``bounds`` (grid CRS), clipped to the grid; None if outside."""
    window = rasterio.windows.from_bounds(*bounds, transform=grid.transform)
    full = Window(0, 0, grid.width, grid.height)
    return intersect_windows(_round_window(window), full)


def footprint_window(info: SourceInfo, grid: Grid) -> Optional[Window]:
    """Return the part of ``grid`` that ``info`` covers, or None when it covers none of it.

    Args:
        info: A source (georeferenced unless the grid is a pixel grid).
        grid: The reference grid.

    Returns:
        An integer window of ``grid``.

    Raises:
        AlignmentError: if the source's CRS cannot be transformed to the grid's, or (pixel
            grid) its size differs from the grid's.
    """
    if grid.crs is None:
        if (info.width, info.height) != (grid.width, grid.height):
            raise AlignmentError(
                f"In pixel-grid mode every input must have the reference's size "
                f"{grid.width}x{grid.height}; {info.path} is {info.width}x{info.height}. "
                "Crop or resample it first, or give georeferenced inputs."
            )
        return Window(0, 0, grid.width, grid.height)
    src_bounds = _array_bounds(info.height, info.width, info.transform)
    try:
        bounds = transform_bounds(info.crs, grid.crs, *src_bounds, densify_pts=21)
    except (CRSError, ValueError, RasterioIOError) as error:
        raise AlignmentError(
            f"{info.path} ({_crs_text(info.crs)}) cannot be transformed to the reference CRS "
            f"({_crs_text(grid.crs)}): {error}. Reproject it first."
        ) from None
    if not all(math.isfinite(v) for v in bounds):
        raise AlignmentError(
            f"{info.path} lies outside the valid area of the reference CRS "
            f"{_crs_text(grid.crs)}; reproject the inputs to one CRS first."
        )
    return _bounds_window(bounds, grid)
