"""Pieces shared by the dock widgets: layer combos, plot canvas, model store, worker helpers.

Nothing here trains, denoises or measures: those are calls into the engine made by the
widgets. This module only adapts the engine to Qt / napari.
"""

from __future__ import annotations

import io
import logging
import time
import traceback
import weakref
from typing import Any

import numpy as np
from magicgui.widgets import ComboBox, Select
from psygnal import Signal
from qtpy.QtCore import QCoreApplication, QElapsedTimer, QEvent, QSize, Qt, QTimer
from qtpy.QtWidgets import QFileDialog, QFrame, QLabel, QScrollArea, QSizePolicy, QVBoxLayout, QWidget

from ..errors import UserError

log = logging.getLogger("napari_unet_att")

NONE_CHOICE = "(none)"


# -- layer selection ----------------------------------------------------------------------
class LayerCombo:
    """A combo box listing the viewer's layers of some types, kept in sync with the viewer.

    It follows layers being added, removed, reordered and renamed. ``optional=True`` adds a
    ``(none)`` entry, whose value is ``None``. ``multiple=True`` makes it a list in which
    several layers can be selected (its value is then a list).

    Parameters
    ----------
    viewer : napari.Viewer
    layer_types : tuple of type
        Accepted layer classes (e.g. ``(napari.layers.Image,)``).
    label : str
    optional : bool
    """

    def __init__(self, viewer: Any, layer_types: tuple[type, ...], label: str = "", optional: bool = False,
                 multiple: bool = False, exclude: Any = None) -> None:
        self.viewer = viewer
        self.layer_types = layer_types
        self.optional = optional
        self.multiple = multiple
        self.exclude = exclude  # optional predicate: layers it accepts are not offered
        if multiple:
            self.combo = Select(label=label, choices=self._choices, allow_multiple=True, value=[])
            self.combo.native.setMaximumHeight(90)  # a few rows; it scrolls beyond
        else:
            self.combo = ComboBox(label=label, choices=self._choices, nullable=False)
        events = viewer.layers.events
        for name in ("inserted", "removed", "reordered", "renamed"):
            emitter = getattr(events, name, None)
            if emitter is not None:
                emitter.connect(self._refresh)
        self._disconnect_info = [(getattr(events, n, None), self._refresh) for n in ("inserted", "removed",
                                                                                    "reordered", "renamed")]

    def _choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        found = [(layer.name, layer) for layer in self.viewer.layers
                 if isinstance(layer, self.layer_types) and not (self.exclude and self.exclude(layer))]
        return [(NONE_CHOICE, None), *found] if self.optional else found

    def _refresh(self, _event: Any = None) -> None:
        current = self.combo.value
        self.combo.reset_choices()
        present = [v for _, v in self._choices()]
        if self.multiple:  # keep the user's choices that still exist
            self.combo.value = [v for v in current if any(v is p for p in present)]
        elif current is not None and current in present:
            self.combo.value = current  # keep the user's choice when other layers change

    def disconnect(self) -> None:
        """Stop following the viewer (the widget is being closed)."""
        for emitter, cb in self._disconnect_info:
            if emitter is not None:
                emitter.disconnect(cb)

    @property
    def value(self) -> Any:
        return self.combo.value

    @value.setter
    def value(self, layer: Any) -> None:
        self._refresh()
        self.combo.value = layer

    @property
    def native(self) -> QWidget:
        return self.combo.native

    @property
    def changed(self) -> Any:
        return self.combo.changed


# -- the model shared by the docks of one viewer ------------------------------------------
class ModelStore:
    """The current model of each viewer (trained in the training dock or loaded from a file).

    Both docks and the menu command read it, so a model trained in one dock is applied in the
    other without saving it first. Keyed weakly by viewer: closing a viewer frees its model.
    """

    changed = Signal(object)  # emits the viewer whose model changed

    def __init__(self) -> None:
        self._models: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def get(self, viewer: Any) -> tuple[Any, str] | None:
        """``(denoiser, origin)`` or None."""
        return self._models.get(_unproxy(viewer))

    def set(self, viewer: Any, denoiser: Any, origin: str) -> None:
        self._models[_unproxy(viewer)] = (denoiser, origin)
        self.changed.emit(_unproxy(viewer))

    def forget(self, viewer: Any) -> None:
        """Drop the viewer's model (the docks keep showing the last one until a new one is set)."""
        self._models.pop(_unproxy(viewer), None)


