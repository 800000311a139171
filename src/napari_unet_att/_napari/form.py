"""A dock's form declared once as a table of :class:`Field`: widgets, rows, values and remembered settings.

Each dock lists its fields (what each one is, its label, range, default and settings key)
in one tuple; :class:`Form` builds the Qt widgets from it, sets each as an attribute of the
dock (``dock.budget``, ``dock.mode``, ...), and reads and restores the values from the same
table, so a field is never mapped by hand in several places.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLayout,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QWidget,
)

from . import dialogs
from .layout import wrap_label

# Field kinds. The first five hold a value; the others are parts of the form without one.
CHOICE, INT, FLOAT, CHECK, TEXT = "choice", "int", "float", "check", "text"
NOTE, BUTTON, LAYER = "note", "button", "layer"
_VALUED = (CHOICE, INT, FLOAT, CHECK, TEXT)


@dataclass(frozen=True)
class Field:
    """One entry of a dock's form.

    Parameters
    ----------
    name : str
        The dock attribute that holds the widget. A ``LAYER`` field names a
        :class:`~napari_unet_att._napari.layers.LayerCombo` the dock made before the form.
    kind : str
        ``CHOICE``, ``INT``, ``FLOAT``, ``CHECK``, ``TEXT`` (values); ``NOTE``, ``BUTTON``, ``LAYER``.
    label : str
        The row's label; "" makes the widget span the row.
    text : str
        A check box's or button's text, a text field's placeholder, a note's initial text.
    choices : sequence of str or callable
        A ``CHOICE``'s entries (a callable is asked when the form is built).
    bounds : (float, float)
        An ``INT`` / ``FLOAT``'s range.
    special : str
        Shown instead of the minimum (which then means "preset", "off", "auto").
    default : Any
        The value before any saved setting (None: the widget's own).
    setting : str or None
        The key in the remembered settings ("" for ``name``; None: not remembered).
    joined : bool
        Placed in the previous field's row.
    prefix : str
        A small label before the widget in a joined row.
    browse : (str, str, str) or None
        ``("dir" | "open" | "save", title, filter)``: a "…" button that fills a ``TEXT`` field.
    small : bool
        A ``NOTE`` in small grey text.
    stretch : int
        Stretch factor in a joined row.
    tip : str
        Tool tip.
    decimals, step : int, float
        A ``FLOAT``'s decimals and single step.
    """

    name: str
    kind: str
    label: str = ""
    text: str = ""
    choices: Sequence[str] | Callable[[], Sequence[str]] = ()
    bounds: tuple[float, float] = (0, 0)
    special: str = ""
    default: Any = None
    setting: str | None = ""
    joined: bool = False
    prefix: str = ""
    browse: tuple[str, str, str] | None = None
    small: bool = False
    stretch: int = 0
    tip: str = ""
    decimals: int = 2
    step: float = 1.0

    @property
    def key(self) -> str | None:
        """The settings key, or None when the field is not remembered."""
        if self.kind not in _VALUED or self.setting is None:
            return None
        return self.setting or self.name


class Form:
    """The widgets of a dock's :class:`Field` table, read and restored from the same table.

    Parameters
    ----------
    owner : QWidget
        The dock; each field's widget becomes ``owner.<name>``.
    """

    def __init__(self, owner: QWidget) -> None:
        self.owner = owner
        self.fields: list[Field] = []

    def add_rows(self, layout: QFormLayout, fields: Iterable[Field]) -> None:
        """Build ``fields`` into ``layout``, one row each (joined fields share a row)."""
        row: QHBoxLayout | None = None
        fields = list(fields)
        for i, field in enumerate(fields):
            part = self._build(field)
            if field.joined and row is not None:
                if field.prefix:
                    row.addWidget(QLabel(field.prefix))
                _add(row, part, field.stretch)
                continue
            if i + 1 < len(fields) and fields[i + 1].joined:
                row = QHBoxLayout()
                if field.prefix:
                    row.addWidget(QLabel(field.prefix))
                _add(row, part, field.stretch)
                part = row
            else:
                row = None
            if field.label:
                layout.addRow(field.label, part)
            else:
                layout.addRow(part)
        self.fields.extend(fields)

    def _build(self, field: Field) -> QWidget | QLayout:
        if field.kind == LAYER:
            widget = getattr(self.owner, field.name).native
        else:
            widget = _BUILDERS[field.kind](field)
            setattr(self.owner, field.name, widget)
            if field.default is not None:
                _write(field, widget, field.default)
        if field.tip:
            widget.setToolTip(field.tip)
        if field.browse is None:
            return widget
        row = QHBoxLayout()
        button = QPushButton("…")
        button.setMaximumWidth(30)
        button.clicked.connect(lambda: widget.setText(self._ask(field.browse) or widget.text()))
        row.addWidget(widget)
        row.addWidget(button)
        return row

    def _ask(self, browse: tuple[str, str, str]) -> str:
        how, title, filt = browse
        if how == "dir":
            return dialogs.ask_dir(self.owner, title)
        ask = dialogs.ask_open_path if how == "open" else dialogs.ask_save_path
        return ask(self.owner, title, filt)

    def values(self) -> dict[str, Any]:
        """The remembered fields' values, by settings key."""
        return {f.key: _read(f, getattr(self.owner, f.name)) for f in self.fields if f.key is not None}

    def restore(self, saved: dict[str, Any]) -> None:
        """Set the remembered fields from ``saved`` (settings of an earlier session); others keep theirs."""
        for f in self.fields:
            if f.key is not None and f.key in saved:
                _write(f, getattr(self.owner, f.name), saved[f.key])


def _add(row: QHBoxLayout, part: QWidget | QLayout, stretch: int) -> None:
    if isinstance(part, QLayout):
        row.addLayout(part, stretch)
    else:
        row.addWidget(part, stretch)


def _combo(f: Field) -> QComboBox:
    w = QComboBox()
    w.addItems(list(f.choices() if callable(f.choices) else f.choices))
    return w


def _spin(f: Field) -> QSpinBox:
    w = QSpinBox()
    w.setRange(int(f.bounds[0]), int(f.bounds[1]))
    w.setSpecialValueText(f.special)
    return w


def _float_spin(f: Field) -> QDoubleSpinBox:
    w = QDoubleSpinBox()
    w.setDecimals(f.decimals)
    w.setRange(float(f.bounds[0]), float(f.bounds[1]))
    w.setSingleStep(f.step)
    w.setSpecialValueText(f.special)
    return w


def _line(f: Field) -> QLineEdit:
    w = QLineEdit()
    w.setPlaceholderText(f.text)
    return w


_BUILDERS: dict[str, Callable[[Field], QWidget]] = {
    CHOICE: _combo,
    INT: _spin,
    FLOAT: _float_spin,
    CHECK: lambda f: QCheckBox(f.text),
    TEXT: _line,
    NOTE: lambda f: wrap_label(f.text, small=f.small),
    BUTTON: lambda f: QPushButton(f.text),
}


def _read(f: Field, w: Any) -> Any:
    if f.kind == CHOICE:
        return w.currentText()
    if f.kind == CHECK:
        return w.isChecked()
    if f.kind == TEXT:
        return w.text()
    return w.value()


def _write(f: Field, w: Any, value: Any) -> None:
    """Set a widget from a (possibly foreign) saved value; values of the wrong type are ignored."""
    if f.kind == CHOICE:
        if isinstance(value, str) and w.findText(value) >= 0:
            w.setCurrentText(value)
    elif f.kind in (INT, FLOAT):
        if isinstance(value, (int, float)):
            w.setValue(int(value) if f.kind == INT else float(value))
    elif f.kind == CHECK:
        w.setChecked(bool(value))
    elif f.kind == TEXT:
        w.setText(str(value))
