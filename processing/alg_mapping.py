"""Processing: mapping with any registry model, one algorithm per task.

The parameters come from the task (:mod:`landfuse.core.tasks`) and the registry, read when the
provider loads its algorithms: one optional raster layer per input slot of the task's models
(``S2``, ``S1``, ``DEM``, ``RGBIR``, ``DSM``...; ``BEFORE`` and ``AFTER``), the model by name
(empty: the weights file's), the weights, the area, the run options and the task's own, and one
destination per product. The chosen model says which layers it needs; weights of another model
are refused before the run starts.
"""

import os
from typing import Any, Dict, List, Tuple

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFile,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsProcessingParameterVectorLayer,
    QgsRasterLayer,
)

from ..core.band_files import expand_folders
from ..core.requests import RasterSource
from ..core.tasks import Task, get_task
from ..models.errors import LandFuseError
from ..models.registry import get_model_spec, list_model_specs
from ..models.weights_info import mismatch_message, peek_weights
from .alg_base import (
    WEIGHTS_FILE_FILTER,
    LandFuseAlgorithm,
    advanced,
    area_of_interest,
    cleanup_folder,
    engine_folder,
    model_parameter,
    with_help,
)


class MappingAlgorithm(LandFuseAlgorithm):
    """A task's mapping run: subclasses set :attr:`TASK` and the names."""

    TASK = ""
    MODEL, WEIGHTS = "MODEL", "WEIGHTS"
    EXTENT, AOI = "EXTENT", "AOI"

    @property
    def task(self) -> Task:
        return get_task(self.TASK)

    def specs(self) -> List[Any]:
        return list_model_specs(self.TASK)

    def slots(self):
        return self.task.slot_keys(self.specs())

    def band_parameters(self) -> List[Tuple[str, str]]:
        """(parameter prefix, what) of each explicit band order: one per slot, or one for all
        when the task's slots share their bands (both dates)."""
        if self.task.shared_bands:
            return [("", "every input")]
        return [(s.key.upper(), s.title) for s in self.slots()]

    def band_order(self, parameters, context, key: str) -> str:
        prefix = "" if self.task.shared_bands else key.upper()
        name = f"{prefix}_BANDS" if prefix else "BANDS"
        return self.parameterAsString(parameters, name, context)

    def initAlgorithm(self, config=None) -> None:
        for slot in self.slots():
            key = slot.key.upper()
            self.addParameter(
                with_help(
                    QgsProcessingParameterRasterLayer(key, slot.title, optional=True),
                    f"{slot.help} Give it when the model takes it (or its band files, or its "
                    "folder, below).",
                )
            )
            self.addParameter(
                advanced(
                    with_help(
                        QgsProcessingParameterMultipleLayers(
                            f"{key}_FILES",
                            f"{slot.title}: band files",
                            QgsProcessing.TypeRaster,
                            optional=True,
                        ),
                        "One file per band, in any order: each is named by its file name "
                        "(..._B02.tif, ..._B8A.jp2) and read at its own resolution.",
                    )
                )
            )
            self.addParameter(
                advanced(
                    with_help(
                        QgsProcessingParameterFile(
                            f"{key}_FOLDER",
                            f"{slot.title}: folder (a .SAFE product or band files)",
                            QgsProcessingParameterFile.Folder,
                            optional=True,
                        ),
                        "A Sentinel-2 product folder (.SAFE) or a folder of band files: each band "
                        "at its finest resolution, found by its file name.",
                    )
                )
            )
        for key, title in self.band_parameters():
            self.addParameter(
                advanced(
                    with_help(
                        QgsProcessingParameterString(
                            f"{key}_BANDS" if key else "BANDS", f"Bands of {title}", optional=True
                        ),
                        "The layer's bands in the model's order, by number or name (e.g. "
                        "'4,3,2' or 'B04,B03,B02'); empty: matched by their descriptions, else "
                        "by position, with a warning.",
                    )
                )
            )
        self.addParameter(
            model_parameter(
                self.MODEL,
                self.specs(),
                "The registry model; empty: the one the weights file names (a published "
                "checkpoint needs it). Its inputs must be given above.",
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
                "Pixels outside the polygons get nodata.",
            )
        )
        self.add_run_options(self.task.options)
        for product in self.task.products:
            destination = QgsProcessingParameterRasterDestination(
                product.parameter,
                product.title,
                optional=not product.main,
                createByDefault=product.main,
            )
            destination = with_help(destination, product.help)
            self.addParameter(destination if product.main else advanced(destination))

    def slot_sources(self, parameters, context, key: str) -> Tuple[Any, ...]:
        """What was given for a slot: its layer, its band files or its folder (one of them)."""
        name = key.upper()
        layer = self.parameterAsRasterLayer(parameters, name, context)
        files = self.parameterAsLayerList(parameters, f"{name}_FILES", context)
        folder = self.parameterAsFile(parameters, f"{name}_FOLDER", context)
        given = [g for g in (layer, files, folder) if g]
        if len(given) > 1:
            raise QgsProcessingException(
                f"Give the layer of {key}, its band files or its folder: only one of them."
            )
        bands = self.band_order(parameters, context, key)
        if layer is not None:
            return (self.source_for(layer, key, bands),)
        if files:
            return tuple(self.source_for(f, key) for f in files)
        return (RasterSource(folder),) if folder else ()

    def checkParameterValues(self, parameters, context) -> Tuple[bool, str]:
        """Refuse weights of another model, and a model without the layers it takes, before
        the run (the dialog shows the message)."""
        ok, message = super().checkParameterValues(parameters, context)
        if not ok:
            return ok, message
        try:
            self.chosen_model(parameters, context)
        except (QgsProcessingException, LandFuseError) as error:
            return False, str(error)
        return True, ""

    def chosen_model(self, parameters: Dict[str, Any], context: QgsProcessingContext):
        """The model of the run (the parameter, else the weights file's) and its slots."""
        weights = self.parameterAsFile(parameters, self.WEIGHTS, context)
        asked = self.parameterAsEnumString(parameters, self.MODEL, context) or ""
        named = peek_weights(weights).model_name if weights and os.path.isfile(weights) else ""
        if asked and named and asked != named:
            raise QgsProcessingException(
                mismatch_message(weights, named, asked) + " The model may be left empty."
            )
        name = asked or named
        if not name:
            if not weights:
                raise QgsProcessingException("Give a weights file.")
            raise QgsProcessingException(
                f"{os.path.basename(weights)} has no LandFuse sidecar naming its model: choose "
                "the model it is for."
            )
        spec = get_model_spec(name)
        slots = self.task.slots(spec)
        missing = [s.title for s in slots if not self.slot_sources(parameters, context, s.key)]
        if missing:
            raise QgsProcessingException(
                f"The model {spec.name} needs {', '.join(missing)}: give "
                f"{'it' if len(missing) == 1 else 'them'}, or choose a model that takes the "
                "layers you have."
            )
        return spec, slots

    def run_algorithm(
        self,
        parameters: Dict[str, Any],
        context: QgsProcessingContext,
        feedback: QgsProcessingFeedback,
    ) -> Dict[str, Any]:
        self.require_torch()
        task = self.task
        spec, slots = self.chosen_model(parameters, context)
        sources = {s.key: self.slot_sources(parameters, context, s.key) for s in slots}
        unused = [
            s.title
            for s in self.slots()
            if s.key not in sources and self.slot_sources(parameters, context, s.key)
        ]
        if unused:
            self.push_warning(
                feedback,
                f"{spec.name} does not take {', '.join(unused)}: those layers are not used.",
            )
        destinations = {
            p.key: self.parameterAsOutputLayer(parameters, p.parameter, context)
            for p in task.products
        }
        main = destinations[task.main_product.key]
        folder = engine_folder(main)
        reference = reference_crs(sources[next(s.key for s in slots if s.reference)])
        request = task.make_request(
            spec.name,
            self.parameterAsFile(parameters, self.WEIGHTS, context),
            sources,
            output_dir=folder,
            aoi=area_of_interest(self, parameters, context, folder, reference),
            outputs=tuple(p.key for p in task.products if p.main or destinations[p.key]),
            name=task.name,
            overwrite=True,
            **self.run_options(parameters, context, task.options),
        )
        self.guard_destinations(
            {f"the {p.title.lower()} raster": destinations[p.key] for p in task.products},
            request=request,
        )
        try:
            result = self.run_engine(request, feedback)
            results = self.deliver(
                result,
                {p.key: (p.parameter, destinations[p.key]) for p in task.products},
            )
            feedback.pushInfo(
                f"{task.map_title}: {task.describe_areas(task.areas(result.report))}. "
                f"Report: {results['REPORT']}"
            )
            results.update(task.report_numbers(result.report))
            return results
        finally:
            cleanup_folder(folder)


