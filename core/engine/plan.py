"""Validation and planning of a run: everything checked before a pixel is computed.

:func:`prepare` turns a request into a :class:`Plan` (model, input groups, grids, tiles,
normalisation, device, outputs) without the weights or pixels; :func:`load_weights` loads the
network and :func:`open_inputs` opens the inputs on the work grid and checks their values.

The model comes from the weights file: its sidecar names the registry entry and carries the
file's bands, normalisation and classes, which the plan uses from the start. A request that
names another model is refused here, before any input is read. Which inputs a model takes, and
how the task words its messages, is the task's (:mod:`landfuse.core.tasks`).

Extension points used by tests and tools: :func:`model_info` (registry name -> entry) and
:func:`load_network` (weights file -> network), looked up in this module at call time.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch
from affine import Affine
from rasterio.windows import Window

from ...models.errors import WeightsMismatchError, WeightsNotFoundError
from ...models.registry import ModelSpec, get_model_spec
from ...models.sensors import sensor_of
from ...models.specs import ModalitySpec, NormalisationSpec
from ...models.state_dicts import check_weights_path
from ...models.weights_info import mismatch_message, peek_weights, trained_tile
from ..band_files import expand_folders
from ..band_mapping import MATCHED_BY_POSITION, FileBands, resolve_bands
from ..device import ExecutionTarget, resolve_target
from ..errors import (
    AlignmentError,
    AreaOfInterestError,
    BandMismatchError,
    EmptyInputError,
    NoOverlapError,
    RequestError,
)
from ..input_checks import BandSample, check_modality_values
from ..normalisation import check_normalisation
from ..products import Product
from ..protection import request_protected_files
from ..radiometry import Harmonisation, find_harmonisation
from ..raster import (
    AlignedStack,
    AreaMask,
    Grid,
    SourceInfo,
    build_area_mask,
    check_georeferenced,
    choose_reference,
    footprint_window,
    inspect_raster,
    intersect_windows,
    open_aligned,
)
from ..requests import RasterSource, Request
from ..run_options import resolve_overlap
from ..run_warnings import BANDS_BY_POSITION, LINEAR_TO_DB, RADIOMETRIC_OFFSET, RunWarning
from ..tasks import Task, task_of
from ..tiling import TileLayout, plan_tiles
from ..writers import OutputSet, ProductSpec, check_free_space

#: Widest vertical stripe of a run (pixels): wider scenes are processed stripe by stripe, so the
#: memory of the blending band, of the output blocks and of GDAL's cache of input blocks stays
#: that of a scene this wide. Each stripe boundary decodes one column of input blocks twice
#: (docs/benchmarks.md).
STRIPE_WIDTH = 2048


def model_info(name: str) -> ModelSpec:
    """The registry entry ``name`` (raises UnknownModelError listing the valid names)."""
    return get_model_spec(name)


def load_network(
    spec: ModelSpec,
    weights: str,
    device: torch.device,
    warn: Optional[Callable[[str, str], None]] = None,
) -> tuple[torch.nn.Module, ModelSpec, str, dict[str, Any]]:
    """Load a weights file for ``spec``'s model.

    Args:
        spec: The model the plan uses.
        weights: The weights file.
        device: Where the network will run (it is loaded on the CPU and moved later).
        warn: ``warn(code, message)`` for what the user must know about the file (an old file
            whose metadata no checksum covers).

    Returns:
        ``(network in eval mode, the entry with the file's modalities and classes, sha256,
        metadata dict)``.

    Raises:
        WeightsError: missing, unsafe, corrupt, or for another model (WeightsMismatchError).
    """
    from ...models import weights as weights_io

    network, metadata, sha = weights_io.load_model(
        weights, model_name=spec.name, device="cpu", warn=warn
    )
    updated = replace(spec, modalities=tuple(metadata.modalities), classes=tuple(metadata.classes))
    return network, updated, sha, metadata.to_dict()


def size_multiple(spec: ModelSpec) -> int:
    """Tile sizes must be multiples of this: AMM-FuseNet needs 16 at either output stride
    (NETWORKS.md §2), AMFNet its stride of 32."""
    return max(int(spec.output_stride), 16)


def unit_names(modality: ModalitySpec) -> tuple[str, ...]:
    """The unit of each band ("" where unknown), which the value checks compare data with."""
    return tuple(b.unit for b in modality.bands)


@dataclass
class InputGroup:
    """One network input: a modality (land cover) or one date (change)."""

    label: str
    modality: ModalitySpec
    sources: tuple[Any, ...]
    infos: tuple[SourceInfo, ...] = ()
    bands: tuple[tuple[int, ...], ...] = ()
    order: Optional[tuple[int, ...]] = None
    matched: str = ""
    stack: Optional[AlignedStack] = None
    #: Applied to the values before normalisation (an offset, linear power to dB), and why.
    harmonisation: Optional[Harmonisation] = None


@dataclass
class Plan:
    """A validated run: everything :mod:`~landfuse.core.engine.execute` needs."""

    request: Request
    task: Task
    spec: ModelSpec
    groups: list[InputGroup]
    reference: SourceInfo
    reference_grid: Grid
    work_window: Window
    grid: Grid
    area: Optional[AreaMask]
    layout: TileLayout
    target: ExecutionTarget
    outputs: OutputSet
    products: tuple[ProductSpec, ...]
    network: Optional[torch.nn.Module] = None
    weights_sha256: str = ""
    weights_metadata: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[RunWarning] = field(default_factory=list)
    memory: dict[str, Any] = field(default_factory=dict)

    def warn(self, code: str, message: str, input_label: str = "") -> None:
        """Record a warning for the user (shown by every surface and kept in the report)."""
        warning = RunWarning(code, message, input_label)
        if warning not in self.warnings:
            self.warnings.append(warning)

    def close(self) -> None:
        for group in self.groups:
            if group.stack is not None:
                group.stack.close()
                group.stack = None
        self.outputs.discard()  # after a failure: the output folder if this run created it


# --- the model ------------------------------------------------------------------------------


def choose_model(request: Request) -> ModelSpec:
    """The model of a run: the one the weights file names, with the file's bands and classes.

    Raises:
        WeightsMismatchError: the request names another model than the file's sidecar.
        RequestError: neither the request nor a sidecar names a model (a published checkpoint).
    """
    peeked = peek_weights(request.weights)
    named = peeked.model_name
    if request.model and named and named != request.model:
        raise WeightsMismatchError(mismatch_message(request.weights, named, request.model))
    name = request.model or named
    if not name:
        why = f" ({peeked.problem})" if peeked.problem else ""
        raise RequestError(
            f"{request.weights} has no LandFuse sidecar naming its model{why}; if it is a "
            "published reference checkpoint, name the model it is for (`landfuse models` lists "
            "them)."
        )
    spec = model_info(name)
    if peeked.metadata is not None and peeked.metadata.modalities:
        spec = replace(
            spec,
            modalities=tuple(peeked.metadata.modalities),
            classes=tuple(peeked.metadata.classes) or spec.classes,
        )
    trained_on = trained_tile(peeked.metadata)
    return replace(spec, tile_size=trained_on) if trained_on else spec


def forced_normalisation(modality: ModalitySpec, forced: str) -> NormalisationSpec:
    """The modality's normalisation, or the forced mode when it can be applied."""
    own = modality.normalisation
    if forced in ("auto", own.mode):
        return own
    if forced == "minmax_per_tile":
        return NormalisationSpec("minmax_per_tile")
    raise RequestError(
        f"The '{forced}' normalisation needs statistics that {modality.title} does not carry "
        f"(it uses '{own.mode}'); use 'auto' or 'minmax_per_tile'."
    )


