"""Is this the data the model expects? Data types, value ranges and statistics, before a run.

Issue 11: a Sentinel-2 scene converted to 8 bit (``gdal_translate -ot Byte -scale``) was
accepted everywhere and mapped as 60 % wetland. Before any tile is computed, the engine samples
each input cheaply (a few small windows of each file, :meth:`AlignedSource.sample_values`) and
compares what it finds with what the model's bands are (their unit) and with the normalisation
the model applies:

- **certain** mismatches refuse the run with the fix (:class:`InputValuesError`): 8-bit data
  for bands in reflectance × 10000 (an 8-bit rendering has lost the radiometry);
- **likely** mismatches give a :class:`~landfuse.core.run_warnings.RunWarning`: reflectances
  scaled 0-1 instead of × 10000, Sentinel-1 in linear power instead of dB, elevations beyond
  any on Earth, 16-bit values for an 8-bit model, and band medians far outside the range or
  the statistics the model normalises with.

The checks are per band and cheap; they never change the data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np

from .errors import InputValuesError
from .run_warnings import INPUT_VALUES, RunWarning

__all__ = ["BandSample", "check_modality_values"]

_REFLECTANCE = "reflectance x 10000"
_DB = "dB"
_METRES = "m"
_BYTE = "DN 0-255"
#: Fewer valid samples than this say nothing reliable: no statistics warning.
_MIN_SAMPLES = 64


@dataclass(frozen=True)
class BandSample:
    """The sampled values of one model band of one input.

    Attributes:
        name: The model band (``"B04"``).
        unit: Its unit in the model (``"reflectance x 10000"``, ``"dB"``, ``"m"``...).
        dtype: The data type of the file band feeding it.
        path: The file.
        values: Valid sampled values (1-D).
    """

    name: str
    unit: str
    dtype: str
    path: str
    values: np.ndarray


def _percentiles(values: np.ndarray) -> tuple[float, float, float]:
    low, median, high = np.percentile(values, (2, 50, 98))
    return float(low), float(median), float(high)


def _bands_text(names: Sequence[str]) -> str:
    return ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")


def _unit_findings(label: str, samples: Sequence[BandSample]) -> list[str]:
    """What the values say against the bands' units (warnings; refusals are raised)."""
    findings: list[str] = []
    byte_reflectance = [
        s for s in samples if s.unit == _REFLECTANCE and np.dtype(s.dtype).itemsize == 1
    ]
    if byte_reflectance:
        files = sorted({s.path for s in byte_reflectance})
        raise InputValuesError(
            f"The {label} bands {_bands_text([s.name for s in byte_reflectance])} come from "
            f"8-bit data ({', '.join(files)}), but the model takes Sentinel-2 reflectances "
            "(digital numbers = reflectance x 10000, 16-bit). An 8-bit image (e.g. made with "
            "gdal_translate -ot Byte -scale, or a screenshot-like export) has lost the "
            "radiometry and would give a wrong map: give the original 16-bit Sentinel-2 "
            "bands (L1C or L2A, .jp2 or GeoTIFF)."
        )
    enough = [s for s in samples if s.values.size >= _MIN_SAMPLES]
    reflectance = [s for s in enough if s.unit == _REFLECTANCE]
    unit_fraction = [s for s in reflectance if _percentiles(s.values)[2] <= 1.5]
    if unit_fraction and len(unit_fraction) * 2 >= len(reflectance):
        top = max(_percentiles(s.values)[2] for s in unit_fraction)
        findings.append(
            f"the {label} values are at most {top:.2f}: they look like reflectances scaled "
            "0-1, but the model takes reflectance x 10000; multiply them by 10000 (Raster "
            "Calculator) or give the original digital numbers"
        )
    linear = [
        s
        for s in enough
        if s.unit == _DB and _percentiles(s.values)[0] >= 0.0 and _percentiles(s.values)[1] < 1.0
    ]
    if linear:
        findings.append(
            f"the {label} bands {_bands_text([s.name for s in linear])} are all positive with "
            "medians below 1: they look like backscatter in linear power, but the model takes "
            "dB; convert them with 10 x log10(value)"
        )
    too_bright = [s for s in enough if s.unit == _DB and _percentiles(s.values)[1] > 20.0]
    if too_bright:
        findings.append(
            f"the {label} bands {_bands_text([s.name for s in too_bright])} have medians above "
            "20 dB, unlike Sentinel-1 backscatter (about -25 to 0 dB): are they amplitudes or "
            "another product?"
        )
    heights = [
        s
        for s in enough
        if s.unit == _METRES
        and (_percentiles(s.values)[2] > 9000.0 or _percentiles(s.values)[0] < -500.0)
    ]
    if heights:
        findings.append(
            f"the {label} values reach {min(_percentiles(s.values)[0] for s in heights):.0f} to "
            f"{max(_percentiles(s.values)[2] for s in heights):.0f}, beyond any elevation on "
            "Earth in metres: check the units (feet? centimetres?) and the nodata value"
        )
    wide = [s for s in enough if s.unit == _BYTE and _percentiles(s.values)[2] > 255.0]
    if wide:
        findings.append(
            f"the {label} bands {_bands_text([s.name for s in wide])} reach "
            f"{max(_percentiles(s.values)[2] for s in wide):.0f}, but the model takes 8-bit "
            "values (0-255): rescale the image to 8 bit (e.g. gdal_translate -ot Byte -scale) "
            "or use a model trained on such data"
        )
    return findings


