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
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import numpy as np
import rasterio
import rasterio.crs
import torch
from rasterio.errors import NotGeoreferencedWarning
from rasterio.features import rasterize
from rasterio.windows import Window

from .band_mapping import MATCHED_BY_POSITION, FileBands, resolve_bands
from .errors import InputError
from .raster import (
    Grid,
    SourceInfo,
    choose_reference,
    inspect_raster,
    open_aligned,
    select_bands,
)
from .requests import RasterSource
from .run_warnings import BANDS_BY_POSITION, RunWarning
from .tiling import axis_starts

logger = logging.getLogger(__name__)

PathLike = Union[str, Path]

#: File extensions read as rasters by the layout readers (sidecars such as .aux.xml are skipped).
RASTER_EXTENSIONS = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp", ".img", ".jp2", ".vrt")
#: File extensions read as vector files (labelled polygons).
VECTOR_EXTENSIONS = (".gpkg", ".shp", ".geojson", ".json", ".fgb", ".kml", ".gml", ".sqlite")

#: Hunan label remapping (NETWORKS.md §2): 255 → 12 first, then the published table
#: ``[255, 0, 1, 2, 1, 3, 4, 6, 6, 5, 6, 7, 255]``, whose 7 and 255 are both ignored.
HUNAN_TABLE = (255, 0, 1, 2, 1, 3, 4, 6, 6, 5, 6, 7, 255)


def _hunan_label_map(ignore_index: int = 255) -> dict[int, int]:
    mapping = {code: (ignore_index if v in (7, 255) else v) for code, v in enumerate(HUNAN_TABLE)}
    mapping[255] = mapping[12]
    return mapping


#: The Hunan remapping as a value → class mapping (ignore = 255).
HUNAN_LABEL_MAP: Mapping[int, int] = _hunan_label_map()


class DatasetError(InputError):
    """A dataset cannot be read as given (layout, files, values); the message says which."""


class DatasetPairingError(DatasetError):
    """Files that should come in pairs (or sets) do not: the message names each one."""


@dataclass
class RawSample:
    """One labelled sample before normalisation.

    Attributes:
        inputs: One float32 array ``[bands, H, W]`` per input (modality, or before/after date).
        label: int64 ``[H, W]`` class map; ``ignore_index`` where there is no usable label.
        name: Identifies the sample in messages (file stem, or scene and chip offset).
        valid: bool ``[H, W]``, False where an input has nodata (those pixels are also ignored
            in the label); None when every pixel is valid.
    """

    inputs: list[np.ndarray]
    label: np.ndarray
    name: str
    valid: Optional[np.ndarray] = None


def _read_raster(path: Path) -> np.ndarray:
    """Read every band of a raster file as float32 ``[bands, H, W]``."""
    try:
        with warnings.catch_warnings():
            # LEVIR-CD and DSIFN samples are plain PNGs without georeferencing.
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as src:
                return src.read().astype(np.float32, copy=False)
    except rasterio.errors.RasterioIOError as exc:
        raise DatasetError(f"Cannot read raster {path}: {exc}. Check that it is a raster.") from exc


def _read_label(path: Path) -> np.ndarray:
    """Read a single-band label raster as int64 ``[H, W]``."""
    data = _read_raster(path)
    # Some label PNGs are saved as RGB with equal channels; anything else is ambiguous.
    if data.shape[0] > 1 and not all(
        np.array_equal(data[0], data[b]) for b in range(1, data.shape[0])
    ):
        raise DatasetError(
            f"Label {path} has {data.shape[0]} different bands; save the labels as a "
            "single-band raster of class values."
        )
    return data[0].astype(np.int64)


def remap_labels(
    label: np.ndarray,
    mapping: Mapping[int, int],
    source: str,
    ignore_index: int = 255,
) -> np.ndarray:
    """Map label values to class indices with a lookup table.

    Args:
        label: Integer label array.
        mapping: Source value → class index (``ignore_index`` to leave a value out).
        source: File or scene name used in the error message.
        ignore_index: Value already meaning "no label"; kept as it is if not in ``mapping``.

    Returns:
        The remapped int64 array.

    Raises:
        DatasetError: A value of ``label`` is not in ``mapping``.
    """
    values = np.unique(label)
    unknown = [int(v) for v in values if int(v) not in mapping and int(v) != ignore_index]
    if unknown:
        raise DatasetError(
            f"Label values {unknown[:20]} of {source} are not in the label mapping "
            f"{dict(mapping)}; add them (use {ignore_index} to ignore a value)."
        )
    out = np.full(label.shape, ignore_index, dtype=np.int64)
    for value in values:
        value = int(value)
        out[label == value] = mapping.get(value, ignore_index)
    return out


