"""'Install PyTorch for LandFuse': the managed environment, from the dock (issue 16).

Under the orange box that says torch is missing, :class:`TorchSetup` offers to install it into
an environment in the QGIS profile folder (:mod:`landfuse.processing.managed_env`), shows what
it will install and why (CPU, the CUDA build of the NVIDIA driver, Apple MPS) and asks first.
The installation runs in a background task with its progress, its pip log and Cancel; once
checked, the environment becomes the worker's interpreter and the dock probes it again. The
environment's state, *Repair* and *Remove* are in the same widget (shown in Advanced).
"""

from pathlib import Path
from typing import Optional

from qgis.core import Qgis, QgsApplication, QgsMessageLog, QgsSettings, QgsTask
from qgis.PyQt.QtCore import pyqtSignal
from qgis.PyQt.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..processing import environment, managed_env

__all__ = ["InstallTask", "TorchSetup", "env_folder"]

LOG_TAG = "LandFuse"


def env_folder() -> Path:
    """The managed environment's folder in the QGIS profile."""
    return Path(QgsApplication.qgisSettingsDirPath()) / "landfuse" / "torch-env"


class InstallTask(QgsTask):
    """Runs :func:`managed_env.install` in the background; ``done(self)`` at the end."""

    log_line = pyqtSignal(str)
    step = pyqtSignal(str)
    done = pyqtSignal(object)

    def __init__(self, folder: Path, plan: managed_env.InstallPlan, base_python: str) -> None:
        super().__init__("LandFuse: installing PyTorch", QgsTask.CanCancel)
        self.folder, self.plan, self.base_python = folder, plan, base_python
        self.python: Optional[str] = None
        self.error = ""
        self.cancelled_by_user = False

    def run(self) -> bool:
        def progress(fraction: float, text: str) -> None:
            self.setProgress(100.0 * fraction)
            self.step.emit(text)

        try:
            self.python = str(
                managed_env.install(
                    self.folder,
                    self.base_python,
                    self.plan,
                    log=self.log_line.emit,
                    cancelled=self.isCanceled,
                    progress=progress,
                )
            )
            return True
        except managed_env.InstallCancelledError:
            self.cancelled_by_user = True
        except (managed_env.InstallError, OSError) as error:
            self.error = str(error)
        return False

    def finished(self, ok: bool) -> None:
        self.done.emit(self)


class TorchSetup(QWidget):
    """Install / repair / remove PyTorch for LandFuse; ``installed(python)`` when ready."""

    installed = pyqtSignal(str)
    #: An installation started (True) or ended (False).
    busy = pyqtSignal(bool)

    def __init__(self, parent: QWidget = None) -> None:
        super().__init__(parent)
        self.task: Optional[InstallTask] = None
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.state = QLabel(self)
        self.state.setObjectName("LandFuseTorchState")
        self.state.setWordWrap(True)
        row = QHBoxLayout()
        self.install_button = QPushButton("Install PyTorch for LandFuse", self)
        self.install_button.setObjectName("LandFuseInstallTorch")
        self.install_button.clicked.connect(self.ask_and_install)
        self.remove_button = QPushButton("Remove", self)
        self.remove_button.clicked.connect(self.remove)
        self.cancel_button = QPushButton("Cancel", self)
        self.cancel_button.clicked.connect(self.cancel)
        self.cancel_button.hide()
        for button in (self.install_button, self.remove_button, self.cancel_button):
            row.addWidget(button)
        self.log = QPlainTextEdit(self)
        self.log.setObjectName("LandFuseTorchLog")
        self.log.setReadOnly(True)
        self.log.setMinimumHeight(140)
        self.log.setMaximumHeight(200)
        self.log.hide()
        layout.addWidget(self.state)
        layout.addLayout(row)
        layout.addWidget(self.log)
        self.refresh()

    def plan(self) -> managed_env.InstallPlan:
        return managed_env.choose_build(managed_env.detect_nvidia(), managed_env.is_apple_silicon())

    def refresh(self) -> None:
        state = managed_env.read_state(env_folder())
        if state is None:
            self.state.setText(f"Managed PyTorch: not installed (it would go to {env_folder()}).")
            self.install_button.setText("Install PyTorch for LandFuse")
        else:
            self.state.setText(
                f"Managed PyTorch: torch {state.get('torch')} ({state.get('build')}) in "
                f"{env_folder()}, installed {state.get('date', '')}."
            )
            self.install_button.setText("Repair")
        self.remove_button.setVisible(state is not None and self.task is None)

    def ask_and_install(self) -> None:
        plan = self.plan()
        text = (
            f"LandFuse will create a Python environment in\n{env_folder()}\nfrom QGIS's own "
            f"Python ({environment.default_python()}), keeping QGIS's numpy, GDAL and rasterio, "
            f"and install torch {managed_env.TORCH_VERSION} into it: {plan.why}.\n\n"
            "This downloads a few hundred MB (a CUDA build: about 2.5 GB). Nothing is changed in "
            "QGIS's own Python. Install?"
        )
        answer = QMessageBox.question(self, "Install PyTorch for LandFuse", text)
        if answer == QMessageBox.Yes:
            self.start(plan)

    def start(self, plan: managed_env.InstallPlan, base_python: str = "") -> InstallTask:
        """Start the installation (no question asked)."""
        if managed_env.read_state(env_folder()) is not None:
            managed_env.remove(env_folder())  # Repair: a fresh environment
        self.task = InstallTask(env_folder(), plan, base_python or environment.default_python())
        self.task.log_line.connect(self.log.appendPlainText)
        self.task.step.connect(self.state.setText)
        self.task.done.connect(self._on_done)
        self.log.clear()
        self.log.show()
        self.install_button.setEnabled(False)
        self.remove_button.hide()
        self.cancel_button.show()
        self.busy.emit(True)
        QgsApplication.taskManager().addTask(self.task)
        return self.task

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()

    def _on_done(self, task: InstallTask) -> None:
        self.task = None
        self.busy.emit(False)
        self.install_button.setEnabled(True)
        self.cancel_button.hide()
        self.refresh()
        if task.python:
            QgsSettings().setValue(environment.SETTINGS_WORKER_PYTHON, task.python)
            self.installed.emit(task.python)
        elif task.cancelled_by_user:
            self.state.setText("The installation was cancelled; nothing was left behind.")
        else:
            self.state.setText(f"The installation failed: {task.error.splitlines()[0]}")
            QgsMessageLog.logMessage(task.error, LOG_TAG, Qgis.Critical)

    def remove(self) -> None:
        python = str(managed_env.env_python(env_folder()))
        managed_env.remove(env_folder())
        if QgsSettings().value(environment.SETTINGS_WORKER_PYTHON, "") == python:
            QgsSettings().remove(environment.SETTINGS_WORKER_PYTHON)
            self.installed.emit("")
        self.refresh()
