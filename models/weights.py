"""Weights files: the project's own format, published reference checkpoints, safe loading.

A LandFuse weights file (DESIGN.md §4) is a torch file holding one plain dict::

    {"format": "landfuse-weights", "format_version": 2,
     "metadata_json": "<WeightsMetadata as a JSON string>",
     "metadata_sha256": "<sha256 of metadata_json>",
     "tensors_sha256": "<sha256 over the state_dict tensors>",
     "state_dict": {name: tensor, ...}}

Only strings, ints and tensors are pickled, so it loads with ``torch.load(weights_only=True)``:
no arbitrary object is ever unpickled, and a file that would need one is refused with
:class:`UnsafeWeightsError` before anything in it runs. Beside it, ``<file>.json`` (the sidecar)
repeats the metadata and records the sha256 of the file, so that a changed or damaged file is
caught (:class:`CorruptWeightsError`); the embedded digests catch damage even when the sidecar is
missing: ``tensors_sha256`` covers the tensors, ``metadata_sha256`` (format 2) the metadata, so an
edited class name or normalisation statistic is refused rather than silently used. A sidecar
whose metadata or tensor digest disagrees with the file's is refused too, naming the fields that
differ. A format-1 file (no metadata digest) without its sidecar still loads, with a
:data:`UNVERIFIED` warning through the ``warn`` callback.

Whether a refused pickle is *unsafe* (it asks for Python objects that could run code) or
*damaged* (it is no pickle at all) is decided by parsing its opcodes with :mod:`pickletools`,
never by the wording of torch's message, which changes between releases.

Published reference checkpoints (NETWORKS.md §2 and §3: AMM-FuseNet's dict with
``model_state``, AMFNet's plain state_dict) carry no metadata; :func:`load_model` loads them when
told which registry model they belong to, through the network module's
``load_official_state_dict``.

This module imports torch and the registry (which is torch-free); the networks are imported only
when a model is built.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import pickle
import pickletools
import re
import struct
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Union, cast

import torch
from torch import nn

from .errors import (
    CorruptWeightsError,
    ModelConfigError,
    UnsafeWeightsError,
    WeightsError,
    WeightsMismatchError,
    WeightsNotFoundError,
)
from .registry import ClassSpec, ModalitySpec, ModelSpec, build_architecture, get_model_spec

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "UNVERIFIED",
    "WeightsMetadata",
    "check_weights_path",
    "extract_state_dict",
    "file_sha256",
    "load_model",
    "load_state_dict_checked",
    "metadata_sha256",
    "read_weights",
    "safe_torch_load",
    "save_weights",
    "sidecar_path",
    "strip_module_prefix",
    "tensors_sha256",
    "upgrade_weights",
]

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]
#: ``warn(code, message)``: how loading reports what the user must know but need not stop for.
WarnCallback = Callable[[str, str], None]

FORMAT_NAME = "landfuse-weights"
FORMAT_VERSION = 2
#: Warning code passed to ``warn`` when a file's metadata is covered by no checksum.
UNVERIFIED = "weights_unverified"
_HASH_CHUNK = 1 << 20
_LIST_LIMIT = 10


# ----------------------------------------------------------------------------------------------
# Metadata
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WeightsMetadata:
    """What a weights file says about itself.

    Attributes:
        model_name: registry key the weights were trained for.
        architecture: "amm_fusenet" or "amfnet".
        config: keyword arguments that rebuild the network (``model.config``).
        modalities: per modality: key, bands (names, units) and normalisation.
        classes: the class table (values, names, colours).
        training: provenance (data, epochs, seed, date, command...), free-form JSON.
        metrics: accuracy figures, free-form JSON.
        format_version: the file format version.
    """

    model_name: str
    architecture: str
    config: dict[str, Any]
    modalities: tuple[ModalitySpec, ...]
    classes: tuple[ClassSpec, ...]
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    @classmethod
    def for_spec(
        cls,
        spec: ModelSpec,
        config: Mapping[str, Any] | None = None,
        training: Mapping[str, Any] | None = None,
        metrics: Mapping[str, Any] | None = None,
        classes: tuple[ClassSpec, ...] | None = None,
    ) -> WeightsMetadata:
        """Metadata for a model built from a registry entry.

        Args:
            spec: the registry entry.
            config: the network config (default: the entry's).
            training: provenance.
            metrics: accuracy figures.
            classes: the class table when fine-tuned to another legend (default: the entry's).

        Returns:
            The metadata.
        """
        return cls(
            model_name=spec.name,
            architecture=spec.architecture,
            config=dict(config) if config is not None else spec.model_config(),
            modalities=spec.modalities,
            classes=spec.classes if classes is None else tuple(classes),
            training=dict(training or {}),
            metrics=dict(metrics or {}),
        )

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {
            "format_version": self.format_version,
            "model_name": self.model_name,
            "architecture": self.architecture,
            "config": _jsonable(self.config),
            "modalities": [m.to_dict() for m in self.modalities],
            "classes": [c.to_dict() for c in self.classes],
            "training": _jsonable(self.training),
            "metrics": _jsonable(self.metrics),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WeightsMetadata:
        """Rebuild from :meth:`to_dict` output.

        Raises:
            CorruptWeightsError: when a required field is missing or malformed.
        """
        try:
            return cls(
                model_name=str(data["model_name"]),
                architecture=str(data["architecture"]),
                config=dict(data["config"]),
                modalities=tuple(ModalitySpec.from_dict(m) for m in data["modalities"]),
                classes=tuple(ClassSpec.from_dict(c) for c in data["classes"]),
                training=dict(data.get("training", {})),
                metrics=dict(data.get("metrics", {})),
                format_version=int(data.get("format_version", 1)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptWeightsError(
                f"The weights metadata is incomplete or malformed ({exc!r}); the file was not "
                "written by LandFuse or was edited. Re-export the weights."
            ) from exc


def _jsonable(value: Any) -> Any:
    """Round-trip through JSON so that tuples become lists and bad types fail early."""
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError) as exc:
        raise ModelConfigError(
            f"Weights metadata must be JSON-serialisable (numbers, strings, lists, dicts): {exc}"
        ) from exc


# ----------------------------------------------------------------------------------------------
# Hashes
# ----------------------------------------------------------------------------------------------


def file_sha256(path: PathLike) -> str:
    """sha256 of a file, hex.

    Args:
        path: the file.

    Returns:
        64 hex characters.

    Raises:
        WeightsNotFoundError: when the file does not exist.
    """
    p = check_weights_path(path)
    digest = hashlib.sha256()
    with p.open("rb") as fh:
        for chunk in iter(lambda: fh.read(_HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def tensors_sha256(state_dict: Mapping[str, torch.Tensor]) -> str:
    """sha256 over a state_dict's names, dtypes, shapes and bytes (in sorted key order).

    Args:
        state_dict: name → tensor.

    Returns:
        64 hex characters.
    """
    digest = hashlib.sha256()
    for key in sorted(state_dict):
        t = state_dict[key].detach().to("cpu").contiguous()
        digest.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        if t.numel():
            # A byte view works for every dtype (bf16 included) without a numpy dtype for it.
            digest.update(memoryview(cast(Any, t.reshape(-1).view(torch.uint8).numpy())))
    return digest.hexdigest()


def metadata_sha256(metadata_json: str) -> str:
    """sha256 of the metadata JSON string as stored in the file (UTF-8), hex."""
    return hashlib.sha256(metadata_json.encode("utf-8")).hexdigest()


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


# ----------------------------------------------------------------------------------------------
# Project weights files
# ----------------------------------------------------------------------------------------------


def _model_config(model: nn.Module) -> dict[str, Any] | None:
    config = getattr(model, "config", None)
    return dict(config) if isinstance(config, Mapping) else None


def save_weights(path: PathLike, model: nn.Module, metadata: WeightsMetadata) -> str:
    """Write a LandFuse weights file and its JSON sidecar.

    The file is written to a temporary name in the same folder and renamed at the end, so an
    interrupted save never leaves a half-written file under the final name.

    Args:
        path: destination (``.pt`` by convention); the sidecar is ``<path>.json``.
        model: the network (any device; tensors are saved on the CPU).
        metadata: what the file says about itself.

    Returns:
        The sha256 of the written file (also recorded in the sidecar).

    Raises:
        WeightsMismatchError: when the metadata does not describe the model (config or class
            count differ).
        ModelConfigError: when the metadata is not JSON-serialisable.
    """
    meta = metadata.to_dict()
    model_config = _model_config(model)
    if model_config is not None and _jsonable(model_config) != meta["config"]:
        raise WeightsMismatchError(
            f"The metadata config {meta['config']} does not describe this model "
            f"({model_config}). Pass WeightsMetadata(config=model.config, ...)."
        )
    n_classes = meta["config"].get("num_classes")
    if n_classes is not None and n_classes != len(metadata.classes):
        raise WeightsMismatchError(
            f"The metadata lists {len(metadata.classes)} classes but the model has {n_classes} "
            "outputs. Give one ClassSpec per output."
        )
    state_dict = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    sha = _write_weights(Path(path), state_dict, meta)
    logger.info("Saved weights for %s to %s (sha256 %s).", metadata.model_name, path, sha)
    return sha


def _write_weights(dest: Path, state_dict: dict[str, torch.Tensor], meta: dict[str, Any]) -> str:
    """Write the file (temporary name, then rename) and its sidecar; return the file's sha256."""
    meta = {**meta, "format_version": FORMAT_VERSION}
    metadata_json = json.dumps(meta, sort_keys=True)
    payload = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "metadata_json": metadata_json,
        "metadata_sha256": metadata_sha256(metadata_json),
        "tensors_sha256": tensors_sha256(state_dict),
        "state_dict": state_dict,
    }
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=dest.name + ".", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    try:
        torch.save(payload, tmp_name)
        os.chmod(tmp_name, _created_file_mode())  # mkstemp makes 0600; a saved file is shared
        os.replace(tmp_name, dest)
    finally:
        if os.path.exists(tmp_name):
            os.remove(tmp_name)
    sha = file_sha256(dest)
    sidecar = {
        "format": FORMAT_NAME,
        "file": dest.name,
        "sha256": sha,
        "tensors_sha256": payload["tensors_sha256"],
        "metadata_sha256": payload["metadata_sha256"],
        "metadata": meta,
    }
    side = sidecar_path(dest)
    side_tmp = side.with_name(side.name + ".tmp")
    side_tmp.write_text(json.dumps(sidecar, indent=2, sort_keys=True), encoding="utf-8")
    os.replace(side_tmp, side)
    return sha


def _created_file_mode() -> int:
    """The mode ``open()`` would give a new file under the current umask."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def upgrade_weights(path: PathLike, dest: PathLike | None = None) -> str:
    """Re-save a verified LandFuse weights file in the current format (same tensors, metadata).

    Args:
        path: a LandFuse weights file (an older format one: it is verified first, through its
            sidecar when it has one).
        dest: where to write (default: over ``path``, with its sidecar).

    Returns:
        The sha256 of the written file.

    Raises:
        The errors of :func:`read_weights`.
    """
    state_dict, metadata, _ = read_weights(path)
    return _write_weights(Path(dest or path), state_dict, metadata.to_dict())


def _read_sidecar(path: Path) -> dict[str, Any] | None:
    """The sidecar of ``path`` as a dict, None when there is none."""
    side = sidecar_path(path)
    if not side.is_file():
        return None
    try:
        data = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CorruptWeightsError(
            f"The sidecar {side.name} is unreadable ({exc}). Delete it or export the weights again."
        ) from exc
    if not isinstance(data, dict):
        raise CorruptWeightsError(
            f"The sidecar {side.name} is not a LandFuse sidecar. Delete it or export the weights "
            "again."
        )
    return data


def _check_sidecar(path: Path, sha: str) -> dict[str, Any] | None:
    """Compare the file's sha256 with its sidecar's; return the sidecar (None when absent)."""
    sidecar = _read_sidecar(path)
    recorded = sidecar.get("sha256") if sidecar else None
    if recorded and recorded != sha:
        raise CorruptWeightsError(
            f"{path.name} does not match its sidecar: sha256 is {sha}, the sidecar records "
            f"{recorded}. The file was damaged or replaced; copy or export it again."
        )
    return sidecar


def _differences(a: Any, b: Any, where: str = "") -> list[str]:
    """Paths (``classes[2].name``) at which two JSON values differ."""
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        out: list[str] = []
        for key in sorted(set(a) | set(b), key=str):
            sub = f"{where}.{key}" if where else str(key)
            out += _differences(a.get(key), b.get(key), sub) if key in a and key in b else [sub]
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        out = []
        for i, (x, y) in enumerate(zip(a, b)):
            out += _differences(x, y, f"{where}[{i}]")
        return out
    return [] if a == b else [where or "(all)"]


def _compare_with_sidecar(
    path: Path, sidecar: Mapping[str, Any], meta_dict: Mapping[str, Any], tensors_digest: str
) -> None:
    """Refuse a sidecar whose metadata or tensor digest disagrees with the file's own."""
    side = sidecar_path(path).name
    recorded_tensors = sidecar.get("tensors_sha256")
    if recorded_tensors and recorded_tensors != tensors_digest:
        raise CorruptWeightsError(
            f"{side} records other tensors than {path.name} holds (tensors_sha256 differs): the "
            "two do not belong together. Copy the weights file and its sidecar again, together."
        )
    recorded_meta = sidecar.get("metadata")
    if isinstance(recorded_meta, Mapping):
        diff = _differences(_jsonable(dict(meta_dict)), _jsonable(dict(recorded_meta)))
        if diff:
            raise CorruptWeightsError(
                f"{side} disagrees with the metadata inside {path.name} on {_preview(diff)}: one "
                "of the two was edited after the weights were written, so LandFuse cannot tell "
                "which class names, bands or normalisation are right. Restore the original pair, "
                "or delete the sidecar to use the file's own metadata."
            )


def _is_project_file(obj: Any) -> bool:
    return isinstance(obj, Mapping) and obj.get("format") == FORMAT_NAME


def _parse_project_file(
    obj: Mapping[str, Any],
    path: Path,
    sidecar: Mapping[str, Any] | None = None,
    warn: WarnCallback | None = None,
) -> tuple[dict[str, torch.Tensor], WeightsMetadata]:
    version = obj.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise WeightsMismatchError(
            f"{path.name} uses weights format version {version!r}; this LandFuse reads up to "
            f"{FORMAT_VERSION}. Update LandFuse."
        )
    metadata_json = obj.get("metadata_json")
    if not isinstance(metadata_json, str):
        raise CorruptWeightsError(
            f"{path.name} has no readable metadata. Export the weights again."
        )
    if version >= 2 and obj.get("metadata_sha256") != metadata_sha256(metadata_json):
        raise CorruptWeightsError(
            f"The metadata inside {path.name} (class names, bands, normalisation) does not match "
            "the digest recorded when the file was written: it was edited or damaged. Copy the "
            "original file again or export the weights again from the training run."
        )
    try:
        meta_dict = json.loads(metadata_json)
    except ValueError as exc:
        raise CorruptWeightsError(
            f"{path.name} has no readable metadata ({exc}). Export the weights again."
        ) from exc
    if not isinstance(meta_dict, dict):
        raise CorruptWeightsError(f"{path.name} has no readable metadata. Export it again.")
    metadata = WeightsMetadata.from_dict(meta_dict)
    state_dict = obj.get("state_dict")
    if not isinstance(state_dict, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in state_dict.values()
    ):
        raise CorruptWeightsError(f"{path.name} holds no valid state_dict. Export it again.")
    recorded = obj.get("tensors_sha256")
    digest = tensors_sha256(state_dict)
    if recorded is not None and recorded != digest:
        raise CorruptWeightsError(
            f"The tensors in {path.name} do not match the digest recorded when it was written: "
            "the file is damaged. Copy or export it again."
        )
    if sidecar is not None:
        _compare_with_sidecar(path, sidecar, meta_dict, digest)
    elif version < 2:
        message = (
            f"{path.name} is a format-{version} weights file without its sidecar "
            f"{sidecar_path(path).name}: its class names and normalisation are covered by no "
            "checksum, so an edit to them would go unnoticed. Keep the sidecar beside the file, "
            "or save the weights again with this LandFuse (format 2 carries its own digest)."
        )
        (warn or _log_warning)(UNVERIFIED, message)
    return dict(state_dict), metadata


def _log_warning(code: str, message: str) -> None:
    logger.warning("%s: %s", code, message)


def read_weights(
    path: PathLike, warn: WarnCallback | None = None
) -> tuple[dict[str, torch.Tensor], WeightsMetadata, str]:
    """Read and verify a LandFuse weights file.

    Args:
        path: the file.
        warn: ``warn(code, message)`` for findings that do not stop the load (an unverifiable
            format-1 file: :data:`UNVERIFIED`); default: log them.

    Returns:
        ``(state_dict, metadata, sha256 of the file)``.

    Raises:
        WeightsNotFoundError: the file does not exist (or is a folder, or a sidecar).
        UnsafeWeightsError: the file would need unpickling arbitrary objects.
        CorruptWeightsError: truncated, unreadable, sha256 / digest mismatch, or a sidecar that
            disagrees with the file.
        WeightsMismatchError: the file is not a LandFuse weights file (e.g. a published
            reference checkpoint: use :func:`load_model` with ``model_name``).
    """
    p = Path(path)
    sha = file_sha256(p)
    sidecar = _check_sidecar(p, sha)
    obj = safe_torch_load(p)
    if not _is_project_file(obj):
        raise WeightsMismatchError(
            f"{p.name} is not a LandFuse weights file (no LandFuse metadata). If it is a "
            "published reference checkpoint, load it with load_model(path, model_name=...)."
        )
    state_dict, metadata = _parse_project_file(obj, p, sidecar, warn)
    return state_dict, metadata, sha


def load_model(
    path: PathLike,
    model_name: str | None = None,
    device: str | torch.device = "cpu",
    warn: WarnCallback | None = None,
) -> tuple[nn.Module, WeightsMetadata, str]:
    """Build the network a weights file belongs to, load the weights, and switch to eval mode.

    A LandFuse weights file rebuilds its own network from its metadata. A published reference
    checkpoint (no metadata) needs ``model_name`` and goes through the network module's
    ``load_official_state_dict``; its metadata is then the registry entry's.

    Args:
        path: the weights file.
        model_name: the registry model the file must be for (required for reference
            checkpoints; for LandFuse files it is checked against the metadata).
        device: where to put the model.
        warn: ``warn(code, message)`` for findings that do not stop the load (see
            :func:`read_weights`).

    Returns:
        ``(model in eval mode, metadata, sha256 of the file)``.

    Raises:
        WeightsNotFoundError, UnsafeWeightsError, CorruptWeightsError: see :func:`read_weights`.
        WeightsMismatchError: the file is for another model, or its tensors do not fit.
        UnknownModelError: ``model_name`` is not in the registry.
    """
    p = Path(path)
    sha = file_sha256(p)
    sidecar = _check_sidecar(p, sha)
    obj = safe_torch_load(p)
    if _is_project_file(obj):
        state_dict, metadata = _parse_project_file(obj, p, sidecar, warn)
        if model_name is not None and model_name != metadata.model_name:
            raise WeightsMismatchError(
                f"{p.name} holds weights for {metadata.model_name!r}, not {model_name!r}. "
                "Pick the matching model or another weights file."
            )
        try:
            model = build_architecture(metadata.architecture, metadata.config)
        except (ModelConfigError, TypeError) as exc:
            raise WeightsMismatchError(
                f"{p.name} describes a network this LandFuse cannot build ({exc}). "
                "Update LandFuse or export the weights again."
            ) from exc
        load_state_dict_checked(model, state_dict, what=f"weights file {p.name}")
    else:
        if model_name is None:
            raise WeightsMismatchError(
                f"{p.name} carries no LandFuse metadata. If it is a published reference "
                "checkpoint, say which model it is for (model_name=...)."
            )
        spec = get_model_spec(model_name)
        if not isinstance(obj, Mapping):
            raise WeightsMismatchError(
                f"{p.name} holds a {type(obj).__name__}, not a state_dict (a dict of named "
                "tensors): it is no weights file for any network. Save the model with "
                "torch.save(model.state_dict(), ...) or give a LandFuse weights file."
            )
        model = spec.build()
        official = _official_loader(spec.architecture)
        official(model, obj)
        metadata = WeightsMetadata.for_spec(
            spec,
            config=_model_config(model),
            training={"source": "published reference checkpoint", "file": p.name},
        )
    model.to(device)
    model.eval()
    return model, metadata, sha


def _official_loader(architecture: str) -> Callable[[Any, Any], None]:
    if architecture == "amm_fusenet":
        from .amm_fusenet import load_official_state_dict as load_amm

        return load_amm
    if architecture == "amfnet":
        from .amfnet import load_official_state_dict as load_amf

        return load_amf
    raise WeightsError(f"No reference checkpoint loader for architecture {architecture!r}.")
