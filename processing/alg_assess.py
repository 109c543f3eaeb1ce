"""Processing: accuracy assessment of a class map, and the AMFNet paper's change figure."""

import os
from typing import Any, Dict, Optional

from qgis.core import (
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputNumber,
    QgsProcessingParameterField,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterVectorLayer,
)

from ..core.metrics import (
    assess_class_map,
    change_label_map,
    write_confusion_csv,
    write_report_json,
)
from ..core.protection import ProtectedFiles
from .alg_base import LandFuseAlgorithm, with_help
from .layers import layer_file_path


def _percent(value: Optional[float]) -> str:
    return "n/a" if value is None or value != value else f"{100 * value:.2f} %"


class AssessAccuracyAlgorithm(LandFuseAlgorithm):
    """Confusion matrix and scores of a class map against reference data."""

    GROUP = "Training and assessment"
    GROUP_ID = "training"
    MAP, REFERENCE, POLYGONS, FIELD = "MAP", "REFERENCE", "POLYGONS", "FIELD"
    REPORT, TABLE = "REPORT", "TABLE"

    def name(self) -> str:
        return "assessaccuracy"

    def displayName(self) -> str:
        return "Assess accuracy"

    def shortHelpString(self) -> str:
        return (
            "Compares a class map (e.g. a LandFuse land-cover map) with reference data: a "
            "reference raster of class values, or polygons with a class field. The reference is "
            "read on the map's grid (nearest neighbour), block by block. Writes the confusion "
            "matrix as CSV (rows: reference, columns: prediction) and a JSON report with overall "
            "accuracy, kappa, mean IoU, frequency-weighted IoU and per-class IoU, precision, "
            "recall and F1. Reference value 255 and the map's nodata are left out."
        )

    def initAlgorithm(self, config=None) -> None:
        self.addParameter(QgsProcessingParameterRasterLayer(self.MAP, "Class map"))
        self.addParameter(
            with_help(
                QgsProcessingParameterRasterLayer(
                    self.REFERENCE, "Reference raster", optional=True
                ),
                "Class values in the map's class order; 255 = no label.",
            )
        )
        self.addParameter(
            with_help(
                QgsProcessingParameterVectorLayer(
                    self.POLYGONS,
                    "…or reference polygons",
                    [QgsProcessing.TypeVectorPolygon],
                    optional=True,
                ),
                "Labelled polygons; their class field holds class indices.",
            )
        )
        self.addParameter(
            QgsProcessingParameterField(
                self.FIELD,
                "Class field of the polygons",
                parentLayerParameterName=self.POLYGONS,
                optional=True,
            )
        )
        self.addParameter(
            QgsProcessingParameterFileDestination(
                self.REPORT, "Accuracy report (JSON)", "JSON files (*.json)"
            )
        )
        self.addParameter(
            QgsProcessingParameterFileDestination(
                self.TABLE, "Confusion matrix (CSV)", "CSV files (*.csv)"
            )
        )
        for key, label in (("OA", "Overall accuracy"), ("KAPPA", "Kappa"), ("MIOU", "Mean IoU")):
            self.addOutput(QgsProcessingOutputNumber(key, label))

    def run_algorithm(
        self,
        parameters: Dict[str, Any],
        context: QgsProcessingContext,
        feedback: QgsProcessingFeedback,
    ) -> Dict[str, Any]:
        class_map = layer_file_path(self.parameterAsRasterLayer(parameters, self.MAP, context))
        reference_layer = self.parameterAsRasterLayer(parameters, self.REFERENCE, context)
        polygons = self.parameterAsVectorLayer(parameters, self.POLYGONS, context)
        field = self.parameterAsString(parameters, self.FIELD, context)
        if (reference_layer is None) == (polygons is None):
            raise QgsProcessingException("Give either a reference raster or reference polygons.")
        if polygons is not None:
            if not field:
                raise QgsProcessingException("Choose the polygons' class field.")
            reference = polygons.source().split("|", 1)[0]
            if not os.path.isfile(reference):
                raise QgsProcessingException(
                    f"The polygons of '{polygons.name()}' are not in a file: save them first."
                )
        else:
            reference, field = layer_file_path(reference_layer), None
        report_path = self.parameterAsFileOutput(parameters, self.REPORT, context)
        table_path = self.parameterAsFileOutput(parameters, self.TABLE, context)
        self.guard_destinations(
            {"the report": report_path, "the confusion table": table_path},
            _inputs(class_map, reference, polygons is not None),
        )
        report = assess_class_map(class_map, reference, label_field=field)
        write_report_json(report, report_path, map=class_map, reference=reference)
        write_confusion_csv(report, table_path)
        feedback.pushInfo(
            f"Overall accuracy {_percent(report.overall_accuracy)}, kappa {report.kappa:.4f}, "
            f"mean IoU {_percent(report.mean_iou)} on {int(report.confusion_matrix.sum())} pixels."
        )
        for name, iou, f1 in zip(report.class_names, report.iou, report.f1):
            feedback.pushInfo(f"  {name}: IoU {_percent(iou)}, F1 {_percent(f1)}")
        return {
            self.REPORT: report_path,
            self.TABLE: table_path,
            "OA": report.overall_accuracy,
            "KAPPA": report.kappa,
            "MIOU": report.mean_iou,
        }


