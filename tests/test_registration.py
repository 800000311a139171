"""Registering fast-moving recordings before denoising (inference.registration) and moving the result back."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch
from scipy import ndimage

from _models import Identity
from _models import make as model
from napari_unet_att import inference as infer
from napari_unet_att.config import InferConfig, run_to_end
from napari_unet_att.errors import InputError
from napari_unet_att.inference import registration as rg
from napari_unet_att.inference import tissue
from napari_unet_att.model.denoiser import Denoiser


class TimeMean(torch.nn.Module):
    """Every frame of a tile replaced by the tile's mean over time (a caricature of a temporal denoiser)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=2, keepdim=True).expand_as(x).clone()


def scene(rng: np.random.Generator, size: int, n: int = 30) -> np.ndarray:
    img = np.zeros((size, size), np.float32)
    img[rng.integers(0, size, n), rng.integers(0, size, n)] = 600.0
    return ndimage.gaussian_filter(img, 2.0) + 5.0


def moving(rng: np.random.Generator, shifts: np.ndarray, size: int = 48, noisy: bool = False) -> np.ndarray:
    """A still scene whose content is displaced by ``shifts[t]`` in frame ``t`` (cropped from a larger canvas)."""
    big = scene(rng, size + 16)
    frames = np.stack([ndimage.shift(big, s, order=1, mode="nearest")[8:-8, 8:-8] for s in shifts])
    return (rng.poisson(frames) if noisy else frames).astype(np.float32)


def jitter(rng: np.random.Generator, t: int, std: float = 1.5) -> np.ndarray:
    return np.rint(rng.normal(0, std, (t, 2)))


def test_shifts_are_estimated_from_noisy_frames(rng):
    true = rng.normal(0, 1.5, (64, 2))
    est, noise = run_to_end(rg.estimate_shifts(moving(rng, true, noisy=True)))
    est -= np.median(est - true, axis=0)  # relative to an arbitrary template position
    error = np.sqrt(np.mean(np.sum((est - true) ** 2, axis=1)))
    assert error < 0.3 and 0 < noise < error


def test_every_frames_peak_is_found_at_once_to_a_sub_pixel():
    corr = np.zeros((3, 16, 12), np.float32)
    corr[0, 2:5, 5] = 0.5, 1.0, 0.0  # (a parabola through the three: its top a sixth of a pixel up)
    corr[1, 15, 0] = 1.0  # (the last row is one pixel up, circularly)
    np.testing.assert_allclose(rg._peaks(corr), [[3 - 1 / 6, 5], [-1, 0], [0, 0]], atol=1e-6)
    assert rg._peaks(corr[:0]).shape == (0, 2)


def test_the_estimates_error_is_measured_on_the_frames():
    from napari_unet_att.evaluation.simulator import simulate

    for photons in (0.3, 3.0):
        sim = simulate(n_frames=64, size=64, photons=photons, motion_std=1.0, motion="jitter", seed=2)
        est, noise = run_to_end(rg.estimate_shifts(sim.noisy))
        est -= np.nanmedian(est - sim.shifts, axis=0)
        error = np.sqrt(np.nanmean(np.sum((est - sim.shifts) ** 2, axis=1)))
        assert 0.5 * error < noise < 1.5 * error, (photons, error, noise)  # measured on the frames' halves


@pytest.mark.parametrize("seed", [0, 1])
def test_a_cell_lighting_up_is_not_taken_for_motion(seed):
    # A still field of view; a dim cell near the edge lights up 16-fold for a quarter of the frames. Correlated by
    # brightness, that cell outweighed everything else and paired with the template's brightest cell 24 px away.
    rng = np.random.default_rng(seed)
    spot = np.zeros((2, 64, 64), np.float32)
    spot[0, 54, 44] = spot[1, 30, 20] = 1.0
    dim, bright = (s / s.max() for s in ndimage.gaussian_filter(spot, (0, 3.0, 3.0)))
    still = scene(rng, 64, 20) + 300 * bright
    frames = np.stack([still + (4800 if 40 <= t < 64 else 30) * dim for t in range(96)])
    est, noise = run_to_end(rg.estimate_shifts(rng.poisson(frames).astype(np.float32)))
    assert np.nanmax(np.abs(est - np.nanmedian(est, axis=0))) < 1.0
    assert not rg.choose_registration(est, noise).active