MODELS = ModelStore()


def _unproxy(viewer: Any) -> Any:
    """The real viewer behind napari's PublicOnlyProxy (menu commands receive a proxy)."""
    return getattr(viewer, "__wrapped__", viewer)


# -- layer data ---------------------------------------------------------------------------
#: The widgets have no channel selector: napari's layer context menu splits channels into layers.
SPLIT_HINT = ("In napari, right-click the layer and choose Split RGB (or Split Stack for channels), then "
              "select one of the new layers.")


def layer_stack(layer: Any) -> Any:
    """A layer's data as a ``(T, Y, X)`` stack, validated by :func:`napari_unet_att.stackio.io.as_timelapse`.

    The data stay lazy (memory map / dask). The engine's message is kept; it names the layer
    instead of "array", and where it asks for a channel it says how to get one in napari.

    Raises
    ------
    InputError
        No layer, a multiscale layer, or data that are not a single-channel time-lapse.
    """
    from ..errors import InputError
    from ..stackio import as_timelapse

    if layer is None:
        raise InputError("no image layer selected: open a time-lapse first (File > Open or drag a TIFF in)")
    if getattr(layer, "multiscale", False):
        raise InputError(f"layer {layer.name!r} is multiscale; a single-resolution (T, Y, X) layer is needed")
    try:
        return as_timelapse(layer.data)
    except InputError as exc:
        msg = str(exc)
        if msg.startswith("array: "):
            msg = f"layer {layer.name!r}: {msg[len('array: '):]}"
        if "choose one with channel" in msg:
            msg = f"{msg}. {SPLIT_HINT}"
        raise InputError(msg) from None


# -- notifications ------------------------------------------------------------------------
class WorkerFailure(Exception):
    """An engine error carried out of a napari generator worker (see :func:`drain`).

    napari's ``GeneratorWorker`` takes a ``RuntimeError`` raised by its generator for "the
    worker was deleted": it only warns, and emits neither ``errored`` nor ``finished``, so
    the user would get no message and a dock stuck in its busy state. The engine's
    :class:`~napari_unet_att.errors.ResourceError` (out of memory, full disk) and torch's
    own errors are ``RuntimeError`` subclasses, so :func:`drain` wraps them in this.
    """

    def __init__(self, original: BaseException) -> None:
        super().__init__(str(original))
        self.original = original


def report_error(exc: BaseException, what: str) -> None:
    """Show an error in napari: a :class:`UserError` message as is, anything else with its type.

    Unexpected errors are also logged with their traceback (they are bugs).
    """
    from napari.utils.notifications import show_error

    if isinstance(exc, WorkerFailure):
        exc = exc.original
    if isinstance(exc, UserError):
        show_error(str(exc))
    else:
        log.error("%s failed:\n%s", what, "".join(traceback.format_exception(exc)))
        show_error(f"{what} failed: {type(exc).__name__}: {exc}")


def format_seconds(s: float | None) -> str:
    """``'1:05'`` / ``'1:02:03'`` / ``'?'``."""
    if s is None or not np.isfinite(s):
        return "?"
    s = int(round(s))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


def wrap_label(text: str = "", small: bool = False) -> QLabel:
    """A word-wrapping label (for help lines and model descriptions)."""
    lab = QLabel(text)
    lab.setWordWrap(True)
    lab.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Minimum)
    if small:
        lab.setStyleSheet("font-size: 10px; color: #a0a0a0;")
    return lab


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


#: Height below which a dock scrolls rather than shrinks further (napari stacks new docks
#: under old ones; without a floor the second one squeezed the first to ~100 px).
MIN_DOCK_HEIGHT = 380


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


#: Characters a combo box shows at least; longer entries (layer names) are elided, not widening the dock.
COMBO_MIN_CHARS = 14


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


def ask_save_path(parent: QWidget, title: str, filt: str) -> str:
    path, _ = QFileDialog.getSaveFileName(parent, title, "", filt)
    return path


def ask_open_path(parent: QWidget, title: str, filt: str) -> str:
    path, _ = QFileDialog.getOpenFileName(parent, title, "", filt)
    return path


