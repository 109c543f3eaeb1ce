"""Reading torch files safely and fitting state_dicts to networks (no project metadata).

The lowest layer of weights I/O, shared by :mod:`~landfuse.models.weights` (project files) and
the networks' reference-checkpoint loaders: :func:`safe_torch_load` (weights-only unpickling,
with unsafe and damaged files told apart by parsing the pickle opcodes with
:mod:`pickletools`, never by the wording of torch's message), :func:`extract_state_dict` and
:func:`load_state_dict_checked`. It imports torch and the errors only, so the network modules
import it at the top without an import circle.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import pickletools
import re
import struct
import zipfile
from pathlib import Path
from typing import Any, Mapping, Union, cast

import torch
from torch import nn

from .errors import (
    CorruptWeightsError,
    UnsafeWeightsError,
    WeightsMismatchError,
    WeightsNotFoundError,
)
from .weights_info import FORMAT_NAME

__all__ = [
    "check_weights_path",
    "extract_state_dict",
    "load_state_dict_checked",
    "safe_torch_load",
    "sidecar_path",
    "strip_module_prefix",
]

PathLike = Union[str, "os.PathLike[str]"]
_LIST_LIMIT = 10


def check_weights_path(path: PathLike) -> Path:
    """Check that ``path`` names a weights file, with a message that says what to give instead.

    Args:
        path: what the user gave as weights.

    Returns:
        The path.

    Raises:
        WeightsNotFoundError: the path does not exist, is a folder (the message lists the
            ``.pt`` files in it), or is the JSON sidecar of a weights file (the message names
            the file to give).
    """
    p = Path(path)
    if p.is_dir():
        found = sorted(q.name for q in p.iterdir() if q.suffix in (".pt", ".pth", ".ckpt"))
        hint = (
            f"give one of the weights files inside it: {_preview(found)}"
            if found
            else "it holds no .pt weights file; give the path of a weights file"
        )
        raise WeightsNotFoundError(f"{p} is a folder, not a weights file; {hint}.")
    if p.suffix.lower() == ".json" and p.name != ".json":
        partner = p.with_name(p.name[: -len(".json")])
        if partner.is_file() or _looks_like_sidecar(p):
            raise WeightsNotFoundError(
                f"{p.name} is the JSON sidecar of the weights file {partner.name}, not the "
                f"weights themselves; give {partner} instead (keep the sidecar beside it)."
            )
    if not p.is_file():
        raise WeightsNotFoundError(f"Weights file not found: {p}. Check the path.")
    return p


def _looks_like_sidecar(path: Path) -> bool:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("format") == FORMAT_NAME


def sidecar_path(path: PathLike) -> Path:
    """The JSON sidecar of a weights file: ``<path>.json``."""
    p = Path(path)
    return p.with_name(p.name + ".json")


# ----------------------------------------------------------------------------------------------
# Safe loading
# ----------------------------------------------------------------------------------------------

# Checkpoints written by the reference training scripts may hold numpy scalars (the AMM-FuseNet
# script stores the best mean IoU, a numpy float64, as "best_score"). Unpickling them normally
# needs numpy's reconstructors; these stand-ins rebuild the plain Python number from its bytes
# instead, and run nothing else, so the load stays weights-only.
_NUMPY_SCALAR_FORMATS = {
    "f2": "e", "f4": "f", "f8": "d",
    "i1": "b", "i2": "h", "i4": "i", "i8": "q",
    "u1": "B", "u2": "H", "u4": "I", "u8": "Q",
    "b1": "?",
}  # fmt: skip


class _NumpyDTypeStandIn:
    """Stands in for ``numpy.dtype`` while unpickling: remembers the type code and byte order."""

    def __init__(self, spec: str = "", align: bool = False, copy: bool = True) -> None:
        self.spec = str(spec)
        self.byteorder = "="

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) > 1 and isinstance(state[1], str):
            self.byteorder = state[1]


def _numpy_scalar_stand_in(dtype: Any, data: Any = None) -> Any:
    """Stands in for ``numpy.core.multiarray.scalar``: returns the Python number it encodes."""
    spec = getattr(dtype, "spec", "")
    fmt = _NUMPY_SCALAR_FORMATS.get(spec)
    if fmt is None or not isinstance(data, (bytes, bytearray)):
        raise pickle.UnpicklingError(f"unsupported numpy scalar of type {spec!r}")
    order = ">" if getattr(dtype, "byteorder", "=") == ">" else "<"
    return struct.unpack(order + fmt, bytes(data))[0]


_SAFE_STAND_INS: list[Any] = [
    (_NumpyDTypeStandIn, "numpy.dtype"),
    (_numpy_scalar_stand_in, "numpy.core.multiarray.scalar"),
    (_numpy_scalar_stand_in, "numpy._core.multiarray.scalar"),
]

_PICKLE_PROTO = 0x80
_STRING_OPS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING",
               "BINSTRING", "STRING"}  # fmt: skip
_OBJECT_OPS = {"REDUCE", "BUILD", "INST", "OBJ", "NEWOBJ", "NEWOBJ_EX", "EXT1", "EXT2", "EXT4"}
_HARMLESS_GLOBALS = ("torch.", "collections.OrderedDict", "numpy.dtype",
                     "numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar")  # fmt: skip


class _MalformedPickleError(Exception):
    """The bytes are no well-formed pickle (damage, truncation, another kind of file)."""


def _scan_pickle(stream: io.BufferedIOBase) -> list[str]:
    """Parse one pickle with :func:`pickletools.genops`; return the globals it names.

    Raises:
        _MalformedPickleError: when the bytes are not one complete, well-formed pickle.
    """
    names: list[str] = []
    strings: list[str] = []
    try:
        for opcode, arg, _ in pickletools.genops(stream):
            if opcode.name in ("GLOBAL", "INST") and isinstance(arg, str):
                names.append(arg.replace(" ", ".").replace("\n", "."))
            elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                names.append(f"{strings[-2]}.{strings[-1]}")
            elif opcode.name in _STRING_OPS and isinstance(arg, (str, bytes)):
                strings.append(arg if isinstance(arg, str) else arg.decode("latin-1"))
    except Exception as exc:  # genops raises ValueError, EOFError, struct.error, ...
        raise _MalformedPickleError(str(exc)) from exc
    return names


def _pickle_streams(path: Path) -> list[bytes]:
    """The pickles a torch file is made of: ``*/data.pkl`` of a zip archive, else the file."""
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                members = [n for n in archive.namelist() if n.endswith("data.pkl")]
                if not members:
                    raise _MalformedPickleError("a zip archive with no data.pkl")
                return [archive.read(n) for n in members]
        except (zipfile.BadZipFile, OSError, EOFError, RuntimeError) as exc:
            raise _MalformedPickleError(str(exc)) from exc
    return [path.read_bytes()]


def _refusal_kind(path: Path) -> tuple[str, str]:
    """Why the weights-only loader refused ``path``: ``("unsafe", what)`` or ``("corrupt", why)``.

    A well-formed pickle that the weights-only unpickler refused asked for something beyond
    tensors and plain containers; bytes that are no pickle are damaged. The legacy torch format
    is a run of pickles (magic number, protocol, system info, the object, storage keys) before
    the raw storage bytes; each one that starts is parsed.
    """
    try:
        names: list[str] = []
        for data in _pickle_streams(path):
            stream = io.BytesIO(data)
            names += _scan_pickle(stream)
            for _ in range(4):  # the legacy format's following pickles
                if stream.tell() >= len(data) or data[stream.tell()] != _PICKLE_PROTO:
                    break
                names += _scan_pickle(stream)
    except _MalformedPickleError as exc:
        return "corrupt", str(exc) or "not a pickle"
    suspicious = [n for n in names if not n.startswith(_HARMLESS_GLOBALS)]
    if suspicious:
        return "unsafe", "it asks for " + _preview(sorted(set(suspicious)))
    return "unsafe", "it builds Python objects beyond tensors and plain containers"


def _stand_ins() -> contextlib.AbstractContextManager[Any]:
    """Context that accepts the numpy-scalar stand-ins (torch >= 2.6; a no-op before)."""
    safe_globals = getattr(torch.serialization, "safe_globals", None)
    version = tuple(int(p) for p in re.findall(r"\d+", torch.__version__)[:2])
    # (object, "qualified.name") entries are understood from torch 2.6 on.
    if safe_globals is None or version < (2, 6):
        return contextlib.nullcontext()
    return cast("contextlib.AbstractContextManager[Any]", safe_globals(_SAFE_STAND_INS))


def safe_torch_load(path: PathLike) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)`` with clear LandFuse errors.

    Nothing in the file can run code: torch's weights-only unpickler refuses every global that is
    not a tensor type or a plain container; the only extra globals accepted are harmless
    stand-ins that turn numpy scalars back into Python numbers.

    Args:
        path: the file.

    Returns:
        Whatever plain object the file holds (a dict, usually).

    Raises:
        WeightsNotFoundError: the file does not exist.
        UnsafeWeightsError: the file would need unpickling arbitrary objects.
        CorruptWeightsError: the file is empty, truncated or not a torch file.
    """
    p = check_weights_path(path)
    if p.stat().st_size == 0:
        raise CorruptWeightsError(f"Weights file {p} is empty. Copy or export it again.")
    try:
        with _stand_ins():
            return torch.load(p, map_location="cpu", weights_only=True)
    except (
        pickle.UnpicklingError,
        RuntimeError,
        EOFError,
        ValueError,
        KeyError,
        zipfile.BadZipFile,
        struct.error,
        AttributeError,
        TypeError,
        IndexError,
    ) as exc:
        kind, why = _refusal_kind(p)
        if kind == "unsafe" and isinstance(exc, pickle.UnpicklingError):
            raise UnsafeWeightsError(
                f"Refusing to load {p.name}: it holds pickled Python objects that could run code "
                f"when loaded ({why}). Only plain state_dicts are accepted; if you trust the "
                "file, re-save its state_dict (torch.save(model.state_dict(), ...)) and load that."
            ) from None
        detail = why if kind == "corrupt" else _short(str(exc))
        raise CorruptWeightsError(
            f"Weights file {p.name} is truncated, damaged or not a torch file ({detail}). "
            "Copy or export it again."
        ) from exc
    except OSError as exc:
        raise CorruptWeightsError(
            f"Weights file {p.name} cannot be read ({exc.strerror or exc}). Check the file and "
            "its permissions, or copy it again."
        ) from exc


