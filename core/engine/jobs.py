"""A run split into jobs that any process can compute: :class:`Job` and :func:`run_job`.

A job is one band of rows of the scene's output, across its whole width. It holds paths and
numbers only (the inputs' files and bands, the global work grid and tile layout, the weights'
path and sha256, device, precision), never an open dataset, so it pickles to a process pool
or a Dask worker. :func:`run_job` opens the inputs on the **global** work grid, computes every
tile of the scene's tile grid that touches its band (the row of tiles above it too: its halo),
blends them exactly as a run of the whole scene does (the same tiles, added in the same order,
batched with the same neighbours: :func:`~landfuse.core.tiling.batch_groups`), and writes the
rows it owns to its own tiled GeoTIFF part, one per product, with a JSON record of the part's
checksums. The per-tile min-max normalisation of the published checkpoints sees the same tiles
as in a single process, so the parts put together are byte-identical to a single-process run,
whatever the number of jobs or workers.

The network is loaded once per process (:data:`_NETWORKS`), not shipped with each job.
"""

from __future__ import annotations

import gc
import hashlib
import json
import math
import os
import socket
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Optional

import torch
from rasterio.windows import Window

from ...models.specs import ModalitySpec
from ..device import resolve_target
from ..errors import RequestError
from ..integrity import gdal_messages_to_log
from ..radiometry import Harmonisation
from ..raster import Grid, bounded_block_cache, build_area_mask, open_aligned
from ..requests import Request
from ..runner import BatchPredictor, run_tiles
from ..tasks import task_of
from ..tiling import TileLayout, batch_groups
from ..writers import ProductSpec, StreamingGeoTiff
from . import budget
from .plan import InputGroup, Plan, load_network, model_info

#: Fewest rows of tiles a job computes besides its halo (the row of tiles above it, computed
#: twice): with 8, the halo costs at most 1/8 more network time.
MIN_JOB_ROWS = 8
#: Jobs per worker a run aims for when it picks the job size: enough to even out the load.
JOBS_PER_WORKER = 3
#: GDAL's block cache of a job whose run did not size it (bytes).
JOB_BLOCK_CACHE = 256 << 20


@dataclass(frozen=True)
class JobInput:
    """What a job needs of one network input (an :class:`~.plan.InputGroup` without its open
    datasets)."""

    label: str
    modality: ModalitySpec
    sources: tuple[Any, ...]
    bands: tuple[tuple[int, ...], ...]
    order: Optional[tuple[int, ...]]
    harmonisation: Optional[Harmonisation]


@dataclass(frozen=True)
class Job:
    """One band of rows of a run, computed on its own.

    Attributes:
        run_key: The run's fingerprint (:func:`run_key`): parts of another run never mix in.
        index: Position of the job in the run (0-based, top to bottom).
        count: Jobs in the run.
        tile_rows: Rows of tiles computed, ``first, end`` (end excluded), halo included.
        rows: Output rows the job owns and writes, ``first, end`` (on the work grid).
        request: The run's request (paths and options).
        model: The model's registry name.
        weights: The weights file; ``weights_sha256`` is checked when it is loaded.
        inputs: The network inputs, in the model's order.
        grid: The global work grid.
        reference_grid: The reference grid (the area of interest is on it).
        work_window: The work grid's window on the reference grid.
        layout: The global tile layout.
        classes: Values per pixel (the model's classes).
        products: The products written.
        device: The device of the run (``cuda`` without an index: each worker takes its GPU).
        precision: The precision of the run.
        threads: torch threads of the process (0: leave them).
        part_dir: Folder of the parts (shared by the driver and every worker).
        block_cache: GDAL's block cache while the job runs (bytes): the run's own size, the
            input blocks of about two rows of tiles of a stripe (:mod:`.budget`).
    """

    run_key: str
    index: int
    count: int
    tile_rows: tuple[int, int]
    rows: tuple[int, int]
    request: Request
    model: str
    weights: str
    weights_sha256: str
    inputs: tuple[JobInput, ...]
    grid: Grid
    reference_grid: Grid
    work_window: tuple[int, int, int, int]
    layout: TileLayout
    classes: int
    products: tuple[ProductSpec, ...]
    device: str
    precision: str
    threads: int
    part_dir: str
    block_cache: int = JOB_BLOCK_CACHE

    @property
    def name(self) -> str:
        """The part's base name (``part-00003``)."""
        return f"part-{self.index:05d}"

    def part_path(self, key: str) -> Path:
        """The part file of product ``key``."""
        return Path(self.part_dir) / f"{self.name}.{key}.tif"

    @property
    def record_path(self) -> Path:
        """The part's JSON record (written last: a part without it is incomplete)."""
        return Path(self.part_dir) / f"{self.name}.json"

    def band_layout(self) -> TileLayout:
        """The tiles the job computes, laid out from the first one's top row."""
        first, end = self.tile_rows
        layout = self.layout
        top = layout.row_starts[first]
        bottom = layout.row_starts[end - 1] + layout.tile_height
        return replace(
            layout,
            height=bottom - top,
            row_starts=tuple(r - top for r in layout.row_starts[first:end]),
        )


