"""How much memory a run will need, and how much there is, checked before any pixel is read.

Issue 11: ``--tile 100000`` on a 30000² scene passed ``--validate-only`` and then asked for
about 47 GB per date. The engine now estimates a run's peak from its plan (tile, batch, bands,
classes, stripe width, block cache, network) with :func:`estimate_run_memory`, reads what the
machine can give with :func:`available_host_memory` (and :func:`available_device_memory` on a
GPU), and refuses with :class:`~landfuse.core.errors.NotEnoughMemoryError`, naming the largest
tile that fits, when the estimate exceeds it. Every surface (command line, Processing, dock)
goes through the same check, so they apply the same limit.

The network's share is measured, not derived: ``scripts/measure_inference_memory.py`` runs each
network configuration of the registry in a fresh process and reads its peak resident memory;
:data:`ACTIVATION_BYTES_PER_PIXEL` holds those figures (bytes per input pixel and sample, CPU,
float32; see docs/benchmarks.md for the run).
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional

from ..models.architectures import ARCHITECTURES

__all__ = [
    "ACTIVATION_BYTES_PER_PIXEL",
    "HEADROOM",
    "MemoryBudget",
    "MemoryEstimate",
    "RunShape",
    "available_device_memory",
    "available_host_memory",
    "config_key",
    "estimate_run_memory",
    "format_bytes",
    "largest_fitting_tile",
]

#: Fraction of the available memory a run may plan to use; the rest is for QGIS, the Python
#: heap, GDAL's own buffers and what the estimate does not model.
HEADROOM = 0.85

#: Peak bytes per input pixel and sample of a forward pass on the CPU in float32, by network
#: configuration (:func:`config_key`), measured by scripts/measure_inference_memory.py at a
#: 512 px tile (fixed scratch space included, so slightly high for larger tiles).
ACTIVATION_BYTES_PER_PIXEL: dict[str, int] = {
    "amm_fusenet/resnet50/64": 2043,
    "amm_fusenet/resnet18/8": 329,
    "amfnet/resnet34/64": 415,
    "amfnet/resnet18/16": 248,
}
#: For a configuration the table does not list: the largest figure of its architecture.
_FALLBACK_BYTES_PER_PIXEL = 2043

_PREFETCH = 2  # batches the reader prepares ahead (core/runner.py)
#: What a run holds beyond its arrays: torch's and oneDNN's kernel caches, GDAL's datasets and
#: the allocator's retained pages. scripts/bench_repeat_memory.py measured a resident rise of
#: 332 MB against 282 MB of arrays for a 1536 px scene from the second run on (docs/benchmarks.md).
_RUNTIME_BYTES = 128 * 1024 * 1024


def config_key(architecture: str, config: Mapping[str, Any]) -> str:
    """The key of a network configuration in :data:`ACTIVATION_BYTES_PER_PIXEL`.

    Band and class counts change activations little next to encoder and width, which set them.
    """
    row = ARCHITECTURES.get(architecture)
    encoder = config.get("encoder", row.default_encoder if row is not None else "")
    width = config.get("width", 64)
    return f"{architecture}/{encoder}/{width}"


def activation_bytes_per_pixel(architecture: str, config: Mapping[str, Any]) -> int:
    """Measured bytes per pixel and sample for a network (the architecture's largest if new)."""
    key = config_key(architecture, config)
    if key in ACTIVATION_BYTES_PER_PIXEL:
        return ACTIVATION_BYTES_PER_PIXEL[key]
    same = [v for k, v in ACTIVATION_BYTES_PER_PIXEL.items() if k.startswith(architecture + "/")]
    return max(same) if same else _FALLBACK_BYTES_PER_PIXEL


# ----------------------------------------------------------------------------------------------
# What there is
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MemoryBudget:
    """Memory a run may use.

    Attributes:
        bytes: What is free for the run, in bytes.
        source: Where the figure comes from (``"MemAvailable"``, ``"cgroup limit"``...).
    """

    bytes: int
    source: str


def _read_int(path: str) -> Optional[int]:
    try:
        with open(path, encoding="ascii") as fh:
            text = fh.read().strip()
    except OSError:
        return None
    if not text or text == "max":
        return None
    try:
        return int(text.split()[0])
    except ValueError:
        return None


def _meminfo(field: str, path: str = "/proc/meminfo") -> Optional[int]:
    try:
        with open(path, encoding="ascii") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _self_status(field: str) -> Optional[int]:
    return _meminfo(field, "/proc/self/status")


def _cgroup_free(root: str = "/sys/fs/cgroup") -> Optional[int]:
    """Free bytes under this process's cgroup limit (v2, then v1), None without a limit."""
    limit = _read_int(os.path.join(root, "memory.max"))
    usage = _read_int(os.path.join(root, "memory.current"))
    if limit is None:
        limit = _read_int(os.path.join(root, "memory", "memory.limit_in_bytes"))
        usage = _read_int(os.path.join(root, "memory", "memory.usage_in_bytes"))
        if limit is not None and limit >= 1 << 60:  # v1's "no limit" is a huge number
            limit = None
    if limit is None:
        return None
    return max(0, limit - (usage or 0))


def _rlimit_free() -> Optional[int]:
    """Address space left under ``ulimit -v`` (RLIMIT_AS), None when unlimited."""
    try:
        import resource  # not on Windows
    except ImportError:
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY or soft < 0:
        return None
    used = _self_status("VmSize") or 0
    return max(0, soft - used)


def available_host_memory() -> Optional[MemoryBudget]:
    """The smallest of: the system's available memory, the cgroup's and ``ulimit -v``'s room.

    Returns:
        The budget, or None where nothing can be read (then no check is made).
    """
    candidates: list[MemoryBudget] = []
    avail = _meminfo("MemAvailable")
    if avail is not None:
        candidates.append(MemoryBudget(avail, "available system memory"))
    elif sys.platform == "darwin" or hasattr(os, "sysconf"):
        try:
            total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
            candidates.append(MemoryBudget(int(total), "physical memory"))
        except (ValueError, OSError, AttributeError):
            pass
    cgroup = _cgroup_free()
    if cgroup is not None:
        candidates.append(MemoryBudget(cgroup, "the container's memory limit"))
    rlimit = _rlimit_free()
    if rlimit is not None:
        candidates.append(MemoryBudget(rlimit, "the process's address-space limit (ulimit -v)"))
    return min(candidates, key=lambda b: b.bytes) if candidates else None


def available_device_memory(device: Any) -> Optional[MemoryBudget]:
    """Free memory on a CUDA device (``torch.cuda.mem_get_info``), or on Apple MPS.

    Args:
        device: A ``torch.device``.

    Returns:
        The budget, None for the CPU (host memory applies) or when it cannot be read.
    """
    import torch

    kind = getattr(device, "type", str(device))
    if kind == "cuda":
        try:
            free, _total = torch.cuda.mem_get_info(device)
        except (RuntimeError, AssertionError, AttributeError):
            return None
        return MemoryBudget(int(free), f"free memory on {device}")
    if kind == "mps":
        mps = getattr(torch, "mps", None)
        recommended = getattr(mps, "recommended_max_memory", None)
        allocated = getattr(mps, "driver_allocated_memory", None)
        if recommended is None or allocated is None:
            return None
        try:
            return MemoryBudget(int(recommended() - allocated()), "Metal's working-set limit")
        except (RuntimeError, AttributeError):
            return None
    return None


# ----------------------------------------------------------------------------------------------
# What a run needs
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunShape:
    """What sets a run's memory.

    Attributes:
        tile_height: Rows handed to the network per tile (padded).
        tile_width: Columns per tile (padded).
        batch: Tiles per forward pass (at most the number of tiles).
        batches: Batches in the run (the reader cannot queue more than there are).
        bands: Bands of every network input together (both dates for change detection).
        classes: Output channels blended (2 for change).
        stripe_width: Widest vertical stripe (the blending band's width).
        scene_height: Rows of the work grid (the columns two stripes share span it).
        shared_columns: Columns two stripes share (0 for one stripe).
        activation_bytes_per_pixel: The network's measured figure.
        parameter_bytes: The network's weights.
        block_cache_bytes: GDAL block cache the run sets.
    """

    tile_height: int
    tile_width: int
    batch: int
    batches: int
    bands: int
    classes: int
    stripe_width: int
    scene_height: int
    shared_columns: int
    activation_bytes_per_pixel: int
    parameter_bytes: int
    block_cache_bytes: int


@dataclass(frozen=True)
class MemoryEstimate:
    """A run's estimated peak, split by where it is held.

    Attributes:
        host: Bytes in the machine's memory.
        device: Bytes on the accelerator (0 on the CPU, where the network's share is in
            ``host``).
        parts: The terms, by name, for messages and the report.
    """

    host: int
    device: int
    parts: dict[str, int]


def estimate_run_memory(shape: RunShape, on_accelerator: bool = False) -> MemoryEstimate:
    """Estimate the peak memory of a run.

    Terms: input batches (the one computing, ``prefetch`` queued, the one being read, and the
    raw and normalised copies of the tile being read), the network (activations per pixel and
    sample, and its weights), the probabilities of a batch (the network's output and its CPU
    copy), the blending band of the widest stripe with its finished rows, the columns two
    stripes share, GDAL's block cache, and a fixed runtime share (kernel caches, datasets).

    Args:
        shape: The run's sizes.
        on_accelerator: The network runs on a GPU: activations, weights and one batch of inputs
            and outputs are held there instead.

    Returns:
        The estimate.
    """
    pixels = shape.tile_height * shape.tile_width
    f32 = 4
    tile_inputs = shape.bands * pixels * f32
    parts = {
        "input batches": tile_inputs * shape.batch * min(shape.batches, _PREFETCH + 2)
        + tile_inputs * 2,
        "network": shape.activation_bytes_per_pixel * pixels * shape.batch + shape.parameter_bytes,
        "probabilities": shape.classes * pixels * shape.batch * f32 * 2,
        "blending": 2 * (shape.classes + 1) * shape.tile_height * shape.stripe_width * f32
        + 2 * (shape.classes + 1) * shape.scene_height * shape.shared_columns * f32,
        "block cache": shape.block_cache_bytes,
        "runtime": _RUNTIME_BYTES,
    }
    if not on_accelerator:
        return MemoryEstimate(host=sum(parts.values()), device=0, parts=parts)
    device = parts["network"] + tile_inputs * shape.batch + parts["probabilities"] // 2
    host = sum(v for k, v in parts.items() if k != "network")
    return MemoryEstimate(host=host, device=device, parts=parts)


def largest_fitting_tile(
    shape_for: Callable[[int], RunShape],
    largest: int,
    budget_host: Optional[int],
    budget_device: Optional[int],
    multiple: int,
    on_accelerator: bool = False,
) -> int:
    """The largest tile edge (a multiple of ``multiple``) whose estimate fits both budgets.

    Args:
        shape_for: The run's sizes for a tile edge (the layout, stripes and block cache change
            with it).
        largest: Upper bound of the search (the tile asked for).
        budget_host: Usable host bytes (None: no limit).
        budget_device: Usable accelerator bytes (None: no limit).
        multiple: The network's size multiple.
        on_accelerator: See :func:`estimate_run_memory`.

    Returns:
        The tile edge, 0 when not even one multiple fits.
    """

    def fits(edge: int) -> bool:
        est = estimate_run_memory(shape_for(edge), on_accelerator)
        return (budget_host is None or est.host <= budget_host) and (
            budget_device is None or est.device <= budget_device
        )

    high = largest // multiple
    low = 0
    while low < high:
        mid = (low + high + 1) // 2
        if fits(mid * multiple):
            low = mid
        else:
            high = mid - 1
    return low * multiple


def format_bytes(value: float) -> str:
    """``1.5 GB``, ``320 MB``: decimal units, as disk and memory tools show them."""
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if value >= size:
            digits = 1 if value < 10 * size else 0
            return f"{value / size:.{digits}f} {unit}"
    return f"{max(0, math.ceil(value / 1e3))} kB"
