"""Headless QGIS: the plugin loads, unloads and reloads cleanly; the dock lists rasters."""

import pytest
from qgis.core import QgsApplication, QgsProject, QgsRasterLayer, QgsSettings
from qgis.PyQt.QtCore import QEvent
from qgis.PyQt.QtWidgets import QAction

import landfuse
from landfuse.plugin import SETTINGS_DOCK_VISIBLE
from landfuse.ui.dock import SETTINGS_SHOW_BANDS, LandFuseDock

pytestmark = pytest.mark.qgis


def _landfuse_docks(iface):
    return [w for w in iface.mainWindow().findChildren(LandFuseDock)]


def _landfuse_actions(iface):
    return [
        a
        for a in iface.mainWindow().findChildren(QAction)
        if a.objectName() == "landfuse_toggle_dock"
    ]


@pytest.fixture
def fresh_settings():
    QgsSettings().remove("LandFuse")
    yield
    QgsSettings().remove("LandFuse")


def test_load_unload_twice_leaves_nothing(qgis_iface, qgis_new_project, fresh_settings):
    registry = QgsApplication.processingRegistry()
    project = QgsProject.instance()
    receivers_before = project.receivers(project.layersAdded)
    for _ in range(2):
        plugin = landfuse.classFactory(qgis_iface)
        plugin.initGui()
        assert registry.providerById("landfuse") is not None
        assert len(_landfuse_actions(qgis_iface)) == 1
        plugin.actions[0].setChecked(True)  # opens the dock
        docks = _landfuse_docks(qgis_iface)
        assert len(docks) == 1 and docks[0].isVisibleTo(qgis_iface.mainWindow())
        assert project.receivers(project.layersAdded) > receivers_before
        plugin.unload()
        QgsApplication.processEvents()
        QgsApplication.sendPostedEvents(None, QEvent.DeferredDelete)  # run deleteLater()
        assert registry.providerById("landfuse") is None
        assert _landfuse_actions(qgis_iface) == []
        assert _landfuse_docks(qgis_iface) == []
        assert project.receivers(project.layersAdded) == receivers_before
        assert plugin.actions == [] and plugin.dock is None and plugin.provider is None


def test_dock_visibility_is_remembered(qgis_iface, qgis_new_project, fresh_settings):
    plugin = landfuse.classFactory(qgis_iface)
    plugin.initGui()
    plugin.actions[0].setChecked(True)
    assert QgsSettings().value(SETTINGS_DOCK_VISIBLE, type=bool) is True
    plugin.unload()
    again = landfuse.classFactory(qgis_iface)
    again.initGui()
    assert again.actions[0].isChecked() and again.dock is not None  # restored at start
    again.actions[0].setChecked(False)
    assert QgsSettings().value(SETTINGS_DOCK_VISIBLE, type=bool) is False
    again.unload()


def test_dock_lists_a_layer_with_band_info(qgis_new_project, make_geotiff, fresh_settings):
    dock = LandFuseDock()
    try:
        assert dock.tree.topLevelItemCount() == 0
        assert not dock.empty_label.isHidden()
        path = make_geotiff(
            "s2.tif",
            bands=3,
            width=40,
            height=30,
            dtype="uint16",
            nodata=0,
            resolution=20.0,
            descriptions=["B02", "B03", "B04"],
        )
        layer = QgsRasterLayer(str(path), "Sentinel-2 sample")
        assert layer.isValid()
        QgsProject.instance().addMapLayer(layer)
        assert dock.tree.topLevelItemCount() == 1  # refreshed by the layersAdded signal
        assert dock.empty_label.isHidden()
        item = dock.tree.topLevelItem(0)
        assert item.text(0) == "Sentinel-2 sample"
        assert item.text(1) == "3 bands · UInt16 · EPSG:32631 · 20 m"
        rows = {item.child(i).text(0): item.child(i) for i in range(item.childCount())}
        assert rows["CRS"].text(1).startswith("EPSG:32631")
        assert rows["Resolution"].text(1) == "20 m"
        assert rows["Size"].text(1) == "40 × 30 px"
        assert rows["Nodata"].text(1) == "0"
        assert rows["Extent"].text(1) == "500000, 4.4994e+06 : 500800, 4.5e+06"
        bands = rows["Bands"]
        assert bands.text(1) == "3"
        assert [bands.child(i).text(1) for i in range(bands.childCount())] == [
            "B02 · UInt16 · nodata 0",
            "B03 · UInt16 · nodata 0",
            "B04 · UInt16 · nodata 0",
        ]
        # The band list is a persisted preference.
        dock.show_bands.setChecked(False)
        assert QgsSettings().value(SETTINGS_SHOW_BANDS, type=bool) is False
        assert dock.tree.topLevelItem(0).child(0).childCount() == 0
        # Renaming and removing refresh the list.
        layer.setName("renamed")
        assert dock.tree.topLevelItem(0).text(0) == "renamed"
        QgsProject.instance().removeMapLayer(layer.id())
        assert dock.tree.topLevelItemCount() == 0
        assert not dock.empty_label.isHidden()
    finally:
        dock.cleanup()
        dock.deleteLater()


def test_dock_shows_missing_crs(qgis_new_project, make_geotiff):
    dock = LandFuseDock()
    try:
        path = make_geotiff("plain.tif", bands=1, crs=None, dtype="float32")
        QgsProject.instance().addMapLayer(QgsRasterLayer(str(path), "plain"))
        item = dock.tree.topLevelItem(0)
        rows = {item.child(i).text(0): item.child(i).text(1) for i in range(item.childCount())}
        assert rows["CRS"] == "none (not georeferenced)"
        assert rows["Data type"] == "Float32"
        assert "no CRS" in item.text(1)
    finally:
        dock.cleanup()
        dock.deleteLater()
