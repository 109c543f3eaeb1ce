"""What every LandFuse Processing algorithm shares: naming, help, engine calls, feedback.

Processing already runs algorithms in a background thread, so the engine runs in-process here
(DESIGN.md §3: "Processing when asked"); progress, cancellation and the run's warnings go
through the feedback object. Subclasses implement :meth:`LandFuseAlgorithm.run_algorithm`; the
base class's ``processAlgorithm`` turns every LandFuse error into a ``QgsProcessingException``
with its message, and anything unexpected into one that points to the log (where the traceback
goes), so the dialog never shows a raw traceback (issue 11).

Destinations are checked against the run's inputs before anything is computed
(:meth:`LandFuseAlgorithm.guard_destinations`): no destination may be an input, a file of an
input's dataset or the weights file.
"""

import os
import shutil
import traceback
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence

from qgis.core import (
    Qgis,
    QgsMessageLog,
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsRasterLayer,
)
from qgis.PyQt.QtGui import QIcon

from ..core.band_mapping import parse_band_selection
from ..core.errors import LandFuseError
from ..core.protection import (
    ProtectedFiles,
    check_destinations,
    request_protected_files,
)
from ..core.requests import AreaOfInterest, RasterSource
from ..core.run_options import RUN_OPTIONS, RunOption
from . import environment, layers

ICON_PATH = str(Path(__file__).resolve().parent.parent / "resources" / "icon.png")
#: The weights file parameters' filter. No fixed extension: with one, QGIS refuses a folder or a
#: sidecar with "Incorrect parameter value" before LandFuse can say which file to give.
WEIGHTS_FILE_FILTER = "LandFuse weights (*.pt *.pth *.ckpt);;All files (*)"