def test_only_a_moving_field_of_view_is_registered(rng):
    still = rg.choose_registration(rng.normal(0, 0.1, (64, 2)) + 7.0)  # estimation noise about any position
    assert not still.active and "still" in still.reason
    drift = np.stack([np.linspace(-3, 3, 64), np.linspace(2, -2, 64)], axis=1)  # 6 px, smoothly
    slow = rg.choose_registration(drift)
    assert not slow.active and "slow" in slow.reason  # the network follows it; whole pixels would make jumps
    for shifts in (jitter(rng, 64), drift + jitter(rng, 64, 0.6)):
        reg = rg.choose_registration(shifts + 0.2)
        assert reg.active and reg.motion_px > rg.MIN_MOTION
        rest = shifts - reg.moves  # what the moves leave: under half a pixel from one common position
        assert np.ptp(rest, axis=0).max() <= 1.0
        assert np.all(np.median(reg.moves, axis=0) == 0)  # the typical frame stays put
    assert not rg.choose_registration(np.full((64, 2), np.nan)).active
    # shifts that cannot be measured to whole pixels are not rounded; noise is taken off the motion
    assert "cannot be measured" in rg.choose_registration(jitter(rng, 64), noise=0.5).reason
    assert not rg.choose_registration(rng.normal(0, 0.3, (64, 2)), noise=0.29).active


def test_a_slow_recording_moves_only_the_frames_that_jump(rng):
    """A twitch in a still or slowly drifting recording: too little motion from frame to frame to register the
    whole (the drift is left to the network), but the frames of the jump are moved back among their neighbours."""
    drift = np.stack([np.linspace(-2, 2, 400), np.zeros(400)], axis=1)
    shifts = drift + rng.normal(0, 0.1, (400, 2))
    shifts[200:207] += (4.2, -3.1)  # 7 frames away, then back
    shifts[50] = np.nan  # a frame not matched stays where it is
    reg = rg.choose_registration(shifts, noise=0.1)
    assert reg.active and "slow" in reg.reason and "jumped" in reg.reason
    moved_frames = np.flatnonzero(np.any(reg.moves != 0, axis=1))
    assert moved_frames.tolist() == list(range(200, 207))
    assert np.all(reg.moves[200:207] == (4, -3))
    assert "2% of the frames moved" in reg.describe()
    # the smoothing then follows what the moves leave: the drift
    assert np.abs((reg.shifts - reg.moves)[200:207] - (reg.shifts[199] + reg.shifts[207]) / 2).max() < 0.7
    # a drift alone, or a jump within the estimates' error, moves nothing
    assert not rg.choose_registration(drift + rng.normal(0, 0.1, (400, 2)), noise=0.1).active
    small = drift.copy()
    small[200:207, 0] += 2.0
    assert not rg.choose_registration(small, noise=0.1).active
    # unmatched frames do not drag the running median: a drift with every other frame of its end unmatched
    gappy = drift + rng.normal(0, 0.1, (400, 2))
    gappy[300::2] = np.nan
    assert not rg.choose_registration(gappy, noise=0.1).active
    # a still recording's twitch: its frames moved back, the rest still (no motion for the smoothing to follow)
    still = rng.normal(0, 0.05, (400, 2))
    still[100:103] += (3.0, 0.0)
    reg = rg.choose_registration(still, noise=0.05)
    assert reg.active and "still" in reg.reason and "jumped" in reg.reason and reg.shifts is None
    assert np.flatnonzero(np.any(reg.moves != 0, axis=1)).tolist() == [100, 101, 102]


def reference_canvas(stack: np.ndarray, reg: rg.Registration) -> np.ndarray:
    """Every frame placed at its offset on the canvas, margins the nearest edge pixel (np.pad 'edge')."""
    my, mx = reg.margin
    out = []
    for f, (oy, ox) in zip(stack, reg.offsets, strict=True):
        out.append(np.pad(f, ((oy, my - oy), (ox, mx - ox)), mode="edge"))
    return np.stack(out)


def test_registered_stack_reads_any_region_like_the_whole_canvas(rng):
    stack = rng.normal(size=(20, 12, 10)).astype(np.float32)
    reg = rg.Registration(rng.integers(-3, 4, (20, 2)), 1.0, "test")
    canvas = rg.RegisteredStack(stack, reg)
    whole = reference_canvas(stack, reg)
    assert canvas.shape == whole.shape and canvas.dtype == stack.dtype
    for key in [(slice(None),), (slice(3, 9), slice(0, 5), slice(2, 16)), (slice(18, 30), slice(4, 17)),
                (5,), (slice(0, 0),), (slice(2, 6), slice(None), slice(15, 16))]:
        np.testing.assert_array_equal(canvas[key], whole[key])


