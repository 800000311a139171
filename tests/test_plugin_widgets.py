"""Dock widgets through a real napari viewer (pytest-qt; Xvfb via pytest-xvfb).

Every test waits for its workers: a worker still running when a test ends aborts pytest.
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_unet_att import _napari as _common
from napari_unet_att._napari import DenoiseWidget, TrainWidget, denoise_selected_layer
from napari_unet_att._napari import denoise_dock as _denoise
from napari_unet_att.errors import UserError

PLUGIN = "napari-unet-att"
WAIT_MS = 60_000


def _tiny_train_settings(w: TrainWidget, steps: int = 3) -> None:
    w.patch_t.setValue(8)
    w.patch_xy.setValue(16)
    w.budget.setValue(steps)
    w.budget_unit.setCurrentText("steps")
    w.val_every.setValue(3)
    w.preview_every.setValue(3)
    w.device.setCurrentText("cpu")


def _wait_done(qtbot, worker) -> None:
    assert worker is not None
    qtbot.waitUntil(lambda: not _common.worker_busy(worker), timeout=WAIT_MS)


@pytest.fixture
def viewer(make_napari_viewer):
    return make_napari_viewer()


def test_widgets_dock_through_the_manifest(viewer):
    _, train = viewer.window.add_plugin_dock_widget(PLUGIN, "Train denoiser")
    _, den = viewer.window.add_plugin_dock_widget(PLUGIN, "Denoise and evaluate")
    assert isinstance(train, TrainWidget) and isinstance(den, DenoiseWidget)


def test_docks_open_as_tabs_without_sideways_scrolling(make_napari_viewer, qtbot):
    from qtpy.QtWidgets import QScrollArea

    viewer = make_napari_viewer(show=True)
    main = viewer.window._qt_window  # (test only) Qt's dock API needs the main window
    main.resize(1400, 900)
    viewer.add_image(np.zeros((3, 8, 8)), name="a recording with a long, descriptive file name " * 2)
    train_dock, train = viewer.window.add_plugin_dock_widget(PLUGIN, "Train denoiser")
    den_dock, den = viewer.window.add_plugin_dock_widget(PLUGIN, "Denoise and evaluate")
    qtbot.waitUntil(lambda: den_dock in main.tabifiedDockWidgets(train_dock), timeout=5000)
    qtbot.wait(50)
    for w in (train, den):  # long layer names or choices do not widen the dock over the canvas
        assert w.minimumSizeHint().width() < 560, (type(w).__name__, w.minimumSizeHint())
    assert train.height() > 500  # a tab gets the full height, not half of it
    for w in (train, den):
        scroll = w.findChild(QScrollArea)
        assert not scroll.horizontalScrollBar().isVisible()
        assert scroll.viewport().width() >= scroll.widget().minimumSizeHint().width()
        assert w.minimumSizeHint().height() >= min(_common.MIN_DOCK_HEIGHT, scroll.widget().sizeHint().height())


def test_layer_choices_follow_the_viewer(viewer, tiny_sim):
    w = TrainWidget(viewer)
    assert w.layer.combo.choices == ()
    a = viewer.add_image(tiny_sim.noisy, name="a")
    viewer.add_labels(np.zeros((32, 32), dtype=np.uint8), name="not an image")
    assert [c.name for c in w.layer.combo.choices] == ["a"]
    a.name = "renamed"
    assert w.layer.combo.native.itemText(0) == "renamed"
    viewer.layers.remove(a)
    assert w.layer.combo.choices == ()


def test_mode_check_shown_before_start(viewer, tiny_sim):
    w = TrainWidget(viewer)
    _tiny_train_settings(w)
    viewer.add_image(tiny_sim.noisy, name="movie")
    assert w.update_check() and w.check_label.text().startswith("✓")
    w.mode.setCurrentText("mirrored")
    assert not w.update_check()
    assert "2N" in w.check_label.text()  # says what is expected: rows == 2 x columns
    assert "temporal" in w.mode_help.text() or "backward" in w.mode_help.text()
    w.mode.setCurrentText("temporal")
    assert w.registration.isChecked() and w.train_config().registration == "auto"
    w.registration.setChecked(False)
    assert w.train_config().registration == "off"


def test_training_run_reports_progress_plots_and_previews(viewer, qtbot, tiny_sim, monkeypatch):
    monkeypatch.setattr("napari_unet_att._napari.train_dock.PREVIEW_MIN_STEPS", 1)
    monkeypatch.setattr("napari_unet_att._napari.train_dock._STEP_SECONDS", {})
    w = TrainWidget(viewer)
    _tiny_train_settings(w, steps=3)
    viewer.add_image(tiny_sim.noisy, name="movie", scale=(1, 0.5, 0.5))
    worker = w.start()
    assert worker is not None and not w.start_btn.isEnabled()
    _wait_done(qtbot, worker)
    steps = [e.step for e in w.events if e.step > 0]
    assert steps and steps[-1] == 3
    assert w.events[-1].val_loss is not None
    assert len(w._train_line.get_xdata()) == 3 and len(w._val_line.get_xdata()) >= 1
    assert "movie_preview" in viewer.layers
    assert tuple(viewer.layers["movie_preview"].scale) == (1, 0.5, 0.5)
    assert _common.MODELS.get(viewer)[0] is w.denoiser and w.denoiser.step == 3
    assert w.start_btn.isEnabled() and w.save_btn.isEnabled()
    assert "trained 3 steps" in w.model_label.text()
    assert "3 steps take about" in w.estimate_label.text()  # the run itself timed this machine
    assert w.init_pretrained.isChecked()  # the default: fine-tune the shipped generalist
    assert w.denoiser.provenance["parent"]["model"] == "generalist"


def test_training_from_random_weights_when_pretrained_is_off(viewer, qtbot, tiny_sim):
    w = TrainWidget(viewer)
    _tiny_train_settings(w, steps=2)
    w.preview_every.setValue(0)
    w.init_pretrained.setChecked(False)
    viewer.add_image(tiny_sim.noisy, name="movie")
    _wait_done(qtbot, w.start())
    assert w.denoiser.step == 2 and "parent" not in w.denoiser.provenance
    # no generalist is shipped for the paper preset: Start says so and starts nothing
    w.init_pretrained.setChecked(True)
    w.preset.setCurrentText("paper")
    assert w.start() is None


def test_training_time_is_estimated_and_the_first_steps_show_no_grey_preview(viewer, qtbot, tiny_sim, monkeypatch):
    monkeypatch.setattr("napari_unet_att._napari.train_dock._STEP_SECONDS", {})  # no timing from earlier tests
    w = TrainWidget(viewer)
    assert (w.budget.value(), w.budget_unit.currentText()) == (5, "minutes")  # a budget a user can read
    assert not w._ax.get_visible()  # no meaningless empty axes before training
    _tiny_train_settings(w, steps=3)
    if hasattr(w, "init_pretrained"):
        w.init_pretrained.setChecked(False)  # from random weights, where early previews are grey
    w.preview_every.setValue(1)
    viewer.add_image(tiny_sim.noisy, name="movie")
    assert "press Estimate time" in w.estimate_label.text()  # no number before this machine was timed
    _wait_done(qtbot, w.estimate())
    assert "3 steps take about" in w.estimate_label.text() and "/s" in w.estimate_label.text()
    w.budget_unit.setCurrentText("minutes")
    w.budget.setValue(2)  # the timing is reused: the estimate follows the budget at once
    assert w.estimate_label.text().startswith("2 min is about")
    w.budget_unit.setCurrentText("steps")
    w.budget.setValue(3)
    _wait_done(qtbot, w.start())
    assert [e.step for e in w.events if e.preview is not None]  # previews were computed...
    assert "movie_preview" not in viewer.layers  # ...but not shown after 3 steps from random weights
    assert w._ax.get_visible() and w.progress.value() == w.progress.maximum()
    w.plot.canvas.draw()
    ticks = [t for t in w._ax.get_xticks() if w._ax.get_xlim()[0] <= t <= w._ax.get_xlim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks)  # whole steps on the x axis


def test_training_on_several_layers(viewer, qtbot, tiny_sim):
    w = TrainWidget(viewer)
    _tiny_train_settings(w, steps=2)
    a = viewer.add_image(tiny_sim.noisy, name="rec1")
    b = viewer.add_image(tiny_sim.noisy[:, ::-1].copy(), name="rec2")
    viewer.add_image(tiny_sim.clean, name="unused")
    w.layer.value = a
    assert [c.name for c in w.more_layers.combo.choices] == ["rec2", "unused"]  # not the chosen layer again
    w.more_layers.combo.value = [b]
    viewer.add_image(tiny_sim.clean, name="added later")  # the list follows the viewer, the choice stays
    assert w.more_layers.value == [b]
    worker = w.start()
    assert [s.shape for s in w.trainer.stacks] == [a.data.shape, b.data.shape]
    _wait_done(qtbot, worker)
    assert w.denoiser.provenance["sources"] == ["rec1", "rec2"]
    assert "rec1 and 1 more layer" in w.model_label.text()


def test_training_can_be_stopped_and_keeps_the_model(viewer, qtbot, tiny_sim, tmp_path):
    w = TrainWidget(viewer)
    _tiny_train_settings(w, steps=100_000)
    w.preview_every.setValue(0)
    viewer.add_image(tiny_sim.noisy, name="movie")
    worker = w.start()
    qtbot.waitUntil(lambda: any(e.step >= 1 for e in w.events), timeout=WAIT_MS)
    w.stop()
    _wait_done(qtbot, worker)
    assert w.denoiser is not None and 1 <= w.denoiser.step < 100_000
    saved = w.save_model(tmp_path / "model")
    assert saved == tmp_path / "model.pt" and saved.exists()
    assert w.load_model(saved) is not None
    assert "loaded from model.pt" in w.model_label.text()


def test_training_error_is_reported_and_widget_recovers(viewer, qtbot, tiny_sim, tmp_path, monkeypatch):
    shown = []
    monkeypatch.setattr("napari.utils.notifications.show_error", shown.append)
    w = TrainWidget(viewer)
    _tiny_train_settings(w)
    viewer.add_image(tiny_sim.noisy, name="movie")
    w.resume.setText(str(tmp_path / "missing.pt"))
    worker = w.start()
    _wait_done(qtbot, worker)
    assert shown and "missing.pt" in shown[-1]
    assert w.start_btn.isEnabled() and not w.stop_btn.isEnabled()


def test_resume_refusals_name_the_docks_controls_not_cli_options(viewer, qtbot, tiny_sim, tiny_denoiser, tmp_path,
                                                                  monkeypatch):
    """The trainer's refusals to resume, shown in the dock, say what to do with the dock's controls."""
    from napari_unet_att._napari.wording import TRAIN_DOCK_WORDING
    from napari_unet_att.config import TrainConfig
    from napari_unet_att.model.checkpoint import save_checkpoint
    from napari_unet_att.training.resume import check_resume_request

    shown = []
    monkeypatch.setattr("napari.utils.notifications.show_error", shown.append)
    final = save_checkpoint(tmp_path / "final.pt", tiny_denoiser)  # no training state: cannot be resumed
    w = TrainWidget(viewer)
    _tiny_train_settings(w)
    w.init_pretrained.setChecked(False)
    viewer.add_image(tiny_sim.noisy, name="movie")
    w.resume.setText(str(final))
    _wait_done(qtbot, w.start())
    assert "holds no training state" in shown[-1]
    assert "load it with Load model…, clear Resume and tick 'start from the loaded model's weights'" in shown[-1]

    assert w.load_model(final) is not None
    w.init_from_loaded.setChecked(True)  # and Resume still set
    assert w.start() is None
    assert shown[-1].startswith("Resume continues a run and 'start from the loaded model's weights' starts a new one")

    with pytest.raises(UserError) as exc:  # the settings a resumed run fixes, as the dock names them
        check_resume_request(final, TrainConfig(mode="rowsplit").resolved(), TrainConfig(mode="mirrored", patch_xy=16),
                             {"mode", "preset", "patch_xy"}, [(24, 32, 32)], TRAIN_DOCK_WORDING)
    shown.append(str(exc.value))
    assert "Mode 'mirrored' (the run has 'rowsplit'), Patch y/x 16 (the run has" in shown[-1]
    assert "set them back to the run's values to resume it" in shown[-1]
    assert not any("--" in msg for msg in shown), shown


def test_the_docks_wording_names_controls_that_exist(viewer):
    """Each control the refusals name is on the training dock, under that name."""
    from napari_unet_att._napari import train_dock
    from napari_unet_att._napari.wording import TRAIN_DOCK_WORDING

    shown, row = set(), ""
    for f in (f for part in train_dock._fields() for f in part):
        row = f.label or (row if f.joined else "")
        shown |= {f.label, f.text, f"{row} {f.prefix}"}
    w = TrainWidget(viewer)
    shown.add(w.load_btn.text())
    words = TRAIN_DOCK_WORDING
    named = {*words.names.values(), words.resume, words.init}
    assert {name.strip("'") for name in named} <= shown
    assert "Load model…" in words.start_from_weights and "Load model…" in shown


def test_removing_the_input_layer_stops_training(viewer, qtbot, tiny_sim, monkeypatch):
    warnings_shown = []
    monkeypatch.setattr("napari.utils.notifications.show_warning", warnings_shown.append)
    w = TrainWidget(viewer)
    _tiny_train_settings(w, steps=100_000)
    w.preview_every.setValue(0)
    layer = viewer.add_image(tiny_sim.noisy, name="movie")
    worker = w.start()
    qtbot.waitUntil(lambda: any(e.step >= 1 for e in w.events), timeout=WAIT_MS)
    viewer.layers.remove(layer)
    _wait_done(qtbot, worker)
    assert w.denoiser.step < 100_000
    qtbot.waitUntil(lambda: any("was removed" in str(m) for m in warnings_shown), timeout=5000)  # the user is told


def test_closing_the_viewer_mid_training_leaves_no_thread_and_no_warning(make_napari_viewer, qtbot, tiny_sim,
                                                                        monkeypatch):
    import threading
    import time

    warnings_shown = []
    monkeypatch.setattr("napari.utils.notifications.show_warning", warnings_shown.append)
    viewer = make_napari_viewer()
    _, w = viewer.window.add_plugin_dock_widget(PLUGIN, "Train denoiser")
    _tiny_train_settings(w, steps=100_000)
    w.preview_every.setValue(0)
    viewer.add_image(tiny_sim.noisy, name="movie")
    worker = w.start()
    qtbot.waitUntil(lambda: any(e.step >= 1 for e in w.events), timeout=WAIT_MS)
    viewer.close()
    t0 = time.monotonic()
    _wait_done(qtbot, worker)
    assert not _common.worker_busy(worker)  # closing the viewer stops training

    def samplers() -> list:
        return [t for t in threading.enumerate() if t.name.startswith("unet-att-sampler")]

    qtbot.waitUntil(lambda: not samplers(), timeout=5000)
    assert time.monotonic() - t0 < 10
    qtbot.wait(100)  # a deferred warning would be shown by now
    assert not [m for m in warnings_shown if "removed" in str(m)], warnings_shown


def _denoised_moving(viewer, qtbot, denoiser, name: str, **motion) -> dict:
    """A simulated moving recording (5 photons, jitter of 1.5 px, ``motion``: simulate's size, line_motion...)
    denoised from the dock with ``denoiser``; returns the result layer's record of what was done, after checking
    that the result lines up with the input and keeps every frame's mean."""
    from napari_unet_att.evaluation.simulator import simulate

    sim = simulate(photons=5.0, motion_std=1.5, motion="jitter", seed=5, **motion)
    w = DenoiseWidget(viewer)
    w.device.setCurrentText("cpu")
    layer = viewer.add_image(sim.noisy, name=name)
    _common.MODELS.set(viewer, denoiser, "test model")
    w.model_choice.setCurrentText(_denoise.CURRENT_MODEL)
    _wait_done(qtbot, w.denoise(layer))
    out = viewer.layers[f"{name}_denoised"]
    assert out.data.shape == layer.data.shape
    np.testing.assert_allclose(np.asarray(out.data).mean(axis=(1, 2)), sim.noisy.mean(axis=(1, 2)), rtol=1e-4)
    return out.metadata["unet_att"]


def test_denoise_registers_a_moving_layer_and_lines_the_result_up(viewer, qtbot, tiny_denoiser):
    done = _denoised_moving(viewer, qtbot, tiny_denoiser, "moving", n_frames=40, size=64)
    assert "moved back" in done["registration"]  # what was done, kept with the result


def test_denoise_cuts_a_layer_moving_within_frames_into_strips(viewer, qtbot, tiny_denoiser):
    done = _denoised_moving(viewer, qtbot, tiny_denoiser, "shearing", n_frames=32, size=96, line_motion=True)
    assert done["strips"].startswith("3 strips of 48 lines")  # what was done, kept with the result


def test_denoise_adds_a_new_layer_and_never_overwrites(viewer, qtbot, tiny_sim, tiny_denoiser):
    w = DenoiseWidget(viewer)
    w.device.setCurrentText("cpu")
    w.tile_t.setValue(16)
    layer = viewer.add_image(tiny_sim.noisy, name="movie", scale=(1, 0.5, 0.5), translate=(0, 3, 4),
                             metadata={"origin": "test"})
    w.model_choice.setCurrentText(_denoise.CURRENT_MODEL)
    assert w.denoise() is None  # no current model yet: reported, nothing started
    _common.MODELS.set(viewer, tiny_denoiser, "test model")
    assert "test model" in w.model_label.text()
    _wait_done(qtbot, w.denoise())
    out = viewer.layers["movie_denoised"]
    assert out.data.shape == layer.data.shape and out.data.dtype == np.float32
    np.testing.assert_allclose(out.scale, layer.scale)
    np.testing.assert_allclose(out.translate, layer.translate)
    assert out.metadata["origin"] == "test" and "unet_att" in out.metadata
    assert out.metadata["unet_att"]["smoothing"].startswith(("Gaussian sigma", "none"))  # what was chosen
    assert out.metadata["unet_att"]["registration"].startswith("none (")  # a still simulation: not registered
    assert out.metadata["unet_att"]["keep_average"].startswith("not kept (too few frames")  # 100 needed
    assert out.metadata["unet_att"]["strips"].startswith("none (")  # (too short a frame to cut)
    w.output_dtype.setCurrentText("input")
    _wait_done(qtbot, w.denoise(layer))
    second = viewer.layers[-1]
    assert second is not out and second.name != "movie_denoised" and second.data.dtype == np.uint16
    assert viewer.layers["movie_denoised"] is out  # the first result is still there
    w.output_dtype.setCurrentText("auto")  # the tiny simulation's noise is too fine for whole counts: float32
    _wait_done(qtbot, w.denoise(layer))
    assert viewer.layers[-1].data.dtype == np.float32
    assert viewer.layers[-1].metadata["unet_att"]["output_dtype"].startswith("float32, not the input's uint16")
    assert w.smoothing.isChecked() and w.infer_config().smoothing == "auto"
    w.smoothing.setChecked(False)
    assert w.infer_config().smoothing == "off"
    assert w.registration.isChecked() and w.infer_config().registration == "auto"
    w.registration.setChecked(False)
    assert w.infer_config().registration == "off"
    assert w.keep_average.isChecked() and w.infer_config().keep_average == "auto"
    w.keep_average.setChecked(False)
    assert w.infer_config().keep_average == "off"
    assert w.strips.isChecked() and w.infer_config().strips == "auto"
    w.strips.setChecked(False)
    assert w.infer_config().strips == "off"
    assert w.line_phase.isChecked() and w.infer_config().line_phase == "auto"
    w.line_phase.setChecked(False)
    assert w.infer_config().line_phase == "off"
    w.tta.setCurrentText("2")
    assert w.infer_config().tta == 2
    _wait_done(qtbot, w.denoise(layer))
    flipped = viewer.layers[-1]
    assert flipped is not second and flipped.data.shape == layer.data.shape
    assert not np.array_equal(np.asarray(flipped.data), np.asarray(second.data))  # the flips were averaged


def test_denoise_can_stream_to_a_file(viewer, qtbot, tiny_sim, tiny_denoiser, tmp_path):
    w = DenoiseWidget(viewer)
    w.device.setCurrentText("cpu")
    _common.MODELS.set(viewer, tiny_denoiser, "test model")
    viewer.add_image(tiny_sim.noisy, name="movie")
    w.stream.setChecked(True)
    w.out_path.setText(str(tmp_path / "movie_dn.tif"))
    _wait_done(qtbot, w.denoise())
    assert (tmp_path / "movie_dn.tif").exists()
    out = viewer.layers["movie_denoised"]
    assert out.data.shape == tiny_sim.noisy.shape
    # opened lazily (memory map, dask or io's own lazy TIFF array), never as an in-RAM numpy array
    assert isinstance(out.data, np.memmap) or type(out.data) is not np.ndarray


def test_evaluate_adds_plots_and_metrics(viewer, qtbot, tiny_sim, tiny_denoiser):
    w = DenoiseWidget(viewer)
    w.device.setCurrentText("cpu")
    _common.MODELS.set(viewer, tiny_denoiser, "test model")
    viewer.add_image(tiny_sim.noisy, name="movie")
    truth = viewer.add_image(tiny_sim.clean, name="truth")
    labels = np.zeros((32, 32), dtype=np.int32)
    for i, m in enumerate(tiny_sim.masks, start=1):
        labels[m & (labels == 0)] = i
    rois = viewer.add_labels(labels, name="rois")
    w.layer.value = viewer.layers["movie"]
    _wait_done(qtbot, w.denoise())
    w.eval_reference.value = truth
    w.eval_rois.value = rois
    assert w.eval_denoised.value.name == "movie_denoised" and w.eval_raw.value.name == "movie"
    n_layers = len(viewer.layers)
    _wait_done(qtbot, w.evaluate())
    meta = viewer.layers["movie_denoised"].metadata["metrics"]
    assert len(meta["denoised"]["per_frame"]["psnr"]) == 24 and "psnr" in meta["raw"]
    # By default the plots live in the dock only: the viewer keeps showing the data.
    assert len(viewer.layers) == n_layers and w.plot.figure.axes and w.trace_plot.figure.axes
    assert "PSNR (dB" in w.metrics_label.text() and "SSIM (0-1)" in w.metrics_label.text()  # with units
    for plot in (w.plot, w.trace_plot):  # legends drawn whole inside the figure
        plot.canvas.draw()
        (legend,) = plot.figure.legends
        box, fig_box = legend.get_window_extent(), plot.figure.bbox
        assert fig_box.x0 <= box.x0 and box.x1 <= fig_box.x1 and fig_box.y0 <= box.y0 and box.y1 <= fig_box.y1
    assert "intensity" in w.trace_plot.figure.axes[0].get_ylabel()
    w.push_plots.setChecked(True)
    _wait_done(qtbot, w.evaluate())
    plot = viewer.layers["movie_denoised_metrics_plot"]
    assert plot.rgb and plot.data.ndim == 3 and plot.data.shape[2] == 3 and plot.data.std() > 0
    traces = viewer.layers["movie_denoised_traces_plot"]
    data_lo, data_hi = viewer.layers["movie_denoised"].extent.world[:, -2:]
    for layer in (plot, traces):  # beside the data (to its right), never on top of it
        lo, hi = layer.extent.world
        assert lo[1] > data_hi[1] and lo[0] >= data_lo[0] - 1
    np.testing.assert_allclose(plot.extent.world[1, 0] - plot.extent.world[0, 0], data_hi[0] - data_lo[0], rtol=0.1)
    assert traces.extent.world[0, 0] > plot.extent.world[1, 0]  # stacked below the metrics plot


def test_evaluate_without_reference_uses_reference_free_measures(viewer, qtbot, tiny_sim):
    w = DenoiseWidget(viewer)
    viewer.add_image(tiny_sim.noisy.astype(np.float32), name="raw")
    viewer.add_image(tiny_sim.clean, name="smooth")
    w.eval_denoised.value = viewer.layers["smooth"]
    w.eval_raw.value = viewer.layers["raw"]
    _wait_done(qtbot, w.evaluate())
    m = viewer.layers["smooth"].metadata["metrics"]
    assert "psnr" not in m["denoised"] and m["denoised"]["corr_with_mean"] > m["raw"]["corr_with_mean"]
    assert "smooth_metrics_plot" not in viewer.layers and w.plot.figure.axes


def test_menu_command_denoises_the_selected_layer(viewer, qtbot, tiny_sim, tiny_denoiser):
    _common.MODELS.set(viewer, tiny_denoiser, "test model")
    layer = viewer.add_image(tiny_sim.noisy, name="sel")
    viewer.layers.selection.active = layer
    worker = denoise_selected_layer(viewer)
    _wait_done(qtbot, worker)
    assert "sel_denoised" in viewer.layers


def test_settings_are_remembered(viewer, qtbot):
    w = TrainWidget(viewer)
    w.mode.setCurrentText("rowsplit")
    w.budget.setValue(123)
    w.close()
    w2 = TrainWidget(viewer)
    assert w2.mode.currentText() == "rowsplit" and w2.budget.value() == 123


def test_denoise_dock_defaults_to_the_pretrained_generalist(viewer, qtbot, tiny_sim):
    w = DenoiseWidget(viewer)
    w.device.setCurrentText("cpu")
    assert _denoise.MODEL_CHOICES[w.model_choice.currentText()] == "temporal"  # no training needed
    assert "pretrained" in w.model_label.text().lower()
    viewer.add_image(tiny_sim.noisy, name="movie")
    _wait_done(qtbot, w.denoise())
    out = np.asarray(viewer.layers["movie_denoised"].data)
    raw = np.asarray(tiny_sim.noisy, np.float32)
    assert out.shape == raw.shape and np.isfinite(out).all()
    np.testing.assert_allclose(out.mean(axis=(1, 2)), raw.mean(axis=(1, 2)), rtol=1e-3)  # brightness kept
    assert out.std() < raw.std()  # it denoised
    assert w.denoiser.provenance.get("normalization") == "input"


def test_denoise_dock_merges_a_bidirectional_scan_onto_the_layer(viewer, qtbot, tmp_path):
    import tifffile

    from napari_unet_att.evaluation.simulator import simulate
    from napari_unet_att.modes import merge_directions

    sim = simulate(n_frames=24, size=32, photons=3.0, bidirectional=True, seed=3)  # (24, 64, 32) raw lines
    w = DenoiseWidget(viewer)
    w.device.setCurrentText("cpu")
    w.model_choice.setCurrentText(next(k for k, v in _denoise.MODEL_CHOICES.items() if v == "mirrored"))
    layer = viewer.add_image(sim.noisy, name="scan", scale=(1, 0.5, 1), translate=(0, 10, 0))
    for output, shape in (("interleaved", sim.noisy.shape), ("merged", sim.clean.shape)):
        w.mirrored_output.setCurrentText(output)
        _wait_done(qtbot, w.denoise(layer))
        out = viewer.layers[-1]
        assert out.data.shape == shape, output
    np.testing.assert_allclose(out.scale, (1, 1, 1))  # each physical line two of the layer's rows, lying on them
    np.testing.assert_allclose(out.translate, (0, 10.25, 0))
    np.testing.assert_allclose(np.asarray(out.data).mean(axis=(1, 2)), merge_directions(sim.noisy).mean(axis=(1, 2)),
                               rtol=1e-3)
    w.stream.setChecked(True)  # streamed to a file: its shape (and the disk check's size) the merged frames'
    w.out_path.setText(str(tmp_path / "merged.tif"))
    _wait_done(qtbot, w.denoise(layer))
    assert tifffile.imread(tmp_path / "merged.tif").shape == sim.clean.shape


def test_denoise_progress_reads_as_a_share_with_the_networks_speed(viewer):
    from napari_unet_att.config import InferEvent

    w = DenoiseWidget(viewer)
    w._on_event(InferEvent(done=400, total=800))  # a pass of the time averages over the frames: no speed
    assert w.status.text() == "50%"
    w._on_event(InferEvent(done=3, total=6, frames_per_s=59.9, eta_s=7.0))  # the network's tiles
    assert w.status.text() == "50%, 59.9 frames/s, ETA 0:07"


def test_a_stack_whose_header_calls_its_frames_channels_trains_and_streams(viewer, qtbot, tiny_sim, tiny_denoiser,
                                                                          tmp_path):
    """The docks take the axes from the layer as napari shows it, never from a file's labels."""
    import tifffile

    path = tmp_path / "mislabelled.tif"
    tifffile.imwrite(path, tiny_sim.noisy, imagej=True, metadata={"axes": "CYX"})  # 24 frames called channels
    (layer,) = viewer.open(str(path), plugin=PLUGIN)
    assert layer.data.shape == tiny_sim.noisy.shape
    train = TrainWidget(viewer)
    _tiny_train_settings(train)
    assert train.update_check(), train.check_label.text()
    den = DenoiseWidget(viewer)
    den.device.setCurrentText("cpu")
    if hasattr(den, "model_choice"):
        den.model_choice.setCurrentText(_denoise.CURRENT_MODEL)
    _common.MODELS.set(viewer, tiny_denoiser, "test model")
    den.stream.setChecked(True)
    den.out_path.setText(str(tmp_path / "out.tif"))
    _wait_done(qtbot, den.denoise(layer))
    assert tifffile.imread(tmp_path / "out.tif").shape == tiny_sim.noisy.shape


def test_a_folder_of_tiffs_opens_as_one_layer_each(viewer, tmp_path, tiny_sim):
    import tifffile

    tifffile.imwrite(tmp_path / "rec1.tif", tiny_sim.noisy)
    tifffile.imwrite(tmp_path / "rec2.tiff", tiny_sim.noisy[:, ::-1])
    (tmp_path / "notes.txt").write_text("not a recording")
    layers = viewer.open(str(tmp_path), plugin=PLUGIN)
    assert [layer.name for layer in layers] == ["rec1", "rec2"]
    assert all(layer.data.shape == tiny_sim.noisy.shape for layer in layers)
