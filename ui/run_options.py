"""Widgets for run options: one per :class:`~landfuse.core.run_options.RunOption`.

The dock's Advanced box (tile, overlap, batch, device, precision, normalisation) and a task
panel's own options (the change threshold) are built here from the option tables, so their
ranges, defaults, labels and tooltips are the ones the command line and Processing show.
"""

from typing import Any

from qgis.PyQt.QtWidgets import QComboBox, QDoubleSpinBox, QSpinBox, QWidget

from ..core.run_options import RunOption

#: Largest tile and overlap the spin boxes offer when an option sets no maximum.
_DEFAULT_MAXIMUM = 4096


def option_widget(option: RunOption, parent: QWidget) -> QWidget:
    """A spin box or combo box for ``option``, set to its default."""
    widget: Any
    if option.kind == "text":
        widget = QComboBox(parent)  # editable: the choices are suggestions
        widget.setEditable(True)
        widget.addItems(list(option.choices))
    elif option.kind == "choice":
        widget = QComboBox(parent)
        labels = option.choice_labels or option.choices
        for value, label in zip(option.choices, labels):
            widget.addItem(label, value)
    elif option.kind == "float":
        widget = QDoubleSpinBox(parent)
        widget.setDecimals(2)
        widget.setRange(
            option.minimum if option.minimum is not None else 0.0,
            option.maximum if option.maximum is not None else 1.0,
        )
    else:
        widget = QSpinBox(parent)
        widget.setRange(
            int(option.minimum if option.minimum is not None else 0),
            int(option.maximum if option.maximum is not None else _DEFAULT_MAXIMUM),
        )
        if option.automatic:
            widget.setSpecialValueText(option.automatic)
    if option.step is not None and not isinstance(widget, QComboBox):
        widget.setSingleStep(option.step)
    widget.setObjectName(f"LandFuseOption_{option.name}")
    widget.setToolTip(option.help)
    set_option_value(option, widget, option.default)
    return widget


def option_value(option: RunOption, widget: QWidget) -> Any:
    """The request value the widget holds."""
    if isinstance(widget, QComboBox) and widget.isEditable():
        return option.from_widget(widget.currentText())
    if isinstance(widget, QComboBox):
        return option.from_widget(widget.currentData())
    return option.from_widget(widget.value())


def set_option_value(option: RunOption, widget: QWidget, value: Any) -> None:
    """Show a request value (None: the automatic one) in the widget."""
    shown = option.to_widget(value)
    if isinstance(widget, QComboBox) and widget.isEditable():
        widget.setEditText(str(shown))
    elif isinstance(widget, QComboBox):
        widget.setCurrentIndex(max(0, widget.findData(shown)))
    else:
        widget.setValue(shown)


def option_text(widget: QWidget) -> str:
    """The widget's value as project-settings text."""
    if isinstance(widget, QComboBox) and widget.isEditable():
        return widget.currentText().strip()
    if isinstance(widget, QComboBox):
        return str(widget.currentData())
    return str(widget.value())


def set_option_text(widget: QWidget, text: str) -> None:
    """Restore a value saved by :func:`option_text`."""
    if isinstance(widget, QComboBox) and widget.isEditable():
        widget.setEditText(text)
    elif isinstance(widget, QComboBox):
        widget.setCurrentIndex(max(0, widget.findData(text)))
    elif isinstance(widget, QDoubleSpinBox):
        widget.setValue(float(text))
    else:
        widget.setValue(int(text))
