"""Match a raster's bands to a model's named bands (B01…B12, B8A, VV, VH, DEM, R, G, B…).

One resolver for every surface (issue 11: the command line fed a B12…B01 stack in file order
while Processing reordered it by description). :func:`resolve_bands` decides, for the files of
one modality, which file band goes into each model band and *how* it was matched:

1. an explicit selection (numbers or names) is taken as given, in the order given;
2. otherwise by name, when the band descriptions name every model band (in any order, across
   any number of files; a band named twice is an error); a single-band file without a
   description is named by its file name (``..._B8A.tif``, :func:`band_from_file_name`), so
   band files given in any order (a shell's ``*.tif`` puts B8A last) are put in the model's;
3. otherwise by position, when the files hold exactly as many bands as the model needs and no
   description contradicts the position (a band described "B04" in the slot of B02): the
   result says so, and the engine turns it into a warning;
4. otherwise an error that says which bands are missing and how to choose them.

:func:`suggest_band_mapping` (the dock's table) follows the same rules for one file. Names are
compared after normalisation (:func:`~landfuse.models.sensors.band_key`), so "B8A", "b8a",
"B08A", "S2_B8A" and "Band 8A" all match "B8A", "B2" matches "B02", and the modality's sensor
decides what a colour name means ("red" is B04 for Sentinel-2, B4 for Landsat, R for RGB); a
description that is only a number ("Band 3", "3") is a position, not a name.
"""

import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple, Union

from ..models.sensors import Sensor, band_key, normalise_band_name  # noqa: F401 (re-exported)
from .errors import BandMismatchError

#: A sensor table or None (:mod:`landfuse.models.sensors`): whose aliases name the bands.
SensorLike = Optional[Sensor]


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


_POSITIONAL = re.compile(r"^(?:band)?[\s_-]*\d+$", re.IGNORECASE)


def band_name_of(description: str, sensor: SensorLike = None) -> str:
    """The canonical band name a description gives, or "" when it names no band.

    Empty descriptions and bare numbers ("3", "Band 3", "band_3": positions, as QGIS and GDAL
    number bands) name nothing. With a sensor, its aliases apply.
    """
    text = (description or "").strip()
    if not text or _POSITIONAL.match(text):
        return ""
    return band_key(text, sensor)


def _contradicts_position(names: Sequence[str], wanted: Sequence[str]) -> List[Tuple[int, str]]:
    """Positions (1-based) whose description names another model band than the one there."""
    wanted_set = set(wanted)
    return [
        (position, name)
        for position, (name, target) in enumerate(zip(names, wanted), start=1)
        if name and name in wanted_set and name != target
    ]


def suggest_band_mapping(
    descriptions: Sequence[str], model_bands: Sequence[str], sensor: SensorLike = None
) -> BandMapping:
    """Choose raster bands for the model's bands (the rules of :func:`resolve_bands`).

    By description when the raster's band descriptions name the model's bands; otherwise, when
    the band counts are equal and no description contradicts it, band i for model band i;
    otherwise what can be matched by name (the rest is missing).

    Args:
        descriptions: The raster's band descriptions in band order ("" when a band has none).
        model_bands: The model's band names for this modality, in the model's order.
        sensor: The modality's sensor (its aliases name the bands), or None.

    Returns:
        The suggested :class:`BandMapping` (``by_description`` False: matched by position).
    """
    wanted = [band_key(b, sensor) for b in model_bands]
    names = [band_name_of(text, sensor) for text in descriptions]
    have: Dict[str, int] = {}
    for index, key in enumerate(names, start=1):
        if key and key not in have:
            have[key] = index
    by_name = tuple(have.get(w) for w in wanted)
    if all(i is not None for i in by_name):
        return BandMapping(tuple(model_bands), by_name, True)
    if len(descriptions) == len(model_bands) and not _contradicts_position(names, wanted):
        return BandMapping(tuple(model_bands), tuple(range(1, len(model_bands) + 1)), False)
    return BandMapping(tuple(model_bands), by_name, True)


BandRef = Union[int, str]


def parse_band_selection(text: str) -> Tuple[BandRef, ...]:
    """``"1,2,3"`` or ``"B02,B03,B8A"`` (mixed allowed) → a band selection; ``()`` for "".

    The command line's ``--<slot>-bands`` and Processing's ``<SLOT>_BANDS`` read it.
    """
    items = [part.strip() for part in (text or "").split(",") if part.strip()]
    return tuple(int(item) if item.isdigit() else item for item in items)


