"""The engine: one service that turns a request into mapped rasters (no QGIS here).

API (what the dock, Processing, the command line, the worker, the demo and the benchmark call)::

    from landfuse.core import engine
    from landfuse.core.requests import (
        AreaOfInterest, ChangeRequest, LandCoverRequest, ModalityInput, RasterSource)

    request = LandCoverRequest(
        inputs=(ModalityInput("s2", "S2_stack.tif"),                       # one 13-band stack
                ModalityInput("s1", RasterSource("S1.tif", bands=(1, 2)))),
        model="amm_fusenet_s2_s1_hunan", weights="hunan.pt", output_dir="out/")
    result = engine.run_landcover(request, progress=print, cancel=None)   # -> RunResult
    result.outputs    # {"classes": ".../landcover_classes.tif", "confidence": ..., "report": ...}
    result.report     # the JSON report as a dict (timings, tiles, areas...)

    pair = ChangeRequest(before=("T1_B01.tif", ..., "T1_B12.tif"),       # one file per band
                         after=("T2_B01.tif", ..., "T2_B12.tif"),
                         model="amfnet_s2", weights="oscd.pt", output_dir="out/")
    result = engine.run_change(pair)        # outputs: "change" (mask), "probability", "report"
    result = engine.run(request_or_pair)    # dispatch on the type
    summary = engine.validate(request)      # every check of a run; nothing computed or written

``progress`` receives :class:`~landfuse.core.runner.Progress` objects (``stage`` in ``prepare``,
``infer``, ``finish``, ``done``; ``fraction`` 0..1; ``tiles_done``, ``tiles_total``;
``eta_seconds``; ``message``), in the calling thread: after validation, after every batch, and
while finishing. ``cancel`` is a callable returning True to stop; it is checked before every
batch and before the outputs are finished, and a cancel raises
:class:`~landfuse.core.errors.CancelledError` after removing every temporary file. Every other
failure a user can act on raises a subclass of :class:`~landfuse.models.errors.LandFuseError`
(see :mod:`landfuse.core.errors`, and the weights errors of :mod:`landfuse.models.errors`), also
after cleaning up; the inputs are only ever opened read-only. Anything else is a bug.

Output files, report keys and encodings: :mod:`landfuse.core.writers`. The report's
``timings_s`` separates ``network`` (forward passes), ``waiting_for_data`` (compute waiting for
the reader thread), ``tiles_loop`` (the whole tile loop), ``finish`` (COG and styles) and
``total``; ``tiles`` gives the tile size, overlap, counts and batch sizes.

For raw network throughput on pre-loaded tiles (the benchmark's baseline), use the same pieces
the engine uses: ``network, info, sha, meta = engine.load_network(engine.model_info(name),
weights, device)`` and ``runner.BatchPredictor(network, device.resolve_target(dev, prec),
batch).predict([array_per_input])`` with ``float32 [B, bands, H, W]`` arrays.

A run, in order (DESIGN.md §2):

1. **Validate** before any pixel: the request's fields (in the dataclass), the model name
   (registry), every input file (readable, georeferenced unless pixel-grid mode), the band
   selection against the model's bands, the reference grid, overlap of the inputs and of the area
   of interest, tile size against the output stride, normalisation numbers, device and precision,
   the output folder (writable, no clash, free space), then the weights file (verified, for this
   model) and finally that no input is all nodata where the work happens.
2. **Align**: each input is read on the work grid (the reference grid cut to the area where all
   inputs and the area of interest overlap) through a lazy ``WarpedVRT``.
3. **Tile** (:mod:`~landfuse.core.tiling`), **infer** in batches with read-ahead
   (:mod:`~landfuse.core.runner`), **blend** softmax probabilities with a Hann window in a band of
   rows (:mod:`~landfuse.core.blending`), **write** the finished windows straight to disk
   (:mod:`~landfuse.core.writers`). A scene wider than :data:`STRIPE_WIDTH` is processed in
   vertical stripes, each top to bottom, so that the blending band, the output blocks being
   assembled and GDAL's block cache (lowered for the run to the input blocks of two rows of
   tiles of one stripe) are bounded by the stripe's width: memory does not depend on the scene
   size, only ``classes × height × overlap`` for the columns two stripes share.
4. **Finish**: Cloud-Optimised GeoTIFFs, QML styles and the JSON report are moved to their final
   names only when everything succeeded.

Extension points used by tests and tools: :func:`model_info` (registry entry -> what the engine
needs) and :func:`load_network` (weights file -> network) are module-level functions.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime as _dt
import gc
import logging
import math
import os
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
from affine import Affine
from rasterio.windows import Window

from ..models.errors import WeightsMismatchError, WeightsNotFoundError
from ..models.weights import check_weights_path
from .band_mapping import MATCHED_BY_POSITION, FileBands, resolve_bands
from .blending import BlendedRows, TileBlender, blend_window, winning_class
from .device import ExecutionTarget, resolve_target
from .errors import (
    AlignmentError,
    AreaOfInterestError,
    BandMismatchError,
    CancelledError,
    EmptyInputError,
    NoOverlapError,
    NotEnoughMemoryError,
    RequestError,
)
from .input_checks import BandSample, check_modality_values
from .integrity import gdal_messages_to_log
from .memory import (
    HEADROOM,
    RunShape,
    activation_bytes_per_pixel,
    available_device_memory,
    available_host_memory,
    estimate_run_memory,
    format_bytes,
    largest_fitting_tile,
)
from .normalisation import NormalisationLike, check_normalisation, normalise
from .protection import request_protected_files
from .raster import (
    AlignedStack,
    AreaMask,
    Grid,
    SourceInfo,
    bounded_block_cache,
    build_area_mask,
    check_georeferenced,
    choose_reference,
    footprint_window,
    inspect_raster,
    intersect_windows,
    open_aligned,
)
from .requests import ChangeRequest, LandCoverRequest, RasterSource, Request, request_to_dict
from .run_warnings import BANDS_BY_POSITION, RunWarning, WarningCallback
from .runner import BatchPredictor, CancelCheck, Progress, ProgressCallback, TileData, run_tiles
from .tiling import Tile, TileLayout, plan_tiles, reflect_pad
from .writers import (
    CLASS_NODATA,
    PROBABILITY_NODATA,
    AreaTally,
    OutputSet,
    ProductSpec,
    StreamingGeoTiff,
    check_free_space,
)

logger = logging.getLogger(__name__)

__all__ = [
    "ModalityPlan",
    "ModelInfo",
    "RunResult",
    "load_network",
    "model_info",
    "run",
    "run_change",
    "run_landcover",
    "validate",
]

#: Widest vertical stripe of a run (pixels): wider scenes are processed stripe by stripe, so the
#: memory of the blending band, of the output blocks and of GDAL's cache of input blocks stays
#: that of a scene this wide. Each stripe boundary decodes one column of input blocks twice
#: (docs/benchmarks.md).
STRIPE_WIDTH = 2048
#: Smallest GDAL block cache a run works with (bytes), whatever its inputs.
_BLOCK_CACHE_FLOOR = 32 << 20
#: GDAL block cache while the Cloud-Optimised GeoTIFFs are written (bytes).
_FINISH_BLOCK_CACHE = 64 << 20
# Fractions of the overall progress given to each stage.
_PREPARE_END = 0.02
_INFER_END = 0.95


@dataclass(frozen=True)
class SimpleNormalisation:
    """A normalisation built by the engine (e.g. a forced ``minmax_per_tile``)."""

    mode: str
    lower: tuple[float, ...] = ()
    upper: tuple[float, ...] = ()
    factor: float = 1.0
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()


@dataclass(frozen=True)
class ModalityPlan:
    """What the engine needs about one modality of a model.

    Attributes:
        key: Modality key (``"s2"``, ``"s1"``, ``"dem"``, ``"rgb"``...).
        title: Human title.
        band_names: Band names in network order.
        normalisation: Mode and numbers.
        resampling: ``"bilinear"`` or ``"nearest"``.
        units: Unit of each band (``"reflectance x 10000"``, ``"dB"``...; empty: unknown),
            which the input statistics check compares the data with.
    """

    key: str
    title: str
    band_names: tuple[str, ...]
    normalisation: NormalisationLike
    resampling: str = "bilinear"
    units: tuple[str, ...] = ()

    @classmethod
    def from_spec(cls, spec: Any) -> ModalityPlan:
        """Build from a ``models.registry.ModalitySpec``."""
        return cls(
            key=spec.key,
            title=spec.title,
            band_names=tuple(b.name for b in spec.bands),
            normalisation=spec.normalisation,
            resampling=spec.resampling,
            units=tuple(b.unit for b in spec.bands),
        )


@dataclass(frozen=True)
class ModelInfo:
    """What the engine needs about a model before loading its weights.

    Attributes:
        name: Registry name.
        title: Human title.
        task: ``"landcover"`` or ``"change"``.
        modalities: Land cover: one per network input, in order; change: exactly one.
        classes: Class table (``value``, ``name``, ``color``).
        tile_size: Default tile edge.
        output_stride: Tile sizes must be multiples of it.
    """

    name: str
    title: str
    task: str
    modalities: tuple[ModalityPlan, ...]
    classes: tuple[Any, ...]
    tile_size: int
    output_stride: int


def model_info(name: str) -> ModelInfo:
    """Look a model up in the registry.

    Args:
        name: Registry name.

    Returns:
        Its :class:`ModelInfo`.

    Raises:
        UnknownModelError: listing the valid names.
    """
    from ..models import registry

    spec = registry.get_model_spec(name)
    # AMM-FuseNet's tiles need multiples of 16 at either output stride (NETWORKS.md §2); AMFNet
    # of 32. The registry gives the network's stride; the safe size multiple is at least 16.
    stride = max(int(spec.output_stride), 16)
    return ModelInfo(
        name=spec.name,
        title=spec.title,
        task=spec.task,
        modalities=tuple(ModalityPlan.from_spec(m) for m in spec.modalities),
        classes=tuple(spec.classes),
        tile_size=int(spec.tile_size),
        output_stride=stride,
    )


def load_network(
    info: ModelInfo,
    weights: str,
    device: torch.device,
    warn: Optional[Callable[[str, str], None]] = None,
) -> tuple[torch.nn.Module, ModelInfo, str, dict[str, Any]]:
    """Load a weights file for ``info``'s model.

    A project weights file brings its own modalities (band names, normalisation statistics)
    and class table, which then replace the registry's; a published reference checkpoint uses
    the registry entry as it is.

    Args:
        info: The registry model the request names.
        weights: The weights file.
        device: Where the network will run (it is loaded on the CPU and moved later).
        warn: ``warn(code, message)`` for what the user must know about the file (an old file
            whose metadata no checksum covers).

    Returns:
        ``(network in eval mode, model info updated from the file, sha256, metadata dict)``.

    Raises:
        WeightsError: missing, unsafe, corrupt, or for another model (WeightsMismatchError).
    """
    from ..models import weights as weights_io

    network, metadata, sha = weights_io.load_model(
        weights, model_name=info.name, device="cpu", warn=warn
    )
    updated = replace(
        info,
        modalities=tuple(ModalityPlan.from_spec(m) for m in metadata.modalities),
        classes=tuple(metadata.classes),
    )
    return network, updated, sha, metadata.to_dict()


@dataclass(frozen=True)
class RunResult:
    """The outcome of a successful run.

    Attributes:
        task: ``"landcover"`` or ``"change"``.
        outputs: Final path of each product (``classes``, ``confidence``, ``change``,
            ``probability``) and of the ``report``.
        report: The run report (the same content as the JSON file).
    """

    task: str
    outputs: dict[str, str]
    report: dict[str, Any]

    @property
    def report_path(self) -> str:
        """Path of the JSON report."""
        return self.outputs["report"]

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-compatible summary (the worker's result line)."""
        keys = ("device", "precision", "tiles", "timings_s", "warnings")
        summary = {k: self.report.get(k) for k in keys}
        summary["areas"] = self.report.get("classes") or self.report.get("change")
        return {"task": self.task, "outputs": dict(self.outputs), "summary": summary}