def _check_root(root: Path) -> None:
    if not root.is_dir():
        raise DatasetError(f"The dataset root {root} does not exist or is not a folder.")


def _list_rasters(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise DatasetError(f"Folder {folder} does not exist; check the dataset root and layout.")
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in RASTER_EXTENSIONS
    )


def _index_by(files: Sequence[Path], key: Callable[[Path], str], folder: Path) -> dict[str, Path]:
    index: dict[str, Path] = {}
    for path in files:
        k = key(path)
        if k in index:
            raise DatasetPairingError(
                f"Files {index[k].name} and {path.name} in {folder} have the same name "
                f"'{k}'; keep one file per sample."
            )
        index[k] = path
    return index


def pair_files(folders: Mapping[str, Path], by: str = "stem") -> list[tuple[str, dict[str, Path]]]:
    """Pair the raster files of several folders by name.

    Args:
        folders: Role (e.g. ``"s2"``, ``"label"``) → folder.
        by: ``"stem"`` (name without extension, AMM-FuseNet layout) or ``"name"`` (full file
            name, LEVIR-CD layout).

    Returns:
        ``(key, {role: path})`` for every key found in all folders, sorted by key.

    Raises:
        DatasetPairingError: A file has no partner in another folder (every such file is named),
            or two files of one folder share a key.
        DatasetError: A folder is missing or holds no rasters.
    """
    key: Callable[[Path], str] = (lambda p: p.stem) if by == "stem" else (lambda p: p.name)
    indexes = {
        role: _index_by(_list_rasters(folder), key, folder) for role, folder in folders.items()
    }
    for role, index in indexes.items():
        if not index:
            raise DatasetError(
                f"No raster files ({', '.join(RASTER_EXTENSIONS)}) in {folders[role]}."
            )
    all_keys = sorted(set().union(*(set(i) for i in indexes.values())))
    problems = []
    for role, index in indexes.items():
        missing = [k for k in all_keys if k not in index]
        if missing:
            shown = ", ".join(missing[:20]) + (" ..." if len(missing) > 20 else "")
            problems.append(f"{len(missing)} missing in {folders[role]} ({role}): {shown}")
    if problems:
        raise DatasetPairingError(
            "Unpaired samples, every file needs a partner with the same "
            f"{'stem' if by == 'stem' else 'name'} in each folder: " + "; ".join(problems)
        )
    return [(k, {role: indexes[role][k] for role in folders}) for k in all_keys]


class LabelledDataset(torch.utils.data.Dataset):
    """Base of the readers: ``read(index)`` returns a :class:`RawSample`.

    ``__getitem__`` returns the raw sample too; wrap the dataset in :class:`PreparedDataset`
    for training (normalisation, augmentation, tensors).
    """

    ignore_index: int = 255

    def __len__(self) -> int:  # pragma: no cover - overridden
        raise NotImplementedError

    def read(self, index: int) -> RawSample:  # pragma: no cover - overridden
        """Read one sample."""
        raise NotImplementedError

    @property
    def names(self) -> list[str]:  # pragma: no cover - overridden
        """Sample names in index order."""
        raise NotImplementedError

    def __getitem__(self, index: int) -> RawSample:
        return self.read(index)


