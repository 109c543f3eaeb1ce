"""Warnings of a run: what the user must know about a map that was still made.

Issue 11: inputs far from what the model expects (bands matched by position, values out of the
model's range) produced maps that looked finished and were wrong, without a word. The engine
now collects a :class:`RunWarning` for each such finding while it validates, and every surface
shows them: the command line prints them, Processing pushes them to its feedback, the worker
sends them as protocol lines to the dock (message bar), and the run report lists them under
``"warnings"``. Where a mismatch is certain the engine refuses the run instead
(:class:`~landfuse.core.errors.InputValuesError`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

__all__ = [
    "BANDS_BY_POSITION",
    "INPUT_VALUES",
    "LINEAR_TO_DB",
    "RADIOMETRIC_OFFSET",
    "WEIGHTS_UNVERIFIED",
    "RunWarning",
    "WarningCallback",
]

#: Bands were matched to the model's by their position (the files name no bands).
BANDS_BY_POSITION = "bands_by_position"
#: An input's data type, value range or statistics are far from what the model expects.
INPUT_VALUES = "input_values"
#: The weights file's metadata is covered by no checksum (an old file without its sidecar).
WEIGHTS_UNVERIFIED = "weights_unverified"
#: An additive radiometric offset (Sentinel-2 baseline 04.00) was found and subtracted.
RADIOMETRIC_OFFSET = "radiometric_offset"
#: Backscatter in linear power was converted to the dB the model takes.
LINEAR_TO_DB = "linear_to_db"


@dataclass(frozen=True)
class RunWarning:
    """One finding the user must read before trusting the map.

    Attributes:
        code: What kind of finding (:data:`BANDS_BY_POSITION`, :data:`INPUT_VALUES`...).
        message: A sentence saying what was found and what to do about it.
        input: The input it concerns (``"s2"``, ``"before"``...), or "" for the run.
    """

    code: str
    message: str
    input: str = ""

    def to_dict(self) -> dict[str, str]:
        """Return a JSON-compatible dict (report entries, the worker's warning lines)."""
        return {"code": self.code, "message": self.message, "input": self.input}


WarningCallback = Callable[[RunWarning], None]