@dataclass
class _InputGroup:
    """One network input: a modality (land cover) or one date (change)."""

    label: str
    modality: ModalityPlan
    sources: tuple[RasterSource, ...]
    infos: tuple[SourceInfo, ...] = ()
    bands: tuple[tuple[int, ...], ...] = ()
    order: Optional[tuple[int, ...]] = None
    matched: str = ""
    stack: Optional[AlignedStack] = None


@dataclass
class _Plan:
    request: Request
    info: ModelInfo
    groups: list[_InputGroup]
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


def _progress(callback: Optional[ProgressCallback], stage: str, fraction: float, msg: str) -> None:
    if callback is not None:
        callback(Progress(stage=stage, fraction=fraction, message=msg))


def _check_cancel(cancel: Optional[CancelCheck]) -> None:
    if cancel is not None and cancel():
        raise CancelledError("The run was cancelled; no output was written.")


# --- validation -----------------------------------------------------------------------------


def _groups_for(request: Request, info: ModelInfo) -> list[_InputGroup]:
    if isinstance(request, ChangeRequest):
        if info.task != "change":
            raise RequestError(
                f"{info.name} is a {info.task} model; use it with predict-landcover, or pick a "
                "change model."
            )
        modality = info.modalities[0]
        return [
            _InputGroup("before", modality, request.before),
            _InputGroup("after", modality, request.after),
        ]
    if info.task != "landcover":
        raise RequestError(
            f"{info.name} is a {info.task} model; use it with predict-change, or pick a land-cover "
            "model."
        )
    given = {item.key: item for item in request.inputs}
    wanted = [m.key for m in info.modalities]
    missing = [k for k in wanted if k not in given]
    extra = [k for k in given if k not in wanted]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing)}")
        if extra:
            parts.append(f"not used by this model: {', '.join(extra)}")
        raise RequestError(
            f"{info.name} takes the modalities {', '.join(wanted)} ({'; '.join(parts)})."
        )
    return [_InputGroup(m.key, m, given[m.key].sources) for m in info.modalities]


