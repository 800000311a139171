"""Training dock: pick a layer and a mode, train in a worker, watch loss and a live preview."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.ticker import MaxNLocator
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QWidget,
)
from superqt import QCollapsible

from ..config import MODE_HELP, MODES, PRESETS, TrainConfig, TrainEvent
from ..errors import InputError, UserError
from . import common as C
from . import settings as _settings

BUDGET_UNITS = ("steps", "seconds", "minutes")
SETTINGS_KEY = "train"
PREVIEW_FRAMES = 16
#: Steps from random weights before the preview layer is shown (earlier it is a uniform grey).
PREVIEW_MIN_STEPS = 50
NO_ESTIMATE = "how many steps the budget buys here: press Estimate time (a few seconds)"
_STEP_SECONDS: dict[tuple, float] = {}  # measured seconds per step, by settings (see TrainWidget.estimate)


class TrainWidget(C.DockTabsMixin, QWidget):
    """Dock widget that trains a UNet-Att denoiser on an image layer.

    Parameters
    ----------
    napari_viewer : napari.Viewer
    """

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        import napari.layers

        self.viewer = napari_viewer
        self.worker: Any = None
        self.estimate_worker: Any = None
        self.trainer: Any = None
        self.denoiser: Any = None
        self.events: list[TrainEvent] = []  # what the current run reported (tests and plots read it)
        self._cancel = threading.Event()
        self._run_layer: Any = None
        self._run_key: tuple = ()  # the settings timed by the current run (see _STEP_SECONDS)
        self._pbar: Any = None
        self._loaded_path: str | None = None
        self._preview_frames = (0, PREVIEW_FRAMES)

        self.layer = C.LayerCombo(napari_viewer, (napari.layers.Image,), label="layer")
        # More recordings of the same kind train one model (as the CLI does with several files).
        self.more_layers = C.LayerCombo(napari_viewer, (napari.layers.Image,), label="also train on", multiple=True,
                                        exclude=self._not_more_data)
        self._build_ui()
        self._restore_settings()
        self.layer.changed.connect(self.update_check)
        self.layer.changed.connect(self.more_layers._refresh)  # the chosen layer is not offered twice
        self.viewer.layers.events.removed.connect(self._on_layer_removed)
        C.MODELS.changed.connect(self._on_model_changed)
        # Stop a run when the dock is destroyed (closed) even if Python still holds us.
        cancel, holder = self._cancel, self
        trainer_ref = lambda: holder.trainer  # noqa: E731 - captured before Qt deletes the C++ side
        self.destroyed.connect(lambda *_: (cancel.set(), trainer_ref() and trainer_ref().stop()))
        self.update_check()

    # -- UI ------------------------------------------------------------------------------
    def _build_ui(self) -> None:
        lay = C.scroll_layout(self)
        form = QFormLayout()
        lay.addLayout(form)
        form.addRow("Layer", self.layer.native)
        self.more_layers.native.setToolTip("more recordings for the same model (ctrl/shift-click to pick several); "
                                           "the layer above is the one previewed")
        form.addRow("Also train on", self.more_layers.native)

        self.mode = QComboBox()
        self.mode.addItems(MODES)
        self.mode_help = C.wrap_label(small=True)
        form.addRow("Mode", self.mode)
        form.addRow(self.mode_help)
        self.check_label = C.wrap_label()
        form.addRow(self.check_label)

        self.preset = QComboBox()
        self.preset.addItems(list(PRESETS))
        self.preset_help = C.wrap_label(small=True)
        form.addRow("Preset", self.preset)
        form.addRow(self.preset_help)
        # Fine-tuning the shipped generalist beats training from nothing at every budget a user gives.
        self.init_pretrained = QCheckBox("start from the pretrained model (generalist)")
        self.init_pretrained.setChecked(True)
        self.init_pretrained.setToolTip("fine-tune the shipped generalist for this mode and preset (temporal and "
                                        "mirrored-scan, preset 'fast'); off: train from random weights")
        form.addRow(self.init_pretrained)

        budget = QHBoxLayout()
        self.budget = QSpinBox()
        self.budget.setRange(1, 10_000_000)
        self.budget.setValue(500)
        self.budget_unit = QComboBox()
        self.budget_unit.addItems(BUDGET_UNITS)
        budget.addWidget(self.budget)
        budget.addWidget(self.budget_unit)
        form.addRow("Budget", budget)
        # What the budget buys on this machine: steps are 10x faster on some machines than others.
        estimate = QHBoxLayout()
        self.estimate_btn = QPushButton("Estimate time")
        self.estimate_btn.setToolTip("time a few training steps of this preset on this machine (a few seconds)")
        self.estimate_label = C.wrap_label(NO_ESTIMATE, small=True)
        estimate.addWidget(self.estimate_btn)
        estimate.addWidget(self.estimate_label, 1)
        form.addRow(estimate)

        self.patch_t = QSpinBox()
        self.patch_t.setRange(0, 4096)
        self.patch_t.setSpecialValueText("preset")
        self.patch_xy = QSpinBox()
        self.patch_xy.setRange(0, 1024)
        self.patch_xy.setSpecialValueText("preset")
        patch = QHBoxLayout()
        patch.addWidget(QLabel("t"))
        patch.addWidget(self.patch_t)
        patch.addWidget(QLabel("y/x"))
        patch.addWidget(self.patch_xy)
        form.addRow("Patch", patch)

        self.device = QComboBox()
        self.device.addItems(_device_choices())
        form.addRow("Device", self.device)
        self.seed = QSpinBox()
        self.seed.setRange(0, 2**31 - 1)
        form.addRow("Seed", self.seed)

        lay.addWidget(self._build_advanced())

        buttons = QHBoxLayout()
        self.start_btn = QPushButton("Start")
        self.stop_btn = QPushButton("Stop")
        self.stop_btn.setEnabled(False)
        buttons.addWidget(self.start_btn)
        buttons.addWidget(self.stop_btn)
        lay.addLayout(buttons)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setTextVisible(False)
        self.status = C.wrap_label()
        lay.addWidget(self.progress)
        lay.addWidget(self.status)

        self.plot = C.PlotCanvas()
        self._setup_plot()
        lay.addWidget(self.plot.native)

        model = QHBoxLayout()
        self.load_btn = QPushButton("Load model…")
        self.save_btn = QPushButton("Save model…")
        self.save_btn.setEnabled(False)
        model.addWidget(self.load_btn)
        model.addWidget(self.save_btn)
        self.export_btn = QPushButton("Export to BioImage Model Zoo…")
        self.export_btn.setToolTip("Write the model as a bioimage.io package (.zip) that deepImageJ, ilastik, "
                                   "QuPath and bioimageio.core can run; needs napari-unet-att[bioimageio]")
        self.export_btn.setEnabled(False)
        model.addWidget(self.export_btn)
        lay.addLayout(model)
        self.model_label = C.wrap_label("No model yet: train one or load a checkpoint (ours or DeepCAD-RT / "
                                        "UNet-Att / DeepBID weights).", small=True)
        lay.addWidget(self.model_label)
        lay.addStretch(1)

        self.mode.currentTextChanged.connect(self.update_check)
        self.preset.currentTextChanged.connect(self.update_check)
        for w in (self.preset, self.budget_unit, self.device):
            w.currentTextChanged.connect(self._show_estimate)
        for w in (self.budget, self.patch_t, self.patch_xy, self.batch):
            w.valueChanged.connect(self._show_estimate)
        self.estimate_btn.clicked.connect(lambda: self.estimate())
        self.patch_t.valueChanged.connect(self.update_check)
        self.patch_xy.valueChanged.connect(self.update_check)
        self.start_btn.clicked.connect(self.start)
        self.stop_btn.clicked.connect(self.stop)
        self.load_btn.clicked.connect(self._ask_load)
        self.save_btn.clicked.connect(self._ask_save)
        self.export_btn.clicked.connect(self._ask_export)

    def _build_advanced(self) -> QWidget:
        box = QCollapsible("Advanced")
        inner = QWidget()
        form = QFormLayout(inner)
        self.lr = QDoubleSpinBox()
        self.lr.setDecimals(6)
        self.lr.setRange(0.0, 1.0)
        self.lr.setSingleStep(1e-4)
        self.lr.setSpecialValueText("preset")
        self.batch = QSpinBox()
        self.batch.setRange(0, 256)
        self.batch.setSpecialValueText("preset")
        self.swap = QCheckBox("swap input / target (p = 0.5)")
        self.augment = QCheckBox("random flips / rotations")
        self.flip_backward = QCheckBox("backward lines stored x-mirrored (mirrored mode)")
        self.preview_every = QSpinBox()
        self.preview_every.setRange(0, 100_000)
        self.preview_every.setSpecialValueText("off")
        self.val_every = QSpinBox()
        self.val_every.setRange(1, 100_000)
        self.checkpoint_dir = QLineEdit()
        self.checkpoint_dir.setPlaceholderText("(none: model kept in memory)")
        browse = QPushButton("…")
        browse.setMaximumWidth(30)
        browse.clicked.connect(lambda: self.checkpoint_dir.setText(C.ask_dir(self, "Checkpoint folder") or
                                                                   self.checkpoint_dir.text()))
        ck = QHBoxLayout()
        ck.addWidget(self.checkpoint_dir)
        ck.addWidget(browse)
        self.resume = QLineEdit()
        self.resume.setPlaceholderText("checkpoint-last.pt of an earlier run")
        rbrowse = QPushButton("…")
        rbrowse.setMaximumWidth(30)
        rbrowse.clicked.connect(lambda: self.resume.setText(C.ask_open_path(self, "Resume from", "*.pt") or
                                                            self.resume.text()))
        rs = QHBoxLayout()
        rs.addWidget(self.resume)
        rs.addWidget(rbrowse)
        self.init_from_loaded = QCheckBox("start from the loaded model's weights")
        form.addRow("Learning rate", self.lr)
        form.addRow("Batch size", self.batch)
        form.addRow(self.swap)
        form.addRow(self.augment)
        form.addRow(self.flip_backward)
        form.addRow("Preview every (steps)", self.preview_every)
        form.addRow("Validate every (steps)", self.val_every)
        form.addRow("Checkpoint folder", ck)
        form.addRow("Resume", rs)
        form.addRow(self.init_from_loaded)
        box.addWidget(inner)
        return box

    def _setup_plot(self) -> None:
        ax = self.plot.figure.add_subplot(111)
        C.style_axes(ax)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.set_title("training loss", fontsize=9)
        (self._train_line,) = ax.plot([], [], color="#6fa8dc", linewidth=0.8, label="train")
        (self._val_line,) = ax.plot([], [], "o-", color="#f6b26b", markersize=3, linewidth=1.2, label="validation")
        ax.legend(fontsize=7, facecolor="#262930", labelcolor="#d0d0d0", edgecolor="#3a3d45")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole numbers
        # No empty axes with made-up ranges before the first step: a line that says what will come.
        ax.set_visible(False)
        self._placeholder = self.plot.figure.text(0.5, 0.5, "the loss curve appears here once training starts",
                                                  ha="center", va="center", color="#a0a0a0", fontsize=8)
        self._ax = ax

    # -- settings ------------------------------------------------------------------------
    def settings(self) -> dict[str, Any]:
        """The widget's current choices (what is remembered between sessions)."""
        return {
            "mode": self.mode.currentText(), "preset": self.preset.currentText(), "budget": self.budget.value(),
            "budget_unit": self.budget_unit.currentText(), "patch_t": self.patch_t.value(),
            "patch_xy": self.patch_xy.value(), "device": self.device.currentText(), "seed": self.seed.value(),
            "lr": self.lr.value(), "batch": self.batch.value(), "swap": self.swap.isChecked(),
            "augment": self.augment.isChecked(), "flip_backward": self.flip_backward.isChecked(),
            "preview_every": self.preview_every.value(), "val_every": self.val_every.value(),
            "checkpoint_dir": self.checkpoint_dir.text(), "init_pretrained": self.init_pretrained.isChecked(),
        }

    def _restore_settings(self) -> None:
        d = TrainConfig()
        # A budget in minutes: what a step costs differs 10-fold between machines (Estimate time says).
        s = {"budget": 5, "budget_unit": "minutes", "swap": d.swap, "augment": d.augment, "preview_every": 25,
             "val_every": d.val_every,
             **_settings.load_settings(SETTINGS_KEY)}
        _set_combo(self.mode, s.get("mode"))
        _set_combo(self.preset, s.get("preset"))
        _set_combo(self.budget_unit, s.get("budget_unit"))
        _set_combo(self.device, s.get("device"))
        for spin, key in ((self.budget, "budget"), (self.patch_t, "patch_t"), (self.patch_xy, "patch_xy"),
                          (self.seed, "seed"), (self.batch, "batch"), (self.preview_every, "preview_every"),
                          (self.val_every, "val_every")):
            if isinstance(s.get(key), (int, float)):
                spin.setValue(int(s[key]))
        if isinstance(s.get("lr"), (int, float)):
            self.lr.setValue(float(s["lr"]))
        self.swap.setChecked(bool(s.get("swap")))
        self.augment.setChecked(bool(s.get("augment")))
        self.flip_backward.setChecked(bool(s.get("flip_backward", False)))
        self.checkpoint_dir.setText(str(s.get("checkpoint_dir", "")))
        self.init_pretrained.setChecked(bool(s.get("init_pretrained", True)))

    # -- config --------------------------------------------------------------------------
    def train_config(self) -> TrainConfig:
        """A :class:`TrainConfig` from the widgets (raises :class:`InputError` if invalid)."""
        value, unit = self.budget.value(), self.budget_unit.currentText()
        steps = value if unit == "steps" else None
        seconds = None if unit == "steps" else float(value) * (60.0 if unit == "minutes" else 1.0)
        return TrainConfig(
            mode=self.mode.currentText(), preset=self.preset.currentText(), steps=steps, seconds=seconds,
            patch_t=self.patch_t.value() or None, patch_xy=self.patch_xy.value() or None,
            batch_size=self.batch.value() or None, lr=self.lr.value() or None, seed=self.seed.value(),
            device=self.device.currentText(), swap=self.swap.isChecked(), augment=self.augment.isChecked(),
            flip_backward=self.flip_backward.isChecked(), val_every=self.val_every.value(),
            preview_every=self.preview_every.value(), preview_frames=self._preview_frames,
            checkpoint_every=200 if self.checkpoint_dir.text().strip() else 0,
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

    def _stack(self, layer: Any) -> Any:
        """The layer's data as a (T, Y, X) stack, left lazy (the engine reads patches on demand)."""
        return C.layer_stack(layer)

    @staticmethod
    def _check_fit(stack: Any, cfg: TrainConfig) -> None:
        """Refuse a layer the mode / patch cannot use before a worker starts (the engine's check).

        A resumed run keeps its stored mode and patch, which the trainer checks itself.
        """
        from ..modes import check_stack_for_mode

        resolved = cfg.resolved()
        check_stack_for_mode(tuple(stack.shape), resolved["mode"], resolved["patch_t"], resolved["patch_xy"])

    def update_check(self, *_: Any) -> bool:
        """Check the chosen layer against the mode and patch size; show the verdict. Returns ok."""
        from ..modes import check_stack_for_mode

        mode = self.mode.currentText()
        self.mode_help.setText(MODE_HELP.get(mode, ""))
        self.preset_help.setText(PRESETS[self.preset.currentText()].description)
        try:
            cfg = self.train_config().resolved()
            stack = self._stack(self.layer.value)
            check_stack_for_mode(tuple(stack.shape), mode, cfg["patch_t"], cfg["patch_xy"])
        except UserError as exc:
            self.check_label.setText(f"✗ {exc}")
            self.check_label.setStyleSheet("color: #ff8080;")
            return False
        shape = " x ".join(map(str, stack.shape))
        self.check_label.setText(f"✓ {shape} stack fits {mode} mode with {cfg['patch_t']} x {cfg['patch_xy']} "
                                 f"x {cfg['patch_xy']} patches")
        self.check_label.setStyleSheet("color: #80e080;")
        return True

    def _not_more_data(self, layer: Any) -> bool:
        """Layers not offered under "Also train on": the chosen one and our own previews / plots."""
        return layer is self.layer.value or "unet_att" in getattr(layer, "metadata", {})

    # -- time estimate -------------------------------------------------------------------
    def _estimate_key(self, cfg: TrainConfig) -> tuple:
        r = cfg.resolved()
        return (r["preset"], r["patch_t"], r["patch_xy"], r["batch_size"], r["device"], r["amp"])

    def estimate(self) -> Any:
        """Time a few training steps of the current settings in a worker; returns it (None if invalid).

        The result is kept per preset / patch / batch / device, so changing the budget
        updates the estimate at once and only a new network or device is timed again.
        """
        from napari.qt.threading import create_worker

        from ..training.timing import measure_step_seconds

        if C.worker_busy(self.estimate_worker) or self.running:
            return self.estimate_worker
        try:
            cfg = self.train_config()
        except UserError as exc:
            C.report_error(exc, "estimating the training time")
            return None
        key = self._estimate_key(cfg)
        self.estimate_btn.setEnabled(False)
        self.estimate_label.setText("timing a few training steps on this machine…")
        self.estimate_worker = create_worker(measure_step_seconds, cfg, _ignore_errors=True)

        def done(step_s: float) -> None:
            _STEP_SECONDS[key] = step_s
            self._show_estimate()

        def failed(exc: BaseException) -> None:
            C.report_error(exc, "estimating the training time")
            self.estimate_label.setText(NO_ESTIMATE)

        self.estimate_worker.returned.connect(done)
        self.estimate_worker.errored.connect(failed)
        self.estimate_worker.finished.connect(lambda: self.estimate_btn.setEnabled(True))
        C.start_worker(self.estimate_worker)
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
    @property
    def running(self) -> bool:
        return C.worker_busy(self.worker)

    def start(self) -> Any:
        """Start training in a worker thread; returns the worker (None if it could not start)."""
        from napari.qt.threading import create_worker

        from ..training.trainer import Trainer

        if self.running:
            return self.worker
        layer = self.layer.value
        try:
            cfg = self.train_config()
            layers = [layer, *(other for other in self.more_layers.value if other is not layer)]
            stacks = [self._stack(one) for one in layers]
            stack = stacks[0]  # the layer chosen above: the preview shows it
            resume = self.resume.text().strip() or None
            if resume is None:
                for one in stacks:
                    self._check_fit(one, cfg)
            self._preview_frames = _preview_window(self.viewer, layer, stack.shape[0])
            cfg.preview_frames = self._preview_frames
            init = self._init_source(cfg)
            out_dir = self.checkpoint_dir.text().strip() or None
            self.trainer = Trainer(stacks, cfg, out_dir=out_dir, resume=resume, init=init,
                                   sources=[one.name for one in layers])
        except UserError as exc:
            C.report_error(exc, "training")
            return None
        _settings.save_settings(SETTINGS_KEY, self.settings())
        self._run_layer = layer
        self._cancel = threading.Event()
        self.events = []
        _warm_torch_imports()
        self._set_running(True)
        self.status.setText("starting…")
        self._open_pbar(cfg)
        self._run_key = self._estimate_key(cfg)
        run = self.trainer.run()
        self.worker = create_worker(C.drain, run, self._cancel, _ignore_errors=True)
        C.close_when_aborted(self.worker, run)
        self.worker.yielded.connect(self._on_event)
        self.worker.returned.connect(self._on_returned)
        self.worker.errored.connect(self._on_error)
        self.worker.finished.connect(self._on_finished)
        C.start_worker(self.worker)
        return self.worker

    def stop(self) -> None:
        """Ask the run to end after the current step; the model trained so far is kept."""
        if self.trainer is not None:
            self.trainer.stop()
        self.status.setText("stopping after the current step…")

    def shutdown(self, timeout_s: float = 30.0) -> bool:
        """Stop any run and wait for its worker (dock or viewer closing). Returns True when stopped."""
        if self.trainer is not None:
            self.trainer.stop()
        ok = C.stop_worker(self.worker, timeout_s) if self.running else True
        if C.worker_busy(self.estimate_worker):  # a few steps long: wait rather than leave it running
            ok = C.stop_worker(self.estimate_worker, timeout_s) and ok
        self._close_pbar()
        return ok

    def _open_pbar(self, cfg: TrainConfig) -> None:
        from napari.utils import progress

        total = cfg.steps if cfg.steps is not None else 100
        self._pbar_unit_steps = cfg.steps is not None
        self._pbar = progress(total=total, desc="UNet-Att training")

    def _close_pbar(self) -> None:
        if self._pbar is not None:
            self._pbar.close()
            self._pbar = None

    def _set_running(self, running: bool) -> None:
        self.start_btn.setEnabled(not running)
        self.stop_btn.setEnabled(running)
        self.load_btn.setEnabled(not running)
        if running:
            self.save_btn.setEnabled(False)
            self.export_btn.setEnabled(False)

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
                            f"ETA {C.format_seconds(ev.eta_s)}")
        self._update_plot(ev.history)
        if ev.preview is not None and self._preview_means_something(ev.step):
            self._show_preview(np.asarray(ev.preview))
        pbar = self._pbar  # updating it may process events (and finish the run) re-entrantly
        if pbar is not None:
            pbar.set_description(f"UNet-Att training, {ev.steps_per_s:.2f} steps/s, ETA "
                                 f"{C.format_seconds(ev.eta_s)}")
            target = ev.step if self._pbar_unit_steps else int(round(100 * ev.fraction))
            pbar.update(max(0, target - pbar.n))

    def _preview_means_something(self, step: int) -> bool:
        """A preview of a model trained from scratch for a few steps is a uniform grey: skip it.

        From pretrained or loaded weights the model denoises from the first step.
        """
        trainer = self.trainer
        from_weights = trainer is not None and (trainer.init is not None or trainer.resume is not None)
        return from_weights or step >= PREVIEW_MIN_STEPS

    def _update_plot(self, history: dict[str, list]) -> None:
        if not history or not history.get("step"):
            return
        if not self._ax.get_visible():
            self._ax.set_visible(True)
            self._placeholder.set_visible(False)
        # The trainer appends to these lists from its thread: copy equal-length snapshots.
        n = min(len(history["step"]), len(history["loss"]))
        nv = min(len(history.get("val_step", [])), len(history.get("val_loss", [])))
        self._train_line.set_data(history["step"][:n], history["loss"][:n])
        self._val_line.set_data(history["val_step"][:nv] if nv else [], history["val_loss"][:nv] if nv else [])
        self._ax.relim()
        self._ax.autoscale_view()
        losses = [v for v in history["loss"][:n] + list(history.get("val_loss", [])[:nv]) if np.isfinite(v) and v > 0]
        if losses and max(losses) / min(losses) > 20:
            self._ax.set_yscale("log")  # early losses dwarf the rest otherwise
        self.plot.request_draw()

    def _show_preview(self, data: np.ndarray) -> None:
        layer = self._run_layer
        if layer is None:
            return
        name = f"{layer.name}_preview"
        scale = np.asarray(layer.scale)
        translate = np.asarray(layer.translate, dtype=float).copy()
        if data.ndim == len(scale):
            translate[0] += self._preview_frames[0] * scale[0]
        else:
            scale, translate = None, None
        existing = self.viewer.layers[name] if name in self.viewer.layers else None
        if existing is not None and existing.data.shape == data.shape:
            existing.data = data
            return
        if existing is not None:
            self.viewer.layers.remove(existing)
        limits = getattr(layer, "contrast_limits", None)
        self.viewer.add_image(data, name=name, scale=scale, translate=translate, contrast_limits=limits,
                              colormap="gray", metadata={"unet_att": "training preview"})

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
        C.MODELS.set(self.viewer, den, origin)

    def _on_error(self, exc: BaseException) -> None:
        C.report_error(exc, "training")
        self.status.setText(f"failed: {exc}")

    def _on_finished(self) -> None:
        self.plot.flush()
        self._close_pbar()
        self._set_running(False)
        self.save_btn.setEnabled(self.denoiser is not None)
        self.export_btn.setEnabled(self.denoiser is not None)
        if self.denoiser is not None and self.events:
            last = self.events[-1]
            where = f"; saved in {self.checkpoint_dir.text().strip()}" if self.checkpoint_dir.text().strip() else ""
            self.status.setText(f"done: {last.step} steps in {last.elapsed_s:.0f} s{where}")
            if last.steps_per_s > 0:  # a real run is the best timing: the next budget's estimate uses it
                _STEP_SECONDS[self._run_key] = 1.0 / last.steps_per_s
                self._show_estimate()
        self._run_layer = None
        self.trainer = None

    def _on_layer_removed(self, event: Any) -> None:
        if self.running and event.value is self._run_layer:
            self.stop()
            C.warn_unless_closing(self.viewer, f"layer {event.value.name!r} was removed: training stopped (the "
                                               "model so far is kept)")

    # -- model files ---------------------------------------------------------------------
    def load_model(self, path: str | Path) -> Any:
        """Load a checkpoint (ours or a reference tool's) as the viewer's current model."""
        from ..model.checkpoint import load_any

        try:
            den = load_any(path)
        except UserError as exc:
            C.report_error(exc, "loading the model")
            return None
        self.denoiser = den
        self._loaded_path = str(path)
        C.MODELS.set(self.viewer, den, f"loaded from {Path(path).name}")
        self.save_btn.setEnabled(True)
        self.export_btn.setEnabled(True)
        return den

    def save_model(self, path: str | Path) -> Path | None:
        """Save the current model (atomic; ``.pt`` appended when missing)."""
        from ..model.checkpoint import CHECKPOINT_EXT, save_checkpoint

        if self.denoiser is None:
            C.report_error(InputError("no model to save: train one or load a checkpoint first"), "saving")
            return None
        out = Path(path)
        if out.suffix != CHECKPOINT_EXT:
            out = out.with_name(out.name + CHECKPOINT_EXT)
        try:
            save_checkpoint(out, self.denoiser)
        except (UserError, OSError) as exc:
            C.report_error(exc, "saving the model")
            return None
        self.status.setText(f"model saved to {out}")
        return out

    def _ask_load(self) -> None:
        path = C.ask_open_path(self, "Load model", "Checkpoints (*.pt *.pth *.tar);;All files (*)")
        if path:
            self.load_model(path)

    def _ask_save(self) -> None:
        path = C.ask_save_path(self, "Save model", "Checkpoints (*.pt)")
        if path:
            self.save_model(path)

    def export_model(self, path: str | Path) -> Path | None:
        """Export the current model as a BioImage Model Zoo package (atomic; ``.zip`` appended when missing).

        The test input is cut from the selected layer when it is large enough, else from the
        shipped sample recording (see :func:`napari_unet_att.zoo.export_bioimageio`).
        """
        from ..zoo import export_bioimageio

        if self.denoiser is None:
            C.report_error(InputError("no model to export: train one or load a checkpoint first"), "exporting")
            return None
        out = Path(path)
        if out.suffix.lower() != ".zip":
            out = out.with_name(out.name + ".zip")
        self.status.setText(f"exporting to {out} …")
        try:
            export_bioimageio(self.denoiser, out, sample=self._export_sample())
        except (UserError, OSError) as exc:
            C.report_error(exc, "exporting the model")
            self.status.setText(f"export failed: {exc}")
            return None
        self.status.setText(f"model exported to {out}")
        return out

    def _export_sample(self) -> Any:
        """The selected layer's stack when every axis holds a smallest tile, else None (shipped sample)."""
        from ..zoo import DEFAULT_MIN_SIZE

        layer = self.layer.value
        if layer is None:
            return None
        try:
            stack = C.layer_stack(layer)
        except UserError:
            return None
        shape = getattr(stack, "shape", ())
        return stack if len(shape) == 3 and min(shape) >= DEFAULT_MIN_SIZE else None

    def _ask_export(self) -> None:
        path = C.ask_save_path(self, "Export to BioImage Model Zoo", "bioimage.io packages (*.zip)")
        if path:
            self.export_model(path)

    def _on_model_changed(self, viewer: Any) -> None:
        if viewer is not C._unproxy(self.viewer):
            return
        entry = C.MODELS.get(viewer)
        if entry is not None:
            den, origin = entry
            self.denoiser = den
            self.model_label.setText(f"Model ({origin}): {den.describe()}")
            self.save_btn.setEnabled(not self.running)
            self.export_btn.setEnabled(not self.running)

    # -- napari hooks --------------------------------------------------------------------
    def reset_choices(self, *_: Any) -> None:
        """Called by napari when layers change (our combos also follow the viewer by themselves)."""
        self.layer._refresh()
        self.more_layers._refresh()

    def closeEvent(self, event: Any) -> None:  # noqa: N802 - Qt naming
        _settings.save_settings(SETTINGS_KEY, self.settings())
        self.shutdown()
        super().closeEvent(event)


