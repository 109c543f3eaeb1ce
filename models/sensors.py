"""Sensors as small named tables: bands, aliases, units, resolutions, value ranges, statistics.

Each sensor is one :class:`Sensor` row in :data:`SENSORS`; a registry entry takes its bands from
one (``SENTINEL2_L1C.modality("s2", normalisation)``), and the band resolver
(:mod:`landfuse.core.band_mapping`) reads the sensor's aliases, so "red" is B04 for a
Sentinel-2 modality, B4 for Landsat and R for an RGB image. Adding a sensor is one table here
(Landsat 8/9 OLI below is the proof) plus the registry entries that use it.

Names are compared after :func:`normalise_band_name`: "B8A", "b8a", "B08A", "S2_B8A",
"Band 8A" all give "B8A", "B2" gives "B02" and "SR_B4" gives "B04". A sensor's own band names
and aliases are compared in that normal form too.

Standard library only (the QGIS side reads the tables without torch).
"""

from __future__ import annotations

import re
import types
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

from .errors import ModelConfigError
from .specs import BandSpec, ModalitySpec, NormalisationSpec
from .tables import Table

__all__ = [
    "DEM",
    "DSM",
    "LANDSAT_OLI",
    "RGB",
    "RGBNIR",
    "SENSORS",
    "SENTINEL1_GRD",
    "SENTINEL2_L1C",
    "SENTINEL2_L2A",
    "Sensor",
    "SensorBand",
    "band_key",
    "get_sensor",
    "normalise_band_name",
    "register_sensor",
    "sensor_of",
    "unregister_sensor",
]

_PREFIXES = re.compile(
    r"^(?:(?:sentinel[-_ ]?[12][ab]?|s[12][ab]?|landsat[-_ ]?[89]?|band)[-_ ]*|sr[-_ ]+)",
    re.IGNORECASE,
)
_NUMBERED_BAND = re.compile(r"^b0*(\d{1,2})(a?)$")


def normalise_band_name(name: str) -> str:
    """Canonical form of a band name: "b2" → "B02", "S2_B8A" → "B8A", "vv" → "VV".

    Without a sensor, the aliases of Sentinel-2, Sentinel-1 and DEM apply ("red" → "B04",
    "elevation" → "DEM"), as most LandFuse models take those.

    Args:
        name: A band description or model band name.

    Returns:
        The canonical name (upper case), or "" for an empty description.
    """
    text = _plain(name)
    if not text:
        return ""
    return _DEFAULT_ALIASES.get(text, text)


def _plain(name: str) -> str:
    """The generic normal form, before any sensor's aliases."""
    text = (name or "").strip()
    if not text:
        return ""
    text = (_PREFIXES.sub("", text) or text).strip().lower()
    compact = text.replace(" ", "").replace("_", "").replace("-", "")
    match = _NUMBERED_BAND.match(compact)
    if match:
        return f"B{int(match.group(1)):02d}{match.group(2).upper()}".replace("B08A", "B8A")
    if re.fullmatch(r"\d+a?", compact):  # "Band 8A" after the prefix is gone
        return _plain(f"b{compact}")
    return compact.upper()


