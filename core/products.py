"""The products each task writes: one list per task drives every surface.

A :class:`Product` says what one output raster is (file suffix, data type, nodata, style,
overviews), how the surfaces name it (layer title, checkbox and Processing output label, CLI
flag) and whether it is the task's main product (always written). The engine's writers, the
styles, the report, the dock's checkboxes, the Processing outputs, the CLI's ``--no-<key>``
flags and the result layers all iterate :data:`LANDCOVER_PRODUCTS` / :data:`CHANGE_PRODUCTS`;
how a product's pixels are computed from the blended probabilities is the task's
(:mod:`landfuse.core.tasks`).

Standard library only (the QGIS side imports it without torch).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

__all__ = [
    "CHANGE_PRODUCTS",
    "CLASS_NODATA",
    "LANDCOVER_PRODUCTS",
    "PROBABILITY_NODATA",
    "PRODUCTS",
    "Product",
    "output_keys",
]

#: Nodata of the class map, the change mask and the confidence raster.
CLASS_NODATA = 255
#: Nodata of the change probability raster.
PROBABILITY_NODATA = -1.0


@dataclass(frozen=True)
class Product:
    """One raster product of a task.

    Attributes:
        key: Short key (``classes``, ``confidence``, ``change``, ``probability``): the request's
            ``outputs`` entry, the report's ``outputs`` key, the Processing output ``<KEY>``
            (the main product's is ``OUTPUT``), the CLI's ``--no-<key>``.
        suffix: File name suffix after ``<name>_``.
        dtype: ``uint8`` or ``float32``.
        nodata: The nodata value.
        description: Band description; ``{model}`` is replaced by the model's name.
        style: ``"classes"``, ``"change"`` or ``"gradient"`` (the QML written beside it).
        overview_resampling: GDAL overview resampling (``NEAREST`` for classes).
        title: Layer title in QGIS and label of the Processing output.
        help: What it is, for the dock's checkbox, Processing's help and ``--help``.
        main: The task's product itself: always written, first in every list.
        visible: Whether its layer is shown when added.
        classes: Whether it is paletted with the model's class table.
        class_count: Only the first n classes are painted (None: all).
        value_range: ``(min, max)`` of the gradient style.
    """

    key: str
    suffix: str
    dtype: str
    nodata: float
    description: str
    style: str
    overview_resampling: str
    title: str
    help: str
    main: bool = False
    visible: bool = False
    classes: bool = False
    class_count: int | None = None
    value_range: tuple[float, float] = (0.0, 1.0)

    @property
    def parameter(self) -> str:
        """The Processing output parameter name."""
        return "OUTPUT" if self.main else self.key.upper()


LANDCOVER_PRODUCTS: tuple[Product, ...] = (
    Product(
        "classes",
        "classes",
        "uint8",
        CLASS_NODATA,
        "land cover ({model})",
        "classes",
        "NEAREST",
        title="Land cover",
        help="The class map (uint8, nodata 255) styled with the model's classes.",
        main=True,
        visible=True,
        classes=True,
    ),
    Product(
        "confidence",
        "confidence",
        "uint8",
        CLASS_NODATA,
        "confidence of the class (% probability)",
        "gradient",
        "AVERAGE",
        title="Confidence (%)",
        help="The probability of the chosen class in % (uint8, nodata 255).",
        value_range=(0.0, 100.0),
    ),
)

CHANGE_PRODUCTS: tuple[Product, ...] = (
    Product(
        "change",
        "mask",
        "uint8",
        CLASS_NODATA,
        "change (0 no change, 1 change)",
        "change",
        "NEAREST",
        title="Change",
        help="The change mask (uint8: 0 no change, 1 change, nodata 255).",
        main=True,
        visible=True,
        classes=True,
        class_count=2,
    ),
    Product(
        "probability",
        "probability",
        "float32",
        PROBABILITY_NODATA,
        "probability of change (0-1)",
        "gradient",
        "AVERAGE",
        title="Change probability",
        help="The probability of change (float32 0-1, nodata -1).",
    ),
)

#: Every task's products, by task name.
PRODUCTS: Mapping[str, tuple[Product, ...]] = {
    "landcover": LANDCOVER_PRODUCTS,
    "change": CHANGE_PRODUCTS,
}


def output_keys(products: tuple[Product, ...]) -> tuple[str, ...]:
    """The product keys, main product first (a request's default ``outputs``)."""
    return tuple(p.key for p in products)
