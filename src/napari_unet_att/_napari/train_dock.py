"""Training dock: pick a layer and a mode, train in a worker, watch loss and a live preview."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from qtpy.QtWidgets import QFormLayout, QWidget
from superqt import QCollapsible

from ..config import (
    DEFAULT_CHECKPOINT_EVERY,
    MODE_HELP,
    MODES,
    PRESETS,
    WIDGET_PREVIEW_EVERY,
    ResolvedTrainConfig,
    TrainConfig,
    TrainEvent,
)
from ..errors import UserError
from .dialogs import report_error
from .dock import BaseDock, device_choices
from .form import BUTTON, CHECK, CHOICE, FLOAT, INT, LAYER, NOTE, TEXT, Field
from .layers import AXES_FIELD, LayerCombo, layer_stack, put_image
from .layout import scroll_layout, show_verdict, wrap_label
from .model_panel import MODELS, ModelPanel, describe
from .plots import LossPlot
from .workers import format_seconds, run_function, worker_busy

BUDGET_UNITS = ("steps", "seconds", "minutes")
PREVIEW_FRAMES = 16
#: Steps from random weights before the preview layer is shown (earlier it is a uniform grey).
PREVIEW_MIN_STEPS = 50
NO_ESTIMATE = "how many steps the budget buys here: press Estimate time (a few seconds)"
_STEP_SECONDS: dict[tuple, float] = {}  # measured seconds per step, by settings (see TrainWidget.estimate)

# The dock's literal defaults, gathered here (TrainConfig holds the engine's own).
#: A budget in minutes: what a step costs differs 10-fold between machines (Estimate time says).
DEFAULT_BUDGET = (5, "minutes")


def _fields() -> tuple[tuple[Field, ...], tuple[Field, ...]]:
    """The training form: main rows, then the rows under "Advanced"."""
    d = TrainConfig()
    main = (
        Field("layer", LAYER, "Layer"),
        Field("more_layers", LAYER, "Also train on", tip="more recordings for the same model (ctrl/shift-click "
              "to pick several); the layer above is the one previewed"),
        AXES_FIELD,
        Field("mode", CHOICE, "Mode", choices=MODES),
        Field("mode_help", NOTE, small=True),
        Field("check_label", NOTE),
        Field("preset", CHOICE, "Preset", choices=list(PRESETS)),
        Field("preset_help", NOTE, small=True),
        # Fine-tuning the shipped generalist beats training from nothing at every budget a user gives.
        Field("init_pretrained", CHECK, text="start from the pretrained model (generalist)", default=True,
              tip="fine-tune the shipped generalist for this mode and preset (temporal and mirrored-scan, preset "
              "'fast'); off: train from random weights"),
        Field("budget", INT, "Budget", bounds=(1, 10_000_000), default=DEFAULT_BUDGET[0]),
        Field("budget_unit", CHOICE, choices=BUDGET_UNITS, default=DEFAULT_BUDGET[1], joined=True),
        # What the budget buys on this machine: steps are 10x faster on some machines than others.
        Field("estimate_btn", BUTTON, text="Estimate time",
              tip="time a few training steps of this preset on this machine (a few seconds)"),
        Field("estimate_label", NOTE, text=NO_ESTIMATE, small=True, joined=True, stretch=1),
        Field("patch_t", INT, "Patch", prefix="t", bounds=(0, 4096), special="preset"),
        Field("patch_xy", INT, prefix="y/x", bounds=(0, 1024), special="preset", joined=True),
        Field("device", CHOICE, "Device", choices=device_choices),
        Field("seed", INT, "Seed", bounds=(0, 2**31 - 1)),
    )
    advanced = (
        Field("lr", FLOAT, "Learning rate", bounds=(0.0, 1.0), decimals=6, step=1e-4, special="preset"),
        Field("batch", INT, "Batch size", bounds=(0, 256), special="preset"),
        Field("swap", CHECK, text="swap input / target (p = 0.5)", default=d.swap),
        Field("augment", CHECK, text="random flips / rotations", default=d.augment),
        Field("flip_backward", CHECK, text="backward lines stored x-mirrored (mirrored mode)", default=False),
        Field("registration", CHECK, text="register moving frames", default=d.registration == "auto", setting=None),
        Field("preview_every", INT, "Preview every (steps)", bounds=(0, 100_000), special="off",
              default=WIDGET_PREVIEW_EVERY),
        Field("val_every", INT, "Validate every (steps)", bounds=(1, 100_000), default=d.val_every),
        Field("checkpoint_dir", TEXT, "Checkpoint folder", text="(none: model kept in memory)", default="",
              browse=("dir", "Checkpoint folder", "")),
        Field("resume", TEXT, "Resume", text="checkpoint-last.pt of an earlier run", setting=None,
              browse=("open", "Resume from", "*.pt")),
        Field("init_from_loaded", CHECK, text="start from the loaded model's weights", setting=None),
    )
    return main, advanced


class TrainWidget(BaseDock):
    """Dock widget that trains a UNet-Att denoiser on an image layer.

    Parameters
    ----------
    napari_viewer : napari.Viewer
    """

    SETTINGS_KEY = "train"
    REMOVED_NOTE = "training stopped (the model so far is kept)"

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__(napari_viewer)
        import napari.layers

        self.estimate_worker: Any = None
        self.trainer: Any = None
        self.denoiser: Any = None
        self.events: list[TrainEvent] = []  # what the current run reported (tests and plots read it)
        self._run_key: tuple = ()  # the settings timed by the current run (see _STEP_SECONDS)
        self._pbar_unit_steps = True
        self._loaded_path: str | None = None
        self._preview_frames = (0, PREVIEW_FRAMES)

        self.layer = LayerCombo(napari_viewer, (napari.layers.Image,), label="layer")
        # More recordings of the same kind train one model (as the CLI does with several files).
        self.more_layers = LayerCombo(napari_viewer, (napari.layers.Image,), label="also train on", multiple=True,
                                      exclude=self._not_more_data)
        self._build_ui()
        self._follow_viewer()
        self.layer.changed.connect(self.update_check)
        self.layer.changed.connect(self.more_layers.refresh)  # the chosen layer is not offered twice
        self.update_check()

    # -- UI ------------------------------------------------------------------------------
    def _build_ui(self) -> None:
        lay = scroll_layout(self)
        main, advanced = _fields()
        form = QFormLayout()
        lay.addLayout(form)
        self.form.add_rows(form, main)
        box = QCollapsible("Advanced")
        inner = QWidget()
        self.form.add_rows(QFormLayout(inner), advanced)
        box.addWidget(inner)
        lay.addWidget(box)

        self._add_run_controls(lay, go=("start_btn", "Start"), stop=("stop_btn", "Stop"))
        self.plot = LossPlot()
        self._ax, self._train_line, self._val_line = self.plot.ax, self.plot.train_line, self.plot.val_line
        lay.addWidget(self.plot.native)
        self.models = ModelPanel(self, self.status, lambda: self.denoiser, sample_layer=lambda: self.layer.value)
        panel = self.models
        self.load_btn, self.save_btn, self.export_btn = panel.load_btn, panel.save_btn, panel.export_btn
        lay.addLayout(self.models.row)
        self.model_label = wrap_label("No model yet: train one or load a checkpoint (ours or DeepCAD-RT / "
                                      "UNet-Att / DeepBID weights).", small=True)
        lay.addWidget(self.model_label)
        lay.addStretch(1)

        for w in (self.mode, self.preset):
            w.currentTextChanged.connect(self.update_check)
        for w in (self.preset, self.budget_unit, self.device):
            w.currentTextChanged.connect(self._show_estimate)
        for w in (self.budget, self.patch_t, self.patch_xy, self.batch):
            w.valueChanged.connect(self._show_estimate)
        for w in (self.patch_t, self.patch_xy):
            w.valueChanged.connect(self.update_check)
        self.axes.textChanged.connect(self.update_check)
        self.estimate_btn.clicked.connect(lambda: self.estimate())
        self.start_btn.clicked.connect(self.start)
        self.stop_btn.clicked.connect(self.stop)

    # -- config --------------------------------------------------------------------------
    def train_config(self) -> TrainConfig:
        """A :class:`TrainConfig` from the widgets (raises :class:`InputError` if invalid)."""
        v = self.form.values()
        value, unit = v["budget"], v["budget_unit"]
        steps = value if unit == "steps" else None
        seconds = None if unit == "steps" else float(value) * (60.0 if unit == "minutes" else 1.0)
        return TrainConfig(
            mode=v["mode"], preset=v["preset"], steps=steps, seconds=seconds, patch_t=v["patch_t"] or None,
            patch_xy=v["patch_xy"] or None, batch_size=v["batch"] or None, lr=v["lr"] or None, seed=v["seed"],
            device=v["device"], swap=v["swap"], augment=v["augment"], flip_backward=v["flip_backward"],
            registration="auto" if self.registration.isChecked() else "off",
            val_every=v["val_every"], preview_every=v["preview_every"], preview_frames=self._preview_frames,
            checkpoint_every=DEFAULT_CHECKPOINT_EVERY if v["checkpoint_dir"].strip() else 0,
        )

    def _init_source(self, cfg: TrainConfig) -> str | None:
        """Where training starts: the loaded model's weights, the shipped generalist, or nothing."""
        from ..model.pretrained import pretrained_path

        if self.init_from_loaded.isChecked() and self._loaded_path:
            return str(self._loaded_path)
        if self.init_pretrained.isChecked() and not self.resume.text().strip():
            pretrained_path(cfg.mode, cfg.preset)  # a clear error when none is shipped for this mode / preset
            return "generalist"
        return None

    @staticmethod
    def _check_fit(stack: Any, r: ResolvedTrainConfig) -> None:
        """Refuse a layer the mode / patch (resolved settings ``r``) cannot use before a worker starts (a resumed
        run keeps its stored mode and patch, which the trainer checks itself)."""
        from ..modes import check_stack_for_mode

        check_stack_for_mode(tuple(stack.shape), r.mode, r.patch_t, r.patch_xy)

    def update_check(self, *_: Any) -> bool:
        """Check the chosen layer against the mode and patch size; show the verdict. Returns ok."""
        mode = self.mode.currentText()
        self.mode_help.setText(MODE_HELP.get(mode, ""))
        self.preset_help.setText(PRESETS[self.preset.currentText()].description)
        try:
            r = self.train_config().resolved()
            stack = layer_stack(self.layer.value, self.axes.text())
            self._check_fit(stack, r)
        except UserError as exc:
            show_verdict(self.check_label, f"✗ {exc}", ok=False)
            return False
        shape = " x ".join(map(str, stack.shape))
        show_verdict(self.check_label, f"✓ {shape} stack fits {mode} mode with {r.patch_t} x {r.patch_xy} "
                                       f"x {r.patch_xy} patches", ok=True)
        return True

    def _not_more_data(self, layer: Any) -> bool:
        """Layers not offered under "Also train on": the chosen one and our own previews / plots."""
        return layer is self.layer.value or "unet_att" in getattr(layer, "metadata", {})

    # -- time estimate -------------------------------------------------------------------
    def _estimate_key(self, cfg: TrainConfig) -> tuple:
        r = cfg.resolved()
        return (r.preset, r.patch_t, r.patch_xy, r.batch_size, r.device, r.amp)

    def estimate(self) -> Any:
        """Time a few training steps of the current settings in a worker; returns it (None if invalid).

        The result is kept per preset / patch / batch / device, so changing the budget
        updates the estimate at once and only a new network or device is timed again.
        """
        from ..training.timing import measure_step_seconds

        if worker_busy(self.estimate_worker) or self.running:
            return self.estimate_worker
        try:
            cfg = self.train_config()
        except UserError as exc:
            report_error(exc, "estimating the training time")
            return None
        key = self._estimate_key(cfg)
        self.estimate_btn.setEnabled(False)
        self.estimate_label.setText("timing a few training steps on this machine…")

        def done(step_s: float) -> None:
            _STEP_SECONDS[key] = step_s
            self._show_estimate()

        def failed(exc: BaseException) -> None:
            report_error(exc, "estimating the training time")
            self.estimate_label.setText(NO_ESTIMATE)

        self.estimate_worker = run_function(measure_step_seconds, cfg, returned=done, errored=failed,
                                            finished=lambda: self.estimate_btn.setEnabled(True))
        return self.estimate_worker

    def _show_estimate(self, *_: Any) -> None:
        """What the budget buys, from a timing of these settings (blank until one was made)."""
        from ..training.timing import describe_budget

        try:
            cfg = self.train_config()
        except UserError:
            return
        step_s = _STEP_SECONDS.get(self._estimate_key(cfg))
        self.estimate_label.setText(NO_ESTIMATE if step_s is None else describe_budget(step_s, cfg.steps, cfg.seconds))

    # -- run -----------------------------------------------------------------------------
    def start(self) -> Any:
        """Start training in a worker thread; returns the worker (None if it could not start)."""
        from ..training.resume import given_settings
        from ..training.trainer import Trainer
        from .wording import TRAIN_DOCK_WORDING

        if self.running:
            return self.worker
        layer = self.layer.value
        try:
            cfg = self.train_config()
            layers = [layer, *(other for other in self.more_layers.value if other is not layer)]
            stacks = [layer_stack(one, self.axes.text()) for one in layers]
            resume = self.resume.text().strip() or None
            if resume is None:
                for one in stacks:
                    self._check_fit(one, cfg.resolved())
            self._preview_frames = _preview_window(self.viewer, layer, stacks[0].shape[0])  # previews the chosen layer
            cfg.preview_frames = self._preview_frames
            # The form always shows a mode and a preset: a resumed run must have the ones shown.
            self.trainer = Trainer(stacks, cfg, out_dir=self.checkpoint_dir.text().strip() or None, resume=resume,
                                   init=self._init_source(cfg), sources=[one.name for one in layers],
                                   given=given_settings(cfg, always=("mode", "preset")), wording=TRAIN_DOCK_WORDING)
        except UserError as exc:
            report_error(exc, "training")
            return None
        self.events = []
        _warm_torch_imports()
        self.status.setText("starting…")
        self._run_key = self._estimate_key(cfg)
        self._pbar_unit_steps = cfg.steps is not None
        return self._launch(self.trainer.run(), layer, cfg.steps if cfg.steps is not None else 100,
                            "UNet-Att training")

    def stop(self) -> None:
        """Ask the run to end after the current step; the model trained so far is kept."""
        if self.trainer is not None:
            self.trainer.stop()
        self.status.setText("stopping after the current step…")

    def _end_run(self) -> None:
        self.stop()

    def _on_destroyed(self) -> None:
        super()._on_destroyed()
        if self.trainer is not None:
            self.trainer.stop()

    def _workers(self) -> tuple[Any, ...]:
        # timing takes a few steps and an export a few seconds: wait rather than leave them running
        return (self.worker, self.estimate_worker, self.models.export_worker)

    def _set_running(self, running: bool) -> None:
        self.start_btn.setEnabled(not running)
        self.stop_btn.setEnabled(running)
        self.load_btn.setEnabled(not running)
        if running:
            self.models.enable_files(False)

    def _on_event(self, ev: TrainEvent) -> None:
        self.events.append(ev)
        if ev.message:
            from napari.utils.notifications import show_info

            show_info(ev.message)
        if ev.step <= 0:
            return
        self.progress.setValue(int(1000 * ev.fraction))
        total = f"/{ev.total_steps}" if ev.total_steps else ""
        val = f", val {ev.val_loss:.4g}" if ev.val_loss is not None else ""
        self.status.setText(f"step {ev.step}{total}, loss {ev.loss:.4g}{val}, {ev.steps_per_s:.2f} steps/s, "
                            f"ETA {format_seconds(ev.eta_s)}")
        self.plot.show_history(ev.history)
        if ev.preview is not None and self._preview_means_something(ev.step):
            self._show_preview(np.asarray(ev.preview))
        self._pbar.advance_to(ev.step if self._pbar_unit_steps else int(round(100 * ev.fraction)),
                              desc=f"UNet-Att training, {ev.steps_per_s:.2f} steps/s, ETA {format_seconds(ev.eta_s)}")

    def _preview_means_something(self, step: int) -> bool:
        """A preview of a model trained from scratch for a few steps is a uniform grey: skip it.

        From pretrained or loaded weights the model denoises from the first step.
        """
        trainer = self.trainer
        from_weights = trainer is not None and (trainer.init is not None or trainer.resume is not None)
        return from_weights or step >= PREVIEW_MIN_STEPS

    def _show_preview(self, data: np.ndarray) -> None:
        layer = self._run_layer
        if layer is None:
            return
        scale = np.asarray(layer.scale)
        translate = np.asarray(layer.translate, dtype=float).copy()
        if tuple(data.shape[1:]) == tuple(layer.data.shape[1:]):  # the layer's axes (not reordered by Axes)
            translate[0] += self._preview_frames[0] * scale[0]
        else:
            scale, translate = None, None
        put_image(self.viewer, f"{layer.name}_preview", data, scale=scale, translate=translate,
                  contrast_limits=getattr(layer, "contrast_limits", None), colormap="gray",
                  metadata={"unet_att": "training preview"})

    def _on_returned(self, den: Any) -> None:
        if den is None:
            return
        self.denoiser = den
        if self.trainer is not None and not self.trainer.stopping:
            # the budget was used up: the bar ends full even if the last event's redraw has not landed yet
            self.progress.setValue(self.progress.maximum())
        origin = f"trained on {self._run_layer.name}" if self._run_layer is not None else "trained"
        more = len(self.trainer.stacks) - 1 if self.trainer is not None else 0
        if more > 0:
            origin += f" and {more} more layer{'s' if more > 1 else ''}"
        MODELS.set(self.viewer, den, origin)

    def _on_error(self, exc: BaseException) -> None:
        report_error(exc, "training")
        self.status.setText(f"failed: {exc}")

    def _on_finished(self) -> None:
        self.plot.flush()
        super()._on_finished()
        self.models.enable_files(self.denoiser is not None)
        if self.denoiser is not None and self.events:
            last = self.events[-1]
            where = f"; saved in {self.checkpoint_dir.text().strip()}" if self.checkpoint_dir.text().strip() else ""
            self.status.setText(f"done: {last.step} steps in {last.elapsed_s:.0f} s{where}")
            if last.steps_per_s > 0:  # a real run is the best timing: the next budget's estimate uses it
                _STEP_SECONDS[self._run_key] = 1.0 / last.steps_per_s
                self._show_estimate()
        self.trainer = None

    # -- model files ---------------------------------------------------------------------
    def load_model(self, path: str | Path) -> Any:
        """Load a checkpoint (ours or a reference tool's) as the viewer's current model."""
        den = self.models.load(self.viewer, path)
        if den is not None:
            self.denoiser = den
            self._loaded_path = str(path)
            self.models.enable_files(True)
        return den

    def save_model(self, path: str | Path) -> Path | None:
        """Save the current model (atomic; ``.pt`` appended when missing)."""
        return self.models.save(path)

    def export_model(self, path: str | Path, wait: bool = True) -> Path | None:
        """Export the current model as a BioImage Model Zoo package in a worker (atomic; ``.zip`` appended).

        The test input is cut from the selected layer when it is large enough, else from the
        shipped sample recording (see :func:`napari_unet_att.zoo.export_bioimageio`). With
        ``wait`` (scripts, tests) the result is returned; the button does not wait (see
        :meth:`.model_panel.ModelPanel.export`).
        """
        return self.models.export(path, wait=wait)

    def _on_model_changed(self, entry: tuple[Any, str] | None) -> None:
        if entry is not None:
            self.denoiser = entry[0]
            self.model_label.setText(describe(entry))
            self.models.enable_files(not self.running)


def _warm_torch_imports() -> None:
    """Import what torch imports lazily on the first optimiser, here in the GUI thread.

    torch imports ``torch._dynamo`` the first time an optimiser is built; done for the first
    time inside a napari worker thread (while the GUI thread runs the event loop) that
    import was seen to fail with "'prims' object has no attribute 'sum'".
    """
    import torch

    torch.optim.Adam([torch.zeros(1, requires_grad=True)])


def _preview_window(viewer: Any, layer: Any, n_frames: int) -> tuple[int, int]:
    """Preview frames around the frame the user is looking at (the first frames otherwise)."""
    try:
        world_t = viewer.dims.point[viewer.dims.ndim - layer.ndim]
        t = int(round((world_t - layer.translate[0]) / layer.scale[0]))
    except (IndexError, AttributeError, TypeError, ValueError):
        t = 0
    f0 = int(np.clip(t - PREVIEW_FRAMES // 2, 0, max(0, n_frames - PREVIEW_FRAMES)))
    return f0, min(n_frames, f0 + PREVIEW_FRAMES)
