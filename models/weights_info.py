"""What a weights file says about itself, readable without torch.

:class:`WeightsMetadata` is the metadata a LandFuse weights file embeds and its JSON sidecar
repeats (model, configuration, modalities with band order and normalisation, classes,
provenance, metrics). :func:`peek_weights` reads it from the sidecar with the standard library
only, so the dock and Processing can let **the weights decide the model** (select its model and
class table, refuse a file of another model) before any run and without torch. The file itself
is verified when it is loaded (:mod:`landfuse.models.weights`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Union

from .errors import CorruptWeightsError, ModelConfigError
from .registry import ClassSpec, ModalitySpec, ModelSpec

__all__ = ["FORMAT_VERSION", "WeightsInfo", "WeightsMetadata", "peek_weights", "weights_summary"]

#: The ``format`` value of a LandFuse weights file (and of its JSON sidecar).
FORMAT_NAME = "landfuse-weights"

PathLike = Union[str, "os.PathLike[str]"]
FORMAT_VERSION = 2


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


@dataclass(frozen=True)
class WeightsInfo:
    """A weights file as its sidecar describes it (nothing verified yet).

    Attributes:
        path: The weights file.
        metadata: The metadata (None: the file has no readable LandFuse sidecar, e.g. a
            published reference checkpoint; its model must then be chosen).
        problem: Why the sidecar could not be read ("" when it could, or when there is none).
    """

    path: str
    metadata: Optional[WeightsMetadata]
    problem: str = ""

    @property
    def model_name(self) -> str:
        """The registry model the file is for ("" when unknown)."""
        return self.metadata.model_name if self.metadata is not None else ""

    @property
    def is_demo(self) -> bool:
        """Whether the file says it holds demo weights (trained on synthetic scenes only)."""
        return is_demo_training(self.metadata.training if self.metadata is not None else {})

    @property
    def note(self) -> str:
        """The one line the file gives about where it comes from."""
        if self.metadata is None:
            return ""
        if self.is_demo:
            return "DEMO weights trained on synthetic scenes only: not for real imagery"
        for key in ("note", "data", "source"):
            value = self.metadata.training.get(key)
            if isinstance(value, dict):
                value = value.get("description")
            if isinstance(value, str) and value:
                return value
        return ""


def is_demo_training(training: Optional[Mapping[str, Any]]) -> bool:
    """Whether a weights file's (or a run report's) training record marks demo weights."""
    demo = (training or {}).get("demo")
    return isinstance(demo, dict) and bool(demo.get("demo_weights"))


#: What a layer made with demo weights says in its name.
DEMO_LABEL = "DEMO weights: not for real imagery"


def peek_weights(path: PathLike) -> WeightsInfo:
    """Read the sidecar of a weights file (standard library only; the file is not opened).

    Args:
        path: The weights file (``<path>.json`` is its sidecar).

    Returns:
        What the sidecar says; ``metadata`` None when there is no sidecar or it is unreadable
        (``problem`` says which).
    """
    text = os.fspath(path)
    side = Path(text + ".json")
    if not side.is_file():
        return WeightsInfo(text, None)
    try:
        data = json.loads(side.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or data.get("format") not in (None, FORMAT_NAME):
            return WeightsInfo(text, None, f"{side.name} is not a LandFuse sidecar")
        return WeightsInfo(text, WeightsMetadata.from_dict(data.get("metadata") or {}))
    except (OSError, ValueError, CorruptWeightsError) as exc:
        return WeightsInfo(text, None, f"{side.name} is unreadable ({exc})")


def weights_summary(path: PathLike) -> str:
    """One line about a weights file from its sidecar, for model cards and logs."""
    text = os.fspath(path) if path else ""
    if not text:
        return ""
    name = Path(text).name
    if not os.path.isfile(text):
        return f"file not found: {text}"
    info = peek_weights(text)
    if info.metadata is None:
        if info.problem:
            return f"{name} (sidecar unreadable)"
        return f"{name} (no sidecar: a published checkpoint is assumed)"
    summary = f"{name}: {info.model_name or '?'}"
    encoder = info.metadata.config.get("encoder")
    if encoder:
        summary += f" ({encoder} encoder)"
    return f"{summary}; {info.note}" if info.note else summary


def mismatch_message(path: PathLike, named: str, asked: str) -> str:
    """What every surface says when a weights file is for another model than the chosen one."""
    return (
        f"{Path(os.fspath(path)).name} holds weights for {named!r}, not {asked!r}: pick the "
        f"matching model ({named}), or another weights file trained for {asked}."
    )


def trained_tile(metadata: Any) -> Optional[int]:
    """The chip size weights were trained on (their metadata's ``training.chip_size``): the
    default tile when mapping with them, since networks with image pooling (AMM-FuseNet's
    DenseASPP) see a tile's context and score as validated only at that size."""
    training = getattr(metadata, "training", None) or {}
    size = training.get("chip_size") if isinstance(training, dict) else None
    return int(size) if isinstance(size, int) and size >= 32 else None
