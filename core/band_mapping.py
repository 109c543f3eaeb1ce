"""Match a raster's bands to a model's named bands (B01…B12, B8A, VV, VH, DEM, R, G, B…).

Used by the dock to pre-fill its band mapping and to show a mismatch before a run. Names are
compared after normalisation, so "B8A", "b8a", "B08A", "S2_B8A" and "Band 8A" all match "B8A",
and "B2" matches "B02".
"""

import re
from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

_PREFIXES = re.compile(r"^(?:sentinel[-_ ]?[12][ab]?|s[12][ab]?|band)[-_ ]*", re.IGNORECASE)
_S2_BAND = re.compile(r"^b0*(\d{1,2})(a?)$")
_ALIASES: Dict[str, str] = {
    "red": "B04",
    "green": "B03",
    "blue": "B02",
    "nir": "B08",
    "r": "R",
    "g": "G",
    "elevation": "DEM",
    "height": "DEM",
    "dtm": "DEM",
    "srtm": "DEM",
}


def normalise_band_name(name: str) -> str:
    """Canonical form of a band name: "b2" → "B02", "S2_B8A" → "B8A", "vv" → "VV".

    Args:
        name: A band description or model band name.

    Returns:
        The canonical name (upper case), or "" for an empty description.
    """
    text = name.strip()
    if not text:
        return ""
    text = _PREFIXES.sub("", text) or text
    text = text.strip().lower()
    alias = _ALIASES.get(text)
    if alias:
        return alias
    compact = text.replace(" ", "").replace("_", "")
    match = _S2_BAND.match(compact)
    if match:
        return f"B{int(match.group(1)):02d}{match.group(2).upper()}".replace("B08A", "B8A")
    if re.fullmatch(r"\d+a?", compact):  # "Band 8A" after the prefix is gone
        return normalise_band_name(f"b{compact}")
    return compact.upper()


@dataclass(frozen=True)
class BandMapping:
    """For each model band, the 1-based raster band chosen for it (None: not found)."""

    model_bands: Tuple[str, ...]
    raster_bands: Tuple[Optional[int], ...]
    by_description: bool

    @property
    def complete(self) -> bool:
        """True when every model band has a raster band."""
        return all(index is not None for index in self.raster_bands)

    @property
    def missing(self) -> Tuple[str, ...]:
        """The model bands that no raster band was found for."""
        return tuple(n for n, i in zip(self.model_bands, self.raster_bands) if i is None)

    def problem(self, raster_band_count: int) -> str:
        """A sentence saying what is wrong with this mapping, or "" when it can run."""
        if self.missing:
            return (
                f"No band found for {', '.join(self.missing)} among the layer's "
                f"{raster_band_count} band(s): choose them in the band mapping, or pick another "
                "layer."
            )
        chosen = [i for i in self.raster_bands if i is not None]
        repeated = sorted({i for i in chosen if chosen.count(i) > 1})
        if repeated and len(self.model_bands) > 1:
            return (
                f"Raster band(s) {', '.join(map(str, repeated))} are used for several model bands."
            )
        return ""


def suggest_band_mapping(descriptions: Sequence[str], model_bands: Sequence[str]) -> BandMapping:
    """Choose raster bands for the model's bands.

    By description when the raster's band descriptions name the model's bands; otherwise, when
    the band counts are equal, band i for model band i; otherwise what can be matched.

    Args:
        descriptions: The raster's band descriptions in band order ("" when a band has none).
        model_bands: The model's band names for this modality, in the model's order.

    Returns:
        The suggested :class:`BandMapping`.
    """
    wanted = [normalise_band_name(b) for b in model_bands]
    have: Dict[str, int] = {}
    for index, text in enumerate(descriptions, start=1):
        key = normalise_band_name(text)
        if key and key not in have:
            have[key] = index
    by_name = tuple(have.get(w) for w in wanted)
    if all(i is not None for i in by_name):
        return BandMapping(tuple(model_bands), by_name, True)
    if len(descriptions) == len(model_bands) and not any(by_name):
        return BandMapping(tuple(model_bands), tuple(range(1, len(model_bands) + 1)), False)
    return BandMapping(tuple(model_bands), by_name, True)
