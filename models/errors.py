"""The error family of LandFuse.

Every error a user can act on derives from :class:`LandFuseError`, and its message says what to
do. ``core/errors.py`` subclasses :class:`LandFuseError` for the engine's errors. This module
imports nothing but the standard library, so the QGIS side can import it without torch.
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
