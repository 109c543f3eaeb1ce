"""The dock's Layers tab: each raster of the project with what matters before a run.

Bands (with their descriptions, which name them to the models), data type, CRS, resolution,
size, extent and nodata, read through QGIS (:mod:`landfuse.processing.layer_info`).
"""

from typing import List, Tuple

from qgis.core import QgsProject, QgsRasterLayer, QgsSettings
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import (
    QCheckBox,
    QLabel,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..processing.layer_info import RasterLayerInfo, describe_raster_layer

SETTINGS_SHOW_BANDS = "LandFuse/dock/show_band_details"

EMPTY_TEXT = (
    "No raster layers in this project yet. Add a Sentinel-2, Sentinel-1 or DEM raster, or a "
    "before/after pair (Layer ▸ Add Layer ▸ Add Raster Layer)."
)


def _format_extent(info: RasterLayerInfo) -> str:
    xmin, ymin, xmax, ymax = info.extent
    return f"{xmin:.6g}, {ymin:.6g} : {xmax:.6g}, {ymax:.6g}"


def _format_resolution(info: RasterLayerInfo) -> str:
    rx, ry = info.resolution
    unit = info.resolution_unit
    if abs(rx - ry) <= 1e-9 * max(abs(rx), abs(ry), 1.0):
        return f"{rx:.6g} {unit}"
    return f"{rx:.6g} × {ry:.6g} {unit}"


def layer_rows(info: RasterLayerInfo) -> List[Tuple[str, str]]:
    """The (property, value) rows shown under a layer, in display order."""
    if info.has_crs:
        crs = f"{info.crs_authid} – {info.crs_description}"
    else:
        crs = "none (not georeferenced)"
    return [
        ("Bands", str(info.band_count)),
        ("Data type", info.data_types),
        ("CRS", crs),
        ("Resolution", _format_resolution(info)),
        ("Size", f"{info.width} × {info.height} px"),
        ("Extent", _format_extent(info)),
        ("Nodata", info.nodata_summary),
        ("Source", info.source),
    ]


def layer_summary(info: RasterLayerInfo) -> str:
    """One line for the layer's own row, e.g. "13 bands · UInt16 · EPSG:32631 · 10 m"."""
    crs = info.crs_authid or ("custom CRS" if info.has_crs else "no CRS")
    plural = "band" if info.band_count == 1 else "bands"
    return f"{info.band_count} {plural} · {info.data_types} · {crs} · {_format_resolution(info)}"


def project_raster_layers() -> List[QgsRasterLayer]:
    """The valid raster layers of the project, sorted by name."""
    found = [
        layer
        for layer in QgsProject.instance().mapLayers().values()
        if isinstance(layer, QgsRasterLayer) and layer.isValid()
    ]
    return sorted(found, key=lambda layer: layer.name().lower())


class LayersPanel(QWidget):
    """The project's raster layers with bands, type, CRS, resolution, extent and nodata."""

    def __init__(self, parent: QWidget = None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.show_bands = QCheckBox("Show every band", self)
        self.show_bands.setToolTip(
            "List each band with its description, data type and nodata value "
            "(band descriptions such as B04 or VV are used to match bands to a model)."
        )
        self.show_bands.setChecked(QgsSettings().value(SETTINGS_SHOW_BANDS, True, type=bool))
        self.show_bands.toggled.connect(self._on_show_bands_toggled)
        layout.addWidget(self.show_bands)
        self.tree = QTreeWidget(self)
        self.tree.setObjectName("LandFuseLayerTree")
        self.tree.setColumnCount(2)
        self.tree.setHeaderLabels(["Layer", "Details"])
        self.tree.setAlternatingRowColors(True)
        self.tree.setUniformRowHeights(True)
        layout.addWidget(self.tree, 1)
        self.empty_label = QLabel(EMPTY_TEXT, self)
        self.empty_label.setWordWrap(True)
        self.empty_label.setObjectName("LandFuseEmptyLabel")
        self.empty_label.setAlignment(Qt.AlignTop | Qt.AlignLeft)
        layout.addWidget(self.empty_label, 1)

    def _on_show_bands_toggled(self, checked: bool) -> None:
        QgsSettings().setValue(SETTINGS_SHOW_BANDS, bool(checked))
        self.refresh()

    def refresh(self) -> None:
        """Rebuild the list from the project's current raster layers."""
        expanded = {
            self.tree.topLevelItem(i).data(0, Qt.UserRole)
            for i in range(self.tree.topLevelItemCount())
            if self.tree.topLevelItem(i).isExpanded()
        }
        self.tree.clear()
        rasters = project_raster_layers()
        for layer in rasters:
            info = describe_raster_layer(layer)
            item = QTreeWidgetItem([info.name, layer_summary(info)])
            item.setData(0, Qt.UserRole, info.layer_id)
            item.setToolTip(0, info.source)
            item.setToolTip(1, layer_summary(info))
            for key, value in layer_rows(info):
                child = QTreeWidgetItem([key, value])
                child.setToolTip(1, value)
                item.addChild(child)
                if key == "Bands" and self.show_bands.isChecked():
                    for band in info.bands:
                        nodata = "none" if band.nodata is None else f"{band.nodata:g}"
                        description = band.description or "(no description)"
                        child.addChild(
                            QTreeWidgetItem(
                                [
                                    f"Band {band.index}",
                                    f"{description} · {band.data_type} · nodata {nodata}",
                                ]
                            )
                        )
            self.tree.addTopLevelItem(item)
            item.setExpanded(info.layer_id in expanded or len(rasters) == 1)
            if item.isExpanded() and item.childCount():
                item.child(0).setExpanded(True)
        self.tree.resizeColumnToContents(0)
        self.empty_label.setVisible(not rasters)
        self.tree.setVisible(bool(rasters))