def reference_crs(sources: Tuple[RasterSource, ...]) -> QgsCoordinateReferenceSystem:
    """The CRS of a slot's first file (a folder: its first band file), for the extent."""
    path = sources[0].path
    if os.path.isdir(path):
        path = expand_folders([path], None)[0]
    return QgsRasterLayer(path, "reference", "gdal").crs()


class LandCoverAlgorithm(MappingAlgorithm):
    """Map land cover with any land-cover model of the registry."""

    TASK = "landcover"

    NAME = "landcover"
    DISPLAY_NAME = "Map land cover (AMM-FuseNet)"
    HELP = (
        "Classifies every pixel of a scene from several co-registered modalities "
        "(Sentinel-2 with Sentinel-1 and/or a DEM, or aerial RGB + NIR with a DSM) with "
        "AMM-FuseNet (Ma, Karakuş & Rosin, Remote Sensing 2022). Give the layers the model "
        "takes; the inputs may have different CRSs and resolutions: they are aligned on the "
        "first input's grid on the fly. Bands are matched to the model by their descriptions "
        "(B01…B12, B8A, VV, VH), else by order, with a warning. A weights file is needed: "
        "train one with 'Train a land-cover model' or use a published checkpoint of the "
        "chosen model; its sidecar names its model, so the model may be left empty. "
        "Outputs: a class map (uint8, nodata 255) styled with the model's classes, an "
        "optional confidence (%) raster, and a JSON report beside them."
    )


class ChangeDetectionAlgorithm(MappingAlgorithm):
    """Map changes between two dates with any change model of the registry."""

    TASK = "change"

    NAME = "changedetection"
    DISPLAY_NAME = "Detect changes (AMFNet)"
    HELP = (
        "Finds what changed between a 'before' and an 'after' image with AMFNet (Zhan et "
        "al., Remote Sensing 2024). The network is not symmetric: keep the dates in order. "
        "The after image is aligned on the before image's grid on the fly. Outputs: a change "
        "mask (1 change, 0 no change, nodata 255) shown in red over a transparent background, "
        "an optional change probability (0-1), and a JSON report with the changed area."
    )