def _with_normalisation(modality: ModalitySpec, forced: str) -> ModalitySpec:
    norm = forced_normalisation(modality, forced)
    check_normalisation(norm, len(modality.band_names))
    return replace(modality, normalisation=norm)


def product_specs(products: Sequence[Product], spec: ModelSpec) -> tuple[ProductSpec, ...]:
    """The writers' view of the task's products for this model."""
    return tuple(
        ProductSpec(
            p.key,
            p.suffix,
            p.dtype,
            p.nodata,
            p.description.format(model=spec.name),
            p.style,
            p.overview_resampling,
            classes=tuple(spec.classes[: p.class_count]) if p.classes else (),
            value_range=p.value_range,
        )
        for p in products
    )


def _wanted_products(task: Task, request: Request) -> tuple[Product, ...]:
    return tuple(p for p in task.products if p.main or p.key in request.outputs)


# --- inputs ---------------------------------------------------------------------------------


def _resolve_bands(group: InputGroup, plan_warn: Any) -> None:
    """Match the files' bands to the model's (:func:`~landfuse.core.band_mapping.resolve_bands`:
    the one resolver of every surface) and check the count."""
    names = group.modality.band_names
    needed = len(names)
    sensor = sensor_of(group.modality)
    files = [
        FileBands(info.path, info.descriptions, tuple(src.bands), sensor=sensor)
        for info, src in zip(group.infos, group.sources)
    ]
    resolved = resolve_bands(files, names)
    per_file = resolved.per_file(len(files))
    total = len(resolved.choices)
    if total != needed:
        listed = ", ".join(f"{i.path} ({len(b)})" for i, b in zip(group.infos, per_file))
        raise BandMismatchError(
            f"{group.modality.title} ({group.label}) needs {needed} bands "
            f"({', '.join(names)}) but {total} were given: {listed}. Select "
            "the bands in the model's order (by number or by name)."
        )
    unused = [info.path for info, bands in zip(group.infos, per_file) if not bands]
    if unused:
        raise BandMismatchError(
            f"{', '.join(unused)} holds none of the bands {group.label} needs "
            f"({', '.join(names)}); leave it out, or give the right file."
        )
    # One band for one band cannot be in the wrong order: nothing to warn about.
    if resolved.how == MATCHED_BY_POSITION and needed > 1:
        plan_warn(
            BANDS_BY_POSITION,
            f"The {group.label} bands were matched to the model's by their position in the "
            f"file{'s' if len(files) > 1 else ''}, because no band description names them: "
            f"band 1 = {names[0]}, band 2 = {names[1]}, ... If the bands are not in the order "
            f"{', '.join(names)}, the map is wrong: select the bands in the model's order, or "
            "give a file whose bands are described.",
            group.label,
        )
    group.bands = per_file
    group.order = resolved.read_order(len(files))
    group.matched = resolved.how