class AmmFuseNetDataset(LabelledDataset):
    """The AMM-FuseNet layout: ``<root>/<modality>_dir/<split>/`` and ``<root>/ann_dir/<split>/``.

    Args:
        root: Dataset root (the folder holding ``ann_dir``, ``s2_dir``...).
        split: ``"train"``, ``"val"`` or ``"test"`` (any sub-folder name).
        modalities: Folder prefixes in the model's branch order, e.g. ``("s2", "s1")`` for the
            Hunan S2+S1 model or ``("s2", "dem")`` for S2+DEM.
        label_dir: Name of the label folder.
        hunan_remap: Apply the Hunan label remapping (NETWORKS.md §2).
        label_map: Any other value → class mapping (ignored if ``hunan_remap``).
        ignore_index: Label value that is not learnt nor scored.

    Raises:
        DatasetPairingError: A file has no partner in another folder (named in the message).
        DatasetError: A folder is missing.
    """

    def __init__(
        self,
        root: PathLike,
        split: str = "train",
        modalities: Sequence[str] = ("s2", "s1"),
        label_dir: str = "ann_dir",
        hunan_remap: bool = False,
        label_map: Optional[Mapping[int, int]] = None,
        ignore_index: int = 255,
    ) -> None:
        self.root = Path(root)
        _check_root(self.root)
        self.split = split
        self.modalities = tuple(modalities)
        if not self.modalities:
            raise DatasetError("Name at least one modality folder, e.g. ('s2', 's1').")
        self.ignore_index = ignore_index
        self.label_map: Optional[Mapping[int, int]] = (
            _hunan_label_map(ignore_index) if hunan_remap else label_map
        )
        folders = {m: self.root / f"{m}_dir" / split for m in self.modalities}
        folders["label"] = self.root / label_dir / split
        self._pairs = pair_files(folders, by="stem")

    def __len__(self) -> int:
        return len(self._pairs)

    @property
    def names(self) -> list[str]:
        """Sample stems in index order."""
        return [k for k, _ in self._pairs]

    def files(self, index: int) -> dict[str, Path]:
        """The files of one sample by role (modality keys and ``"label"``)."""
        return dict(self._pairs[index][1])

    def read(self, index: int) -> RawSample:
        """Read one sample (all modalities and the label).

        Raises:
            DatasetError: The files of the sample differ in size, or a label value is unknown.
        """
        name, files = self._pairs[index]
        inputs = [_read_raster(files[m]) for m in self.modalities]
        label = _read_label(files["label"])
        shapes = {m: a.shape[1:] for m, a in zip(self.modalities, inputs)}
        shapes["label"] = label.shape
        if len(set(shapes.values())) != 1:
            raise DatasetError(
                f"Sample {name} has files of different sizes {shapes}; all modalities and the "
                "label of a sample must be co-registered chips of the same size."
            )
        if self.label_map is not None:
            label = remap_labels(label, self.label_map, str(files["label"]), self.ignore_index)
        return _with_validity(RawSample(inputs=inputs, label=label, name=name), self.ignore_index)


class LevirCDDataset(LabelledDataset):
    """The LEVIR-CD layout: ``A/`` before, ``B/`` after, ``label/`` change mask (0/255).

    Either ``<root>/<split>/A`` (the official release), or ``<root>/A`` with an optional
    ``<root>/list/<split>.txt`` of file names (the BIT/ChangeFormer sample layout), or ``<root>/A``
    with ``split=None`` for every pair.

    Args:
        root: Dataset root.
        split: Split name, or None for the folders directly under ``root``.
        names: Restrict to these file names (e.g. to hold pairs out), in any order.
        ignore_index: Label value meaning "no label" (kept as it is; other values than 0, 1
            and 255 are refused).

    Raises:
        DatasetPairingError: A file has no partner (named), or a listed name is absent.
        DatasetError: The folders are missing.
    """

    def __init__(
        self,
        root: PathLike,
        split: Optional[str] = None,
        names: Optional[Sequence[str]] = None,
        ignore_index: int = 255,
    ) -> None:
        self.root = Path(root)
        _check_root(self.root)
        self.ignore_index = ignore_index
        base = self.root
        listed: Optional[list[str]] = None
        if split is not None:
            if (self.root / split / "A").is_dir():
                base = self.root / split
            elif (self.root / "list" / f"{split}.txt").is_file():
                text = (self.root / "list" / f"{split}.txt").read_text(encoding="utf-8")
                listed = [line.strip() for line in text.splitlines() if line.strip()]
            else:
                raise DatasetError(
                    f"No split '{split}' in {self.root}: expected {self.root / split / 'A'} or "
                    f"{self.root / 'list' / (split + '.txt')}."
                )
        pairs = pair_files({"A": base / "A", "B": base / "B", "label": base / "label"}, by="name")
        wanted = list(names) if names is not None else listed
        if wanted is not None:
            by_name = dict(pairs)
            absent = [n for n in wanted if n not in by_name]
            if absent:
                raise DatasetPairingError(
                    f"Listed pairs not found in {base}/A, B and label: {', '.join(absent[:20])}."
                )
            pairs = [(n, by_name[n]) for n in sorted(set(wanted))]
        self._pairs = pairs

    def __len__(self) -> int:
        return len(self._pairs)

    @property
    def names(self) -> list[str]:
        """Pair file names in index order."""
        return [k for k, _ in self._pairs]

    def files(self, index: int) -> dict[str, Path]:
        """The files of one pair: ``{"A": before, "B": after, "label": mask}``."""
        return dict(self._pairs[index][1])

    def read(self, index: int) -> RawSample:
        """Read one pair: inputs ``[before, after]`` and the 0/1 change label.

        Raises:
            DatasetError: Sizes differ, or the label holds values other than 0 and 255 (or 0/1).
        """
        name, files = self._pairs[index]
        before = _read_raster(files["A"])
        after = _read_raster(files["B"])
        label = _read_label(files["label"])
        if not before.shape == after.shape or before.shape[1:] != label.shape:
            raise DatasetError(
                f"Pair {name}: before {before.shape}, after {after.shape} and label "
                f"{label.shape} differ; the three files must have the same size and bands."
            )
        # LEVIR-CD masks are 0/255; already-binary 0/1 masks are accepted as well.
        label = remap_labels(label, {0: 0, 255: 1, 1: 1}, str(files["label"]), self.ignore_index)
        return RawSample(inputs=[before, after], label=label, name=name)


