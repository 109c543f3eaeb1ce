"""The dock's look at the worker's Python: torch, its version, the GPUs (a mixin of the dock).

The probe runs in a QProcess, so importing torch never freezes QGIS; what it finds names the
device choices, sets the Train tab's default model, and, without torch, shows the orange box
with the exact commands and keeps Run off.
"""

from qgis.PyQt.QtCore import QProcess, QProcessEnvironment

from ..processing import environment
from .widgets import torch_banner_html

__all__ = ["ProbeMixin"]


class ProbeMixin:
    """Probing of the worker interpreter; see the module docstring."""

    def probe_environment(self) -> None:
        """Look at the worker's Python (torch, GPUs) in the background; show what is missing.

        A QProcess, so that importing torch in the probe never freezes QGIS.
        """
        if self._closed:
            return
        self._stop_probe()
        python = environment.worker_python()
        process = QProcess(self)
        env = QProcessEnvironment.systemEnvironment()
        for key, value in environment.worker_environment().items():
            env.insert(key, value)
        process.setProcessEnvironment(env)
        process.finished.connect(
            lambda code, _status: self._on_probe_finished(process, python, code)
        )
        process.errorOccurred.connect(lambda _error: self._on_probe_finished(process, python, -1))
        self._probe_process = process
        command = environment.probe_command(python)
        process.start(command[0], command[1:])

    def _stop_probe(self) -> None:
        process, self._probe_process = self._probe_process, None
        if process is not None:
            process.blockSignals(True)  # no slot may run on a half-destroyed dock
            process.kill()
            process.waitForFinished(3000)
            process.deleteLater()

    def _on_probe_finished(self, process: QProcess, python: str, code: int) -> None:
        if process is not self._probe_process:
            return
        self._probe_process = None
        stdout = bytes(process.readAllStandardOutput()).decode("utf-8", "replace")
        stderr = bytes(process.readAllStandardError()).decode("utf-8", "replace")
        if code == -1 and not stdout:
            stderr = stderr or f"cannot run {python}: {process.errorString()}"
        self.show_probe(environment.parse_probe(python, code, stdout, stderr))
        process.deleteLater()

    def show_probe(self, probe: environment.PythonProbe) -> None:
        """Show what the worker's Python offers: device names, or how to get torch."""
        self.probe = probe
        python = probe.python
        self.device_line.setText(probe.device_line())
        self.train.device_note = probe.device_line()
        offer = probe.install_offer()
        self.install_torch.setText(offer)
        self.install_torch.setVisible(bool(offer))
        self.torch_setup.refresh()
        if self.probe.has_torch:
            self.torch_banner.hide()
            labels = self.probe.device_labels()
            for index, label in enumerate(labels):
                self.device.setItemText(index, label)
            self.train.set_device(bool(probe.cuda or probe.mps))
        else:
            self.torch_banner.setText(torch_banner_html(python))
            self.torch_banner.show()
        self._update_run_button()
