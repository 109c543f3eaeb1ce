"""The LandFuse dock: the raster layers of the project with what matters before a run."""

import contextlib
from typing import Callable, List, Tuple

from qgis.core import QgsMapLayer, QgsProject, QgsRasterLayer, QgsSettings
from qgis.gui import QgsDockWidget
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


class LandFuseDock(QgsDockWidget):
    """Dock listing the project's raster layers; refreshes when layers come and go."""

    def __init__(self, parent: QWidget = None) -> None:
        super().__init__("LandFuse", parent)
        self.setObjectName("LandFuseDock")
        self.setMinimumWidth(380)
        body = QWidget(self)
        layout = QVBoxLayout(body)
        layout.setContentsMargins(4, 4, 4, 4)

        title = QLabel("<b>Raster layers</b> – inputs LandFuse can map", body)
        layout.addWidget(title)

        self.show_bands = QCheckBox("Show every band", body)
        self.show_bands.setToolTip(
            "List each band with its description, data type and nodata value "
            "(band descriptions such as B04 or VV are used to match bands to a model)."
        )
        self.show_bands.setChecked(QgsSettings().value(SETTINGS_SHOW_BANDS, True, type=bool))
        self.show_bands.toggled.connect(self._on_show_bands_toggled)
        layout.addWidget(self.show_bands)

        self.tree = QTreeWidget(body)
        self.tree.setObjectName("LandFuseLayerTree")
        self.tree.setColumnCount(2)
        self.tree.setHeaderLabels(["Layer", "Details"])
        self.tree.setAlternatingRowColors(True)
        self.tree.setUniformRowHeights(True)
        layout.addWidget(self.tree, 1)

        self.empty_label = QLabel(EMPTY_TEXT, body)
        self.empty_label.setWordWrap(True)
        self.empty_label.setObjectName("LandFuseEmptyLabel")
        self.empty_label.setAlignment(Qt.AlignTop | Qt.AlignLeft)
        layout.addWidget(self.empty_label, 1)
        self.setWidget(body)

        project = QgsProject.instance()
        self._connections: List[Tuple[object, Callable]] = []
        self._connect(project.layersAdded, self._on_layers_added)
        self._connect(project.layersRemoved, self.refresh)
        self._connect(project.cleared, self.refresh)
        self._renamed_layers: List[QgsMapLayer] = []
        self.refresh()

    # -- signal bookkeeping: everything connected here is disconnected in cleanup() -----------
    def _connect(self, signal, slot) -> None:
        signal.connect(slot)
        self._connections.append((signal, slot))

    def cleanup(self) -> None:
        """Disconnect every signal this dock connected (called by the plugin's ``unload``)."""
        for signal, slot in self._connections:
            # TypeError/RuntimeError: the sender is already gone (project cleared, layer deleted)
            with contextlib.suppress(TypeError, RuntimeError):
                signal.disconnect(slot)
        self._connections = []
        self._untrack_layer_names()

    def _untrack_layer_names(self) -> None:
        for layer in self._renamed_layers:
            with contextlib.suppress(TypeError, RuntimeError):
                layer.nameChanged.disconnect(self.refresh)
        self._renamed_layers = []

    # -- content ------------------------------------------------------------------------------
    def raster_layers(self) -> List[QgsRasterLayer]:
        """The valid raster layers of the project, sorted by name."""
        layers = [
            layer
            for layer in QgsProject.instance().mapLayers().values()
            if isinstance(layer, QgsRasterLayer) and layer.isValid()
        ]
        return sorted(layers, key=lambda layer: layer.name().lower())

    def _on_layers_added(self, _layers) -> None:
        self.refresh()

    def _on_show_bands_toggled(self, checked: bool) -> None:
        QgsSettings().setValue(SETTINGS_SHOW_BANDS, bool(checked))
        self.refresh()

    def refresh(self, *_args) -> None:
        """Rebuild the list from the project's current raster layers."""
        self._untrack_layer_names()
        expanded = {
            self.tree.topLevelItem(i).data(0, Qt.UserRole)
            for i in range(self.tree.topLevelItemCount())
            if self.tree.topLevelItem(i).isExpanded()
        }
        self.tree.clear()
        layers = self.raster_layers()
        for layer in layers:
            layer.nameChanged.connect(self.refresh)
            self._renamed_layers.append(layer)
            info = describe_raster_layer(layer)
            item = QTreeWidgetItem([info.name, layer_summary(info)])
            item.setData(0, Qt.UserRole, info.layer_id)
            item.setToolTip(0, info.source)
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
            item.setExpanded(info.layer_id in expanded or len(layers) == 1)
            if item.isExpanded() and item.childCount():
                item.child(0).setExpanded(True)
        self.tree.resizeColumnToContents(0)
        self.empty_label.setVisible(not layers)
        self.tree.setVisible(bool(layers))
