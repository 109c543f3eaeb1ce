"""Per-band normalisation of input tiles, in the four modes of the model registry.

Each registry entry (``models/registry.py``) and each project weights file names the mode of
every modality (spec/NETWORKS.md §2 "Published preprocessing"):

``minmax_per_tile``
    What the reference AMM-FuseNet code trained with: every band of every 256×256 sample is
    scaled to [0, 1] by its own minimum and maximum, ``(x - min) / (max - min)``, in float32.
    Here the statistics are taken per band over the *valid* pixels of the tile (the reference
    samples have no nodata), and a band with ``max == min`` becomes 0 where the reference would
    divide by zero. The scaling depends on the tile, so overlapping tiles see different inputs
    and the mosaic can show seams; the blending softens them. Use it for reference checkpoints.
``fixed_bounds``
    ``(x - lower) / (upper - lower)`` per band, clipped to [0, 1] (the reference ``hunan2`` DEM:
    18 .. 1892 m).
``scale``
    ``x * factor`` (8-bit RGB: 1/255, as ``to_tensor`` in the AMFNet LEVIR-CD setup; not clipped,
    as in the reference).
``fixed_stats``
    ``(x - mean) / std`` per band with statistics fixed at training time: the same pixel gets the
    same input in every tile, so the mosaic has no seams. The project's own models use it.

Invalid pixels (nodata, masked, outside the area) take the value 0 after normalisation: they
are ignored by the per-tile statistics and their predictions are discarded anyway.
"""

from __future__ import annotations

from typing import Protocol, Sequence

import numpy as np

from ..models.specs import NORMALISATION_MODES
from .errors import RequestError

__all__ = [
    "MODES",
    "NormalisationLike",
    "check_normalisation",
    "normalise",
]

#: The modes the engine knows, as named in the registry.
MODES = NORMALISATION_MODES


class NormalisationLike(Protocol):
    """What :func:`normalise` reads (``models.registry.NormalisationSpec`` has these fields)."""

    @property
    def mode(self) -> str: ...
    @property
    def lower(self) -> Sequence[float]: ...
    @property
    def upper(self) -> Sequence[float]: ...
    @property
    def factor(self) -> float: ...
    @property
    def mean(self) -> Sequence[float]: ...
    @property
    def std(self) -> Sequence[float]: ...


def _per_band(values: Sequence[float], bands: int, what: str, mode: str) -> np.ndarray:
    """Return ``values`` as a ``[bands, 1, 1]`` float32 array (one value broadcasts to all)."""
    array = np.asarray(tuple(values), dtype=np.float32).reshape(-1)
    if array.size == 1:
        array = np.repeat(array, bands)
    if array.size != bands:
        raise RequestError(
            f"The '{mode}' normalisation has {array.size} {what} values for {bands} bands; the "
            "weights file or registry entry must give one value per band (or one for all)."
        )
    return array.reshape(bands, 1, 1)


def check_normalisation(spec: NormalisationLike, bands: int) -> None:
    """Check that ``spec`` can normalise ``bands`` bands, before any pixel is read.

    Args:
        spec: The normalisation of one modality.
        bands: Number of bands of that modality.

    Raises:
        RequestError: for an unknown mode, missing or mis-sized statistics, ``upper <= lower``,
            a non-positive standard deviation or a zero scale factor.
    """
    mode = spec.mode
    if mode not in MODES:
        raise RequestError(f"Unknown normalisation '{mode}'; use one of {', '.join(MODES)}.")
    if mode == "fixed_bounds":
        lower = _per_band(spec.lower, bands, "lower", mode)
        upper = _per_band(spec.upper, bands, "upper", mode)
        if np.any(upper <= lower):
            raise RequestError("The 'fixed_bounds' normalisation needs upper > lower per band.")
    elif mode == "fixed_stats":
        _per_band(spec.mean, bands, "mean", mode)
        std = _per_band(spec.std, bands, "std", mode)
        if np.any(~np.isfinite(std)) or np.any(std <= 0):
            raise RequestError("The 'fixed_stats' normalisation needs a positive std per band.")
    elif mode == "scale" and not (np.isfinite(spec.factor) and spec.factor != 0):
        raise RequestError(f"The 'scale' normalisation needs a non-zero factor, got {spec.factor}.")


def _minmax_per_tile(data: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
    """Scale each band to [0, 1] by its min and max over the valid pixels (reference code)."""
    bands = data.shape[0]
    if valid is None or valid.all():
        flat = data.reshape(bands, -1)
        low = flat.min(axis=1)
        high = flat.max(axis=1)
    else:
        if not valid.any():
            return np.zeros_like(data)
        picked = data[:, valid]
        low = picked.min(axis=1)
        high = picked.max(axis=1)
    span = high - low
    flat_band = span <= 0
    # The reference divides by (max - min) unguarded (NaN for a constant band); 0 is the value
    # a constant band approaches and keeps the network input finite.
    span = np.where(flat_band, np.float32(1.0), span).astype(np.float32)
    out = data - low[:, None, None]
    out /= span[:, None, None]
    out[flat_band] = 0.0
    return out


def normalise(
    data: np.ndarray, spec: NormalisationLike, valid: np.ndarray | None = None
) -> np.ndarray:
    """Normalise one tile of one modality.

    Args:
        data: ``[bands, h, w]`` raw values (any real dtype; computed in float32 like the
            reference code).
        spec: The modality's normalisation (mode and numbers).
        valid: ``bool [h, w]``: pixels whose values are real data. ``None`` means all are.

    Returns:
        ``float32 [bands, h, w]``; invalid pixels are 0.

    Raises:
        RequestError: if the mode is unknown or its numbers do not fit the band count.
    """
    data = np.asarray(data, dtype=np.float32)
    bands = data.shape[0]
    check_normalisation(spec, bands)
    mode = spec.mode
    if mode == "minmax_per_tile":
        out = _minmax_per_tile(data, valid)
    elif mode == "fixed_bounds":
        lower = _per_band(spec.lower, bands, "lower", mode)
        upper = _per_band(spec.upper, bands, "upper", mode)
        out = np.clip((data - lower) / (upper - lower), 0.0, 1.0)
    elif mode == "scale":
        out = data * np.float32(spec.factor)
    else:
        mean = _per_band(spec.mean, bands, "mean", mode)
        std = _per_band(spec.std, bands, "std", mode)
        out = (data - mean) / std
    out = out.astype(np.float32, copy=False)
    if valid is not None and not valid.all():
        out[:, ~valid] = 0.0
    return out