def advanced(parameter: QgsProcessingParameterDefinition) -> QgsProcessingParameterDefinition:
    """Flag a parameter as advanced (collapsed in the dialog)."""
    parameter.setFlags(parameter.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
    return parameter


def with_help(
    parameter: QgsProcessingParameterDefinition, text: str
) -> QgsProcessingParameterDefinition:
    """Attach help text (shown as the tooltip and in the help panel, QGIS 3.16+)."""
    if hasattr(parameter, "setHelp"):
        parameter.setHelp(text)
    return parameter


class LandFuseAlgorithm(QgsProcessingAlgorithm):
    """Base class: group, icon, help and the engine bridge."""

    GROUP = "Mapping"
    GROUP_ID = "mapping"
    #: Subclasses name themselves here (or override the methods).
    NAME = ""
    DISPLAY_NAME = ""
    HELP = ""

    def name(self) -> str:
        return self.NAME

    def displayName(self) -> str:
        return self.DISPLAY_NAME

    def shortHelpString(self) -> str:
        return self.HELP

    def group(self) -> str:
        return self.GROUP

    def groupId(self) -> str:
        return self.GROUP_ID

    def icon(self) -> QIcon:
        return QIcon(ICON_PATH)

    def createInstance(self):
        return type(self)()

    def processAlgorithm(
        self,
        parameters: Dict[str, Any],
        context: QgsProcessingContext,
        feedback: QgsProcessingFeedback,
    ) -> Dict[str, Any]:
        """Run :meth:`run_algorithm`; errors become messages, never tracebacks."""
        try:
            return self.run_algorithm(parameters, context, feedback)
        except QgsProcessingException:
            raise
        except LandFuseError as error:
            raise QgsProcessingException(str(error)) from None
        except Exception as error:  # a bug: the traceback goes to the log, not the dialog
            QgsMessageLog.logMessage(
                f"{self.displayName()} failed unexpectedly:\n{traceback.format_exc()}",
                "LandFuse",
                Qgis.Critical,
            )
            raise QgsProcessingException(
                f"Unexpected error ({type(error).__name__}: {error}). The details are in the "
                "'LandFuse' tab of the Log Messages panel; please report them."
            ) from None

    def run_algorithm(
        self,
        parameters: Dict[str, Any],
        context: QgsProcessingContext,
        feedback: QgsProcessingFeedback,
    ) -> Dict[str, Any]:
        """The algorithm's work (subclasses); may raise any LandFuse error."""
        raise NotImplementedError

    def helpUrl(self) -> str:
        return "https://github.com/landfuse/landfuse/blob/main/docs/user-guide.md"

    # -- helpers -----------------------------------------------------------------------------
    def add_run_options(self, extra: Sequence[RunOption] = ()) -> None:
        """The pixel-grid switch, then every run option (and ``extra`` ones): all advanced."""
        from qgis.core import QgsProcessingParameterBoolean

        self.addParameter(
            advanced(
                with_help(
                    QgsProcessingParameterBoolean(
                        "PIXEL_GRID", "Inputs are plain images without georeferencing", False
                    ),
                    "Pixel-grid mode (e.g. LEVIR-CD PNGs): the inputs must have the same size; "
                    "the outputs carry no CRS. Cannot be combined with an extent or polygons.",
                )
            )
        )
        for option in (*RUN_OPTIONS, *extra):
            self.addParameter(advanced(with_help(option_parameter(option), option.help)))

    def run_options(
        self,
        parameters: Dict[str, Any],
        context: QgsProcessingContext,
        extra: Sequence[RunOption] = (),
    ) -> Dict[str, Any]:
        """The request fields of the run options (and ``extra`` ones), and the pixel grid."""
        fields: Dict[str, Any] = {
            "pixel_grid": self.parameterAsBoolean(parameters, "PIXEL_GRID", context)
        }
        for option in (*RUN_OPTIONS, *extra):
            name = option.parameter
            if option.kind == "text":
                value: Any = self.parameterAsString(parameters, name, context)
            elif option.kind == "choice":
                value = self.parameterAsEnumString(parameters, name, context)
            elif option.kind == "float":
                value = self.parameterAsDouble(parameters, name, context)
            else:
                value = self.parameterAsInt(parameters, name, context)
            fields[option.name] = option.from_widget(value)
        return fields

    @staticmethod
    def require_torch() -> None:
        """Refuse, before any work, when neither QGIS's Python nor the worker's has torch."""
        from .worker_run import no_torch_message, torch_in_process, worker_has_torch

        if torch_in_process() or worker_has_torch():
            return
        raise QgsProcessingException(no_torch_message(environment.worker_python()))

    @staticmethod
    def source_for(layer: QgsRasterLayer, what: str, bands: str = "") -> RasterSource:
        """The layer's file. Without ``bands`` all its bands, which the engine matches to the
        model's with its one resolver (by description, by file name, else by position with a
        warning); ``bands`` ("4,3,2" or "B04,B03,B02") is an explicit order."""
        if layer is None:
            raise QgsProcessingException(f"No layer was given for {what}.")
        return RasterSource(layers.layer_file_path(layer), bands=parse_band_selection(bands))

    @staticmethod
    def push_warning(feedback: QgsProcessingFeedback, text: str) -> None:
        """A warning in the Processing log (highlighted where QGIS can)."""
        if hasattr(feedback, "pushWarning"):
            feedback.pushWarning(f"Warning: {text}")
        else:  # QGIS before 3.16.2
            feedback.reportError(f"Warning: {text}", False)

    def run_engine(self, request, feedback: QgsProcessingFeedback):
        """Run the engine with Processing's progress, cancel and warnings: in this thread when
        torch imports here, else in the worker process (:mod:`.worker_run`)."""
        from .worker_run import WorkerResult, run_in_worker, torch_in_process

        if not torch_in_process():
            result = run_in_worker(
                request,
                feedback,
                on_warning=lambda w: self.push_warning(feedback, str(w.get("message", ""))),
            )
            return WorkerResult.of(result)
        from ..core import engine  # torch imports here

        engine.keep_memory_flat()  # QGIS's process runs one map after another

        def progress(update) -> None:
            feedback.setProgress(100.0 * float(update.fraction))
            if update.message:
                feedback.setProgressText(update.message)

        return engine.run(
            request,
            progress=progress,
            cancel=feedback.isCanceled,
            warn=lambda warning: self.push_warning(feedback, warning.message),
        )

    @staticmethod
    def report_destination(main: str) -> str:
        """Where the run report goes: beside the main product, ``<main>_report.json``."""
        return main.rsplit(".", 1)[0] + "_report.json"

    def guard_destinations(
        self,
        destinations: Dict[str, Optional[str]],
        protected: Optional[ProtectedFiles] = None,
        request: Any = None,
    ) -> None:
        """Refuse, before any work, destinations that are inputs (or their files).

        Args:
            destinations: What → path (empty paths skipped); for a mapping run, the report
                beside the first one is checked too.
            protected: The inputs' files; default those of ``request``.
            request: The engine request whose inputs are protected.

        Raises:
            OutputError: naming the destination and the input it would replace.
        """
        if protected is None:
            protected = request_protected_files(request)
        items = dict(destinations)
        if request is not None:
            main = next((p for p in destinations.values() if p), None)
            if main:
                items["the run report"] = self.report_destination(main)
        check_destinations(items, protected)

    def deliver(self, result, products: Dict[str, Any]) -> Dict[str, Any]:
        """Move the engine's products to their Processing destinations, and the report beside
        the first one.

        Args:
            result: the engine's :class:`~landfuse.core.engine.RunResult`.
            products: product key → (output parameter name, destination path or "" if unwanted);
                the first entry is the main product.

        Returns:
            The algorithm's results: each delivered output and ``REPORT``.
        """
        results: Dict[str, Any] = {}
        main = ""
        for key, (parameter, destination) in products.items():
            if destination and key in result.outputs:
                results[parameter] = self.move_product(result.outputs[key], destination)
                main = main or destination
        report = self.report_destination(main)
        results["REPORT"] = self.move_product(result.outputs["report"], report)
        return results

    @staticmethod
    def move_product(source: str, destination: str) -> str:
        """Move an engine product (and its .qml / .aux.xml) to the Processing destination."""
        if os.path.abspath(source) == os.path.abspath(destination):
            return destination
        Path(destination).parent.mkdir(parents=True, exist_ok=True)
        for suffix in ("", ".aux.xml"):
            if os.path.exists(source + suffix):
                shutil.move(source + suffix, destination + suffix)
        style = os.path.splitext(source)[0] + ".qml"
        if os.path.exists(style):
            shutil.move(style, os.path.splitext(destination)[0] + ".qml")
        return destination


def option_parameter(option: RunOption) -> QgsProcessingParameterDefinition:
    """A run option as a Processing parameter: its default, limits and choices (by name, so
    ``qgis_process`` and scripts say ``DEVICE=cpu``)."""
    from qgis.core import QgsProcessingParameterNumber, QgsProcessingParameterString

    if option.kind == "text":
        return QgsProcessingParameterString(option.parameter, option.label, option.default)
    if option.kind == "choice":
        return QgsProcessingParameterEnum(
            option.parameter, option.label, list(option.choices), False, option.default, False, True
        )
    label = option.label
    if option.automatic:
        label += f" ({option.automatic_value} = {option.automatic})"
    number = (
        QgsProcessingParameterNumber.Double
        if option.kind == "float"
        else QgsProcessingParameterNumber.Integer
    )
    parameter = QgsProcessingParameterNumber(
        option.parameter, label, number, option.to_widget(option.default), False
    )
    if option.minimum is not None:
        parameter.setMinimum(option.minimum)
    if option.maximum is not None:
        parameter.setMaximum(option.maximum)
    return parameter


def model_parameter(name: str, specs: Sequence[Any], help_text: str):
    """The model choice by registry name (optional: the weights file names its model)."""
    parameter = QgsProcessingParameterEnum(
        name, "Model (empty: the weights file's)", [s.name for s in specs], False, None, True, True
    )
    listed = "; ".join(f"{s.name}: {s.title}" for s in specs)
    return with_help(parameter, f"{help_text} Models: {listed}.")


def area_of_interest(alg, parameters, context, folder: str, reference_crs):
    """The AOI from the EXTENT or AOI parameters (None: whole overlap)."""
    aoi_layer = alg.parameterAsVectorLayer(parameters, "AOI", context)
    if aoi_layer is not None:
        try:
            return layers.export_polygons(aoi_layer, False, Path(folder))
        except layers.LayerSourceError as error:
            raise QgsProcessingException(str(error)) from None
    if parameters.get("EXTENT"):
        rect = alg.parameterAsExtent(parameters, "EXTENT", context, reference_crs)
        if not rect.isEmpty():
            return AreaOfInterest(
                bounds=(rect.xMinimum(), rect.yMinimum(), rect.xMaximum(), rect.yMaximum()),
                crs=reference_crs.toWkt(),
            )
    return None


def engine_folder(destination: str) -> str:
    """A private folder beside a destination, where the engine writes before the move."""
    return str(Path(destination).parent / f".landfuse-{Path(destination).stem}")


def cleanup_folder(folder: str) -> None:
    shutil.rmtree(folder, ignore_errors=True)


def first(values: Sequence[Optional[str]]) -> Optional[str]:
    return next((v for v in values if v), None)


ProgressFn = Callable[[float], None]