def _resolve_bands(group: _InputGroup, plan_warn: Any) -> None:
    """Match the files' bands to the model's (:func:`~landfuse.core.band_mapping.resolve_bands`:
    the one resolver of every surface) and check the count."""
    needed = len(group.modality.band_names)
    files = [
        FileBands(info.path, info.descriptions, tuple(src.bands))
        for info, src in zip(group.infos, group.sources)
    ]
    resolved = resolve_bands(files, group.modality.band_names)
    per_file = resolved.per_file(len(files))
    total = len(resolved.choices)
    if total != needed:
        listed = ", ".join(f"{i.path} ({len(b)})" for i, b in zip(group.infos, per_file))
        raise BandMismatchError(
            f"{group.modality.title} ({group.label}) needs {needed} bands "
            f"({', '.join(group.modality.band_names)}) but {total} were given: {listed}. Select "
            "the bands in the model's order (by number or by name)."
        )
    unused = [info.path for info, bands in zip(group.infos, per_file) if not bands]
    if unused:
        raise BandMismatchError(
            f"{', '.join(unused)} holds none of the bands {group.label} needs "
            f"({', '.join(group.modality.band_names)}); leave it out, or give the right file."
        )
    # One band for one band cannot be in the wrong order: nothing to warn about.
    if resolved.how == MATCHED_BY_POSITION and needed > 1:
        names = group.modality.band_names
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


def _check_georeferencing(groups: Sequence[_InputGroup], pixel_grid: bool, task: str) -> None:
    infos = [i for g in groups for i in g.infos]
    if pixel_grid:
        return
    if task == "change":
        before = all(i.georeferenced for i in groups[0].infos)
        after = all(i.georeferenced for i in groups[1].infos)
        if before != after:
            plain = groups[1] if before else groups[0]
            raise AlignmentError(
                f"The '{'before' if before else 'after'}' image is georeferenced but the "
                f"'{plain.label}' image ({plain.infos[0].path}) is not, so they cannot be put on "
                "one grid; georeference it, or use the pixel-grid mode if both are plain images "
                "of the same size."
            )
    for info in infos:
        check_georeferenced(info)