@dataclass(frozen=True)
class SensorBand:
    """One band of a sensor.

    Attributes:
        name: The band's short name as LandFuse models use it ("B04", "VV", "R").
        description: Human text, e.g. "Red, 665 nm, 10 m".
        resolution: Native pixel size in metres (None: depends on the product).
        wavelength: Centre wavelength in nm (None for radar and heights).
        aliases: Other names files use for it ("red", "SR_B4"...); compared normalised.
    """

    name: str
    description: str
    resolution: Optional[float] = None
    wavelength: Optional[float] = None
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class Sensor:
    """A sensor (or product level) and its bands.

    Attributes:
        key: Registry key, e.g. "sentinel2_l1c".
        title: Human text, e.g. "Sentinel-2 L1C (top-of-atmosphere)".
        unit: Unit of the values as delivered ("reflectance x 10000", "dB", "m", "DN 0-255").
        bands: The bands in the sensor's usual order.
        value_range: Plausible range of valid values in ``unit``.
        mean: Typical per-band mean (``()`` when not known), in band order.
        std: Typical per-band standard deviation, in band order.
        statistics_source: Where ``mean``/``std`` come from.
        offset_metadata: Product metadata files that state an additive radiometric offset
            (Sentinel-2 ``MTD_MSIL1C.xml``/``MTD_MSIL2A.xml``), and the XML tags that hold it.
        offset_probe: ``(band, threshold, offset)``: without metadata, a file whose band's 1st
            percentile reaches ``threshold`` carries the additive ``offset`` (Sentinel-2 L1C's
            B10 cirrus is dark, under ~200, unless processing baseline 04.00 added 1000).
        linear_power_probe: Its unit is dB but products in linear power exist: values all
            positive with medians below 1 are converted (10·log10).
    """

    key: str
    title: str
    unit: str
    bands: tuple[SensorBand, ...]
    value_range: tuple[float, float]
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    statistics_source: str = ""
    offset_metadata: tuple[tuple[str, str], ...] = ()
    offset_probe: Optional[tuple[str, float, float]] = None
    linear_power_probe: bool = False

    def __post_init__(self) -> None:
        if not self.bands:
            raise ModelConfigError(f"Sensor {self.key!r} needs at least one band.")
        if self.mean and not (len(self.mean) == len(self.std) == len(self.bands)):
            raise ModelConfigError(f"Sensor {self.key!r}: give one mean and one std per band.")
        index: dict[str, str] = {}
        for band in self.bands:
            for text in (band.name, *band.aliases):
                key = _plain(text)
                if index.get(key, band.name) != band.name:
                    raise ModelConfigError(
                        f"Sensor {self.key!r}: {text!r} names both {index[key]} and {band.name}."
                    )
                index[key] = band.name
        object.__setattr__(self, "_index", types.MappingProxyType(index))

    @property
    def band_names(self) -> tuple[str, ...]:
        """The band names in the sensor's order."""
        return tuple(b.name for b in self.bands)

    def band(self, name: str) -> SensorBand:
        """The band called ``name`` (or an alias of it).

        Raises:
            ModelConfigError: when the sensor has no such band.
        """
        found = self.canonical(name)
        for band in self.bands:
            if band.name == found:
                return band
        raise ModelConfigError(
            f"{self.title} has no band {name!r}; its bands are {', '.join(self.band_names)}."
        )

    def canonical(self, text: str) -> str:
        """The band name ``text`` means for this sensor, or "" when it names none of its bands."""
        return self._index.get(_plain(text), "")  # type: ignore[attr-defined]

    def band_specs(self, names: Optional[Sequence[str]] = None) -> tuple[BandSpec, ...]:
        """Registry band specs of the named bands (default: all), in the order given."""
        chosen = [self.band(n) for n in names] if names is not None else list(self.bands)
        return tuple(BandSpec(b.name, b.description, self.unit) for b in chosen)

    def statistics(self, names: Optional[Sequence[str]] = None) -> NormalisationSpec:
        """``fixed_stats`` normalisation with the typical statistics of the named bands.

        Raises:
            ModelConfigError: when the sensor has no typical statistics.
        """
        if not self.mean:
            raise ModelConfigError(f"{self.title} has no typical statistics in its table.")
        order = list(self.band_names)
        picks = [order.index(self.band(n).name) for n in (names or order)]
        return NormalisationSpec(
            "fixed_stats",
            mean=tuple(self.mean[i] for i in picks),
            std=tuple(self.std[i] for i in picks),
        )

    def bounds(self, names: Optional[Sequence[str]] = None) -> NormalisationSpec:
        """``fixed_bounds`` normalisation over the sensor's value range for the named bands."""
        count = len(names) if names is not None else len(self.bands)
        lower, upper = self.value_range
        return NormalisationSpec("fixed_bounds", lower=(lower,) * count, upper=(upper,) * count)

    def modality(
        self,
        key: str,
        normalisation: NormalisationSpec,
        title: Optional[str] = None,
        bands: Optional[Sequence[str]] = None,
        resampling: str = "bilinear",
    ) -> ModalitySpec:
        """A registry modality that takes this sensor's bands.

        Args:
            key: The modality key (the layer slot, the CLI flag, the Processing parameter).
            normalisation: How its bands are scaled.
            title: Human text (default: the sensor's title with the band count).
            bands: The bands the network takes, in network order (default: all).
            resampling: How the engine aligns it to the reference grid.
        """
        specs = self.band_specs(bands)
        text = title or f"{self.title}, {len(specs)} band{'s' if len(specs) > 1 else ''}"
        return ModalitySpec(key, text, specs, normalisation, resampling, sensor=self.key)


