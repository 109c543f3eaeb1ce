"""The output set of one run: temporaries, free-space checks, COG conversion and publishing.

:class:`OutputSet` owns the temporary folder, opens the streaming writers, turns the finished
rasters into COGs with their class names and styles, and moves everything to its final name;
:func:`check_free_space` and :func:`remove_stale_temporaries` guard the output folder.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import rasterio.shutil

from ..errors import DiskSpaceError, OutputError
from ..protection import ProtectedFiles, check_destinations
from ..raster import Grid
from ..signals import critical
from .base import TEMP_PREFIX, WRITE_ERRORS, ProductSpec, _wrap_io_error
from .stream import StreamingGeoTiff
from .styles import _style_for

logger = logging.getLogger(__name__)


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
