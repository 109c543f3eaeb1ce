"""QGIS entry point: wires the LandFuse action, dock and Processing provider into QGIS.

Only wiring lives here. The dock is in :mod:`landfuse.ui.dock`, the Processing provider in
:mod:`landfuse.processing.provider`, the engine in :mod:`landfuse.core`. Nothing here imports torch.
"""

import contextlib
from pathlib import Path
from typing import List, Optional

from qgis.core import QgsApplication, QgsSettings
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtGui import QIcon
from qgis.PyQt.QtWidgets import QAction

PLUGIN_NAME = "LandFuse"
MENU = "&LandFuse"
ICON_PATH = str(Path(__file__).resolve().parent / "resources" / "icon.png")
SETTINGS_DOCK_VISIBLE = "LandFuse/dock/visible"


class LandFusePlugin:
    """The object QGIS keeps for the plugin's lifetime (see ``classFactory``)."""

    def __init__(self, iface) -> None:
        self.iface = iface
        self.actions: List[QAction] = []
        self.dock = None
        self.provider = None
        self._toggle_action: Optional[QAction] = None

    # -- Processing ------------------------------------------------------------------------
    def initProcessing(self) -> None:
        """Register the LandFuse Processing provider (QGIS calls this for
        ``hasProcessingProvider=yes``; :meth:`initGui` calls it too so that it is never missed).
        """
        if self.provider is not None:
            return
        from .processing.provider import LandFuseProvider

        self.provider = LandFuseProvider()
        QgsApplication.processingRegistry().addProvider(self.provider)

    # -- GUI -------------------------------------------------------------------------------
    def initGui(self) -> None:
        """Create the toolbar button and menu entry, register Processing, restore the dock."""
        self.initProcessing()
        action = QAction(QIcon(ICON_PATH), PLUGIN_NAME, self.iface.mainWindow())
        action.setObjectName("landfuse_toggle_dock")
        action.setCheckable(True)
        action.setToolTip("Show or hide the LandFuse panel (land cover and change detection)")
        action.setStatusTip(action.toolTip())
        action.toggled.connect(self._set_dock_visible)
        self.iface.addToolBarIcon(action)
        self.iface.addPluginToRasterMenu(MENU, action)
        self.actions.append(action)
        self._toggle_action = action
        if QgsSettings().value(SETTINGS_DOCK_VISIBLE, False, type=bool):
            action.setChecked(True)

    def _ensure_dock(self):
        if self.dock is None:
            from .ui.dock import LandFuseDock

            self.dock = LandFuseDock(self.iface.mainWindow(), self.iface)
            self.dock.visibilityChanged.connect(self._on_dock_visibility_changed)
            self.iface.addDockWidget(Qt.RightDockWidgetArea, self.dock)
        return self.dock

    def _set_dock_visible(self, visible: bool) -> None:
        if visible:
            dock = self._ensure_dock()
            dock.show()
            dock.raise_()
        elif self.dock is not None:
            self.dock.hide()
        QgsSettings().setValue(SETTINGS_DOCK_VISIBLE, bool(visible))

    def _on_dock_visibility_changed(self, visible: bool) -> None:
        # Keep the toolbar button in step when the user closes the dock with its own "x".
        if self._toggle_action is not None and self._toggle_action.isChecked() != visible:
            self._toggle_action.blockSignals(True)
            self._toggle_action.setChecked(visible)
            self._toggle_action.blockSignals(False)
            QgsSettings().setValue(SETTINGS_DOCK_VISIBLE, bool(visible))

    def unload(self) -> None:
        """Remove everything :meth:`initGui` and :meth:`initProcessing` added."""
        for action in self.actions:
            with contextlib.suppress(TypeError):
                action.toggled.disconnect(self._set_dock_visible)
            self.iface.removePluginRasterMenu(MENU, action)
            self.iface.removeToolBarIcon(action)
            action.deleteLater()
        self.actions = []
        self._toggle_action = None
        if self.dock is not None:
            with contextlib.suppress(TypeError):
                self.dock.visibilityChanged.disconnect(self._on_dock_visibility_changed)
            self.dock.cleanup()
            self.iface.removeDockWidget(self.dock)
            self.dock.deleteLater()
            self.dock = None
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