@dataclass
class JobResult:
    """What a job reports back (plain data: it crosses processes)."""

    index: int
    files: dict[str, str]
    sha256: dict[str, str]
    rows: tuple[int, int]
    valid_pixels: int
    tiles_computed: int = 0
    tiles_skipped: int = 0
    seconds: float = 0.0
    seconds_network: float = 0.0
    worker: str = ""
    device: str = ""
    resumed: bool = False
    attempts: int = 1
    peak_rss_bytes: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "rows": list(self.rows),
            "tiles_computed": self.tiles_computed,
            "tiles_skipped": self.tiles_skipped,
            "seconds": round(self.seconds, 3),
            "seconds_network": round(self.seconds_network, 3),
            "worker": self.worker,
            "device": self.device,
            "resumed": self.resumed,
            "attempts": self.attempts,
            "worker_peak_rss_mb": round(self.peak_rss_bytes / 2**20, 1),
        }


# --- planning -------------------------------------------------------------------------------


def run_key(plan: Plan) -> str:
    """A fingerprint of everything that decides the run's pixels (inputs, bands, grid, tiles,
    model and weights, normalisation, device type, precision, batch, products)."""
    described = {
        "request": repr(plan.request.__class__.__name__),
        "sources": [
            [repr(s) for s in group.sources]
            + [list(group.bands), list(group.order or ()), repr(group.modality.normalisation)]
            + [repr(group.harmonisation)]
            for group in plan.groups
        ],
        "aoi": repr(plan.request.aoi),
        "grid": plan.grid.describe(),
        "work_window": list(_window_tuple(plan.work_window)),
        "layout": repr(plan.layout),
        "weights": plan.weights_sha256,
        "model": plan.spec.name,
        "device": plan.target.device.type,
        "precision": plan.target.precision,
        "batch": plan.request.batch,
        "flips": plan.request.flips,
        "threshold": getattr(plan.request, "threshold", None),
        "products": [p.key for p in plan.products],
    }
    text = json.dumps(described, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _window_tuple(window: Window) -> tuple[int, int, int, int]:
    return (
        int(window.col_off),
        int(window.row_off),
        int(window.width),
        int(window.height),
    )


def job_rows_for(layout: TileLayout, workers: int, asked: Optional[int] = None) -> int:
    """Rows of tiles per job: the number asked for, else rows shared evenly among
    :data:`JOBS_PER_WORKER` jobs per worker, as long as each job keeps
    :data:`MIN_JOB_ROWS` rows (its halo, one row, then costs at most 1/8 more), but never
    fewer jobs than workers (an idle worker costs more than a halo)."""
    total = len(layout.row_starts)
    if asked:
        return max(1, min(int(asked), total))
    workers = max(1, workers)
    count = max(workers, min(workers * JOBS_PER_WORKER, total // MIN_JOB_ROWS))
    return max(1, math.ceil(total / min(total, count)))


def owned_rows(layout: TileLayout, first: int, end: int) -> tuple[int, int]:
    """Output rows final once the rows of tiles ``first .. end`` are blended, and no earlier:
    from the start of row ``first`` (0 for the first) to the start of row ``end`` (the scene's
    height after the last)."""
    top = 0 if first == 0 else layout.row_starts[first]
    bottom = layout.rows_complete_after(end - 1)
    return top, bottom


def halo_start(layout: TileLayout, first: int) -> int:
    """First row of tiles that touches row ``layout.row_starts[first]`` (the halo above)."""
    if first == 0:
        return 0
    top = layout.row_starts[first]
    halo = first
    while halo > 0 and layout.row_starts[halo - 1] + layout.tile_height > top:
        halo -= 1
    return halo


def make_jobs(
    plan: Plan,
    workers: int,
    part_dir: Path,
    threads: int = 0,
    job_rows: Optional[int] = None,
    key: str = "",
    block_cache: int = JOB_BLOCK_CACHE,
) -> list[Job]:
    """The jobs of a planned run (weights loaded, inputs checked)."""
    layout = plan.layout
    per_job = job_rows_for(layout, workers, job_rows)
    total = len(layout.row_starts)
    bounds = [(first, min(total, first + per_job)) for first in range(0, total, per_job)]
    inputs = tuple(
        JobInput(
            group.label,
            group.modality,
            tuple(group.sources),
            tuple(tuple(b) for b in group.bands),
            tuple(group.order) if group.order is not None else None,
            group.harmonisation,
        )
        for group in plan.groups
    )
    device = plan.target.device
    asked = plan.request.device
    # "auto" or "cuda" on a GPU machine: each worker takes its own GPU (:func:`worker_device`).
    device_text = "cuda" if device.type == "cuda" and ":" not in asked else str(device)
    return [
        Job(
            run_key=key or run_key(plan),
            index=index,
            count=len(bounds),
            tile_rows=(halo_start(layout, first), end),
            rows=owned_rows(layout, first, end),
            request=plan.request,
            model=plan.spec.name,
            weights=str(plan.request.weights),
            weights_sha256=plan.weights_sha256,
            inputs=inputs,
            grid=plan.grid,
            reference_grid=plan.reference_grid,
            work_window=_window_tuple(plan.work_window),
            layout=layout,
            classes=len(plan.spec.classes),
            products=tuple(plan.products),
            device=device_text,
            precision=plan.target.precision,
            threads=threads,
            part_dir=str(part_dir),
            block_cache=block_cache,
        )
        for index, (first, end) in enumerate(bounds)
    ]


# --- the worker side ------------------------------------------------------------------------

#: Networks loaded in this process: (weights, sha256, device, precision, batch, flips) ->
#: predictor. A worker loads the weights once for all the jobs it computes.
_NETWORKS: dict[tuple[Any, ...], BatchPredictor] = {}
#: The worker's position among its cluster's workers, for the GPU it takes (set by the
#: executors' worker start-up; None: ask Dask, else 0).
WORKER_ORDINAL: Optional[int] = None


def worker_ordinal() -> int:
    """This process's position among the workers (0 when unknown)."""
    if WORKER_ORDINAL is not None:
        return WORKER_ORDINAL
    try:
        from distributed import get_worker

        name = get_worker().name
        return int(name) if str(name).isdigit() else 0
    except (ImportError, ValueError):
        return 0


def worker_device(device: str) -> str:
    """The device this worker computes on: ``cuda`` becomes ``cuda:K`` for the worker's own
    GPU (its ordinal modulo the GPUs present: one worker per GPU), others stay."""
    if device != "cuda":
        return device
    count = torch.cuda.device_count()
    if count <= 1:
        return "cuda:0" if count == 1 else "cuda"
    return f"cuda:{worker_ordinal() % count}"


def _predictor(job: Job, device: str) -> BatchPredictor:
    request = job.request
    key = (job.weights, job.weights_sha256, device, job.precision, request.batch, request.flips)
    cached = _NETWORKS.get(key)
    if cached is not None:
        return cached
    network, _spec, sha, _meta = load_network(
        model_info(job.model), job.weights, torch.device(device)
    )
    if sha != job.weights_sha256:
        raise RequestError(
            f"{job.weights} changed during the run (sha256 {sha[:12]}… instead of "
            f"{job.weights_sha256[:12]}…); every worker must see the same weights file. Run "
            "again."
        )
    _NETWORKS.clear()  # one network per worker: another run's goes
    target = resolve_target(device, job.precision)
    predictor = BatchPredictor(network, target, request.batch, flips=request.flips == "flips")
    _NETWORKS[key] = predictor
    return predictor


def _set_threads(threads: int) -> None:
    if threads > 0 and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def peak_rss_bytes() -> int:
    """The process's peak resident memory so far (0 where the system does not say)."""
    try:
        import resource
    except ImportError:  # Windows
        return 0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) * (1 if sys.platform == "darwin" else 1024)  # bytes on macOS, KiB else


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def run_job(job: Job) -> JobResult:
    """Compute one job and write its part (see the module's docstring).

    Returns:
        The :class:`JobResult`: part files with their sha256, rows, timings, worker.

    Raises:
        LandFuseError: what a run would raise for its inputs or weights.
    """
    from .execute import Blender, TileLoader

    started = time.perf_counter()
    _set_threads(job.threads)
    device = worker_device(job.device)
    predictor = _predictor(job, device)
    request = job.request
    groups: list[InputGroup] = []
    folder = Path(job.part_dir)
    folder.mkdir(parents=True, exist_ok=True)
    band = job.band_layout()
    band_top = job.layout.row_starts[job.tile_rows[0]]
    first, end = job.rows
    part_grid = job.grid.window_grid(Window(0, first, job.grid.width, end - first))
    writers: dict[str, StreamingGeoTiff] = {}
    staged = {p.key: folder / f".{job.name}.{p.key}.{os.getpid()}.tif" for p in job.products}
    try:
        with gdal_messages_to_log(), bounded_block_cache(job.block_cache):
            for item in job.inputs:
                group = InputGroup(item.label, item.modality, item.sources)
                group.bands, group.order = item.bands, item.order
                group.harmonisation = item.harmonisation
                group.stack = open_aligned(
                    item.sources,
                    item.bands,
                    job.grid,
                    item.modality.resampling,
                    request.pixel_grid,
                    item.order,
                )
                groups.append(group)
            area = (
                build_area_mask(request.aoi, job.reference_grid)
                if request.aoi is not None
                else None
            )
            col, row, width, height = job.work_window
            loader = TileLoader(
                groups, area, job.reference_grid, Window(col, row, width, height), band, band_top
            )
            for product in job.products:
                writers[product.key] = StreamingGeoTiff(
                    staged[product.key], part_grid, product, zlevel=1
                )
            blender = Blender(
                task_of(request),
                request,
                job.classes,
                band,
                writers,
                keep=(first - band_top, end - band_top),
            )
            stats = run_tiles(
                band,
                loader,
                predictor,
                blender.add,
                batch_group=batch_groups(band, predictor.batch_size),
            )
            blender.finish()
            for writer in writers.values():
                writer.close()
        files, sums = {}, {}
        for key, path in staged.items():
            final = job.part_path(key)
            os.replace(path, final)
            files[key], sums[key] = str(final), file_sha256(final)
        result = JobResult(
            index=job.index,
            files=files,
            sha256=sums,
            rows=job.rows,
            valid_pixels=blender.valid_pixels,
            tiles_computed=stats.tiles_computed,
            tiles_skipped=stats.tiles_skipped,
            seconds=time.perf_counter() - started,
            seconds_network=stats.seconds_computing,
            worker=f"{socket.gethostname()}:{os.getpid()}",
            device=device,
            peak_rss_bytes=peak_rss_bytes(),
        )
        write_record(job, result)
        return result
    finally:
        for writer in writers.values():
            writer.abort()
        for group in groups:
            if group.stack is not None:
                group.stack.close()
        for path in staged.values():
            if path.exists():
                path.unlink()
        # A worker computes job after job: give the job's buffers back before the next one
        # (glibc keeps freed arenas otherwise, and the worker's resident size creeps up).
        writers.clear()
        groups.clear()
        gc.collect()
        budget.return_freed_memory()


def write_record(job: Job, result: JobResult) -> None:
    """Write the part's record (atomically, after its files): what :func:`verified` reads."""
    record = {
        "run_key": job.run_key,
        "index": job.index,
        "rows": list(job.rows),
        "files": {k: os.path.basename(v) for k, v in result.files.items()},
        "sha256": result.sha256,
        "valid_pixels": result.valid_pixels,
        "result": result.to_dict(),
    }
    staged = job.record_path.with_name(f".{job.record_path.name}.{os.getpid()}")
    staged.write_text(json.dumps(record, indent=1))
    os.replace(staged, job.record_path)


def verified(job: Job) -> Optional[JobResult]:
    """The result of a part already written for this run, when its files are all there with
    the checksums its record holds; None otherwise (the job is computed again)."""
    try:
        record = json.loads(job.record_path.read_text())
    except (OSError, ValueError):
        return None
    if record.get("run_key") != job.run_key or list(record.get("rows", ())) != list(job.rows):
        return None
    files, sums = {}, {}
    for product in job.products:
        path = job.part_path(product.key)
        expected = (record.get("sha256") or {}).get(product.key)
        if not expected or not path.exists() or file_sha256(path) != expected:
            return None
        files[product.key], sums[product.key] = str(path), expected
    saved = record.get("result") or {}
    return JobResult(
        index=job.index,
        files=files,
        sha256=sums,
        rows=job.rows,
        valid_pixels=int(record.get("valid_pixels", 0)),
        tiles_computed=int(saved.get("tiles_computed", 0)),
        tiles_skipped=int(saved.get("tiles_skipped", 0)),
        seconds=float(saved.get("seconds", 0.0)),
        seconds_network=float(saved.get("seconds_network", 0.0)),
        worker=str(saved.get("worker", "")),
        device=str(saved.get("device", "")),
        resumed=True,
    )
