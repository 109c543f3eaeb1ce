"""SIGTERM and SIGINT stop a run cleanly, at any stage, leaving nothing behind.

The command line and the worker install :class:`StopOnSignal`: the first SIGTERM or SIGINT
raises :class:`~landfuse.core.errors.CancelledError` in the main thread, which unwinds through
the engine's clean-up (the temporary folder and any folder the run created are removed; the
inputs were only ever read). A second signal during that clean-up is ignored, so it cannot
interrupt it. SIGINT is handled even when the process inherited it as ignored (a background
job started by a script), so ``kill -INT`` stops it as it stops a job in the foreground.

The few steps that must not be cut in half (moving the finished files to their final names)
run inside :func:`critical`: a signal arriving there is held until the step is done, and the
run then ends as it would have a moment later. SIGKILL cannot be caught: the next run in the
same folder removes the temporary folder it left
(:func:`landfuse.core.writers.remove_stale_temporaries`).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Any, Iterator, Optional

from .errors import CancelledError

__all__ = ["StopOnSignal", "critical", "stop_requested"]

_lock = threading.Lock()
_critical_depth = 0
_active: Optional[StopOnSignal] = None


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


class StopOnSignal:
    """Turns the first SIGTERM / SIGINT into a :class:`CancelledError` in the main thread.

    Use :meth:`install` once at the start of a process (main thread only), then pass
    :meth:`requested` as (part of) the engine's cancel check.
    """

    def __init__(self) -> None:
        self.signal: Optional[int] = None
        self._previous: dict[int, Any] = {}

    @property
    def cancelled(self) -> bool:
        """Whether a stop signal arrived."""
        return self.signal is not None

    def requested(self) -> bool:
        """The engine's cancel check: True once a stop signal arrived."""
        return self.cancelled

    def __call__(self, signum: int, _frame: Any) -> None:
        if self.signal is not None:
            return  # a second signal must not interrupt the clean-up of the first
        self.signal = signum
        if _critical_depth > 0:
            return  # held: the step in progress finishes the run
        raise CancelledError(
            f"The run was stopped ({_signal_name(signum)}); its temporary files were removed "
            "and no output was written."
        )

    def install(self) -> StopOnSignal:
        """Handle SIGTERM and SIGINT in this process (call from the main thread)."""
        global _active
        for name in ("SIGTERM", "SIGINT"):
            number = getattr(signal, name, None)
            if number is not None:
                self._previous[number] = signal.signal(number, self)
        _active = self
        return self

    def restore(self) -> None:
        """Put back the handlers that were there before :meth:`install`."""
        global _active
        for number, previous in self._previous.items():
            signal.signal(number, previous if previous is not None else signal.SIG_DFL)
        self._previous.clear()
        if _active is self:
            _active = None


def stop_requested() -> bool:
    """Whether an installed :class:`StopOnSignal` has received a signal."""
    return _active is not None and _active.cancelled


@contextlib.contextmanager
def critical() -> Iterator[None]:
    """Hold stop signals until the block is done (a step that must not be cut in half).

    Nesting is allowed. A signal held here is not raised afterwards: the step it waited for was
    the last one of the run, so the run ends normally and says that it had finished.
    """
    global _critical_depth
    with _lock:
        _critical_depth += 1
    try:
        yield
    finally:
        with _lock:
            _critical_depth -= 1
