"""Change polygons: the change mask as vector features with their area.

Used by the "Vectorise changes" Processing algorithm and the command line. GDAL's polygoniser
reads the mask by blocks, so memory does not grow with the scene; polygons smaller than the
minimum area are dropped and the rest simplified (topology preserved).
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from osgeo import gdal, ogr, osr

from .errors import InputError, InputFileError, OutputError
from .integrity import check_raster_file
from .protection import ProtectedFiles, check_destinations

logger = logging.getLogger(__name__)

# GDAL's exception mode is process-wide; QGIS and its other plugins expect it off, so this
# module checks return values instead of calling gdal.UseExceptions().

#: Field names of the written polygons.
FIELD_VALUE = "change"
FIELD_AREA = "area_m2"
FIELD_AREA_HA = "area_ha"


@dataclass(frozen=True)
class VectoriseResult:
    """What :func:`vectorise_mask` wrote.

    Attributes:
        path: the vector file.
        layer: its layer name.
        count: number of polygons kept.
        dropped: polygons removed for being smaller than the minimum area.
        total_area_m2: summed area of the kept polygons in square metres (None on a pixel grid).
    """

    path: str
    layer: str
    count: int
    dropped: int
    total_area_m2: Optional[float]


def _area_m2(geometry: ogr.Geometry, srs: Optional[osr.SpatialReference]) -> Optional[float]:
    """Area in square metres: planar in a projected CRS, on a local equal-area projection in a
    geographic one, None without a CRS."""
    if srs is None:
        return None
    if srs.IsProjected():
        return geometry.GetArea() * srs.GetLinearUnits() ** 2
    centroid = geometry.Centroid()
    local = osr.SpatialReference()
    local.SetLAEA(centroid.GetY(), centroid.GetX(), 0, 0)
    local.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    source = srs.Clone()
    source.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    clone = geometry.Clone()
    clone.Transform(osr.CoordinateTransformation(source, local))
    return clone.GetArea()


def vectorise_mask(
    mask_path: str,
    output_path: str,
    value: int = 1,
    min_area_m2: float = 0.0,
    simplify: float = 0.0,
    layer_name: str = "changes",
    driver: str = "",
) -> VectoriseResult:
    """Write the pixels equal to ``value`` of a mask raster as polygons with their area.

    Args:
        mask_path: single-band mask raster (e.g. ``<name>_mask.tif``: 1 change, 0 no change,
            255 nodata).
        output_path: vector file to write (GeoPackage by default; the extension picks the
            driver: ``.shp``, ``.geojson``, ``.gpkg``). An existing file is replaced.
        value: the pixel value to vectorise.
        min_area_m2: drop polygons smaller than this (square metres; in pixels² on a pixel grid).
        simplify: simplification tolerance in the raster's CRS units (0: none).
        layer_name: name of the written layer.
        driver: OGR driver name; empty: from the extension.

    Returns:
        A :class:`VectoriseResult`.

    Raises:
        InputFileError: the mask cannot be opened.
        InputError: the mask has more than one band.
        OutputError: the vector file cannot be written, or would replace the mask (or one of
            its files).
    """
    if not os.path.isfile(mask_path):
        raise InputFileError(f"The change mask {mask_path} does not exist.")
    check_destinations(
        {"the change polygons": output_path},
        ProtectedFiles().add_raster(mask_path, f"the change mask {mask_path}"),
        with_derived=False,
    )
    check_raster_file(mask_path)
    raster = gdal.Open(mask_path)
    if raster is None:
        raise InputFileError(
            f"GDAL cannot open the change mask {mask_path}: {gdal.GetLastErrorMsg()}"
        )
    if raster.RasterCount != 1:
        raise InputError(
            f"{mask_path} has {raster.RasterCount} bands; give the single-band change mask."
        )
    band = raster.GetRasterBand(1)
    wkt = raster.GetProjection()
    srs = osr.SpatialReference(wkt=wkt) if wkt else None
    pixel = abs(raster.GetGeoTransform()[1] * raster.GetGeoTransform()[5])

    memory = ogr.GetDriverByName("Memory").CreateDataSource("polygons")
    scratch = memory.CreateLayer("raw", srs=srs, geom_type=ogr.wkbPolygon)
    scratch.CreateField(ogr.FieldDefn("value", ogr.OFTInteger))
    # Polygonise only the wanted value: the mask band masks everything else out.
    mem_raster = gdal.GetDriverByName("MEM").Create(
        "", raster.RasterXSize, raster.RasterYSize, 1, gdal.GDT_Byte
    )
    mem_raster.SetGeoTransform(raster.GetGeoTransform())
    if wkt:
        mem_raster.SetProjection(wkt)
    block_rows = 512
    for row in range(0, raster.RasterYSize, block_rows):
        rows = min(block_rows, raster.RasterYSize - row)
        data = band.ReadAsArray(0, row, raster.RasterXSize, rows)
        mem_raster.GetRasterBand(1).WriteArray((data == value).astype("uint8"), 0, row)
    wanted = mem_raster.GetRasterBand(1)
    gdal.Polygonize(wanted, wanted, scratch, 0, [], callback=None)

    out = Path(output_path)
    if not driver:
        driver = {".shp": "ESRI Shapefile", ".geojson": "GeoJSON", ".json": "GeoJSON"}.get(
            out.suffix.lower(), "GPKG"
        )
    ogr_driver = ogr.GetDriverByName(driver)
    if ogr_driver is None:
        raise OutputError(f"GDAL has no vector driver {driver!r} for {out}.")
    if out.exists():
        ogr_driver.DeleteDataSource(str(out))
    target = ogr_driver.CreateDataSource(str(out))
    layer = (
        None
        if target is None
        else target.CreateLayer(layer_name, srs=srs, geom_type=ogr.wkbMultiPolygon)
    )
    if layer is None:
        raise OutputError(
            f"Cannot write {out}: {gdal.GetLastErrorMsg() or 'unknown error'}. "
            "Choose a writable file."
        )
    layer.CreateField(ogr.FieldDefn(FIELD_VALUE, ogr.OFTInteger))
    area_field = ogr.FieldDefn(FIELD_AREA, ogr.OFTReal)
    layer.CreateField(area_field)
    layer.CreateField(ogr.FieldDefn(FIELD_AREA_HA, ogr.OFTReal))
    definition = layer.GetLayerDefn()
    kept = dropped = 0
    total = 0.0
    layer.StartTransaction()
    for feature in scratch:
        geometry = feature.GetGeometryRef()
        area = _area_m2(geometry, srs)
        size = area if area is not None else geometry.GetArea() / max(pixel, 1e-12)
        if size < min_area_m2:
            dropped += 1
            continue
        if simplify > 0:
            simplified = geometry.SimplifyPreserveTopology(simplify)
            if simplified is not None and not simplified.IsEmpty():
                geometry = simplified
        out_feature = ogr.Feature(definition)
        out_feature.SetGeometry(ogr.ForceToMultiPolygon(geometry))
        out_feature.SetField(FIELD_VALUE, int(value))
        if area is not None:
            out_feature.SetField(FIELD_AREA, float(area))
            out_feature.SetField(FIELD_AREA_HA, float(area) / 10000.0)
            total += area
        layer.CreateFeature(out_feature)
        kept += 1
    layer.CommitTransaction()
    target = None  # flush and close
    logger.info("Vectorised %s: %d polygons kept, %d dropped.", mask_path, kept, dropped)
    return VectoriseResult(
        str(out),
        layer_name,
        kept,
        dropped,
        total if srs is not None and math.isfinite(total) else None,
    )
