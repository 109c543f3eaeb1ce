"""The engine's errors and exit codes: one class per thing a user can fix, each message says what
to do. The classes live in :mod:`landfuse.models.errors` (the whole family in one module); they
are re-exported here.

All of them derive from :class:`~landfuse.models.errors.LandFuseError`, so a caller (the dock,
a Processing algorithm, the command line, the worker) separates "the user can act on this"
(``LandFuseError``) from "unexpected, see the log" (anything else) with one ``except``.

The command line and the worker map them to exit codes with :func:`exit_code_for`:
``0`` success, ``2`` bad input or a problem the user can fix (every :class:`LandFuseError`
except a cancel), ``3`` cancelled, ``1`` anything unexpected.

The hierarchy is drawn in :mod:`landfuse.models.errors`.
"""

from __future__ import annotations

from ..models.errors import (
    AlignmentError,
    AreaOfInterestError,
    BandMismatchError,
    CancelledError,
    DatasetError,
    DatasetPairingError,
    DeviceError,
    DiskSpaceError,
    EmptyInputError,
    GeoreferenceError,
    InputError,
    InputFileError,
    InputValuesError,
    LandFuseError,
    LayerSourceError,
    MetricsInputError,
    NoOverlapError,
    NotEnoughMemoryError,
    OutOfMemoryError,
    OutputError,
    RequestError,
    TrainingError,
)

__all__ = [
    "EXIT_CANCELLED",
    "EXIT_INPUT",
    "EXIT_OK",
    "EXIT_UNEXPECTED",
    "AlignmentError",
    "AreaOfInterestError",
    "BandMismatchError",
    "CancelledError",
    "DatasetError",
    "DatasetPairingError",
    "DeviceError",
    "DiskSpaceError",
    "EmptyInputError",
    "GeoreferenceError",
    "InputError",
    "InputFileError",
    "InputValuesError",
    "LandFuseError",
    "LayerSourceError",
    "MetricsInputError",
    "NoOverlapError",
    "NotEnoughMemoryError",
    "OutOfMemoryError",
    "OutputError",
    "RequestError",
    "TrainingError",
    "exit_code_for",
]

#: Process exit codes shared by the command line and the worker.
EXIT_OK = 0
EXIT_UNEXPECTED = 1
EXIT_INPUT = 2
EXIT_CANCELLED = 3


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
