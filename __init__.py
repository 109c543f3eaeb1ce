"""LandFuse: multi-modal land-cover mapping and change detection for QGIS.

QGIS imports this package and calls :func:`classFactory`. Nothing heavy (torch, the engine, the
widgets) is imported here: the plugin module is imported only when QGIS asks for the plugin, and
it too defers torch until a run needs it.
"""


def classFactory(iface):  # the name QGIS looks for
    """Create the plugin object for QGIS.

    Args:
        iface: the ``QgisInterface`` QGIS hands to plugins.

    Returns:
        The :class:`~landfuse.plugin.LandFusePlugin` instance.
    """
    from .plugin import LandFusePlugin

    return LandFusePlugin(iface)
