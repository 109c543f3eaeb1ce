"""Processing without torch in QGIS's Python: the run goes to the worker process (issue 16).

The toolbox, the Graphical Modeler, batch runs and ``qgis_process`` run algorithms in QGIS's
own Python. When torch imports there the engine runs in that thread, as before; when it does
not, :func:`run_in_worker` runs the request in ``python -m landfuse.core.worker`` with the
interpreter of *LandFuse ▸ Advanced ▸ Worker Python* (the same one the dock uses), forwards its
progress and warnings to the algorithm's feedback and cancels it when the user cancels. The
error, when no interpreter has torch, says what to set or install.
"""

import importlib.util
import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Dict, Optional

from qgis.core import QgsProcessingException, QgsProcessingFeedback
from qgis.PyQt.QtCore import Qt

from . import environment
from .task import InferenceTask

__all__ = [
    "WorkerResult",
    "no_torch_message",
    "run_in_worker",
    "torch_in_process",
    "worker_has_torch",
]


def torch_in_process() -> bool:
    """Whether torch imports in this (QGIS's) Python."""
    return importlib.util.find_spec("torch") is not None


#: One probe per interpreter and QGIS session: Processing asks before every run.
_probe = lru_cache(maxsize=8)(environment.probe_python)


def worker_has_torch(python: Optional[str] = None) -> bool:
    """Whether the worker interpreter has torch (probed once per interpreter)."""
    return _probe(python or environment.worker_python()).has_torch


def no_torch_message(python: str) -> str:
    """What to do when neither QGIS's Python nor the worker's has torch."""
    return (
        "PyTorch is not installed for QGIS's Python nor for the LandFuse worker "
        f"({python}), so LandFuse cannot run the network. Either set LandFuse ▸ Advanced ▸ "
        "Worker Python (in the LandFuse dock) to an interpreter that has torch, or install it: "
        + environment.torch_install_help(python).replace("\n", " ")
    )


def run_in_worker(
    request: Any,
    feedback: QgsProcessingFeedback,
    on_warning: Optional[Callable[[Dict[str, Any]], None]] = None,
    python: Optional[str] = None,
) -> Dict[str, Any]:
    """Run a mapping or training request in the worker process, in this thread.

    Args:
        request: a land-cover or change request, or a training request.
        feedback: the algorithm's feedback: progress and messages go there, and its cancel
            stops the worker.
        on_warning: receives each warning of the run as it comes.
        python: the interpreter (default: the worker's).

    Returns:
        The worker's result (``outputs``, ``summary`` or the training's ``assessment``).

    Raises:
        QgsProcessingException: the run failed (its message), or was cancelled.
    """
    python = python or environment.worker_python()
    task = InferenceTask(request, python)
    task.progressChanged.connect(feedback.setProgress, Qt.DirectConnection)
    task.progress_text.connect(feedback.setProgressText, Qt.DirectConnection)
    feedback.canceled.connect(task.cancel, Qt.DirectConnection)
    seen = []

    def warned(event: Dict[str, Any]) -> None:
        for warning in task.warnings[len(seen) :]:
            seen.append(warning)
            if on_warning is not None:
                on_warning(warning)

    task.progress_event.connect(warned, Qt.DirectConnection)
    feedback.pushInfo(f"Running in the LandFuse worker ({python}): QGIS's Python has no torch.")
    try:
        ok = task.run()
    finally:
        feedback.canceled.disconnect(task.cancel)
    warned({})
    if task.cancelled_by_user or feedback.isCanceled():
        raise QgsProcessingException("Cancelled; nothing was written.")
    if not ok or task.result is None:
        failure = task.failure
        message = failure.message if failure is not None else "The LandFuse worker failed."
        if failure is not None and failure.details:
            feedback.reportError(failure.details, False)
        raise QgsProcessingException(message)
    return task.result


@dataclass(frozen=True)
class WorkerResult:
    """A worker's mapping result as the engine's ``RunResult`` has it (no torch needed)."""

    task: str
    outputs: Dict[str, str]
    report: Dict[str, Any]

    @classmethod
    def of(cls, result: Dict[str, Any]) -> "WorkerResult":
        """From the worker's result line (the report is read from its file)."""
        with open(result["outputs"]["report"], encoding="utf-8") as handle:
            report = json.load(handle)
        return cls(str(result["task"]), dict(result["outputs"]), report)
