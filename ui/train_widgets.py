"""Widgets of the Train tab: the class table, the learning curves, the assessment."""

import html
from typing import Any, Dict, List, Mapping, Optional, Sequence

from qgis.gui import QgsColorButton
from qgis.PyQt.QtCore import QPointF, Qt
from qgis.PyQt.QtGui import QColor, QPainter, QPen, QPolygonF
from qgis.PyQt.QtWidgets import QHeaderView, QSizePolicy, QTableWidget, QTableWidgetItem, QWidget

from ..core.label_classes import LabelClasses

__all__ = ["ClassTable", "CurvesWidget", "assessment_html"]


class ClassTable(QTableWidget):
    """One row per class of the labels: the label value, an editable name and colour."""

    def __init__(self, parent: QWidget = None) -> None:
        super().__init__(0, 3, parent)
        self.setHorizontalHeaderLabels(["Label value", "Class", "Colour"])
        self.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeToContents)
        self.horizontalHeader().setSectionResizeMode(1, QHeaderView.Stretch)
        self.horizontalHeader().setSectionResizeMode(2, QHeaderView.ResizeToContents)
        self.verticalHeader().setVisible(False)
        self.values: List[Any] = []
        #: The label mapping of the classes shown (label value → class index).
        self.label_map: Dict[Any, int] = {}
        self.legend = ""

    def set_classes(self, found: Optional[LabelClasses], values: Sequence[Any] = ()) -> None:
        """Show a class table (``values``: the label value of each class, in class order)."""
        self.setRowCount(0)
        self.values, self.label_map, self.legend = [], {}, ""
        if found is None:
            return
        self.label_map = dict(found.label_map)
        self.legend = found.legend
        by_index = {}
        for value, index in found.label_map.items():
            by_index.setdefault(index, value)
        self.values = list(values) or [by_index.get(c.value, c.value) for c in found.classes]
        self.setRowCount(len(found.classes))
        for row, (value, spec) in enumerate(zip(self.values, found.classes)):
            item = QTableWidgetItem(str(value))
            item.setFlags(item.flags() & ~Qt.ItemIsEditable)
            self.setItem(row, 0, item)
            self.setItem(row, 1, QTableWidgetItem(spec.name))
            button = QgsColorButton(self)
            button.setColor(QColor(*spec.color))
            button.setShowMenu(False)
            self.setCellWidget(row, 2, button)
        self.resizeRowsToContents()
        height = self.horizontalHeader().height() + sum(
            self.rowHeight(r) for r in range(self.rowCount())
        )
        self.setFixedHeight(min(height + 4, 220))

    def classes(self) -> List[Dict[str, Any]]:
        """The classes as the user left them: ``{"value", "name", "color": "#rrggbb"}``."""
        out = []
        for row, value in enumerate(self.values):
            name = self.item(row, 1).text().strip() if self.item(row, 1) else ""
            colour = self.cellWidget(row, 2).color()
            out.append({"value": value, "name": name or str(value), "color": colour.name()})
        return out


class CurvesWidget(QWidget):
    """The training loss and the validation score per epoch, drawn as they arrive."""

    def __init__(self, parent: QWidget = None) -> None:
        super().__init__(parent)
        self.setMinimumHeight(120)
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Fixed)
        self.loss: List[float] = []
        self.score: List[float] = []
        self.score_name = "validation score"

    def clear(self) -> None:
        self.loss, self.score = [], []
        self.update()

    def add_epoch(self, loss: Optional[float], score: Optional[float]) -> None:
        if isinstance(loss, (int, float)):
            self.loss.append(float(loss))
        if isinstance(score, (int, float)):
            self.score.append(float(score))
        self.update()

    def paintEvent(self, _event) -> None:
        painter = QPainter(self)
        painter.setRenderHint(QPainter.Antialiasing)
        rect = self.rect().adjusted(30, 8, -8, -20)
        painter.fillRect(self.rect(), self.palette().base())
        painter.setPen(QPen(QColor("#999999")))
        painter.drawRect(rect)
        if not self.loss and not self.score:
            painter.drawText(rect, Qt.AlignCenter, "Learning curves appear here during training.")
            return
        epochs = max(len(self.loss), len(self.score), 2)

        def line(values: List[float], colour: str, top: float) -> None:
            if not values:
                return
            low, high = (0.0, top) if top else (min(values), max(values) or 1.0)
            span = (high - low) or 1.0
            points = QPolygonF(
                [
                    QPointF(
                        rect.left() + rect.width() * i / (epochs - 1),
                        rect.bottom() - rect.height() * (v - low) / span,
                    )
                    for i, v in enumerate(values)
                ]
            )
            painter.setPen(QPen(QColor(colour), 2))
            painter.drawPolyline(points)

        line(self.loss, "#d62728", max(self.loss) if self.loss else 1.0)
        line(self.score, "#1f77b4", 1.0)
        painter.setPen(QPen(QColor("#d62728")))
        painter.drawText(rect.left() + 4, rect.top() + 14, "training loss")
        painter.setPen(QPen(QColor("#1f77b4")))
        painter.drawText(rect.left() + 100, rect.top() + 14, f"{self.score_name} (0–1)")
        painter.setPen(QPen(QColor("#666666")))
        painter.drawText(rect.left(), self.rect().bottom() - 4, "epoch 1")
        painter.drawText(rect.right() - 50, self.rect().bottom() - 4, f"epoch {epochs}")


