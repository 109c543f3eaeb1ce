"""Class tables (legends): value, name and colour of each output class of a registry entry.

Standard library only. A weights file carries its own class table; these are the published
ones the registry entries start from.
"""

from __future__ import annotations

from .specs import ClassSpec

__all__ = ["CHANGE_CLASSES", "DFC20_CLASSES", "HUNAN_CLASSES", "POTSDAM_CLASSES"]

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
