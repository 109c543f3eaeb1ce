"""Weights files: the project's own format, published reference checkpoints, safe loading.

A LandFuse weights file (DESIGN.md §4) is a torch file holding one plain dict::

    {"format": "landfuse-weights", "format_version": 1,
     "metadata_json": "<WeightsMetadata as a JSON string>",
     "tensors_sha256": "<sha256 over the state_dict tensors>",
     "state_dict": {name: tensor, ...}}

Only strings, ints and tensors are pickled, so it loads with ``torch.load(weights_only=True)``:
no arbitrary object is ever unpickled, and a file that would need one is refused with
:class:`UnsafeWeightsError` before anything in it runs. Beside it, ``<file>.json`` (the sidecar)
repeats the metadata and records the sha256 of the file, so that a changed or damaged file is
caught (:class:`CorruptWeightsError`); the embedded tensor digest catches damage even when the
sidecar is missing.

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
    "WeightsMetadata",
    "extract_state_dict",
    "file_sha256",
    "load_model",
    "load_state_dict_checked",
    "read_weights",
    "safe_torch_load",
    "save_weights",
    "sidecar_path",
    "strip_module_prefix",
    "tensors_sha256",
]

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

FORMAT_NAME = "landfuse-weights"
FORMAT_VERSION = 1
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
                format_version=int(data.get("format_version", FORMAT_VERSION)),
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
    p = Path(path)
    if not p.is_file():
        raise WeightsNotFoundError(f"Weights file not found: {p}. Check the path.")
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

_UNSAFE_MARKERS = (
    "Unsupported global",
    "not an allowed global",
    "Can only build",
    "Trying to call reduce",
    "Unsupported class",
)
_OPERAND_RE = re.compile(r"Unsupported operand (\d+)")
_PICKLE_OPCODES = {op.code: op.name for op in pickletools.opcodes}


def _first_line_with(text: str, markers: tuple[str, ...]) -> str:
    for line in text.splitlines():
        if any(m in line for m in markers):
            return line.strip()[:300]
    return ""


def _unsafe_reason(text: str) -> str:
    """Why the weights-only unpickler refused a file, when the refusal means "unsafe"; else ""."""
    reason = _first_line_with(text, _UNSAFE_MARKERS)
    if reason:
        return reason
    # "Unsupported operand N": a real pickle opcode that can build arbitrary objects (INST, OBJ,
    # EXT...) means an unsafe file; a byte that is no pickle opcode at all means garbage.
    match = _OPERAND_RE.search(text)
    if match and chr(int(match.group(1))) in _PICKLE_OPCODES:
        return f"pickle opcode {_PICKLE_OPCODES[chr(int(match.group(1)))]} is not allowed"
    return ""


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
    p = Path(path)
    if not p.is_file():
        raise WeightsNotFoundError(f"Weights file not found: {p}. Check the path.")
    if p.stat().st_size == 0:
        raise CorruptWeightsError(f"Weights file {p} is empty. Copy or export it again.")
    try:
        with _stand_ins():
            return torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        offending = _unsafe_reason(text)
        if offending:
            raise UnsafeWeightsError(
                f"Refusing to load {p.name}: it holds pickled Python objects that could run code "
                f"when loaded ({offending}). Only plain state_dicts are accepted; if you trust "
                "the file, re-save its state_dict (torch.save(model.state_dict(), ...)) and load "
                "that."
            ) from None
        raise CorruptWeightsError(
            f"Weights file {p.name} is damaged or not a torch file ({_short(text)}). "
            "Copy or export it again."
        ) from exc
    except (RuntimeError, EOFError, ValueError, OSError, zipfile.BadZipFile, KeyError) as exc:
        raise CorruptWeightsError(
            f"Weights file {p.name} is truncated, damaged or not a torch file ({_short(str(exc))})."
            " Copy or export it again."
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
    payload = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "metadata_json": json.dumps(meta, sort_keys=True),
        "tensors_sha256": tensors_sha256(state_dict),
        "state_dict": state_dict,
    }
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=dest.name + ".", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    try:
        torch.save(payload, tmp_name)
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
        "metadata": meta,
    }
    side = sidecar_path(dest)
    side_tmp = side.with_name(side.name + ".tmp")
    side_tmp.write_text(json.dumps(sidecar, indent=2, sort_keys=True), encoding="utf-8")
    os.replace(side_tmp, side)
    logger.info("Saved weights for %s to %s (sha256 %s).", metadata.model_name, dest, sha)
    return sha


def _check_sidecar(path: Path, sha: str) -> None:
    side = sidecar_path(path)
    if not side.is_file():
        return
    try:
        recorded = json.loads(side.read_text(encoding="utf-8")).get("sha256")
    except (OSError, ValueError, AttributeError) as exc:
        raise CorruptWeightsError(
            f"The sidecar {side.name} is unreadable ({exc}). Delete it or export the weights again."
        ) from exc
    if recorded and recorded != sha:
        raise CorruptWeightsError(
            f"{path.name} does not match its sidecar: sha256 is {sha}, the sidecar records "
            f"{recorded}. The file was damaged or replaced; copy or export it again."
        )


def _is_project_file(obj: Any) -> bool:
    return isinstance(obj, Mapping) and obj.get("format") == FORMAT_NAME


def _parse_project_file(
    obj: Mapping[str, Any], path: Path
) -> tuple[dict[str, torch.Tensor], WeightsMetadata]:
    version = obj.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise WeightsMismatchError(
            f"{path.name} uses weights format version {version!r}; this LandFuse reads up to "
            f"{FORMAT_VERSION}. Update LandFuse."
        )
    try:
        meta_dict = json.loads(obj["metadata_json"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CorruptWeightsError(
            f"{path.name} has no readable metadata ({exc!r}). Export the weights again."
        ) from exc
    metadata = WeightsMetadata.from_dict(meta_dict)
    state_dict = obj.get("state_dict")
    if not isinstance(state_dict, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in state_dict.values()
    ):
        raise CorruptWeightsError(f"{path.name} holds no valid state_dict. Export it again.")
    recorded = obj.get("tensors_sha256")
    if recorded is not None and recorded != tensors_sha256(state_dict):
        raise CorruptWeightsError(
            f"The tensors in {path.name} do not match the digest recorded when it was written: "
            "the file is damaged. Copy or export it again."
        )
    return dict(state_dict), metadata


def read_weights(path: PathLike) -> tuple[dict[str, torch.Tensor], WeightsMetadata, str]:
    """Read and verify a LandFuse weights file.

    Args:
        path: the file.

    Returns:
        ``(state_dict, metadata, sha256 of the file)``.

    Raises:
        WeightsNotFoundError: the file does not exist.
        UnsafeWeightsError: the file would need unpickling arbitrary objects.
        CorruptWeightsError: truncated, unreadable, or sha256 / digest mismatch.
        WeightsMismatchError: the file is not a LandFuse weights file (e.g. a published
            reference checkpoint: use :func:`load_model` with ``model_name``).
    """
    p = Path(path)
    sha = file_sha256(p)
    _check_sidecar(p, sha)
    obj = safe_torch_load(p)
    if not _is_project_file(obj):
        raise WeightsMismatchError(
            f"{p.name} is not a LandFuse weights file (no LandFuse metadata). If it is a "
            "published reference checkpoint, load it with load_model(path, model_name=...)."
        )
    state_dict, metadata = _parse_project_file(obj, p)
    return state_dict, metadata, sha


def load_model(
    path: PathLike, model_name: str | None = None, device: str | torch.device = "cpu"
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

    Returns:
        ``(model in eval mode, metadata, sha256 of the file)``.

    Raises:
        WeightsNotFoundError, UnsafeWeightsError, CorruptWeightsError: see :func:`read_weights`.
        WeightsMismatchError: the file is for another model, or its tensors do not fit.
        UnknownModelError: ``model_name`` is not in the registry.
    """
    p = Path(path)
    sha = file_sha256(p)
    _check_sidecar(p, sha)
    obj = safe_torch_load(p)
    if _is_project_file(obj):
        state_dict, metadata = _parse_project_file(obj, p)
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
