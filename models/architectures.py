"""One row per network architecture: builder, configuration, reference loader, training recipe.

Everything that differs between AMM-FuseNet and AMFNet is a field of :class:`Architecture`, so
no other module asks ``if architecture == ...``: the registry builds configurations here, the
weights module loads reference checkpoints here, training takes the published recipe here and
the memory estimate the default encoder. A new network is one module (the ``nn.Module`` with its
``load_official_state_dict``) plus one row in :data:`ARCHITECTURES`.

The network modules are imported only when a row's builder or loader is called, so the QGIS side
reads the table without torch.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping

from .errors import ModelConfigError
from .tables import Table

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch

    from .registry import ModelSpec

__all__ = [
    "ARCHITECTURES",
    "Architecture",
    "build_architecture",
    "get_architecture",
    "register_architecture",
    "unregister_architecture",
]


def _branch_channels(spec: ModelSpec) -> dict[str, Any]:
    """AMM-FuseNet: one encoder per modality, at the entry's output stride."""
    return {"in_channels": list(spec.in_channels), "output_stride": spec.output_stride}


def _shared_channels(spec: ModelSpec) -> dict[str, Any]:
    """AMFNet: one shared (Siamese) encoder for both dates of the single modality."""
    return {"in_channels": spec.in_channels[0]}


@dataclass(frozen=True)
class Architecture:
    """A network family.

    Attributes:
        name: Registry key ("amm_fusenet", "amfnet").
        title: Human name.
        module: Module that holds the network: a name under ``landfuse.models``, or the
            absolute module path of a network defined elsewhere.
        class_name: The ``nn.Module`` class in it.
        task: The task it serves ("landcover", "change").
        modalities: ``(fewest, most)`` modalities an entry of it may take.
        default_encoder: The encoder when a configuration names none.
        input_config: Entry → the configuration keys that depend on its inputs.
        output_strides: The output strides a configuration may choose (empty: fixed).
        recipe: The published training recipe, as ``TrainingRecipe`` field values
            (``core.training`` builds the recipe from them; fields not given keep their defaults).
        paper: Citation.
    """

    name: str
    title: str
    module: str
    class_name: str
    task: str
    modalities: tuple[int, int]
    default_encoder: str
    input_config: Callable[[ModelSpec], dict[str, Any]]
    output_strides: tuple[int, ...] = ()
    recipe: Mapping[str, Any] = field(default_factory=dict)
    paper: str = ""

    def _module(self) -> Any:
        if "." not in self.module:  # a network of this package, else a top-level module
            inside = f"{__package__}.{self.module}"
            try:
                return importlib.import_module(inside)
            except ModuleNotFoundError as exc:
                if exc.name != inside:
                    raise
        return importlib.import_module(self.module)

    def network_class(self) -> Any:
        """The ``nn.Module`` class (imports torch and the network module)."""
        return getattr(self._module(), self.class_name)

    def build(self, config: Mapping[str, Any]) -> torch.nn.Module:
        """A fresh, randomly initialised network from its configuration keywords."""
        return self.network_class()(**dict(config))

    def load_reference(self, model: torch.nn.Module, checkpoint: Any) -> None:
        """Load a checkpoint as the published code writes it into ``model``."""
        self._module().load_official_state_dict(model, checkpoint)

    def check_modalities(self, entry: str, count: int) -> None:
        """Refuse an entry with a number of modalities the network cannot take."""
        fewest, most = self.modalities
        if not fewest <= count <= most:
            wanted = str(fewest) if fewest == most else f"{fewest} to {most}"
            raise ModelConfigError(
                f"{entry}: {self.title} takes {wanted} modalities, the entry gives {count}."
            )


_AMM_PAPER = (
    "Ma, W.; Karakuş, O.; Rosin, P.L. AMM-FuseNet: Attention-Based Multi-Modal Image Fusion "
    "Network for Land Cover Mapping. Remote Sensing 2022, 14(18), 4458."
)
_AMF_PAPER = (
    "Zhan, Z. et al. AMFNet: Attention-Guided Multi-Scale Fusion Network for Bi-Temporal "
    "Change Detection in Remote Sensing Images. Remote Sensing 2024, 16(10), 1765."
)

_ROWS: dict[str, Architecture] = {
    "amm_fusenet": Architecture(
        name="amm_fusenet",
        title="AMM-FuseNet",
        module="amm_fusenet",
        class_name="AMMFuseNet",
        task="landcover",
        modalities=(2, 8),
        default_encoder="resnet50",
        input_config=_branch_channels,
        output_strides=(8, 16),
        # NETWORKS.md §2, "Published training recipe": the TrainingRecipe defaults.
        recipe={},
        paper=_AMM_PAPER,
    ),
    "amfnet": Architecture(
        name="amfnet",
        title="AMFNet",
        module="amfnet",
        class_name="AMFNet",
        task="change",
        modalities=(1, 1),
        default_encoder="resnet34",
        input_config=_shared_channels,
        # NETWORKS.md §3: Adam 1e-4, poly per epoch, BCE on one-hot with deep supervision.
        recipe={
            "optimizer": "adam",
            "learning_rate": 1e-4,
            "momentum": 0.0,
            "weight_decay": 0.0,
            "poly_power": 0.9,
            "schedule_unit": "epoch",
            "loss": "bce_one_hot",
            "output_weights": (1.0, 0.5, 0.4, 0.3),
            "bn_momentum": None,
            "batch_size": 32,
            "epochs": 200,
            "max_iterations": None,
        },
        paper=_AMF_PAPER,
    ),
}
_TABLE: Table[Architecture] = Table("architecture", _ROWS.items())
#: The rows, read-only for everyone but :func:`register_architecture`.
ARCHITECTURES: Mapping[str, Architecture] = _TABLE.view


def register_architecture(row: Architecture) -> Architecture:
    """Add a network family (a plugin's own, or a test's); registry entries may then use it.

    Raises:
        ModelConfigError: when a row of that name exists.
    """
    return _TABLE.add(row.name, row)


def unregister_architecture(name: str) -> None:
    """Remove a row added with :func:`register_architecture` (the built-in ones stay)."""
    _TABLE.remove(name)


def get_architecture(name: str) -> Architecture:
    """The row of architecture ``name``.

    Raises:
        ModelConfigError: for an unknown name; the message lists the known ones.
    """
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise ModelConfigError(
            f"Unknown architecture {name!r}; use one of {', '.join(ARCHITECTURES)}."
        ) from None


def build_architecture(architecture: str, config: Mapping[str, Any]) -> torch.nn.Module:
    """Build a fresh, randomly initialised network from its architecture name and config.

    Args:
        architecture: A key of :data:`ARCHITECTURES` ("amm_fusenet", "amfnet").
        config: keyword arguments of the network class (what its ``config`` property returns,
            e.g. ``{"in_channels": [13, 2], "num_classes": 7, "output_stride": 16,
            "encoder": "resnet50"}``).

    Returns:
        The network (in train mode, as torch builds modules).

    Raises:
        ModelConfigError: for an unknown architecture or an invalid configuration.
    """
    return get_architecture(architecture).build(config)
