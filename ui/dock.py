"""The LandFuse dock: land cover and change detection runs, and the project's raster layers.

The dock reads its widgets into a frozen request (:mod:`landfuse.core.requests`), hands it to
:class:`~landfuse.processing.task.InferenceTask` and, when the task ends, shows the result. It
never reads pixels and never builds a network (DESIGN.md §2).
"""

import contextlib
import html
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from qgis.core import (
    Qgis,
    QgsApplication,
    QgsMapLayer,
    QgsMapLayerProxyModel,
    QgsMessageLog,
    QgsProject,
    QgsSettings,
)
from qgis.gui import QgsCollapsibleGroupBox, QgsDockWidget, QgsFileWidget, QgsMapLayerComboBox
from qgis.PyQt.QtCore import QProcess, Qt, QTimer, QUrl
from qgis.PyQt.QtGui import QDesktopServices
from qgis.PyQt.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QRadioButton,
    QScrollArea,
    QSizePolicy,
    QTabWidget,
    QTreeWidget,
    QVBoxLayout,
    QWidget,
)

from ..core.errors import LandFuseError
from ..core.run_options import RUN_OPTIONS
from ..core.tasks import TASKS
from ..processing import environment, layers
from ..processing.results import RunSummary, add_result_layers, summarise
from ..processing.task import LOG_TAG, InferenceTask, RunFailure
from . import project_settings
from .demo_run import start_link
from .dock_probe import ProbeMixin
from .executor_check import ExecutorCheck
from .layers_panel import SETTINGS_SHOW_BANDS, LayersPanel, project_raster_layers
from .run_options import option_value, option_widget
from .task_panel import TaskPanel, panel_class
from .torch_setup import TorchSetup
from .train_tab import TrainTab

__all__ = ["SETTINGS_SHOW_BANDS", "LandFuseDock"]


# --------------------------------------------------------------------------------------------
# The dock
# --------------------------------------------------------------------------------------------
def _scrolled(panel: QWidget) -> QScrollArea:
    """A tab page that scrolls vertically and wraps its text instead of clipping it sideways."""
    area = QScrollArea()
    area.setWidgetResizable(True)
    area.setFrameShape(QScrollArea.NoFrame)
    area.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
    panel.setContentsMargins(4, 4, 4, 4)
    area.setWidget(panel)
    return area


