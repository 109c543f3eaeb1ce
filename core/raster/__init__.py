"""Raster sources read on one reference grid, lazily; areas of interest; pixel areas.

DESIGN.md §2.3: every input is read on the reference grid through a lazy warp (rasterio
``WarpedVRT``), window by window, so nothing is resampled to disk first and memory stays at the
size of a tile. Inputs may differ in CRS, resolution (Sentinel-2 bands at 10/20/60 m as separate
files), extent and data type. A source already on the grid (same CRS and pixel size, whole-pixel
offset) is read directly, which is exact and faster. A source in the grid's CRS with pixels at
least as large (Sentinel-2's 20 and 60 m bands on the 10 m grid) is resampled here with numpy,
rows and columns separately, with GDAL's bilinear / nearest conventions and about ten times
faster than GDAL's general warper, which still handles every other case (another CRS,
rotation, finer sources). GDAL's block cache is bounded during a run
(:func:`bounded_block_cache`), so decoded blocks do not pile up with the scene size.

Validity: a pixel is valid when every selected band of every source has data there: the file's
nodata value (or the request's override), its mask or alpha band, non-finite values, and the
area outside the source's footprint all make it invalid. Invalid pixels become the outputs'
reserved nodata value.

Pixel-grid mode (``pixel_grid=True``) is for plain images without georeferencing, such as the
LEVIR-CD PNG tiles: all inputs must have the same width and height, pixels are taken as they
are, and the outputs carry no CRS.

Thread use: a dataset opened here is read by one thread at a time (the engine's reader thread);
GDAL handles must not be shared between threads concurrently.

The package: ``grid`` (the grid, windows, the inputs' metadata and footprints), ``area`` (the
area of interest), ``resample`` (the choice of read and the numpy resampling), ``aligned`` (one
source on the work grid), ``stack`` (a modality's sources, the block cache, ``open_aligned``).
"""

from __future__ import annotations

from .aligned import AlignedSource
from .area import AreaMask, build_area_mask
from .grid import (
    READ_ERRORS,
    Grid,
    SourceInfo,
    check_georeferenced,
    choose_reference,
    footprint_window,
    inspect_raster,
    intersect_windows,
    select_bands,
)
from .stack import AlignedStack, bounded_block_cache, open_aligned

__all__ = [
    "READ_ERRORS",
    "AlignedSource",
    "AlignedStack",
    "AreaMask",
    "Grid",
    "SourceInfo",
    "bounded_block_cache",
    "build_area_mask",
    "check_georeferenced",
    "choose_reference",
    "footprint_window",
    "inspect_raster",
    "intersect_windows",
    "open_aligned",
    "select_bands",
]