def _with_validity(sample: RawSample, ignore_index: int) -> RawSample:
    """Mark non-finite input pixels invalid, zero them, and ignore them in the label."""
    invalid = np.zeros(sample.label.shape, dtype=bool)
    for arr in sample.inputs:
        invalid |= ~np.isfinite(arr).all(axis=0)
    if invalid.any():
        for arr in sample.inputs:
            arr[:, invalid] = 0.0
        sample.label = sample.label.copy()
        sample.label[invalid] = ignore_index
        sample.valid = ~invalid if sample.valid is None else (sample.valid & ~invalid)
    return sample


# ---------------------------------------------------------------------------------------------
# Chips from full rasters


InputLike = Union[str, Path, RasterSource, Sequence[Union[str, Path, RasterSource]]]


def as_sources(value: InputLike) -> tuple[RasterSource, ...]:
    """One input as the engine's raster sources (a path, a source, or several of them)."""
    if isinstance(value, (str, Path, RasterSource)):
        value = (value,)
    sources = tuple(v if isinstance(v, RasterSource) else RasterSource(str(v)) for v in value)
    if not sources:
        raise DatasetError("Every input of a scene needs at least one raster file.")
    return sources


@dataclass(frozen=True)
class RasterScene:
    """One area with its input rasters and its labels.

    Attributes:
        inputs: One entry per model input, in model order: the modalities of a land-cover model
            (e.g. S2, S1, DEM) or the before and after images of a change model. Each entry is a
            raster path, a :class:`~landfuse.core.requests.RasterSource` (band selection, nodata
            override), or a sequence of them whose bands are stacked in order (e.g. Sentinel-2
            bands as separate files), as the engine takes its inputs.
        label: A label raster, or a vector file of labelled polygons (then ``label_field``).
        label_field: Attribute of the polygons holding the class (integer, or text mapped by
            ``label_map``); None for a label raster.
        label_map: Source value → class index; ``ignore_index`` drops a value. Without it the
            values are used as class indices.
        reference: Index of the input whose grid every other input and the label are read on;
            by default the first (S2, or the before date). As in the engine, the finest of that
            input's files gives the grid.
        name: Used in messages and chip names; default the stem of the first file.
    """

    inputs: tuple[InputLike, ...]
    label: str
    label_field: Optional[str] = None
    label_map: Optional[Mapping[Any, int]] = None
    reference: int = 0
    name: str = ""

    @property
    def title(self) -> str:
        """The scene's name for messages."""
        return self.name or Path(as_sources(self.inputs[0])[0].path).stem


def chip_windows(width: int, height: int, chip_size: int, stride: int) -> list[Window]:
    """Regular chip windows covering a raster, the last row and column moved inward.

    The placement is the engine's tiling (:func:`landfuse.core.tiling.axis_starts`), so the
    chips a model learns from are cut as the tiles it will later see.

    Args:
        width: Raster width in pixels.
        height: Raster height in pixels.
        chip_size: Chip edge in pixels.
        stride: Step between chips, ``1 <= stride <= chip_size`` (``chip_size``: no overlap).

    Returns:
        Windows in row-major order, every one fully inside the raster.

    Raises:
        DatasetError: The raster is smaller than a chip, or the stride is out of range.
    """
    if not 1 <= stride <= chip_size:
        raise DatasetError(
            f"The chip stride ({stride}) must be between 1 and the chip size ({chip_size})."
        )
    if width < chip_size or height < chip_size:
        raise DatasetError(
            f"The raster ({width}×{height}) is smaller than one chip ({chip_size}); use a "
            "smaller chip size."
        )
    overlap = chip_size - stride
    rows = axis_starts(height, chip_size, overlap)
    cols = axis_starts(width, chip_size, overlap)
    return [Window(c, r, chip_size, chip_size) for r in rows for c in cols]


