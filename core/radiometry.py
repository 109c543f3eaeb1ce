"""Radiometric offsets of the inputs, harmonised before normalisation (issue 13, part 2).

Sentinel-2 processing baseline 04.00 (products from 25 January 2022 on) adds 1000 to every
digital number (``RADIO_ADD_OFFSET`` −1000 in ``MTD_MSIL1C.xml``, ``BOA_ADD_OFFSET`` in
``MTD_MSIL2A.xml``). A network trained on older products, or on harmonised ones, sees every
band 1000 too bright. For a modality whose sensor table names such metadata
(:attr:`~landfuse.models.sensors.Sensor.offset_metadata`), :func:`find_offset` looks for the
product's metadata file beside the input files (up to the ``.SAFE`` root) and reads the offset;
without metadata, a sensor's probe band (:attr:`~landfuse.models.sensors.Sensor.offset_probe`,
Sentinel-2 L1C's dark B10 cirrus band) tells offset data from data without it. Sentinel-1
backscatter delivered in linear power where the model takes dB (every value positive, medians
below 1) is converted with 10·log10. The engine (and the training chips) apply what was found
before normalisation and say so in a warning and the report.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

__all__ = [
    "Harmonisation",
    "detect_linear_power",
    "detect_offset",
    "find_harmonisation",
    "find_offset",
    "metadata_offset",
]

#: How many folders above an input file the product's metadata file is looked for
#: (``<product>.SAFE/GRANULE/<granule>/IMG_DATA/R10m/x.jp2``: four).
_LEVELS_UP = 5


@dataclass(frozen=True)
class Harmonisation:
    """How a modality's values are harmonised to what the model takes, and why.

    Attributes:
        value: ``kind == "offset"``: what is subtracted from the digital numbers (1000 for
            baseline 04.00); ``"to_db"``: unused (0).
        source: ``"metadata"`` or ``"detected"``.
        evidence: The metadata file, or the statistic that revealed it.
        kind: ``"offset"`` (subtract ``value``, clip at 0) or ``"to_db"`` (linear power to
            decibels, 10·log10).
    """

    value: float
    source: str
    evidence: str
    kind: str = "offset"

    def apply(self, data: np.ndarray) -> np.ndarray:
        """The harmonised values (float32)."""
        if self.kind == "to_db":
            return (10.0 * np.log10(np.maximum(data, np.float32(1e-6)))).astype(np.float32)
        return np.maximum(data - np.float32(self.value), np.float32(0.0))

    def describe(self, what: str) -> str:
        """What was done, for the warning."""
        how = "stated by" if self.source == "metadata" else "detected from"
        if self.kind == "to_db":
            return (
                f"The {what} values are backscatter in linear power ({how} {self.evidence}), "
                "but the model takes dB: they were converted with 10 x log10(value)."
            )
        return (
            f"The {what} values carry an offset of +{self.value:g} ({how} {self.evidence}), as "
            f"products of processing baseline 04.00 and later do: {self.value:g} was subtracted "
            "before normalisation (values below it became 0)."
        )


def metadata_offset(path: str, files: Sequence[tuple[str, str]]) -> Optional[Harmonisation]:
    """The offset the product metadata of ``path`` states, or None without such a file.

    Args:
        path: An input file.
        files: ``(metadata file name, XML tag)`` pairs the sensor names.
    """
    folder = Path(path).resolve().parent
    for _ in range(_LEVELS_UP):
        for name, tag in files:
            candidate = folder / name
            if candidate.is_file():
                return _read_offset(candidate, tag)
        if folder.parent == folder:
            break
        folder = folder.parent
    return None


def _read_offset(path: Path, tag: str) -> Optional[Harmonisation]:
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError):
        return None
    values = {float(e.text) for e in root.iter() if e.tag.endswith(tag) and e.text}
    baseline = next((e.text for e in root.iter() if e.tag.endswith("PROCESSING_BASELINE")), "")
    if not values:  # an older baseline states no offset: there is none
        return Harmonisation(
            0.0, "metadata", f"{path.name} (processing baseline {baseline or '?'})"
        )
    value = -min(values)  # the metadata gives the offset to add (−1000)
    return Harmonisation(value, "metadata", f"{path.name} (processing baseline {baseline or '?'})")


def detect_offset(
    band_names: Sequence[str], samples: Sequence[np.ndarray], probe: tuple[str, float, float]
) -> Optional[Harmonisation]:
    """The offset the probe band's sampled values reveal, or None.

    Args:
        band_names: The model bands of the samples, in order.
        samples: Valid sampled values of each band.
        probe: ``(band, threshold, offset)`` from the sensor table.
    """
    band, threshold, value = probe
    if band not in band_names:
        return None
    values = samples[list(band_names).index(band)]
    if values.size == 0:
        return None
    low = float(np.percentile(values, 1))
    if low < threshold:
        return None
    return Harmonisation(
        value, "detected", f"{band} 1st percentile {low:.0f}, at least {threshold:.0f}"
    )


def detect_linear_power(
    band_names: Sequence[str], samples: Sequence[np.ndarray]
) -> Optional[Harmonisation]:
    """Backscatter in linear power where dB is expected: every band positive (1st percentile
    at least 0) with a median below 1 (dB backscatter is about -25 to 0)."""
    stats = [
        (name, float(np.percentile(v, 1)), float(np.median(v)))
        for name, v in zip(band_names, samples)
        if v.size
    ]
    if not stats or any(low < 0.0 or median >= 1.0 for _, low, median in stats):
        return None
    shown = ", ".join(f"{name} median {median:.3f}" for name, _, median in stats[:3])
    return Harmonisation(0.0, "detected", f"{shown}, all positive", kind="to_db")


def find_harmonisation(
    paths: Sequence[str], sensor: object, band_names: Sequence[str], samples: Sequence[np.ndarray]
) -> Optional[Harmonisation]:
    """What the sensor's table says to look for in a modality's files: an additive offset
    (metadata, else a probe band), or linear power where the sensor's unit is dB."""
    metadata = getattr(sensor, "offset_metadata", ())
    probe = getattr(sensor, "offset_probe", None)
    if metadata or probe:
        found = find_offset(paths, metadata, probe, band_names, samples)
        if found is not None:
            return found
    if getattr(sensor, "linear_power_probe", False):
        return detect_linear_power(band_names, samples)
    return None


def find_offset(
    paths: Sequence[str],
    metadata: Sequence[tuple[str, str]],
    probe: Optional[tuple[str, float, float]],
    band_names: Sequence[str],
    samples: Sequence[np.ndarray],
) -> Optional[Harmonisation]:
    """The offset of one modality's files: their metadata first, else the probe band."""
    if metadata:
        for path in paths:
            found = metadata_offset(path, metadata)
            if found is not None:
                return found if found.value else None
    if probe is not None:
        return detect_offset(band_names, samples, probe)
    return None
