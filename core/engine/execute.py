"""A run: tiles read, inferred, blended and written, then the outputs finished and published.

:func:`validate` runs every check of a run and computes nothing; :func:`run` (and the typed
:func:`run_landcover`, :func:`run_change`) run one. Which product arrays a tile's blended
probabilities become, and the report's task section, are the task's
(:mod:`landfuse.core.tasks`).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import gc
import logging
import time
from dataclasses import replace
from typing import Any, Iterator, Optional, Sequence

import numpy as np
from rasterio.windows import Window

from ..blending import BlendedRows, TileBlender, blend_window
from ..errors import CancelledError, RequestError
from ..executor_spec import parse_executor
from ..integrity import gdal_messages_to_log
from ..normalisation import normalise
from ..raster import AreaMask, Grid, bounded_block_cache
from ..requests import ChangeRequest, LandCoverRequest, Request
from ..run_warnings import WarningCallback
from ..runner import BatchPredictor, CancelCheck, Progress, ProgressCallback, TileData, run_tiles
from ..tasks import Task
from ..tiling import Tile, TileLayout, batch_groups, reflect_pad
from ..writers import AreaTally, StreamingGeoTiff
from . import budget
from .fanout import execute_jobs
from .plan import InputGroup, Plan, load_weights, no_valid_pixel, open_inputs, prepare
from .report import RunResult, build_report

logger = logging.getLogger(__name__)

# Fractions of the overall progress given to each stage.
_PREPARE_END = 0.02
_INFER_END = 0.95


def _progress(callback: Optional[ProgressCallback], stage: str, fraction: float, msg: str) -> None:
    if callback is not None:
        callback(Progress(stage=stage, fraction=fraction, message=msg))


def _check_cancel(cancel: Optional[CancelCheck]) -> None:
    if cancel is not None and cancel():
        raise CancelledError("The run was cancelled; no output was written.")


def _make_ready(
    plan: Plan, warn: Optional[WarningCallback], cancel: Optional[CancelCheck] = None
) -> None:
    """The validation steps after :func:`prepare`, shared by :func:`validate` and a run:
    weights, inputs (opened, checked for data and values), memory, then the warnings."""
    load_weights(plan)
    _check_cancel(cancel)
    open_inputs(plan)
    budget.check_memory(plan)
    _emit_warnings(plan, warn)


def _emit_warnings(plan: Plan, warn: Optional[WarningCallback]) -> None:
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
    plan = prepare(request)
    try:
        _make_ready(plan, warn)
        return {
            "task": request.task,
            "model": plan.spec.name,
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


class TileLoader:
    """Reads, normalises and pads one tile (runs in the reader thread).

    ``row_offset`` is where the tiles' row 0 lies on the work grid: a job reads a band of rows
    of the scene through tiles laid out from its band's top (:mod:`.jobs`).
    """

    def __init__(
        self,
        groups: Sequence[InputGroup],
        area: Optional[AreaMask],
        reference_grid: Grid,
        work_window: Window,
        layout: TileLayout,
        row_offset: int = 0,
    ) -> None:
        self.groups = groups
        self.area = area
        self.reference_grid = reference_grid
        self.work_window = work_window
        self.row_offset = row_offset
        self.shape = (layout.padded_height, layout.padded_width)

    @classmethod
    def of(cls, plan: Plan) -> TileLoader:
        """The loader of a whole run."""
        return cls(plan.groups, plan.area, plan.reference_grid, plan.work_window, plan.layout)

    def __call__(self, tile: Tile) -> Optional[TileData]:
        with gdal_messages_to_log():  # the reader thread's GDAL messages: to the log
            return self._load(tile)

    def _load(self, tile: Tile) -> Optional[TileData]:
        window = Window(tile.col, tile.row + self.row_offset, tile.width, tile.height)
        valid: Optional[np.ndarray] = None
        if self.area is not None:
            # The area mask is on the reference grid; the work grid is offset into it.
            ref_window = Window(
                window.col_off + self.work_window.col_off,
                window.row_off + self.work_window.row_off,
                window.width,
                window.height,
            )
            valid = self.area.mask(self.reference_grid, ref_window)
            if valid is not None and not valid.any():
                return None
        inputs = []
        for group in self.groups:
            if group.stack is None:
                raise RuntimeError("Inputs are not open (internal error).")
            data, ok = group.stack.read(window)
            if group.harmonisation is not None:  # an offset or linear power, harmonised away
                data = group.harmonisation.apply(data)
            valid = ok.copy() if valid is None else (valid & ok)
            # Statistics over the modality's own valid pixels (AOI-independent, NETWORKS.md §2).
            normalised = normalise(data, group.modality.normalisation, ok)
            inputs.append(reflect_pad(normalised, self.shape))
        if valid is None or not valid.any():
            return None
        return TileData(inputs=inputs, valid=valid)


class Blender:
    """Blends tile probabilities and streams finished windows to the writers.

    ``keep`` (rows of the layout, end excluded) is the part a job owns: the blended rows
    outside it (its halo, which a neighbouring job owns) are dropped, and the rows kept are
    written from row 0 of the writers (the job's part). None keeps every row.
    """

    def __init__(
        self,
        plan_task: Task,
        request: Request,
        channels: int,
        layout: TileLayout,
        writers: dict[str, StreamingGeoTiff],
        tally: Optional[AreaTally] = None,
        keep: Optional[tuple[int, int]] = None,
    ) -> None:
        self.task = plan_task
        self.request = request
        self.writers = writers
        self.tally = tally
        self.keep = keep if keep is not None else (0, layout.height)
        self.blender = TileBlender(channels, layout)
        self.valid_pixels = 0

    @classmethod
    def of(cls, plan: Plan, writers: dict[str, StreamingGeoTiff], tally: AreaTally) -> Blender:
        """The blender of a whole run."""
        return cls(plan.task, plan.request, len(plan.spec.classes), plan.layout, writers, tally)

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
        start, end = self.keep
        rows = blended.covered.shape[0]
        first, last = max(start, blended.row), min(end, blended.row + rows)
        if first >= last:
            return
        values = blended.values[:, first - blended.row : last - blended.row]
        covered = blended.covered[first - blended.row : last - blended.row]
        self.valid_pixels += int(covered.sum())
        tallied, arrays = self.task.product_arrays(
            values, covered, self.request, tuple(self.writers)
        )
        if self.tally is not None:
            self.tally.add(first - start, tallied)
        for key, array in arrays.items():
            self.writers[key].write_window(first - start, blended.col, array)


def _execute(
    plan: Plan,
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
    predictor = BatchPredictor(
        network, plan.target, plan.request.batch, flips=plan.request.flips == "flips"
    )
    tally = AreaTally(plan.task.tally_classes(plan.spec.classes), plan.grid)
    with bounded_block_cache(budget.block_cache_bytes(plan)), plan.outputs as outputs:
        writers = outputs.open_writers(plan.grid)
        blender = Blender.of(plan, writers, tally)
        stats = run_tiles(
            plan.layout,
            TileLoader.of(plan),
            predictor,
            blender.add,
            progress=progress,
            cancel=cancel,
            progress_span=(_PREPARE_END, _INFER_END),
            batch_group=batch_groups(plan.layout, predictor.batch_size),
        )
        blender.finish()
        # The network is not needed any more: free it (and the heap pages it leaves) before
        # the Cloud-Optimised GeoTIFFs are written, so that their memory does not add to it.
        del predictor, network
        plan.network = None
        budget.return_freed_memory()
        if stats.tiles_computed == 0 or blender.valid_pixels == 0:
            raise no_valid_pixel()
        plan.timings["tiles_loop"] = stats.seconds_total
        _check_cancel(cancel)
        _progress(progress, "finish", _INFER_END, "Writing Cloud-Optimised GeoTIFFs and styles")
        finish_started = time.perf_counter()
        # The inputs' blocks are of no use any more: a small cache drops them, and the COG
        # copies (which read each file once) run as fast with it.
        with bounded_block_cache(budget.FINISH_BLOCK_CACHE):
            outputs.finish_rasters()
        plan.timings["finish"] = time.perf_counter() - finish_started
        report = build_report(plan, stats, tally, started_at, time.perf_counter() - started)
        _check_cancel(cancel)
        result_outputs = outputs.publish(report)
    _progress(progress, "done", 1.0, f"Done: {result_outputs.get('report')}")
    return RunResult(task=plan.request.task, outputs=result_outputs, report=report)


@contextlib.contextmanager
def torch_threads(threads: Optional[int]) -> Iterator[None]:
    """Compute with ``threads`` torch threads (None: as they are), restored afterwards."""
    if not threads:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run(
    request: Request,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelCheck] = None,
    warn: Optional[WarningCallback] = None,
) -> RunResult:
    """Run a land-cover or change request.

    Args:
        request: A :class:`LandCoverRequest` or :class:`ChangeRequest`.
        progress: Called with :class:`Progress` objects (stage, fraction, tiles, ETA).
        cancel: Returns True to stop; checked before every batch.
        warn: Called with each :class:`~landfuse.core.run_warnings.RunWarning` (also logged
            and kept in the report) before the tiles are computed.

    Returns:
        The :class:`RunResult` (final paths and report).

    Raises:
        LandFuseError: any validation failure (see :mod:`landfuse.core.errors`), weights
            errors from ``models``, or :class:`CancelledError`; nothing is left behind.
    """
    started = time.perf_counter()
    started_at = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    _progress(progress, "prepare", 0.0, "Checking the inputs")
    plan: Optional[Plan] = None
    try:
        with gdal_messages_to_log():  # GDAL's own error lines go to the log
            plan = prepare(request)
            _check_cancel(cancel)
            _make_ready(plan, warn, cancel)
            spec = parse_executor(request.executor)
            if spec.uses_jobs:
                return execute_jobs([plan], spec, progress, cancel, started, started_at)[0]
            with torch_threads(request.threads):
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
        budget.return_freed_memory()


def run_batch(
    requests: Sequence[Request],
    executor: str,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelCheck] = None,
    warn: Optional[WarningCallback] = None,
) -> list[RunResult]:
    """Run many scenes as one submission: every scene is checked first (nothing is computed
    when one fails), then the jobs of all go to one executor, and each scene's outputs are
    written as soon as its last job is back.

    Args:
        requests: One request per scene (each with its own output folder or name).
        executor: The executor (:mod:`~landfuse.core.executor_spec`); ``in-process`` runs the
            scenes one after the other.

    Returns:
        The :class:`RunResult` of each scene, in order.
    """
    spec = parse_executor(executor)
    if not spec.uses_jobs:
        return [run(replace(r, executor=executor), progress, cancel, warn) for r in requests]
    started = time.perf_counter()
    started_at = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    plans: list[Plan] = []
    try:
        with gdal_messages_to_log():
            for request in requests:
                plan = prepare(replace(request, executor=executor))
                plans.append(plan)
                _make_ready(plan, warn, cancel)
            return execute_jobs(plans, spec, progress, cancel, started, started_at)
    finally:
        for plan in plans:
            plan.close()
        gc.collect()
        budget.return_freed_memory()


def run_landcover(
    request: LandCoverRequest,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelCheck] = None,
    warn: Optional[WarningCallback] = None,
) -> RunResult:
    """Map land cover over the request's area (:func:`run` for a :class:`LandCoverRequest`).

    Raises:
        RequestError: for a change request or a change model.
    """
    if not isinstance(request, LandCoverRequest):
        raise RequestError("run_landcover() takes a LandCoverRequest; use run_change() for pairs.")
    return run(request, progress, cancel, warn)


def run_change(
    request: ChangeRequest,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelCheck] = None,
    warn: Optional[WarningCallback] = None,
) -> RunResult:
    """Detect changes between 'before' and 'after' (:func:`run` for a :class:`ChangeRequest`).

    Raises:
        RequestError: for a land-cover request or a land-cover model.
    """
    if not isinstance(request, ChangeRequest):
        raise RequestError(
            "run_change() takes a ChangeRequest; use run_landcover() for land cover."
        )
    return run(request, progress, cancel, warn)