def _short(text: str) -> str:
    line = text.strip().splitlines()[-1] if text.strip() else "no detail"
    return line[:200]


# ----------------------------------------------------------------------------------------------
# State dicts
# ----------------------------------------------------------------------------------------------


def strip_module_prefix(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Remove the ``module.`` prefix that ``nn.DataParallel`` adds, when every key has it.

    Args:
        state_dict: name → tensor.

    Returns:
        A new dict (unchanged keys when not every key starts with ``module.``).
    """
    keys = list(state_dict)
    if keys and all(k.startswith("module.") for k in keys):
        return {k[len("module.") :]: v for k, v in state_dict.items()}
    return dict(state_dict)


def extract_state_dict(
    checkpoint: Any, container_keys: tuple[str, ...] = ("model_state", "state_dict")
) -> dict[str, torch.Tensor]:
    """Find the state_dict in a loaded checkpoint and strip ``module.`` prefixes.

    Args:
        checkpoint: what :func:`safe_torch_load` returned.
        container_keys: keys under which a training script may have nested the weights, tried
            in order (AMM-FuseNet: ``model_state``; LandFuse files: ``state_dict``).

    Returns:
        name → tensor.

    Raises:
        WeightsMismatchError: when no state_dict can be found.
    """
    obj = checkpoint
    if isinstance(obj, Mapping) and obj.get("format") == "landfuse-checkpoint":
        raise WeightsMismatchError(
            "This is a LandFuse training checkpoint (to resume a training run), not weights to "
            "map with: choose model.pt in the training's output folder (the folder above "
            "checkpoints/)."
        )
    if isinstance(obj, Mapping):
        for key in container_keys:
            inner = obj.get(key)
            if isinstance(inner, Mapping):
                obj = inner
                break
    if not isinstance(obj, Mapping) or not obj:
        raise WeightsMismatchError(
            "The checkpoint holds no state_dict (expected a dict of tensors, or one nested under "
            f"{' / '.join(container_keys)}). Check that it is a weights file."
        )
    non_tensors = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if non_tensors:
        raise WeightsMismatchError(
            "The checkpoint is not a plain state_dict: entries "
            f"{_preview([str(k) for k in non_tensors])} are not tensors. Check that it is a "
            "weights file."
        )
    return strip_module_prefix(obj)


def _preview(items: list[str]) -> str:
    shown = ", ".join(items[:_LIST_LIMIT])
    more = len(items) - _LIST_LIMIT
    return f"{shown}, ... ({more} more)" if more > 0 else shown


def load_state_dict_checked(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], what: str = "checkpoint"
) -> None:
    """Load a state_dict strictly, or raise one error that lists every problem.

    Args:
        model: the network to fill.
        state_dict: name → tensor.
        what: how to call the source in the message.

    Raises:
        WeightsMismatchError: listing missing, unexpected and mis-shaped keys.
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [
        (k, tuple(state_dict[k].shape), tuple(expected[k].shape))
        for k in expected
        if k in state_dict and tuple(state_dict[k].shape) != tuple(expected[k].shape)
    ]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s): {_preview(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s): {_preview(unexpected)}")
        if mismatched:
            shown = [f"{k} (file {list(a)} vs model {list(b)})" for k, a, b in mismatched]
            parts.append(f"{len(mismatched)} key(s) with another shape: {_preview(shown)}")
        raise WeightsMismatchError(
            f"The {what} does not fit {type(model).__name__}: " + "; ".join(parts) + ". Check "
            "that the file was written for this model (architecture, encoder, band counts, "
            "number of classes).",
            missing=missing,
            unexpected=unexpected,
            mismatched=mismatched,
        )
    model.load_state_dict(state_dict, strict=True)
