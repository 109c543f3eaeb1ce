"""The area of interest on the reference grid: bounds or polygons, as a window and a mask.

:func:`build_area_mask` reads the polygons (OGR) or takes the bounds, reprojects them to the
grid's CRS and returns an :class:`AreaMask`, which rasterises the polygons tile by tile.
"""

from __future__ import annotations

import json
import logging
import math
import os
from typing import Any, Optional, Sequence

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.errors import CRSError
from rasterio.features import rasterize
from rasterio.warp import transform_geom
from rasterio.windows import Window

from ..errors import AreaOfInterestError
from ..requests import AreaOfInterest
from .grid import Grid, _array_bounds, _bounds_window, _crs_text

logger = logging.getLogger(__name__)


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
