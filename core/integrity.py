"""Is this raster whole, and which files is it made of? (checked before any pixel is computed)

Two questions every surface asks of an input, answered here once:

- :func:`check_raster_file`: can its pixels be read at all? A GeoTIFF cut short by an
  interrupted copy still opens (its header is at the start) and fails only when the tile loop
  reaches a missing block; a VRT opens even when a file it refers to is gone. Both are found up
  front, from the file's structure (the TIFF block table against the file size, the VRT's source
  list) and from what GDAL says while opening, and raised as
  :class:`~landfuse.core.errors.InputFileError` naming the file and what to do.
- :func:`dataset_files`: every file that makes up a dataset (the file, the sidecars GDAL reads
  or writes beside it, a VRT's sources), so that no output may ever replace one of them
  (:mod:`landfuse.core.protection`).

:func:`read_failure` turns an error raised while reading a window into the same
``InputFileError``, naming the file and the window, for the read paths of
:mod:`landfuse.core.raster`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Any, Iterator, Optional

from rasterio.windows import Window

from .errors import InputFileError

gdal_logger = logging.getLogger("landfuse.gdal")

__all__ = [
    "RASTER_SIDECAR_SUFFIXES",
    "check_raster_file",
    "dataset_files",
    "gdal_messages_to_log",
    "read_failure",
    "vrt_sources",
]

#: Files GDAL reads or writes beside a raster ``X.tif``, as suffixes added to the whole name.
RASTER_SIDECAR_SUFFIXES: tuple[str, ...] = (".aux.xml", ".ovr", ".msk", ".hdr")
#: Files beside a raster that replace its extension (``X.aux``, world files, ENVI headers...).
_EXTENSION_SIDECARS: tuple[str, ...] = (
    ".aux", ".tfw", ".tifw", ".wld", ".jgw", ".pgw", ".j2w", ".prj", ".hdr", ".rpb", ".imd",
    ".qml",  # not GDAL's: the QGIS style the user keeps beside the raster
)  # fmt: skip
#: Blocks looked at in a TIFF's block table at most (a 10980 px strip file has 10980 per band).
_MAX_BLOCKS_CHECKED = 400_000
#: What GDAL says while opening a file whose directory or tags lie past its end.
_DAMAGE_MARKERS = re.compile(
    r"IO error|Read error|Cannot read|truncated|unexpected end|Failed to read",
    re.IGNORECASE,
)


def _is_plain_path(name: str) -> bool:
    """True for a file-system path (not ``/vsicurl/...``, ``HDF5:...`` or a URL)."""
    return not (name.startswith("/vsi") or "://" in name or re.match(r"^[A-Z0-9_]+:", name))


def vrt_sources(path: str, _seen: Optional[set[str]] = None) -> list[str]:
    """Every file a VRT refers to, nested VRTs followed, missing ones included.

    Args:
        path: A ``.vrt`` file.

    Returns:
        Absolute paths of the plain files named by its ``SourceFilename`` elements (in the
        order they appear, each once), those of nested VRTs after their VRT.

    Raises:
        InputFileError: when the VRT is not valid XML.
    """
    seen = _seen if _seen is not None else set()
    real = os.path.realpath(path)
    if real in seen:
        return []
    seen.add(real)
    try:
        root = ElementTree.parse(path).getroot()
    except (ElementTree.ParseError, OSError) as error:
        raise InputFileError(
            f"{path} is not a readable VRT ({error}); rebuild it (Raster ▸ Miscellaneous ▸ "
            "Build Virtual Raster, or gdalbuildvrt)."
        ) from None
    found: list[str] = []
    base = Path(path).resolve().parent
    for element in root.iter("SourceFilename"):
        name = (element.text or "").strip()
        if not name or not _is_plain_path(name):
            continue
        relative = element.get("relativeToVRT", "0") == "1" or element.get("relativetoVRT") == "1"
        source = str((base / name) if relative else Path(name).absolute())
        if source in found:
            continue
        found.append(source)
        if source.lower().endswith(".vrt") and os.path.isfile(source):
            found.extend(s for s in vrt_sources(source, seen) if s not in found)
    return found


def dataset_files(path: str) -> list[str]:
    """The files that make up the raster dataset ``path``, existing or not.

    The file itself; the sidecars GDAL reads or writes beside it (``X.tif.aux.xml``,
    ``X.tif.ovr``, ``X.tif.msk``, ``X.aux``, world files, ENVI headers), whether they exist or
    not, as an output written there would attach to the input; for a VRT, every source it
    refers to, with their sidecars.

    Args:
        path: A raster file.

    Returns:
        Absolute paths, the file first.
    """
    files: list[str] = []

    def add(name: str) -> None:
        absolute = os.path.abspath(name)
        if absolute not in files:
            files.append(absolute)

    def add_with_sidecars(name: str) -> None:
        add(name)
        for suffix in RASTER_SIDECAR_SUFFIXES:
            add(name + suffix)
        stem = os.path.splitext(name)[0]
        for extension in _EXTENSION_SIDECARS:
            add(stem + extension)

    add_with_sidecars(path)
    if path.lower().endswith(".vrt") and os.path.isfile(path):
        try:
            sources = vrt_sources(path)
        except InputFileError:
            sources = []
        for source in sources:
            add_with_sidecars(source)
    return files


def _gdal() -> Any:
    from osgeo import gdal  # rasterio exposes neither the TIFF block table nor error capture

    return gdal


@contextlib.contextmanager
def gdal_messages_to_log() -> Iterator[None]:
    """Send GDAL's messages of this thread to the log (debug) instead of stderr.

    GDAL prints every error as an ``ERROR 1: ...`` line of its own; a full disk printed twenty
    of them before LandFuse's one clear message. The errors still reach LandFuse as
    exceptions (rasterio reads GDAL's last error), so nothing is lost, and ``--verbose`` shows
    the lines in the log. The handler is pushed for the calling thread only (GDAL keeps a
    stack per thread), so QGIS's own handler is left alone.
    """
    gdal = _gdal()

    def handler(level: int, number: int, message: str) -> None:
        gdal_logger.debug("GDAL %s %s: %s", level, number, message)

    gdal.PushErrorHandler(handler)
    try:
        yield
    finally:
        gdal.PopErrorHandler()


def _open_capturing(path: str) -> tuple[Any, list[str]]:
    """Open ``path`` with GDAL, collecting the warnings and errors GDAL reports meanwhile."""
    gdal = _gdal()
    messages: list[str] = []

    def handler(_level: int, _number: int, message: str) -> None:
        messages.append(str(message))

    gdal.PushErrorHandler(handler)
    try:
        dataset = gdal.OpenEx(path, gdal.OF_RASTER | gdal.OF_READONLY)
    except RuntimeError as error:  # gdal.UseExceptions() set by someone else in this process
        messages.append(str(error))
        dataset = None
    finally:
        gdal.PopErrorHandler()
    return dataset, messages


def _tiff_end_of_data(dataset: Any) -> Optional[int]:
    """The largest ``offset + size`` of any block of the TIFF's bands and overviews, or None."""
    interleave = dataset.GetMetadataItem("INTERLEAVE", "IMAGE_STRUCTURE") or ""
    count = 1 if interleave.upper() == "PIXEL" else dataset.RasterCount
    end: Optional[int] = None
    checked = 0
    for index in range(1, count + 1):
        band = dataset.GetRasterBand(index)
        levels = [band] + [band.GetOverview(i) for i in range(band.GetOverviewCount())]
        for level in levels:
            if level is None:
                continue
            block_w, block_h = level.GetBlockSize()
            columns = -(-level.XSize // max(1, block_w))
            rows = -(-level.YSize // max(1, block_h))
            for y in range(rows):
                for x in range(columns):
                    checked += 1
                    if checked > _MAX_BLOCKS_CHECKED:
                        return end
                    offset = level.GetMetadataItem(f"BLOCK_OFFSET_{x}_{y}", "TIFF")
                    size = level.GetMetadataItem(f"BLOCK_SIZE_{x}_{y}", "TIFF")
                    if offset and size:
                        block_end = int(offset) + int(size)
                        end = block_end if end is None else max(end, block_end)
    return end


def _damaged(path: str, what: str) -> InputFileError:
    return InputFileError(
        f"{path} is damaged or incomplete ({what}): its pixels cannot all be read. Copy or "
        "download it again (an interrupted copy leaves a file cut short), or export it again "
        "from the software that made it."
    )


def check_raster_file(path: str) -> None:
    """Check, without decoding its pixels, that a raster file can be read completely.

    - A VRT: every source it refers to exists (and, nested VRTs included, is checked in turn).
    - A GeoTIFF: every block of the block table (bands and overviews) lies inside the file.
    - Any file: GDAL reports no read error while opening it, and the first and last pixels of
      its first band can be read (one block each).

    Args:
        path: An existing raster file (its existence and permissions are checked before).

    Raises:
        InputFileError: naming the file, what is wrong and what to do.
    """
    if path.lower().endswith(".vrt"):
        for source in vrt_sources(path):
            if not os.path.exists(source):
                raise InputFileError(
                    f"{path} refers to {source}, which does not exist: the VRT was moved "
                    "without its files, or a file was deleted. Put the file back, or build the "
                    "VRT again (Raster ▸ Miscellaneous ▸ Build Virtual Raster)."
                )
            if os.path.isfile(source) and source.lower().endswith((".tif", ".tiff", ".vrt")):
                check_raster_file(source)
    dataset, messages = _open_capturing(path)
    damage = next((m for m in messages if _DAMAGE_MARKERS.search(m)), None)
    if dataset is None:
        return  # not openable by GDAL at all: the caller's open says so, with the reason
    try:
        if damage is not None:
            raise _damaged(path, damage.strip()[:200])
        driver = dataset.GetDriver().ShortName
        if driver == "GTiff":
            end = _tiff_end_of_data(dataset)
            size = os.path.getsize(path)
            if end is not None and end > size:
                raise _damaged(
                    path,
                    f"{size:,} bytes, but its blocks need {end:,}: the end of the file is missing",
                )
        elif driver != "VRT" and dataset.RasterCount:
            _read_corners(dataset, path)
    finally:
        dataset = None


def _read_corners(dataset: Any, path: str) -> None:
    """Read the first and the last pixel of band 1 (one block each) through GDAL."""
    gdal = _gdal()
    band = dataset.GetRasterBand(1)
    messages: list[str] = []

    def handler(_level: int, _number: int, message: str) -> None:
        messages.append(str(message))

    gdal.PushErrorHandler(handler)
    try:
        for x, y in ((0, 0), (dataset.RasterXSize - 1, dataset.RasterYSize - 1)):
            try:
                data = band.ReadRaster(x, y, 1, 1)
            except RuntimeError as error:
                messages.append(str(error))
                data = None
            if data is None:
                raise _damaged(path, (messages[-1] if messages else "a block cannot be read")[:200])
    finally:
        gdal.PopErrorHandler()


def read_failure(path: str, window: Window, error: BaseException) -> InputFileError:
    """The input error for a failed read of ``window`` (work grid) of ``path``.

    Args:
        path: The file being read.
        window: The window of the work grid being read.
        error: What GDAL / rasterio raised.

    Returns:
        An :class:`InputFileError` naming the file and the window, saying what to do.
    """
    detail = str(error).strip().splitlines()[0][:300] if str(error).strip() else type(error)
    where = (
        f"columns {int(window.col_off)}-{int(window.col_off + window.width) - 1}, rows "
        f"{int(window.row_off)}-{int(window.row_off + window.height) - 1} of the output grid"
    )
    return InputFileError(
        f"Reading {path} failed at {where} ({detail}). The file is damaged or incomplete, or a "
        "file it refers to is missing or was changed during the run: copy it again (or rebuild "
        "the VRT) and run again. No output was written."
    )
