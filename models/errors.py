"""The error family of LandFuse.

Every error a user can act on derives from :class:`LandFuseError`, and its message says what to
do; the whole family is here, in the lowest layer, so that every layer raises and catches the
same classes (``core/errors.py`` re-exports them with the exit codes). This module imports
nothing but the standard library, so the QGIS side can import it without torch.

Hierarchy::

    LandFuseError
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

Beside them: ``UnknownModelError``, ``ModelConfigError``, ``InputShapeError`` and the
``WeightsError`` family (missing, unsafe, corrupt, for another model); ``DatasetError`` (an
``InputError``), ``MetricsInputError``, ``TrainingError`` and ``LayerSourceError`` (a layer
QGIS cannot hand to the engine).
"""

from __future__ import annotations

from typing import Sequence


class LandFuseError(Exception):
    """Base of every error a user can act on (the message says what to do)."""


class UnknownModelError(LandFuseError, KeyError):
    """A model name that the registry does not know; the message lists the valid names."""

    def __str__(self) -> str:
        # KeyError.__str__ would wrap the message in quotes; show it as written.
        return str(self.args[0]) if self.args else ""


class ModelConfigError(LandFuseError, ValueError):
    """A network was asked for with an impossible configuration (encoder, stride, bands...)."""


class InputShapeError(LandFuseError, ValueError):
    """Tensors handed to a network do not have the shape it needs (count, bands, size)."""


class WeightsError(LandFuseError):
    """Base for problems with a weights file."""


class WeightsNotFoundError(WeightsError, FileNotFoundError):
    """The weights file does not exist or is not a file."""


class UnsafeWeightsError(WeightsError):
    """The file would need unpickling arbitrary Python objects (possible code execution)."""


class CorruptWeightsError(WeightsError):
    """The file is truncated, unreadable, or its sha256 does not match the recorded one."""


class WeightsMismatchError(WeightsError):
    """The weights do not fit the model: missing, unexpected or mis-shaped keys, or another model.

    Attributes:
        missing: keys the model needs that the file lacks.
        unexpected: keys in the file that the model does not have.
        mismatched: ``(key, shape in file, shape in model)`` for keys whose shapes differ.
    """

    def __init__(
        self,
        message: str,
        missing: Sequence[str] = (),
        unexpected: Sequence[str] = (),
        mismatched: Sequence[tuple[str, tuple[int, ...], tuple[int, ...]]] = (),
    ) -> None:
        super().__init__(message)
        self.missing: tuple[str, ...] = tuple(missing)
        self.unexpected: tuple[str, ...] = tuple(unexpected)
        self.mismatched: tuple[tuple[str, tuple[int, ...], tuple[int, ...]], ...] = tuple(
            mismatched
        )


# --- the engine, datasets, metrics, training and the QGIS side ---------------------------------


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


class DatasetError(InputError):
    """A dataset cannot be read as given (layout, files, values); the message says which."""


class DatasetPairingError(DatasetError):
    """Files that should come in pairs (or sets) do not: the message names each one."""


class MetricsInputError(LandFuseError, ValueError):
    """A prediction or reference handed to the metrics cannot be compared as given."""


class TrainingError(LandFuseError):
    """A training run cannot start or continue as configured; the message says what to change."""


class LayerSourceError(LandFuseError):
    """A layer cannot be handed to the engine as it is (the message says what to do)."""