def _warm_torch_imports() -> None:
    """Import what torch imports lazily on the first optimiser, here in the GUI thread.

    torch imports ``torch._dynamo`` the first time an optimiser is built; done for the first
    time inside a napari worker thread (while the GUI thread runs the event loop) that
    import was seen to fail with "'prims' object has no attribute 'sum'".
    """
    import torch

    torch.optim.Adam([torch.zeros(1, requires_grad=True)])


def _set_combo(combo: QComboBox, value: Any) -> None:
    if isinstance(value, str) and combo.findText(value) >= 0:
        combo.setCurrentText(value)


def _device_choices() -> list[str]:
    from ..runtime.device import available_devices

    return ["auto", *available_devices()]


def _preview_window(viewer: Any, layer: Any, n_frames: int) -> tuple[int, int]:
    """Preview frames around the frame the user is looking at (the first frames otherwise)."""
    try:
        world_t = viewer.dims.point[viewer.dims.ndim - layer.ndim]
        t = int(round((world_t - layer.translate[0]) / layer.scale[0]))
    except (IndexError, AttributeError, TypeError, ValueError):
        t = 0
    f0 = int(np.clip(t - PREVIEW_FRAMES // 2, 0, max(0, n_frames - PREVIEW_FRAMES)))
    return f0, min(n_frames, f0 + PREVIEW_FRAMES)

