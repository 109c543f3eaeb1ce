"""Labelled polygons on disk: which files are read as polygons, and their class field.

Standard library and GDAL only (no torch): the dock's Train tab reads a field's values with it
in QGIS's own Python, and the training chips burn the polygons after opening them here.
"""

from __future__ import annotations

from typing import Any

from .errors import DatasetError

__all__ = ["VECTOR_EXTENSIONS", "open_class_layer"]

#: Label files read as polygons (the rest are label rasters).
VECTOR_EXTENSIONS = (".gpkg", ".shp", ".geojson", ".json", ".fgb", ".kml", ".gml", ".sqlite")


def open_class_layer(path: str, field_name: str) -> tuple[Any, Any]:
    """The OGR data source and first layer of a vector file that has ``field_name``.

    Returns:
        ``(data source, layer)``: keep the data source while the layer is used.

    Raises:
        DatasetError: the file cannot be read, holds no layer, or lacks the field.
    """
    from osgeo import ogr

    ds = ogr.Open(str(path))
    if ds is None or ds.GetLayerCount() == 0:
        raise DatasetError(f"Cannot read polygons from {path}; give a vector file with a layer.")
    layer = ds.GetLayer(0)
    definition = layer.GetLayerDefn()
    names = [definition.GetFieldDefn(i).GetName() for i in range(definition.GetFieldCount())]
    if field_name not in names:
        raise DatasetError(f"{path} has no field '{field_name}'; its fields are {names}.")
    return ds, layer
