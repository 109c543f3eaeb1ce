"""Memory of a run: the estimate and its refusal, GDAL's block cache, and glibc's heap.

:func:`check_memory` refuses a run whose estimated peak exceeds what the machine has free and
names the largest tile that fits; :func:`block_cache_bytes` sizes GDAL's block cache for a run;
:func:`keep_memory_flat` and :func:`return_freed_memory` keep a long-lived process's resident
size from drifting.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import sys
from typing import Optional

from ..errors import NotEnoughMemoryError
from ..memory import (
    HEADROOM,
    RunShape,
    activation_bytes_per_pixel,
    available_device_memory,
    available_host_memory,
    estimate_run_memory,
    format_bytes,
    largest_fitting_tile,
)
from ..tiling import TileLayout
from . import plan as planning
from .plan import Plan

#: Smallest GDAL block cache a run works with (bytes), whatever its inputs.
BLOCK_CACHE_FLOOR = 32 << 20
#: GDAL block cache while the Cloud-Optimised GeoTIFFs are written (bytes).
FINISH_BLOCK_CACHE = 64 << 20

_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter (malloc.h)
_MMAP_THRESHOLD_BYTES = 32 << 20


def run_shape(plan: Plan, tile: int) -> RunShape:
    """The sizes that set a run's memory, for the plan's tile or another one."""
    if tile == plan.layout.tile:
        layout = plan.layout
    else:
        layout = planning.tile_layout(plan.request, plan.spec, plan.grid, tile)
    shared = max(
        (layout.stripe_span(s)[1] - layout.stripe_owned(s)[1] for s in range(layout.stripes)),
        default=0,
    )
    network = plan.network
    parameters = (
        sum(t.numel() * t.element_size() for t in network.state_dict().values()) if network else 0
    )
    architecture = str(plan.weights_metadata.get("architecture") or plan.spec.architecture)
    config = plan.weights_metadata.get("config") or {}
    batch = max(1, min(plan.request.batch, len(layout)))
    return RunShape(
        tile_height=layout.padded_height,
        tile_width=layout.padded_width,
        batch=min(plan.request.batch, len(layout)),
        batches=math.ceil(len(layout) / batch),
        bands=sum(len(g.modality.band_names) for g in plan.groups),
        classes=len(plan.spec.classes),
        stripe_width=layout.max_stripe_width,
        scene_height=layout.height,
        shared_columns=shared,
        activation_bytes_per_pixel=activation_bytes_per_pixel(architecture, config),
        parameter_bytes=parameters,
        block_cache_bytes=block_cache_bytes(plan, layout),
    )


def check_memory(plan: Plan) -> None:
    """Refuse a run whose estimated peak memory exceeds what the machine has free.

    Set ``LANDFUSE_SKIP_MEMORY_CHECK=1`` to run anyway (the estimate is deliberately on the
    safe side; the run may then fail for lack of memory).
    """
    shape = run_shape(plan, plan.layout.tile)
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
    multiple = planning.size_multiple(plan.spec)
    largest = largest_fitting_tile(
        lambda edge: run_shape(plan, edge),
        plan.layout.tile,
        host_budget,
        device_budget,
        multiple,
        on_accelerator,
    )
    biggest = sorted(estimate.parts.items(), key=lambda kv: -kv[1])[:3]
    detail = ", ".join(f"{name} {format_bytes(size)}" for name, size in biggest)
    if largest >= multiple:
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


def block_cache_bytes(plan: Plan, layout: Optional[TileLayout] = None) -> int:
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
    return inputs + outputs + BLOCK_CACHE_FLOOR


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


def return_freed_memory() -> None:
    """Hand freed heap pages back to the system (glibc keeps them otherwise); no-op elsewhere."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (e.g. musl): nothing to do
        pass
