"""The dock's check of the executor (Advanced ▸ Executor): does it answer, with how many workers.

A scheduler address is asked by the worker's Python (``python -m landfuse.core.executor_spec
ADDRESS``, in a QProcess: connecting never freezes QGIS, and Dask must be in that Python, which
is the one that will use it); the local executors say what this machine offers.
"""

import json
from typing import Optional

from qgis.PyQt.QtCore import QProcess, QProcessEnvironment
from qgis.PyQt.QtWidgets import QComboBox, QHBoxLayout, QLabel, QPushButton, QWidget

from ..core.errors import RequestError
from ..core.executor_spec import parse_executor
from ..processing import environment

__all__ = ["ExecutorCheck"]

#: Longest wait for a scheduler's answer (ms), beyond the check's own 10 s connect timeout.
CHECK_TIMEOUT_MS = 20000


class ExecutorCheck(QWidget):
    """A *Check* button and the answer, under the executor's combo box."""

    def __init__(self, executor: QComboBox, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.executor = executor
        self.button = QPushButton("Check", self)
        self.button.setObjectName("LandFuseExecutorCheck")
        self.button.setToolTip(
            "Ask the executor whether it answers and how many workers it has (a scheduler is "
            "asked by the worker Python, which needs Dask)."
        )
        self.answer = QLabel(self)
        self.answer.setObjectName("LandFuseExecutorAnswer")
        self.answer.setWordWrap(True)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.button)
        layout.addWidget(self.answer, 1)
        self.process: Optional[QProcess] = None
        self.button.clicked.connect(self.check)
        executor.editTextChanged.connect(lambda _text: self.answer.clear())

    def check(self) -> None:
        """Start the check of the executor shown (the answer comes in :meth:`show_answer`)."""
        text = self.executor.currentText().strip()
        try:
            spec = parse_executor(text)
        except RequestError as error:
            self.show_answer({"ok": False, "message": str(error)})
            return
        if not spec.uses_jobs:
            self.show_answer({"ok": True, "message": "Tiles are computed in the worker process."})
            return
        self.stop()
        process = QProcess(self)
        env = QProcessEnvironment.systemEnvironment()
        for key, value in environment.worker_environment().items():
            env.insert(key, value)
        process.setProcessEnvironment(env)
        process.finished.connect(lambda code, _status: self._finished(process, code))
        process.errorOccurred.connect(lambda _error: self._finished(process, -1))
        self.process = process
        self.button.setEnabled(False)
        self.answer.setText(f"Asking {spec.describe()}…")
        python = environment.worker_python()
        process.start(python, ["-m", "landfuse.core.executor_spec", text])
        if not process.waitForStarted(5000):
            self._finished(process, -1)

    def _finished(self, process: QProcess, code: int) -> None:
        if process is not self.process:
            return
        self.process = None
        self.button.setEnabled(True)
        out = bytes(process.readAllStandardOutput()).decode("utf-8", "replace").strip()
        try:
            answer = json.loads(out.splitlines()[-1]) if out else {}
        except ValueError:
            answer = {}
        if not answer:
            err = bytes(process.readAllStandardError()).decode("utf-8", "replace").strip()
            answer = {"ok": False, "message": err.splitlines()[-1] if err else
                      f"The worker Python could not check it (exit {code})."}  # fmt: skip
        process.deleteLater()
        self.show_answer(answer)

    def show_answer(self, answer: dict) -> None:
        """Show the answer: green when it answers, red with the reason otherwise."""
        colour = "#2a7d2a" if answer.get("ok") else "#b00020"
        self.answer.setStyleSheet(f"QLabel {{ color: {colour}; }}")
        self.answer.setText(str(answer.get("message", "")))

    def stop(self) -> None:
        """Stop a check still running (the dock closes)."""
        process, self.process = self.process, None
        if process is not None:
            process.blockSignals(True)
            process.kill()
            process.waitForFinished(3000)
            process.deleteLater()
        self.button.setEnabled(True)
