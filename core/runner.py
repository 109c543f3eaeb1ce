"""Batched inference over tiles, with read-ahead, progress, cancel and out-of-memory retries.

DESIGN.md §2.5: tiles go through the network in batches on the chosen device, in float32 or in
a reduced precision under ``torch.autocast``, channels-last, under ``torch.inference_mode()``.
A reader thread prepares the next batches (reading, aligning, normalising, padding) while the
current one computes, through a bounded queue, so at most ``prefetch + 1`` batches are in memory.

Between batches the runner reports progress (fraction, tiles done, estimated time left) and asks
whether to stop; a cancel raises :class:`~landfuse.core.errors.CancelledError`. On a CUDA
out-of-memory error the batch is split in halves and the smaller batch size is kept; at one
tile it fails with :class:`~landfuse.core.errors.OutOfMemoryError` saying what to change.

The engine relies on one model method only (models contract): ``model.predict(*inputs)`` takes
one tensor ``[B, bands, H, W]`` per input (modalities, or before/after) and returns logits
``[B, classes, H, W]``.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Callable, Generator, Hashable, Iterator, Optional, Protocol, Sequence, cast

import numpy as np
import torch

from .device import ExecutionTarget
from .errors import CancelledError, OutOfMemoryError
from .tiling import Tile

logger = logging.getLogger(__name__)

__all__ = [
    "BatchPredictor",
    "CancelCheck",
    "Progress",
    "ProgressCallback",
    "RunStats",
    "TileData",
    "TileSource",
    "run_tiles",
]


@dataclass(frozen=True)
class Progress:
    """A progress report.

    Attributes:
        stage: ``"prepare"``, ``"infer"``, ``"finish"`` or ``"done"``.
        fraction: Overall fraction done, 0..1.
        tiles_done: Tiles handled (computed or skipped).
        tiles_total: Tiles in the run.
        eta_seconds: Estimated seconds left for the tiles (None until one batch is done).
        message: A short human sentence.
    """

    stage: str
    fraction: float
    tiles_done: int = 0
    tiles_total: int = 0
    eta_seconds: Optional[float] = None
    message: str = ""

    def to_dict(self) -> dict[str, object]:
        """Return a JSON-compatible dict (the worker's progress line)."""
        return {
            "stage": self.stage,
            "fraction": round(self.fraction, 4),
            "tiles_done": self.tiles_done,
            "tiles_total": self.tiles_total,
            "eta_seconds": None if self.eta_seconds is None else round(self.eta_seconds, 1),
            "message": self.message,
        }


ProgressCallback = Callable[[Progress], None]
CancelCheck = Callable[[], bool]


@dataclass
class TileData:
    """A tile ready for the network.

    Attributes:
        inputs: One ``float32 [bands, H, W]`` array per network input (padded tile).
        valid: ``bool [h, w]`` valid pixels of the tile's real area.
    """

    inputs: list[np.ndarray]
    valid: np.ndarray


@dataclass
class RunStats:
    """What the tile loop did.

    Attributes:
        tiles_total: Tiles planned.
        tiles_computed: Tiles that went through the network.
        tiles_skipped: Tiles without a valid pixel (outside the area, all nodata).
        batches: Forward passes.
        final_batch_size: Batch size at the end (smaller after out-of-memory retries).
        seconds_waiting_for_data: Time the compute loop waited for the reader thread.
        seconds_computing: Time spent in forward passes.
        seconds_total: Wall time of the loop.
    """

    tiles_total: int = 0
    tiles_computed: int = 0
    tiles_skipped: int = 0
    batches: int = 0
    final_batch_size: int = 0
    seconds_waiting_for_data: float = 0.0
    seconds_computing: float = 0.0
    seconds_total: float = 0.0


def _is_oom(error: BaseException) -> bool:
    oom_type = getattr(torch, "OutOfMemoryError", None) or getattr(
        torch.cuda, "OutOfMemoryError", None
    )
    if oom_type is not None and isinstance(error, oom_type):
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()


class BatchPredictor:
    """Runs batches through a model and returns softmax probabilities on the CPU.

    Args:
        model: A model with ``predict(*inputs) -> logits``; moved to the device, put in eval
            mode and, with ``channels_last``, into channels-last memory format.
        target: Device and precision.
        batch_size: Tiles per forward pass (halved on out-of-memory).
        channels_last: Use the channels-last memory format (faster convolutions on CPUs with
            oneDNN and on tensor-core GPUs).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        target: ExecutionTarget,
        batch_size: int,
        channels_last: bool = True,
        flips: bool = False,
    ) -> None:
        self.target = target
        #: Test-time flips: the tile, left-right and upside down, probabilities averaged.
        self.flips = flips
        self.batch_size = max(1, int(batch_size))
        self.channels_last = channels_last
        model = model.to(target.device)
        if channels_last:
            # torch's type stubs omit the memory_format keyword that Module.to() accepts.
            model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.model = model.eval()
        self._predict = cast(Callable[..., torch.Tensor], model.predict)

    def _forward(self, arrays: Sequence[np.ndarray]) -> np.ndarray:
        device = self.target.device
        tensors = []
        for array in arrays:
            # from_numpy keeps the strides: a channels-last batch from the reader stays one.
            tensor = torch.from_numpy(array).to(device, non_blocking=True)
            if self.channels_last:
                tensor = tensor.contiguous(memory_format=torch.channels_last)
            tensors.append(tensor)
        with torch.inference_mode():
            with torch.autocast(
                device_type=device.type, dtype=self.target.dtype, enabled=self.target.autocast
            ):
                logits = self._predict(*tensors)
            probabilities = torch.softmax(logits.float(), dim=1)
            if self.flips:
                for dim in (3, 2):  # left-right, upside down; flipped back before averaging
                    with torch.autocast(
                        device_type=device.type,
                        dtype=self.target.dtype,
                        enabled=self.target.autocast,
                    ):
                        flipped = self._predict(*(t.flip(dim) for t in tensors))
                    probabilities += torch.softmax(flipped.float(), dim=1).flip(dim)
                probabilities /= 3.0
            # Planar (NCHW) for the blending, which works one class plane at a time; torch
            # transposes a channels-last result faster than numpy would.
            return probabilities.cpu().contiguous().numpy()

    def predict(self, arrays: Sequence[np.ndarray]) -> np.ndarray:
        """Return softmax probabilities for a batch, splitting it if the device runs out.

        Args:
            arrays: One ``float32 [B, bands, H, W]`` array per network input.

        Returns:
            ``float32 [B, classes, H, W]`` probabilities.

        Raises:
            OutOfMemoryError: if even one tile does not fit in the device's memory.
        """
        total = arrays[0].shape[0]
        parts = []
        start = 0
        while start < total:
            size = min(self.batch_size, total - start)
            chunk = [a[start : start + size] for a in arrays]
            try:
                parts.append(self._forward(chunk))
                start += size
                continue
            except Exception as error:  # only out-of-memory is handled; the rest propagates
                if not _is_oom(error):
                    raise
            # Outside the except block, so that the failed attempt's tensors can be freed.
            if self.target.device.type == "cuda":
                torch.cuda.empty_cache()
            if size <= 1:
                raise OutOfMemoryError(
                    f"The {self.target.device.type.upper()} device ran out of memory with a "
                    f"single {chunk[0].shape[-2]}x{chunk[0].shape[-1]} tile; use a smaller "
                    "--tile, --precision fp16/bf16, close other programs using the GPU, or run "
                    "on the CPU (--device cpu)."
                )
            self.batch_size = max(1, size // 2)
            logger.warning(
                "Out of memory with a batch of %d tiles; retrying with %d.", size, self.batch_size
            )
        return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)


_DONE = object()


class TileSource(Protocol):
    """Tiles in row-major order with a known count (a list, or a lazy ``TileLayout``)."""

    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[Tile]: ...


@dataclass
class _Batch:
    """Tiles of one batch in order, and the stacked network inputs of the computed ones."""

    items: list[tuple[Tile, Optional[TileData]]]
    inputs: list[np.ndarray]


def _stack(arrays: Sequence[np.ndarray], channels_last: bool) -> np.ndarray:
    """Stack ``[C, H, W]`` tiles into ``[B, C, H, W]``, laid out channels-last if asked.

    The channels-last layout is built here, in the reader thread, so that the compute thread
    hands the memory to torch as it is (``torch.from_numpy`` keeps the strides).
    """
    if not channels_last:
        return np.stack(arrays)
    count = len(arrays)
    channels, height, width = arrays[0].shape
    nhwc = np.empty((count, height, width, channels), dtype=np.float32)
    for index, array in enumerate(arrays):
        nhwc[index] = array.transpose(1, 2, 0)
    return nhwc.transpose(0, 3, 1, 2)


def _make_batch(items: list[tuple[Tile, Optional[TileData]]], channels_last: bool) -> _Batch:
    computed = [d for _, d in items if d is not None]
    inputs = []
    if computed:
        inputs = [
            _stack([d.inputs[i] for d in computed], channels_last)
            for i in range(len(computed[0].inputs))
        ]
        for data in computed:
            data.inputs = []  # stacked now: do not hold every tile twice while queued
    return _Batch(items, inputs)


def _reader(
    tiles: TileSource,
    load: Callable[[Tile], Optional[TileData]],
    batch_size: int,
    channels_last: bool,
    out: queue.Queue,
    stop: threading.Event,
    group: Optional[Callable[[Tile], Hashable]] = None,
) -> None:
    """Reader thread: group tiles into batches of ``batch_size`` computed tiles (a new batch
    also starts where ``group(tile)`` changes)."""

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                out.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    try:
        items: list[tuple[Tile, Optional[TileData]]] = []
        computed = 0
        current: Hashable = None
        for tile in tiles:
            if stop.is_set():
                return
            if group is not None:
                key = group(tile)
                if items and key != current:
                    if not put(_make_batch(items, channels_last)):
                        return
                    items, computed = [], 0
                current = key
            data = load(tile)
            items.append((tile, data))
            computed += data is not None
            if computed >= batch_size:
                if not put(_make_batch(items, channels_last)):
                    return
                items, computed = [], 0
        if items and not put(_make_batch(items, channels_last)):
            return
        put(_DONE)
    except BaseException as error:
        put(error)


def _batches(
    tiles: TileSource,
    load: Callable[[Tile], Optional[TileData]],
    batch_size: int,
    channels_last: bool,
    prefetch: int,
    stats: RunStats,
    group: Optional[Callable[[Tile], Hashable]] = None,
) -> Generator[_Batch, None, None]:
    """Yield batches prepared by a reader thread; stop and join it on exit."""
    out: queue.Queue = queue.Queue(maxsize=max(1, prefetch))
    stop = threading.Event()
    thread = threading.Thread(
        target=_reader,
        args=(tiles, load, batch_size, channels_last, out, stop, group),
        name="landfuse-reader",
        daemon=True,
    )
    thread.start()
    try:
        while True:
            waited = time.perf_counter()
            item = out.get()
            stats.seconds_waiting_for_data += time.perf_counter() - waited
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        # Unblock a reader waiting on a full queue, then wait for it to leave GDAL.
        while thread.is_alive():
            try:
                out.get_nowait()
            except queue.Empty:
                thread.join(timeout=0.05)


def run_tiles(
    tiles: TileSource,
    load: Callable[[Tile], Optional[TileData]],
    predictor: BatchPredictor,
    on_tile: Callable[[Tile, Optional[np.ndarray], Optional[TileData]], None],
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelCheck] = None,
    prefetch: int = 2,
    progress_span: tuple[float, float] = (0.0, 1.0),
    batch_group: Optional[Callable[[Tile], Hashable]] = None,
) -> RunStats:
    """Run every tile through the predictor, in order, reading ahead in a thread.

    Args:
        tiles: Tiles in row-major order: a list, or a ``TileLayout`` (iterated lazily, so
            that the tile list of a whole scene is never held).
        load: Called in the reader thread for each tile: the network inputs and valid mask, or
            None to skip the tile (outside the area, all nodata).
        predictor: The batch predictor.
        on_tile: Called in the calling thread for every tile in order with its probabilities
            ``[classes, h, w]`` cropped to the tile's real size (None for a skipped tile).
        progress: Progress callback, called after every batch.
        cancel: Returns True to stop; checked before every batch.
        prefetch: Batches prepared ahead.
        progress_span: Part of the overall progress this loop covers.
        batch_group: A new batch starts where its value changes
            (:func:`~landfuse.core.tiling.batch_groups`); None: batches of consecutive tiles.

    Returns:
        The :class:`RunStats`.

    Raises:
        CancelledError: when ``cancel()`` returned True.
        OutOfMemoryError: see :meth:`BatchPredictor.predict`.
    """
    stats = RunStats(tiles_total=len(tiles), final_batch_size=predictor.batch_size)
    started = time.perf_counter()
    low, high = progress_span
    done = 0
    batches = _batches(
        tiles, load, predictor.batch_size, predictor.channels_last, prefetch, stats, batch_group
    )
    # Closing the generator stops and joins the reader thread before anything propagates: the
    # caller closes the datasets after an error or a cancel, and a reader still inside GDAL
    # would read a closed dataset.
    with contextlib.closing(batches):
        for batch in batches:
            if cancel is not None and cancel():
                raise CancelledError("The run was cancelled; no output was written.")
            probabilities = None
            if batch.inputs:
                tick = time.perf_counter()
                probabilities = predictor.predict(batch.inputs)
                stats.seconds_computing += time.perf_counter() - tick
                stats.batches += 1
            position = 0
            for tile, data in batch.items:
                if data is None:
                    stats.tiles_skipped += 1
                    on_tile(tile, None, None)
                    continue
                if probabilities is None:
                    raise RuntimeError("A computed tile has no probabilities (internal error).")
                probs = probabilities[position, :, : tile.height, : tile.width]
                position += 1
                stats.tiles_computed += 1
                on_tile(tile, probs, data)
            done += len(batch.items)
            if progress is not None:
                elapsed = time.perf_counter() - started
                eta = elapsed * (len(tiles) - done) / done if done else None
                fraction = low + (high - low) * done / max(1, len(tiles))
                progress(
                    Progress(
                        "infer",
                        fraction,
                        done,
                        len(tiles),
                        eta,
                        f"{done}/{len(tiles)} tiles",
                    )
                )
    stats.final_batch_size = predictor.batch_size
    stats.seconds_total = time.perf_counter() - started
    return stats