def _work_window(plan_groups: Sequence[_InputGroup], grid: Grid, task: str) -> Window:
    """Intersect the footprints of every source on the reference grid."""
    window = Window(0, 0, grid.width, grid.height)
    covered: list[str] = []
    for group in plan_groups:
        group_window: Optional[Window] = None
        for info in group.infos:
            footprint = footprint_window(info, grid)
            if footprint is None and task == "change":
                raise NoOverlapError(
                    f"The '{group.label}' image {info.path} does not overlap the 'before' image, "
                    "so the pair cannot be aligned; give two images of the same area."
                )
            if footprint is None:
                raise NoOverlapError(
                    f"{info.path} does not overlap the reference grid ({grid.describe()['crs']}, "
                    f"bounds {tuple(round(v, 6) for v in grid.bounds)}); give inputs that cover "
                    "the same area."
                )
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
            others = ", ".join(covered) or "the reference"
            message = (
                f"The {group.label} input does not overlap {others}; the inputs must cover a "
                "common area."
            )
            if task == "change":
                raise NoOverlapError(
                    "The 'before' and 'after' images do not overlap, so they cannot be aligned; "
                    "give a pair of the same area."
                )
            raise NoOverlapError(message)
        window = common
        covered.append(group.label)
    return window


def _products(request: Request, info: ModelInfo) -> tuple[ProductSpec, ...]:
    if isinstance(request, ChangeRequest):
        products = [
            ProductSpec(
                "change",
                "mask",
                "uint8",
                CLASS_NODATA,
                "change (0 no change, 1 change)",
                "change",
                "NEAREST",
                classes=tuple(info.classes[:2]),
            )
        ]
        if "probability" in request.outputs:
            products.append(
                ProductSpec(
                    "probability",
                    "probability",
                    "float32",
                    PROBABILITY_NODATA,
                    "probability of change (0-1)",
                    "gradient",
                    "AVERAGE",
                )
            )
        return tuple(products)
    products = [
        ProductSpec(
            "classes",
            "classes",
            "uint8",
            CLASS_NODATA,
            f"land cover ({info.name})",
            "classes",
            "NEAREST",
            classes=tuple(info.classes),
        )
    ]
    if "confidence" in request.outputs:
        products.append(
            ProductSpec(
                "confidence",
                "confidence",
                "uint8",
                CLASS_NODATA,
                "confidence of the class (% probability)",
                "gradient",
                "AVERAGE",
                value_range=(0.0, 100.0),
            )
        )
    return tuple(products)


def _all_product_suffixes(request: Request) -> tuple[str, ...]:
    """File suffixes of every product the request's task can write."""
    if isinstance(request, ChangeRequest):
        return ("mask", "probability")
    return ("classes", "confidence")


def _normalisation_for(modality: ModalityPlan, forced: str) -> NormalisationLike:
    """The modality's normalisation, or the forced mode when it can be applied."""
    own = modality.normalisation
    if forced in ("auto", own.mode):
        return own
    if forced == "minmax_per_tile":
        return SimpleNormalisation("minmax_per_tile")
    raise RequestError(
        f"The '{forced}' normalisation needs statistics that {modality.title} does not carry "
        f"(it uses '{own.mode}'); use 'auto' or 'minmax_per_tile'."
    )


