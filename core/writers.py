"""Streaming outputs: tiled GeoTIFF written by bands of rows, then COG, QML styles, JSON report.

DESIGN.md §2.7 and issue 4 item 6. Every raster is first written window by window, in blocks of
whole block rows, to a tiled DEFLATE GeoTIFF inside a temporary folder of the output folder
(``.landfuse-tmp-<pid>-<random>``); memory holds one block row at a time whatever the scene
size. At the end of a successful run each one is turned into a Cloud-Optimised GeoTIFF (GDAL's
COG driver, overviews: nearest for classes, average for continuous values), its QML style is
written beside it, and everything is renamed to its final name. A failed or cancelled run only
ever wrote inside the temporary folder, which is removed.

Products and their encodings (all single-band):

``<name>_classes.tif``
    ``uint8`` class values ``0 .. n-1`` with the model's colour table and class names (GDAL
    category names, in the ``.aux.xml`` beside it, and the ``LANDFUSE_CLASSES`` metadata item);
    nodata **255** (no data in an input, outside the area of interest).
``<name>_confidence.tif``
    ``uint8`` probability of the chosen class in percent, ``0 .. 100``; nodata 255.
``<name>_mask.tif`` (change runs; the default name is ``change``)
    ``uint8`` change mask: 0 no change, 1 change; nodata 255. Colour table: change in red, no
    change transparent.
``<name>_probability.tif``
    ``float32`` probability of change ``0 .. 1``; nodata **-1**.
``<name>_report.json``
    The run report (inputs, model, weights sha256, device, precision, timings, tiles, grid,
    per-class areas in hectares or changed area).

Each raster gets a QML style of the same base name, which QGIS applies automatically when the
layer is added: paletted classes with names, the change colour over a transparent "no change",
a colour ramp for probabilities and confidence.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import time
import uuid
import warnings
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Protocol, Sequence

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio._err import CPLE_BaseError
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.windows import Window

from .errors import DiskSpaceError, OutputError
from .protection import ProtectedFiles, check_destinations
from .raster import Grid
from .signals import critical

logger = logging.getLogger(__name__)

__all__ = [
    "CLASS_NODATA",
    "PROBABILITY_NODATA",
    "TEMP_PREFIX",
    "AreaTally",
    "ClassLike",
    "OutputSet",
    "ProductSpec",
    "StreamingGeoTiff",
    "change_style_qml",
    "check_free_space",
    "class_style_qml",
    "gradient_style_qml",
    "remove_stale_temporaries",
]

#: Reserved value of every uint8 product for "no data".
CLASS_NODATA = 255
#: Nodata value of float probability products.
PROBABILITY_NODATA = -1.0
#: Name prefix of the temporary folders inside an output folder.
TEMP_PREFIX = ".landfuse-tmp-"
#: Colour of "change" in the change mask (a saturated red, like the AMFNet paper's FP colour).
CHANGE_COLOUR = (230, 30, 30)


class ClassLike(Protocol):
    """A class entry (``models.registry.ClassSpec`` has these fields)."""

    value: int
    name: str
    color: tuple[int, int, int]


@dataclass(frozen=True)
class ProductSpec:
    """One raster product of a run.

    Attributes:
        key: Short key (``classes``, ``confidence``, ``change``, ``probability``).
        suffix: File name suffix after ``<name>_``.
        dtype: ``uint8`` or ``float32``.
        nodata: The nodata value.
        description: Band description.
        style: ``"classes"``, ``"change"`` or ``"gradient"`` (the QML written beside it).
        overview_resampling: GDAL overview resampling (``NEAREST`` for classes).
        classes: Class table for paletted products.
        value_range: ``(min, max)`` of the gradient style.
    """

    key: str
    suffix: str
    dtype: str
    nodata: float
    description: str
    style: str
    overview_resampling: str
    classes: tuple[Any, ...] = ()
    value_range: tuple[float, float] = (0.0, 1.0)

    @property
    def bytes_per_pixel(self) -> int:
        """Uncompressed size of one pixel."""
        return int(np.dtype(self.dtype).itemsize)


#: What writing a raster may raise: OS errors, rasterio's, and GDAL's own (which rasterio raises
#: as ``CPLE_*`` classes outside its RasterioError family, e.g. "IO error writing tag data").
WRITE_ERRORS = (RasterioError, CPLE_BaseError, OSError)

#: Below this much free space, a write error is taken for a full disk whatever GDAL's wording.
_FULL_DISK_BYTES = 1 << 20


def _free_bytes(path: Path) -> Optional[int]:
    for candidate in (path, *path.parents):
        try:
            return shutil.disk_usage(candidate).free
        except OSError:
            continue
    return None


def _is_disk_full(error: BaseException, path: Optional[Path] = None) -> bool:
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(error).lower()
    if "no space left" in text or "disk full" in text or "not enough space" in text:
        return True
    # GDAL often reports only the consequence ("IO error writing tag data"): look at the disk.
    free = _free_bytes(path) if path is not None else None
    return free is not None and free < _FULL_DISK_BYTES


def _wrap_io_error(error: BaseException, path: Path) -> OutputError:
    if isinstance(error, OutputError):  # already explained (it is an OSError too)
        return error
    if _is_disk_full(error, path):
        free = _free_bytes(path)
        left = f" ({free / 1e6:.1f} MB left)" if free is not None else ""
        return DiskSpaceError(
            f"The disk is full{left}: it filled up while writing {path}. The partial "
            "outputs were removed; free some space or choose another output folder, then run "
            "again."
        )
    return OutputError(f"Writing {path} failed ({error}); check the output folder.")


class StreamingGeoTiff:
    """A single-band tiled DEFLATE GeoTIFF written window by window.

    Windows may come in any order (a band of rows across the whole width, or the part of it a
    vertical stripe owns), each pixel once. Blocks are assembled in memory until they are
    whole and then written once, so no compressed block is rewritten (no file growth), and
    memory holds only the blocks being assembled: along the bottom and right edges of the
    windows handed in so far.

    Args:
        path: File to create.
        grid: The output grid.
        product: What is written (dtype, nodata, description, class table).
        block: Block edge (256: GDAL's and QGIS's usual tile size).
        zlevel: DEFLATE level (low for temporaries that become COGs).

    Raises:
        OutputError: if the file cannot be created.
    """

    def __init__(
        self, path: Path, grid: Grid, product: ProductSpec, block: int = 256, zlevel: int = 6
    ) -> None:
        self.path = Path(path)
        self.grid = grid
        self.product = product
        self._block = block
        self._next_row = 0
        self._pixels_written = 0
        # Blocks being assembled: (block row, block col) -> (buffer, pixels filled so far).
        self._partial: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        self._done = np.zeros((-(-grid.height // block), -(-grid.width // block)), dtype=bool)
        profile: dict[str, Any] = {
            "driver": "GTiff",
            "width": grid.width,
            "height": grid.height,
            "count": 1,
            "dtype": product.dtype,
            "nodata": product.nodata,
            "tiled": True,
            "blockxsize": block,
            "blockysize": block,
            "compress": "deflate",
            "zlevel": zlevel,
            "predictor": 2 if product.dtype == "uint8" else 3,
            "bigtiff": "IF_SAFER",
        }
        if grid.crs is not None:
            profile["crs"] = grid.crs
        if grid.crs is not None or grid.transform != Affine.identity():
            # A pixel grid has no geotransform: writing the identity one would only warn.
            profile["transform"] = grid.transform
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)  # pixel grids: by design
                self._dst = rasterio.open(self.path, "w", **profile)
            self._dst.set_band_description(1, product.description)
            if product.classes:
                self._dst.write_colormap(1, _colormap(product))
                names = {str(c.value): c.name for c in product.classes}
                self._dst.update_tags(1, LANDFUSE_CLASSES=json.dumps(names))
        except WRITE_ERRORS as error:
            raise _wrap_io_error(error, self.path) from None

    @property
    def rows_written(self) -> int:
        """Rows handed in so far by :meth:`write_rows`."""
        return self._next_row

    @property
    def pixels_written(self) -> int:
        """Pixels handed in so far (by either method)."""
        return self._pixels_written

    @property
    def pending_pixels(self) -> int:
        """Pixels held in blocks not yet whole (the writer's memory, in pixels)."""
        return sum(buffer.size for buffer, _ in self._partial.values())

    def write_rows(self, row: int, data: np.ndarray) -> None:
        """Append rows ``row .. row + len(data)`` (full width, in order).

        Args:
            row: First row; must follow the previous call's last row.
            data: ``[rows, width]`` values of the product's dtype.

        Raises:
            ValueError: if rows come out of order or the width is wrong.
            OutputError: if writing fails (DiskSpaceError when the disk is full).
        """
        if row != self._next_row:
            raise ValueError(f"Rows must come in order: expected row {self._next_row}, got {row}.")
        if data.ndim != 2 or data.shape[1] != self.grid.width:
            raise ValueError(f"Expected [rows, {self.grid.width}] rows, got {data.shape}.")
        self.write_window(row, 0, data)
        self._next_row += data.shape[0]

    def write_window(self, row: int, col: int, data: np.ndarray) -> None:
        """Write ``data`` at ``row, col``; every pixel of the raster must be written once.

        Args:
            row: First row.
            col: First column.
            data: ``[rows, cols]`` values of the product's dtype.

        Raises:
            ValueError: if the window leaves the raster or covers pixels already written.
            OutputError: if writing fails (DiskSpaceError when the disk is full).
        """
        if data.ndim != 2:
            raise ValueError(f"Expected a [rows, cols] array, got {data.shape}.")
        h, w = (int(n) for n in data.shape)
        height, width = self.grid.height, self.grid.width
        if h == 0 or w == 0:
            return
        if row < 0 or col < 0 or row + h > height or col + w > width:
            raise ValueError(
                f"Window rows {row}..{row + h}, cols {col}..{col + w} leaves the "
                f"{width} x {height} raster."
            )
        data = np.asarray(data, dtype=self.product.dtype)
        size = self._block
        for block_row in range(row // size, (row + h - 1) // size + 1):
            top = block_row * size
            r0, r1 = max(row, top), min(row + h, top + size, height)
            block_h = min(size, height - top)
            run: Optional[tuple[int, int]] = None  # whole blocks straight from data: one write
            for block_col in range(col // size, (col + w - 1) // size + 1):
                left = block_col * size
                c0, c1 = max(col, left), min(col + w, left + size, width)
                block_w = min(size, width - left)
                key = (block_row, block_col)
                if self._done[key]:
                    raise ValueError(
                        f"Pixels at rows {r0}..{r1}, cols {c0}..{c1} were already written."
                    )
                whole = (r1 - r0, c1 - c0) == (block_h, block_w)
                if whole and key not in self._partial:
                    run = (run[0], c1) if run is not None else (c0, c1)
                    self._done[key] = True
                    continue
                if run is not None:
                    self._write(data[r0 - row : r1 - row, run[0] - col : run[1] - col], r0, run[0])
                    run = None
                buffer, filled = self._partial.get(key) or (
                    np.empty((block_h, block_w), dtype=self.product.dtype),
                    np.zeros((block_h, block_w), dtype=bool),
                )
                inside = (slice(r0 - top, r1 - top), slice(c0 - left, c1 - left))
                if filled[inside].any():
                    raise ValueError(
                        f"Pixels at rows {r0}..{r1}, cols {c0}..{c1} were already written."
                    )
                buffer[inside] = data[r0 - row : r1 - row, c0 - col : c1 - col]
                filled[inside] = True
                if filled.all():
                    self._partial.pop(key, None)
                    self._done[key] = True
                    self._write(buffer, top, left)
                else:
                    self._partial[key] = (buffer, filled)
            if run is not None:
                self._write(data[r0 - row : r1 - row, run[0] - col : run[1] - col], r0, run[0])
        self._pixels_written += h * w

    def _write(self, data: np.ndarray, row: int, col: int) -> None:
        rows, cols = data.shape
        try:
            self._dst.write(data, 1, window=Window(col, row, cols, rows))
        except WRITE_ERRORS as error:
            raise _wrap_io_error(error, self.path) from None

    def close(self) -> None:
        """Check that every pixel was written and close the file.

        Raises:
            ValueError: if not every pixel was written.
            OutputError: if writing fails.
        """
        if self._dst.closed:
            return
        total = self.grid.width * self.grid.height
        if self._pixels_written != total or self._partial:
            self.abort()
            rows = self._pixels_written // max(1, self.grid.width)
            raise ValueError(
                f"Only {rows} of {self.grid.height} rows were written "
                f"({self._pixels_written} of {total} pixels)."
            )
        try:
            self._dst.close()
        except WRITE_ERRORS as error:
            raise _wrap_io_error(error, self.path) from None

    def abort(self) -> None:
        """Close without finishing (the file is removed with the temporary folder)."""
        if not self._dst.closed:
            try:
                self._dst.close()
            except (RasterioError, OSError):
                logger.debug("Closing an aborted output failed", exc_info=True)


def _colormap(product: ProductSpec) -> dict[int, tuple[int, int, int, int]]:
    table: dict[int, tuple[int, int, int, int]] = {}
    for item in product.classes:
        r, g, b = item.color
        if product.style == "change":
            # Overlay colours: change stands out, no change lets the imagery show through.
            (r, g, b), alpha = (CHANGE_COLOUR, 255) if item.value else ((255, 255, 255), 0)
        else:
            alpha = 255
        table[int(item.value)] = (int(r), int(g), int(b), alpha)
    table[CLASS_NODATA] = (0, 0, 0, 0)
    return table


# --- QML styles -----------------------------------------------------------------------------


def _hex(color: Sequence[int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*(int(c) for c in color[:3]))


def _qml_document(renderer: ET.Element) -> str:
    root = ET.Element("qgis", {"version": "3.22.0", "styleCategories": "Symbology"})
    pipe = ET.SubElement(root, "pipe")
    pipe.append(renderer)
    ET.SubElement(pipe, "brightnesscontrast", {"brightness": "0", "contrast": "0", "gamma": "1"})
    ET.SubElement(
        pipe,
        "huesaturation",
        {
            "saturation": "0",
            "grayscaleMode": "0",
            "colorizeOn": "0",
            "colorizeRed": "255",
            "colorizeGreen": "128",
            "colorizeBlue": "128",
            "colorizeStrength": "100",
        },
    )
    ET.SubElement(pipe, "rasterresampler", {"maxOversampling": "2"})
    ET.SubElement(root, "blendMode").text = "0"
    ET.indent(root)
    body = ET.tostring(root, encoding="unicode")
    return "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n" + body + "\n"


def _paletted(entries: Iterable[tuple[int, Sequence[int], int, str]]) -> ET.Element:
    renderer = ET.Element(
        "rasterrenderer",
        {"type": "paletted", "band": "1", "opacity": "1", "alphaBand": "-1", "nodataColor": ""},
    )
    ET.SubElement(renderer, "rasterTransparency")
    palette = ET.SubElement(renderer, "colorPalette")
    for value, color, alpha, label in entries:
        ET.SubElement(
            palette,
            "paletteEntry",
            {"value": str(value), "color": _hex(color), "alpha": str(alpha), "label": label},
        )
    return renderer


def class_style_qml(classes: Sequence[ClassLike]) -> str:
    """Return a QGIS paletted style for a class map (one entry per class, with its name).

    Args:
        classes: The class table (value, name, RGB colour).

    Returns:
        The QML document text.
    """
    return _qml_document(_paletted((c.value, c.color, 255, c.name) for c in classes))


def change_style_qml(classes: Sequence[ClassLike] = ()) -> str:
    """Return a QGIS style for a change mask: change coloured, no change fully transparent.

    Args:
        classes: The model's two classes (for their names); defaults to no change / change.

    Returns:
        The QML document text.
    """
    names = {int(c.value): c.name for c in classes}
    return _qml_document(
        _paletted(
            [
                (0, (255, 255, 255), 0, names.get(0, "no change")),
                (1, CHANGE_COLOUR, 255, names.get(1, "change")),
            ]
        )
    )


def gradient_style_qml(
    minimum: float, maximum: float, stops: Sequence[tuple[float, Sequence[int], int]]
) -> str:
    """Return a QGIS single-band pseudocolour style with an interpolated colour ramp.

    Args:
        minimum: Value of the first colour.
        maximum: Value of the last colour.
        stops: ``(fraction 0..1, RGB, alpha)`` in increasing order, first at 0 and last at 1.

    Returns:
        The QML document text.
    """
    renderer = ET.Element(
        "rasterrenderer",
        {
            "type": "singlebandpseudocolor",
            "band": "1",
            "opacity": "1",
            "alphaBand": "-1",
            "classificationMin": repr(float(minimum)),
            "classificationMax": repr(float(maximum)),
            "nodataColor": "",
        },
    )
    ET.SubElement(renderer, "rasterTransparency")
    shader = ET.SubElement(
        ET.SubElement(renderer, "rastershader"),
        "colorrampshader",
        {
            "colorRampType": "INTERPOLATED",
            "classificationMode": "1",
            "clip": "0",
            "minimumValue": repr(float(minimum)),
            "maximumValue": repr(float(maximum)),
            "labelPrecision": "2",
        },
    )

    def rgba(color: Sequence[int], alpha: int) -> str:
        return ",".join(str(int(c)) for c in color[:3]) + f",{int(alpha)}"

    ramp = ET.SubElement(shader, "colorramp", {"type": "gradient", "name": "[source]"})
    options = ET.SubElement(ramp, "Option", {"type": "Map"})
    inner = "#".join(f"{frac:g};{rgba(color, alpha)}" for frac, color, alpha in stops[1:-1])
    for name, value in (
        ("color1", rgba(stops[0][1], stops[0][2])),
        ("color2", rgba(stops[-1][1], stops[-1][2])),
        ("discrete", "0"),
        ("rampType", "gradient"),
        ("stops", inner),
    ):
        ET.SubElement(options, "Option", {"type": "QString", "name": name, "value": value})
    span = float(maximum) - float(minimum)
    for frac, color, alpha in stops:
        at = float(minimum) + span * float(frac)
        ET.SubElement(
            shader,
            "item",
            {
                "value": f"{at:g}",
                "label": f"{at:g}",
                "color": _hex(color),
                "alpha": str(alpha),
            },
        )
    return _qml_document(renderer)


#: Probability ramp: transparent white at 0, yellow at 0.5, red at 1.
PROBABILITY_STOPS = (
    (0.0, (255, 255, 255), 0),
    (0.5, (255, 200, 0), 255),
    (1.0, (215, 25, 28), 255),
)
#: Confidence ramp (percent): red (uncertain) to green (confident).
CONFIDENCE_STOPS = (
    (0.0, (215, 25, 28), 255),
    (0.5, (255, 255, 191), 255),
    (1.0, (26, 150, 65), 255),
)


def _style_for(product: ProductSpec) -> str:
    if product.style == "classes":
        return class_style_qml(product.classes)
    if product.style == "change":
        return change_style_qml(product.classes)
    stops = PROBABILITY_STOPS if product.key == "probability" else CONFIDENCE_STOPS
    return gradient_style_qml(product.value_range[0], product.value_range[1], stops)


# --- areas ----------------------------------------------------------------------------------


class AreaTally:
    """Per-class pixel counts and areas, accumulated over bands of rows.

    Args:
        class_values: The class values to count (others, e.g. nodata, are ignored).
        grid: The output grid (pixel areas come from it; None areas for pixel grids).
    """

    def __init__(self, class_values: Sequence[int], grid: Grid) -> None:
        self.values = tuple(int(v) for v in class_values)
        self.grid = grid
        self.pixels = np.zeros(len(self.values), dtype=np.int64)
        self._area_m2: Optional[np.ndarray] = (
            np.zeros(len(self.values), dtype=np.float64) if grid.crs is not None else None
        )
        self._lookup = np.full(256, -1, dtype=np.int64)
        for position, value in enumerate(self.values):
            self._lookup[value] = position

    def add(self, row: int, classes: np.ndarray) -> None:
        """Count the class values of rows ``row .. row + len(classes)``.

        Args:
            row: First row of ``classes`` in the output grid.
            classes: ``uint8 [rows, width]``.
        """
        positions = self._lookup[classes]
        rows = classes.shape[0]
        # One pass per class keeps memory at one boolean band (classes are few).
        counts = np.stack(
            [(positions == k).sum(axis=1) for k in range(len(self.values))], axis=1
        ).astype(np.int64)
        self.pixels += counts.sum(axis=0)
        if self._area_m2 is not None:
            areas = self.grid.pixel_areas_m2(row, rows)
            if areas is None:
                self._area_m2 = None
            else:
                self._area_m2 += (counts * areas[:, None]).sum(axis=0)

    def hectares(self) -> Optional[list[float]]:
        """Area of each class in hectares (None for pixel grids / unknown units)."""
        if self._area_m2 is None:
            return None
        return [float(a) / 10_000.0 for a in self._area_m2]

    def summary(self, names: Sequence[str]) -> list[dict[str, Any]]:
        """Return ``[{value, name, pixels, hectares, percent}]`` for the report."""
        total = int(self.pixels.sum())
        hectares = self.hectares()
        rows = []
        for position, (value, name) in enumerate(zip(self.values, names)):
            pixels = int(self.pixels[position])
            rows.append(
                {
                    "value": value,
                    "name": name,
                    "pixels": pixels,
                    "hectares": None if hectares is None else round(hectares[position], 4),
                    "percent": round(100.0 * pixels / total, 4) if total else 0.0,
                }
            )
        return rows


# --- the output set -------------------------------------------------------------------------


def check_free_space(folder: Path, needed_bytes: int) -> None:
    """Raise when ``folder``'s file system has less than ``needed_bytes`` free.

    Args:
        folder: An existing folder.
        needed_bytes: Estimated bytes the outputs need (temporaries included).

    Raises:
        DiskSpaceError: with both numbers, when there is not enough room.
    """
    free = shutil.disk_usage(folder).free
    if free < needed_bytes:
        raise DiskSpaceError(
            f"The outputs need about {needed_bytes / 1e6:.1f} MB but only {free / 1e6:.1f} MB "
            f"are free in {folder}; free some space, choose another output folder, or use an "
            "area of interest."
        )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(folder: Path) -> int:
    """Remove temporary folders left in ``folder`` by runs that were killed (POSIX only).

    A temporary folder is ``.landfuse-tmp-<pid>-<hex>``; it is stale when no process with that
    id runs any more. Elsewhere than POSIX nothing is removed (no safe liveness check).

    Args:
        folder: An output folder.

    Returns:
        How many folders were removed.
    """
    if os.name != "posix" or not folder.is_dir():
        return 0
    removed = 0
    for entry in folder.iterdir():
        if not (entry.is_dir() and entry.name.startswith(TEMP_PREFIX)):
            continue
        pid_text = entry.name[len(TEMP_PREFIX) :].split("-", 1)[0]
        if pid_text.isdigit() and int(pid_text) != os.getpid() and not _pid_alive(int(pid_text)):
            shutil.rmtree(entry, ignore_errors=True)
            removed += 1
    return removed


@dataclass
class OutputSet:
    """The files of one run: temporaries while running, final names only on success.

    Use as a context manager: the temporary folder is created on entry and removed on exit
    (after :meth:`commit` moved the finished files out of it, or on any failure or cancel).

    Args:
        folder: The output folder (created if missing).
        name: Base name of the files.
        products: The raster products.
        cog: Convert the rasters to Cloud-Optimised GeoTIFF at commit.
        overwrite: Allow replacing existing outputs of the same names; products of the same
            name that this run does not write (e.g. the confidence raster of an earlier run
            that asked for it) are then removed when the run succeeds, so the folder never
            mixes two runs.
        protected: Files that must never be written (the run's inputs, their sidecars, the
            weights: :func:`landfuse.core.protection.request_protected_files`).
        other_suffixes: Suffixes of the task's other products (``confidence``...).
    """

    folder: Path
    name: str
    products: Sequence[ProductSpec]
    cog: bool = True
    overwrite: bool = False
    protected: Optional[ProtectedFiles] = None
    other_suffixes: Sequence[str] = ()
    temp: Optional[Path] = field(default=None, init=False)
    _writers: dict[str, StreamingGeoTiff] = field(default_factory=dict, init=False)
    _created: list[Path] = field(default_factory=list, init=False)
    _published: bool = field(default=False, init=False)

    def final_path(self, suffix: str, extension: str = ".tif") -> Path:
        """The final path of a product (or of the report: ``suffix="report", ".json"``)."""
        return self.folder / f"{self.name}_{suffix}{extension}"

    def final_paths(self) -> list[Path]:
        """Every file a successful run leaves (rasters, their QML and aux files, the report)."""
        paths = []
        for product in self.products:
            tif = self.final_path(product.suffix)
            paths += [tif, tif.with_suffix(".qml")]
        paths.append(self.final_path("report", ".json"))
        return paths

    def stale_paths(self) -> list[Path]:
        """Files of the task's other products under this name, which a successful overwrite
        removes (they would otherwise sit beside the new outputs as if they belonged to them)."""
        paths = []
        for suffix in self.other_suffixes:
            if suffix in {p.suffix for p in self.products}:
                continue
            tif = self.final_path(suffix)
            paths += [tif, tif.with_name(tif.name + ".aux.xml"), tif.with_suffix(".qml")]
        return paths

    def prepare(self) -> None:
        """Check the folder before any work: creatable, writable, no clash with inputs/outputs.

        Raises:
            OutputError: if the folder cannot be created or written, an output would replace
                an input, or an output exists and ``overwrite`` is off.
        """
        folder = self.folder
        if folder.exists() and not folder.is_dir():
            raise OutputError(f"The output path {folder} is a file; give a folder.")
        missing = []
        ancestor = folder
        while not ancestor.exists() and ancestor != ancestor.parent:
            missing.append(ancestor)
            ancestor = ancestor.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
            self._created = missing  # deepest first: removed again if the run fails
        except OSError as error:
            raise OutputError(
                f"The output folder {folder} cannot be created ({error.strerror or error}); "
                "choose a folder you can write to."
            ) from None
        if not os.access(folder, os.W_OK | os.X_OK):
            raise OutputError(f"The output folder {folder} is not writable; choose another.")
        if self.protected is not None:
            check_destinations(
                [(f"the output {p.name}", str(p)) for p in self.final_paths()],
                self.protected,
                fix="choose another output folder or name (--out, --name)",
            )
        for path in self.final_paths():
            if path.exists() and not self.overwrite and path.suffix in {".tif", ".json"}:
                raise OutputError(
                    f"{path} already exists; choose another output name or folder, or allow "
                    "overwriting (--overwrite)."
                )
        remove_stale_temporaries(folder)

    def estimated_bytes(self, grid: Grid) -> int:
        """Worst-case bytes on disk during the run (uncompressed temporaries, COG, overviews)."""
        pixels = grid.width * grid.height
        per_pixel = sum(p.bytes_per_pixel for p in self.products)
        factor = 1.0 + (1.34 if self.cog else 0.0)  # COG copy with overviews (~1/3 more)
        return int(pixels * per_pixel * factor) + (1 << 20)

    def __enter__(self) -> OutputSet:
        try:
            self.temp = self.folder / f"{TEMP_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}"
            self.temp.mkdir()
        except OSError as error:
            raise _wrap_io_error(error, self.folder) from None
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.discard()

    def discard(self) -> None:
        """Close writers, remove the temporary folder and, unless published, created folders.

        A failed or cancelled run thus leaves no trace, not even an empty output folder it made.
        """
        for writer in self._writers.values():
            writer.abort()
        self._writers.clear()
        if self.temp is not None and self.temp.exists():
            shutil.rmtree(self.temp, ignore_errors=True)
        self.temp = None
        if not self._published:
            for created in self._created:
                try:
                    created.rmdir()  # only when empty
                except OSError:
                    break
            self._created = []

    def open_writers(self, grid: Grid) -> dict[str, StreamingGeoTiff]:
        """Create one streaming writer per product in the temporary folder.

        Args:
            grid: The output grid.

        Returns:
            Writers by product key.
        """
        if self.temp is None:
            raise RuntimeError("OutputSet.open_writers() needs the context manager entered.")
        for product in self.products:
            path = self.temp / f"stream_{product.suffix}.tif"
            zlevel = 1 if self.cog else 6  # the COG copy recompresses anyway
            self._writers[product.key] = StreamingGeoTiff(path, grid, product, zlevel=zlevel)
        return dict(self._writers)

    def finish_rasters(self) -> None:
        """Close the writers and finish each raster in the temporary folder.

        Each becomes a Cloud-Optimised GeoTIFF (when ``cog``) named as its final file, with its
        class names and its QML style beside it. Nothing is visible under a final name yet.

        Raises:
            OutputError: if finishing fails (DiskSpaceError for a full disk).
        """
        if self.temp is None:
            raise RuntimeError("OutputSet.finish_rasters() needs the context manager entered.")
        try:
            for product in self.products:
                writer = self._writers.pop(product.key)
                writer.close()
                staged = self.temp / self.final_path(product.suffix).name
                if self.cog:
                    _to_cog(writer.path, staged, product)
                    writer.path.unlink()
                else:
                    writer.path.rename(staged)
                if product.classes:
                    _set_category_names(staged, product)
                staged.with_suffix(".qml").write_text(_style_for(product), encoding="utf-8")
        except WRITE_ERRORS as error:
            raise _wrap_io_error(error, self.folder) from None

    def publish(self, report: dict[str, Any]) -> dict[str, str]:
        """Write the report and move every finished file to its final name.

        Args:
            report: The run report; its ``outputs`` entry (final paths) is filled in here.

        Returns:
            Final paths by product key, plus ``"report"``.

        Raises:
            OutputError: if writing or renaming fails; files already moved are removed again,
                so a failed publish leaves nothing half done.
        """
        if self.temp is None:
            raise RuntimeError("OutputSet.publish() needs the context manager entered.")
        outputs = {p.key: str(self.final_path(p.suffix)) for p in self.products}
        report_path = self.final_path("report", ".json")
        outputs["report"] = str(report_path)
        report["outputs"] = dict(outputs)
        staged: list[tuple[Path, Path]] = []
        try:
            for product in self.products:
                final = self.final_path(product.suffix)
                for name in (final.name, final.name + ".aux.xml", final.with_suffix(".qml").name):
                    source = self.temp / name
                    if source.exists():
                        staged.append((source, self.folder / name))
            staged_report = self.temp / report_path.name
            staged_report.write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
            staged.append((staged_report, report_path))
        except OSError as error:
            raise _wrap_io_error(error, self.folder) from None
        # A stop signal arriving now is held until every file is in place (core/signals.py).
        with critical():
            self._move_into_place(staged)
        self._published = True
        return outputs

    def _move_into_place(self, staged: Sequence[tuple[Path, Path]]) -> None:
        """Rename the staged files to their final names; undo the renames if one fails."""
        moved: list[Path] = []
        try:
            for source, target in staged:
                os.replace(source, target)
                moved.append(target)
            # A stale sidecar of an overwritten output would carry old class names.
            for product in self.products:
                tif = self.final_path(product.suffix)
                aux = tif.with_name(tif.name + ".aux.xml")
                if aux.exists() and aux not in moved:
                    aux.unlink()
            if self.overwrite:
                for stale in self.stale_paths():
                    protected = self.protected is not None and self.protected.owner(str(stale))
                    if stale.exists() and not protected:
                        stale.unlink()
                        logger.info("Removed %s, left by an earlier run of the same name.", stale)
        except OSError as error:
            for target in moved:
                target.unlink(missing_ok=True)
            raise _wrap_io_error(error, self.folder) from None

    def commit(self, report: dict[str, Any]) -> dict[str, str]:
        """:meth:`finish_rasters` then :meth:`publish`.

        Args:
            report: The run report.

        Returns:
            Final paths by product key, plus ``"report"``.
        """
        self.finish_rasters()
        return self.publish(report)


def _to_cog(source: Path, target: Path, product: ProductSpec) -> None:
    """Copy ``source`` to a Cloud-Optimised GeoTIFF with overviews (GDAL's COG driver)."""
    started = time.perf_counter()
    # DEFLATE level 6 shrinks class maps well; float probabilities barely shrink past level 1
    # (their low mantissa bits look random) but take about 1.5x longer to write at level 6
    # (docs/benchmarks.md).
    level = "1" if np.issubdtype(np.dtype(product.dtype), np.floating) else "6"
    options = {
        "COMPRESS": "DEFLATE",
        "LEVEL": level,
        "PREDICTOR": "YES",
        "BLOCKSIZE": "256",
        "OVERVIEW_RESAMPLING": product.overview_resampling,
        "BIGTIFF": "IF_SAFER",
        "NUM_THREADS": "ALL_CPUS",
    }
    rasterio.shutil.copy(str(source), str(target), driver="COG", **options)
    logger.debug("COG %s written in %.2f s", target.name, time.perf_counter() - started)


def _set_category_names(path: Path, product: ProductSpec) -> None:
    """Attach the class names as GDAL category names (kept in ``<file>.aux.xml``)."""
    from osgeo import gdal  # rasterio has no category-name API

    size = max(int(c.value) for c in product.classes) + 1
    names = [""] * size
    for item in product.classes:
        names[int(item.value)] = item.name
    dataset = gdal.Open(str(path), gdal.GA_ReadOnly)
    if dataset is None:
        raise OutputError(f"GDAL cannot reopen {path} to add class names.")
    band = dataset.GetRasterBand(1)
    band.SetCategoryNames(names)
    band = None
    dataset = None  # closing writes the .aux.xml sidecar
