"""How the docks sit in napari: a scrolling body, compact combo boxes, tabs with each other, labels.

napari stacks plugin docks under each other and sizes them for their widest entry; our
docks are tall forms with plots, so they scroll, keep combo boxes narrow and join each other
as tabs.
"""

from __future__ import annotations

from typing import Any

from qtpy.QtCore import QEvent, QSize, Qt, QTimer
from qtpy.QtWidgets import QFrame, QLabel, QScrollArea, QSizePolicy, QVBoxLayout, QWidget

from .plots import PALETTE

#: Height below which a dock scrolls rather than shrinks further (napari stacks new docks
#: under old ones; without a floor the second one squeezed the first to ~100 px).
MIN_DOCK_HEIGHT = 380
#: Characters a combo box shows at least; longer entries (layer names) are elided, not widening the dock.
COMBO_MIN_CHARS = 14


def wrap_label(text: str = "", small: bool = False) -> QLabel:
    """A word-wrapping label (for help lines and model descriptions)."""
    lab = QLabel(text)
    lab.setWordWrap(True)
    lab.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Minimum)
    if small:
        lab.setStyleSheet(f"font-size: 10px; color: {PALETTE['muted']};")
    return lab


def show_verdict(label: QLabel, text: str, ok: bool) -> None:
    """A check's result in green (``ok``) or red."""
    label.setText(text)
    label.setStyleSheet(f"color: {PALETTE['good' if ok else 'bad']};")


def scroll_layout(widget: QWidget) -> QVBoxLayout:
    """Give ``widget`` a scrolling body and return the body's layout.

    The docks hold forms and plots taller than a laptop screen; without scrolling they would
    force the napari window to grow.
    """
    outer = QVBoxLayout(widget)
    outer.setContentsMargins(0, 0, 0, 0)
    scroll = _VerticalScrollArea()
    scroll.setWidgetResizable(True)
    scroll.setFrameShape(QFrame.Shape.NoFrame)
    body = QWidget()
    scroll.setWidget(body)
    outer.addWidget(scroll)
    return QVBoxLayout(body)


class _VerticalScrollArea(QScrollArea):
    """Scrolls vertically only: the dock is never narrower than its form (no sideways scrolling)."""

    def __init__(self) -> None:
        super().__init__()
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)

    def eventFilter(self, obj: Any, event: Any) -> bool:  # noqa: N802 - Qt naming
        # QScrollArea filters its widget's events already; when the form's layout changes, our
        # minimum (derived from the form) changes too, and the dock's layout must hear of it.
        if obj is self.widget() and event.type() == QEvent.Type.LayoutRequest:
            self.updateGeometry()
        return super().eventFilter(obj, event)

    def minimumSizeHint(self) -> QSize:  # noqa: N802 - Qt naming
        body = self.widget()
        if body is None:
            return super().minimumSizeHint()
        # + the scroll bar, shown or not, so its appearance never makes the form scroll sideways
        width = body.minimumSizeHint().width() + self.verticalScrollBar().sizeHint().width() + 2 * self.frameWidth() + 4
        return QSize(width, min(MIN_DOCK_HEIGHT, body.sizeHint().height()))


class DockTabsMixin:
    """For our dock widgets: on first show, join a dock of ours already open, as a tab."""

    unet_att_dock = True  # marks our docks for :func:`tabify_with_siblings`
    _tabify_done = False

    def showEvent(self, event: Any) -> None:  # noqa: N802 - Qt naming
        if not self._tabify_done:
            compact_combos(self)  # type: ignore[arg-type]
        super().showEvent(event)  # type: ignore[misc]
        if not self._tabify_done:
            self._tabify_done = True
            # After napari has finished adding (and sizing) the dock.
            QTimer.singleShot(0, self._tabify_now)

    def _tabify_now(self) -> None:
        try:
            tabify_with_siblings(self)  # type: ignore[arg-type]
        except RuntimeError:  # closed before the timer fired: its Qt object is gone
            pass


def compact_combos(widget: QWidget) -> None:
    """Size every combo box under ``widget`` for a few characters, not for its longest entry.

    Qt's default sizes a combo box for its longest entry, so one long layer name made the
    dock ~700 px wide; the full names still show in the open list.
    """
    from qtpy.QtWidgets import QApplication, QComboBox

    for combo in widget.findChildren(QComboBox):
        combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        combo.setMinimumContentsLength(COMBO_MIN_CHARS)
        # Qt keeps a minimum size computed before the policy changed; a style change drops it.
        QApplication.sendEvent(combo, QEvent(QEvent.Type.StyleChange))


def tabify_with_siblings(widget: QWidget) -> bool:
    """Put ``widget``'s dock in a tab beside an already docked widget of ours.

    napari stacks a second plugin dock under the first (each then gets half the height);
    our docks are tall forms with plots, so they share the space as tabs instead. Uses only
    Qt's own dock API. Returns True when the dock was tabified.
    """
    from qtpy.QtWidgets import QDockWidget, QMainWindow

    mine = _ancestor(widget, QDockWidget)
    main = widget.window()
    if mine is None or not isinstance(main, QMainWindow):
        return False
    for dock in main.findChildren(QDockWidget):
        inner = dock.widget()
        if dock is not mine and dock.isVisible() and not dock.isFloating() and _holds_ours(inner):
            main.tabifyDockWidget(dock, mine)
            mine.raise_()
            return True
    return False


def _holds_ours(widget: QWidget | None) -> bool:
    if widget is None:
        return False
    return any(getattr(w, "unet_att_dock", False) for w in (widget, *widget.findChildren(QWidget)))


def _ancestor(widget: QWidget, kind: type) -> Any:
    parent = widget.parentWidget()
    while parent is not None and not isinstance(parent, kind):
        parent = parent.parentWidget()
    return parent
