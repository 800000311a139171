"""The docks' Axes field (the CLI's ``--axes``): layers whose shape misleads the axis guess (issue 15).

Under Xvfb (pytest-xvfb), through a real napari viewer, as tests/test_plugin_widgets.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_unet_att import _napari as _common
from napari_unet_att._napari import DenoiseWidget, TrainWidget
from napari_unet_att._napari import denoise_dock as _denoise
from napari_unet_att._napari.layers import layer_stack, streamable_source

PLUGIN = "napari-unet-att"
WAIT_MS = 60_000


@pytest.fixture
def viewer(make_napari_viewer):
    return make_napari_viewer()


@pytest.fixture
def notes(monkeypatch) -> list[str]:
    """Every error notification the docks send."""
    import napari.utils.notifications as nn

    shown: list[str] = []
    monkeypatch.setattr(nn, "show_error", lambda msg: shown.append(str(msg)))
    return shown


def _tiny_train_settings(w: TrainWidget, steps: int = 2) -> None:
    w.patch_t.setValue(8)
    w.patch_xy.setValue(16)
    w.budget.setValue(steps)
    w.budget_unit.setCurrentText("steps")
    w.val_every.setValue(2)
    w.preview_every.setValue(2)
    w.device.setCurrentText("cpu")
    w.init_pretrained.setChecked(False)


def _current_model_dock(viewer, denoiser) -> DenoiseWidget:
    den = DenoiseWidget(viewer)
    den.device.setCurrentText("cpu")
    den.model_choice.setCurrentText(_denoise.CURRENT_MODEL)
    _common.MODELS.set(viewer, denoiser, "test model")
    return den


def _wait_done(qtbot, worker) -> None:
    assert worker is not None
    qtbot.waitUntil(lambda: not _common.worker_busy(worker), timeout=WAIT_MS)


def _frames_as_channels(tmp_path, frames: np.ndarray) -> np.ndarray:
    """An ImageJ file whose header calls its frames channels, as a reader that keeps every axis of the
    header shows it: ``(T, Z, C, Y, X) = (1, 1, frames, Y, X)``."""
    import tifffile

    path = tmp_path / "frames_as_channels.tif"
    tifffile.imwrite(path, frames, imagej=True, metadata={"axes": "CYX"})
    with tifffile.TiffFile(path) as tif:
        assert tif.imagej_metadata["channels"] == len(frames)
        return tif.series[0].asarray(squeeze=False)[..., 0]  # TZCYXS -> TZCYX


def test_a_layer_whose_frames_are_labelled_channels_is_refused_then_trained_with_axes(viewer, qtbot, tiny_sim,
                                                                                     tmp_path, notes):
    data = _frames_as_channels(tmp_path, tiny_sim.noisy)
    assert data.shape == (1, 1, 24, 32, 32)
    a = viewer.add_image(data, name="a")
    b = viewer.add_image(data[..., ::-1, :].copy(), name="b")
    w = TrainWidget(viewer)
    _tiny_train_settings(w)
    w.layer.value = a
    w.more_layers.combo.value = [b]
    assert w.axes.text() == ""  # auto, today's behaviour: refused, and the message says what to set
    assert not w.update_check()
    refusal = w.check_label.text()
    assert "24 channels; choose one with channel = 0..23" in refusal
    assert "Axes" in refusal and "'CZTYX'" in refusal
    assert w.start() is None and "Axes" in notes[-1] and "'CZTYX'" in notes[-1]

    w.axes.setText("CZTYX")  # the check follows the field at once
    assert w.update_check(), w.check_label.text()
    assert "24 x 32 x 32" in w.check_label.text()
    worker = w.start()
    assert [s.shape for s in w.trainer.stacks] == [(24, 32, 32), (24, 32, 32)]
    _wait_done(qtbot, worker)
    assert w.denoiser is not None and w.denoiser.step == 2

    w.axes.setText("TX")  # letters that do not fit: the engine's message, as a notification
    assert not w.update_check() and "2 letters for 5 axes" in w.check_label.text()
    assert w.start() is None and "2 letters for 5 axes" in notes[-1]


def test_denoise_reads_a_layer_with_the_axes_given(viewer, qtbot, tiny_sim, tiny_denoiser, tmp_path, notes):
    data = _frames_as_channels(tmp_path, tiny_sim.noisy)
    layer = viewer.add_image(data, name="movie")
    den = _current_model_dock(viewer, tiny_denoiser)
    assert den.denoise(layer) is None
    assert "24 channels" in notes[-1] and "set Axes to 'CZTYX'" in notes[-1]
    assert "movie_denoised" not in viewer.layers
    den.axes.setText("cztyx")  # any case, as the CLI
    _wait_done(qtbot, den.denoise(layer))
    out = np.asarray(viewer.layers["movie_denoised"].data)
    assert out.shape == (24, 32, 32) and np.isfinite(out).all()


def test_a_stack_stored_time_last_is_read_with_yxt_and_never_streamed_from_the_file(viewer, qtbot, tiny_sim,
                                                                                   tiny_denoiser, tmp_path):
    """A (Y, X, T) cube has the shape the file gives, untransposed: streaming must not read the file."""
    import tifffile

    frames = np.asarray(tiny_sim.noisy[:, :24, :24])  # 24 frames of 24 x 24: a cube
    path = tmp_path / "time_last.tif"
    tifffile.imwrite(path, np.moveaxis(frames, 0, -1))  # (Y, X, T), as some pipelines save
    (layer,) = viewer.open(str(path), plugin=PLUGIN)
    assert streamable_source(layer, layer_stack(layer)) == path  # auto: the file gives the layer's stack
    stack = layer_stack(layer, "YXT")
    np.testing.assert_array_equal(np.asarray(stack), frames)
    assert streamable_source(layer, stack) is None  # same shape, other frames: stream the reordered array

    den = _current_model_dock(viewer, tiny_denoiser)
    den.axes.setText("YXT")
    _wait_done(qtbot, den.denoise(layer))
    in_memory = np.asarray(viewer.layers["time_last_denoised"].data)
    den.stream.setChecked(True)
    den.out_path.setText(str(tmp_path / "out.tif"))
    _wait_done(qtbot, den.denoise(layer))
    streamed = tifffile.imread(tmp_path / "out.tif")
    assert streamed.shape == frames.shape
    np.testing.assert_allclose(streamed, in_memory, rtol=1e-4, atol=1e-3)


def test_a_mislabelled_imagej_file_opened_by_the_reader_takes_axes_tyx(viewer, qtbot, tiny_sim, tmp_path):
    """The reader shows a file that calls its frames channels as stored, (T, Y, X): auto and TYX both read it."""
    import tifffile

    path = tmp_path / "mislabelled.tif"
    tifffile.imwrite(path, tiny_sim.noisy, imagej=True, metadata={"axes": "CYX"})
    (layer,) = viewer.open(str(path), plugin=PLUGIN)
    w = TrainWidget(viewer)
    _tiny_train_settings(w)
    w.layer.value = layer
    for axes in ("", "TYX", "auto"):
        w.axes.setText(axes)
        assert w.update_check(), (axes, w.check_label.text())
    w.axes.setText("YXT")  # another reading of the same layer: the check shows its shape
    assert w.update_check() and "32 x 24 x 32" in w.check_label.text()


def test_the_axes_field_is_remembered(viewer, qtbot):
    for dock in (TrainWidget, DenoiseWidget):
        w = dock(viewer)
        w.axes.setText("CZTYX")
        w.close()
        assert dock(viewer).axes.text() == "CZTYX", dock.__name__
