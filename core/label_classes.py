"""The user's labels as a class table: names from a polygon field, legends of known land-cover
rasters, and colours that read right (water blue, trees green, built-up red).

A polygon layer's class field may hold text (``water``, ``trees``) or numbers; its distinct
values become the classes, in sorted order, and a label mapping sends each value to its class
index. A label raster whose values are those of a published land-cover product (ESA WorldCover,
Esri 10 m land cover) gets that product's class names and colours; other rasters' values name
their classes by their raster category names where they have some, else by their values.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from ..models.specs import ClassSpec
from .errors import DatasetError

__all__ = [
    "KNOWN_LEGENDS",
    "LabelClasses",
    "colour_for",
    "parse_colour",
    "polygon_classes",
    "raster_classes",
]

#: Colours by what a class name says (first match wins), so that a user's "forest" is green.
_NAMED_COLOURS = (
    (r"water|river|lake|sea|ocean|reservoir", (40, 110, 200)),
    (r"wetland|marsh|swamp|mangrove", (0, 150, 160)),
    (r"snow|ice|glacier", (235, 245, 250)),
    (r"cloud", (210, 210, 210)),
    (r"tree|forest|wood", (30, 120, 45)),
    (r"shrub|bush|scrub", (150, 170, 60)),
    (r"grass|pasture|meadow|rangeland|herb", (150, 210, 90)),
    (r"crop|agri|field|farm|arable|orchard|vineyard|rice|paddy", (235, 200, 80)),
    (r"built|urban|city|settlement|building|road|impervious|artificial", (215, 40, 40)),
    (r"bare|sand|rock|soil|desert|unused|quarry", (185, 150, 110)),
    (r"moss|lichen", (200, 220, 160)),
    (r"no.?change|unchanged|background|stable", (235, 235, 235)),
    (r"change", (230, 30, 60)),
)

#: Colours of classes whose names say nothing about a colour (then cycled).
_PALETTE = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
)  # fmt: skip

_HEX = re.compile(r"^#?([0-9a-fA-F]{6})$")


def colour_for(name: str, index: int) -> tuple[int, int, int]:
    """A colour for a class: from its name where the name says what it is, else a palette's."""
    lowered = name.lower()
    for pattern, colour in _NAMED_COLOURS:
        if re.search(pattern, lowered):
            return colour
    return _PALETTE[index % len(_PALETTE)]


def parse_colour(value: Any) -> tuple[int, int, int]:
    """``[r, g, b]``, ``"r,g,b"`` or ``"#rrggbb"`` → an RGB tuple.

    Raises:
        DatasetError: for anything else, saying the accepted forms.
    """
    if isinstance(value, str):
        text = value.strip()
        match = _HEX.match(text)
        if match:
            digits = match.group(1)
            return tuple(int(digits[i : i + 2], 16) for i in (0, 2, 4))  # type: ignore[return-value]
        parts = [p.strip() for p in text.split(",")]
        if len(parts) == 3 and all(p.isdigit() for p in parts):
            value = [int(p) for p in parts]
    if isinstance(value, (list, tuple)) and len(value) == 3:
        try:
            rgb = tuple(int(v) for v in value)
        except (TypeError, ValueError):
            rgb = ()
        if len(rgb) == 3 and all(0 <= v <= 255 for v in rgb):
            return rgb  # type: ignore[return-value]
    raise DatasetError(
        f"{value!r} is not a colour: give '#1f78b4', '31,120,180' or [31, 120, 180]."
    )


@dataclass(frozen=True)
class KnownLegend:
    """A published land-cover product's legend: raster value → (name, colour)."""

    title: str
    classes: Mapping[int, tuple[str, tuple[int, int, int]]]


#: Legends recognised in label rasters by their values (ESA WorldCover 10 m v100/v200; Esri
#: 10 m Annual Land Cover (Impact Observatory), class values and published colours).
KNOWN_LEGENDS = (
    KnownLegend(
        "ESA WorldCover",
        {
            10: ("trees", (0, 100, 0)),
            20: ("shrubland", (255, 187, 34)),
            30: ("grassland", (255, 255, 76)),
            40: ("cropland", (240, 150, 255)),
            50: ("built-up", (250, 0, 0)),
            60: ("bare / sparse vegetation", (180, 180, 180)),
            70: ("snow and ice", (240, 240, 240)),
            80: ("permanent water", (0, 100, 200)),
            90: ("herbaceous wetland", (0, 150, 160)),
            95: ("mangroves", (0, 207, 117)),
            100: ("moss and lichen", (250, 230, 160)),
        },
    ),
    KnownLegend(
        "Esri land cover",
        {
            1: ("water", (65, 155, 223)),
            2: ("trees", (57, 125, 73)),
            4: ("flooded vegetation", (122, 135, 198)),
            5: ("crops", (228, 150, 53)),
            7: ("built area", (196, 40, 27)),
            8: ("bare ground", (165, 155, 143)),
            9: ("snow / ice", (168, 235, 255)),
            10: ("clouds", (97, 97, 97)),
            11: ("rangeland", (227, 226, 195)),
        },
    ),
)


