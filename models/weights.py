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

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping, Union, cast

import torch
from torch import nn

from .architectures import build_architecture, get_architecture
from .errors import (
    CorruptWeightsError,
    ModelConfigError,
    WeightsMismatchError,
)
from .registry import get_model_spec
from .state_dicts import (
    FORMAT_NAME,
    _preview,
    check_weights_path,
    extract_state_dict,
    load_state_dict_checked,
    safe_torch_load,
    sidecar_path,
    strip_module_prefix,
)
from .weights_info import FORMAT_VERSION, WeightsMetadata, _jsonable

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

#: Warning code passed to ``warn`` when a file's metadata is covered by no checksum.
UNVERIFIED = "weights_unverified"
_HASH_CHUNK = 1 << 20
_LIST_LIMIT = 10


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
        get_architecture(spec.architecture).load_reference(model, obj)
        metadata = WeightsMetadata.for_spec(
            spec,
            config=_model_config(model),
            training={"source": "published reference checkpoint", "file": p.name},
        )
    model.to(device)
    model.eval()
    return model, metadata, sha