def _check_georeferencing(groups: Sequence[InputGroup], pixel_grid: bool, task: Task) -> None:
    if pixel_grid:
        return
    message = task.unaligned_message(groups)
    if message:
        raise AlignmentError(message)
    for group in groups:
        for info in group.infos:
            check_georeferenced(info)


def _work_window(groups: Sequence[InputGroup], grid: Grid, task: Task) -> Window:
    """Intersect the footprints of every source on the reference grid."""
    window = Window(0, 0, grid.width, grid.height)
    covered: list[str] = []
    grid_text = f"{grid.describe()['crs']}, bounds {tuple(round(v, 6) for v in grid.bounds)}"
    for group in groups:
        group_window: Optional[Window] = None
        for info in group.infos:
            footprint = footprint_window(info, grid)
            if footprint is None:
                raise NoOverlapError(task.outside_message(group.label, info.path, grid_text))
            group_window = (
                footprint if group_window is None else intersect_windows(group_window, footprint)
            )
            if group_window is None:
                raise NoOverlapError(
                    f"The files of {group.label} do not overlap each other ({info.path}); give "
                    "files of the same area."
                )
        common = intersect_windows(window, group_window) if group_window else None
        if common is None:
            raise NoOverlapError(
                task.disjoint_message(group.label, ", ".join(covered) or "the reference")
            )
        window = common
        covered.append(group.label)
    return window


def _expanded(sources: Sequence[RasterSource], modality: ModalitySpec) -> tuple[RasterSource, ...]:
    """The sources with each folder (a .SAFE product, a folder of band files) replaced by its
    band files (:func:`~landfuse.core.band_files.expand_folders`)."""
    out: list[RasterSource] = []
    for source in sources:
        if not os.path.isdir(source.path):
            out.append(source)
            continue
        if source.bands:
            raise RequestError(
                f"{source.path} is a folder: its band files are found by their names, so a band "
                "selection does not apply; leave it out, or give a stack."
            )
        files = expand_folders([source.path], sensor_of(modality))
        out.extend(RasterSource(f, nodata=source.nodata) for f in files)
    return tuple(out)