def _normalisation_findings(
    label: str, samples: Sequence[BandSample], normalisation: Any
) -> list[str]:
    """Bands whose median lies far outside what the model's normalisation is made for."""
    mode = getattr(normalisation, "mode", "")
    far: list[str] = []
    for index, sample in enumerate(samples):
        if sample.values.size < _MIN_SAMPLES:
            continue
        _, median, _ = _percentiles(sample.values)
        if mode == "fixed_bounds" and index < len(normalisation.lower):
            lower, upper = float(normalisation.lower[index]), float(normalisation.upper[index])
            margin = 0.25 * (upper - lower)
            if not lower - margin <= median <= upper + margin:
                far.append(f"{sample.name} median {median:.4g}, model range {lower:g} to {upper:g}")
        elif mode == "fixed_stats" and index < len(normalisation.mean):
            mean, std = float(normalisation.mean[index]), float(normalisation.std[index])
            if abs(median - mean) > 4.0 * std:
                far.append(
                    f"{sample.name} median {median:.4g}, model statistics mean {mean:.4g} ± "
                    f"{std:.3g}"
                )
        elif mode == "scale":
            factor = float(normalisation.factor)
            if abs(median * factor) > 2.0:
                far.append(f"{sample.name} median {median:.4g}, model scale x {factor:.4g}")
    if not far:
        return []
    shown = "; ".join(far[:5]) + (f"; and {len(far) - 5} more bands" if len(far) > 5 else "")
    return [
        f"the {label} values are far from those the model was made for ({shown}): is this "
        "another sensor, processing level (e.g. L2A with the +1000 offset), scaling or unit?"
    ]


def check_modality_values(
    label: str,
    samples: Sequence[BandSample],
    normalisation: Optional[Any] = None,
) -> list[RunWarning]:
    """Compare one input's sampled values with what the model expects.

    Args:
        label: The input, as users know it (``"s2"``, ``"before"``).
        samples: One :class:`BandSample` per model band, in network order.
        normalisation: The normalisation the model applies to these bands (its mode and
            numbers), or None.

    Returns:
        The warnings (empty when the data look as expected).

    Raises:
        InputValuesError: when the mismatch is certain (8-bit data for reflectance bands).
    """
    findings = _unit_findings(label, samples)
    if normalisation is not None:
        findings += _normalisation_findings(label, samples, normalisation)
    return [
        RunWarning(INPUT_VALUES, finding[0].upper() + finding[1:] + ".", label)
        for finding in findings
    ]