def rasterize_polygons(
    path: str,
    grid: Grid,
    label_field: str,
    label_map: Optional[Mapping[Any, int]] = None,
    ignore_index: int = 255,
) -> np.ndarray:
    """Burn labelled polygons onto a grid (pixels whose centre is inside; later features win).

    Args:
        path: Vector file (GeoPackage, Shapefile, GeoJSON...); the first layer is used.
        grid: Target grid (:class:`landfuse.core.raster.Grid`); the polygons are reprojected to
            its CRS.
        label_field: Attribute holding the class value.
        label_map: Attribute value → class index (needed for text values).
        ignore_index: Value of pixels outside every polygon.

    Returns:
        int64 ``[height, width]`` label map.

    Raises:
        DatasetError: The file, layer or field cannot be read, the grid has no CRS, or a value
            is not a class index.
    """
    from osgeo import ogr, osr

    if grid.crs is None:
        raise DatasetError(
            f"Polygons {path} cannot be burnt onto a grid without CRS; georeference the rasters."
        )
    ds = ogr.Open(str(path))
    if ds is None or ds.GetLayerCount() == 0:
        raise DatasetError(f"Cannot read polygons from {path}; give a vector file with a layer.")
    layer = ds.GetLayer(0)
    definition = layer.GetLayerDefn()
    fields = [definition.GetFieldDefn(i).GetName() for i in range(definition.GetFieldCount())]
    if label_field not in fields:
        raise DatasetError(f"{path} has no field '{label_field}'; its fields are {fields}.")
    target = osr.SpatialReference()
    target.ImportFromWkt(rasterio.crs.CRS.from_user_input(grid.crs).to_wkt())
    target.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    source = layer.GetSpatialRef()
    transform = None
    if source is not None:
        source.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
        if not source.IsSame(target):
            transform = osr.CoordinateTransformation(source, target)
    else:
        logger.warning("%s has no CRS; assuming the polygons are in the raster CRS.", path)
    shapes = []
    for feature in layer:
        geometry = feature.GetGeometryRef()
        if geometry is None:
            continue
        raw = feature.GetField(label_field)
        if label_map is not None:
            if raw not in label_map:
                raise DatasetError(
                    f"Value {raw!r} of field '{label_field}' in {path} is not in the label "
                    f"mapping {dict(label_map)}; add it."
                )
            value = int(label_map[raw])
        else:
            try:
                value = int(raw)
            except (TypeError, ValueError) as exc:
                raise DatasetError(
                    f"Value {raw!r} of field '{label_field}' in {path} is not a class index; "
                    "give a mapping from the field's values to class indices."
                ) from exc
        geometry = geometry.Clone()
        if transform is not None:
            geometry.Transform(transform)
        shapes.append((json.loads(geometry.ExportToJson()), value))
    if not shapes:
        raise DatasetError(f"{path} holds no polygons.")
    return rasterize(
        shapes,
        out_shape=(grid.height, grid.width),
        transform=grid.transform,
        fill=ignore_index,
        dtype="int32",
    ).astype(np.int64)


def read_label_on_grid(
    path: str,
    grid: Grid,
    label_field: Optional[str] = None,
    label_map: Optional[Mapping[Any, int]] = None,
    ignore_index: int = 255,
    pixel_grid: bool = False,
) -> np.ndarray:
    """A label raster (nearest) or labelled polygons (burnt) on a grid, as class indices.

    Args:
        path: Label raster, or vector file of polygons.
        grid: Target grid.
        label_field: The polygons' class attribute (required for a vector file).
        label_map: Value → class index (``ignore_index`` drops a value).
        ignore_index: Value of unlabelled pixels (nodata, outside the raster or the polygons).
        pixel_grid: Plain images: the label raster must have the grid's size, read as it is.

    Returns:
        int64 ``[height, width]``.

    Raises:
        DatasetError: Unreadable vector, missing field, unknown value, size mismatch.
        InputError: Unreadable or unalignable raster.
    """
    if label_field is not None or Path(path).suffix.lower() in VECTOR_EXTENSIONS:
        if label_field is None:
            raise DatasetError(
                f"{path} looks like a vector file: name the field that holds the classes."
            )
        return rasterize_polygons(path, grid, label_field, label_map, ignore_index)
    if pixel_grid:
        info = inspect_raster(path)
        if (info.width, info.height) != (grid.width, grid.height):
            raise DatasetError(
                f"Label {path} is {info.width}×{info.height} px, the images "
                f"{grid.width}×{grid.height}; plain images must share one size."
            )
    stack = open_aligned([RasterSource(path)], [(1,)], grid, "nearest", pixel_grid)
    try:
        data, valid = stack.read(Window(0, 0, grid.width, grid.height))
    finally:
        stack.close()
    label = data[0].astype(np.int64)
    if label_map is not None:
        label = remap_labels(label, label_map, path, ignore_index)
    label[~valid] = ignore_index
    return label


