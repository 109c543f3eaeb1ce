"""The model registry: one read-only entry per model the plugin offers.

The dock's model list, the Processing enums, the command line and the tests all iterate this
registry (DESIGN.md §4), so a new model is one network module plus one entry here.

This module imports only the standard library at import time: the QGIS side reads the metadata
(bands, classes, colours, tile size) without torch. :meth:`ModelSpec.build` imports torch and the
networks lazily.

Normalisation modes (what ``core`` applies before a tile enters a network):

- ``minmax_per_tile``: each band of each tile min-max scaled to [0, 1] on its own. This is the
  published AMM-FuseNet preprocessing (NETWORKS.md §2, "Published preprocessing"); it makes
  overlapping tiles see different inputs, so it is kept for reference checkpoints only.
- ``fixed_bounds``: ``(x - lower) / (upper - lower)`` clipped to [0, 1], per band.
- ``scale``: ``x * factor`` (e.g. 1/255 for 8-bit RGB, the published AMFNet LEVIR-CD setup).
- ``fixed_stats``: ``(x - mean) / std`` per band.
"""

from __future__ import annotations

import types
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

from .errors import ModelConfigError, UnknownModelError

if TYPE_CHECKING:  # pragma: no cover - typing only, torch is imported lazily
    import torch

__all__ = [
    "ARCHITECTURES",
    "NORMALISATION_MODES",
    "PUBLISHED_WIDTH",
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
]

TASKS: tuple[str, ...] = ("landcover", "change")
#: Channel width of the published networks (torchvision's ResNet stem); lite entries use less.
PUBLISHED_WIDTH = 64
ARCHITECTURES: tuple[str, ...] = ("amm_fusenet", "amfnet")
NORMALISATION_MODES: tuple[str, ...] = ("minmax_per_tile", "fixed_bounds", "scale", "fixed_stats")
RESAMPLING_MODES: tuple[str, ...] = ("bilinear", "nearest")


@dataclass(frozen=True)
class BandSpec:
    """One input band.

    Attributes:
        name: short band name ("B01".."B12", "B8A", "VV", "VH", "DEM", "R", "G", "B", "NIR", "DSM").
        description: human text, e.g. "Coastal aerosol, 443 nm, 60 m".
        unit: "reflectance x 10000", "dB", "linear", "m" or "DN 0-255".
    """

    name: str
    description: str
    unit: str

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {"name": self.name, "description": self.description, "unit": self.unit}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BandSpec:
        """Rebuild from :meth:`to_dict` output."""
        return cls(str(data["name"]), str(data.get("description", "")), str(data.get("unit", "")))