class ChangeVisualisationAlgorithm(LandFuseAlgorithm):
    """True positives white, false positives red, false negatives green (AMFNet paper)."""

    GROUP = "Change tools"
    GROUP_ID = "changetools"
    MAP, REFERENCE, OUTPUT, REPORT = "MAP", "REFERENCE", "OUTPUT", "REPORT"

    def name(self) -> str:
        return "changevisualisation"

    def displayName(self) -> str:
        return "Change visualisation against a reference"

    def shortHelpString(self) -> str:
        return (
            "Draws a change mask against a reference change mask as in the AMFNet paper: true "
            "positives white, false positives red, false negatives green, true negatives black "
            "(grey where either has no data). The reference may be on another grid; it is read on "
            "the mask's grid. Also reports the change-class precision, recall, F1 and IoU. "
            "In the prediction 1 means change; in the reference 1 means change, or 255 when the "
            "reference holds only 0 and 255 (LEVIR-CD and OSCD labels)."
        )

    def initAlgorithm(self, config=None) -> None:
        self.addParameter(QgsProcessingParameterRasterLayer(self.MAP, "Change mask (prediction)"))
        self.addParameter(
            QgsProcessingParameterRasterLayer(self.REFERENCE, "Reference change mask")
        )
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT, "Visualisation"))
        self.addParameter(
            QgsProcessingParameterFileDestination(
                self.REPORT,
                "Scores (JSON)",
                "JSON files (*.json)",
                optional=True,
                createByDefault=False,
            )
        )
        for key, label in (("PRECISION", "Precision"), ("RECALL", "Recall"), ("F1", "F1"),
                           ("IOU", "IoU")):  # fmt: skip
            self.addOutput(QgsProcessingOutputNumber(key, label))

    def run_algorithm(
        self,
        parameters: Dict[str, Any],
        context: QgsProcessingContext,
        feedback: QgsProcessingFeedback,
    ) -> Dict[str, Any]:
        prediction = layer_file_path(self.parameterAsRasterLayer(parameters, self.MAP, context))
        reference = layer_file_path(
            self.parameterAsRasterLayer(parameters, self.REFERENCE, context)
        )
        output = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        report_path = self.parameterAsFileOutput(parameters, self.REPORT, context)
        self.guard_destinations(
            {"the visualisation": output, "the report": report_path},
            _inputs(prediction, reference, False),
        )
        report = assess_class_map(
            prediction,
            reference,
            label_map=change_label_map(reference),
            class_names=("no change", "change"),
            change_class=1,
            visualisation=output,
        )
        change = report.change
        feedback.pushInfo(
            f"Change: precision {_percent(change.precision)}, recall {_percent(change.recall)}, "
            f"F1 {_percent(change.f1)}, IoU {_percent(change.iou)}."
        )
        results = {
            self.OUTPUT: output,
            "PRECISION": change.precision,
            "RECALL": change.recall,
            "F1": change.f1,
            "IOU": change.iou,
        }
        if report_path:
            write_report_json(report, report_path, map=prediction, reference=reference)
            results[self.REPORT] = report_path
        return results


def _inputs(class_map: str, reference: str, reference_is_vector: bool) -> ProtectedFiles:
    protected = ProtectedFiles().add_raster(class_map, f"the map {class_map}")
    if reference_is_vector:
        return protected.add_vector(reference, f"the reference polygons {reference}")
    return protected.add_raster(reference, f"the reference {reference}")