@dataclass(frozen=True)
class _OpenPlan:
    """How to open one input on a scene's grid (resolved once, opened per read)."""

    sources: tuple[RasterSource, ...]
    bands: tuple[tuple[int, ...], ...]
    resampling: str
    order: Optional[tuple[int, ...]] = None


class RasterChipDataset(LabelledDataset):
    """Training chips cut from full rasters with a label raster or labelled polygons.

    Inputs are read as the engine reads them (:mod:`landfuse.core.raster`): every input of a
    scene on the grid of the scene's reference input through a lazy warp (bilinear by default,
    nearest for inputs listed in ``nearest_inputs``), with nodata, masks and the area outside a
    file marked invalid; the label raster is read on the same grid with nearest, polygons are
    burnt onto it. Plain images without georeferencing are read pixel for pixel (they must share
    one size). Chips with less than ``min_labelled_fraction`` labelled pixels are dropped.

    The label of each scene is held in memory (int64 of the scene size) to choose the chips; the
    input pixels are read chip by chip unless ``preload`` is set.

    Args:
        scenes: The areas.
        chip_size: Chip edge in pixels (a multiple of the model's output stride).
        stride: Step between chips; default ``chip_size`` (no overlap).
        min_labelled_fraction: Minimum share of labelled pixels for a chip to be kept (0 keeps
            chips with at least one labelled pixel).
        nearest_inputs: Indexes of inputs resampled with nearest (e.g. a categorical layer).
        ignore_index: Label value of unlabelled pixels.
        preload: Read every scene's inputs into memory once (fast epochs, more memory).
        band_names: The model's band names of each input, in network order: the files' bands
            are then matched to them by the engine's resolver
            (:func:`landfuse.core.band_mapping.resolve_bands`: explicit selection, else by
            description, else by position), so a model learns the bands in the order it will
            be given them when mapping. Bands matched by position are listed in
            :attr:`warnings`. Empty: every band of every file, in file order.

    Raises:
        DatasetError: A vector cannot be read, or no chip has labels.
        InputError: A raster cannot be read or aligned (the engine's errors).
    """

    def __init__(
        self,
        scenes: Sequence[RasterScene],
        chip_size: int,
        stride: Optional[int] = None,
        min_labelled_fraction: float = 0.0,
        nearest_inputs: Sequence[int] = (),
        ignore_index: int = 255,
        preload: bool = False,
        band_names: Sequence[Sequence[str]] = (),
    ) -> None:
        if not scenes:
            raise DatasetError("Give at least one scene (input rasters and labels).")
        self.scenes = tuple(scenes)
        self.chip_size = int(chip_size)
        self.stride = int(stride or chip_size)
        self.ignore_index = ignore_index
        self.nearest_inputs = frozenset(nearest_inputs)
        self.band_names = tuple(tuple(names) for names in band_names)
        #: Findings the user must read (bands matched by position), one per scene input.
        self.warnings: list[RunWarning] = []
        self._grids: list[Grid] = []
        self._pixel_grid: list[bool] = []
        self._plans: list[tuple[_OpenPlan, ...]] = []
        self._labels: list[np.ndarray] = []
        self._cache: dict[int, tuple[list[np.ndarray], np.ndarray]] = {}
        self._chips: list[tuple[int, Window]] = []
        counts = {len(s.inputs) for s in self.scenes}
        if len(counts) != 1:
            raise DatasetError(
                f"Every scene needs the same number of inputs, got {sorted(counts)}."
            )
        for index, scene in enumerate(self.scenes):
            grid, pixel_grid, plans = self._plan_scene(scene)
            label = read_label_on_grid(
                scene.label, grid, scene.label_field, scene.label_map, ignore_index, pixel_grid
            )
            self._grids.append(grid)
            self._pixel_grid.append(pixel_grid)
            self._plans.append(plans)
            self._labels.append(label)
            kept = 0
            for window in chip_windows(grid.width, grid.height, self.chip_size, self.stride):
                r0, c0 = int(window.row_off), int(window.col_off)
                chip = label[r0 : r0 + self.chip_size, c0 : c0 + self.chip_size]
                fraction = np.count_nonzero(chip != ignore_index) / chip.size
                if fraction > 0 and fraction >= min_labelled_fraction:
                    self._chips.append((index, window))
                    kept += 1
            logger.info("Scene %s: %d chips of %d px kept.", scene.title, kept, self.chip_size)
            if preload:
                self._cache[index] = self._read_scene(index, Window(0, 0, grid.width, grid.height))
        if not self._chips:
            raise DatasetError(
                "No chip holds enough labelled pixels; lower min_labelled_fraction, use smaller "
                "chips, or check that the labels overlap the rasters."
            )

    def _plan_scene(self, scene: RasterScene) -> tuple[Grid, bool, tuple[_OpenPlan, ...]]:
        if not 0 <= scene.reference < len(scene.inputs):
            raise DatasetError(
                f"Scene {scene.title}: reference index {scene.reference} is not one of its "
                f"{len(scene.inputs)} inputs."
            )
        all_sources = [as_sources(v) for v in scene.inputs]
        infos = [[inspect_raster(s.path) for s in sources] for sources in all_sources]
        reference = choose_reference(infos[scene.reference])
        pixel_grid = not reference.georeferenced
        if pixel_grid:
            sizes = {(i.width, i.height) for group in infos for i in group}
            if len(sizes) != 1 or any(i.georeferenced for group in infos for i in group):
                raise DatasetError(
                    f"Scene {scene.title}: {reference.path} has no georeferencing, so every "
                    "input must be a plain image of the same size; georeference them instead."
                )
        plans = tuple(
            self._open_plan(scene, i, sources, group)
            for i, (sources, group) in enumerate(zip(all_sources, infos))
        )
        return reference.grid, pixel_grid, plans

    def _open_plan(
        self,
        scene: RasterScene,
        index: int,
        sources: tuple[RasterSource, ...],
        infos: Sequence[SourceInfo],
    ) -> _OpenPlan:
        resampling = "nearest" if index in self.nearest_inputs else "bilinear"
        if index >= len(self.band_names):
            bands = tuple(select_bands(info, s.bands) for info, s in zip(infos, sources))
            return _OpenPlan(sources, bands, resampling)
        names = self.band_names[index]
        files = [FileBands(i.path, i.descriptions, tuple(s.bands)) for i, s in zip(infos, sources)]
        resolved = resolve_bands(files, names)
        if len(resolved.choices) != len(names):
            raise DatasetError(
                f"Scene {scene.title}, input {index + 1}: the model needs {len(names)} bands "
                f"({', '.join(names)}) but {len(resolved.choices)} were given; select the bands "
                "in the model's order."
            )
        if resolved.how == MATCHED_BY_POSITION:
            self.warnings.append(
                RunWarning(
                    BANDS_BY_POSITION,
                    f"Scene {scene.title}, input {index + 1}: the bands were matched to the "
                    f"model's ({', '.join(names)}) by their position, because no band "
                    "description names them; if the files' band order differs, the model "
                    "learns the wrong bands.",
                    str(index + 1),
                )
            )
        per_file = resolved.per_file(len(files))
        return _OpenPlan(sources, per_file, resampling, resolved.read_order(len(files)))

    def _read_scene(self, index: int, window: Window) -> tuple[list[np.ndarray], np.ndarray]:
        grid = self._grids[index]
        inputs = []
        valid = np.ones((int(window.height), int(window.width)), dtype=bool)
        for plan in self._plans[index]:
            # Opened per read: GDAL handles must not cross DataLoader worker processes.
            stack = open_aligned(
                plan.sources,
                plan.bands,
                grid,
                plan.resampling,
                self._pixel_grid[index],
                plan.order,
            )
            try:
                data, ok = stack.read(window)
            finally:
                stack.close()
            data[:, ~ok] = 0.0
            inputs.append(data)
            valid &= ok
        return inputs, valid

    def __len__(self) -> int:
        return len(self._chips)

    @property
    def names(self) -> list[str]:
        """Chip names ``<scene>@<row>,<col>`` in index order."""
        return [f"{self.scenes[s].title}@{int(w.row_off)},{int(w.col_off)}" for s, w in self._chips]

    def grid(self, scene_index: int) -> Grid:
        """The reference grid of one scene."""
        return self._grids[scene_index]

    def chip(self, index: int) -> tuple[RasterScene, Window]:
        """The scene and window of one chip."""
        scene_index, window = self._chips[index]
        return self.scenes[scene_index], window

    def read(self, index: int) -> RawSample:
        """Read one chip: every input on the reference grid and the label."""
        scene_index, window = self._chips[index]
        r0, c0 = int(window.row_off), int(window.col_off)
        r1, c1 = r0 + int(window.height), c0 + int(window.width)
        if scene_index in self._cache:
            full, full_valid = self._cache[scene_index]
            inputs = [a[:, r0:r1, c0:c1].copy() for a in full]
            valid = full_valid[r0:r1, c0:c1].copy()
        else:
            inputs, valid = self._read_scene(scene_index, window)
        label = self._labels[scene_index][r0:r1, c0:c1].copy()
        label[~valid] = self.ignore_index
        return RawSample(
            inputs=inputs, label=label, name=self.names[index], valid=None if valid.all() else valid
        )