def _prepare(request: Request) -> _Plan:
    """Every check of a run that needs neither the weights nor pixels, in order.

    The weights are loaded by :func:`_load_weights` and the inputs opened (and checked for
    data) by :func:`_open_inputs`, both after this.
    """
    started = time.perf_counter()
    if not isinstance(request, (LandCoverRequest, ChangeRequest)):
        raise RequestError("The engine takes a LandCoverRequest or a ChangeRequest.")
    info = model_info(request.model)
    groups = _groups_for(request, info)
    if not os.path.exists(request.weights):
        raise WeightsNotFoundError(
            f"The weights file {request.weights} does not exist; train a model or give the path "
            "of a weights file."
        )
    check_weights_path(request.weights)  # a folder or a sidecar: say which file to give
    # Inputs: readable, georeferenced (or pixel grid), bands.
    for group in groups:
        group.infos = tuple(inspect_raster(src.path) for src in group.sources)
    _check_georeferencing(groups, request.pixel_grid, request.task)
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
    work = _work_window(groups, reference_grid, request.task)
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
    tile = request.tile or info.tile_size
    overlap = request.overlap if request.overlap is not None else tile // 8
    if overlap >= tile:
        raise RequestError(f"The overlap ({overlap} px) must be smaller than the tile ({tile} px).")
    layout = plan_tiles(
        grid.height, grid.width, tile, overlap, info.output_stride, stripe_width=STRIPE_WIDTH
    )
    for group in groups:
        norm = _normalisation_for(group.modality, request.normalisation)
        check_normalisation(norm, len(group.modality.band_names))
        group.modality = replace(group.modality, normalisation=norm)
    target = resolve_target(request.device, request.precision)
    # Outputs.
    products = _products(request, info)
    outputs = OutputSet(
        folder=Path(request.output_dir).absolute(),
        name=str(request.name),
        products=products,
        cog=request.cog,
        overwrite=request.overwrite,
        protected=request_protected_files(request),
        other_suffixes=_all_product_suffixes(request),
    )
    outputs.prepare()
    try:
        check_free_space(outputs.folder, outputs.estimated_bytes(grid))
        plan = _Plan(
            request=request,
            info=info,
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


def _load_weights(plan: _Plan) -> None:
    """Load the network; a project file may bring its own bands/normalisation/classes."""
    started = time.perf_counter()
    network, updated, sha, metadata = load_network(
        plan.info, plan.request.weights, plan.target.device, warn=plan.warn
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
        norm = _normalisation_for(new, plan.request.normalisation)
        check_normalisation(norm, len(new.band_names))
        group.modality = replace(new, normalisation=norm)
    plan.info = updated
    plan.products = _products(plan.request, updated)
    plan.outputs.products = plan.products
    plan.network = network
    plan.weights_sha256 = sha
    plan.weights_metadata = metadata
    plan.timings["load_weights"] = time.perf_counter() - started


def _open_inputs(plan: _Plan) -> None:
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


def _check_values(plan: _Plan, group: _InputGroup, window: Window) -> None:
    """Sample the group's files and compare their values with what the model expects."""
    if group.stack is None:
        return
    samples_by_read: list[tuple[str, str, np.ndarray]] = []
    for source in group.stack.sources:
        values = source.sample_values(window)
        for position, dtype in enumerate(source.band_dtypes):
            samples_by_read.append((source.path, dtype, values[position]))
    order = group.order or tuple(range(len(samples_by_read)))
    units = group.modality.units or ("",) * len(group.modality.band_names)
    samples = [
        BandSample(name, unit, samples_by_read[i][1], samples_by_read[i][0], samples_by_read[i][2])
        for name, unit, i in zip(group.modality.band_names, units, order)
    ]
    for warning in check_modality_values(group.label, samples, group.modality.normalisation):
        plan.warn(warning.code, warning.message, warning.input)


def _run_shape(plan: _Plan, tile: int) -> RunShape:
    """The sizes that set a run's memory, for the plan's tile or another one."""
    if tile == plan.layout.tile:
        layout = plan.layout
    else:
        asked = plan.request.overlap
        overlap = asked if asked is not None and asked < tile else tile // 8
        layout = plan_tiles(
            plan.grid.height,
            plan.grid.width,
            tile,
            overlap,
            plan.info.output_stride,
            stripe_width=STRIPE_WIDTH,
        )
    shared = max(
        (layout.stripe_span(s)[1] - layout.stripe_owned(s)[1] for s in range(layout.stripes)),
        default=0,
    )
    network = plan.network
    parameters = (
        sum(t.numel() * t.element_size() for t in network.state_dict().values()) if network else 0
    )
    architecture = str(plan.weights_metadata.get("architecture", ""))
    config = plan.weights_metadata.get("config") or {}
    return RunShape(
        tile_height=layout.padded_height,
        tile_width=layout.padded_width,
        batch=min(plan.request.batch, len(layout)),
        batches=math.ceil(len(layout) / max(1, min(plan.request.batch, len(layout)))),
        bands=sum(len(g.modality.band_names) for g in plan.groups),
        classes=len(plan.info.classes),
        stripe_width=layout.max_stripe_width,
        scene_height=layout.height,
        shared_columns=shared,
        activation_bytes_per_pixel=activation_bytes_per_pixel(architecture, config),
        parameter_bytes=parameters,
        block_cache_bytes=_block_cache_bytes(plan, layout),
    )


def _check_memory(plan: _Plan) -> None:
    """Refuse a run whose estimated peak memory exceeds what the machine has free.

    Set ``LANDFUSE_SKIP_MEMORY_CHECK=1`` to run anyway (the estimate is deliberately on the
    safe side; the run may then fail for lack of memory).
    """
    shape = _run_shape(plan, plan.layout.tile)
    on_accelerator = plan.target.device.type != "cpu"
    estimate = estimate_run_memory(shape, on_accelerator)
    host = available_host_memory()
    device = available_device_memory(plan.target.device) if on_accelerator else None
    plan.memory = {
        "estimate_bytes": estimate.host + estimate.device,
        "estimate_host_bytes": estimate.host,
        "estimate_device_bytes": estimate.device,
        "parts_bytes": dict(estimate.parts),
        "available_host_bytes": host.bytes if host else None,
        "available_device_bytes": device.bytes if device else None,
    }
    if os.environ.get("LANDFUSE_SKIP_MEMORY_CHECK", "").strip() in ("1", "true", "yes"):
        return
    host_budget = int(host.bytes * HEADROOM) if host else None
    device_budget = int(device.bytes * HEADROOM) if device else None
    short_host = host_budget is not None and estimate.host > host_budget
    short_device = device_budget is not None and estimate.device > device_budget
    if not (short_host or short_device):
        return
    need, free = (estimate.device, device) if short_device and device else (estimate.host, host)
    if free is None:  # unreachable: a shortage needs a budget
        return
    largest = largest_fitting_tile(
        lambda edge: _run_shape(plan, edge),
        plan.layout.tile,
        host_budget,
        device_budget,
        plan.info.output_stride,
        on_accelerator,
    )
    biggest = sorted(estimate.parts.items(), key=lambda kv: -kv[1])[:3]
    detail = ", ".join(f"{name} {format_bytes(size)}" for name, size in biggest)
    if largest >= plan.info.output_stride:
        fix = (
            f"Use a tile of at most {largest} px (--tile on the command line, 'Tile size' in "
            "Processing and the dock)"
            + (f" or a smaller batch than {shape.batch}" if shape.batch > 1 else "")
            + "."
        )
    else:
        fix = (
            "Even the smallest tile does not fit: close other programs, use batch 1, or run on "
            "a machine with more memory."
        )
    raise NotEnoughMemoryError(
        f"This run would need about {format_bytes(need)} of memory ({detail}) with tiles of "
        f"{shape.tile_width}x{shape.tile_height} px, {shape.batch} per batch, but only "
        f"{format_bytes(free.bytes)} is free ({free.source}). {fix}"
    )


def _make_ready(
    plan: _Plan, warn: Optional[WarningCallback], cancel: Optional[CancelCheck] = None
) -> None:
    """The validation steps after :func:`_prepare`, shared by :func:`validate` and a run:
    weights, inputs (opened, checked for data and values), memory, then the warnings."""
    _load_weights(plan)
    _check_cancel(cancel)
    _open_inputs(plan)
    _check_memory(plan)
    _emit_warnings(plan, warn)


def _emit_warnings(plan: _Plan, warn: Optional[WarningCallback]) -> None:
    """Hand each warning to the caller's callback (which shows it), or log it when there is none."""
    for warning in plan.warnings:
        if warn is not None:
            logger.info("warning: %s", warning.message)
            warn(warning)
        else:
            logger.warning("%s", warning.message)


def validate(request: Request, warn: Optional[WarningCallback] = None) -> dict[str, Any]:
    """Run every check of a run without computing a pixel (nothing is written).

    Args:
        request: A land-cover or change request.
        warn: Called with each :class:`~landfuse.core.run_warnings.RunWarning` found.

    Returns:
        A summary: model, grid, tiles, device, precision, outputs that would be written, and
        the ``warnings`` (as dicts).

    Raises:
        LandFuseError: the same errors a run would raise during validation.
    """
    plan = _prepare(request)
    try:
        _make_ready(plan, warn)
        return {
            "task": request.task,
            "model": plan.info.name,
            "grid": plan.grid.describe(),
            "tiles": len(plan.layout),
            "tile": plan.layout.tile,
            "overlap": plan.layout.overlap,
            "device": str(plan.target.device),
            "precision": plan.target.precision,
            "outputs": [str(p) for p in plan.outputs.final_paths()],
            "warnings": [w.to_dict() for w in plan.warnings],
            "memory": plan.memory,
        }
    finally:
        plan.close()


# --- the run --------------------------------------------------------------------------------


class _TileLoader:
    """Reads, normalises and pads one tile (runs in the reader thread)."""

    def __init__(self, plan: _Plan) -> None:
        self.plan = plan
        self.shape = (plan.layout.padded_height, plan.layout.padded_width)

    def __call__(self, tile: Tile) -> Optional[TileData]:
        with gdal_messages_to_log():  # the reader thread's GDAL messages: to the log
            return self._load(tile)

    def _load(self, tile: Tile) -> Optional[TileData]:
        plan = self.plan
        window = Window(tile.col, tile.row, tile.width, tile.height)
        valid: Optional[np.ndarray] = None
        if plan.area is not None:
            # The area mask is on the reference grid; the work grid is offset into it.
            ref_window = Window(
                window.col_off + plan.work_window.col_off,
                window.row_off + plan.work_window.row_off,
                window.width,
                window.height,
            )
            valid = plan.area.mask(plan.reference_grid, ref_window)
            if valid is not None and not valid.any():
                return None
        inputs = []
        for group in plan.groups:
            if group.stack is None:
                raise RuntimeError("Inputs are not open (internal error).")
            data, ok = group.stack.read(window)
            valid = ok.copy() if valid is None else (valid & ok)
            # Statistics over the modality's own valid pixels (AOI-independent, NETWORKS.md §2).
            normalised = normalise(data, group.modality.normalisation, ok)
            inputs.append(reflect_pad(normalised, self.shape))
        if valid is None or not valid.any():
            return None
        return TileData(inputs=inputs, valid=valid)


class _Blender:
    """Blends tile probabilities and streams finished windows to the writers."""

    def __init__(
        self,
        plan: _Plan,
        writers: dict[str, StreamingGeoTiff],
        tally: AreaTally,
    ) -> None:
        self.plan = plan
        self.writers = writers
        self.tally = tally
        self.blender = TileBlender(len(plan.info.classes), plan.layout)
        self.change = isinstance(plan.request, ChangeRequest)
        self.threshold = getattr(plan.request, "threshold", 0.5)
        self.valid_pixels = 0

    def add(
        self, tile: Tile, probabilities: Optional[np.ndarray], data: Optional[TileData]
    ) -> None:
        if probabilities is None or data is None:
            finished = self.blender.add(tile, None, None)
        else:
            weights = blend_window(tile.height, tile.width) * data.valid
            finished = self.blender.add(tile, probabilities, weights)
        for blended in finished:
            self._write(blended)

    def finish(self) -> None:
        for blended in self.blender.finish():
            self._write(blended)

    def _write(self, blended: BlendedRows) -> None:
        covered = blended.covered
        row, col = blended.row, blended.col
        self.valid_pixels += int(covered.sum())
        if self.change:
            probability = blended.values[1]
            mask = (probability >= self.threshold).astype(np.uint8)
            mask[~covered] = CLASS_NODATA
            self.writers["change"].write_window(row, col, mask)
            self.tally.add(row, mask)
            if "probability" in self.writers:
                out = probability.astype(np.float32)
                out[~covered] = PROBABILITY_NODATA
                self.writers["probability"].write_window(row, col, out)
            return
        classes, top = winning_class(blended.values)
        classes[~covered] = CLASS_NODATA
        self.writers["classes"].write_window(row, col, classes)
        self.tally.add(row, classes)
        if "confidence" in self.writers:
            confidence = np.rint(top * 100.0).astype(np.uint8)
            confidence[~covered] = CLASS_NODATA
            self.writers["confidence"].write_window(row, col, confidence)


def _input_report(plan: _Plan) -> list[dict[str, Any]]:
    entries = []
    for group in plan.groups:
        sources = group.stack.sources if group.stack is not None else ()
        warped = {s.path: s.warped for s in sources}
        for info, bands in zip(group.infos, group.bands):
            entries.append(
                {
                    "input": group.label,
                    "modality": group.modality.key,
                    "path": os.path.abspath(info.path),
                    "bands": list(bands),
                    "size": [info.width, info.height],
                    "crs": None if info.crs is None else info.crs.to_string(),
                    "pixel_size": [abs(info.transform.a), abs(info.transform.e)],
                    "resampled": bool(warped.get(info.path, False)),
                    "normalisation": group.modality.normalisation.mode,
                    "band_matching": group.matched,
                }
            )
    return entries


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("landfuse")
    except Exception:
        return "unknown"


def _build_report(
    plan: _Plan, stats: Any, tally: AreaTally, started_at: str, total_seconds: float
) -> dict[str, Any]:
    request = plan.request
    report: dict[str, Any] = {
        "landfuse_version": _version(),
        "task": request.task,
        "started": started_at,
        "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "request": request_to_dict(request),
        "inputs": _input_report(plan),
        "model": {
            "name": plan.info.name,
            "title": plan.info.title,
            "weights": os.path.abspath(request.weights),
            "weights_sha256": plan.weights_sha256,
            "training": plan.weights_metadata.get("training"),
            "classes": [
                {"value": c.value, "name": c.name, "color": list(c.color)}
                for c in plan.info.classes
            ],
        },
        "device": str(plan.target.device),
        "precision": plan.target.precision,
        "precision_reason": plan.target.reason,
        "grid": plan.grid.describe(),
        "tiles": {
            "size": plan.layout.tile,
            "overlap": plan.layout.overlap,
            "network_input": [plan.layout.padded_height, plan.layout.padded_width],
            "total": stats.tiles_total,
            "computed": stats.tiles_computed,
            "skipped": stats.tiles_skipped,
            "batch": plan.request.batch,
            "final_batch": stats.final_batch_size,
            "batches": stats.batches,
        },
        "timings_s": {k: round(v, 3) for k, v in plan.timings.items()},
        "warnings": [w.to_dict() for w in plan.warnings],
        "memory": plan.memory,
    }
    report["timings_s"].update(
        {
            "tiles_loop": round(stats.seconds_total, 3),
            "network": round(stats.seconds_computing, 3),
            "waiting_for_data": round(stats.seconds_waiting_for_data, 3),
            "total": round(total_seconds, 3),
        }
    )
    names = [c.name for c in plan.info.classes]
    summary = tally.summary(names)
    if isinstance(request, ChangeRequest):
        unchanged, changed = summary[0], summary[1]  # change models have exactly two classes
        mapped = int(changed["pixels"]) + int(unchanged["pixels"])
        report["change"] = {
            "threshold": request.threshold,
            "changed_pixels": changed["pixels"],
            "unchanged_pixels": unchanged["pixels"],
            "changed_hectares": changed["hectares"],
            "unchanged_hectares": unchanged["hectares"],
            "changed_percent": round(100.0 * int(changed["pixels"]) / mapped, 4) if mapped else 0.0,
        }
    else:
        report["classes"] = summary
    return report


_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter (malloc.h)
_MMAP_THRESHOLD_BYTES = 32 << 20


def keep_memory_flat() -> None:
    """Fix glibc's mmap threshold for a process that runs the engine again and again.

    For long-lived processes: QGIS, where Processing runs the engine in its own process, and
    programs that call the engine in a loop. glibc raises its mmap and trim thresholds each
    time a large block is freed; tile-sized arrays then come from the heap, where freed ones
    stay scattered, and ten identical runs in one process held 22 MB more for some runs and gave
    it back later (a 6.5 % swing). A fixed threshold (which also fixes the trim threshold at
    glibc's 128 KiB) kept them within 1.2 %, at a cost of about 8 % in run time on this machine
    (scripts/bench_repeat_memory.py, docs/benchmarks.md §8), which is why the command line and
    the dock's worker (one run per process) do not call it. ``LANDFUSE_MALLOC_TUNING=0`` makes
    it do nothing. No effect outside glibc.
    """
    if not sys.platform.startswith("linux"):
        return
    if os.environ.get("LANDFUSE_MALLOC_TUNING", "1").strip().lower() in ("0", "no", "false"):
        return
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to do
        ctypes.CDLL("libc.so.6").mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES)


def _return_freed_memory() -> None:
    """Hand freed heap pages back to the system (glibc keeps them otherwise); no-op elsewhere."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (e.g. musl): nothing to do
        pass


def _block_cache_bytes(plan: _Plan, layout: Optional[TileLayout] = None) -> int:
    """GDAL block cache a run needs: its inputs' blocks for about two rows of tiles.

    Tiles of one row share blocks side by side, and the next row re-reads the overlap; blocks
    above that are never read again, so a larger cache would only hold memory that grows with
    the scene's height. A smaller one costs far more: blocks decoded again for every row of
    tiles (docs/benchmarks.md: +35 % run time with 32 MB on a 4096 px Sentinel-2 pair). This
    grows with the scene's width, like the blending band. One block row of each output (the
    writers hand GDAL whole block rows) and a floor come on top.
    """
    # The rows of the current row of tiles and of the next one, which re-reads the overlap,
    # across the widest stripe.
    layout = layout or plan.layout
    rows = min(layout.height, layout.tile_height + max(1, layout.tile_height - layout.overlap))
    cols = layout.max_stripe_width
    inputs = sum(g.stack.block_cache_bytes(rows, cols) for g in plan.groups if g.stack is not None)
    outputs = sum(cols * 256 * p.bytes_per_pixel for p in plan.products)
    return inputs + outputs + _BLOCK_CACHE_FLOOR


def _execute(
    plan: _Plan,
    progress: Optional[ProgressCallback],
    cancel: Optional[CancelCheck],
    started: float,
    started_at: str,
) -> RunResult:
    _progress(
        progress,
        "prepare",
        _PREPARE_END,
        f"{len(plan.layout)} tile(s) of {plan.layout.tile} px on {plan.target.device} "
        f"({plan.target.precision})",
    )
    _check_cancel(cancel)
    network = plan.network
    if network is None:
        raise RuntimeError("The network is not loaded (internal error).")
    predictor = BatchPredictor(network, plan.target, plan.request.batch)
    class_values = [
        int(c.value) for c in plan.info.classes[: 2 if plan.request.task == "change" else None]
    ]
    tally = AreaTally(class_values, plan.grid)
    with bounded_block_cache(_block_cache_bytes(plan)), plan.outputs as outputs:
        writers = outputs.open_writers(plan.grid)
        blender = _Blender(plan, writers, tally)
        stats = run_tiles(
            plan.layout,
            _TileLoader(plan),
            predictor,
            blender.add,
            progress=progress,
            cancel=cancel,
            progress_span=(_PREPARE_END, _INFER_END),
        )
        blender.finish()
        # The network is not needed any more: free it (and the heap pages it leaves) before
        # the Cloud-Optimised GeoTIFFs are written, so that their memory does not add to it.
        del predictor, network
        plan.network = None
        _return_freed_memory()
        if stats.tiles_computed == 0 or blender.valid_pixels == 0:
            raise EmptyInputError(
                "No pixel has valid data in every input inside the area processed; check the "
                "inputs' nodata values, their overlap and the area of interest."
            )
        plan.timings["tiles_loop"] = stats.seconds_total
        _check_cancel(cancel)
        _progress(progress, "finish", _INFER_END, "Writing Cloud-Optimised GeoTIFFs and styles")
        finish_started = time.perf_counter()
        # The inputs' blocks are of no use any more: a small cache drops them, and the COG
        # copies (which read each file once) run as fast with it.
        with bounded_block_cache(_FINISH_BLOCK_CACHE):
            outputs.finish_rasters()
        plan.timings["finish"] = time.perf_counter() - finish_started
        report = _build_report(plan, stats, tally, started_at, time.perf_counter() - started)
        _check_cancel(cancel)
        result_outputs = outputs.publish(report)
    _progress(progress, "done", 1.0, f"Done: {result_outputs.get('report')}")
    return RunResult(task=plan.request.task, outputs=result_outputs, report=report)


def _run(
    request: Request,
    progress: Optional[ProgressCallback],
    cancel: Optional[CancelCheck],
    warn: Optional[WarningCallback] = None,
) -> RunResult:
    started = time.perf_counter()
    started_at = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    _progress(progress, "prepare", 0.0, "Checking the inputs")
    plan: Optional[_Plan] = None
    try:
        with gdal_messages_to_log():  # GDAL's own error lines go to the log
            plan = _prepare(request)
            _check_cancel(cancel)
            _make_ready(plan, warn, cancel)
            return _execute(plan, progress, cancel, started, started_at)
    except CancelledError:
        logger.info("Run cancelled; temporary outputs removed.")
        raise
    finally:
        if plan is not None:
            plan.close()
        # A long-lived process (QGIS runs Processing in its own) gets the run's memory back:
        # without this, glibc keeps freed arenas and the resident size drifts from run to run.
        gc.collect()
        _return_freed_memory()


def run_landcover(
    request: LandCoverRequest,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelCheck] = None,
    warn: Optional[WarningCallback] = None,
) -> RunResult:
    """Map land cover over the request's area.

    Args:
        request: The validated request dataclass.
        progress: Called with :class:`Progress` objects (stage, fraction, tiles, ETA).
        cancel: Returns True to stop; checked before every batch.
        warn: Called with each :class:`~landfuse.core.run_warnings.RunWarning` (also logged
            and kept in the report) before the tiles are computed.

    Returns:
        The :class:`RunResult` (final paths and report).

    Raises:
        RequestError: for a change request or a change model.
        LandFuseError: any validation failure (see :mod:`landfuse.core.errors`), weights
            errors from ``models``, or :class:`CancelledError`; nothing is left behind.
    """
    if not isinstance(request, LandCoverRequest):
        raise RequestError("run_landcover() takes a LandCoverRequest; use run_change() for pairs.")
    return _run(request, progress, cancel, warn)


def run_change(
    request: ChangeRequest,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelCheck] = None,
    warn: Optional[WarningCallback] = None,
) -> RunResult:
    """Detect changes between the request's 'before' and 'after' images.

    Args:
        request: The validated request dataclass.
        progress: Called with :class:`Progress` objects (stage, fraction, tiles, ETA).
        cancel: Returns True to stop; checked before every batch.
        warn: Called with each :class:`~landfuse.core.run_warnings.RunWarning` (also logged
            and kept in the report) before the tiles are computed.

    Returns:
        The :class:`RunResult` (final paths and report).

    Raises:
        RequestError: for a land-cover request or a land-cover model.
        LandFuseError: any validation failure, weights errors, or :class:`CancelledError`.
    """
    if not isinstance(request, ChangeRequest):
        raise RequestError(
            "run_change() takes a ChangeRequest; use run_landcover() for land cover."
        )
    return _run(request, progress, cancel, warn)


def run(
    request: Request,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelCheck] = None,
    warn: Optional[WarningCallback] = None,
) -> RunResult:
    """Run a land-cover or change request (dispatch on its type).

    Args:
        request: A :class:`LandCoverRequest` or :class:`ChangeRequest`.
        progress: Progress callback.
        cancel: Cancel check.
        warn: Warning callback.

    Returns:
        The :class:`RunResult`.

    Raises:
        LandFuseError: see :func:`run_landcover` and :func:`run_change`.
    """
    if isinstance(request, ChangeRequest):
        return run_change(request, progress, cancel, warn)
    if isinstance(request, LandCoverRequest):
        return run_landcover(request, progress, cancel, warn)
    raise RequestError("The engine takes a LandCoverRequest or a ChangeRequest.")
