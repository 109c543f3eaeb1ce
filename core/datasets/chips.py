"""Training chips cut from full rasters, with a label raster or labelled polygons.

:class:`RasterScene` describes one area, :func:`chip_windows` places the chips as the engine
tiles, :func:`rasterize_polygons` and :func:`read_label_on_grid` put the labels on a scene's
grid, and :class:`RasterChipDataset` reads the chips.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np
import rasterio
import rasterio.crs
from rasterio.features import rasterize
from rasterio.windows import Window

from ...models.sensors import sensor_of
from ..band_mapping import MATCHED_BY_POSITION, FileBands, resolve_bands
from ..radiometry import Harmonisation, find_harmonisation
from ..raster import (
    Grid,
    SourceInfo,
    choose_reference,
    inspect_raster,
    open_aligned,
    select_bands,
)
from ..requests import RasterSource
from ..run_warnings import BANDS_BY_POSITION, LINEAR_TO_DB, RADIOMETRIC_OFFSET, RunWarning
from ..tiling import axis_starts
from ..vector_labels import open_class_layer
from .base import VECTOR_EXTENSIONS, DatasetError, LabelledDataset, RawSample, remap_labels

logger = logging.getLogger(__name__)


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
    from osgeo import osr

    if grid.crs is None:
        raise DatasetError(
            f"Polygons {path} cannot be burnt onto a grid without CRS; georeference the rasters."
        )
    _ds, layer = open_class_layer(path, label_field)
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
    #: Applied before anything else (an offset, linear power to dB:
    #: :mod:`landfuse.core.radiometry`), as the engine applies it.
    harmonisation: Optional[Harmonisation] = None


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
        modalities: The model's modality of each input (``Task.input_modalities``), instead of
            ``band_names``: their sensors also name band files by their file names and find
            radiometric offsets, harmonised as the engine harmonises them when mapping.

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
        modalities: Sequence[Any] = (),
    ) -> None:
        if not scenes:
            raise DatasetError("Give at least one scene (input rasters and labels).")
        self.scenes = tuple(scenes)
        self.chip_size = int(chip_size)
        self.stride = int(stride or chip_size)
        self.ignore_index = ignore_index
        self.nearest_inputs = frozenset(nearest_inputs)
        self.modalities = tuple(modalities)
        names = band_names or [m.band_names for m in self.modalities]
        self.band_names = tuple(tuple(n) for n in names)
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
        plans = tuple(
            self._with_offset(scene, i, plan, group, reference.grid, pixel_grid)
            for i, (plan, group) in enumerate(zip(plans, infos))
        )
        return reference.grid, pixel_grid, plans

    def _with_offset(
        self,
        scene: RasterScene,
        index: int,
        plan: _OpenPlan,
        infos: Sequence[SourceInfo],
        grid: Grid,
        pixel_grid: bool,
    ) -> _OpenPlan:
        """The plan with the radiometric offset of the input's files (their metadata, else
        the sensor's probe band), which the engine would subtract when mapping them."""
        sensor = sensor_of(self.modalities[index]) if index < len(self.modalities) else None
        if sensor is None or not (
            sensor.offset_metadata or sensor.offset_probe or sensor.linear_power_probe
        ):
            return plan
        stack = open_aligned(plan.sources, plan.bands, grid, plan.resampling, pixel_grid, None)
        try:
            values = [
                band
                for source in stack.sources
                for band in source.sample_values(Window(0, 0, grid.width, grid.height))
            ]
        finally:
            stack.close()
        ordered = [values[i] for i in (plan.order or range(len(values)))]
        found = find_harmonisation([i.path for i in infos], sensor, self.band_names[index], ordered)
        if found is None:
            return plan
        code = RADIOMETRIC_OFFSET if found.kind == "offset" else LINEAR_TO_DB
        what = f"scene {scene.title}, input {index + 1}"
        self.warnings.append(RunWarning(code, found.describe(what), str(index + 1)))
        return replace(plan, harmonisation=found)

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
        sensor = sensor_of(self.modalities[index]) if index < len(self.modalities) else None
        files = [
            FileBands(i.path, i.descriptions, tuple(s.bands), sensor=sensor)
            for i, s in zip(infos, sources)
        ]
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
            if plan.harmonisation is not None:
                data = plan.harmonisation.apply(data)
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
