"""Denoise-and-evaluate dock: apply the current model to a layer, then measure and plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from qtpy.QtWidgets import QComboBox, QFormLayout, QWidget
from superqt import QCollapsible

from ..config import TTA_CHOICES, InferConfig, InferEvent
from ..errors import InputError, UserError
from ..modes import layout_factor, split_views
from .dialogs import report_error
from .dock import BaseDock, device_choices
from .form import BUTTON, CHECK, CHOICE, INT, LAYER, NOTE, TEXT, Field
from .layers import AXES_FIELD, LayerCombo, layer_stack, roi_masks, source_path, streamable_source
from .layout import scroll_layout, wrap_label
from .model_panel import MODELS, ModelPanel, describe, unproxy
from .plots import PlotCanvas, plot_metrics, plot_placement, plot_traces
from .workers import format_seconds, run_function, worker_busy

CURRENT_MODEL = "current model (trained or loaded)"
# Dock choice -> generalist mode (None: the viewer's current model). The first is the default.
MODEL_CHOICES: dict[str, str | None] = {
    "generalist (pretrained, no training)": "temporal",
    "generalist, mirrored-scan (T, 2N, N) (pretrained, no training)": "mirrored",
    CURRENT_MODEL: None,
}
_GENERALISTS: dict[str, Any] = {}  # loaded once per process, shared by every dock
MAX_TRACES = 6  # ROI traces drawn (more make the plot unreadable)
NO_MODEL = "No model: train one in the training dock or load a checkpoint."


def _fields() -> tuple[tuple[Field, ...], tuple[Field, ...], tuple[Field, ...]]:
    """The denoising form: main rows, "Tiling and output", "Evaluate"."""
    d = InferConfig()
    main = (
        Field("layer", LAYER, "Input"),
        AXES_FIELD,
        Field("device", CHOICE, "Device", choices=device_choices),
        Field("output_dtype", CHOICE, "Output type", choices=("float32", "input", "auto")),
    )
    tiling = (
        Field("tile_t", INT, "Frames per tile", bounds=(0, 4096), special="auto (fit memory)",  # 0: automatic
              default=d.tile_t),
        Field("max_tile_xy", INT, "Max tile y/x", bounds=(16, 4096), default=d.max_tile_xy),
        Field("norm_source", CHOICE, "Normalisation", choices=("model", "input"), setting="normalization"),
        # test-time augmentation: N flips / rotations averaged, N times slower
        Field("tta", CHOICE, "Flips averaged (N x slower)", choices=tuple(str(n) for n in TTA_CHOICES), setting=None),
        Field("half_rate", CHECK, text="half-rate ensemble (temporal models; 2x slower, a little better)",
              setting=None),
        Field("smoothing", CHECK, text="smooth over time (amount chosen on the data)",
              default=d.smoothing == "auto", setting=None,
              tip="less noise, at some cost to the transients' height (fast indicators, small structures): "
                  "off where dF/F amplitudes matter more than the noise"),
        Field("registration", CHECK, text="register fast-moving frames (whole pixels, moved back after)",
              default=d.registration == "auto", setting=None),
        Field("strips", CHECK, text="strips of lines where frames move while scanned (auto)",
              default=d.strips == "auto", setting=None,
              tip="where the top and bottom lines of the frames move apart (fast motion during the scan, shearing "
                  "tissue), strips of 48 lines are registered and denoised apart, then blended (1.5-2x slower)"),
        Field("line_phase", CHECK, text="put a bidirectional scan's backward lines in place (auto)",
              default=d.line_phase == "auto", setting=None,
              tip="where the backward (odd) lines sit beside the forward ones (the scan phase of a resonant "
                  "scanner), measurably, they are moved back before denoising; the output keeps them there"),
        Field("mirrored_output", CHOICE, "Bidirectional output", choices=("interleaved", "merged"),
              tip="a mirrored-scan model on a raw (T, 2N, N) scan: 'interleaved' keeps both directions' lines; "
                  "'merged' gives the physical (T, N, N) frames, each line's two scans denoised together (faster)"),
        Field("keep_average", CHECK, text="keep still detail (each pixel's time average, beyond the noise)",
              default=d.keep_average == "auto", setting=None),
        Field("give_back", CHECK, text="give back fast changes the denoising took (auto)",
              default=d.give_back == "auto", setting=None,
              tip="part of what the denoising took from each frame, at a cell's scale, is added back, as much as "
                  "Stein's unbiased risk estimate on a block of the recording says lowers the error (fast "
                  "transients under motion); two more network passes of a 40-frame block"),
        Field("stream", CHECK, text="stream to a file (stacks larger than memory)", setting=None),
        Field("out_path", TEXT, "Output file", text="output .tif (default: <input>_denoised.tif beside the input)",
              setting=None, browse=("save", "Denoised output", "TIFF (*.tif *.tiff);;Zarr (*.zarr)")),
    )
    # Plots live in the dock; as layers (opt-in) they are placed beside the data, never over it.
    evaluate = (
        Field("eval_denoised", LAYER, "Denoised"),
        Field("eval_raw", LAYER, "Raw"),
        Field("eval_reference", LAYER, "Reference"),
        Field("eval_rois", LAYER, "ROIs"),
        Field("ssim", CHECK, text="SSIM (slower)", default=True),
        Field("push_plots", CHECK, text="also add the plots as layers, beside the data", default=False),
        Field("eval_btn", BUTTON, text="Evaluate"),
        Field("metrics_label", NOTE, small=True),
    )
    return main, tiling, evaluate


class DenoiseWidget(BaseDock):
    """Dock widget: denoise a layer with the viewer's current model, evaluate, plot.

    Parameters
    ----------
    napari_viewer : napari.Viewer
    """

    SETTINGS_KEY = "denoise"
    REMOVED_NOTE = "denoising cancelled"

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__(napari_viewer)
        import napari.layers

        self.eval_worker: Any = None
        self.result_layer: Any = None
        self.metrics: dict | None = None
        self.plot_layers: list[Any] = []
        self._run_info: dict[str, Any] = {}

        img = (napari.layers.Image,)
        self.layer = LayerCombo(napari_viewer, img, label="input")
        self.eval_raw = LayerCombo(napari_viewer, img, label="raw", optional=True)
        self.eval_denoised = LayerCombo(napari_viewer, img, label="denoised")
        self.eval_reference = LayerCombo(napari_viewer, img, label="reference", optional=True)
        self.eval_rois = LayerCombo(napari_viewer, (napari.layers.Shapes, napari.layers.Labels), label="ROIs",
                                    optional=True)
        self._build_ui()
        self._follow_viewer()
        self._on_models_changed(unproxy(self.viewer))

    # -- UI ------------------------------------------------------------------------------
    def _build_ui(self) -> None:
        lay = scroll_layout(self)
        main, tiling, evaluate = _fields()
        # Which model denoises: the pretrained generalists need no training, so they are the default
        # until a model is trained or loaded.
        self.model_choice = QComboBox()
        self.model_choice.addItems(list(MODEL_CHOICES))
        self.model_choice.setToolTip("the shipped pretrained models work at once; a model trained or fine-tuned "
                                     "on your recording (training dock) or loaded from a file is the current model")
        self.model_choice.currentIndexChanged.connect(lambda *_: self._show_model())
        self.model_label = wrap_label(NO_MODEL, small=True)
        lay.addWidget(self.model_choice)
        lay.addWidget(self.model_label)

        form = QFormLayout()
        lay.addLayout(form)
        self.form.add_rows(form, main)
        lay.addWidget(self._section("Tiling and output", tiling))
        self._add_run_controls(lay, go=("denoise_btn", "Denoise"), stop=("cancel_btn", "Cancel"))
        self.models = ModelPanel(self, self.status, lambda: self.denoiser, files=False)
        self.load_btn = self.models.load_btn
        lay.insertLayout(2, self.models.row)  # under the model's description
        ev = self._section("Evaluate", evaluate)
        ev.expand(animate=False)
        lay.addWidget(ev)

        self.plot = PlotCanvas(height=3.4)
        self.trace_plot = PlotCanvas(height=2.2)
        lay.addWidget(self.plot.native)
        lay.addWidget(self.trace_plot.native)
        self.trace_plot.native.setVisible(False)
        lay.addStretch(1)

        self.denoise_btn.clicked.connect(lambda: self.denoise())
        self.cancel_btn.clicked.connect(self.cancel)
        self.eval_btn.clicked.connect(lambda: self.evaluate())

    def _section(self, title: str, fields: tuple[Field, ...]) -> QCollapsible:
        box = QCollapsible(title)
        inner = QWidget()
        self.form.add_rows(QFormLayout(inner), fields)
        box.addWidget(inner)
        return box

    def infer_config(self) -> InferConfig:
        return InferConfig(device=self.device.currentText(), tile_t=self.tile_t.value() or None,
                           max_tile_xy=self.max_tile_xy.value(), output_dtype=self.output_dtype.currentText(),
                           normalization=self.norm_source.currentText(), tta=int(self.tta.currentText()),
                           half_rate=self.half_rate.isChecked(),
                           smoothing="auto" if self.smoothing.isChecked() else "off",
                           registration="auto" if self.registration.isChecked() else "off",
                           keep_average="auto" if self.keep_average.isChecked() else "off",
                           strips="auto" if self.strips.isChecked() else "off",
                           line_phase="auto" if self.line_phase.isChecked() else "off",
                           give_back="auto" if self.give_back.isChecked() else "off",
                           mirrored_output=self.mirrored_output.currentText())

    # -- model ---------------------------------------------------------------------------
    @property
    def denoiser(self) -> Any:
        """The model chosen in the dock: the viewer's current model, or a shipped generalist (loaded once)."""
        mode = MODEL_CHOICES[self.model_choice.currentText()]
        if mode is None:
            entry = MODELS.get(self.viewer)
            return entry[0] if entry else None
        if mode not in _GENERALISTS:
            from ..model.pretrained import load_model

            _GENERALISTS[mode] = load_model("generalist", mode=mode)
        return _GENERALISTS[mode]

    def _show_model(self) -> None:
        mode = MODEL_CHOICES[self.model_choice.currentText()]
        entry = MODELS.get(self.viewer)
        if mode is not None:
            self.model_label.setText(f"Pretrained generalist for {mode} mode: works on any recording at once; "
                                     "fine-tune it on yours in the training dock for more.")
        else:
            self.model_label.setText(NO_MODEL if entry is None else describe(entry))

    def load_model(self, path: str | Path) -> Any:
        """Load a checkpoint (ours or a reference tool's) as the viewer's current model."""
        return self.models.load(self.viewer, path)

    def _on_model_changed(self, entry: tuple[Any, str] | None) -> None:
        if entry is not None:  # a model trained or loaded just now is what the user wants
            self.model_choice.setCurrentText(CURRENT_MODEL)
        self._show_model()

    # -- denoise -------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return any(worker_busy(w) for w in self._workers())

    def _workers(self) -> tuple[Any, ...]:
        return (self.worker, self.eval_worker)

    def denoise(self, layer: Any = None) -> Any:
        """Denoise ``layer`` (default: the chosen input) in a worker; returns the worker or None."""
        from ..inference.denoising import iter_denoise
        from ..inference.files import iter_denoise_file, iter_denoise_to_file

        if worker_busy(self.worker):
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
            stack = layer_stack(layer, self.axes.text())
            out_path = self._output_path(layer, stack, cfg, den) if self.stream.isChecked() else None
            if out_path is None:
                gen = iter_denoise(stack, den, cfg)
            elif (src := streamable_source(layer, stack)) is not None:
                gen = iter_denoise_file(src, out_path, den, cfg)
            else:
                gen = iter_denoise_to_file(stack, out_path, den, cfg)
        except UserError as exc:
            report_error(exc, "denoising")
            return None
        self._run_info = {"model": den.describe(), "input_layer": layer.name, "out_path": out_path,
                          "infer_config": {k: getattr(cfg, k) for k in ("device", "tile_t", "max_tile_xy",
                                                                        "output_dtype", "normalization")}}
        self.progress.setValue(0)
        self.status.setText(f"denoising {layer.name}…")
        return self._launch(gen, layer, 0, f"UNet-Att denoising {layer.name}")

    def _output_path(self, layer: Any, stack: Any, cfg: InferConfig, den: Any) -> Path:
        """The file to stream to, checked as the CLI checks its outputs, before the worker starts.

        Not the input, a writable folder, room on the disk (``stackio.outputs.check_denoise_outputs``). A file
        chosen in the field may be replaced (its file dialog asked); the default one never is.
        """
        from ..stackio.outputs import check_denoise_outputs, output_nbytes

        text = self.out_path.text().strip()
        src = source_path(layer)
        if text:
            out = Path(text)
        elif src is None:
            raise InputError(f"layer {layer.name!r} has no file behind it: choose an output file to stream to")
        else:
            out = src.with_name(f"{src.stem}_denoised.tif")
            if out.exists():
                raise InputError(f"{out} exists already; choose another output file (results are never overwritten)")
        shape = split_views(stack, den.mode, den.flip_backward, cfg.mirrored_output)[2]  # (its output's size)
        nbytes = output_nbytes(stack, cfg.output_dtype != "input", shape)  # ('auto' may choose float32)
        check_denoise_outputs([src] if src is not None else [], [out], overwrite=True, nbytes=[nbytes])
        return out

    def cancel(self) -> None:
        """Stop denoising after the current batch of tiles; nothing is added or written."""
        self._cancel.set()
        self.status.setText("cancelling…")

    def _end_run(self) -> None:
        self.cancel()

    def _set_running(self, running: bool) -> None:
        self.denoise_btn.setEnabled(not running)
        self.cancel_btn.setEnabled(running)
        self.eval_btn.setEnabled(not running)

    def _on_event(self, ev: InferEvent) -> None:
        if ev.message:  # the registration, output smoothing and time averages chosen, an out-of-memory retry
            from napari.utils.notifications import show_info

            from ..inference.files import post_step

            show_info(ev.message)
            if step := post_step(ev.message):  # recorded in the result layer's metadata
                self._run_info[step[0]] = step[1]
        self.progress.setValue(int(1000 * ev.done / max(ev.total, 1)))
        # the phases count different things (frames measured, tiles denoised, passes over the frames): a share
        self.status.setText(", ".join([f"{100 * ev.done / max(ev.total, 1):.0f}%",
                                       *([f"{ev.frames_per_s:.1f} frames/s"] if ev.frames_per_s > 0 else []),
                                       *([f"ETA {format_seconds(ev.eta_s)}"] if ev.eta_s is not None else [])]))
        self._pbar.advance_to(ev.done, total=ev.total)

    def _on_returned(self, result: Any) -> None:
        layer = self._run_layer
        if result is None or layer is None:
            self.status.setText("cancelled: nothing was added")
            return
        if isinstance(result, (str, Path)):
            from ..stackio import read_stack

            result = read_stack(result, lazy=True)  # the streamed file, opened lazily
        meta = {**dict(layer.metadata), "unet_att": self._run_info}
        meta.pop("metrics", None)  # the input's metrics do not describe the output
        kwargs: dict[str, Any] = {"name": f"{layer.name}_denoised", "metadata": meta, "colormap": "gray"}
        if (rows := _rows_per_line(layer.data.shape, result.shape)) is not None:  # on the layer (its axes kept)
            scale, translate = np.array(layer.scale, float), np.array(layer.translate, float)
            translate[-2] += (rows - 1) * scale[-2] / 2  # a merged scan's line: the centre of its two rows
            scale[-2] *= rows
            kwargs.update(scale=scale, translate=translate, contrast_limits=list(layer.contrast_limits))
        self.result_layer = self.viewer.add_image(result, **kwargs)
        self.eval_denoised.value = self.result_layer
        if self.eval_raw.optional and rows == 1:
            self.eval_raw.value = layer
        self.status.setText(f"added {self.result_layer.name!r}")

    def _on_error(self, exc: BaseException) -> None:
        report_error(exc, "denoising")

    # -- evaluate ------------------------------------------------------------------------
    def evaluate(self) -> Any:
        """Measure the chosen denoised layer (against the reference if any) in a worker."""
        if worker_busy(self.eval_worker):
            return self.eval_worker
        den_layer, raw_layer = self.eval_denoised.value, self.eval_raw.value
        ref_layer, roi_layer = self.eval_reference.value, self.eval_rois.value
        try:
            if den_layer is None:
                raise InputError("choose the denoised layer to evaluate")
            masks = roi_masks(roi_layer, den_layer.data.shape[-2:]) if roi_layer is not None else None
            args = (den_layer.data, None if ref_layer is None else ref_layer.data,
                    None if raw_layer is None else raw_layer.data, masks, self.ssim.isChecked())
        except UserError as exc:
            report_error(exc, "evaluation")
            return None
        self._eval_layers = (den_layer, raw_layer, ref_layer)
        self._set_running(True)
        self.status.setText("evaluating…")
        self.eval_worker = run_function(_evaluate_job, *args, returned=self._on_evaluated,
                                        errored=lambda exc: report_error(exc, "evaluation"),
                                        finished=lambda: self._set_running(False))
        return self.eval_worker

    def _on_evaluated(self, out: tuple[dict, Any]) -> None:
        result, traces = out
        den_layer, raw_layer, ref_layer = self._eval_layers
        self.metrics = result
        den_layer.metadata["metrics"] = result
        self.metrics_label.setText(_summary_text(result, ref_layer is not None))
        plot_metrics(self.plot.figure, result, den_layer.name, None if raw_layer is None else raw_layer.name)
        self.plot.request_draw()
        self.plot.flush()
        has_traces = traces is not None
        self.trace_plot.native.setVisible(has_traces)
        if has_traces:
            plot_traces(self.trace_plot.figure, traces, MAX_TRACES)
            self.trace_plot.request_draw()
        if self.push_plots.isChecked():
            below = self._push_plot(self.plot, f"{den_layer.name}_metrics_plot", den_layer, 0.0)
            if has_traces:
                self._push_plot(self.trace_plot, f"{den_layer.name}_traces_plot", den_layer, below)
        self.status.setText(f"evaluated {den_layer.name!r}; numbers in its metadata['metrics']")

    def _push_plot(self, plot: PlotCanvas, name: str, beside: Any, y_offset: float) -> float:
        """Add (or update) a plot as an RGB layer to the right of ``beside``; returns its bottom edge.

        The plot is scaled to the data's height and placed right of it (``y_offset`` below the
        data's top), so Home shows data and plot side by side instead of the plot over the data.
        """
        rgb = plot.to_rgb()
        scale, translate = plot_placement(beside.extent.world, np.asarray(beside.scale)[-2:], rgb.shape[:2],
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


def _rows_per_line(layer_shape: tuple[int, ...], result_shape: tuple[int, ...]) -> int | None:
    """The layer's rows per row of the result: 1, 2 (a scan's merged output), None (reordered by the Axes field)."""
    try:
        return layout_factor(layer_shape, result_shape)
    except InputError:
        return None


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