_S2 = "reflectance x 10000"
_S2_BANDS = (
    SensorBand("B01", "Coastal aerosol, 443 nm, 60 m", 60, 443, ("coastal", "aerosol")),
    SensorBand("B02", "Blue, 490 nm, 10 m", 10, 490, ("blue",)),
    SensorBand("B03", "Green, 560 nm, 10 m", 10, 560, ("green",)),
    SensorBand("B04", "Red, 665 nm, 10 m", 10, 665, ("red",)),
    SensorBand("B05", "Red edge 1, 705 nm, 20 m", 20, 705, ("rededge1", "re1")),
    SensorBand("B06", "Red edge 2, 740 nm, 20 m", 20, 740, ("rededge2", "re2")),
    SensorBand("B07", "Red edge 3, 783 nm, 20 m", 20, 783, ("rededge3", "re3")),
    SensorBand("B08", "Near infrared, 842 nm, 10 m", 10, 842, ("nir",)),
    SensorBand("B8A", "Narrow near infrared, 865 nm, 20 m", 20, 865, ("nir2", "narrownir")),
    SensorBand("B09", "Water vapour, 945 nm, 60 m", 60, 945, ("watervapour", "wv")),
    SensorBand("B10", "SWIR cirrus, 1375 nm, 60 m", 60, 1375, ("cirrus",)),
    SensorBand("B11", "SWIR 1, 1610 nm, 20 m", 20, 1610, ("swir1", "swir16")),
    SensorBand("B12", "SWIR 2, 2190 nm, 20 m", 20, 2190, ("swir2", "swir22")),
)

SENTINEL2_L1C = Sensor(
    key="sentinel2_l1c",
    title="Sentinel-2 L1C",
    unit=_S2,
    bands=_S2_BANDS,
    value_range=(0.0, 10000.0),
    # Processing baseline 04.00 (January 2022 on) adds 1000 to every L1C digital number.
    offset_metadata=(("MTD_MSIL1C.xml", "RADIO_ADD_OFFSET"),),
    offset_probe=("B10", 900.0, 1000.0),
    # The global means/stds published with the SSL4EO-S12 dataset (Wang et al. 2023, 50k-patch
    # sample, v1.0), rounded; band order B01..B08, B8A, B09..B12.
    mean=(
        1605.58, 1390.78, 1314.87, 1363.52, 1549.44, 2091.75, 2371.72,
        2299.90, 2560.30, 830.07, 22.10, 2177.07, 1524.07,
    ),
    std=(
        786.79, 850.35, 875.06, 1138.85, 1122.18, 1161.59, 1274.39,
        1248.43, 1345.53, 577.32, 51.15, 1336.10, 1136.54,
    ),
    statistics_source="SSL4EO-S12 v1.0 L1C global statistics (Wang et al. 2023), rounded",
)  # fmt: skip

#: Bottom-of-atmosphere reflectance: 12 bands (B10, cirrus, is not delivered at L2A).
SENTINEL2_L2A = Sensor(
    key="sentinel2_l2a",
    title="Sentinel-2 L2A",
    unit=_S2,
    bands=tuple(b for b in _S2_BANDS if b.name != "B10"),
    value_range=(0.0, 10000.0),
    offset_metadata=(("MTD_MSIL2A.xml", "BOA_ADD_OFFSET"),),
)

SENTINEL1_GRD = Sensor(
    key="sentinel1_grd",
    title="Sentinel-1 GRD",
    unit="dB",
    bands=(
        SensorBand("VV", "Sentinel-1 backscatter, VV polarisation", 10, None, ("sigma0vv",)),
        SensorBand("VH", "Sentinel-1 backscatter, VH polarisation", 10, None, ("sigma0vh",)),
    ),
    value_range=(-50.0, 10.0),
    linear_power_probe=True,
)

DEM = Sensor(
    key="dem",
    title="Digital elevation model",
    unit="m",
    bands=(
        SensorBand(
            "DEM", "Elevation above sea level", None, None, ("elevation", "height", "dtm", "srtm")
        ),
    ),
    value_range=(-450.0, 8900.0),
)

DSM = Sensor(
    key="dsm",
    title="Digital surface model",
    unit="m",
    bands=(SensorBand("DSM", "Digital surface model height", None, None, ("surface",)),),
    value_range=(-450.0, 9000.0),
)