def test_registered_frames_are_still_and_the_result_moves_back_exactly(rng):
    shifts = jitter(rng, 48)
    stack = moving(rng, shifts)
    reg = rg.choose_registration(*run_to_end(rg.estimate_shifts(stack)))
    assert reg.active
    canvas = np.asarray(rg.RegisteredStack(stack, reg)[:])
    m = int(np.abs(shifts).max()) * 2 + 1  # away from the filled margins, every frame shows the same content
    inner = canvas[:, m:-m, m:-m]
    assert np.abs(inner - inner[0]).max() < 1e-3 * inner.max()
    # an identity model through the whole job, tiled: the output is the input, pixel for pixel
    for cfg in (InferConfig(device="cpu", smoothing="off"),
                InferConfig(device="cpu", smoothing="off", tile_t=8, max_tile_xy=24, overlap=4)):
        events = []
        out = infer.denoise(stack, model(Identity()), cfg, progress=events.append)
        np.testing.assert_allclose(out, stack, rtol=1e-5, atol=1e-3)
        said = [e.message for e in events if e.message.startswith(rg.SAID)]
        assert len(said) == 1 and "moved back" in said[0]


def test_registration_lets_a_temporal_model_use_the_frames_around(rng):
    shifts = jitter(rng, 40)
    clean = moving(rng, shifts)
    noisy = rng.poisson(clean).astype(np.float32)
    errors = {}
    for setting in ("off", "auto"):
        out = infer.denoise(noisy, model(TimeMean()), InferConfig(device="cpu", smoothing="off",
                                                                  registration=setting))
        errors[setting] = float(np.mean((out - clean) ** 2))
        np.testing.assert_allclose(out.mean(axis=(1, 2)), noisy.mean(axis=(1, 2)), rtol=1e-5)  # means kept
    assert errors["auto"] < 0.5 * errors["off"]


def test_still_recordings_and_registration_off_are_denoised_as_before(rng):
    still = np.repeat(scene(rng, 40)[None], 32, axis=0)
    noisy = rng.poisson(still).astype(np.float32)
    for stack in (noisy, moving(rng, jitter(rng, 32))):
        events = []
        out = infer.denoise(stack, model(TimeMean()), InferConfig(device="cpu", smoothing="off", registration="off",
                                                                  give_back="off"), progress=events.append)
        assert not any(e.message.startswith(rg.SAID) for e in events)
        plain = stack.mean(axis=0, keepdims=True) + (stack.mean(axis=(1, 2)) - stack.mean())[:, None, None]
        np.testing.assert_allclose(out, plain, rtol=1e-4, atol=1e-2)
    events = []
    infer.denoise(noisy, model(TimeMean()), InferConfig(device="cpu", smoothing="off"), progress=events.append)
    said = [e.message for e in events if e.message.startswith(rg.SAID)]
    assert len(said) == 1 and said[0].startswith(f"{rg.SAID}none (still: 0.0")


def test_short_stacks_are_not_registered(rng):
    events = []
    infer.denoise(moving(rng, jitter(rng, 10)), model(Identity()), InferConfig(device="cpu"), progress=events.append)
    assert any("too few frames" in e.message for e in events)


def test_tiny_frames_are_not_registered(rng):
    """2 x 2 frames of noise once "matched" in 75% of frames and were moved (and their output then smoothed)."""
    x = rng.integers(0, 4096, (16, 2, 2)).astype(np.uint16)
    events = []
    out = infer.denoise(x, model(Identity()), InferConfig(device="cpu", smoothing="off"), progress=events.append)
    assert any(e.message.startswith(f"{rg.SAID}none (frames too small (2 px") for e in events)
    np.testing.assert_allclose(out, x, atol=1e-2)


def bidirectional(frames: np.ndarray, flip: bool) -> np.ndarray:
    """A ``(T, 2N, N)`` scan of physical frames ``(T, N, N)``: each line twice, the backward copy a little
    different (its own noise) and x-reversed on disk when ``flip``."""
    out = np.repeat(frames, 2, axis=1)
    out[:, 1::2] *= 1.05
    if flip:
        out[:, 1::2] = out[:, 1::2, ::-1]
    return out


