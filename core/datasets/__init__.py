"""Training and test datasets: the published layouts and chips cut from full rasters.

Three sources of labelled samples, all yielding :class:`RawSample` (un-normalised float32
arrays, one per input, and an int64 label map with ``ignore_index`` where there is no label):

- :class:`AmmFuseNetDataset`: the AMM-FuseNet layout ``ann_dir/ s1_dir/ s2_dir/ dem_dir/``, each
  with ``train/ val/ test/``; files are paired by their stem (name without extension), never by
  listing order. The Hunan label remapping of NETWORKS.md §2 is an option.
- :class:`LevirCDDataset`: the LEVIR-CD layout ``A/ B/ label/`` (before, after, 0/255 mask), files
  paired by name (NETWORKS.md §3), labels mapped to 0/1.
- :class:`RasterChipDataset`: chips cut from full rasters (any modalities, read on the grid of a
  reference raster as the engine aligns them) with a label raster or labelled polygons.

:class:`PreparedDataset` wraps any of them for training: it normalises each input, applies the
same random flips and 90° rotations to every input and the label (:class:`JointAugmentation`),
and returns torch tensors. Its randomness is derived from (seed, epoch, index), so a resumed run
sees exactly the samples an uninterrupted run would.

The package: ``base`` (errors, samples, label tables), ``layouts`` (the published folder
layouts), ``chips`` (chips from full rasters and polygons), ``augment`` (the training view).
"""

from __future__ import annotations

from .augment import JointAugmentation, Normaliser, PreparedDataset
from .base import (
    HUNAN_LABEL_MAP,
    HUNAN_TABLE,
    RASTER_EXTENSIONS,
    VECTOR_EXTENSIONS,
    DatasetError,
    DatasetPairingError,
    LabelledDataset,
    RawSample,
    remap_labels,
)
from .chips import (
    InputLike,
    RasterChipDataset,
    RasterScene,
    as_sources,
    chip_windows,
    rasterize_polygons,
    read_label_on_grid,
)
from .layouts import AmmFuseNetDataset, LevirCDDataset, pair_files

__all__ = [
    "HUNAN_LABEL_MAP",
    "HUNAN_TABLE",
    "RASTER_EXTENSIONS",
    "VECTOR_EXTENSIONS",
    "AmmFuseNetDataset",
    "DatasetError",
    "DatasetPairingError",
    "InputLike",
    "JointAugmentation",
    "LabelledDataset",
    "LevirCDDataset",
    "Normaliser",
    "PreparedDataset",
    "RasterChipDataset",
    "RasterScene",
    "RawSample",
    "as_sources",
    "chip_windows",
    "pair_files",
    "rasterize_polygons",
    "read_label_on_grid",
    "remap_labels",
]