@dataclass(frozen=True)
class NormalisationSpec:
    """How the bands of one modality are scaled before they enter the network.

    Attributes:
        mode: one of :data:`NORMALISATION_MODES` (see the module docstring).
        lower: per-band lower bounds (``fixed_bounds``).
        upper: per-band upper bounds (``fixed_bounds``).
        factor: multiplier (``scale``).
        mean: per-band means (``fixed_stats``).
        std: per-band standard deviations (``fixed_stats``).

    Raises:
        ModelConfigError: for an unknown mode or inconsistent numbers.
    """

    mode: str
    lower: tuple[float, ...] = ()
    upper: tuple[float, ...] = ()
    factor: float = 1.0
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.mode not in NORMALISATION_MODES:
            raise ModelConfigError(
                f"Unknown normalisation mode {self.mode!r}; use one of "
                f"{', '.join(NORMALISATION_MODES)}."
            )
        if self.mode == "fixed_bounds":
            if not self.lower or len(self.lower) != len(self.upper):
                raise ModelConfigError(
                    "fixed_bounds normalisation needs one lower and one upper bound per band."
                )
            if any(hi <= lo for lo, hi in zip(self.lower, self.upper)):
                raise ModelConfigError("fixed_bounds normalisation needs upper > lower per band.")
        if self.mode == "fixed_stats":
            if not self.mean or len(self.mean) != len(self.std):
                raise ModelConfigError(
                    "fixed_stats normalisation needs one mean and one std per band."
                )
            if any(s <= 0 for s in self.std):
                raise ModelConfigError("fixed_stats normalisation needs std > 0 for every band.")
        if self.mode == "scale" and self.factor == 0:
            raise ModelConfigError("scale normalisation needs a non-zero factor.")

    def per_band_count(self) -> int | None:
        """Number of per-band values this spec carries, or None when it is band-independent."""
        if self.mode == "fixed_bounds":
            return len(self.lower)
        if self.mode == "fixed_stats":
            return len(self.mean)
        return None

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {
            "mode": self.mode,
            "lower": list(self.lower),
            "upper": list(self.upper),
            "factor": self.factor,
            "mean": list(self.mean),
            "std": list(self.std),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NormalisationSpec:
        """Rebuild from :meth:`to_dict` output."""
        return cls(
            mode=str(data["mode"]),
            lower=tuple(float(v) for v in data.get("lower", ())),
            upper=tuple(float(v) for v in data.get("upper", ())),
            factor=float(data.get("factor", 1.0)),
            mean=tuple(float(v) for v in data.get("mean", ())),
            std=tuple(float(v) for v in data.get("std", ())),
        )


@dataclass(frozen=True)
class ModalitySpec:
    """One input modality (one network branch, or both dates of a change model).

    Attributes:
        key: "s2", "s1", "dem", "rgb", "dsm", "rgbir".
        title: human text, e.g. "Sentinel-2 L1C, 13 bands".
        bands: the bands in the order the network expects them.
        normalisation: how the bands are scaled.
        resampling: how the engine aligns this modality to the reference grid.

    Raises:
        ModelConfigError: when the normalisation numbers do not match the band count.
    """

    key: str
    title: str
    bands: tuple[BandSpec, ...]
    normalisation: NormalisationSpec
    resampling: str = "bilinear"

    def __post_init__(self) -> None:
        if not self.bands:
            raise ModelConfigError(f"Modality {self.key!r} needs at least one band.")
        count = self.normalisation.per_band_count()
        if count is not None and count != len(self.bands):
            raise ModelConfigError(
                f"Modality {self.key!r} has {len(self.bands)} bands but its normalisation "
                f"carries {count} values per band list; give one value per band."
            )
        if self.resampling not in RESAMPLING_MODES:
            raise ModelConfigError(
                f"Unknown resampling {self.resampling!r}; use one of {', '.join(RESAMPLING_MODES)}."
            )

    @property
    def band_names(self) -> tuple[str, ...]:
        """Band names in network order."""
        return tuple(b.name for b in self.bands)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {
            "key": self.key,
            "title": self.title,
            "bands": [b.to_dict() for b in self.bands],
            "normalisation": self.normalisation.to_dict(),
            "resampling": self.resampling,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModalitySpec:
        """Rebuild from :meth:`to_dict` output."""
        return cls(
            key=str(data["key"]),
            title=str(data.get("title", "")),
            bands=tuple(BandSpec.from_dict(b) for b in data["bands"]),
            normalisation=NormalisationSpec.from_dict(data["normalisation"]),
            resampling=str(data.get("resampling", "bilinear")),
        )


@dataclass(frozen=True)
class ClassSpec:
    """One output class: its value in the class map, its name and its RGB colour."""

    value: int
    name: str
    color: tuple[int, int, int]

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {"value": self.value, "name": self.name, "color": list(self.color)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ClassSpec:
        """Rebuild from :meth:`to_dict` output."""
        r, g, b = (int(c) for c in data["color"])
        return cls(int(data["value"]), str(data["name"]), (r, g, b))


def build_architecture(architecture: str, config: Mapping[str, Any]) -> torch.nn.Module:
    """Build a fresh, randomly initialised network from its architecture name and config.

    Args:
        architecture: "amm_fusenet" or "amfnet".
        config: keyword arguments of the network class (what its ``config`` property returns,
            e.g. ``{"in_channels": [13, 2], "num_classes": 7, "output_stride": 16,
            "encoder": "resnet50"}``).

    Returns:
        The network (in train mode, as torch builds modules).

    Raises:
        ModelConfigError: for an unknown architecture or an invalid configuration.
    """
    kwargs = dict(config)
    if architecture == "amm_fusenet":
        from .amm_fusenet import AMMFuseNet

        return AMMFuseNet(**kwargs)
    if architecture == "amfnet":
        from .amfnet import AMFNet

        return AMFNet(**kwargs)
    raise ModelConfigError(
        f"Unknown architecture {architecture!r}; use one of {', '.join(ARCHITECTURES)}."
    )


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
        if self.architecture not in ARCHITECTURES:
            raise ModelConfigError(
                f"{self.name}: architecture must be one of {', '.join(ARCHITECTURES)}."
            )
        if self.task == "change" and len(self.modalities) != 1:
            raise ModelConfigError(f"{self.name}: a change model takes exactly one modality.")
        if self.task == "landcover" and len(self.modalities) < 2:
            raise ModelConfigError(f"{self.name}: AMM-FuseNet needs at least two modalities.")
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
        if self.architecture == "amm_fusenet":
            config["in_channels"] = list(self.in_channels)
            config["output_stride"] = self.output_stride
        else:
            config["in_channels"] = self.in_channels[0]
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
# Band tables
# ----------------------------------------------------------------------------------------------

_S2_REFLECTANCE = "reflectance x 10000"

S2_L1C_BANDS: tuple[BandSpec, ...] = (
    BandSpec("B01", "Coastal aerosol, 443 nm, 60 m", _S2_REFLECTANCE),
    BandSpec("B02", "Blue, 490 nm, 10 m", _S2_REFLECTANCE),
    BandSpec("B03", "Green, 560 nm, 10 m", _S2_REFLECTANCE),
    BandSpec("B04", "Red, 665 nm, 10 m", _S2_REFLECTANCE),
    BandSpec("B05", "Red edge 1, 705 nm, 20 m", _S2_REFLECTANCE),
    BandSpec("B06", "Red edge 2, 740 nm, 20 m", _S2_REFLECTANCE),
    BandSpec("B07", "Red edge 3, 783 nm, 20 m", _S2_REFLECTANCE),
    BandSpec("B08", "Near infrared, 842 nm, 10 m", _S2_REFLECTANCE),
    BandSpec("B8A", "Narrow near infrared, 865 nm, 20 m", _S2_REFLECTANCE),
    BandSpec("B09", "Water vapour, 945 nm, 60 m", _S2_REFLECTANCE),
    BandSpec("B10", "SWIR cirrus, 1375 nm, 60 m", _S2_REFLECTANCE),
    BandSpec("B11", "SWIR 1, 1610 nm, 20 m", _S2_REFLECTANCE),
    BandSpec("B12", "SWIR 2, 2190 nm, 20 m", _S2_REFLECTANCE),
)
S1_BANDS: tuple[BandSpec, ...] = (
    BandSpec("VV", "Sentinel-1 backscatter, VV polarisation", "dB"),
    BandSpec("VH", "Sentinel-1 backscatter, VH polarisation", "dB"),
)
DEM_BANDS: tuple[BandSpec, ...] = (BandSpec("DEM", "Elevation above sea level", "m"),)
RGB_BANDS: tuple[BandSpec, ...] = (
    BandSpec("R", "Red", "DN 0-255"),
    BandSpec("G", "Green", "DN 0-255"),
    BandSpec("B", "Blue", "DN 0-255"),
)
RGBIR_BANDS: tuple[BandSpec, ...] = (*RGB_BANDS, BandSpec("NIR", "Near infrared", "DN 0-255"))
DSM_BANDS: tuple[BandSpec, ...] = (BandSpec("DSM", "Digital surface model height", "m"),)

_N_S2 = len(S2_L1C_BANDS)

# Published AMM-FuseNet preprocessing (NETWORKS.md §2): per-tile, per-band min-max.
_MINMAX = NormalisationSpec("minmax_per_tile")
# hunan2 DEM: (x - 18) / (1892 - 18), clipped to [0, 1] (NETWORKS.md §2).
_DEM_HUNAN = NormalisationSpec("fixed_bounds", lower=(18.0,), upper=(1892.0,))
# Fixed bounds as in the reference dfc20 readers: S2 clipped to 0..10000 and divided by 10000,
# S1 clipped to -25..0 dB and mapped to [0, 1]. No tile dependence, so no seams.
_S2_BOUNDS = NormalisationSpec("fixed_bounds", lower=(0.0,) * _N_S2, upper=(10000.0,) * _N_S2)
_S1_BOUNDS = NormalisationSpec("fixed_bounds", lower=(-25.0, -25.0), upper=(0.0, 0.0))
_BYTE_SCALE = NormalisationSpec("scale", factor=1.0 / 255.0)
# Plausible default statistics for Sentinel-2 L1C (digital numbers = reflectance x 10000),
# band order B01..B08, B8A, B09..B12: the global means/stds published with the SSL4EO-S12
# dataset (Wang et al. 2023, 50k-patch sample, v1.0), rounded. Replace them with the statistics
# of your own training data when you train a model.
_S2_L1C_STATS = NormalisationSpec(
    "fixed_stats",
    mean=(
        1605.58, 1390.78, 1314.87, 1363.52, 1549.44, 2091.75, 2371.72,
        2299.90, 2560.30, 830.07, 22.10, 2177.07, 1524.07,
    ),
    std=(
        786.79, 850.35, 875.06, 1138.85, 1122.18, 1161.59, 1274.39,
        1248.43, 1345.53, 577.32, 51.15, 1336.10, 1136.54,
    ),
)  # fmt: skip

S2_MINMAX = ModalitySpec("s2", "Sentinel-2 L1C, 13 bands", S2_L1C_BANDS, _MINMAX)
S1_MINMAX = ModalitySpec("s1", "Sentinel-1 GRD, VV + VH", S1_BANDS, _MINMAX)
DEM_HUNAN = ModalitySpec("dem", "Digital elevation model", DEM_BANDS, _DEM_HUNAN)

# ----------------------------------------------------------------------------------------------
# Class tables
# ----------------------------------------------------------------------------------------------

# Hunan classes and published colours (NETWORKS.md §2).
HUNAN_CLASSES: tuple[ClassSpec, ...] = (
    ClassSpec(0, "cropland", (197, 90, 17)),
    ClassSpec(1, "forest", (51, 130, 88)),
    ClassSpec(2, "grassland", (178, 206, 61)),
    ClassSpec(3, "wetland", (229, 84, 96)),
    ClassSpec(4, "water", (91, 155, 215)),
    ClassSpec(5, "unused (bare) land", (240, 160, 2)),
    ClassSpec(6, "built-up", (226, 175, 110)),
)

# DFC2020 simplified IGBP classes after the reference reader's "minus one" (Forest = 0 ...
# Water = 9). The published dfc20 model has 11 outputs; output 10 never receives a label.
DFC20_CLASSES: tuple[ClassSpec, ...] = (
    ClassSpec(0, "forest", (0, 153, 0)),
    ClassSpec(1, "shrubland", (198, 176, 68)),
    ClassSpec(2, "savanna", (251, 255, 19)),
    ClassSpec(3, "grassland", (182, 255, 5)),
    ClassSpec(4, "wetlands", (39, 255, 135)),
    ClassSpec(5, "croplands", (194, 79, 68)),
    ClassSpec(6, "urban / built-up", (165, 165, 165)),
    ClassSpec(7, "snow / ice", (105, 255, 248)),
    ClassSpec(8, "barren", (249, 255, 164)),
    ClassSpec(9, "water", (28, 13, 255)),
    ClassSpec(10, "unused output", (0, 0, 0)),
)

# ISPRS Potsdam, in the reference reader's order (its colour map, index = class value).
POTSDAM_CLASSES: tuple[ClassSpec, ...] = (
    ClassSpec(0, "clutter / background", (255, 0, 0)),
    ClassSpec(1, "impervious surfaces", (255, 255, 255)),
    ClassSpec(2, "building", (0, 0, 255)),
    ClassSpec(3, "low vegetation", (0, 255, 255)),
    ClassSpec(4, "tree", (0, 255, 0)),
    ClassSpec(5, "car", (255, 255, 0)),
)

CHANGE_CLASSES: tuple[ClassSpec, ...] = (
    ClassSpec(0, "no change", (0, 0, 0)),
    ClassSpec(1, "change", (255, 255, 255)),
)

# ----------------------------------------------------------------------------------------------
# Entries
# ----------------------------------------------------------------------------------------------

_AMM_PAPER = (
    "Ma, W.; Karakuş, O.; Rosin, P.L. AMM-FuseNet: Attention-Based Multi-Modal Image Fusion "
    "Network for Land Cover Mapping. Remote Sensing 2022, 14(18), 4458."
)
_AMF_PAPER = (
    "Zhan, Z. et al. AMFNet: Attention-Guided Multi-Scale Fusion Network for Bi-Temporal "
    "Change Detection in Remote Sensing Images. Remote Sensing 2024, 16(10), 1765."
)
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
            ModalitySpec("s2", "Sentinel-2 L1C, 13 bands", S2_L1C_BANDS, _S2_BOUNDS),
            ModalitySpec("s1", "Sentinel-1 GRD, VV + VH (dB)", S1_BANDS, _S1_BOUNDS),
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
            ModalitySpec("s2", "Sentinel-2 L1C, 13 bands", S2_L1C_BANDS, _S2_BOUNDS),
            ModalitySpec("s1", "Sentinel-1 GRD, VV + VH (dB)", S1_BANDS, _S1_BOUNDS),
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
            ModalitySpec("rgbir", "Aerial RGB + near infrared, 8 bit", RGBIR_BANDS, _BYTE_SCALE),
            ModalitySpec("dsm", "Digital surface model", DSM_BANDS, _MINMAX),
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
        modalities=(ModalitySpec("rgb", "RGB imagery, 8 bit", RGB_BANDS, _BYTE_SCALE),),
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
        modalities=(ModalitySpec("s2", "Sentinel-2 L1C, 13 bands", S2_L1C_BANDS, _S2_L1C_STATS),),
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
            ModalitySpec("s2", "Sentinel-2 L1C, 13 bands", S2_L1C_BANDS, _S2_BOUNDS),
            ModalitySpec("s1", "Sentinel-1 GRD, VV + VH (dB)", S1_BANDS, _S1_BOUNDS),
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
        modalities=(ModalitySpec("s2", "Sentinel-2 L1C, 13 bands", S2_L1C_BANDS, _S2_L1C_STATS),),
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

_REGISTRY: Mapping[str, ModelSpec] = types.MappingProxyType({e.name: e for e in _ENTRIES})
if len(_REGISTRY) != len(_ENTRIES):  # pragma: no cover - guards against a copy-paste slip
    raise ModelConfigError("Duplicate model names in the registry.")


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