_BYTE = "DN 0-255"
RGB = Sensor(
    key="rgb",
    title="RGB imagery, 8 bit",
    unit=_BYTE,
    bands=(
        SensorBand("R", "Red", None, None, ("red",)),
        SensorBand("G", "Green", None, None, ("green",)),
        SensorBand("B", "Blue", None, None, ("blue",)),
    ),
    value_range=(0.0, 255.0),
)

RGBNIR = Sensor(
    key="rgbnir",
    title="Aerial RGB + near infrared, 8 bit",
    unit=_BYTE,
    bands=(*RGB.bands, SensorBand("NIR", "Near infrared", None, None, ("ir", "nearinfrared"))),
    value_range=(0.0, 255.0),
)

#: Landsat 8/9 OLI Collection 2 Level-2 surface reflectance, as USGS delivers it (SR_B1...SR_B7:
#: DN, reflectance = DN x 0.0000275 - 0.2; valid DN 7273-43636).
LANDSAT_OLI = Sensor(
    key="landsat_oli",
    title="Landsat 8/9 OLI L2 surface reflectance",
    unit="DN (reflectance = DN x 0.0000275 - 0.2)",
    bands=(
        SensorBand("B1", "Coastal aerosol, 443 nm, 30 m", 30, 443, ("coastal", "aerosol")),
        SensorBand("B2", "Blue, 482 nm, 30 m", 30, 482, ("blue",)),
        SensorBand("B3", "Green, 561 nm, 30 m", 30, 561, ("green",)),
        SensorBand("B4", "Red, 655 nm, 30 m", 30, 655, ("red",)),
        SensorBand("B5", "Near infrared, 865 nm, 30 m", 30, 865, ("nir",)),
        SensorBand("B6", "SWIR 1, 1609 nm, 30 m", 30, 1609, ("swir1",)),
        SensorBand("B7", "SWIR 2, 2201 nm, 30 m", 30, 2201, ("swir2",)),
    ),
    value_range=(7273.0, 43636.0),
)

_TABLE: Table[Sensor] = Table(
    "sensor",
    (
        (s.key, s)
        for s in (SENTINEL2_L1C, SENTINEL2_L2A, SENTINEL1_GRD, DEM, DSM, RGB, RGBNIR, LANDSAT_OLI)
    ),
)
#: Every sensor table by key, read-only for everyone but :func:`register_sensor`.
SENSORS: Mapping[str, Sensor] = _TABLE.view


def register_sensor(sensor: Sensor) -> Sensor:
    """Add a sensor table (a plugin's own, or a test's).

    Raises:
        ModelConfigError: when a sensor of that key exists.
    """
    return _TABLE.add(sensor.key, sensor)


def unregister_sensor(key: str) -> None:
    """Remove a sensor added with :func:`register_sensor` (the built-in ones stay)."""
    _TABLE.remove(key)


#: Weights files written before modalities named their sensor: the sensor of each key.
_SENSOR_OF_KEY = {
    "s2": "sentinel2_l1c",
    "s1": "sentinel1_grd",
    "dem": "dem",
    "dsm": "dsm",
    "rgb": "rgb",
    "rgbir": "rgbnir",
}

_DEFAULT_ALIASES = {
    _plain(alias): _plain(band.name)
    for sensor in (SENTINEL2_L1C, SENTINEL1_GRD, DEM)
    for band in sensor.bands
    for alias in band.aliases
}


def get_sensor(key: str) -> Sensor:
    """The sensor table called ``key``.

    Raises:
        ModelConfigError: for an unknown key; the message lists the known ones.
    """
    try:
        return SENSORS[key]
    except KeyError:
        raise ModelConfigError(
            f"Unknown sensor {key!r}; known sensors: {', '.join(SENSORS)}."
        ) from None


def sensor_of(modality: ModalitySpec) -> Optional[Sensor]:
    """The sensor a modality's bands come from (inferred from its key for old weights files)."""
    key = modality.sensor or _SENSOR_OF_KEY.get(modality.key, "")
    return SENSORS.get(key)


def band_key(text: str, sensor: Optional[Sensor] = None) -> str:
    """The form in which band names are compared: the sensor's band a name means, normalised.

    Two texts name the same band of ``sensor`` exactly when their keys are equal. Without a
    sensor (or for a name the sensor does not know) :func:`normalise_band_name` decides.
    """
    if sensor is not None:
        found = sensor.canonical(text)
        if found:
            return _plain(found)
    return normalise_band_name(text)