def tile_layout(request: Request, spec: ModelSpec, grid: Grid, tile: int) -> TileLayout:
    """The tiles of a run for tile edge ``tile`` (the request's overlap when it fits)."""
    asked = request.overlap
    overlap = resolve_overlap(tile, asked if asked is not None and asked < tile else None)
    return plan_tiles(
        grid.height, grid.width, tile, overlap, size_multiple(spec), stripe_width=STRIPE_WIDTH
    )


def prepare(request: Request) -> Plan:
    """Every check of a run that needs neither the weights nor pixels, in order.

    The weights are loaded by :func:`load_weights` and the inputs opened (and checked for
    data) by :func:`open_inputs`, both after this.
    """
    started = time.perf_counter()
    try:
        task = task_of(request)
    except KeyError:
        raise RequestError("The engine takes a LandCoverRequest or a ChangeRequest.") from None
    if not isinstance(request, task.request_type):
        raise RequestError("The engine takes a LandCoverRequest or a ChangeRequest.")
    if not os.path.exists(request.weights):
        raise WeightsNotFoundError(
            f"The weights file {request.weights} does not exist; train a model or give the path "
            "of a weights file."
        )
    check_weights_path(request.weights)  # a folder or a sidecar: say which file to give
    spec = choose_model(request)
    groups = [
        InputGroup(g.label, g.modality, _expanded(g.sources, g.modality))
        for g in task.source_groups(request, spec)
    ]
    # Inputs: readable, georeferenced (or pixel grid), bands.
    for group in groups:
        group.infos = tuple(inspect_raster(src.path) for src in group.sources)
    _check_georeferencing(groups, request.pixel_grid, task)
    warnings: list[RunWarning] = []

    def collect(code: str, message: str, label: str = "") -> None:
        warnings.append(RunWarning(code, message, label))

    for group in groups:
        _resolve_bands(group, collect)
    # Grid.
    reference = choose_reference(groups[0].infos, request.reference)
    if request.pixel_grid:
        reference_grid = Grid(reference.width, reference.height, Affine.identity(), None)
    else:
        if not reference.georeferenced:
            check_georeferenced(reference)
        reference_grid = reference.grid
    work = _work_window(groups, reference_grid, task)
    area: Optional[AreaMask] = None
    if request.aoi is not None:
        area = build_area_mask(request.aoi, reference_grid)
        clipped = intersect_windows(work, area.window)
        if clipped is None:
            raise AreaOfInterestError(
                "The area of interest lies outside the area where all inputs overlap (it meets "
                "some of them only); draw it where every input has imagery, or leave it out "
                "to map the whole overlap."
            )
        work = clipped
    grid = reference_grid.window_grid(work)
    # Tiles, normalisation, device.
    tile = request.tile or spec.tile_size
    if request.overlap is not None and request.overlap >= tile:
        raise RequestError(
            f"The overlap ({request.overlap} px) must be smaller than the tile ({tile} px)."
        )
    layout = tile_layout(request, spec, grid, tile)
    for group in groups:
        group.modality = _with_normalisation(group.modality, request.normalisation)
    target = resolve_target(request.device, request.precision)
    # Outputs.
    products = product_specs(_wanted_products(task, request), spec)
    outputs = OutputSet(
        folder=Path(request.output_dir).absolute(),
        name=str(request.name),
        products=products,
        cog=request.cog,
        overwrite=request.overwrite,
        protected=request_protected_files(request),
        other_suffixes=tuple(p.suffix for p in task.products),
    )
    outputs.prepare()
    try:
        check_free_space(outputs.folder, outputs.estimated_bytes(grid))
        plan = Plan(
            request=request,
            task=task,
            spec=spec,
            groups=groups,
            reference=reference,
            reference_grid=reference_grid,
            work_window=work,
            grid=grid,
            area=area,
            layout=layout,
            target=target,
            outputs=outputs,
            products=products,
            warnings=warnings,
        )
    except BaseException:  # a stop signal included: the folder made by prepare() goes again
        outputs.discard()
        raise
    plan.timings["validate_inputs"] = time.perf_counter() - started
    return plan


