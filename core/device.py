"""Choosing the device and the numeric precision of a run.

DESIGN.md §2.5: batches run on CUDA, Apple MPS or the CPU; ``"auto"`` picks the best present, in
that order. Precision ``"auto"`` picks a reduced precision where the hardware runs it natively:
bfloat16 on CUDA GPUs that support it (else float16), float16 on MPS, bfloat16 on CPUs with
AVX512-BF16 or AMX (Intel Cooper Lake / Sapphire Rapids and later, AMD Zen 4 and later), and
float32 everywhere else. Reduced precision goes through ``torch.autocast``; results are compared
with float32 by the benchmark (issue 4: at least 99% of pixels in the same class).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from .errors import DeviceError, RequestError
from .requests import DEVICE_CHOICES, PRECISION_CHOICES

logger = logging.getLogger(__name__)

__all__ = [
    "DEVICE_CHOICES",
    "PRECISION_CHOICES",
    "ExecutionTarget",
    "cpu_supports_bf16",
    "device_name",
    "mps_available",
    "resolve_device",
    "resolve_precision",
    "resolve_target",
]

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
_CPU_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


@dataclass(frozen=True)
class ExecutionTarget:
    """Where and how a run computes.

    Attributes:
        device: The torch device.
        precision: ``"fp32"``, ``"bf16"`` or ``"fp16"``.
        reason: One line saying why (for the run report and the log).
    """

    device: torch.device
    precision: str
    reason: str

    @property
    def dtype(self) -> torch.dtype:
        """The torch dtype of :attr:`precision`."""
        return _DTYPES[self.precision]

    @property
    def autocast(self) -> bool:
        """Whether inference runs under ``torch.autocast`` (every precision but fp32)."""
        return self.precision != "fp32"


def _cpuinfo_flags(path: Path = Path("/proc/cpuinfo")) -> Optional[frozenset[str]]:
    """Return the CPU flags of the first processor in ``/proc/cpuinfo`` (None off Linux)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in {"flags", "Features"}:
            return frozenset(value.split())
    return frozenset()


def cpu_supports_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Tell whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX).

    Linux's ``/proc/cpuinfo`` flags are read first; elsewhere PyTorch's own CPU probes are used
    when this build has them. Without native support bf16 is emulated and slower than fp32.

    Args:
        cpuinfo: Path of the cpuinfo file (a parameter for tests).

    Returns:
        True when ``avx512_bf16`` or ``amx_bf16`` is present.
    """
    flags = _cpuinfo_flags(cpuinfo)
    if flags is not None:
        return bool(flags & _CPU_BF16_FLAGS)
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    for name in probes:
        probe = getattr(torch.cpu, name, None)
        if probe is not None:
            try:
                if probe():
                    return True
            except RuntimeError:  # a probe this build cannot run on this machine
                continue
    return False


def mps_available() -> bool:
    """Tell whether Apple's Metal backend is usable (False on builds without it)."""
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(requested: str = "auto") -> torch.device:
    """Turn a device name into a torch device that exists here.

    Args:
        requested: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``.

    Returns:
        The device. ``"auto"`` gives CUDA when present, else MPS, else the CPU.

    Raises:
        RequestError: for a name that is not a device.
        DeviceError: when the named device is not available on this machine.
    """
    name = (requested or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "mps":
        if not mps_available():
            raise DeviceError(
                "Apple MPS was asked for but is not available here; use --device cpu or auto."
            )
        return torch.device("mps")
    if name == "cuda" or name.startswith("cuda:"):
        index_text = name.partition(":")[2]
        if index_text and not index_text.isdigit():
            raise RequestError(f"Unknown device '{requested}'; use auto, cpu, cuda, cuda:N or mps.")
        if not torch.cuda.is_available():
            raise DeviceError(
                "A CUDA GPU was asked for but PyTorch sees none (no NVIDIA GPU, no driver, or a "
                "CPU-only PyTorch build); use --device cpu or auto."
            )
        if index_text and int(index_text) >= torch.cuda.device_count():
            raise DeviceError(
                f"GPU {index_text} was asked for but only {torch.cuda.device_count()} GPU(s) "
                "exist; count from 0."
            )
        return torch.device(name)
    raise RequestError(f"Unknown device '{requested}'; use auto, cpu, cuda, cuda:N or mps.")


def resolve_precision(requested: str, device: torch.device) -> tuple[str, str]:
    """Pick the numeric precision for ``device``.

    Args:
        requested: ``"auto"``, ``"fp32"``, ``"bf16"`` or ``"fp16"``.
        device: The device the run uses.

    Returns:
        ``(precision, reason)``.

    Raises:
        RequestError: for an unknown name, or fp16 on the CPU (use bf16 there).
        DeviceError: for bf16 on a GPU that does not support it.
    """
    name = (requested or "auto").strip().lower()
    if name not in PRECISION_CHOICES:
        raise RequestError(
            f"Unknown precision '{requested}'; use one of {', '.join(PRECISION_CHOICES)}."
        )
    kind = device.type
    if name == "fp32":
        return "fp32", "float32 asked for"
    if kind == "cuda":
        bf16_ok = bool(torch.cuda.is_bf16_supported())
        if name == "bf16" and not bf16_ok:
            raise DeviceError("This GPU does not support bfloat16; use --precision fp16 or fp32.")
        if name == "auto":
            return ("bf16", "GPU supports bfloat16") if bf16_ok else ("fp16", "GPU, no bfloat16")
        return name, f"{name} asked for on the GPU"
    if kind == "mps":
        if name == "auto":
            return "fp16", "Apple GPU: float16"
        return name, f"{name} asked for on the Apple GPU"
    # CPU
    if name == "fp16":
        raise RequestError(
            "float16 is a GPU precision; on the CPU use --precision bf16 (fast on CPUs with "
            "AVX512-BF16 or AMX) or fp32."
        )
    native = cpu_supports_bf16()
    if name == "bf16":
        if not native:
            logger.warning("This CPU has no native bfloat16: bf16 will be emulated and slow.")
        return "bf16", "bfloat16 asked for" + ("" if native else " (emulated on this CPU)")
    if native:
        return "bf16", "CPU has AVX512-BF16/AMX"
    return "fp32", "CPU without native bfloat16"


def resolve_target(device: str = "auto", precision: str = "auto") -> ExecutionTarget:
    """Resolve both the device and the precision of a run.

    Args:
        device: Device name (see :func:`resolve_device`).
        precision: Precision name (see :func:`resolve_precision`).

    Returns:
        The :class:`ExecutionTarget`.

    Raises:
        RequestError: for unknown names.
        DeviceError: when the device or precision is not available.
    """
    torch_device = resolve_device(device)
    chosen, reason = resolve_precision(precision, torch_device)
    return ExecutionTarget(torch_device, chosen, reason)


def device_name(device: torch.device) -> str:
    """What the user calls the device: the GPU's name, "Apple MPS", or the CPU's model."""
    if device.type == "cuda" and torch.cuda.is_available():
        try:
            return torch.cuda.get_device_name(device)
        except (RuntimeError, AssertionError):
            return "CUDA GPU"
    if device.type == "mps":
        return "Apple MPS"
    flags = _cpuinfo_model()
    return flags or "CPU"


def _cpuinfo_model(path: Path = Path("/proc/cpuinfo")) -> str:
    try:
        for line in path.read_text(errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor()