def _fmt(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) else "–"


def assessment_html(assessment: Mapping[str, Any], headline: str) -> str:
    """The assessment as the Train tab shows it: the verdict, the network against the baseline,
    per-class IoU and F1 with class names, and the confusion matrix."""
    parts = [f"<b>{html.escape(str(assessment.get('verdict', '')))}</b>"]
    network = assessment.get("network") or {}
    baseline = assessment.get("baseline") or {}
    if not network:
        return parts[0]
    names = network.get("class_names") or []
    rows = [
        "<tr><th></th><th>Network</th>"
        f"<th>{html.escape(str(baseline.get('name', 'Baseline')))}</th></tr>"
    ]
    for key, label in (("oa", "Overall accuracy"), ("miou", "Mean IoU"), ("kappa", "Kappa")):
        rows.append(
            f"<tr><td>{label}</td><td>{_fmt(network.get(key))}</td>"
            f"<td>{_fmt(baseline.get(key))}</td></tr>"
        )
    if network.get("change"):
        rows.append(
            f"<tr><td>Change F1</td><td>{_fmt(network['change'].get('f1'))}</td>"
            f"<td>{_fmt((baseline.get('change') or {}).get('f1'))}</td></tr>"
        )
    parts.append("<table cellpadding='2'>" + "".join(rows) + "</table>")
    if baseline.get("note") and not baseline.get("miou"):
        parts.append(f"<i>{html.escape(str(baseline['note']))}</i>")
    base_classes = {c.get("name"): c for c in baseline.get("per_class") or []}
    rows = ["<tr><th>Class</th><th>IoU</th><th>F1</th><th>Baseline IoU</th><th>Pixels</th></tr>"]
    for entry in network.get("per_class") or []:
        name = entry.get("name", "")
        other = base_classes.get(name, {})
        rows.append(
            f"<tr><td>{html.escape(str(name))}</td><td>{_fmt(entry.get('iou'))}</td>"
            f"<td>{_fmt(entry.get('f1'))}</td><td>{_fmt(other.get('iou'))}</td>"
            f"<td>{entry.get('reference_pixels', '')}</td></tr>"
        )
    parts.append("<table cellpadding='2'>" + "".join(rows) + "</table>")
    matrix = network.get("confusion_matrix") or []
    if matrix and names:
        head = "".join(f"<th>{html.escape(str(n))}</th>" for n in names)
        body = "".join(
            f"<tr><th>{html.escape(str(names[i]))}</th>"
            + "".join(f"<td align='right'>{v}</td>" for v in row)
            + "</tr>"
            for i, row in enumerate(matrix)
        )
        parts.append(
            "Confusion matrix (rows: reference, columns: prediction)"
            f"<table cellpadding='2'><tr><th></th>{head}</tr>{body}</table>"
        )
    split = assessment.get("split")
    if split:
        parts.append(
            f"<span style='color:#666'>Scored on pixels the network did not learn from "
            f"({html.escape(str(split))}); {headline} is the headline score.</span>"
        )
    return "<br>".join(parts)