# ---------------------------------------------------------------------------------------------
# Training view: normalisation, joint augmentation, tensors


@dataclass(frozen=True)
class JointAugmentation:
    """Random flips and 90° rotations applied identically to every input and the label.

    Both dates of a change pair and all modalities of a land-cover sample must move together,
    or the network would learn from misregistered pairs (NETWORKS.md §3: joint flips and
    rotation).

    Attributes:
        horizontal_flip: Flip left-right with probability 0.5.
        vertical_flip: Flip up-down with probability 0.5.
        rotate90: Rotate by a random multiple of 90° (only 0° or 180° for non-square chips).
    """

    horizontal_flip: bool = True
    vertical_flip: bool = True
    rotate90: bool = True

    def __call__(
        self, inputs: Sequence[np.ndarray], label: np.ndarray, rng: np.random.Generator
    ) -> tuple[list[np.ndarray], np.ndarray]:
        """Transform ``inputs`` (``[C, H, W]`` each) and ``label`` (``[H, W]``) alike.

        Returns:
            The transformed inputs and label (contiguous copies).
        """
        arrays = [*inputs, label[None]]
        # Draw every random number whatever the options so that the stream stays aligned.
        flip_h, flip_v, turns = rng.random() < 0.5, rng.random() < 0.5, int(rng.integers(4))
        if self.horizontal_flip and flip_h:
            arrays = [a[..., ::-1] for a in arrays]
        if self.vertical_flip and flip_v:
            arrays = [a[..., ::-1, :] for a in arrays]
        if self.rotate90:
            square = label.shape[0] == label.shape[1]
            k = turns if square else 2 * (turns % 2)
            if k:
                arrays = [np.rot90(a, k, axes=(-2, -1)) for a in arrays]
        arrays = [np.ascontiguousarray(a) for a in arrays]
        return arrays[:-1], arrays[-1][0]