@dataclass(frozen=True)
class FileBands:
    """What the resolver knows of one file of a modality.

    Attributes:
        path: The file (for messages).
        descriptions: Its band descriptions in band order ("" when absent).
        selection: An explicit selection (1-based numbers or band names); empty: none.
        sensor: The modality's sensor (its aliases name the bands), or None.
    """

    path: str
    descriptions: Tuple[str, ...]
    selection: Tuple[BandRef, ...] = ()
    sensor: SensorLike = None

    @property
    def count(self) -> int:
        """Number of bands in the file."""
        return len(self.descriptions)


#: How a model band was matched: chosen by the user, by its name, or by its position.
MATCHED_EXPLICITLY, MATCHED_BY_NAME, MATCHED_BY_POSITION = "explicit", "name", "position"
#: Single-band files named after their band (``T30UWU_20160706_B8A.tif``, ``B02.jp2``).
MATCHED_BY_FILE_NAME = "file name"

_NAME_PARTS = re.compile(r"[_\-.\s]+")
_SENSORLESS_BAND = re.compile(r"^B\d{1,2}A?$", re.IGNORECASE)


def band_from_file_name(path: str, sensor: SensorLike = None) -> str:
    """The band a single-band file's name gives, as a band key; "" when it names none.

    The name is cut at ``_``, ``-``, ``.`` and spaces, and the last part that names a band of
    the sensor wins (``S2A_OPER_MSI_L1C_TL_EPA__20160706T155721_A000849_T30UWU_B8A.tif`` is B8A,
    ``LC09_L2SP_118039_20220101_SR_B4.TIF`` is B4 for Landsat). Without a sensor only
    ``B<number>[A]`` parts count. A part that is only a number is no name.
    """
    stem = str(path).replace("\\", "/").rsplit("/", 1)[-1]
    for part in reversed([p for p in _NAME_PARTS.split(stem) if p]):
        if _POSITIONAL.match(part):
            continue
        if sensor is not None:
            name = sensor.canonical(part)
            if name:
                return band_key(name, sensor)
        elif _SENSORLESS_BAND.match(part):
            return band_key(part)
    return ""


@dataclass(frozen=True)
class ResolvedBands:
    """The file band of each model band, and how it was matched.

    Attributes:
        model_bands: The model's band names, in network order.
        choices: For each model band, ``(file index, 1-based band)``.
        how: ``"explicit"``, ``"name"``, ``"file name"`` (single-band files named after their
            band, with or without descriptions on other files) or ``"position"`` (one rule
            serves the whole modality).
    """

    model_bands: Tuple[str, ...]
    choices: Tuple[Tuple[int, int], ...]
    how: str

    def per_file(self, file_count: int) -> Tuple[Tuple[int, ...], ...]:
        """Bands read from each file, in network order within the file."""
        return tuple(
            tuple(band for index, band in self.choices if index == file)
            for file in range(file_count)
        )

    def read_order(self, file_count: int) -> Tuple[int, ...]:
        """For each model band, its position in the bands as read (files in order, each file's
        bands as :meth:`per_file` lists them); the identity when no reordering is needed."""
        positions: Dict[Tuple[int, int], int] = {}
        for file, bands in enumerate(self.per_file(file_count)):
            for band in bands:
                positions[(file, band)] = len(positions)
        return tuple(positions[choice] for choice in self.choices)


def select_file_bands(item: FileBands) -> Tuple[int, ...]:
    """The 1-based bands an explicit selection takes from one file (all bands when empty).

    Raises:
        BandMismatchError: for an index out of range or a name no band carries.
    """
    if not item.selection:
        return tuple(range(1, item.count + 1))
    lookup: Dict[str, int] = {}
    for band, text in enumerate(item.descriptions, start=1):
        name = band_name_of(text, item.sensor)
        if name:
            lookup.setdefault(name, band)
    chosen: List[int] = []
    for ref in item.selection:
        if isinstance(ref, str) and ref.strip().isdigit():
            ref = int(ref.strip())
        if isinstance(ref, int):
            if not 1 <= ref <= item.count:
                raise BandMismatchError(
                    f"{item.path} has {item.count} band(s); band {ref} does not exist "
                    "(bands count from 1)."
                )
            chosen.append(ref)
            continue
        found = lookup.get(band_key(ref, item.sensor))
        if found is None:
            named = ", ".join(d for d in item.descriptions if d) or "none"
            raise BandMismatchError(
                f"{item.path} has no band described as '{ref}' (descriptions: {named}); "
                "select bands by number instead, e.g. 1,2,3."
            )
        chosen.append(found)
    return tuple(chosen)


