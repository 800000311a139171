"""Denoise-and-evaluate dock: apply the current model to a layer, then measure and plot."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QWidget,
)
from superqt import QCollapsible

from ..config import InferConfig, InferEvent
from ..errors import InputError, UserError
from . import common as C
from . import settings as _settings
from .train_dock import _device_choices, _set_combo

SETTINGS_KEY = "denoise"
CURRENT_MODEL = "current model (trained or loaded)"
# Dock choice -> generalist mode (None: the viewer's current model). The first is the default.
MODEL_CHOICES: dict[str, str | None] = {
    "generalist (pretrained, no training)": "temporal",
    "generalist, mirrored-scan (T, 2N, N) (pretrained, no training)": "mirrored",
    CURRENT_MODEL: None,
}
_GENERALISTS: dict[str, Any] = {}  # loaded once per process, shared by every dock
MAX_TRACES = 6  # ROI traces drawn (more make the plot unreadable)


class DenoiseWidget(C.DockTabsMixin, QWidget):
    """Dock widget: denoise a layer with the viewer's current model, evaluate, plot.

    Parameters
    ----------
    napari_viewer : napari.Viewer
    """

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        import napari.layers

        self.viewer = napari_viewer
        self.worker: Any = None
        self.eval_worker: Any = None
        self.result_layer: Any = None
        self.metrics: dict | None = None
        self.plot_layers: list[Any] = []
        self._cancel = threading.Event()
        self._pbar: Any = None
        self._input_layer: Any = None
        self._run_info: dict[str, Any] = {}

        img = (napari.layers.Image,)
        self.layer = C.LayerCombo(napari_viewer, img, label="input")
        self.eval_raw = C.LayerCombo(napari_viewer, img, label="raw", optional=True)
        self.eval_denoised = C.LayerCombo(napari_viewer, img, label="denoised")
        self.eval_reference = C.LayerCombo(napari_viewer, img, label="reference", optional=True)
        self.eval_rois = C.LayerCombo(napari_viewer, (napari.layers.Shapes, napari.layers.Labels), label="ROIs",
                                      optional=True)
        self._build_ui()
        self._restore_settings()
        C.MODELS.changed.connect(self._on_model_changed)
        self.viewer.layers.events.removed.connect(self._on_layer_removed)
        cancel = self._cancel
        self.destroyed.connect(lambda *_: cancel.set())
        self._on_model_changed(C._unproxy(self.viewer))

    # -- UI ------------------------------------------------------------------------------
    def _build_ui(self) -> None:
        lay = C.scroll_layout(self)
        self.model_label = C.wrap_label("No model: train one in the training dock or load a checkpoint.", small=True)
        self.load_btn = QPushButton("Load model…")
        # Which model denoises: the pretrained generalists need no training, so they are the default
        # until a model is trained or loaded.
        self.model_choice = QComboBox()
        self.model_choice.addItems(list(MODEL_CHOICES))
        self.model_choice.setToolTip("the shipped pretrained models work at once; a model trained or fine-tuned "
                                     "on your recording (training dock) or loaded from a file is the current model")
        self.model_choice.currentIndexChanged.connect(lambda *_: self._show_model())
        lay.addWidget(self.model_choice)
        lay.addWidget(self.model_label)
        lay.addWidget(self.load_btn)

        form = QFormLayout()
        lay.addLayout(form)
        form.addRow("Input", self.layer.native)
        self.device = QComboBox()
        self.device.addItems(_device_choices())
        form.addRow("Device", self.device)
        self.output_dtype = QComboBox()
        self.output_dtype.addItems(["float32", "input"])
        form.addRow("Output type", self.output_dtype)

        adv = QCollapsible("Tiling and output")
        inner = QWidget()
        aform = QFormLayout(inner)
        self.tile_t = QSpinBox()
        self.tile_t.setRange(0, 4096)
        self.tile_t.setSpecialValueText("auto (fit memory)")  # 0 = automatic choice
        self.max_tile_xy = QSpinBox()
        self.max_tile_xy.setRange(16, 4096)
        self.norm_source = QComboBox()
        self.norm_source.addItems(["model", "input"])
        self.half_rate = QCheckBox("half-rate ensemble (temporal models; 2x slower, a little better)")
        self.tta = QComboBox()  # test-time augmentation: N flips / rotations averaged, N times slower
        self.tta.addItems(["1", "2", "4", "8"])
        self.stream = QCheckBox("stream to a file (stacks larger than memory)")
        self.out_path = QLineEdit()
        self.out_path.setPlaceholderText("output .tif (default: <input>_denoised.tif beside the input)")
        browse = QPushButton("…")
        browse.setMaximumWidth(30)
        browse.clicked.connect(lambda: self.out_path.setText(
            C.ask_save_path(self, "Denoised output", "TIFF (*.tif *.tiff);;Zarr (*.zarr)") or self.out_path.text()))
        row = QHBoxLayout()
        row.addWidget(self.out_path)
        row.addWidget(browse)
        aform.addRow("Frames per tile", self.tile_t)
        aform.addRow("Max tile y/x", self.max_tile_xy)
        aform.addRow("Normalisation", self.norm_source)
        aform.addRow("Flips averaged (N x slower)", self.tta)
        aform.addRow(self.half_rate)
        aform.addRow(self.stream)
        aform.addRow("Output file", row)
        adv.addWidget(inner)
        lay.addWidget(adv)

        buttons = QHBoxLayout()
        self.denoise_btn = QPushButton("Denoise")
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.setEnabled(False)
        buttons.addWidget(self.denoise_btn)
        buttons.addWidget(self.cancel_btn)
        lay.addLayout(buttons)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setTextVisible(False)
        self.status = C.wrap_label()
        lay.addWidget(self.progress)
        lay.addWidget(self.status)

        ev = QCollapsible("Evaluate")
        ev_inner = QWidget()
        eform = QFormLayout(ev_inner)
        eform.addRow("Denoised", self.eval_denoised.native)
        eform.addRow("Raw", self.eval_raw.native)
        eform.addRow("Reference", self.eval_reference.native)
        eform.addRow("ROIs", self.eval_rois.native)
        self.ssim = QCheckBox("SSIM (slower)")
        self.push_plots = QCheckBox("also add the plots as layers, beside the data")
        eform.addRow(self.ssim)
        eform.addRow(self.push_plots)
        self.eval_btn = QPushButton("Evaluate")
        eform.addRow(self.eval_btn)
        self.metrics_label = C.wrap_label(small=True)
        eform.addRow(self.metrics_label)
        ev.addWidget(ev_inner)
        ev.expand(animate=False)
        lay.addWidget(ev)

        self.plot = C.PlotCanvas(height=3.4)
        self.trace_plot = C.PlotCanvas(height=2.2)
        lay.addWidget(self.plot.native)
        lay.addWidget(self.trace_plot.native)
        self.trace_plot.native.setVisible(False)
        lay.addStretch(1)

        self.load_btn.clicked.connect(self._ask_load)
        self.denoise_btn.clicked.connect(lambda: self.denoise())
        self.cancel_btn.clicked.connect(self.cancel)
        self.eval_btn.clicked.connect(lambda: self.evaluate())

    def settings(self) -> dict[str, Any]:
        return {"device": self.device.currentText(), "output_dtype": self.output_dtype.currentText(),
                "tile_t": self.tile_t.value(), "max_tile_xy": self.max_tile_xy.value(),
                "normalization": self.norm_source.currentText(), "ssim": self.ssim.isChecked(),
                "push_plots": self.push_plots.isChecked()}

    def _restore_settings(self) -> None:
        d = InferConfig()
        # Plots live in the dock; as layers (opt-in) they are placed beside the data, never over it.
        s = {"tile_t": d.tile_t, "max_tile_xy": d.max_tile_xy, "ssim": True, "push_plots": False,
             **_settings.load_settings(SETTINGS_KEY)}
        _set_combo(self.device, s.get("device"))
        _set_combo(self.output_dtype, s.get("output_dtype"))
        _set_combo(self.norm_source, s.get("normalization"))
        self.tile_t.setValue(int(s["tile_t"] or 0))
        self.max_tile_xy.setValue(int(s["max_tile_xy"]))
        self.ssim.setChecked(bool(s["ssim"]))
        self.push_plots.setChecked(bool(s["push_plots"]))

    def infer_config(self) -> InferConfig:
        return InferConfig(device=self.device.currentText(), tile_t=self.tile_t.value() or None,
                           max_tile_xy=self.max_tile_xy.value(), output_dtype=self.output_dtype.currentText(),
                           normalization=self.norm_source.currentText(), tta=int(self.tta.currentText()),
                           half_rate=self.half_rate.isChecked())

    # -- model ---------------------------------------------------------------------------
    @property
    def denoiser(self) -> Any:
        """The model chosen in the dock: the viewer's current model, or a shipped generalist (loaded once)."""
        mode = MODEL_CHOICES[self.model_choice.currentText()]
        if mode is None:
            entry = C.MODELS.get(self.viewer)
            return entry[0] if entry else None
        if mode not in _GENERALISTS:
            from ..model.pretrained import load_model

            _GENERALISTS[mode] = load_model("generalist", mode=mode)
        return _GENERALISTS[mode]

    def _show_model(self) -> None:
        mode = MODEL_CHOICES[self.model_choice.currentText()]
        entry = C.MODELS.get(self.viewer)
        if mode is not None:
            self.model_label.setText(f"Pretrained generalist for {mode} mode: works on any recording at once; "
                                     "fine-tune it on yours in the training dock for more.")
        elif entry is not None:
            den, origin = entry
            self.model_label.setText(f"Model ({origin}): {den.describe()}")
        else:
            self.model_label.setText("No model: train one in the training dock or load a checkpoint.")

    def load_model(self, path: str | Path) -> Any:
        """Load a checkpoint (ours or a reference tool's) as the viewer's current model."""
        from ..model.checkpoint import load_any

        try:
            den = load_any(path)
        except UserError as exc:
            C.report_error(exc, "loading the model")
            return None
        C.MODELS.set(self.viewer, den, f"loaded from {Path(path).name}")
        return den

    def _ask_load(self) -> None:
        path = C.ask_open_path(self, "Load model", "Checkpoints (*.pt *.pth *.tar);;All files (*)")
        if path:
            self.load_model(path)

    def _on_model_changed(self, viewer: Any) -> None:
        if viewer is not C._unproxy(self.viewer):
            return
        if C.MODELS.get(viewer) is not None:  # a model trained or loaded just now is what the user wants
            self.model_choice.setCurrentText(CURRENT_MODEL)
        self._show_model()

    # -- denoise -------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return any(C.worker_busy(w) for w in (self.worker, self.eval_worker))

    def denoise(self, layer: Any = None) -> Any:
        """Denoise ``layer`` (default: the chosen input) in a worker; returns the worker or None."""
        from napari.qt.threading import create_worker

        from ..inference.denoising import iter_denoise
        from ..inference.files import iter_denoise_file

        if C.worker_busy(self.worker):
            return self.worker
        layer = layer if layer is not None else self.layer.value
        try:
            den = self.denoiser
            if den is None:
                raise InputError("no current model: train one in the training dock, load a checkpoint (Load "
                                 "model…) or choose a pretrained generalist")
            if layer is None:
                raise InputError("no image layer to denoise: open a time-lapse first")
            cfg = self.infer_config()
            stack = C.layer_stack(layer)
            if self.stream.isChecked():
                out_path = self._output_path(layer)
                src = _streamable_source(layer, stack)
                gen = (iter_denoise_file(src, out_path, den, cfg) if src is not None
                       else _iter_denoise_to(stack, out_path, den, cfg))
            else:
                out_path = None
                gen = iter_denoise(stack, den, cfg)
        except UserError as exc:
            C.report_error(exc, "denoising")
            return None
        _settings.save_settings(SETTINGS_KEY, self.settings())
        self._input_layer = layer
        self._run_info = {"model": den.describe(), "input_layer": layer.name, "out_path": out_path,
                          "infer_config": {k: getattr(cfg, k) for k in ("device", "tile_t", "max_tile_xy",
                                                                        "output_dtype", "normalization")}}
        self._cancel = threading.Event()
        self._set_running(True)
        self.progress.setValue(0)
        self.status.setText(f"denoising {layer.name}…")
        from napari.utils import progress

        self._pbar = progress(total=0, desc=f"UNet-Att denoising {layer.name}")
        self.worker = create_worker(C.drain, gen, self._cancel, _ignore_errors=True)
        C.close_when_aborted(self.worker, gen)
        self.worker.yielded.connect(self._on_event)
        self.worker.returned.connect(self._on_returned)
        self.worker.errored.connect(lambda exc: C.report_error(exc, "denoising"))
        self.worker.finished.connect(self._on_finished)
        C.start_worker(self.worker)
        return self.worker

    def _output_path(self, layer: Any) -> Path:
        text = self.out_path.text().strip()
        src = _source_path(layer)
        if text:
            out = Path(text)
            if src is not None:
                from ..inference.files import check_not_input

                check_not_input(src, out)
            return out
        if src is None:
            raise InputError(f"layer {layer.name!r} has no file behind it: choose an output file to stream to")
        out = src.with_name(f"{src.stem}_denoised.tif")
        if out.exists():
            raise InputError(f"{out} exists already; choose another output file (results are never overwritten)")
        return out

    def cancel(self) -> None:
        """Stop denoising after the current batch of tiles; nothing is added or written."""
        self._cancel.set()
        self.status.setText("cancelling…")

    def shutdown(self, timeout_s: float = 30.0) -> bool:
        """Cancel any run and wait for the workers (dock or viewer closing)."""
        self._cancel.set()
        ok = all(C.stop_worker(w, timeout_s) for w in (self.worker, self.eval_worker) if C.worker_busy(w))
        self._close_pbar()
        return ok

    def _set_running(self, running: bool) -> None:
        self.denoise_btn.setEnabled(not running)
        self.cancel_btn.setEnabled(running)
        self.eval_btn.setEnabled(not running)

    def _close_pbar(self) -> None:
        if self._pbar is not None:
            self._pbar.close()
            self._pbar = None

    def _on_event(self, ev: InferEvent) -> None:
        self.progress.setValue(int(1000 * ev.done / max(ev.total, 1)))
        self.status.setText(f"tiles {ev.done}/{ev.total}, {ev.frames_per_s:.1f} frames/s, "
                            f"ETA {C.format_seconds(ev.eta_s)}")
        pbar = self._pbar  # updating it may process events (and finish the run) re-entrantly
        if pbar is not None:
            if pbar.total != ev.total:
                pbar.total = ev.total
            pbar.update(max(0, ev.done - pbar.n))

    def _on_returned(self, result: Any) -> None:
        layer = self._input_layer
        if result is None or layer is None:
            self.status.setText("cancelled: nothing was added")
            return
        if isinstance(result, (str, Path)):
            from ..stackio.io import read_stack

            result = read_stack(result, lazy=True)  # the streamed file, opened lazily
        meta = {**dict(layer.metadata), "unet_att": self._run_info}
        meta.pop("metrics", None)  # the input's metrics do not describe the output
        kwargs: dict[str, Any] = {"name": f"{layer.name}_denoised", "metadata": meta, "colormap": "gray"}
        if result.ndim == layer.ndim:
            kwargs.update(scale=layer.scale, translate=layer.translate)
        if tuple(result.shape) == tuple(layer.data.shape):
            kwargs["contrast_limits"] = list(layer.contrast_limits)
        self.result_layer = self.viewer.add_image(result, **kwargs)
        self.eval_denoised.value = self.result_layer
        if self.eval_raw.optional and result.shape == layer.data.shape:
            self.eval_raw.value = layer
        self.status.setText(f"added {self.result_layer.name!r}")

    def _on_finished(self) -> None:
        self._close_pbar()
        self._set_running(False)
        self._input_layer = None

    def _on_layer_removed(self, event: Any) -> None:
        if C.worker_busy(self.worker) and event.value is self._input_layer:
            self.cancel()
            C.warn_unless_closing(self.viewer, f"layer {event.value.name!r} was removed: denoising cancelled")

    # -- evaluate ------------------------------------------------------------------------
    def evaluate(self) -> Any:
        """Measure the chosen denoised layer (against the reference if any) in a worker."""
        from napari.qt.threading import create_worker

        if C.worker_busy(self.eval_worker):
            return self.eval_worker
        den_layer, raw_layer = self.eval_denoised.value, self.eval_raw.value
        ref_layer, roi_layer = self.eval_reference.value, self.eval_rois.value
        try:
            if den_layer is None:
                raise InputError("choose the denoised layer to evaluate")
            masks = C.roi_masks(roi_layer, den_layer.data.shape[-2:]) if roi_layer is not None else None
            args = (den_layer.data, None if ref_layer is None else ref_layer.data,
                    None if raw_layer is None else raw_layer.data, masks, self.ssim.isChecked())
        except UserError as exc:
            C.report_error(exc, "evaluation")
            return None
        self._eval_layers = (den_layer, raw_layer, ref_layer)
        self._eval_masks = masks
        self._set_running(True)
        self.status.setText("evaluating…")
        self.eval_worker = create_worker(_evaluate_job, *args, _ignore_errors=True)
        self.eval_worker.returned.connect(self._on_evaluated)
        self.eval_worker.errored.connect(lambda exc: C.report_error(exc, "evaluation"))
        self.eval_worker.finished.connect(lambda: self._set_running(False))
        C.start_worker(self.eval_worker)
        return self.eval_worker

    def _on_evaluated(self, out: tuple[dict, Any]) -> None:
        result, traces = out
        den_layer, raw_layer, ref_layer = self._eval_layers
        self.metrics = result
        den_layer.metadata["metrics"] = result
        self.metrics_label.setText(_summary_text(result, ref_layer is not None))
        C.plot_metrics(self.plot.figure, result, den_layer.name, None if raw_layer is None else raw_layer.name)
        self.plot.request_draw()
        self.plot.flush()
        has_traces = traces is not None
        self.trace_plot.native.setVisible(has_traces)
        if has_traces:
            C.plot_traces(self.trace_plot.figure, traces, MAX_TRACES)
            self.trace_plot.request_draw()
        if self.push_plots.isChecked():
            below = self._push_plot(self.plot, f"{den_layer.name}_metrics_plot", den_layer, 0.0)
            if has_traces:
                self._push_plot(self.trace_plot, f"{den_layer.name}_traces_plot", den_layer, below)
        self.status.setText(f"evaluated {den_layer.name!r}; numbers in its metadata['metrics']")

    def _push_plot(self, plot: C.PlotCanvas, name: str, beside: Any, y_offset: float) -> float:
        """Add (or update) a plot as an RGB layer to the right of ``beside``; returns its bottom edge.

        The plot is scaled to the data's height and placed right of it (``y_offset`` below the
        data's top), so Home shows data and plot side by side instead of the plot over the data.
        """
        rgb = plot.to_rgb()
        scale, translate = C.plot_placement(beside.extent.world, np.asarray(beside.scale)[-2:], rgb.shape[:2],
                                            y_offset)
        if name in self.viewer.layers:
            layer = self.viewer.layers[name]
            layer.data = rgb
            layer.scale, layer.translate = scale, translate
        else:
            layer = self.viewer.add_image(rgb, name=name, rgb=True, scale=scale, translate=translate,
                                          metadata={"unet_att": "metrics plot"})
        if layer not in self.plot_layers:
            self.plot_layers.append(layer)
        return y_offset + scale[0] * rgb.shape[0]

    # -- napari hooks --------------------------------------------------------------------
    def reset_choices(self, *_: Any) -> None:
        for combo in (self.layer, self.eval_raw, self.eval_denoised, self.eval_reference, self.eval_rois):
            combo._refresh()

    def closeEvent(self, event: Any) -> None:  # noqa: N802 - Qt naming
        _settings.save_settings(SETTINGS_KEY, self.settings())
        self.shutdown()
        super().closeEvent(event)


