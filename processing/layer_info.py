"""What the dock shows about a raster layer before a run: bands, type, CRS, grid, nodata.

Read from the layer's data provider with ``qgis.core`` only (no pixels are read), so the same
summary serves the dock, Processing and tests.
"""

import re
from dataclasses import dataclass
from typing import Optional, Tuple

from qgis.core import Qgis, QgsRasterLayer, QgsUnitTypes

# Qgis.DataType values to the names GDAL users know.
_DATA_TYPE_NAMES = {
    Qgis.Byte: "Byte (uint8)",
    Qgis.UInt16: "UInt16",
    Qgis.Int16: "Int16",
    Qgis.UInt32: "UInt32",
    Qgis.Int32: "Int32",
    Qgis.Float32: "Float32",
    Qgis.Float64: "Float64",
    Qgis.CInt16: "CInt16",
    Qgis.CInt32: "CInt32",
    Qgis.CFloat32: "CFloat32",
    Qgis.CFloat64: "CFloat64",
    Qgis.ARGB32: "ARGB32",
    Qgis.ARGB32_Premultiplied: "ARGB32 premultiplied",
}


@dataclass(frozen=True)
class BandInfo:
    """One band: 1-based index, description (empty when the file has none), type, nodata."""

    index: int
    description: str
    data_type: str
    nodata: Optional[float]


@dataclass(frozen=True)
class RasterLayerInfo:
    """Everything the dock lists for one raster layer."""

    layer_id: str
    name: str
    source: str
    provider: str
    width: int
    height: int
    bands: Tuple[BandInfo, ...]
    crs_authid: str
    crs_description: str
    resolution: Tuple[float, float]
    resolution_unit: str
    extent: Tuple[float, float, float, float]

    @property
    def band_count(self) -> int:
        return len(self.bands)

    @property
    def has_crs(self) -> bool:
        return bool(self.crs_authid or self.crs_description)

    @property
    def data_types(self) -> str:
        """The distinct band data types, comma separated ("UInt16" for a typical S2 stack)."""
        seen = []
        for band in self.bands:
            if band.data_type not in seen:
                seen.append(band.data_type)
        return ", ".join(seen)

    @property
    def nodata_summary(self) -> str:
        values = {band.nodata for band in self.bands}
        if values == {None}:
            return "none"
        if len(values) == 1:
            return _format_number(next(iter(values)))
        return ", ".join(
            "none" if v is None else _format_number(v) for v in (band.nodata for band in self.bands)
        )


def _format_number(value: Optional[float]) -> str:
    if value is None:
        return "none"
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


_GENERATED_NAME = re.compile(r"^Band\s+0*\d+\s*:?\s*")


def band_description(layer: QgsRasterLayer, band: int) -> str:
    """The band's own description (GDAL's band description, e.g. "B04" or "VV"), or "".

    QGIS names bands "Band 1: B04" (GDAL provider, with a description) or "Band 1"; the text
    after the generated prefix is the description stored in the file.
    """
    name = layer.dataProvider().generateBandName(band)
    return _GENERATED_NAME.sub("", name, count=1).strip()


def describe_raster_layer(layer: QgsRasterLayer) -> RasterLayerInfo:
    """Summarise a raster layer for the dock.

    Args:
        layer: a valid raster layer.

    Returns:
        Its :class:`RasterLayerInfo`.
    """
    provider = layer.dataProvider()
    bands = []
    for index in range(1, layer.bandCount() + 1):
        nodata = provider.sourceNoDataValue(index) if provider.sourceHasNoDataValue(index) else None
        bands.append(
            BandInfo(
                index=index,
                description=band_description(layer, index),
                data_type=_DATA_TYPE_NAMES.get(
                    provider.dataType(index), str(provider.dataType(index))
                ),
                nodata=nodata,
            )
        )
    crs = layer.crs()
    extent = layer.extent()
    unit = QgsUnitTypes.toAbbreviatedString(crs.mapUnits()) if crs.isValid() else "px"
    return RasterLayerInfo(
        layer_id=layer.id(),
        name=layer.name(),
        source=layer.source(),
        provider=layer.providerType(),
        width=layer.width(),
        height=layer.height(),
        bands=tuple(bands),
        crs_authid=crs.authid() if crs.isValid() else "",
        crs_description=crs.description() if crs.isValid() else "",
        resolution=(layer.rasterUnitsPerPixelX(), layer.rasterUnitsPerPixelY()),
        resolution_unit=unit,
        extent=(extent.xMinimum(), extent.yMinimum(), extent.xMaximum(), extent.yMaximum()),
    )
