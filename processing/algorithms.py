"""The list of LandFuse Processing algorithm classes, in toolbox order.

Each algorithm is one module in this package; adding one means adding its class here.
"""

from typing import List, Type

from qgis.core import QgsProcessingAlgorithm

from .alg_assess import AssessAccuracyAlgorithm, ChangeVisualisationAlgorithm
from .alg_mapping import ChangeDetectionAlgorithm, LandCoverAlgorithm
from .alg_train import TrainChangeAlgorithm, TrainLandCoverAlgorithm
from .alg_vectorise import VectoriseChangesAlgorithm

ALGORITHM_CLASSES: List[Type[QgsProcessingAlgorithm]] = [
    LandCoverAlgorithm,
    ChangeDetectionAlgorithm,
    VectoriseChangesAlgorithm,
    ChangeVisualisationAlgorithm,
    TrainLandCoverAlgorithm,
    TrainChangeAlgorithm,
    AssessAccuracyAlgorithm,
]