@dataclass(frozen=True)
class LabelClasses:
    """The class table of the user's labels and how label values become class indices.

    Attributes:
        classes: Values 0..n-1, names and colours.
        label_map: Label value (text or number) → class index (255: not used).
        legend: The recognised product legend ("" when none).
    """

    classes: tuple[ClassSpec, ...]
    label_map: Mapping[Any, int]
    legend: str = ""

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.classes]


def _table(values: Sequence[Any], names: Sequence[str], colours: Sequence[Any]) -> LabelClasses:
    classes = tuple(
        ClassSpec(i, str(name), parse_colour(colour) if colour is not None else colour_for(name, i))
        for i, (name, colour) in enumerate(zip(names, colours))
    )
    return LabelClasses(classes, {value: i for i, value in enumerate(values)})


def polygon_classes(
    values: Sequence[Any], colours: Optional[Mapping[Any, Any]] = None
) -> LabelClasses:
    """The classes of a polygon layer's class field: one per distinct value, sorted.

    Args:
        values: The field's value of every feature (text or numbers; empty values are skipped).
        colours: Optional value → colour (``#rrggbb``, ``r,g,b`` or ``[r, g, b]``).

    Raises:
        DatasetError: no feature has a value, or a colour is malformed.
    """
    given = [v for v in values if v is not None and str(v).strip() != ""]
    if not given:
        raise DatasetError("No polygon has a value in the class field: label some polygons.")
    numbers = all(isinstance(v, (int, float)) and float(v).is_integer() for v in given)
    distinct = sorted({int(v) for v in given} if numbers else {str(v).strip() for v in given})
    names = [f"class {v}" if numbers else v for v in distinct]
    chosen = dict(colours or {})
    table = _table(distinct, names, [chosen.get(v) for v in distinct])
    if not numbers:  # text values: the features' own spellings map too (" Water " → "Water")
        mapping = dict(table.label_map)
        for raw in values:
            if raw is not None and str(raw).strip() in mapping:
                mapping[raw] = mapping[str(raw).strip()]
        table = LabelClasses(table.classes, mapping)
    return table


def raster_classes(
    values: Sequence[int],
    category_names: Optional[Sequence[str]] = None,
    ignore_values: Sequence[int] = (255,),
) -> LabelClasses:
    """The classes of a label raster's values: a known product's legend, else the raster's
    category names, else the values themselves.

    Args:
        values: The distinct values found in the raster (sampled).
        category_names: The raster's category names (index = value), where it has them.
        ignore_values: Values that mean "no label" (the raster's nodata is left out before);
            a known product's legend leaves out every value it does not name (0 in WorldCover).
    """
    present = sorted(int(v) for v in set(np.asarray(values).ravel().tolist()))
    names_of = list(category_names or [])
    # A product's legend by its values: three of them at least (0, 1, 2 could be anything),
    # and only where the raster does not name its own categories.
    for legend in () if any(names_of) else KNOWN_LEGENDS:
        known = [v for v in present if v in legend.classes]
        unknown = [v for v in present if v not in legend.classes and v not in (0, 255)]
        if len(known) >= 3 and not unknown:
            names = [legend.classes[v][0] for v in known]
            table = _table(known, names, [legend.classes[v][1] for v in known])
            mapping = dict(table.label_map)
            mapping.update({v: 255 for v in present if v not in legend.classes})
            return LabelClasses(table.classes, mapping, legend.title)

    def named(value: int) -> str:
        return names_of[value] if value < len(names_of) and names_of[value] else ""

    kept = [v for v in present if v not in ignore_values or named(v)]
    if not kept:
        raise DatasetError(
            "The label raster holds no class values (only "
            f"{', '.join(map(str, present)) or 'nodata'}): give a raster of class values."
        )
    names = [named(v) or f"class {v}" for v in kept]
    table = _table(kept, names, [None] * len(kept))
    mapping = dict(table.label_map)
    mapping.update({v: 255 for v in present if v not in kept})
    return LabelClasses(table.classes, mapping)
