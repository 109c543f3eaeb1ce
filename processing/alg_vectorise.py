"""Processing: change mask → polygons with their area."""

import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict

from qgis.core import (
    QgsFeatureSink,
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputNumber,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsVectorLayer,
)

from ..core.errors import LandFuseError
from ..core.protection import ProtectedFiles
from ..core.vectorise import vectorise_mask
from .alg_base import LandFuseAlgorithm, with_help
from .layers import layer_file_path


class VectoriseChangesAlgorithm(LandFuseAlgorithm):
    """Polygons of changed pixels, with area, a minimum area and simplification."""

    GROUP = "Change tools"
    GROUP_ID = "changetools"
    INPUT, VALUE, MIN_AREA, SIMPLIFY, OUTPUT = "INPUT", "VALUE", "MIN_AREA", "SIMPLIFY", "OUTPUT"

    def name(self) -> str:
        return "vectorisechanges"

    def displayName(self) -> str:
        return "Vectorise changes"

    def shortHelpString(self) -> str:
        return (
            "Turns the changed pixels of a change mask (e.g. the output of 'Detect changes') into "
            "polygons with their area in square metres and hectares. Polygons smaller than the "
            "minimum area are dropped (noise), and the rest can be simplified. Areas are computed "
            "on an equal-area projection when the mask is in geographic coordinates."
        )

    def initAlgorithm(self, config=None) -> None:
        self.addParameter(
            with_help(
                QgsProcessingParameterRasterLayer(self.INPUT, "Change mask"),
                "Single-band mask: 1 change, 0 no change, 255 nodata.",
            )
        )
        self.addParameter(
            with_help(
                QgsProcessingParameterNumber(
                    self.VALUE, "Pixel value to vectorise", QgsProcessingParameterNumber.Integer, 1
                ),
                "1 for the LandFuse change mask.",
            )
        )
        self.addParameter(
            with_help(
                QgsProcessingParameterNumber(
                    self.MIN_AREA,
                    "Minimum area (m²)",
                    QgsProcessingParameterNumber.Double,
                    0.0,
                    False,
                    0.0,
                ),
                "Smaller polygons are dropped. 500 m² = 5 Sentinel-2 pixels.",
            )
        )
        self.addParameter(
            with_help(
                QgsProcessingParameterNumber(
                    self.SIMPLIFY,
                    "Simplification tolerance (map units)",
                    QgsProcessingParameterNumber.Double,
                    0.0,
                    False,
                    0.0,
                ),
                "Douglas-Peucker tolerance keeping topology; 0 keeps the pixel outlines.",
            )
        )
        self.addParameter(
            QgsProcessingParameterFeatureSink(
                self.OUTPUT, "Change polygons", QgsProcessing.TypeVectorPolygon
            )
        )
        self.addOutput(QgsProcessingOutputNumber("COUNT", "Number of polygons"))
        self.addOutput(QgsProcessingOutputNumber("TOTAL_HECTARES", "Changed area (ha)"))

    def run_algorithm(
        self,
        parameters: Dict[str, Any],
        context: QgsProcessingContext,
        feedback: QgsProcessingFeedback,
    ) -> Dict[str, Any]:
        layer = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        mask_path = layer_file_path(layer)
        self.guard_destinations(
            {"the change polygons": self.parameterAsOutputLayer(parameters, self.OUTPUT, context)},
            ProtectedFiles().add_raster(mask_path, f"the change mask {mask_path}"),
        )
        scratch = Path(tempfile.mkdtemp(prefix="landfuse-vectorise-"))
        try:
            try:
                result = vectorise_mask(
                    mask_path,
                    str(scratch / "changes.gpkg"),
                    value=self.parameterAsInt(parameters, self.VALUE, context),
                    min_area_m2=self.parameterAsDouble(parameters, self.MIN_AREA, context),
                    simplify=self.parameterAsDouble(parameters, self.SIMPLIFY, context),
                )
            except LandFuseError as error:
                raise QgsProcessingException(str(error)) from None
            polygons = QgsVectorLayer(f"{result.path}|layername={result.layer}", "changes", "ogr")
            sink, dest_id = self.parameterAsSink(
                parameters,
                self.OUTPUT,
                context,
                polygons.fields(),
                polygons.wkbType(),
                polygons.crs(),
            )
            if sink is None:
                raise QgsProcessingException(self.invalidSinkError(parameters, self.OUTPUT))
            total = max(1, polygons.featureCount())
            for index, feature in enumerate(polygons.getFeatures()):
                if feedback.isCanceled():
                    break
                sink.addFeature(feature, QgsFeatureSink.FastInsert)
                feedback.setProgress(100.0 * (index + 1) / total)
            del polygons
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        hectares = None if result.total_area_m2 is None else result.total_area_m2 / 10000.0
        feedback.pushInfo(
            f"{result.count} polygons kept, {result.dropped} below the minimum area dropped; "
            f"changed area {hectares if hectares is not None else 'n/a'} ha."
        )
        return {self.OUTPUT: dest_id, "COUNT": result.count, "TOTAL_HECTARES": hectares}