def ask_dir(parent: QWidget, title: str) -> str:
    return QFileDialog.getExistingDirectory(parent, title)


# -- workers ------------------------------------------------------------------------------
def start_worker(worker: Any) -> Any:
    """Start a napari worker and mark it busy until its ``finished`` signal.

    ``worker.is_running`` is False until the thread pool actually runs the job (napari
    queues the start while an event loop runs), so "is it done?" is answered by
    :func:`worker_busy` instead, which is True from this call until ``finished``.
    """
    worker.unet_att_busy = True

    def _done(*_: Any) -> None:
        worker.unet_att_busy = False

    worker.finished.connect(_done)
    worker.start()
    return worker


def close_when_aborted(worker: Any, gen: Any) -> None:
    """Close the engine generator ``gen`` if napari aborts ``worker``.

    napari aborts workers itself (the Activity panel's cancel, and every busy task when the
    window closes) by ``worker.quit()``, which drops the generator at its next ``yield``
    without closing it: the engine's ``finally`` blocks (sampler / prefetch threads joined,
    the model saved) would then wait for garbage collection, their threads outliving the
    viewer. The generator is suspended at that ``yield`` when ``aborted`` is delivered, so
    closing it here is safe.
    """
    worker.aborted.connect(gen.close)


def warn_unless_closing(viewer: Any, message: str) -> None:
    """Show a warning after the current event, unless the viewer was closed meanwhile.

    ``Viewer.close()`` removes every layer before closing its window: a "layer removed"
    warning then describes the close, not something the user did. napari has no public
    "closing" signal; its window drops ``_qt_window`` when closed, which is checked here.
    """
    from napari.utils.notifications import show_warning

    def show() -> None:
        if hasattr(getattr(viewer, "window", None), "_qt_window"):
            show_warning(message)

    QTimer.singleShot(0, show)


def worker_busy(worker: Any) -> bool:
    """True while a worker started by :func:`start_worker` has not finished."""
    return worker is not None and bool(getattr(worker, "unet_att_busy", False) or worker.is_running)


def stop_worker(worker: Any, timeout_s: float = 30.0, quit: bool = False) -> bool:
    """Wait (processing Qt events) until a worker has finished; with ``quit``, ask it to abort first.

    The callers first ask the engine to end (``Trainer.stop``, the cancel flag of :func:`drain`),
    which runs the engine generator's ``finally`` (sampler and prefetch threads joined, the
    model saved). ``quit`` instead makes napari drop the generator at its next ``yield``
    *without closing it*: those threads would outlive the dock until garbage collection.

    Returns True when the worker is no longer running. Events are processed while waiting
    because the worker's ``finished`` signal is delivered through the event loop.
    """
    if worker is None:
        return True
    try:
        if quit:
            worker.quit()
    except RuntimeError:  # underlying Qt object already deleted
        return True
    timer = QElapsedTimer()
    timer.start()
    while worker_busy(worker) and timer.elapsed() < timeout_s * 1000:
        QCoreApplication.processEvents()
        time.sleep(0.01)
    return not worker_busy(worker)


# -- plots --------------------------------------------------------------------------------
class PlotCanvas:
    """A matplotlib figure in the dock, redrawn at most every ``min_interval_s``.

    Training events arrive many times a second; redrawing a figure takes tens of
    milliseconds, so redraws are throttled (and ``flush`` forces the last one).
    """

    def __init__(self, width: float = 4.0, height: float = 2.6, min_interval_s: float = 0.5) -> None:
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(int(height * 60))
        self.min_interval_s = min_interval_s
        self._last = 0.0
        self._pending = False
        self.draws = 0
        style_dark(self.figure)

    @property
    def native(self) -> QWidget:
        return self.canvas

    def request_draw(self) -> None:
        """Redraw unless the last redraw was less than ``min_interval_s`` ago."""
        now = time.monotonic()
        if now - self._last >= self.min_interval_s:
            self._draw(now)
        else:
            self._pending = True

    def flush(self) -> None:
        """Draw now if a redraw was skipped."""
        if self._pending:
            self._draw(time.monotonic())

    def _draw(self, now: float) -> None:
        self._last = now
        self._pending = False
        self.draws += 1
        self.canvas.draw_idle()

    def to_rgb(self) -> np.ndarray:
        """The figure rendered to a ``(H, W, 3)`` uint8 array (for an image layer)."""
        return figure_to_rgb(self.figure)


