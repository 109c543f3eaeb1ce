"""The QgsTask that runs one LandFuse request in the engine's worker process.

DESIGN.md §3: a crash inside torch or a GPU driver must not take QGIS down, and a cancel must
stop the work at once. So the task starts ``python -m landfuse.core.worker``, writes the request
as JSON to its standard input, and reads one JSON object per line from its standard output
(progress, then a result or an error). Cancel kills the process. The task never touches layers:
the dock adds them in its ``done`` slot, on the main thread.
"""

import json
import queue
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

from qgis.core import Qgis, QgsMessageLog, QgsTask
from qgis.PyQt.QtCore import pyqtSignal

from ..core.errors import EXIT_CANCELLED, EXIT_INPUT
from ..core.formatting import format_time_left
from ..core.requests import Request, request_to_dict
from ..core.tasks import get_task
from ..core.writers import TEMP_PREFIX
from . import environment

LOG_TAG = "LandFuse"
STDERR_KEEP = 200  # lines of the worker's stderr kept for the error details
TERMINATE_GRACE_S = 5.0
STAGE_NAMES = {
    "prepare": "Checking inputs",
    "infer": "Mapping",
    "finish": "Writing outputs",
    "done": "Done",
    "train": "Training",
    "assess": "Scoring on the validation pixels",
}


@dataclass(frozen=True)
class RunFailure:
    """Why a run did not produce outputs.

    Attributes:
        kind: the engine's error class name (``InputError``, ``WorkerCrash``…).
        message: what happened and what to do, for the message bar.
        details: traceback or the worker's last output lines, for the "Details" button.
        expected: True for errors a user can act on (bad input, out of memory…); False for
            unexpected ones (bugs, crashes), which point to the log.
    """

    kind: str
    message: str
    details: str = ""
    expected: bool = True


def format_eta(seconds: Optional[float]) -> str:
    """Seconds as a short "about 2 min 05 s left" ("" when unknown)."""
    return format_time_left(seconds)


def progress_line_text(event: Dict[str, Any]) -> str:
    """Status text for one progress event of the worker."""
    stage = STAGE_NAMES.get(str(event.get("stage")), event.get("stage") or "Mapping")
    done, total = event.get("tiles_done"), event.get("tiles_total")
    parts = [str(stage).capitalize()]
    if done is not None and total:
        parts.append(f"tile {done} of {total}")
    if event.get("epoch") and event.get("epochs"):
        loss = event.get("loss")
        parts.append(f"epoch {event['epoch']} of {event['epochs']}")
        if isinstance(loss, (int, float)):
            parts.append(f"loss {loss:.3f}")
    eta = format_eta(event.get("eta_seconds"))
    if eta:
        parts.append(eta)
    return " · ".join(parts)


