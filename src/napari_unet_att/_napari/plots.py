"""The docks' plots: one colour palette, a throttled canvas, the loss curve and the metric plots.

Everything drawn in a dock (and pushed as an image layer beside the data) takes its colours
from :data:`PALETTE`, chosen to sit in napari's dark theme.
"""

from __future__ import annotations

import io
import time
from typing import Any

import numpy as np
from qtpy.QtWidgets import QWidget

#: The one palette of the plugin's figures and labels.
PALETTE = {
    "figure": "#262930",  # napari's dark panel
    "axes": "#1e1f24",
    "spine": "#8a8f98",
    "text": "#d0d0d0",
    "title": "#f0f0f0",
    "grid": "#3a3d45",
    "muted": "#a0a0a0",  # placeholders, help lines
    "raw": "#9e9e9e",
    "denoised": "#6fa8dc",  # also the training loss
    "validation": "#f6b26b",
    "good": "#80e080",
    "bad": "#ff8080",
}

#: Keyword arguments that style a legend like the rest of the figure.
LEGEND_STYLE = {"facecolor": PALETTE["figure"], "labelcolor": PALETTE["text"], "edgecolor": PALETTE["grid"]}


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
        self.figure.patch.set_facecolor(PALETTE["figure"])

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


class LossPlot(PlotCanvas):
    """Training and validation loss against the step, hidden behind a note until the first step."""

    def __init__(self) -> None:
        from matplotlib.ticker import MaxNLocator

        super().__init__()
        ax = self.figure.add_subplot(111)
        style_axes(ax)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.set_title("training loss", fontsize=9)
        (self.train_line,) = ax.plot([], [], color=PALETTE["denoised"], linewidth=0.8, label="train")
        (self.val_line,) = ax.plot([], [], "o-", color=PALETTE["validation"], markersize=3, linewidth=1.2,
                                   label="validation")
        ax.legend(fontsize=7, **LEGEND_STYLE)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole numbers
        # No empty axes with made-up ranges before the first step: a line that says what will come.
        ax.set_visible(False)
        self.placeholder = self.figure.text(0.5, 0.5, "the loss curve appears here once training starts",
                                            ha="center", va="center", color=PALETTE["muted"], fontsize=8)
        self.ax = ax

    def show_history(self, history: dict[str, list]) -> None:
        """Show the trainer's ``history`` (lists of steps and losses)."""
        if not history or not history.get("step"):
            return
        if not self.ax.get_visible():
            self.ax.set_visible(True)
            self.placeholder.set_visible(False)
        # The trainer appends to these lists from its thread: copy equal-length snapshots.
        n = min(len(history["step"]), len(history["loss"]))
        nv = min(len(history.get("val_step", [])), len(history.get("val_loss", [])))
        self.train_line.set_data(history["step"][:n], history["loss"][:n])
        self.val_line.set_data(history["val_step"][:nv] if nv else [], history["val_loss"][:nv] if nv else [])
        self.ax.relim()
        self.ax.autoscale_view()
        losses = [v for v in history["loss"][:n] + list(history.get("val_loss", [])[:nv]) if np.isfinite(v) and v > 0]
        if losses and max(losses) / min(losses) > 20:
            self.ax.set_yscale("log")  # early losses dwarf the rest otherwise
        self.request_draw()


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


def style_axes(ax: Any) -> None:
    """Dark axes from :data:`PALETTE` (readable in the dock and as an image layer)."""
    ax.set_facecolor(PALETTE["axes"])
    for spine in ax.spines.values():
        spine.set_color(PALETTE["spine"])
    ax.tick_params(colors=PALETTE["text"], labelsize=8)
    ax.xaxis.label.set_color(PALETTE["text"])
    ax.yaxis.label.set_color(PALETTE["text"])
    ax.title.set_color(PALETTE["title"])
    ax.grid(True, color=PALETTE["grid"], linewidth=0.5)


# -- metric plots -------------------------------------------------------------------------
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
                ax.plot(y, color=PALETTE[which], linewidth=0.9, label=labels[which])
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
                  **LEGEND_STYLE)


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
            ax.plot(raw[i] + off, color=PALETTE["raw"], linewidth=0.6, label="raw" if i == 0 else None)
        ax.plot(trace + off, color=PALETTE["denoised"], linewidth=0.9, label="denoised" if i == 0 else None)
    ax.set_title(f"ROI traces (first {len(den)})", fontsize=8)
    ax.set_xlabel("frame", fontsize=7)
    ax.set_ylabel("mean intensity in the ROI\n(one ROI per row, offset)", fontsize=7)
    ax.set_yticks([])
    figure.legend(loc="outside lower center", ncols=2, fontsize=6, **LEGEND_STYLE)