def figure_to_rgb(figure: Any, dpi: float = 100) -> np.ndarray:
    """Render a matplotlib figure to a ``(H, W, 3)`` uint8 array (for an image layer).

    Goes through PNG ``savefig``, which renders off-screen and leaves the figure attached to
    its on-screen Qt canvas.
    """
    from matplotlib.image import imread

    buf = io.BytesIO()
    figure.savefig(buf, format="png", dpi=dpi, facecolor=figure.get_facecolor())
    buf.seek(0)
    rgba = imread(buf)  # float in [0, 1]
    return np.ascontiguousarray((rgba[..., :3] * 255).round().astype(np.uint8))


def plot_placement(extent_world: np.ndarray, pixel_yx: np.ndarray, plot_hw: tuple[int, int],
                   y_offset: float = 0.0) -> tuple[tuple[float, float], tuple[float, float]]:
    """Scale and translate of a plot image placed to the right of a layer, as tall as the layer.

    Parameters
    ----------
    extent_world : array (2, ndim)
        The data layer's ``extent.world`` (min and max pixel centres, world units).
    pixel_yx : array (2,)
        The data layer's (y, x) pixel size, so the layer's full edge is one pixel past its extent.
    plot_hw : (int, int)
        Plot height and width in pixels.
    y_offset : float
        How far below the data's top edge the plot starts (world units; stacks several plots).

    Returns
    -------
    scale, translate : (float, float) each
        For the plot's 2D RGB layer.
    """
    lo, hi = np.asarray(extent_world, dtype=float)[:, -2:]
    edge = np.abs(np.asarray(pixel_yx, dtype=float))
    height = float(hi[0] - lo[0] + edge[0])
    s = height / max(int(plot_hw[0]), 1)
    gap = 0.05 * height
    top = lo[0] - 0.5 * edge[0]
    right = hi[1] + 0.5 * edge[1]
    return (s, s), (float(top + y_offset + 0.5 * s), float(right + gap + 0.5 * s))


def style_dark(figure: Any) -> None:
    """Colours that sit well in napari's dark theme (and stay readable as an image layer)."""
    figure.patch.set_facecolor("#262930")


def style_axes(ax: Any) -> None:
    ax.set_facecolor("#1e1f24")
    for spine in ax.spines.values():
        spine.set_color("#8a8f98")
    ax.tick_params(colors="#d0d0d0", labelsize=8)
    ax.xaxis.label.set_color("#d0d0d0")
    ax.yaxis.label.set_color("#d0d0d0")
    ax.title.set_color("#f0f0f0")
    ax.grid(True, color="#3a3d45", linewidth=0.5)


def drain(gen: Any, cancel: Any) -> Any:
    """Run an engine generator inside a napari worker, with a cooperative cancel flag.

    ``cancel`` is a :class:`threading.Event`. When it is set, the engine generator is closed
    *in the worker thread* (its ``finally`` blocks release tiles, temporary files and
    prefetch threads right away) and None is returned instead of a result.
    """
    try:
        while not cancel.is_set():
            try:
                event = next(gen)
            except StopIteration as stop:
                return stop.value
            except RuntimeError as exc:  # napari would swallow it: see WorkerFailure
                raise WorkerFailure(exc) from exc
            yield event
        return None
    finally:
        gen.close()


# -- ROIs ---------------------------------------------------------------------------------
def roi_masks(layer: Any, shape_yx: tuple[int, ...]) -> np.ndarray:
    """ROIs of a Labels or Shapes layer as a ``(Y, X)`` labels image for the metrics.

    A (T, Y, X) labels layer is collapsed over time (the largest label wins where ROIs were
    drawn on different frames); shapes drawn on a (T, Y, X) image keep only their (y, x)
    outline, so one ROI applies to every frame.
    """
    import napari.layers

    from ..errors import InputError

    shape_yx = tuple(int(n) for n in shape_yx)
    if isinstance(layer, napari.layers.Labels):
        data = np.asarray(layer.data)
        labels = data.max(axis=tuple(range(data.ndim - 2))) if data.ndim > 2 else data
        return labels
    if isinstance(layer, napari.layers.Shapes):
        if len(layer.data) == 0:
            raise InputError(f"shapes layer {layer.name!r} holds no shape: draw ROIs around cells first")
        flat = napari.layers.Shapes([np.asarray(s)[:, -2:] for s in layer.data], shape_type=list(layer.shape_type))
        masks = flat.to_masks(mask_shape=shape_yx)
        labels = np.zeros(shape_yx, dtype=np.int32)
        for i, m in enumerate(masks, start=1):
            labels[m.astype(bool) & (labels == 0)] = i
        return labels
    raise InputError(f"layer {getattr(layer, 'name', layer)!r} is neither a Labels nor a Shapes layer")