def _explicit(files: Sequence[FileBands], model_bands: Sequence[str]) -> ResolvedBands:
    choices = [
        (index, band) for index, item in enumerate(files) for band in select_file_bands(item)
    ]
    return ResolvedBands(tuple(model_bands), tuple(choices), MATCHED_EXPLICITLY)


def resolve_bands(files: Sequence[FileBands], model_bands: Sequence[str]) -> ResolvedBands:
    """Decide which file band feeds each model band (the rules in the module docstring).

    Args:
        files: The files of one modality, in the order given.
        model_bands: The model's band names for this modality, in network order.

    Returns:
        The :class:`ResolvedBands`. An explicit selection may give another number of bands
        than the model needs: the caller checks the count and says what to do.

    Raises:
        BandMismatchError: for a band named twice, a description that contradicts the
            position, or bands that cannot be matched at all.
    """
    sensor = next((item.sensor for item in files if item.sensor is not None), None)
    wanted = [band_key(b, sensor) for b in model_bands]
    if any(item.selection for item in files):
        return _explicit(files, model_bands)
    pool = [
        (index, band, band_name_of(text, sensor))
        for index, item in enumerate(files)
        for band, text in enumerate(item.descriptions, start=1)
    ]
    # A single-band file without a usable description is named by its file name.
    from_names = {
        index: band_from_file_name(item.path, sensor)
        for index, item in enumerate(files)
        if item.count == 1 and not band_name_of(item.descriptions[0], sensor)
    }
    pool = [(index, band, name or from_names.get(index, "")) for index, band, name in pool]
    located: Dict[str, List[Tuple[int, int]]] = {}
    for index, band, name in pool:
        if name:
            located.setdefault(name, []).append((index, band))
    if all(w in located for w in wanted):
        twice = [w for w in wanted if len(located[w]) > 1]
        if twice:
            where = "; ".join(
                f"{model_bands[wanted.index(w)]}: "
                + ", ".join(f"{files[i].path} band {b}" for i, b in located[w])
                for w in twice
            )
            raise BandMismatchError(
                f"Several bands are described as the same model band ({where}); give each band "
                "once, or select the bands explicitly."
            )
        choices = tuple(located[w][0] for w in wanted)
        named_by_file = any(from_names.get(index) for index, _ in choices)
        how = MATCHED_BY_FILE_NAME if named_by_file else MATCHED_BY_NAME
        return ResolvedBands(tuple(model_bands), choices, how)
    names = [name for _, _, name in pool]
    if len(pool) == len(wanted):
        contradictions = _contradicts_position(names, wanted)
        if contradictions:
            shown = ", ".join(
                f"band {position} is described as {name} but would feed {model_bands[position - 1]}"
                for position, name in contradictions[:4]
            )
            missing = [model_bands[i] for i, w in enumerate(wanted) if w not in located]
            repeated = sorted({n for n in names if n and names.count(n) > 1})
            twice = (
                f"; {', '.join(repeated)} {'is' if len(repeated) == 1 else 'are'} described more "
                "than once"
                if repeated
                else ""
            )
            raise BandMismatchError(
                f"The band descriptions do not fit the model's band order ({shown}{twice}), and "
                f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not named by any "
                "band, so the bands can be matched neither by name nor by position. Select "
                "the bands in the model's order explicitly, or fix the descriptions."
            )
        choices = tuple((index, band) for index, band, _ in pool)
        return ResolvedBands(tuple(model_bands), choices, MATCHED_BY_POSITION)
    missing = [model_bands[i] for i, w in enumerate(wanted) if w not in located]
    total = len(pool)
    raise BandMismatchError(
        f"The model needs {len(wanted)} bands ({', '.join(model_bands)}); the file(s) hold "
        f"{total}, and no band is described as {', '.join(missing)}. Select the bands in the "
        "model's order (by number or by name), or give the files of exactly those bands."
    )
