"""Processing: land-cover mapping with AMM-FuseNet (Sentinel-2 + Sentinel-1 and/or DEM)."""

from typing import Any, Dict

from qgis.core import (
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingParameterEnum,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFile,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterVectorLayer,
)

from ..core.requests import AreaOfInterest, LandCoverRequest, ModalityInput
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
from .layers import LayerSourceError, export_polygons

MODALITY_PARAMETERS = {"s2": "S2", "s1": "S1", "dem": "DEM"}


def area_of_interest(alg, parameters, context, folder: str, reference_crs):
    """The AOI from the EXTENT or AOI parameters (None: whole overlap)."""
    from pathlib import Path

    aoi_layer = alg.parameterAsVectorLayer(parameters, "AOI", context)
    if aoi_layer is not None:
        try:
            return export_polygons(aoi_layer, False, Path(folder))
        except LayerSourceError as error:
            raise QgsProcessingException(str(error)) from None
    if parameters.get("EXTENT"):
        rect = alg.parameterAsExtent(parameters, "EXTENT", context, reference_crs)
        if not rect.isEmpty():
            return AreaOfInterest(
                bounds=(rect.xMinimum(), rect.yMinimum(), rect.xMaximum(), rect.yMaximum()),
                crs=reference_crs.toWkt(),
            )
    return None


class LandCoverAlgorithm(LandFuseAlgorithm):
    """Map land cover from Sentinel-2 with Sentinel-1 and/or a DEM."""

    S2, S1, DEM = "S2", "S1", "DEM"
    MODEL, WEIGHTS = "MODEL", "WEIGHTS"
    EXTENT, AOI = "EXTENT", "AOI"
    OUTPUT, CONFIDENCE = "OUTPUT", "CONFIDENCE"

    def name(self) -> str:
        return "landcover"

    def displayName(self) -> str:
        return "Map land cover (AMM-FuseNet)"

    def shortHelpString(self) -> str:
        return (
            "Classifies every pixel of a Sentinel-2 scene, fused with Sentinel-1 and/or a DEM, "
            "with AMM-FuseNet (Ma, Karakuş & Rosin, Remote Sensing 2022). The inputs may have "
            "different CRSs and resolutions: they are aligned on the Sentinel-2 grid on the fly. "
            "Bands are matched to the model by their descriptions (B01…B12, B8A, VV, VH), else by "
            "order. A weights file is needed: no weights are bundled or downloaded; train one with "
            "'Train a land-cover model' or use a published checkpoint of the chosen model. "
            "Outputs: a class map (uint8, nodata 255) styled with the model's classes, an optional "
            "confidence (%) raster, and a JSON report beside them."
        )

    def initAlgorithm(self, config=None) -> None:
        specs = list_model_specs("landcover")
        self.addParameter(
            with_help(
                QgsProcessingParameterRasterLayer(self.S2, "Sentinel-2 image"),
                "Sentinel-2 stack with the bands the model needs (13 for the Hunan models).",
            )
        )
        self.addParameter(
            with_help(
                QgsProcessingParameterRasterLayer(
                    self.S1, "Sentinel-1 image (VV, VH)", optional=True
                ),
                "Sentinel-1 backscatter in dB; needed by S2 + S1 models.",
            )
        )
        self.addParameter(
            with_help(
                QgsProcessingParameterRasterLayer(self.DEM, "Elevation model (DEM)", optional=True),
                "Elevation in metres; needed by S2 + DEM models.",
            )
        )
        self.addParameter(
            with_help(
                QgsProcessingParameterEnum(self.MODEL, "Model", enum_names(specs), False, 0),
                "Registry model; its inputs must be given above.",
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
                "A LandFuse weights file (.pt + .json sidecar) or a published checkpoint.",
            )
        )
        self.addParameter(
            with_help(
                QgsProcessingParameterExtent(self.EXTENT, "Map only this extent", optional=True),
                "Leave empty to map wherever all inputs overlap.",
            )
        )
        self.addParameter(
            with_help(
                QgsProcessingParameterVectorLayer(
                    self.AOI,
                    "Map only inside these polygons",
                    [QgsProcessing.TypeVectorPolygon],
                    optional=True,
                ),
                "Pixels outside the polygons get nodata (255).",
            )
        )
        self.add_run_options()
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT, "Land-cover map"))
        self.addParameter(
            advanced(
                QgsProcessingParameterRasterDestination(
                    self.CONFIDENCE, "Confidence (%)", optional=True, createByDefault=False
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
        spec = list_model_specs("landcover")[self.parameterAsEnum(parameters, self.MODEL, context)]
        inputs = []
        for modality in spec.modalities:
            key = MODALITY_PARAMETERS.get(modality.key)
            layer = self.parameterAsRasterLayer(parameters, key, context) if key else None
            if layer is None:
                raise QgsProcessingException(
                    f"The model '{spec.title}' needs a {modality.title} layer: give it, or choose "
                    "a model that takes the inputs you have."
                )
            inputs.append(ModalityInput(modality.key, (self.source_for(layer, modality.title),)))
        output = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        confidence = self.parameterAsOutputLayer(parameters, self.CONFIDENCE, context)
        folder = engine_folder(output)
        reference = self.parameterAsRasterLayer(parameters, self.S2, context)
        request = LandCoverRequest(
            inputs=tuple(inputs),
            model=spec.name,
            weights=self.parameterAsFile(parameters, self.WEIGHTS, context),
            output_dir=folder,
            aoi=area_of_interest(self, parameters, context, folder, reference.crs()),
            outputs=("classes", "confidence") if confidence else ("classes",),
            name="landcover",
            overwrite=True,
            **self.run_options(parameters, context),
        )
        self.guard_destinations(
            {"the land-cover map": output, "the confidence raster": confidence}, request=request
        )
        try:
            result = self.run_engine(request, feedback)
            results = self.deliver(
                result,
                {"classes": (self.OUTPUT, output), "confidence": (self.CONFIDENCE, confidence)},
            )
            for row in result.report.get("classes", []):
                feedback.pushInfo(f"{row['name']}: {row['hectares']} ha ({row['percent']} %)")
            feedback.pushInfo(f"Report: {results['REPORT']}")
            return results
        finally:
            cleanup_folder(folder)
