"""The lookup tables of ``models`` (architectures, sensors, registry entries): built-in rows,
read-only views, and rows a plugin or a test adds and removes.

Standard library only.
"""

from __future__ import annotations

import types
from typing import Generic, Iterable, Mapping, TypeVar

from .errors import ModelConfigError

__all__ = ["Table"]

Row = TypeVar("Row")


class Table(Generic[Row]):
    """Rows by key; the built-in ones cannot be removed.

    Args:
        what: What a row is, for messages ("sensor", "architecture", "model").
        rows: The built-in rows, by key.
    """

    def __init__(self, what: str, rows: Iterable[tuple[str, Row]]) -> None:
        self.what = what
        self._rows: dict[str, Row] = {}
        for key, row in rows:
            self.add(key, row)
        self.built_in = frozenset(self._rows)
        #: The rows, read-only for everyone but :meth:`add` and :meth:`remove`.
        self.view: Mapping[str, Row] = types.MappingProxyType(self._rows)

    def add(self, key: str, row: Row) -> Row:
        """Add a row; raises ModelConfigError when one of that key exists."""
        if key in self._rows:
            article = "An" if self.what[:1] in "aeiou" else "A"
            raise ModelConfigError(f"{article} {self.what} called {key!r} is already registered.")
        self._rows[key] = row
        return row

    def remove(self, key: str) -> None:
        """Remove an added row (the built-in ones stay; an unknown key is ignored)."""
        if key in self.built_in:
            raise ModelConfigError(f"{key!r} is a built-in {self.what}; it cannot be removed.")
        self._rows.pop(key, None)
