"""A product folder or a folder of band files as one input (issue 13, part 1).

Sentinel-2 as delivered is a ``.SAFE`` folder (L1C: ``GRANULE/<granule>/IMG_DATA/*_B02.jp2``;
L2A: the same under ``R10m/``, ``R20m/``, ``R60m/``, each band at its native resolution and some
again at coarser ones) or a folder of single-band files (``B02.tif``, ``…_B8A.tif``).
:func:`expand_folders` replaces such a folder by its band files, one per band the modality's
sensor knows (the finest resolution where a band comes several times; previews, true-colour
images and quality layers left out), so that the band resolver names each file by its file name
(:func:`~landfuse.core.band_mapping.band_from_file_name`) and the engine reads each at its own
resolution, warped on the fly onto the reference grid. Nothing is written.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Optional, Sequence

from .band_mapping import band_from_file_name
from .errors import InputFileError

__all__ = ["RASTER_SUFFIXES", "expand_folders"]

#: File name endings read as band files inside a folder.
RASTER_SUFFIXES = (".jp2", ".tif", ".tiff", ".img", ".vrt")
#: Parts of a file name that mark a file of a product that is no band (true colour, aerosol,
#: water vapour, scene classification, preview, masks).
_NOT_BANDS = re.compile(r"(?:^|[_\-.])(TCI|AOT|WVP|SCL|PVI|MSK|QI|CLD|SNW)(?:[_\-.]|$)", re.I)
_RESOLUTION = re.compile(r"(?:^|[_\-.])(\d{2,3})m(?:[_\-.]|$)", re.I)


def _resolution(path: Path) -> float:
    """The resolution a file name states (``_20m``), else that of its folder (``R20m``)."""
    for text in (path.name, path.parent.name):
        found = _RESOLUTION.search(text) or re.fullmatch(r"R(\d{2,3})m", text, re.I)
        if found:
            return float(found.group(1))
    return 0.0


def _band_files(folder: Path, sensor: Any) -> list[str]:
    files = sorted(
        p
        for p in folder.rglob("*")
        if p.is_file()
        and p.suffix.lower() in RASTER_SUFFIXES
        and not p.name.endswith(".aux.xml")
        and not _NOT_BANDS.search(p.stem)
    )
    chosen: dict[str, Path] = {}
    for path in files:
        band = band_from_file_name(str(path), sensor)
        if not band:
            continue
        kept = chosen.get(band)
        if kept is None or _resolution(path) < _resolution(kept):
            chosen[band] = path
    if not chosen:
        names = ", ".join(p.name for p in files[:5]) or "no raster files"
        raise InputFileError(
            f"{folder} holds no band files whose names say their band ({names}); give the "
            "band files or a stack, or a Sentinel-2 product folder (.SAFE)."
        )
    return [str(p) for p in chosen.values()]


def expand_folders(paths: Sequence[str], sensor: Optional[Any]) -> list[str]:
    """``paths`` with each folder replaced by its band files (files are kept as given).

    Raises:
        InputFileError: a folder with no band file whose name says its band.
    """
    expanded: list[str] = []
    for text in paths:
        path = Path(text)
        if path.is_dir():
            expanded.extend(_band_files(path, sensor))
        else:
            expanded.append(text)
    return expanded
