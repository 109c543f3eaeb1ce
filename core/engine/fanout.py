"""Runs whose jobs go to other processes: a local process pool or Dask.

:func:`execute_jobs` takes planned runs (one, or many scenes as one submission), splits each
into jobs (:mod:`.jobs`), reuses the parts a ``resume`` run finds verified, hands the others
to the executor, and puts each run together as soon as its last job is back: the parts are
gathered into a VRT and streamed into the same writers as a single-process run, which then
write the Cloud-Optimised GeoTIFFs, styles and report. The report gains an ``executor``
section with every job's rows, timings, worker and device.

Failures: a job whose worker dies is computed again (a new pool for the process pool; Dask
reschedules it), up to :data:`MAX_ATTEMPTS` times; any other error of a job stops the run
with that error. A cancel cancels the jobs not yet done. The parts of an interrupted run stay
in the parts folder, so that a run with ``resume`` computes only the missing ones; a
successful run removes them.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import rasterio
from rasterio.windows import Window

from ..errors import CancelledError, RequestError
from ..executor_spec import (
    ExecutorSpec,
    dask_available,
    dask_missing_message,
    default_local_workers,
)
from ..raster import bounded_block_cache
from ..runner import CancelCheck, Progress, ProgressCallback, RunStats
from ..writers import AreaTally
from . import budget
from .jobs import Job, JobResult, make_jobs, run_job, run_key, verified
from .plan import Plan, no_valid_pixel
from .report import RunResult, build_report

logger = logging.getLogger(__name__)

#: Times a job is started before the run gives up on it (its worker died each time).
MAX_ATTEMPTS = 3
#: How often the driver looks at the jobs and the cancel check (seconds).
POLL_SECONDS = 0.2
#: Rows and columns copied from the parts at a time (multiples of the writers' 256 blocks).
COPY_ROWS, COPY_COLS = 256, 2048

OnDone = Callable[[Job, JobResult], None]


class WorkerLostError(RequestError):
    """A job's worker died :data:`MAX_ATTEMPTS` times."""


# --- executors ------------------------------------------------------------------------------


def _start_process(counter: Any, threads: int) -> None:
    """A pool process's start: its ordinal (for its GPU) and thread caps."""
    from . import jobs

    with counter.get_lock():
        jobs.WORKER_ORDINAL = int(counter.value)
        counter.value += 1
    if threads > 0:
        os.environ["OMP_NUM_THREADS"] = str(threads)


