"""The model registry: one read-only entry per model the plugin offers.

The dock's model list and layer slots, the Processing parameters, the command line's flags and
the tests all iterate this registry (DESIGN.md §4). An entry names its architecture (a row of
:mod:`~landfuse.models.architectures`), its modalities (bands taken from a
:mod:`~landfuse.models.sensors` table, with their normalisation) and its classes (a
:mod:`~landfuse.models.legends` table): a new model of an existing architecture is one entry
here.

This module imports only the standard library at import time: the QGIS side reads the metadata
(bands, classes, colours, tile size) without torch. :meth:`ModelSpec.build` imports torch and the
network lazily.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

from .architectures import ARCHITECTURES as _ARCHITECTURE_ROWS
from .architectures import build_architecture, get_architecture
from .errors import ModelConfigError, UnknownModelError
from .legends import CHANGE_CLASSES, DFC20_CLASSES, HUNAN_CLASSES, POTSDAM_CLASSES
from .sensors import DEM, DSM, RGB, RGBNIR, SENTINEL1_GRD, SENTINEL2_L1C
from .specs import (
    NORMALISATION_MODES,
    RESAMPLING_MODES,
    BandSpec,
    ClassSpec,
    ModalitySpec,
    NormalisationSpec,
)
from .tables import Table

if TYPE_CHECKING:  # pragma: no cover - typing only, torch is imported lazily
    import torch

__all__ = [
    "ARCHITECTURES",
    "NORMALISATION_MODES",
    "PUBLISHED_WIDTH",
    "RESAMPLING_MODES",
    "TASKS",
    "BandSpec",
    "ClassSpec",
    "ModalitySpec",
    "ModelSpec",
    "NormalisationSpec",
    "build_architecture",
    "get_model_spec",
    "list_model_specs",
    "model_names",
    "register_model",
    "unregister_model",
]

#: The tasks the entries serve, in the order the surfaces show them.
TASKS: tuple[str, ...] = tuple(dict.fromkeys(a.task for a in _ARCHITECTURE_ROWS.values()))
#: Channel width of the published networks (torchvision's ResNet stem); lite entries use less.
PUBLISHED_WIDTH = 64
ARCHITECTURES: tuple[str, ...] = tuple(_ARCHITECTURE_ROWS)


@dataclass(frozen=True)
class ModelSpec:
    """A read-only registry entry: everything the plugin needs to know about one model.

    Attributes:
        name: registry key, e.g. "amm_fusenet_s2_s1_hunan".
        title: human title for the model pickers.
        task: "landcover" or "change".
        architecture: "amm_fusenet" or "amfnet".
        modalities: landcover: one per branch, in branch order; change: exactly one (both dates).
        classes: output classes, values 0..n-1 in order.
        tile_size: default tile edge in pixels (a multiple of 32).
        output_stride: AMM-FuseNet 16 or 8; AMFNet 32 (input sizes must be multiples of it for
            AMFNet; 16 is safe for AMM-FuseNet at either stride).
        encoder: "resnet50", "resnet34" or "resnet18".
        paper: citation.
        weights_note: where weights come from (no download exists).
        width: channel width of the network (``PUBLISHED_WIDTH`` = 64 for the papers' networks;
            8 to 32 for LandFuse's lite CPU variants, a multiple of 8).

    Raises:
        ModelConfigError: when the entry is inconsistent (checked when it is created).
    """

    name: str
    title: str
    task: str
    architecture: str
    modalities: tuple[ModalitySpec, ...]
    classes: tuple[ClassSpec, ...]
    tile_size: int
    output_stride: int
    encoder: str
    paper: str
    weights_note: str
    width: int = PUBLISHED_WIDTH

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ModelConfigError(f"{self.name}: task must be one of {', '.join(TASKS)}.")
        if self.architecture not in _ARCHITECTURE_ROWS:
            raise ModelConfigError(
                f"{self.name}: architecture must be one of {', '.join(_ARCHITECTURE_ROWS)}."
            )
        row = get_architecture(self.architecture)
        if row.task != self.task:
            raise ModelConfigError(
                f"{self.name}: {row.title} is a {row.task} network, not a {self.task} one."
            )
        row.check_modalities(self.name, len(self.modalities))
        if [c.value for c in self.classes] != list(range(len(self.classes))):
            raise ModelConfigError(f"{self.name}: class values must be 0..n-1 in order.")
        if self.tile_size <= 0 or self.tile_size % 32:
            raise ModelConfigError(f"{self.name}: tile_size must be a positive multiple of 32.")
        if isinstance(self.width, bool) or self.width < 8 or self.width % 8:
            raise ModelConfigError(f"{self.name}: width must be a positive multiple of 8.")

    @property
    def num_classes(self) -> int:
        """Number of output classes."""
        return len(self.classes)

    @property
    def in_channels(self) -> tuple[int, ...]:
        """Band count of each modality, in order."""
        return tuple(len(m.bands) for m in self.modalities)

    def band_count(self, modality_index: int) -> int:
        """Number of bands of one modality.

        Args:
            modality_index: index into :attr:`modalities`.

        Returns:
            The band count.

        Raises:
            ModelConfigError: when the index is out of range.
        """
        if not 0 <= modality_index < len(self.modalities):
            raise ModelConfigError(
                f"{self.name} has {len(self.modalities)} modalities; "
                f"index {modality_index} is out of range."
            )
        return len(self.modalities[modality_index].bands)

    def model_config(self, num_classes: int | None = None) -> dict[str, Any]:
        """Keyword arguments that build this entry's network (see :func:`build_architecture`).

        Args:
            num_classes: override the class count (fine-tuning to another legend).

        Returns:
            A JSON-ready dict.
        """
        n = self.num_classes if num_classes is None else int(num_classes)
        config: dict[str, Any] = {"num_classes": n, "encoder": self.encoder}
        config.update(get_architecture(self.architecture).input_config(self))
        # Only lite entries carry a width, as the networks' own ``config`` does.
        if self.width != PUBLISHED_WIDTH:
            config["width"] = self.width
        return config

    def build(self, num_classes: int | None = None) -> torch.nn.Module:
        """Build a fresh, randomly initialised network for this entry.

        Args:
            num_classes: override the class count.

        Returns:
            The network (train mode; call ``eval()`` before inference).
        """
        return build_architecture(self.architecture, self.model_config(num_classes))


# ----------------------------------------------------------------------------------------------
# Modalities: sensor bands with the normalisation each published setup uses
# ----------------------------------------------------------------------------------------------

# Published AMM-FuseNet preprocessing (NETWORKS.md §2): per-tile, per-band min-max.
_MINMAX = NormalisationSpec("minmax_per_tile")
# hunan2 DEM: (x - 18) / (1892 - 18), clipped to [0, 1] (NETWORKS.md §2).
_DEM_HUNAN = NormalisationSpec("fixed_bounds", lower=(18.0,), upper=(1892.0,))
# Fixed bounds as in the reference dfc20 readers: S2 clipped to 0..10000 and divided by 10000,
# S1 clipped to -25..0 dB and mapped to [0, 1]. No tile dependence, so no seams.
_S1_BOUNDS = NormalisationSpec("fixed_bounds", lower=(-25.0, -25.0), upper=(0.0, 0.0))
_BYTE_SCALE = NormalisationSpec("scale", factor=1.0 / 255.0)

_S2_TITLE = "Sentinel-2 L1C, 13 bands"
_S1_TITLE = "Sentinel-1 GRD, VV + VH (dB)"
S2_MINMAX = SENTINEL2_L1C.modality("s2", _MINMAX, _S2_TITLE)
S1_MINMAX = SENTINEL1_GRD.modality("s1", _MINMAX, "Sentinel-1 GRD, VV + VH")
DEM_HUNAN = DEM.modality("dem", _DEM_HUNAN, "Digital elevation model")
S2_BOUNDS = SENTINEL2_L1C.modality("s2", SENTINEL2_L1C.bounds(), _S2_TITLE)
S1_BOUNDS = SENTINEL1_GRD.modality("s1", _S1_BOUNDS, _S1_TITLE)
# The default statistics of Sentinel-2 L1C (the sensor table's typical values): replace them
# with the statistics of your own training data when you train a model.
S2_STATS = SENTINEL2_L1C.modality("s2", SENTINEL2_L1C.statistics(), _S2_TITLE)

# ----------------------------------------------------------------------------------------------
# Entries
# ----------------------------------------------------------------------------------------------

_AMM_PAPER = get_architecture("amm_fusenet").paper
_AMF_PAPER = get_architecture("amfnet").paper

_AMM_REFERENCE_NOTE = (
    "No download exists. Train or fine-tune it with LandFuse, or load a checkpoint written by "
    "the reference code (oktaykarakus/ReSIF, AMM-FuseNet: a dict with 'model_state'), which "
    "expects the published preprocessing (per-tile min-max)."
)
_AMM_TRAIN_NOTE = (
    "No published model for this configuration: train it with LandFuse on your own labels."
)
_LITE_NOTE = (
    " LandFuse's lite CPU variant (ResNet-18 encoders, channel counts scaled by width / 64), "
    "not the paper's model; the bundled demo weights (demo/weights/, made by "
    "scripts/train_demo_weights.py) were trained on synthetic scenes only. Train it on your "
    "own labels for real use."
)

_ENTRIES: tuple[ModelSpec, ...] = (
    ModelSpec(
        name="amm_fusenet_s2_s1_hunan",
        title="AMM-FuseNet: Sentinel-2 + Sentinel-1, Hunan land cover (7 classes)",
        task="landcover",
        architecture="amm_fusenet",
        modalities=(S2_MINMAX, S1_MINMAX),
        classes=HUNAN_CLASSES,
        tile_size=256,
        output_stride=16,
        encoder="resnet50",
        paper=_AMM_PAPER,
        weights_note=_AMM_REFERENCE_NOTE,
    ),
    ModelSpec(
        name="amm_fusenet_s2_dem_hunan",
        title="AMM-FuseNet: Sentinel-2 + DEM, Hunan land cover (7 classes)",
        task="landcover",
        architecture="amm_fusenet",
        modalities=(S2_MINMAX, DEM_HUNAN),
        classes=HUNAN_CLASSES,
        tile_size=256,
        output_stride=16,
        encoder="resnet50",
        paper=_AMM_PAPER,
        weights_note=_AMM_REFERENCE_NOTE,
    ),
    ModelSpec(
        name="amm_fusenet_s2_s1_dem",
        title="AMM-FuseNet (3 branches): Sentinel-2 + Sentinel-1 + DEM, Hunan classes",
        task="landcover",
        architecture="amm_fusenet",
        modalities=(
            S2_BOUNDS,
            S1_BOUNDS,
            DEM_HUNAN,
        ),
        classes=HUNAN_CLASSES,
        tile_size=256,
        output_stride=16,
        encoder="resnet50",
        paper=_AMM_PAPER + " Generalised to three branches by LandFuse (NETWORKS.md §2).",
        weights_note=_AMM_TRAIN_NOTE,
    ),
    ModelSpec(
        name="amm_fusenet_s2_s1_dfc20",
        title="AMM-FuseNet: Sentinel-2 + Sentinel-1, DFC2020 land cover",
        task="landcover",
        architecture="amm_fusenet",
        modalities=(
            S2_BOUNDS,
            S1_BOUNDS,
        ),
        classes=DFC20_CLASSES,
        tile_size=256,
        output_stride=16,
        encoder="resnet50",
        paper=_AMM_PAPER,
        weights_note=(
            "No download exists. Train it with LandFuse, or load a reference checkpoint of the "
            "published dfc20 configuration (11 outputs)."
        ),
    ),
    ModelSpec(
        name="amm_fusenet_rgbir_dsm_potsdam",
        title="AMM-FuseNet: RGB-IR + DSM, ISPRS Potsdam (6 classes)",
        task="landcover",
        architecture="amm_fusenet",
        modalities=(
            RGBNIR.modality("rgbir", _BYTE_SCALE, "Aerial RGB + near infrared, 8 bit"),
            DSM.modality("dsm", _MINMAX, "Digital surface model"),
        ),
        classes=POTSDAM_CLASSES,
        tile_size=256,
        output_stride=16,
        encoder="resnet50",
        paper=_AMM_PAPER,
        weights_note=(
            "No download exists. Train it with LandFuse, or load a reference checkpoint of the "
            "published potsdam configuration (RGB-IR / 255, DSM per-tile min-max)."
        ),
    ),
    ModelSpec(
        name="amfnet_rgb_levir",
        title="AMFNet: RGB change detection (LEVIR-CD: no change / change)",
        task="change",
        architecture="amfnet",
        modalities=(RGB.modality("rgb", _BYTE_SCALE, "RGB imagery, 8 bit"),),
        classes=CHANGE_CLASSES,
        tile_size=256,
        output_stride=32,
        encoder="resnet34",
        paper=_AMF_PAPER,
        weights_note=(
            "No download exists. Train it with LandFuse (the published recipe starts from an "
            "ImageNet ResNet-34), or load a reference checkpoint written by ZisenZhan/AFMNet "
            "(a plain state_dict); inputs are RGB / 255, no mean/std."
        ),
    ),
    ModelSpec(
        name="amfnet_s2",
        title="AMFNet: Sentinel-2 change detection (13 bands per date)",
        task="change",
        architecture="amfnet",
        modalities=(S2_STATS,),
        classes=CHANGE_CLASSES,
        tile_size=256,
        output_stride=32,
        encoder="resnet34",
        paper=_AMF_PAPER + " Adapted to 13 Sentinel-2 bands per date by LandFuse.",
        weights_note=(
            "No published model: train it with LandFuse (e.g. on OSCD). The default statistics "
            "are global Sentinel-2 L1C values; replace them with your training data's."
        ),
    ),
)

# LandFuse's own lite networks, appended after the papers' entries so that the Processing enums
# of those keep their indices. ResNet-18 encoders at width 8 (AMM-FuseNet, whose head runs at
# stride 4 and dominates the cost) or 16 (AMFNet): small enough to bundle demo weights and to
# train on two CPU cores in minutes.
_LITE_ENTRIES: tuple[ModelSpec, ...] = (
    ModelSpec(
        name="amm_fusenet_lite_s2_s1_dem",
        title="LandFuse lite CPU variant of AMM-FuseNet: Sentinel-2 + Sentinel-1 + DEM, Hunan "
        "classes (not the paper's model)",
        task="landcover",
        architecture="amm_fusenet",
        # The same fixed normalisation as amm_fusenet_s2_s1_dem: no tile dependence, no seams.
        modalities=(
            S2_BOUNDS,
            S1_BOUNDS,
            DEM_HUNAN,
        ),
        classes=HUNAN_CLASSES,
        tile_size=256,
        output_stride=16,
        encoder="resnet18",
        paper=_AMM_PAPER + " Lite three-branch variant by LandFuse (NETWORKS.md §2).",
        weights_note=_AMM_TRAIN_NOTE + _LITE_NOTE,
        width=8,
    ),
    ModelSpec(
        name="amfnet_lite_s2",
        title="LandFuse lite CPU variant of AMFNet: Sentinel-2 change detection (13 bands per "
        "date; not the paper's model)",
        task="change",
        architecture="amfnet",
        modalities=(S2_STATS,),
        classes=CHANGE_CLASSES,
        tile_size=256,
        output_stride=32,
        encoder="resnet18",
        paper=_AMF_PAPER + " Lite 13-band variant by LandFuse.",
        weights_note="No published model: train it with LandFuse." + _LITE_NOTE,
        width=16,
    ),
)
_ENTRIES = _ENTRIES + _LITE_ENTRIES

_ENTRY_TABLE: Table[ModelSpec] = Table("model", ((e.name, e) for e in _ENTRIES))
#: The entries, read-only for everyone but :func:`register_model` / :func:`unregister_model`.
_REGISTRY: Mapping[str, ModelSpec] = _ENTRY_TABLE.view


def register_model(spec: ModelSpec) -> ModelSpec:
    """Add an entry (a plugin's own model, or a test's): every surface lists it from then on.

    The dock reads the registry when its model list is refreshed, Processing when the provider
    loads its algorithms (``provider.refreshAlgorithms()``), the command line when it parses.

    Raises:
        ModelConfigError: when an entry of that name exists.
    """
    return _ENTRY_TABLE.add(spec.name, spec)


def unregister_model(name: str) -> None:
    """Remove an entry added with :func:`register_model` (the built-in ones stay)."""
    _ENTRY_TABLE.remove(name)


def model_names() -> tuple[str, ...]:
    """Names of all registry entries, in registry order."""
    return tuple(_REGISTRY)


def get_model_spec(name: str) -> ModelSpec:
    """Look up one registry entry.

    Args:
        name: the registry key.

    Returns:
        The entry.

    Raises:
        UnknownModelError: when the name is unknown; the message lists the valid names.
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownModelError(
            f"Unknown model {name!r}. Choose one of: {', '.join(_REGISTRY)}."
        ) from None


def list_model_specs(task: str | None = None) -> tuple[ModelSpec, ...]:
    """All registry entries, optionally only those of one task.

    Args:
        task: "landcover", "change" or None for all.

    Returns:
        The entries in registry order.

    Raises:
        ModelConfigError: for an unknown task.
    """
    if task is None:
        return tuple(_REGISTRY.values())
    if task not in TASKS:
        raise ModelConfigError(f"Unknown task {task!r}; use one of {', '.join(TASKS)}.")
    return tuple(s for s in _REGISTRY.values() if s.task == task)