def no_valid_pixel() -> EmptyInputError:
    """The error of a run whose tiles held no valid pixel (in-process or in jobs)."""
    return EmptyInputError(
        "No pixel has valid data in every input inside the area processed; check the "
        "inputs' nodata values, their overlap and the area of interest."
    )


def load_weights(plan: Plan) -> None:
    """Load the network. The plan already has the sidecar's bands and classes; a file without
    a sidecar (whose metadata only the file holds) may still bring others, checked here."""
    started = time.perf_counter()
    network, updated, sha, metadata = load_network(
        plan.spec, plan.request.weights, plan.target.device, warn=plan.warn
    )
    for group in plan.groups:
        new = next((m for m in updated.modalities if m.key == group.modality.key), None)
        if new is None:
            raise WeightsMismatchError(
                f"{plan.request.weights} has no '{group.modality.key}' input; pick the matching "
                "model or weights."
            )
        if len(new.band_names) != len(group.modality.band_names):
            raise BandMismatchError(
                f"The weights expect {len(new.band_names)} {new.key} bands "
                f"({', '.join(new.band_names)}), the inputs give {len(group.modality.band_names)}."
            )
        group.modality = _with_normalisation(new, plan.request.normalisation)
    plan.spec = updated
    plan.products = product_specs(_wanted_products(plan.task, plan.request), updated)
    plan.outputs.products = plan.products
    plan.network = network
    plan.weights_sha256 = sha
    plan.weights_metadata = metadata
    plan.timings["load_weights"] = time.perf_counter() - started


def open_inputs(plan: Plan) -> None:
    """Open every source on the work grid and check none is all nodata there."""
    started = time.perf_counter()
    full = Window(0, 0, plan.grid.width, plan.grid.height)
    for group in plan.groups:
        group.stack = open_aligned(
            group.sources,
            group.bands,
            plan.grid,
            group.modality.resampling,
            plan.request.pixel_grid,
            group.order,
        )
        for source in group.stack.sources:
            if not source.has_valid_pixels(full):
                raise EmptyInputError(
                    f"{source.path} holds only nodata (or masked) pixels in the area processed; "
                    "check its nodata value, the area of interest, or give another scene."
                )
        _check_values(plan, group, full)
    plan.timings["open_inputs"] = time.perf_counter() - started


def _check_values(plan: Plan, group: InputGroup, window: Window) -> None:
    """Sample the group's files and compare their values with what the model expects."""
    if group.stack is None:
        return
    samples_by_read: list[tuple[str, str, Any]] = []
    for source in group.stack.sources:
        values = source.sample_values(window)
        for position, dtype in enumerate(source.band_dtypes):
            samples_by_read.append((source.path, dtype, values[position]))
    order = group.order or tuple(range(len(samples_by_read)))
    names = group.modality.band_names
    values = [samples_by_read[i][2] for i in order]
    _find_harmonisation(plan, group, values)
    if group.harmonisation is not None:
        values = [group.harmonisation.apply(v) for v in values]
    samples = [
        BandSample(name, unit, samples_by_read[i][1], samples_by_read[i][0], value)
        for name, unit, i, value in zip(names, unit_names(group.modality), order, values)
    ]
    for warning in check_modality_values(group.label, samples, group.modality.normalisation):
        plan.warn(warning.code, warning.message, warning.input)


def _find_harmonisation(plan: Plan, group: InputGroup, values: Sequence[Any]) -> None:
    """What the group's sensor table says to harmonise (an offset in its metadata or shown by a
    probe band, linear power where the model takes dB): applied before normalisation, said."""
    sensor = sensor_of(group.modality)
    if sensor is None:
        return
    found = find_harmonisation(
        [info.path for info in group.infos], sensor, group.modality.band_names, values
    )
    if found is None:
        return
    group.harmonisation = found
    code = RADIOMETRIC_OFFSET if found.kind == "offset" else LINEAR_TO_DB
    plan.warn(code, found.describe(group.label), group.label)
