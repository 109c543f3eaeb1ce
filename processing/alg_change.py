"""Processing: change detection with AMFNet on a before/after pair."""

from typing import Any, Dict

from qgis.core import (
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingParameterEnum,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterVectorLayer,
)

from ..core.requests import ChangeRequest
from ..models.registry import list_model_specs
from .alg_base import (
    WEIGHTS_FILE_FILTER,
    LandFuseAlgorithm,
    advanced,
    cleanup_folder,
    engine_folder,
    enum_names,
    with_help,
)
from .alg_landcover import area_of_interest


class ChangeDetectionAlgorithm(LandFuseAlgorithm):
    """Map changes between two dates."""

    BEFORE, AFTER = "BEFORE", "AFTER"
    MODEL, WEIGHTS, THRESHOLD = "MODEL", "WEIGHTS", "THRESHOLD"
    EXTENT, AOI = "EXTENT", "AOI"
    OUTPUT, PROBABILITY = "OUTPUT", "PROBABILITY"

    def name(self) -> str:
        return "changedetection"

    def displayName(self) -> str:
        return "Detect changes (AMFNet)"

    def shortHelpString(self) -> str:
        return (
            "Finds what changed between a 'before' and an 'after' image with AMFNet (Zhan et al., "
            "Remote Sensing 2024). The network is not symmetric: keep the dates in order. The "
            "after image is aligned on the before image's grid on the fly. Outputs: a change mask "
            "(1 change, 0 no change, nodata 255) shown in red over a transparent background, an "
            "optional change probability (0-1), and a JSON report with the changed area."
        )

    def initAlgorithm(self, config=None) -> None:
        specs = list_model_specs("change")
        self.addParameter(
            with_help(
                QgsProcessingParameterRasterLayer(self.BEFORE, "Before (earlier date)"),
                "The earlier image; its grid is the output grid.",
            )
        )
        self.addParameter(
            with_help(
                QgsProcessingParameterRasterLayer(self.AFTER, "After (later date)"),
                "The later image, with the same bands.",
            )
        )
        self.addParameter(
            with_help(
                QgsProcessingParameterEnum(self.MODEL, "Model", enum_names(specs), False, 0),
                "Registry change model: RGB (LEVIR-CD) or Sentinel-2 13 bands.",
            )
        )
        self.addParameter(
            with_help(
                QgsProcessingParameterFile(
                    self.WEIGHTS,
                    "Weights file",
                    QgsProcessingParameterFile.File,
                    fileFilter=WEIGHTS_FILE_FILTER,
                ),
                "A LandFuse weights file (.pt + .json sidecar) or a published AMFNet state_dict.",
            )
        )
        self.addParameter(
            advanced(
                with_help(
                    QgsProcessingParameterNumber(
                        self.THRESHOLD,
                        "Change probability threshold",
                        QgsProcessingParameterNumber.Double,
                        0.5,
                        False,
                        0.01,
                        0.99,
                    ),
                    "Pixels whose change probability reaches this value are marked as changed.",
                )
            )
        )
        self.addParameter(
            QgsProcessingParameterExtent(self.EXTENT, "Map only this extent", optional=True)
        )
        self.addParameter(
            QgsProcessingParameterVectorLayer(
                self.AOI,
                "Map only inside these polygons",
                [QgsProcessing.TypeVectorPolygon],
                optional=True,
            )
        )
        self.add_run_options()
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT, "Change mask"))
        self.addParameter(
            advanced(
                QgsProcessingParameterRasterDestination(
                    self.PROBABILITY, "Change probability", optional=True, createByDefault=False
                )
            )
        )

    def run_algorithm(
        self,
        parameters: Dict[str, Any],
        context: QgsProcessingContext,
        feedback: QgsProcessingFeedback,
    ) -> Dict[str, Any]:
        self.require_torch()
        spec = list_model_specs("change")[self.parameterAsEnum(parameters, self.MODEL, context)]
        before_layer = self.parameterAsRasterLayer(parameters, self.BEFORE, context)
        after_layer = self.parameterAsRasterLayer(parameters, self.AFTER, context)
        if before_layer is None or after_layer is None:
            raise QgsProcessingException("Give both the 'before' and the 'after' image.")
        before = self.source_for(before_layer, "Before")
        after = self.source_for(after_layer, "After")
        output = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        probability = self.parameterAsOutputLayer(parameters, self.PROBABILITY, context)
        folder = engine_folder(output)
        request = ChangeRequest(
            before=(before,),
            after=(after,),
            model=spec.name,
            weights=self.parameterAsFile(parameters, self.WEIGHTS, context),
            output_dir=folder,
            aoi=area_of_interest(self, parameters, context, folder, before_layer.crs()),
            outputs=("change", "probability") if probability else ("change",),
            threshold=self.parameterAsDouble(parameters, self.THRESHOLD, context),
            name="change",
            overwrite=True,
            **self.run_options(parameters, context),
        )
        self.guard_destinations(
            {"the change mask": output, "the change probability": probability}, request=request
        )
        try:
            result = self.run_engine(request, feedback)
            results = self.deliver(
                result,
                {"change": (self.OUTPUT, output), "probability": (self.PROBABILITY, probability)},
            )
            change = result.report.get("change", {})
            feedback.pushInfo(
                f"Changed: {change.get('changed_hectares')} ha "
                f"({change.get('changed_percent')} % of the mapped area). "
                f"Report: {results['REPORT']}"
            )
            results["CHANGED_HECTARES"] = change.get("changed_hectares")
            return results
        finally:
            cleanup_folder(folder)