def _source_path(layer: Any) -> Path | None:
    """The TIFF file behind a layer (napari's layer source or our reader's metadata), if any."""
    path = getattr(getattr(layer, "source", None), "path", None) or layer.metadata.get("source_path")
    if path and Path(path).suffix.lower() in (".tif", ".tiff") and Path(path).is_file():
        return Path(path)
    return None


def _streamable_source(layer: Any, stack: Any) -> Path | None:
    """The layer's TIFF when reading it again gives the layer's own stack, else None.

    A file whose header mislabels its axes (frames called channels or slices) is shown by our
    reader as it is stored, and the layer works as a time-lapse; the file itself would be
    refused when read again, so such a layer streams from its array instead.
    """
    from ..stackio.io import read_stack

    src = _source_path(layer)
    if src is None:
        return None
    try:
        same = tuple(read_stack(src, lazy=True).shape) == tuple(stack.shape)
    except UserError:
        return None
    return src if same else None


def _iter_denoise_to(stack: Any, out_path: Path, den: Any, cfg: InferConfig) -> Any:
    """Stream an in-memory (or lazy) layer through the model into a file; returns the path.

    (:func:`~napari_unet_att.inference.denoising.iter_denoise_file` needs a TIFF path; a layer made in the
    session has none, so its array is the source here.)
    """
    from ..inference.denoising import iter_denoise
    from ..stackio.io import output_stack

    dtype = np.float32 if cfg.output_dtype == "float32" else np.dtype(stack.dtype)
    with output_stack(out_path, tuple(stack.shape), dtype, metadata={"denoiser": den.describe()}) as out:
        yield from iter_denoise(stack, den, cfg, out=out)
    return Path(out_path)


