"""The list of LandFuse Processing algorithm classes, in toolbox order.

Each algorithm is one module in this package; adding one means adding its class here.
"""

from typing import List, Type

from qgis.core import QgsProcessingAlgorithm

ALGORITHM_CLASSES: List[Type[QgsProcessingAlgorithm]] = []