class ProcessExecutor:
    """A pool of local processes (``process:N``), started with ``spawn`` (torch and GDAL are
    not safe to fork), rebuilt when one of its processes dies."""

    def __init__(self, workers: int, threads: int) -> None:
        self.workers = workers
        self.threads = threads
        self.job_threads = threads
        self._pool: Optional[ProcessPoolExecutor] = None
        self.address = f"process:{workers}"

    def _new_pool(self) -> ProcessPoolExecutor:
        context = multiprocessing.get_context("spawn")
        counter = context.Value("i", 0)
        return ProcessPoolExecutor(
            self.workers, context, initializer=_start_process, initargs=(counter, self.threads)
        )

    def run(self, jobs: Sequence[Job], on_done: OnDone, cancel: Optional[CancelCheck]) -> None:
        pending = {(job.run_key, job.index): job for job in jobs}
        attempts: dict[tuple[str, int], int] = {}
        while pending:
            if self._pool is None:
                self._pool = self._new_pool()
            futures: dict[Future, Job] = {}
            for key, job in pending.items():
                attempts[key] = attempts.get(key, 0) + 1
                futures[self._pool.submit(run_job, job)] = job
            broken = False
            waiting = set(futures)
            while waiting and not broken:
                done, waiting = wait(waiting, timeout=POLL_SECONDS, return_when=FIRST_COMPLETED)
                if cancel is not None and cancel():
                    self.close(stop=True)
                    raise CancelledError("The run was cancelled.")
                for future in done:
                    job = futures[future]
                    try:
                        result = future.result()
                    except BrokenProcessPool:
                        broken = True
                        continue
                    except BaseException:
                        self.close(stop=True)
                        raise
                    key = (job.run_key, job.index)
                    result.attempts = attempts[key]
                    pending.pop(key, None)
                    on_done(job, result)
            if broken:
                self.close()
                lost = [k for k in pending if attempts[k] >= MAX_ATTEMPTS]
                if lost:
                    raise WorkerLostError(
                        f"A worker process died {MAX_ATTEMPTS} times while computing job "
                        f"{lost[0][1]}; the machine may be out of memory: use fewer workers "
                        "or a smaller tile or batch."
                    )
                logger.warning("A worker process died; %d job(s) are computed again.", len(pending))

    def close(self, stop: bool = False) -> None:
        """Shut the pool down; ``stop`` also ends the jobs still computing (a cancel, an
        error), so that none writes a part after the run has returned."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        processes = list(getattr(pool, "_processes", {}).values()) if stop else []
        pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            if process.is_alive():
                process.terminate()
        for process in processes:
            process.join(timeout=5)


class DaskExecutor:
    """Dask distributed: a ``LocalCluster`` of worker processes, or a running scheduler."""

    def __init__(self, spec: ExecutorSpec, workers: int, threads: int) -> None:
        if not dask_available():
            raise RequestError(dask_missing_message())
        from distributed import Client, LocalCluster

        self.cluster = None
        if spec.kind == "dask-local":
            import dask

            # Dask starts its workers with one OpenMP thread: each gets its share of the cores
            # (measured: the network 40 % slower in a worker without it, docs/benchmarks.md §9).
            environ = {
                "OMP_NUM_THREADS": str(max(1, threads)),
                "MALLOC_ARENA_MAX": "2",
            }
            settings = {
                "distributed.nanny.pre-spawn-environ": environ,
                # Its sampling profiler takes the GIL every 10 ms from the reader thread.
                "distributed.worker.profile.enabled": False,
            }
            with dask.config.set(settings):
                self.cluster = LocalCluster(
                    n_workers=workers,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=None,
                )
            self.client = Client(self.cluster)
            self.address = f"local:{workers}"
            self.job_threads = threads
        else:
            try:
                self.client = Client(spec.address, timeout="15s")
            except (OSError, TimeoutError) as error:
                raise RequestError(
                    f"The Dask scheduler at {spec.address} does not answer ({error}); start it "
                    "(dask scheduler), check the address and the firewall, or run in-process."
                ) from None
            self.address = spec.address
            self.job_threads = 0  # each machine's own: a worker computes one job at a time
        self.workers = max(1, len(self.client.scheduler_info().get("workers", {})))

    def run(self, jobs: Sequence[Job], on_done: OnDone, cancel: Optional[CancelCheck]) -> None:
        from distributed import KilledWorker

        futures = {
            self.client.submit(
                run_job,
                job,
                key=f"landfuse-{job.run_key[:16]}-{job.index}",
                pure=False,
                retries=0,
            ): job
            for job in jobs
        }
        waiting = set(futures)
        try:
            while waiting:
                if cancel is not None and cancel():
                    self.client.cancel(list(waiting))
                    raise CancelledError("The run was cancelled.")
                done = {f for f in waiting if f.done()}
                if not done:
                    time.sleep(POLL_SECONDS)
                    continue
                waiting -= done
                for future in done:
                    try:
                        result = future.result()
                    except KilledWorker as error:
                        raise WorkerLostError(
                            f"Dask workers died {MAX_ATTEMPTS} times while computing a job "
                            f"({error}); the workers may be out of memory: use fewer threads "
                            "per worker or a smaller tile or batch."
                        ) from None
                    on_done(futures[future], result)
        except BaseException:
            self.client.cancel(list(waiting))
            raise

    def close(self) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


def python_for_children() -> str:
    """The Python interpreter worker processes start with. Inside the QGIS application
    ``sys.executable`` is QGIS itself, which must not be started once per worker: the Python
    it embeds is used instead (and told to multiprocessing, which Dask's nannies use too)."""
    current = Path(sys.executable)
    if current.name.lower().startswith("python"):
        return str(current)
    candidates = [
        getattr(sys, "_base_executable", ""),
        os.path.join(sys.exec_prefix, "bin", f"python{sys.version_info[0]}"),
        shutil.which(f"python{sys.version_info[0]}.{sys.version_info[1]}") or "",
        shutil.which("python3") or "",
    ]
    for candidate in candidates:
        named = bool(candidate) and Path(candidate).name.lower().startswith("python")
        if named and os.access(candidate, os.X_OK):
            multiprocessing.set_executable(candidate)
            return candidate
    raise RequestError(
        f"No Python interpreter was found to start worker processes ({sys.executable} is not "
        "one); run on the command line, or with the executor 'in-process'."
    )


def open_executor(spec: ExecutorSpec, gpus: int = 0, threads: int = 0) -> Any:
    """The executor of ``spec`` (``ProcessExecutor`` or ``DaskExecutor``), started."""
    python_for_children()
    workers = spec.workers or default_local_workers(gpus)
    if threads <= 0:
        threads = max(1, (os.cpu_count() or 1) // workers)
    if spec.kind == "processes":
        return ProcessExecutor(workers, threads)
    return DaskExecutor(spec, workers, threads)


# --- the driver -----------------------------------------------------------------------------


@dataclass
class _Run:
    """One planned run and its jobs, as they come back."""

    plan: Plan
    jobs: list[Job]
    part_dir: Path
    results: dict[int, JobResult] = field(default_factory=dict)
    result: Optional[RunResult] = None

    @property
    def complete(self) -> bool:
        return len(self.results) == len(self.jobs)


def parts_folder(plan: Plan, key: str) -> Path:
    """Where a run's parts go: beside the outputs unless the request names a folder (which
    every worker must see: a shared file system)."""
    root = Path(getattr(plan.request, "parts_dir", None) or plan.request.output_dir)
    return root.absolute() / f".landfuse-parts-{plan.outputs.name}-{key[:12]}"


def _release(plan: Plan) -> None:
    """The driver computes nothing: drop the network and close the inputs."""
    plan.network = None
    for group in plan.groups:
        if group.stack is not None:
            group.stack.close()
            group.stack = None
    budget.return_freed_memory()


def execute_jobs(
    plans: Sequence[Plan],
    spec: ExecutorSpec,
    progress: Optional[ProgressCallback],
    cancel: Optional[CancelCheck],
    started: float,
    started_at: str,
    executor: Any = None,
) -> list[RunResult]:
    """Compute and put together the runs of ``plans`` (their weights loaded, inputs checked)
    with the executor of ``spec`` (or an ``executor`` already open, which stays open)."""
    first = plans[0]
    gpus = _gpus(first)
    own = executor is None
    runs: list[_Run] = []
    try:
        if executor is None:
            executor = open_executor(spec, gpus)
        workers = executor.workers
        for plan in plans:
            cache = budget.block_cache_bytes(plan)  # the inputs are still open: sized as a run
            _release(plan)
            key = run_key(plan)
            folder = parts_folder(plan, key)
            if not plan.request.resume and folder.exists():
                shutil.rmtree(folder)
            threads = plan.request.threads or executor.job_threads
            jobs = make_jobs(
                plan, workers, folder, threads, plan.request.job_rows or None, key, cache
            )
            run = _Run(plan, jobs, folder)
            if plan.request.resume:
                for job in jobs:
                    found = verified(job)
                    if found is not None:
                        run.results[job.index] = found
            runs.append(run)
        total = sum(len(r.jobs) for r in runs)
        reused = sum(len(r.results) for r in runs)
        tracker = _Tracker(total, reused, workers, progress)
        tracker.say(
            f"{total} job(s) on {spec.describe()}"
            + (f"; {reused} verified part(s) reused" if reused else "")
        )
        by_key = {r.jobs[0].run_key: r for r in runs}
        for run in runs:
            if run.complete:
                run.result = _assemble(run, spec, executor, started, started_at)

        def done(job: Job, result: JobResult) -> None:
            run = by_key[job.run_key]
            run.results[job.index] = result
            tracker.done(result)
            if run.complete:
                run.result = _assemble(run, spec, executor, started, started_at)

        pending = [job for run in runs for job in run.jobs if job.index not in run.results]
        if pending:
            executor.run(pending, done, cancel)
    except CancelledError:
        kept = sum(len(r.results) for r in runs if r.result is None)
        raise CancelledError(
            "The run was cancelled; no output was written."
            + (
                f" {kept} finished part(s) are kept: run again with resume (--resume) to "
                "compute only the others."
                if kept
                else ""
            )
        ) from None
    finally:
        if own and executor is not None:
            executor.close()
    return [r.result for r in runs if r.result is not None]


def _gpus(plan: Plan) -> int:
    if plan.target.device.type != "cuda":
        return 0
    import torch

    return torch.cuda.device_count()


class _Tracker:
    """Progress from completed jobs, with the time left from their pace."""

    def __init__(
        self, total: int, reused: int, workers: int, callback: Optional[ProgressCallback]
    ) -> None:
        self.total, self.finished, self.workers = total, reused, workers
        self.callback = callback
        self.started = time.perf_counter()
        self.computed = 0

    def say(self, message: str, eta: Optional[float] = None) -> None:
        if self.callback is None:
            return
        fraction = 0.02 + 0.9 * self.finished / max(1, self.total)
        self.callback(Progress("infer", fraction, self.finished, self.total, eta, message))

    def done(self, result: JobResult) -> None:
        self.finished += 1
        self.computed += 1
        elapsed = time.perf_counter() - self.started
        left = self.total - self.finished
        eta = elapsed / self.computed * left if self.computed else None
        self.say(
            f"job {result.index + 1} done on {result.worker} ({result.seconds:.1f} s); "
            f"{self.finished} of {self.total} jobs",
            eta,
        )


def _copy_part(path: Path, rows: tuple[int, int], writer: Any, tally: Optional[AreaTally]) -> None:
    """Stream one part (rows ``rows`` of the scene) into the run's writer, in windows on the
    writer's block grid, and count its classes."""
    first, end = rows
    width = writer.grid.width
    with rasterio.open(path) as source:
        row = first
        while row < end:
            stop = min(end, (row // COPY_ROWS + 1) * COPY_ROWS)
            for col in range(0, width, COPY_COLS):
                cols = min(COPY_COLS, width - col)
                data = source.read(1, window=Window(col, row - first, cols, stop - row))
                writer.write_window(row, col, data)
                if tally is not None:
                    tally.add(row, data)
            row = stop


def _assemble(
    run: _Run, spec: ExecutorSpec, executor: Any, started: float, started_at: str
) -> RunResult:
    """Put a run's parts together into its outputs, write the report, remove the parts."""
    plan = run.plan
    results = [run.results[job.index] for job in run.jobs]
    stats = RunStats(
        tiles_total=len(plan.layout),
        tiles_computed=sum(r.tiles_computed for r in results),
        tiles_skipped=sum(r.tiles_skipped for r in results),
        final_batch_size=plan.request.batch,
        seconds_computing=sum(r.seconds_network for r in results),
        seconds_total=time.perf_counter() - started,
    )
    if stats.tiles_computed == 0 or sum(r.valid_pixels for r in results) == 0:
        shutil.rmtree(run.part_dir, ignore_errors=True)
        raise no_valid_pixel()
    main = next(p.key for p in plan.task.products if p.main)
    tally = AreaTally(plan.task.tally_classes(plan.spec.classes), plan.grid)
    assembling = time.perf_counter()
    with bounded_block_cache(budget.FINISH_BLOCK_CACHE), plan.outputs as outputs:
        writers = outputs.open_writers(plan.grid)
        for result in results:
            for key, writer in writers.items():
                _copy_part(
                    Path(result.files[key]), result.rows, writer, tally if key == main else None
                )
        plan.timings["assemble"] = time.perf_counter() - assembling
        plan.timings["tiles_loop"] = stats.seconds_total
        finishing = time.perf_counter()
        outputs.finish_rasters()
        plan.timings["finish"] = time.perf_counter() - finishing
        report = build_report(plan, stats, tally, started_at, time.perf_counter() - started)
        report["executor"] = {
            "executor": plan.request.executor,
            "kind": spec.kind,
            "address": getattr(executor, "address", ""),
            "workers": getattr(executor, "workers", 0),
            "jobs": len(results),
            "parts_reused": sum(r.resumed for r in results),
            "tiles_computed_with_halos": stats.tiles_computed,
            "jobs_detail": [r.to_dict() for r in results],
        }
        run_outputs = outputs.publish(report)
    shutil.rmtree(run.part_dir, ignore_errors=True)
    return RunResult(task=plan.request.task, outputs=run_outputs, report=report)
