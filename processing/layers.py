"""Layer → file resolution: what the engine needs from QGIS layers, as plain paths and bounds.

The engine reads files (DESIGN.md §2): a raster layer must be backed by a file GDAL can open;
an area of interest given as polygon features is written to a GeoPackage; a map extent becomes
bounds with their CRS. Everything here runs on the main thread (it touches live layers).
"""

import os
import re
from pathlib import Path
from typing import List, Optional, Sequence

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransformContext,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
    QgsVectorFileWriter,
    QgsVectorLayer,
    QgsWkbTypes,
)

from ..core.errors import LayerSourceError
from ..core.requests import AreaOfInterest, RasterSource
from .layer_info import band_description


def layer_file_path(layer: QgsRasterLayer) -> str:
    """The file behind a raster layer.

    Args:
        layer: a raster layer.

    Returns:
        The path GDAL opens (GDAL-provider options after "|" removed).

    Raises:
        LayerSourceError: when the layer is not a GDAL file (a WMS, a memory or a virtual
            raster from another provider) or the file is gone.
    """
    if layer is None or not layer.isValid():
        raise LayerSourceError("The chosen layer is not valid any more: pick it again.")
    if layer.providerType() != "gdal":
        raise LayerSourceError(
            f"Layer '{layer.name()}' comes from the '{layer.providerType()}' provider, not from a "
            "file. Save it as a GeoTIFF first (right-click ▸ Export ▸ Save As…) and use that layer."
        )
    path = layer.source().split("|", 1)[0]
    is_plain_path = not re.match(r"^[A-Za-z0-9]+:", path) or re.match(r"^[A-Za-z]:[\\/]", path)
    if is_plain_path and not os.path.exists(path):
        raise LayerSourceError(
            f"The file of layer '{layer.name()}' is missing: {path}. Was it moved or deleted?"
        )
    return path


def band_descriptions(layer: QgsRasterLayer) -> List[str]:
    """The band descriptions of a raster layer, in band order ("" for bands without one)."""
    return [band_description(layer, band) for band in range(1, layer.bandCount() + 1)]


def raster_source(layer: QgsRasterLayer, bands: Sequence[int]) -> RasterSource:
    """A :class:`RasterSource` for the layer's file with the chosen 1-based bands."""
    return RasterSource(layer_file_path(layer), bands=tuple(int(b) for b in bands))


def extent_area(extent: QgsRectangle, crs: QgsCoordinateReferenceSystem) -> AreaOfInterest:
    """An area of interest from a rectangle in a CRS (e.g. the current map extent)."""
    if extent.isEmpty():
        raise LayerSourceError("The map extent is empty: zoom to the area to map first.")
    if not crs.isValid():
        raise LayerSourceError("The map has no valid CRS: set the project CRS first.")
    return AreaOfInterest(
        bounds=(extent.xMinimum(), extent.yMinimum(), extent.xMaximum(), extent.yMaximum()),
        crs=crs.toWkt(QgsCoordinateReferenceSystem.WKT_PREFERRED),
    )


def export_polygons(
    layer: QgsVectorLayer, selected_only: bool, folder: Path, name: str = "area_of_interest"
) -> AreaOfInterest:
    """Write a polygon layer's features to a GeoPackage the engine can read.

    Args:
        layer: a polygon layer.
        selected_only: only the selected features.
        folder: where to write ``<name>.gpkg``.
        name: file and layer name.

    Returns:
        The :class:`AreaOfInterest` pointing at the written file.

    Raises:
        LayerSourceError: for a non-polygon layer, no (selected) features, or a write failure.
    """
    target = write_polygons(layer, selected_only, folder, name, "the area of interest")
    return AreaOfInterest(polygon_file=str(target), layer=name)


def write_polygons(
    layer: QgsVectorLayer, selected_only: bool, folder: Path, name: str, role: str
) -> Path:
    """Write a polygon layer (a scratch layer too) to ``folder/<name>.gpkg`` with its fields.

    Raises:
        LayerSourceError: for a non-polygon layer, no (selected) features, or a write failure;
            ``role`` says what the polygons are for ("the area of interest", "the labels").
    """
    if layer is None or not layer.isValid():
        raise LayerSourceError(f"Choose a valid polygon layer for {role}.")
    if layer.geometryType() != QgsWkbTypes.PolygonGeometry:
        raise LayerSourceError(
            f"Layer '{layer.name()}' holds "
            f"{QgsWkbTypes.geometryDisplayString(layer.geometryType())} features; {role} needs "
            "polygons."
        )
    count = layer.selectedFeatureCount() if selected_only else layer.featureCount()
    if count == 0:
        what = "selected features" if selected_only else "features"
        raise LayerSourceError(
            f"Layer '{layer.name()}' has no {what}: draw or select polygons for {role}."
        )
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{name}.gpkg"
    if target.exists():
        target.unlink()
    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName = "GPKG"
    options.layerName = name
    options.onlySelectedFeatures = selected_only
    context: QgsCoordinateTransformContext = QgsProject.instance().transformContext()
    result = QgsVectorFileWriter.writeAsVectorFormatV3(layer, str(target), context, options)
    error_code, message = result[0], result[1]
    if error_code != QgsVectorFileWriter.NoError:
        raise LayerSourceError(f"Could not write {role} to {target}: {message}")
    return target


def output_folder_default(project: Optional[QgsProject] = None) -> Path:
    """Where outputs go by default: ``landfuse_outputs`` in the project's folder, or a temporary
    folder when the project is not saved yet."""
    project = project or QgsProject.instance()
    home = project.homePath()
    if home:
        return Path(home) / "landfuse_outputs"
    import tempfile

    return Path(tempfile.gettempdir()) / "landfuse_outputs"