@pytest.mark.parametrize("flip", [False, True])
def test_bidirectional_canvas_moves_lines_by_direction(rng, flip):
    stack = bidirectional(rng.normal(size=(12, 10, 10)).astype(np.float32), flip)
    reg = rg.Registration(rng.integers(-2, 3, (12, 2)), 1.0, "test")
    canvas = rg.RegisteredStack(stack, reg, bidirectional=True, flip=flip)
    # the reference: each direction in physical orientation, placed like a plain frame, interleaved back
    square = rg.Registration(np.vstack([reg.moves, reg.moves.max(axis=0) - reg.margin.max()]), 1.0, "test")
    fwd = reference_canvas(np.concatenate([stack[:, 0::2], stack[:1, 0::2]]), square)[:-1]  # margins made equal
    back = reference_canvas(np.concatenate([stack[:, 1::2], stack[:1, 1::2]])[..., ::-1 if flip else 1], square)[:-1]
    want = np.empty((12, 2 * fwd.shape[1], fwd.shape[2]), np.float32)
    want[:, 0::2], want[:, 1::2] = fwd, back[..., ::-1] if flip else back
    assert canvas.shape == want.shape
    for key in [(slice(None),), (slice(2, 7), slice(3, 15), slice(1, 9)), (4, slice(0, 1))]:
        np.testing.assert_array_equal(canvas[key], want[key])


@pytest.mark.parametrize("flip", [False, True])
def test_mirrored_models_register_bidirectional_scans_and_move_them_back(rng, flip):
    stack = bidirectional(moving(rng, jitter(rng, 40), size=32), flip)
    den = model(Identity(), "mirrored")
    den.flip_backward = flip
    for output, want in (("interleaved", stack), ("merged", None)):
        events = []
        out = infer.denoise(stack, den, InferConfig(device="cpu", smoothing="off", mirrored_output=output),
                            progress=events.append)
        assert any(e.message.startswith(rg.SAID) and "moved back" in e.message for e in events)
        if want is None:  # both directions of each line averaged, in the physical orientation
            back = stack[:, 1::2, ::-1] if flip else stack[:, 1::2]
            want = 0.5 * (stack[:, 0::2] + back)
        np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("scale", [1e-30, 1e30])
def test_any_intensity_scale_registers_the_same(rng, scale):
    stack = moving(rng, jitter(rng, 32))
    base = rg.choose_registration(*run_to_end(rg.estimate_shifts(stack)))
    scaled = rg.choose_registration(*run_to_end(rg.estimate_shifts(stack * np.float32(scale))))
    np.testing.assert_array_equal(scaled.moves, base.moves)


def test_registration_setting_is_checked():
    with pytest.raises(InputError, match="registration"):
        InferConfig(registration="yes")


def test_file_output_in_the_input_dtype_is_moved_back(tmp_path, rng):
    stack = np.clip(moving(rng, jitter(rng, 40)), 0, 65535).astype(np.uint16)
    src, dst = tmp_path / "in.tif", tmp_path / "out.tif"
    tifffile.imwrite(src, stack)
    infer.denoise_file(src, dst, model(Identity()), InferConfig(device="cpu", smoothing="off", output_dtype="input",
                                                                tile_t=8, overlap=2))
    out = tifffile.imread(dst)
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out, stack)


def test_half_rate_ensemble_of_a_registered_stack_moves_back(rng):
    stack = moving(rng, jitter(rng, 40))
    events = []
    out = infer.denoise(stack, model(Identity()), InferConfig(device="cpu", smoothing="off", half_rate=True),
                        progress=events.append)
    assert any(e.message.startswith(rg.SAID) and "moved back" in e.message for e in events)
    np.testing.assert_allclose(out, stack, rtol=1e-5, atol=1e-3)  # an identity model: the input itself


def train_messages(stack: np.ndarray, **settings) -> tuple[list[str], Denoiser]:
    from napari_unet_att.config import TrainConfig
    from napari_unet_att.training import iter_train

    cfg = TrainConfig(steps=2, patch_t=8, patch_xy=16, batch_size=1, device="cpu", **settings)
    gen, msgs = iter_train([stack], cfg), []
    while True:
        try:
            ev = next(gen)
        except StopIteration as stop:
            return msgs, stop.value
        if getattr(ev, "message", None):
            msgs.append(ev.message)


