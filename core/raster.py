"""Raster sources read on one reference grid, lazily; areas of interest; pixel areas.

DESIGN.md §2.3: every input is read on the reference grid through a lazy warp (rasterio
``WarpedVRT``), window by window, so nothing is resampled to disk first and memory stays at the
size of a tile. Inputs may differ in CRS, resolution (Sentinel-2 bands at 10/20/60 m as separate
files), extent and data type. A source already on the grid (same CRS and pixel size, whole-pixel
offset) is read directly, which is exact and faster. A source in the grid's CRS with pixels at
least as large (Sentinel-2's 20 and 60 m bands on the 10 m grid) is resampled here with numpy,
rows and columns separately, with GDAL's bilinear / nearest conventions and about ten times
faster than GDAL's general warper, which still handles every other case (another CRS,
rotation, finer sources). GDAL's block cache is bounded during a run
(:func:`bounded_block_cache`), so decoded blocks do not pile up with the scene size.

Validity: a pixel is valid when every selected band of every source has data there: the file's
nodata value (or the request's override), its mask or alpha band, non-finite values, and the
area outside the source's footprint all make it invalid. Invalid pixels become the outputs'
reserved nodata value.

Pixel-grid mode (``pixel_grid=True``) is for plain images without georeferencing, such as the
LEVIR-CD PNG tiles: all inputs must have the same width and height, pixels are taken as they
are, and the outputs carry no CRS.

Thread use: a dataset opened here is read by one thread at a time (the engine's reader thread);
GDAL handles must not be shared between threads concurrently.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import threading
import warnings
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Iterator, Optional, Sequence

import numpy as np
import rasterio
from affine import Affine
from rasterio._err import CPLE_BaseError
from rasterio.crs import CRS
from rasterio.enums import MaskFlags, Resampling
from rasterio.errors import CRSError, NotGeoreferencedWarning, RasterioError, RasterioIOError
from rasterio.features import rasterize
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_bounds, transform_geom
from rasterio.windows import Window

from .band_mapping import FileBands, select_file_bands
from .errors import (
    AlignmentError,
    AreaOfInterestError,
    GeoreferenceError,
    InputFileError,
)
from .integrity import check_raster_file, read_failure
from .requests import AreaOfInterest, RasterSource

logger = logging.getLogger(__name__)

__all__ = [
    "READ_ERRORS",
    "AlignedSource",
    "AlignedStack",
    "AreaMask",
    "Grid",
    "SourceInfo",
    "bounded_block_cache",
    "build_area_mask",
    "check_georeferenced",
    "choose_reference",
    "footprint_window",
    "inspect_raster",
    "intersect_windows",
    "open_aligned",
    "select_bands",
]

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


class AreaMask:
    """The area of interest on the reference grid: a window and, for polygons, a pixel mask.

    Pixels whose centre lies inside a polygon are in the area. The polygons are kept as
    vectors (already in the grid's CRS) and rasterised tile by tile, so memory does not grow
    with the scene.

    Args:
        window: The window of the reference grid that holds the area.
        geometries: GeoJSON-like polygons in the grid's CRS, or None when the whole window is
            the area (bounds given in the grid's CRS).
    """

    def __init__(self, window: Window, geometries: Optional[list[dict[str, Any]]] = None) -> None:
        self.window = window
        self._geometries = geometries or None
        self._boxes = (
            [_geometry_bbox(g) for g in self._geometries] if self._geometries is not None else []
        )

    @property
    def is_rectangle(self) -> bool:
        """Whether the area is exactly its window (no polygon mask)."""
        return self._geometries is None

    def mask(self, grid: Grid, window: Window) -> Optional[np.ndarray]:
        """Rasterise the area on ``window`` of ``grid``.

        Args:
            grid: The grid the window refers to (the work grid).
            window: An integer window of ``grid``.

        Returns:
            ``bool [h, w]``, or None when every pixel is inside (rectangular areas).
        """
        if self._geometries is None:
            return None
        h, w = int(window.height), int(window.width)
        transform = rasterio.windows.transform(window, grid.transform)
        xmin, ymin, xmax, ymax = _array_bounds(h, w, transform)
        shapes = [
            (geometry, 1)
            for geometry, (gx0, gy0, gx1, gy1) in zip(self._geometries, self._boxes)
            if gx0 <= xmax and gx1 >= xmin and gy0 <= ymax and gy1 >= ymin
        ]
        if not shapes:
            return np.zeros((h, w), dtype=bool)
        burned = rasterize(shapes, out_shape=(h, w), transform=transform, fill=0, dtype="uint8")
        return burned.astype(bool)


def _geometry_bbox(geometry: dict[str, Any]) -> tuple[float, float, float, float]:
    coords = np.asarray([pt for ring in _rings(geometry) for pt in ring], dtype=np.float64).reshape(
        -1, 2
    )
    return (
        float(coords[:, 0].min()),
        float(coords[:, 1].min()),
        float(coords[:, 0].max()),
        float(coords[:, 1].max()),
    )


def _rings(geometry: dict[str, Any]) -> list[list[Sequence[float]]]:
    kind = geometry["type"]
    if kind == "Polygon":
        return [list(map(tuple, ring)) for ring in geometry["coordinates"]]
    if kind == "MultiPolygon":
        return [list(map(tuple, ring)) for poly in geometry["coordinates"] for ring in poly]
    if kind == "GeometryCollection":
        return [r for g in geometry["geometries"] for r in _rings(g)]
    return []


def _read_polygons(aoi: AreaOfInterest) -> tuple[list[dict[str, Any]], Optional[CRS]]:
    """Read the polygons of ``aoi.polygon_file`` with OGR, in the file's own CRS."""
    from osgeo import ogr  # GDAL's vector half; imported only when a polygon file is used

    path = str(aoi.polygon_file)
    if not os.path.exists(path):
        raise AreaOfInterestError(f"Area-of-interest file {path} does not exist.")
    dataset = ogr.Open(path, 0)
    if dataset is None:
        raise AreaOfInterestError(
            f"GDAL/OGR cannot read {path} as vector data; give a GeoPackage, GeoJSON or "
            "Shapefile with polygons."
        )
    try:
        if aoi.layer:
            layer = dataset.GetLayerByName(aoi.layer)
            if layer is None:
                names = [
                    dataset.GetLayerByIndex(i).GetName() for i in range(dataset.GetLayerCount())
                ]
                raise AreaOfInterestError(
                    f"{path} has no layer '{aoi.layer}'; its layers: {', '.join(names)}."
                )
        else:
            if dataset.GetLayerCount() == 0:
                raise AreaOfInterestError(f"{path} holds no vector layer.")
            layer = dataset.GetLayer(0)
        srs = layer.GetSpatialRef()
        crs = CRS.from_wkt(srs.ExportToWkt()) if srs is not None else None
        geometries: list[dict[str, Any]] = []
        skipped = 0
        layer.ResetReading()
        feature = layer.GetNextFeature()
        while feature is not None:
            geometry = feature.GetGeometryRef()
            if geometry is not None:
                linear = geometry.GetLinearGeometry()  # curves (GeoPackage) to line segments
                shape = json.loads(linear.ExportToJson())
                if shape.get("type") in {"Polygon", "MultiPolygon"}:
                    geometries.append(shape)
                else:
                    skipped += 1
            feature = layer.GetNextFeature()
    finally:
        dataset = None  # closes the OGR data source
    if skipped:
        logger.warning("Ignored %d non-polygon feature(s) of %s.", skipped, path)
    if not geometries:
        raise AreaOfInterestError(
            f"{path} holds no polygon; the area of interest must be polygons (not points/lines)."
        )
    return geometries, crs


def _rectangle(bounds: Sequence[float], points: int = 21) -> dict[str, Any]:
    """A densified rectangle polygon, so that it bends correctly when reprojected."""
    xmin, ymin, xmax, ymax = bounds
    xs = np.linspace(xmin, xmax, points)
    ys = np.linspace(ymin, ymax, points)
    ring = (
        [(x, ymin) for x in xs]
        + [(xmax, y) for y in ys[1:]]
        + [(x, ymax) for x in xs[::-1][1:]]
        + [(xmin, y) for y in ys[::-1][1:]]
    )
    return {"type": "Polygon", "coordinates": [[list(map(float, p)) for p in ring]]}


def build_area_mask(aoi: AreaOfInterest, grid: Grid) -> AreaMask:
    """Put an area of interest on the reference grid.

    Args:
        aoi: Bounds with a CRS, or a polygon file.
        grid: The reference grid (georeferenced).

    Returns:
        The :class:`AreaMask`.

    Raises:
        AreaOfInterestError: for an unreadable file, a CRS that cannot be used, no polygons,
            or an area that lies outside the reference grid.
    """
    if grid.crs is None:
        raise AreaOfInterestError(
            "An area of interest needs georeferenced inputs; remove it in pixel-grid mode."
        )
    geometries: Optional[list[dict[str, Any]]]
    if aoi.bounds is not None:
        if aoi.crs is None:
            src_crs = grid.crs
        else:
            try:
                src_crs = CRS.from_user_input(aoi.crs)
            except CRSError:
                raise AreaOfInterestError(
                    f"Unknown CRS '{aoi.crs}' for the area of interest; use e.g. EPSG:4326."
                ) from None
        geometries = None if src_crs == grid.crs else [_rectangle(aoi.bounds)]
        if geometries is None:
            window = _bounds_window(aoi.bounds, grid)
            if window is None:
                raise AreaOfInterestError(_outside_message(tuple(aoi.bounds), grid))
            return AreaMask(window, None)
    else:
        geometries, src_crs = _read_polygons(aoi)
        if src_crs is None:
            raise AreaOfInterestError(
                f"{aoi.polygon_file} has no CRS; assign one (e.g. a .prj next to a Shapefile)."
            )
    try:
        if src_crs != grid.crs:
            geometries = [transform_geom(src_crs, grid.crs, g) for g in geometries]
    except (CRSError, ValueError) as error:
        raise AreaOfInterestError(
            f"The area of interest cannot be transformed to {_crs_text(grid.crs)}: {error}."
        ) from None
    boxes = [_geometry_bbox(g) for g in geometries]
    union = (
        min(b[0] for b in boxes),
        min(b[1] for b in boxes),
        max(b[2] for b in boxes),
        max(b[3] for b in boxes),
    )
    if not all(math.isfinite(v) for v in union):
        raise AreaOfInterestError("The area of interest cannot be placed on the reference grid.")
    window = _bounds_window(union, grid)
    if window is None:
        raise AreaOfInterestError(_outside_message(union, grid))
    return AreaMask(window, geometries)


def _outside_message(bounds: Sequence[float], grid: Grid) -> str:
    """Say where the area and the inputs are, and what to check, when they do not meet."""

    def text(values: Sequence[float]) -> str:
        return "(" + ", ".join(f"{v:.6g}" for v in values) + ")"

    return (
        f"The area of interest {text(bounds)} lies outside the inputs, whose reference extent "
        f"is {text(grid.bounds)} in {_crs_text(grid.crs)}. Check that the area is in the CRS "
        "you think (--bounds-crs for --bounds; the layer's CRS for a polygon file), that it is "
        "drawn over the imagery (in QGIS: zoom to the input layer and draw it there), or leave "
        "it out to map the whole overlap of the inputs."
    )


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


#: Side of the full-resolution windows :meth:`AlignedSource.has_valid_pixels` tries first, and
#: where they lie (fractions of the height and width): the centre, then the four quarters.
_PROBE = 32
_PROBE_SPOTS = ((0.5, 0.5), (0.25, 0.25), (0.25, 0.75), (0.75, 0.25), (0.75, 0.75))
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