#: ``(input_index, data [C, H, W], valid [H, W] or None) -> normalised float32 data``.
Normaliser = Callable[[int, np.ndarray, Optional[np.ndarray]], np.ndarray]


@dataclass
class PreparedDataset(torch.utils.data.Dataset):
    """A dataset ready for a DataLoader: normalised, jointly augmented, as tensors.

    Each item is ``{"inputs": [float32 tensor [C, H, W], ...], "label": int64 [H, W],
    "name": str}``. The augmentation's random numbers come from ``(seed, epoch, index)``, so
    they do not depend on worker processes, and a resumed run repeats them exactly; call
    :meth:`set_epoch` at the start of every epoch.

    Attributes:
        base: The raw dataset.
        normalise: A :data:`Normaliser` (see ``training.make_normaliser``), or None.
        augmentation: Joint augmentation, or None (validation, test).
        seed: Seed of the augmentation stream.
    """

    base: LabelledDataset
    normalise: Optional[Normaliser] = None
    augmentation: Optional[JointAugmentation] = None
    seed: int = 0
    epoch: int = field(default=0)

    def set_epoch(self, epoch: int) -> None:
        """Choose the augmentation stream of an epoch."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.base.read(index)
        inputs = sample.inputs
        if self.normalise is not None:
            # Invalid (nodata) pixels come out as 0 and are left out of per-tile statistics,
            # as in the engine (core/normalisation.py).
            inputs = [self.normalise(i, a, sample.valid) for i, a in enumerate(inputs)]
        label = sample.label
        if self.augmentation is not None:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            inputs, label = self.augmentation(inputs, label, rng)
        return {
            "inputs": [torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)) for a in inputs],
            "label": torch.from_numpy(np.ascontiguousarray(label, dtype=np.int64)),
            "name": sample.name,
        }