def test_training_registers_a_moving_recording_unless_told_not_to(rng):
    stack = moving(rng, jitter(rng, 48), size=32)
    msgs, den = train_messages(stack)
    said = [m for m in msgs if rg.SAID in m]
    assert len(said) == 1 and "to train on" in said[0]
    assert den.train_shape[1] > 32 and den.train_config["registration"] == "auto"  # trained on the canvas
    msgs, den = train_messages(stack, registration="off")
    assert not any(rg.SAID in m for m in msgs) and den.train_shape == stack.shape
    msgs, den = train_messages(np.repeat(stack[:1], 48, axis=0))  # still: trained on as it is
    assert not any(rg.SAID in m for m in msgs) and den.train_shape == (48, 32, 32)
    with pytest.raises(InputError, match="registration"):
        train_messages(stack, registration="on")


def test_a_resumed_run_keeps_the_registration_it_started_with(rng, tmp_path):
    from napari_unet_att.config import TrainConfig
    from napari_unet_att.training import LAST_NAME, train

    stack = moving(rng, jitter(rng, 48), size=32)
    settings = dict(patch_t=8, patch_xy=16, batch_size=1, device="cpu")
    first = train([stack], TrainConfig(steps=2, registration="off", **settings), out_dir=tmp_path / "run")
    assert first.train_shape == stack.shape
    resumed = train([stack], TrainConfig(steps=4, **settings), out_dir=tmp_path / "run",
                    resume=tmp_path / "run" / LAST_NAME)  # the default is 'auto': the stored 'off' wins
    assert resumed.train_shape == stack.shape and resumed.train_config["registration"] == "off"


def test_registered_frames_are_smoothed_along_what_the_whole_pixel_moves_left(rng):
    shifts = rng.normal(0, 1.5, (120, 2))  # sub-pixel jitter: the canvas keeps each frame's fractional part
    clean = moving(rng, shifts)
    noisy = rng.poisson(clean).astype(np.float32)
    events: list = []
    out = infer.denoise(noisy, model(Identity()), InferConfig(device="cpu", keep_average="off"),
                        progress=events.append)
    said = [e.message for e in events if e.message]
    assert any(m.startswith(rg.SAID) and "moved by whole pixels" in m for m in said), said
    assert any(m.startswith("output smoothing: Gaussian") and "along the measured motion" in m for m in said), said
    np.testing.assert_allclose(out.mean(axis=(1, 2)), noisy.mean(axis=(1, 2)), rtol=1e-5)  # means kept
    inner = (slice(None), slice(4, -4), slice(4, -4))
    assert np.mean((out - clean)[inner] ** 2) < 0.5 * np.mean((noisy - clean)[inner] ** 2)


def test_moved_is_scipys_linear_shift_with_extended_edges(rng):
    frames = rng.normal(size=(6, 37, 1 + 40)).astype(np.float32)
    by = rng.normal(0, 3, (6, 2))
    by[0], by[1, 0] = 0.0, 0.0  # no move, a move along x only
    expected = np.stack([ndimage.shift(f, d, order=1, mode="nearest") for f, d in zip(frames, by, strict=True)])
    out = tissue.moved(frames, by)
    assert out.dtype == np.float32 and np.allclose(out, expected, atol=1e-5)
    rows = frames[:, :1]  # frames of one row: moved along x only
    expected = np.stack([ndimage.shift(f, d, order=1, mode="nearest") for f, d in zip(rows, by, strict=True)])
    assert np.allclose(tissue.moved(rows, by), expected, atol=1e-5)


def test_a_registered_job_chooses_its_smoothing_for_the_averages_that_follow(rng, monkeypatch):
    """The registered frames are denoised into a write-only destination (``MovedBack``), but the outer job puts each
    pixel's average back afterwards: the smoothing must be chosen by the error that the output keeps then (it was
    chosen as if no averages followed, and picked less smoothing, until the twenty-third session)."""
    from napari_unet_att.inference import smoothing as sm

    seen = []
    real = sm.choose_smoothing

    def spy(*args, **kw):
        seen.append(kw.get("averaged", args[5] if len(args) > 5 else False))
        return real(*args, **kw)

    monkeypatch.setattr(sm, "choose_smoothing", spy)
    stack = moving(rng, jitter(rng, 120), size=32, noisy=True)
    for keep, expected in (("auto", True), ("off", False)):
        seen.clear()
        said = []
        infer.denoise(stack, model(Identity()), InferConfig(device="cpu", keep_average=keep), progress=said.append)
        assert any(e.message.startswith(rg.SAID) and "moved back" in e.message for e in said)
        assert seen == [expected], keep