class InferenceTask(QgsTask):
    """Runs a request in a worker process; emits ``done(self)`` when it has ended.

    After ``done``: ``result`` (the worker's result dict) on success, ``failure`` (a
    :class:`RunFailure`) on error, ``cancelled_by_user`` when cancelled; ``warnings`` holds
    the run's warnings (dicts with ``code``, ``message``, ``input``) whatever the outcome.
    """

    progress_text = pyqtSignal(str)
    #: Every progress line of the worker as it came (a training's epochs and scores).
    progress_event = pyqtSignal(dict)
    done = pyqtSignal(object)

    def __init__(
        self, request: Request, python: str, description: str = "", validate: bool = False
    ) -> None:
        title = get_task(request.task).title.lower()
        checking = f"LandFuse: checking the inputs ({title})"
        label = description or (checking if validate else f"LandFuse: {title}")
        super().__init__(label, QgsTask.CanCancel)
        self.request = request
        self.python = python
        #: Check the request as a run would, and stop (``python -m landfuse.core.worker
        #: --validate``): nothing is computed or written.
        self.validate = validate
        self.result: Optional[Dict[str, Any]] = None
        self.failure: Optional[RunFailure] = None
        self.cancelled_by_user = False
        self.warnings: List[Dict[str, Any]] = []
        self.ended = False
        self._process: Optional[subprocess.Popen] = None
        self._stderr: List[str] = []

    # -- worker thread ---------------------------------------------------------------------
    def run(self) -> bool:
        command = [self.python, "-m", environment.WORKER_MODULE]
        if self.validate:
            command.append("--validate")
        try:
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=environment.worker_environment(),
                cwd=self.request.output_dir if _is_dir(self.request.output_dir) else None,
            )
        except OSError as error:
            self.failure = RunFailure(
                "WorkerStartError",
                f"Cannot start the LandFuse worker with {self.python}: {error}. Check Advanced ▸ "
                "Worker Python.",
            )
            return False
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=_pump, args=(self._process.stdout, lines), daemon=True).start()
        threading.Thread(
            target=_collect, args=(self._process.stderr, self._stderr), daemon=True
        ).start()
        try:
            self._process.stdin.write(json.dumps(_request_data(self.request)))
            self._process.stdin.close()
        except (BrokenPipeError, OSError):
            pass  # the worker died at once; its exit code and stderr tell why below
        finished_stream = False
        while True:
            if self.isCanceled():
                self._kill()
                self.cancelled_by_user = True
                return False
            try:
                line = lines.get(timeout=0.1)
            except queue.Empty:
                if finished_stream and self._process.poll() is not None:
                    break
                continue
            if line is None:
                finished_stream = True
                continue
            self._handle_line(line)
        code = self._process.wait()
        if self.result is not None and code == 0:
            return True
        self._remove_worker_temporaries()  # a crashed worker cannot clean up after itself
        if self.failure is None:
            self.failure = RunFailure(
                "WorkerCrash",
                f"The LandFuse worker stopped unexpectedly (exit code {code}). QGIS is fine and "
                "nothing was written.",
                "\n".join(self._stderr[-STDERR_KEEP:]),
                expected=False,
            )
        return False

    def _handle_line(self, line: str) -> None:
        try:
            event = json.loads(line)
        except ValueError:
            self._stderr.append(line.rstrip())
            return
        kind = event.get("type")
        if kind == "progress":
            fraction = float(event.get("fraction") or 0.0)
            self.setProgress(max(0.0, min(100.0, 100.0 * fraction)))
            self.progress_text.emit(progress_line_text(event))
            self.progress_event.emit(event)
        elif kind == "warning":
            warning = {k: v for k, v in event.items() if k != "type"}
            self.warnings.append(warning)
            QgsMessageLog.logMessage(str(warning.get("message", "")), LOG_TAG, Qgis.Warning)
        elif kind == "result":
            self.result = {k: v for k, v in event.items() if k != "type"}
        elif kind == "error":
            code = int(event.get("exit_code", 1))
            if code == EXIT_CANCELLED:
                self.cancelled_by_user = True
                return
            expected = code == EXIT_INPUT
            self.failure = RunFailure(
                str(event.get("error", "Error")),
                str(event.get("message", "The run failed.")),
                "" if expected else "\n".join(self._stderr[-STDERR_KEEP:]),
                expected,
            )

    def _kill(self) -> None:
        """Stop the worker: SIGTERM lets it remove its temporary files at once; SIGKILL after
        a grace period; then whatever a killed worker left in the output folder is removed."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=TERMINATE_GRACE_S)
            except subprocess.TimeoutExpired:
                process.kill()  # the GPU work stops with the process
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    QgsMessageLog.logMessage(
                        "The worker did not stop after kill.", LOG_TAG, Qgis.Warning
                    )
        self._remove_worker_temporaries()

    def _remove_worker_temporaries(self) -> None:
        folder = Path(self.request.output_dir)
        pid = self._process.pid if self._process is not None else None
        if pid is None or not folder.is_dir():
            return
        for leftover in folder.glob(f"{TEMP_PREFIX}{pid}-*"):
            shutil.rmtree(leftover, ignore_errors=True)

    def cancel(self) -> None:
        super().cancel()
        process = self._process
        if process is not None and process.poll() is None:
            process.terminate()  # non-blocking; run() finishes the job (grace, kill, cleanup)

    # -- main thread ------------------------------------------------------------------------
    def finished(self, ok: bool) -> None:
        if self.isCanceled() and self.result is None:
            self.cancelled_by_user = True
        if self._stderr:
            QgsMessageLog.logMessage(
                "Worker output:\n" + "\n".join(self._stderr[-STDERR_KEEP:]), LOG_TAG, Qgis.Info
            )
        self.ended = True
        self.done.emit(self)


def _request_data(request: Any) -> Dict[str, Any]:
    """The JSON of a mapping request, or of a training request (which says its kind)."""
    to_dict = getattr(request, "to_dict", None)
    return to_dict() if callable(to_dict) else request_to_dict(request)


def _is_dir(path: str) -> bool:
    import os

    return os.path.isdir(path)


def _pump(stream, lines: queue.Queue) -> None:
    for line in iter(stream.readline, ""):
        lines.put(line)
    lines.put(None)


def _collect(stream, sink: List[str]) -> None:
    for line in iter(stream.readline, ""):
        sink.append(line.rstrip())
        if len(sink) > 4 * STDERR_KEEP:
            del sink[: 2 * STDERR_KEEP]


def wait_for(task: InferenceTask, timeout: float) -> bool:
    """Process Qt events until ``task`` has emitted ``done`` (tests and scripts)."""
    from qgis.core import QgsApplication

    start = time.monotonic()
    while not task.ended and time.monotonic() - start < timeout:
        QgsApplication.processEvents()
        time.sleep(0.02)
    return task.ended
