"""No output may ever replace an input: one guard for every surface.

Issue 11: a Processing run with its destination set to its own Sentinel-2 input reported
success and replaced the 13-band image by the class map. The engine refused such clashes, but
Processing moved the engine's product onto its destination afterwards without asking. Every
place that writes a file a user named (the engine's outputs, Processing's destinations and
report, the training outputs, vectorised polygons, assessment tables) now asks
:func:`check_destinations` first, with the :class:`ProtectedFiles` of the run's inputs.

What is protected: each input raster and every file its dataset is made of
(:func:`landfuse.core.integrity.dataset_files`: ``.aux.xml``, ``.ovr``, world files, a VRT's
sources), the reference-grid raster, the weights file and its sidecar, an area-of-interest or
label file (with a Shapefile's parts). Files are compared by their real path (symbolic links
followed) and, where both exist, by device and inode, which also catches hard links and the
other spellings of one file on case-insensitive file systems.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Optional, Sequence

from .errors import OutputError
from .integrity import dataset_files

__all__ = ["ProtectedFiles", "check_destinations", "derived_files", "vector_files"]

#: Parts of a Shapefile (and the indexes GDAL / QGIS write beside it).
_SHAPEFILE_PARTS = (".shp", ".shx", ".dbf", ".prj", ".cpg", ".qix", ".sbn", ".sbx", ".qml")


def vector_files(path: str) -> list[str]:
    """The files of a vector dataset: the file, and for a Shapefile all its parts.

    Args:
        path: A GeoPackage, GeoJSON, Shapefile...

    Returns:
        Absolute paths, the file first.
    """
    files = [os.path.abspath(path)]
    stem, extension = os.path.splitext(path)
    if extension.lower() == ".shp":
        files += [os.path.abspath(stem + part) for part in _SHAPEFILE_PARTS[1:]]
    files.append(os.path.abspath(path + "-wal"))  # SQLite / GeoPackage journal files
    files.append(os.path.abspath(path + "-shm"))
    return files


def derived_files(destination: str) -> list[str]:
    """The files a raster written to ``destination`` brings with it (style, aux, overviews).

    Args:
        destination: The path a product is written to.

    Returns:
        Absolute paths, the destination first.
    """
    stem = os.path.splitext(destination)[0]
    return [
        os.path.abspath(p)
        for p in (destination, destination + ".aux.xml", destination + ".ovr", stem + ".qml")
    ]


def _key(path: str) -> str:
    return os.path.normcase(os.path.realpath(path))


def _inode(path: str) -> Optional[tuple[int, int]]:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


@dataclass
class ProtectedFiles:
    """Files no output may replace, each with what it is (for the message).

    Use :meth:`add_raster`, :meth:`add_file` and :meth:`add_vector`, then
    :func:`check_destinations`.
    """

    _by_path: dict[str, str] = field(default_factory=dict)
    _by_inode: dict[tuple[int, int], str] = field(default_factory=dict)

    def add_file(self, path: Optional[str], what: str) -> ProtectedFiles:
        """Protect one file (e.g. the weights file), whether it exists or not."""
        if path:
            self._by_path.setdefault(_key(path), what)
            inode = _inode(path)
            if inode is not None:
                self._by_inode.setdefault(inode, what)
        return self

    def add_raster(self, path: Optional[str], what: str) -> ProtectedFiles:
        """Protect a raster and every file of its dataset (sidecars, a VRT's sources)."""
        if path:
            for index, name in enumerate(dataset_files(path)):
                self.add_file(name, what if index == 0 else f"{what} (a file of {path})")
        return self

    def add_vector(self, path: Optional[str], what: str) -> ProtectedFiles:
        """Protect a vector file and, for a Shapefile, all its parts."""
        if path:
            for name in vector_files(path):
                self.add_file(name, what)
        return self

    def add_weights(self, path: Optional[str]) -> ProtectedFiles:
        """Protect a weights file and its JSON sidecar."""
        if path:
            self.add_file(path, f"the weights file {path}")
            self.add_file(path + ".json", f"the sidecar of the weights file {path}")
        return self

    def owner(self, path: str) -> Optional[str]:
        """What ``path`` is, when it is protected; None when it may be written."""
        found = self._by_path.get(_key(path))
        if found is not None:
            return found
        inode = _inode(path)
        return self._by_inode.get(inode) if inode is not None else None

    def __len__(self) -> int:
        return len(self._by_path)


def check_destinations(
    destinations: Mapping[str, Optional[str]] | Iterable[tuple[str, Optional[str]]],
    protected: ProtectedFiles,
    with_derived: bool = True,
    fix: str = "choose another file name or folder for it",
) -> None:
    """Refuse any destination that is (or whose style / aux files are) a protected file.

    Args:
        destinations: ``what → path`` (e.g. ``{"the land-cover map": "/data/s2.tif"}``);
            empty paths are skipped.
        protected: The run's :class:`ProtectedFiles`.
        with_derived: Also check the ``.aux.xml``, ``.ovr`` and ``.qml`` a raster brings.
        fix: What the user should do, ending the message.

    Raises:
        OutputError: naming the destination, the input it would replace, and the fix.
    """
    items: Sequence[tuple[str, Optional[str]]] = (
        list(destinations.items()) if isinstance(destinations, Mapping) else list(destinations)
    )
    seen: dict[str, str] = {}
    for what, path in items:
        if not path:
            continue
        candidates = derived_files(path) if with_derived else [os.path.abspath(path)]
        for candidate in candidates:
            owner = protected.owner(candidate)
            if owner is not None:
                clash = "" if candidate == os.path.abspath(path) else f" (its file {candidate})"
                raise OutputError(
                    f"Writing {what} to {path}{clash} would replace {owner}; nothing was "
                    f"written and the input is untouched: {fix}."
                )
        key = _key(path)
        if key in seen:
            raise OutputError(
                f"{what} and {seen[key]} would both be written to {path}; give each its own "
                "file name."
            )
        seen[key] = what


def request_protected_files(request: object) -> ProtectedFiles:
    """The protected files of a land-cover or change request.

    Args:
        request: A :class:`~landfuse.core.requests.LandCoverRequest` or ``ChangeRequest``.

    Returns:
        Every input raster (with its dataset's files), the reference raster, the weights file
        and its sidecar, and the area-of-interest file.
    """
    protected = ProtectedFiles()
    for item in getattr(request, "inputs", ()):
        for source in item.sources:
            protected.add_raster(source.path, f"the {item.key} input {source.path}")
    for label in ("before", "after"):
        for source in getattr(request, label, ()):
            protected.add_raster(source.path, f"the '{label}' image {source.path}")
    protected.add_raster(getattr(request, "reference", None), "the reference-grid raster")
    protected.add_weights(getattr(request, "weights", None))
    aoi = getattr(request, "aoi", None)
    if aoi is not None and getattr(aoi, "polygon_file", None):
        protected.add_vector(aoi.polygon_file, f"the area-of-interest file {aoi.polygon_file}")
    return protected