# -- metric plots -------------------------------------------------------------------------
_COLORS = {"raw": "#9e9e9e", "denoised": "#6fa8dc"}
_PANELS = (
    ("psnr", "PSNR vs reference (dB)"),
    ("ssim", "SSIM vs reference"),
    ("corr_with_mean", "correlation with the temporal mean"),
    ("adjacent_frame_corr", "correlation with the next frame"),
)


def plot_metrics(figure: Any, result: dict, denoised_name: str, raw_name: str | None) -> None:
    """Per-frame metrics of ``metrics.evaluate`` (raw and denoised overlaid), up to 2 x 2 panels."""
    figure.clear()
    series = {k: result.get(k, {}).get("per_frame", {}) for k in ("raw", "denoised")}
    panels = [(k, title) for k, title in _PANELS if series["denoised"].get(k)]
    if not panels:
        return
    ncols = 2 if len(panels) > 2 else 1
    nrows = -(-len(panels) // ncols)
    axes = figure.subplots(nrows, ncols, sharex=True, squeeze=False).ravel()
    labels = {"raw": raw_name or "raw", "denoised": denoised_name}
    for ax, (key, title) in zip(axes, panels, strict=False):
        style_axes(ax)
        means = []
        for which in ("raw", "denoised"):
            values = series[which].get(key)
            if values:
                y = np.array([np.nan if v is None else v for v in values], dtype=float)
                ax.plot(y, color=_COLORS[which], linewidth=0.9, label=labels[which])
                means.append(f"{np.nanmean(y):.3g}" if np.isfinite(y).any() else "?")
        ax.set_title(f"{title}\nmean {' → '.join(means)}", fontsize=7)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    for ax in axes[-ncols:]:
        ax.set_xlabel("frame", fontsize=7)
    # One legend for all panels, below them: inside a panel it hid curves, and long layer names
    # were cut at the dock's edge.
    handles, names = axes[0].get_legend_handles_labels()
    figure.legend(handles, [_short(n) for n in names], loc="outside lower center", ncols=len(names), fontsize=6,
                  facecolor="#262930", labelcolor="#d0d0d0", edgecolor="#3a3d45")


def _short(name: str, limit: int = 28) -> str:
    """A layer name short enough for a legend in a dock."""
    return name if len(name) <= limit else name[: limit - 1] + "…"


def plot_traces(figure: Any, traces: dict[str, np.ndarray], max_traces: int) -> None:
    """ROI traces, raw (grey) under denoised (blue), stacked with an offset per ROI."""
    figure.clear()
    ax = figure.add_subplot(111)
    style_axes(ax)
    den = np.asarray(traces["denoised"])[:max_traces]
    raw = np.asarray(traces["raw"])[:max_traces] if "raw" in traces else None
    span = np.nanmax(np.ptp(raw if raw is not None else den, axis=1)) if den.size else 1.0
    step = float(span) * 1.1 if span and np.isfinite(span) else 1.0
    for i, trace in enumerate(den):
        off = i * step - np.nanmedian(trace)
        if raw is not None:
            ax.plot(raw[i] + off, color=_COLORS["raw"], linewidth=0.6, label="raw" if i == 0 else None)
        ax.plot(trace + off, color=_COLORS["denoised"], linewidth=0.9, label="denoised" if i == 0 else None)
    ax.set_title(f"ROI traces (first {len(den)})", fontsize=8)
    ax.set_xlabel("frame", fontsize=7)
    ax.set_ylabel("mean intensity in the ROI\n(one ROI per row, offset)", fontsize=7)
    ax.set_yticks([])
    figure.legend(loc="outside lower center", ncols=2, fontsize=6, facecolor="#262930", labelcolor="#d0d0d0",
                  edgecolor="#3a3d45")
