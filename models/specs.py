"""The building blocks of a registry entry: bands, normalisation, modalities, classes.

Plain frozen dataclasses with ``to_dict`` / ``from_dict`` (the weights files carry them as JSON).
Standard library only, so the QGIS side reads them without torch.

Normalisation modes (what ``core`` applies before a tile enters a network):

- ``minmax_per_tile``: each band of each tile min-max scaled to [0, 1] on its own. This is the
  published AMM-FuseNet preprocessing (NETWORKS.md §2, "Published preprocessing"); it makes
  overlapping tiles see different inputs, so it is kept for reference checkpoints only.
- ``fixed_bounds``: ``(x - lower) / (upper - lower)`` clipped to [0, 1], per band.
- ``scale``: ``x * factor`` (e.g. 1/255 for 8-bit RGB, the published AMFNet LEVIR-CD setup).
- ``fixed_stats``: ``(x - mean) / std`` per band.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from .errors import ModelConfigError

__all__ = [
    "NORMALISATION_MODES",
    "RESAMPLING_MODES",
    "BandSpec",
    "ClassSpec",
    "ModalitySpec",
    "NormalisationSpec",
]

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
        sensor: key of the :mod:`~landfuse.models.sensors` table the bands come from (its
            aliases name the bands: "red" is B04 for Sentinel-2 and R for RGB); "" when the
            modality predates sensor keys (:func:`~landfuse.models.sensors.sensor_of` then
            infers it from ``key``).

    Raises:
        ModelConfigError: when the normalisation numbers do not match the band count.
    """

    key: str
    title: str
    bands: tuple[BandSpec, ...]
    normalisation: NormalisationSpec
    resampling: str = "bilinear"
    sensor: str = ""

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
            "sensor": self.sensor,
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
            sensor=str(data.get("sensor", "")),
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
