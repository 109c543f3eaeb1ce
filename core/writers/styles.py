"""QML styles written beside each raster: paletted classes, the change overlay, colour ramps.

QGIS applies a ``.qml`` of the same base name automatically when the layer is added.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Iterable, Sequence

from .base import CHANGE_COLOUR, ClassLike, ProductSpec


def _hex(color: Sequence[int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*(int(c) for c in color[:3]))


def _qml_document(renderer: ET.Element) -> str:
    root = ET.Element("qgis", {"version": "3.22.0", "styleCategories": "Symbology"})
    pipe = ET.SubElement(root, "pipe")
    pipe.append(renderer)
    ET.SubElement(pipe, "brightnesscontrast", {"brightness": "0", "contrast": "0", "gamma": "1"})
    ET.SubElement(
        pipe,
        "huesaturation",
        {
            "saturation": "0",
            "grayscaleMode": "0",
            "colorizeOn": "0",
            "colorizeRed": "255",
            "colorizeGreen": "128",
            "colorizeBlue": "128",
            "colorizeStrength": "100",
        },
    )
    ET.SubElement(pipe, "rasterresampler", {"maxOversampling": "2"})
    ET.SubElement(root, "blendMode").text = "0"
    ET.indent(root)
    body = ET.tostring(root, encoding="unicode")
    return "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n" + body + "\n"


def _paletted(entries: Iterable[tuple[int, Sequence[int], int, str]]) -> ET.Element:
    renderer = ET.Element(
        "rasterrenderer",
        {"type": "paletted", "band": "1", "opacity": "1", "alphaBand": "-1", "nodataColor": ""},
    )
    ET.SubElement(renderer, "rasterTransparency")
    palette = ET.SubElement(renderer, "colorPalette")
    for value, color, alpha, label in entries:
        ET.SubElement(
            palette,
            "paletteEntry",
            {"value": str(value), "color": _hex(color), "alpha": str(alpha), "label": label},
        )
    return renderer


def class_style_qml(classes: Sequence[ClassLike]) -> str:
    """Return a QGIS paletted style for a class map (one entry per class, with its name).

    Args:
        classes: The class table (value, name, RGB colour).

    Returns:
        The QML document text.
    """
    return _qml_document(_paletted((c.value, c.color, 255, c.name) for c in classes))


def change_style_qml(classes: Sequence[ClassLike] = ()) -> str:
    """Return a QGIS style for a change mask: change coloured, no change fully transparent.

    Args:
        classes: The model's two classes (for their names); defaults to no change / change.

    Returns:
        The QML document text.
    """
    names = {int(c.value): c.name for c in classes}
    return _qml_document(
        _paletted(
            [
                (0, (255, 255, 255), 0, names.get(0, "no change")),
                (1, CHANGE_COLOUR, 255, names.get(1, "change")),
            ]
        )
    )


def gradient_style_qml(
    minimum: float, maximum: float, stops: Sequence[tuple[float, Sequence[int], int]]
) -> str:
    """Return a QGIS single-band pseudocolour style with an interpolated colour ramp.

    Args:
        minimum: Value of the first colour.
        maximum: Value of the last colour.
        stops: ``(fraction 0..1, RGB, alpha)`` in increasing order, first at 0 and last at 1.

    Returns:
        The QML document text.
    """
    renderer = ET.Element(
        "rasterrenderer",
        {
            "type": "singlebandpseudocolor",
            "band": "1",
            "opacity": "1",
            "alphaBand": "-1",
            "classificationMin": repr(float(minimum)),
            "classificationMax": repr(float(maximum)),
            "nodataColor": "",
        },
    )
    ET.SubElement(renderer, "rasterTransparency")
    shader = ET.SubElement(
        ET.SubElement(renderer, "rastershader"),
        "colorrampshader",
        {
            "colorRampType": "INTERPOLATED",
            "classificationMode": "1",
            "clip": "0",
            "minimumValue": repr(float(minimum)),
            "maximumValue": repr(float(maximum)),
            "labelPrecision": "2",
        },
    )

    def rgba(color: Sequence[int], alpha: int) -> str:
        return ",".join(str(int(c)) for c in color[:3]) + f",{int(alpha)}"

    ramp = ET.SubElement(shader, "colorramp", {"type": "gradient", "name": "[source]"})
    options = ET.SubElement(ramp, "Option", {"type": "Map"})
    inner = "#".join(f"{frac:g};{rgba(color, alpha)}" for frac, color, alpha in stops[1:-1])
    for name, value in (
        ("color1", rgba(stops[0][1], stops[0][2])),
        ("color2", rgba(stops[-1][1], stops[-1][2])),
        ("discrete", "0"),
        ("rampType", "gradient"),
        ("stops", inner),
    ):
        ET.SubElement(options, "Option", {"type": "QString", "name": name, "value": value})
    span = float(maximum) - float(minimum)
    for frac, color, alpha in stops:
        at = float(minimum) + span * float(frac)
        ET.SubElement(
            shader,
            "item",
            {
                "value": f"{at:g}",
                "label": f"{at:g}",
                "color": _hex(color),
                "alpha": str(alpha),
            },
        )
    return _qml_document(renderer)


#: Probability ramp: transparent white at 0, yellow at 0.5, red at 1.
PROBABILITY_STOPS = (
    (0.0, (255, 255, 255), 0),
    (0.5, (255, 200, 0), 255),
    (1.0, (215, 25, 28), 255),
)
#: Confidence ramp (percent): red (uncertain) to green (confident).
CONFIDENCE_STOPS = (
    (0.0, (215, 25, 28), 255),
    (0.5, (255, 255, 191), 255),
    (1.0, (26, 150, 65), 255),
)


def _style_for(product: ProductSpec) -> str:
    if product.style == "classes":
        return class_style_qml(product.classes)
    if product.style == "change":
        return change_style_qml(product.classes)
    stops = PROBABILITY_STOPS if product.key == "probability" else CONFIDENCE_STOPS
    return gradient_style_qml(product.value_range[0], product.value_range[1], stops)
