"""Streaming outputs: tiled GeoTIFF written by bands of rows, then COG, QML styles, JSON report.

DESIGN.md §2.7 and issue 4 item 6. Every raster is first written window by window, in blocks of
whole block rows, to a tiled DEFLATE GeoTIFF inside a temporary folder of the output folder
(``.landfuse-tmp-<pid>-<random>``); memory holds one block row at a time whatever the scene
size. At the end of a successful run each one is turned into a Cloud-Optimised GeoTIFF (GDAL's
COG driver, overviews: nearest for classes, average for continuous values), its QML style is
written beside it, and everything is renamed to its final name. A failed or cancelled run only
ever wrote inside the temporary folder, which is removed.

Products and their encodings (all single-band):

``<name>_classes.tif``
    ``uint8`` class values ``0 .. n-1`` with the model's colour table and class names (GDAL
    category names, in the ``.aux.xml`` beside it, and the ``LANDFUSE_CLASSES`` metadata item);
    nodata **255** (no data in an input, outside the area of interest).
``<name>_confidence.tif``
    ``uint8`` probability of the chosen class in percent, ``0 .. 100``; nodata 255.
``<name>_mask.tif`` (change runs; the default name is ``change``)
    ``uint8`` change mask: 0 no change, 1 change; nodata 255. Colour table: change in red, no
    change transparent.
``<name>_probability.tif``
    ``float32`` probability of change ``0 .. 1``; nodata **-1**.
``<name>_report.json``
    The run report (inputs, model, weights sha256, device, precision, timings, tiles, grid,
    per-class areas in hectares or changed area).

Each raster gets a QML style of the same base name, which QGIS applies automatically when the
layer is added: paletted classes with names, the change colour over a transparent "no change",
a colour ramp for probabilities and confidence.

The package: ``base`` (nodata values, product specs, write errors), ``stream`` (the
streaming GeoTIFF writer and the area tally), ``styles`` (QML styles), ``outputs`` (the
output set of a run: temporaries, COG, publishing).
"""

from __future__ import annotations

from .base import CLASS_NODATA, PROBABILITY_NODATA, TEMP_PREFIX, ClassLike, ProductSpec
from .outputs import OutputSet, check_free_space, remove_stale_temporaries
from .stream import AreaTally, StreamingGeoTiff
from .styles import PROBABILITY_STOPS, change_style_qml, class_style_qml, gradient_style_qml

__all__ = [
    "CLASS_NODATA",
    "PROBABILITY_NODATA",
    "PROBABILITY_STOPS",
    "TEMP_PREFIX",
    "AreaTally",
    "ClassLike",
    "OutputSet",
    "ProductSpec",
    "StreamingGeoTiff",
    "change_style_qml",
    "check_free_space",
    "class_style_qml",
    "gradient_style_qml",
    "remove_stale_temporaries",
]
