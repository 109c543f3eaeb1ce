"""The LandFuse Processing provider (toolbox group "LandFuse", id ``landfuse``)."""

from pathlib import Path
from typing import List

from qgis.core import QgsProcessingAlgorithm, QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

ICON_PATH = str(Path(__file__).resolve().parent.parent / "resources" / "icon.png")


def provider_algorithms() -> List[QgsProcessingAlgorithm]:
    """Fresh instances of every LandFuse algorithm, registered explicitly (no discovery magic).

    Returns:
        One new instance per algorithm class; QGIS takes ownership of them.
    """
    from .algorithms import ALGORITHM_CLASSES

    return [cls() for cls in ALGORITHM_CLASSES]


class LandFuseProvider(QgsProcessingProvider):
    """Processing provider holding the LandFuse algorithms."""

    def id(self) -> str:
        return "landfuse"

    def name(self) -> str:
        return "LandFuse"

    def longName(self) -> str:
        return "LandFuse: land cover (AMM-FuseNet) and change detection (AMFNet)"

    def icon(self) -> QIcon:
        return QIcon(ICON_PATH)

    def loadAlgorithms(self) -> None:
        for algorithm in provider_algorithms():
            self.addAlgorithm(algorithm)
