"""The engine's errors: one class per thing a user can fix, each message says what to do.

All of them derive from :class:`~landfuse.models.errors.LandFuseError`, so a caller (the dock,
a Processing algorithm, the command line, the worker) separates "the user can act on this"
(``LandFuseError``) from "unexpected, see the log" (anything else) with one ``except``.

The command line and the worker map them to exit codes with :func:`exit_code_for`:
``0`` success, ``2`` bad input or a problem the user can fix (every :class:`LandFuseError`
except a cancel), ``3`` cancelled, ``1`` anything unexpected.

Hierarchy::

    LandFuseError (models/errors.py)
    ├── RequestError            the request itself is inconsistent (tile, overlap, modalities...)
    ├── InputError              an input raster cannot be used
    │   ├── InputFileError      missing or unreadable file
    │   ├── GeoreferenceError   no CRS / no geotransform (plain images need pixel-grid mode)
    │   ├── BandMismatchError   wrong band count for the model, or a band name not found
    │   ├── EmptyInputError     every pixel is nodata (or masked) where the work happens
    │   ├── InputValuesError    the values cannot be what the model expects (8-bit reflectance)
    │   └── AlignmentError      inputs cannot be put on one grid
    │       └── NoOverlapError  inputs do not overlap each other
    ├── AreaOfInterestError     the area of interest is unreadable or outside the inputs
    ├── OutputError             the output folder cannot be written, or outputs already exist
    │   └── DiskSpaceError      not enough free space (checked up front, and a full disk)
    ├── DeviceError             the requested device / precision is not available
    │   ├── OutOfMemoryError    the GPU ran out of memory even with a batch of one
    │   └── NotEnoughMemoryError  the run would need more memory than the machine has free
    └── CancelledError          the run was cancelled; nothing was left behind
"""

from __future__ import annotations

from ..models.errors import LandFuseError

__all__ = [
    "EXIT_CANCELLED",
    "EXIT_INPUT",
    "EXIT_OK",
    "EXIT_UNEXPECTED",
    "AlignmentError",
    "AreaOfInterestError",
    "BandMismatchError",
    "CancelledError",
    "DeviceError",
    "DiskSpaceError",
    "EmptyInputError",
    "GeoreferenceError",
    "InputError",
    "InputFileError",
    "InputValuesError",
    "LandFuseError",
    "NoOverlapError",
    "NotEnoughMemoryError",
    "OutOfMemoryError",
    "OutputError",
    "RequestError",
    "exit_code_for",
]

#: Process exit codes shared by the command line and the worker.
EXIT_OK = 0
EXIT_UNEXPECTED = 1
EXIT_INPUT = 2
EXIT_CANCELLED = 3


class RequestError(LandFuseError, ValueError):
    """The request is inconsistent: a bad tile size, overlap, batch, device name, modality..."""


class InputError(LandFuseError):
    """Base of the problems with an input raster."""


class InputFileError(InputError, OSError):
    """An input file is missing, is not a file, or GDAL cannot read it."""


class GeoreferenceError(InputError):
    """A raster has no CRS or no geotransform (plain images need the pixel-grid mode)."""


class BandMismatchError(InputError):
    """The bands given do not match what the model needs (count, or a band name not found)."""


class EmptyInputError(InputError):
    """An input holds only nodata (or masked) pixels where the work happens."""


class InputValuesError(InputError):
    """An input's data type or values cannot be what the model expects (e.g. 8-bit data for a
    model of Sentinel-2 reflectances): the map would be wrong, so the run is refused."""


class AlignmentError(InputError):
    """Inputs cannot be put on one grid (a georeferenced and a plain image, sizes differ...)."""


class NoOverlapError(AlignmentError):
    """Inputs do not overlap each other, so no pixel has all the data the model needs."""


class AreaOfInterestError(LandFuseError):
    """The area of interest cannot be read, has no CRS, or lies outside the inputs."""


class OutputError(LandFuseError, OSError):
    """The output folder cannot be created or written, or an output already exists."""


class DiskSpaceError(OutputError):
    """Not enough free disk space for the outputs (checked up front, or the disk filled up)."""


class DeviceError(LandFuseError):
    """The requested device or precision is not available on this machine."""


class OutOfMemoryError(DeviceError):
    """The device ran out of memory even with a batch of one tile."""


class NotEnoughMemoryError(DeviceError):
    """The run would need more memory than is free (checked before it starts); the message
    gives the largest tile that fits."""


class CancelledError(LandFuseError):
    """The run was cancelled; its temporary outputs were removed and the inputs are untouched."""


def exit_code_for(error: BaseException) -> int:
    """Return the process exit code for an error (the CLI and the worker share it).

    Args:
        error: The exception that ended the run.

    Returns:
        ``EXIT_CANCELLED`` (3) for a cancel (including Ctrl-C), ``EXIT_INPUT`` (2) for any other
        :class:`LandFuseError`, ``EXIT_UNEXPECTED`` (1) for everything else.
    """
    if isinstance(error, (CancelledError, KeyboardInterrupt)):
        return EXIT_CANCELLED
    if isinstance(error, LandFuseError):
        return EXIT_INPUT
    return EXIT_UNEXPECTED