def _evaluate_job(denoised: Any, reference: Any, raw: Any, masks: Any, ssim: bool) -> tuple[dict, Any]:
    """Worker body: the engine's metrics, plus ROI traces when ROIs are given."""
    from ..evaluation.metrics import evaluate, extract_traces

    result = evaluate(denoised, reference=reference, raw=raw, masks=masks, ssim=ssim)
    traces = None
    if masks is not None:
        traces = {"denoised": extract_traces(denoised, masks)}
        if raw is not None:
            traces["raw"] = extract_traces(raw, masks)
    return result, traces


#: How each scalar metric is shown: name, unit and which way is better (see metrics.py for definitions).
METRIC_LABELS = {
    "psnr": "PSNR (dB, higher is better)",
    "psnr_affine": "PSNR after an affine fit (dB)",
    "ssim": "SSIM (0-1)",
    "snr3d": "3D SNR (dB)",
    "nrmse": "NRMSE (fraction of the reference's RMS, lower is better)",
    "corr_with_mean": "r with the temporal mean (-1..1)",
    "adjacent_frame_corr": "r with the next frame (-1..1)",
    "trace_correlation": "ROI trace r vs reference (-1..1)",
}


def _summary_text(result: dict, with_reference: bool) -> str:
    """Scalar metrics as a few lines (raw -> denoised), each with its unit."""
    den, raw = result.get("denoised", {}), result.get("raw", {})
    names = (["psnr", "psnr_affine", "ssim", "snr3d", "nrmse"] if with_reference else []) + [
        "corr_with_mean", "adjacent_frame_corr", "trace_correlation"]
    lines = []
    for k in names:
        d = den.get(k)
        if d is None or isinstance(d, (list, dict)):
            continue
        r = raw.get(k)
        label = METRIC_LABELS.get(k, k)
        lines.append(f"{label}: {r:.4g} → {d:.4g}" if isinstance(r, (int, float)) else f"{label}: {d:.4g}")
    return "\n".join(lines)