class LandFuseDock(ProbeMixin, QgsDockWidget):
    """The LandFuse panel."""

    def __init__(self, parent: QWidget = None, iface=None) -> None:
        super().__init__("LandFuse", parent)
        self.setObjectName("LandFuseDock")
        self.setMinimumWidth(420)
        self.iface = iface
        self.task: Optional[InferenceTask] = None
        self.last_summary: Optional[RunSummary] = None
        self.last_warnings: List[Dict[str, Any]] = []
        self.last_failure: Optional[RunFailure] = None
        self.probe: Optional[environment.PythonProbe] = None
        self._probe_process: Optional[QProcess] = None
        self._closed = False

        body = QWidget(self)
        outer = QVBoxLayout(body)
        outer.setContentsMargins(4, 4, 4, 4)

        self.torch_banner = QLabel(body)
        self.torch_banner.setObjectName("LandFuseTorchBanner")
        self.torch_banner.setWordWrap(True)
        self.torch_banner.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.torch_banner.setStyleSheet(
            "QLabel { background: #fff4e5; border: 1px solid #e0a040; padding: 6px; }"
        )
        self.torch_banner.hide()
        outer.addWidget(self.torch_banner)
        self.install_torch = QPushButton("Install PyTorch for LandFuse…", body)
        self.install_torch.setObjectName("LandFuseInstallTorchButton")
        self.install_torch.hide()
        outer.addWidget(self.install_torch)

        self.tabs = QTabWidget(body)
        self.panels: List[TaskPanel] = [panel_class(t.name)(self.tabs) for t in TASKS]
        for panel in self.panels:
            setattr(self, panel.task_name, panel)  # dock.landcover, dock.change
            panel.start_requested.connect(lambda link, p=panel: start_link(self, p, link))
        self.layers_panel = LayersPanel(self.tabs)
        for panel in self.panels:
            self.tabs.addTab(_scrolled(panel), panel.task.title)
        self.train = TrainTab(self.tabs, dock=self)
        self.train_page = _scrolled(self.train)
        self.tabs.addTab(self.train_page, "Train")
        self.tabs.addTab(self.layers_panel, "Layers")
        self.tabs.currentChanged.connect(self._on_tab_changed)
        outer.addWidget(self.tabs, 1)

        self.area_box = self._build_area_box(body)
        outer.addWidget(self.area_box)
        self.advanced_box = self._build_advanced_box(body)
        outer.addWidget(self.advanced_box)
        self.install_torch.clicked.connect(self._offer_torch)

        self.device_line = QLabel("Looking for PyTorch and the GPUs …", body)
        self.device_line.setObjectName("LandFuseDeviceLine")
        self.device_line.setWordWrap(True)
        self.device_line.setStyleSheet("QLabel { color: #555; }")
        outer.addWidget(self.device_line)
        buttons = QHBoxLayout()
        self.run_button = QPushButton("Run", body)
        self.run_button.setObjectName("LandFuseRun")
        self.run_button.setDefault(True)
        self.run_button.clicked.connect(self.run)
        self.check_button = QPushButton("Check inputs", body)
        self.check_button.setObjectName("LandFuseCheck")
        self.check_button.setToolTip(
            "Check the inputs as a run would (files, bands, values against the model's "
            "statistics, weights, memory) without computing a map; what to check is listed above."
        )
        self.check_button.clicked.connect(lambda: self.run(validate=True))
        self.cancel_button = QPushButton("Cancel", body)
        self.cancel_button.setObjectName("LandFuseCancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        buttons.addWidget(self.run_button, 1)
        buttons.addWidget(self.check_button)
        buttons.addWidget(self.cancel_button)
        outer.addLayout(buttons)
        self.progress = QProgressBar(body)
        self.progress.setRange(0, 100)
        self.progress.setValue(0)
        outer.addWidget(self.progress)
        self.status = QLabel("Ready.", body)
        self.status.setObjectName("LandFuseStatus")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextBrowserInteraction)
        self.status.setOpenExternalLinks(False)
        self.status.linkActivated.connect(self._open_link)
        outer.addWidget(self.status)
        self.setWidget(body)

        project = QgsProject.instance()
        self._connections: List[Tuple[object, Callable]] = []
        self._connect(project.layersAdded, self._on_layers_changed)
        self._connect(project.layersRemoved, self._on_layers_changed)
        self._connect(project.cleared, self._on_layers_changed)
        self._connect(project.readProject, self._on_project_read)
        self._renamed_layers: List[QgsMapLayer] = []
        self._on_layers_changed()
        self.restore_project_settings()
        self._wire_checks()
        QTimer.singleShot(0, self.probe_environment)

    # -- building blocks ------------------------------------------------------------------------
    def _build_area_box(self, parent: QWidget) -> QGroupBox:
        box = QGroupBox("Area", parent)
        layout = QVBoxLayout(box)
        self.area_group = QButtonGroup(box)
        self.area_whole = QRadioButton("Whole layer (where all inputs overlap)", box)
        self.area_extent = QRadioButton("Current map extent", box)
        self.area_polygons = QRadioButton("Polygons of a layer", box)
        for index, button in enumerate((self.area_whole, self.area_extent, self.area_polygons)):
            self.area_group.addButton(button, index)
            layout.addWidget(button)
        self.area_whole.setChecked(True)
        row = QHBoxLayout()
        self.polygon_layer = QgsMapLayerComboBox(box)
        self.polygon_layer.setFilters(QgsMapLayerProxyModel.PolygonLayer)
        self.polygon_layer.setObjectName("LandFusePolygonLayer")
        self.selected_only = QCheckBox("Selected features only", box)
        row.addWidget(self.polygon_layer, 1)
        row.addWidget(self.selected_only)
        layout.addLayout(row)
        self.area_group.buttonToggled.connect(self._on_area_changed)
        self._on_area_changed()
        return box

    def _build_advanced_box(self, parent: QWidget) -> QgsCollapsibleGroupBox:
        box = QgsCollapsibleGroupBox("Advanced", parent)
        box.setObjectName("LandFuseAdvanced")
        form = QFormLayout(box)
        self.option_widgets = {}
        for option in RUN_OPTIONS:
            widget = option_widget(option, box)
            self.option_widgets[option.name] = widget
            setattr(self, option.name, widget)  # dock.tile, dock.device... (tests, scripts)
        self.pixel_grid = QCheckBox("Inputs are plain images without georeferencing", box)
        self.pixel_grid.setToolTip(
            "Pixel-grid mode for images such as LEVIR-CD PNGs: all inputs must have the same "
            "width and height; the outputs carry no CRS. Not possible with a map area."
        )
        self.output_dir = QgsFileWidget(box)
        self.output_dir.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Fixed)
        self.output_dir.setStorageMode(QgsFileWidget.GetDirectory)
        self.output_dir.setObjectName("LandFuseOutputDir")
        self.output_hint = QLabel(box)
        self.output_hint.setWordWrap(True)
        self.output_hint.setStyleSheet("QLabel { color: #555; }")
        self.output_dir.fileChanged.connect(self._update_output_hint)
        self.worker_python = QgsFileWidget(box)
        self.worker_python.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Fixed)
        self.worker_python.setStorageMode(QgsFileWidget.GetFile)
        self.worker_python.setToolTip(
            "The Python interpreter that runs the network (needs torch). Empty: QGIS's own Python."
        )
        self.worker_python.setFilePath(
            QgsSettings().value(environment.SETTINGS_WORKER_PYTHON, "", type=str)
        )
        self.worker_python.fileChanged.connect(self._on_worker_python_changed)
        for option in RUN_OPTIONS:
            form.addRow(option.label, self.option_widgets[option.name])
        self.executor_check = ExecutorCheck(self.option_widgets["executor"], box)
        form.addRow(self.executor_check)
        form.addRow(self.pixel_grid)
        form.addRow("Output folder", self.output_dir)
        form.addRow(self.output_hint)
        form.addRow("Worker Python", self.worker_python)
        self.torch_setup = TorchSetup(box)
        self.torch_setup.installed.connect(self.worker_python.setFilePath)
        self.torch_setup.busy.connect(self.install_torch.setDisabled)
        form.addRow(self.torch_setup)
        box.setCollapsed(True)
        self._update_output_hint()
        return box

    def _wire_checks(self) -> None:
        for panel in self.panels:
            panel.weights.fileChanged.connect(panel.check)
            panel.checked_problems.connect(self._update_run_button)
        self._on_tab_changed()

    # -- signal bookkeeping: everything connected here is disconnected in cleanup() ------------
    def _connect(self, signal, slot) -> None:
        signal.connect(slot)
        self._connections.append((signal, slot))

    def cleanup(self) -> None:
        """Disconnect every project signal; cancel a running task (called by ``unload``)."""
        self._closed = True
        for signal, slot in self._connections:
            # TypeError/RuntimeError: the sender is already gone (project cleared, layer deleted)
            with contextlib.suppress(TypeError, RuntimeError):
                signal.disconnect(slot)
        self._connections = []
        self._untrack_layer_names()
        self._stop_probe()
        self.executor_check.stop()
        self.torch_setup.cancel()
        if self.train.task is not None:
            with contextlib.suppress(RuntimeError):
                self.train.task.cancel()
        if self.task is not None:
            with contextlib.suppress(RuntimeError):
                self.task.cancel()
            self.task = None

    def _untrack_layer_names(self) -> None:
        for layer in self._renamed_layers:
            with contextlib.suppress(TypeError, RuntimeError):
                layer.nameChanged.disconnect(self._on_layers_changed)
        self._renamed_layers = []

    # -- compatibility with the Layers tab for callers that knew the first dock --------------
    @property
    def tree(self) -> QTreeWidget:
        return self.layers_panel.tree

    @property
    def empty_label(self) -> QLabel:
        return self.layers_panel.empty_label

    @property
    def show_bands(self) -> QCheckBox:
        return self.layers_panel.show_bands

    def refresh(self, *_args) -> None:
        self._on_layers_changed()

    # -- reactions --------------------------------------------------------------------------
    def _on_layers_changed(self, *_args) -> None:
        self._untrack_layer_names()
        for layer in project_raster_layers():
            layer.nameChanged.connect(self._on_layers_changed)
            self._renamed_layers.append(layer)
        self.layers_panel.refresh()
        if hasattr(self, "run_button"):
            for panel in [*self.panels, *self.train.inputs.values()]:
                panel.refresh_layers()
            self.train.update_estimate()
            self._update_run_button()

    def _on_area_changed(self, *_args) -> None:
        polygons = self.area_polygons.isChecked()
        self.polygon_layer.setEnabled(polygons)
        self.selected_only.setEnabled(polygons)

    def _offer_torch(self) -> None:
        self.advanced_box.setCollapsed(False)  # its log and Cancel are there
        self.torch_setup.ask_and_install()

    def _on_worker_python_changed(self, path: str) -> None:
        QgsSettings().setValue(environment.SETTINGS_WORKER_PYTHON, path)
        self.probe_environment()

    def _update_output_hint(self, *_args) -> None:
        folder = self.output_dir.filePath() or str(layers.output_folder_default())
        self.output_hint.setText(f"Outputs go to {folder}")

    def current_panel(self) -> Optional[TaskPanel]:
        widget = self.tabs.currentWidget()
        if isinstance(widget, QScrollArea):
            widget = widget.widget()
        return widget if isinstance(widget, TaskPanel) else None

    def panel_for(self, task_name: str) -> Optional[TaskPanel]:
        """The mapping tab of a task (None for an unknown task)."""
        return next((p for p in self.panels if p.task_name == task_name), None)

    def show_panel(self, panel: QWidget) -> None:
        """Bring the tab holding ``panel`` to the front."""
        for index in range(self.tabs.count()):
            page = self.tabs.widget(index)
            if page is panel or (isinstance(page, QScrollArea) and page.widget() is panel):
                self.tabs.setCurrentIndex(index)
                return

    def _on_tab_changed(self, *_args) -> None:
        panel = self.current_panel()
        if panel is not None:
            panel.check()  # updates the buttons through checked_problems
        self._update_run_button()

    def torch_missing(self) -> bool:
        """Whether the probe found no torch for the worker (None yet: not known, not missing)."""
        return self.probe is not None and not self.probe.has_torch

    def _update_run_button(self, *_args) -> None:
        panel = self.current_panel()
        running = self.task is not None
        problems = panel is not None and not panel.problem.isHidden()
        no_torch = self.torch_missing()
        self.run_button.setEnabled(
            panel is not None and not running and not problems and not no_torch
        )
        self.check_button.setEnabled(panel is not None and not running and not no_torch)
        self.run_button.setToolTip(
            "PyTorch is missing for the worker: see the orange box above."
            if no_torch
            else "Fix what is listed in red first."
            if problems
            else "Map with the chosen model and layers (in the background)."
        )
        self.cancel_button.setEnabled(running)
        # The Train tab has its own buttons and progress; the mapping area is not for it.
        training = self.tabs.currentWidget() is getattr(self, "train_page", None)
        for widget in (self.area_box, self.run_button, self.check_button, self.cancel_button):
            widget.setVisible(not training)
        self.progress.setVisible(not training)
        self.device_line.setVisible(not training)
        self.status.setVisible(not training)

    # -- project settings ---------------------------------------------------------------------
    def save_project_settings(self) -> None:
        """Remember the dock's choices in the project (saved with the .qgz)."""
        project_settings.save(self)

    def restore_project_settings(self) -> None:
        """Restore the choices saved in the project, if any."""
        project_settings.restore(self)

    def _on_project_read(self, *_args) -> None:
        self._on_layers_changed()
        self.restore_project_settings()

    @staticmethod
    def problem_label_hidden(panel: TaskPanel) -> bool:
        """Whether the panel's problem text is hidden (nothing stops a run)."""
        return panel.problem.isHidden()

    # -- run ----------------------------------------------------------------------------------
    def common_options(self) -> dict:
        """The request fields every task shares, read from the Area and Advanced widgets."""
        folder = self.output_dir.filePath() or str(layers.output_folder_default())
        options = {
            option.name: option_value(option, self.option_widgets[option.name])
            for option in RUN_OPTIONS
        }
        options.update(
            {"output_dir": folder, "pixel_grid": self.pixel_grid.isChecked(), "name": None}
        )
        if self.area_extent.isChecked():
            canvas = self.iface.mapCanvas() if self.iface is not None else None
            if canvas is None:
                raise layers.LayerSourceError("There is no map canvas to take the extent from.")
            options["aoi"] = layers.extent_area(
                canvas.extent(), canvas.mapSettings().destinationCrs()
            )
        elif self.area_polygons.isChecked():
            run_folder = Path(folder) / ".landfuse_aoi"
            options["aoi"] = layers.export_polygons(
                self.polygon_layer.currentLayer(), self.selected_only.isChecked(), run_folder
            )
        return options

    def build_request(self):
        """The frozen request for the current tab (raises LandFuseError with what to fix)."""
        panel = self.current_panel()
        if panel is None:
            raise layers.LayerSourceError("Choose the tab of a task (not Layers) to run.")
        problems = panel.check()
        if problems:
            raise layers.LayerSourceError(" ".join(problems))
        request = panel.build_request(self.common_options())
        name = self._unique_name(Path(request.output_dir), request.task)
        return type(request)(**{**request.__dict__, "name": name})

    @staticmethod
    def _unique_name(folder: Path, task: str) -> str:
        index = 1
        while any(folder.glob(f"{task}_{index:03d}*")):
            index += 1
        return f"{task}_{index:03d}"

    def run(self, validate: bool = False) -> None:
        """Start a run of the current tab in the background (refused while one runs); with
        ``validate``, only check its inputs as the run would (nothing is written)."""
        if self.task is not None:
            self.show_message(
                "A LandFuse run is already going: wait for it or cancel it.", Qgis.Warning
            )
            return
        if self.torch_missing():
            text = "PyTorch is missing for the worker: install it as the orange box says."
            self.status.setText(f"<span style='color:#b00020'>{html.escape(text)}</span>")
            self.show_message(text, Qgis.Warning)
            return
        try:
            request = self.build_request()
        except LandFuseError as error:
            self.status.setText(f"<span style='color:#b00020'>{html.escape(str(error))}</span>")
            self.show_message(str(error), Qgis.Warning)
            return
        self.save_project_settings()
        self.task = InferenceTask(request, environment.worker_python(), validate=validate)
        self.task.progress_text.connect(self._on_progress_text)
        self.task.progressChanged.connect(lambda value: self.progress.setValue(int(value)))
        self.task.done.connect(self._on_task_done)
        self.progress.setValue(0)
        self.status.setText("Checking the inputs …" if validate else f"Starting {request.name} …")
        self._update_run_button()
        QgsApplication.taskManager().addTask(self.task)

    def cancel(self) -> None:
        if self.task is not None:
            self.status.setText("Cancelling …")
            self.task.cancel()

    def _on_progress_text(self, text: str) -> None:
        self.status.setText(html.escape(text))

    def _on_task_done(self, task: InferenceTask) -> None:
        self.task = None
        self._update_run_button()
        if task.cancelled_by_user:
            self.progress.setValue(0)
            self.status.setText("Cancelled: nothing was written.")
            self.show_message("LandFuse run cancelled: nothing was written.", Qgis.Info)
            return
        if task.failure is not None:
            self.last_failure = task.failure
            self.progress.setValue(0)
            self.status.setText(
                f"<span style='color:#b00020'>{html.escape(task.failure.message)}</span>"
            )
            self.show_failure(task.failure)
            return
        if task.validate:
            self._show_check(task)
            return
        summary = summarise(task.result)
        self.last_summary = summary
        added = add_result_layers(task.result, QgsProject.instance())
        self.progress.setValue(100)
        report = task.result.get("report", "")
        link = (
            f" <a href='{QUrl.fromLocalFile(report).toString()}'>Open the report</a>"
            if report
            else ""
        )
        self.last_warnings = list(task.warnings)
        warned = ""
        if task.warnings:
            items = "".join(f"<li>{html.escape(w.get('message', ''))}</li>" for w in task.warnings)
            warned = (
                "<br><span style='color:#8a5300'><b>Check before trusting this map:</b></span>"
                f"<ul style='margin:0'>{items}</ul>"
            )
        self.status.setText(html.escape(summary.text) + link + warned)
        self.show_success(summary, report, added)
        for warning in task.warnings:
            self.show_message(f"Check the map: {warning.get('message', '')}", Qgis.Warning)

    def _show_check(self, task: InferenceTask) -> None:
        """The outcome of 'Check inputs': what to check, under the panel, before any run."""
        self.progress.setValue(0)
        panel = self.current_panel()
        messages = [str(w.get("message", "")) for w in task.warnings]
        if panel is not None:
            panel.set_checked(messages)
        if messages:
            self.status.setText(
                f"Inputs checked: {len(messages)} thing(s) to check before trusting the map "
                "(listed above)."
            )
        else:
            self.status.setText("Inputs checked: nothing to report. Run when ready.")

    def _open_link(self, link: str) -> None:
        QDesktopServices.openUrl(QUrl(link))

    # -- message bar --------------------------------------------------------------------------
    def show_message(self, text: str, level=Qgis.Info) -> None:
        QgsMessageLog.logMessage(text, LOG_TAG, level)
        if self.iface is not None:
            self.iface.messageBar().pushMessage("LandFuse", text, level=level, duration=8)

    def show_success(self, summary: RunSummary, report: str, added: list) -> None:
        QgsMessageLog.logMessage(
            summary.text + (f" Report: {report}" if report else ""), LOG_TAG, Qgis.Success
        )
        if self.iface is None:
            return
        bar = self.iface.messageBar()
        item = bar.createMessage("LandFuse", summary.text)
        if report:
            button = QPushButton("Open report", item)
            button.clicked.connect(lambda: QDesktopServices.openUrl(QUrl.fromLocalFile(report)))
            item.layout().addWidget(button)
        bar.pushWidget(item, Qgis.Success, 15)

    def show_failure(self, failure: RunFailure) -> None:
        level = Qgis.Warning if failure.expected else Qgis.Critical
        text = failure.message
        if not failure.expected:
            text = f"Unexpected error: {failure.message} See the LandFuse tab of the log panel."
        QgsMessageLog.logMessage(f"{failure.message}\n{failure.details}", LOG_TAG, level)
        if self.iface is None:
            return
        bar = self.iface.messageBar()
        item = bar.createMessage("LandFuse", text)
        button = QPushButton("Details", item)
        button.clicked.connect(lambda: self._show_details(failure))
        item.layout().addWidget(button)
        bar.pushWidget(item, level, 0)

    def _show_details(self, failure: RunFailure) -> None:
        box = QMessageBox(QMessageBox.Warning, "LandFuse", failure.message, QMessageBox.Ok, self)
        box.setDetailedText(failure.details or "(no details)")
        box.exec_()
