"""Output smoothing chosen on the recording (inference.smoothing) and its place in the denoising job."""

from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np
import pytest
import tifffile
import torch
from scipy import ndimage

from _models import Identity, make
from napari_unet_att import inference as infer
from napari_unet_att.config import InferConfig
from napari_unet_att.errors import InputError
from napari_unet_att.inference import bands, transients
from napari_unet_att.inference import smoothing as sm
from napari_unet_att.inference.temporal_filter import smooth_t_part
from napari_unet_att.inference.transients import keep_fast
from napari_unet_att.model.denoiser import Denoiser
from napari_unet_att.runtime import device


def identity(mode: str = "temporal") -> Denoiser:
    return make(Identity(), mode)


def smoothed(x: np.ndarray, sigma_t: float, sigma_xy: float, blend: float = 0.0,
             blend_sigma: tuple[float, float] = (0.0, 0.0), inputs: np.ndarray | None = None,
             keep_k: float = math.inf, split: tuple[float, float] = (0.0, 0.0), keep_px: float = 0.0) -> np.ndarray:
    """What the engine should give: ``x`` smoothed as a whole (the part coarser than ``split[0]`` px over
    ``split[1]`` frames; its fast changes given back at ``keep_k`` deviations, pooled over ``keep_px``; then
    blended with a Gaussian of ``inputs``), then each frame shifted back to ``x``'s mean."""
    want = sm.smooth(x, sigma_t, sigma_xy)
    if split[0] > 0:
        want = bands.combine(want, sm.smooth_t(x, split[1]), split[0])
    want = keep_fast(x, want, keep_k, keep_px)
    if blend:
        want = (1 - blend) * want + blend * sm.smooth(inputs, *blend_sigma)
    return want + (x.mean(axis=(1, 2)) - want.mean(axis=(1, 2)))[:, None, None]


def as_chosen(x: np.ndarray, choice: sm.Smoothing, scan: bool = False) -> np.ndarray:
    """:func:`smoothed` with ``choice``, for an identity model (its input is ``x``); a ``scan``'s interleaved lines
    each direction on its own (the frame's mean kept over both)."""
    if not scan:
        return smoothed(x, choice.sigma_t, choice.sigma_xy, choice.blend, choice.blend_sigma, x, choice.keep_k,
                        (choice.split_px, choice.sigma_t_coarse), choice.keep_px)
    planes = sm.as_planes(x, True)  # (n, 2, Y, X): each direction's lines a plane
    want = sm.smooth(planes, choice.sigma_t, choice.sigma_xy)
    want = keep_fast(planes, want, choice.keep_k, choice.keep_px)
    if choice.blend:
        want = (1 - choice.blend) * want + choice.blend * sm.smooth(planes, *choice.blend_sigma)
    want = sm.from_tissue(want, np.zeros((len(x), 2)), 0, True)
    return want + (x.mean(axis=(1, 2)) - want.mean(axis=(1, 2)))[:, None, None]


def cells(shape: tuple[int, int], rng: np.random.Generator, n: int = 12) -> np.ndarray:
    """A still image of ``n`` blurred blobs on a dim background."""
    img = np.zeros(shape, np.float32)
    img[rng.integers(0, shape[0], n), rng.integers(0, shape[1], n)] = 400.0
    return ndimage.gaussian_filter(img, 2.0) + 2.0


def still_scene(rng: np.random.Generator, t: int = 64, size: int = 48) -> np.ndarray:
    """A still scene with slowly varying brightness, noise-free (what smoothing over time helps)."""
    slow = 1 + 0.3 * np.sin(np.arange(t) / 15.0)
    return cells((size, size), rng)[None] * slow[:, None, None]


def still_recording(rng: np.random.Generator, t: int = 64, size: int = 48) -> np.ndarray:
    """Poisson noise on :func:`still_scene`."""
    return rng.poisson(still_scene(rng, t, size)).astype(np.float32)


def moving_recording(rng: np.random.Generator, t: int = 64, size: int = 48) -> np.ndarray:
    """The still scene shifted by 1.5 px (random direction) every frame, nearly noise-free."""
    scene = cells((size + 16, size + 16), rng)
    shifts = rng.normal(0, 1.5, (t, 2))
    return np.stack([ndimage.shift(scene, s, mode="nearest")[8:-8, 8:-8] for s in shifts]).astype(np.float32)


@pytest.mark.parametrize(("sigma_t", "sigma_xy"), [(2.0, 0.5), (0.0, 0.5), (6.0, 0.0), (0.5, 0.0)])
@pytest.mark.parametrize("block", [1, 7, 40, 200])
def test_streamed_smoothing_equals_smoothing_the_whole_stack_with_frame_means_kept(sigma_t, sigma_xy, block, rng,
                                                                                   monkeypatch):
    monkeypatch.setattr(device, "cpu_workers", lambda: 3)  # rows and frames split over threads, as on any machine
    x = rng.normal(10, 3, (103, 8, 9)).astype(np.float32)
    want = smoothed(x, sigma_t, sigma_xy)
    smoother = sm.TemporalSmoother(sm.Smoothing(sigma_t, sigma_xy), len(x))
    parts = []
    for t0 in range(0, len(x), block):
        parts += smoother.push(t0, x[t0 : t0 + block])
    assert [p[0] for p in parts] == sorted(p[0] for p in parts)
    got = np.concatenate([p[1] for p in parts])
    np.testing.assert_allclose(got, want, atol=1e-4)
    np.testing.assert_allclose(got.mean(axis=(1, 2)), x.mean(axis=(1, 2)), rtol=1e-5)
    with pytest.raises(ValueError, match="in order"):
        sm.TemporalSmoother(sm.Smoothing(1.0, 0.0), 10).push(3, x[:2])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_time_smoothing_is_scipys_filter(dtype, rng, monkeypatch):
    from napari_unet_att.inference import temporal_filter

    x = rng.normal(10, 3, (41, 6, 8)).astype(dtype)
    for sigma_t in (0.3, 2.0, 30.0):  # (30: the kernel mirrored at both ends more than once)
        want = ndimage.gaussian_filter1d(x, sigma_t, axis=0, mode="reflect", truncate=sm.TRUNCATE)
        for stack in (x, x[:, ::2, 1:]):  # a view that is not contiguous too
            got = sm.smooth_t(stack, sigma_t)
            assert got.dtype == dtype and got.shape == stack.shape
            np.testing.assert_allclose(got, want[:, ::2, 1:] if stack is not x else want, rtol=1e-6, atol=1e-5)
    assert sm.smooth_t(x[:0], 2.0).shape == (0, 6, 8)  # (no frames: scipy's, which returns none)
    monkeypatch.setattr(temporal_filter, "MATRIX_FRAMES", 40)  # longer stacks: scipy's filter itself
    np.testing.assert_array_equal(sm.smooth_t(x, 2.0), ndimage.gaussian_filter1d(x, 2.0, axis=0, mode="reflect",
                                                                                 truncate=sm.TRUNCATE))


@pytest.mark.parametrize("mode", ["reflect", "nearest"])
def test_the_frames_smoothing_is_scipys_filter(mode, rng):
    small = rng.normal(10, 3, (3, 2, 21, 34)).astype(np.float32)  # (a scan's canvas: two planes a frame)
    large = rng.normal(10, 3, (2, 200, 300)).astype(np.float32)  # (a 0.5 px kernel: scipy's own filter)
    for x, sigma in [(small, 0.5), (small, 3.0), (small, 40.0), (large, 0.5), (large, 3.0)]:
        want = ndimage.gaussian_filter(x, (0,) * (x.ndim - 2) + (sigma, sigma), mode=mode, truncate=sm.TRUNCATE)
        got = sm.smooth_xy(x, sigma, mode)
        assert got.dtype == np.float32 and got.shape == x.shape
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize(("n", "sigma_t"), [(40, 2.0), (40, 6.0), (5, 3.0), (1, 1.0)])
def test_part_of_the_time_smoothing_equals_the_whole_stacks(n, sigma_t, rng):
    x = rng.normal(10, 3, (n, 4, 5)).astype(np.float32)
    whole = sm.smooth_t(x, sigma_t)
    r = int(sm.TRUNCATE * sigma_t + 0.5)
    for first, last in [(0, n), (0, 1), (n - 1, n), (n // 2, n // 2 + 1), (n // 3, n - n // 3)]:
        lo, hi = max(first - r, 0), min(last + r, n)  # just the frames the kernel reaches, mirrored at the ends
        got = smooth_t_part(x[lo:hi], lo, n, sigma_t, first, last)
        np.testing.assert_allclose(got, whole[first:last], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="window"):  # a window short of the kernel's reach is refused
        smooth_t_part(x[1:], 1, n, sigma_t, 0, n)


def test_a_still_noisy_recording_gets_smoothed_over_time(rng):
    raw = still_recording(rng)
    choice = sm.choose_smoothing(raw[0::2], raw[1::2])  # the even frames "denoised" by an identity
    assert choice.active and choice.sigma_t >= 2.0, choice
    assert choice.shift_px is not None and choice.shift_px < sm.MAX_STILL_SHIFT
    assert "chosen on the recording" in choice.describe()


def test_a_moving_recording_is_not_smoothed(rng):
    raw = moving_recording(rng)
    choice = sm.choose_smoothing(raw[0::2], raw[1::2])
    assert not choice.active
    assert choice.shift_px > 1.0 and "moves" in choice.describe()


def test_a_fast_signal_without_noise_is_not_smoothed(rng):
    # a still scene whose brightness jumps at random every two frames, no noise: each even frame predicts the
    # odd one after it exactly, any average over time predicts it worse
    scene = cells((48, 48), rng)
    frames = scene[None] * np.repeat(rng.uniform(0.2, 2.0, 32), 2)[:, None, None]
    choice = sm.choose_smoothing(frames[0::2], frames[1::2])
    assert choice.shift_px < sm.MAX_STILL_SHIFT and not choice.active, choice


@pytest.mark.parametrize("seed", [0, 1])
def test_averaged_choice_counts_what_the_averages_leave(seed, monkeypatch):
    """Where each pixel's average is put back, a blur that costs only still, coarse detail is chosen (the averages
    restore that detail) and the output that is kept is closer to the truth; judged by the whole error it is not.
    (One window for every scale, nothing of what it removes given back: as the helper below smooths.)"""
    monkeypatch.setattr(transients, "KEEP_K", (math.inf,))
    monkeypatch.setattr(bands, "SPLITS_PX", ())
    rng = np.random.default_rng(seed)
    scene = ndimage.gaussian_filter(rng.normal(size=(64, 64)), 1.5) * 200 + 100  # still, 1.5-px detail
    blob = ndimage.gaussian_filter(rng.normal(size=(64, 64)), 4.0) * 200
    clean = scene[None] + ndimage.gaussian_filter1d(rng.normal(size=80), 1.5)[:, None, None] * 3 * blob[None]
    estimate = (clean[0::2] + rng.normal(0, 3, (40, 64, 64))).astype(np.float32)  # the model's noisy guess
    target = (clean[1::2] + rng.normal(0, 3, (40, 64, 64))).astype(np.float32)
    whole = sm.choose_smoothing(estimate, target)
    averaged = sm.choose_smoothing(estimate, target, averaged=True)
    assert (whole.sigma_xy, averaged.sigma_xy) == (0.0, 0.5), (whole, averaged)

    def kept(choice: sm.Smoothing) -> float:  # the output with each pixel's average put back (as averages.py)
        out = sm.smooth(estimate, choice.sigma_t / 2, choice.sigma_xy).astype(np.float64)
        out += ndimage.gaussian_filter((clean[0::2] - out).mean(axis=0), 0.7)
        return float(np.mean((out - clean[0::2]) ** 2))

    assert kept(averaged) < 0.9 * kept(whole)


def test_calibration_block_is_central_even_and_bounded():
    t, y, x = sm.calibration_block((1001, 700, 40))
    # narrow frames: more of them, as many voxels as CALIBRATION_FRAMES of CALIBRATION_XY x CALIBRATION_XY
    assert t.stop - t.start == sm.CALIBRATION_VOXELS // (sm.CALIBRATION_XY * 40) // 2 * 2 > sm.CALIBRATION_FRAMES
    assert t.start % 2 == 0 and abs((t.start + t.stop) / 2 - 500) <= 2
    assert sm.calibration_block((1001, 700, 400))[0].stop - sm.calibration_block((1001, 700, 400))[0].start == 80
    assert y == slice(286, 286 + sm.CALIBRATION_XY) and x == slice(0, 40)
    assert sm.calibration_block((15, 8, 8))[0] == slice(0, 14)
    # a bidirectional scan: a (T, 2M, M) block from an even row, its columns symmetric (x-reversed lines agree)
    _, y, x = sm.calibration_block((100, 402, 201), bidirectional=True)
    assert (y.stop - y.start, x.stop - x.start) == (254, 127) and y.start % 2 == 0 and x.start == 201 - x.stop
    assert sm.calibration_block((100, 64, 32), bidirectional=True)[1:] == (slice(0, 64), slice(0, 32))


def test_smoothing_setting_is_checked():
    assert InferConfig(smoothing=[2, 0.5]).smoothing == (2.0, 0.5)
    assert InferConfig(smoothing=[16, 0.5, 4, 2]).smoothing == (16.0, 0.5, 4.0, 2.0)  # two scales
    for bad in ("on", (1.0,), (-1.0, 0.0), (float("nan"), 0.0), ("a", "b"), (1.0, 0.5, 2.0), (1, 0, -2, 0),
                (1, 0, 0, 2)):
        with pytest.raises(InputError, match="smoothing"):
            InferConfig(smoothing=bad)


def test_denoise_applies_the_smoothing_it_reports(tmp_path, rng):
    raw = still_recording(rng, t=40, size=32)
    events = []
    auto = infer.denoise(raw, identity(), InferConfig(device="cpu", give_back="off"), progress=events.append)
    said = [e.message for e in events if e.message.startswith("output smoothing")]
    assert len(said) == 1 and "chosen on the recording" in said[0]
    choice = sm.choose_smoothing(raw[0::2], raw[1::2], inputs=raw[0::2])  # an identity model: by hand
    want = as_chosen(raw, choice)
    np.testing.assert_allclose(auto, want, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(infer.denoise(raw, identity(), InferConfig(device="cpu", smoothing="off")), raw)
    # streamed file to file, tiles shorter than the kernel's reach: the same result
    path = tmp_path / "in.tif"
    tifffile.imwrite(path, raw)
    given = InferConfig(device="cpu", smoothing=(3.0, 0.5), tile_t=8, overlap=2)
    out = infer.denoise_file(path, tmp_path / "out.tif", identity(), given)
    want = smoothed(raw, 3.0, 0.5)
    np.testing.assert_allclose(tifffile.imread(out), want, rtol=1e-5, atol=1e-3)


def test_auto_smoothing_leaves_short_stacks_alone(rng):
    raw = still_recording(rng, t=12, size=32)
    events = []
    out = infer.denoise(raw, identity(), InferConfig(device="cpu"), progress=events.append)
    assert not any(e.message.startswith(sm.SAID) for e in events)
    np.testing.assert_allclose(out, raw)  # an identity model: nothing smoothed


def scan_of(frames: np.ndarray, rng: np.random.Generator, flip: bool) -> np.ndarray:
    """A bidirectional ``(T, 2N, N)`` scan of ``frames``: each line recorded twice with its own Poisson noise,
    the backward lines stored x-reversed when ``flip``."""
    scan = np.empty((len(frames), 2 * frames.shape[1], frames.shape[2]), np.float32)
    scan[:, 0::2] = rng.poisson(frames)
    scan[:, 1::2] = rng.poisson(frames[..., ::-1] if flip else frames)
    return scan


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("output", ["merged", "interleaved"])
def test_mirrored_scan_models_are_calibrated_across_frames_in_the_output_layout(output, flip, rng):
    scan = scan_of(still_scene(rng, t=40, size=32), rng, flip)
    den = make(Identity(), "mirrored", flip=flip)
    events = []
    cfg = InferConfig(device="cpu", mirrored_output=output, keep_average="off")
    out = infer.denoise(scan, den, cfg, progress=events.append)
    said = [e.message for e in events if e.message.startswith(sm.SAID)]
    assert len(said) == 1 and "chosen on the recording" in said[0], said
    # an identity model's output is the input in the output's layout: the calibration by hand, on the even
    # frames' output predicting the odd frames
    raw = infer.registration.PhysicalFrames(scan, flip)[:] if output == "merged" else scan
    lines = True if output == "interleaved" and flip else None  # (x-reversed lines: direction by direction)
    choice = sm.choose_smoothing(raw[0::2], raw[1::2], flip=lines, inputs=raw[0::2])
    assert choice.active and out.shape == raw.shape
    np.testing.assert_allclose(out, as_chosen(raw, choice, scan=lines is not None), rtol=1e-5, atol=1e-3)


def test_a_scans_two_directions_are_never_smoothed_together(rng):
    """An x-reversed backward line beside a forward line shows the mirror image: smoothing across the rows of an
    interleaved output would ghost every cell at its mirrored column."""
    scene = still_scene(rng, t=24, size=32)
    scene[:, :, 16:] = 2.0  # all structure on the left half: its mirror image would land on the right
    scan = scan_of(scene, rng, flip=True)
    out = infer.denoise(scan, make(Identity(), "mirrored", flip=True),
                        InferConfig(device="cpu", smoothing=(0.0, 1.0), keep_average="off", registration="off"))
    np.testing.assert_allclose(out, as_chosen(scan, sm.Smoothing(0.0, 1.0), scan=True), rtol=1e-5, atol=1e-3)
    ghost, cells = out[:, 0::2, 20:].mean() - 2.0, out[:, 0::2, :12].mean() - 2.0  # (above the background)
    assert ghost < 0.1 * cells  # no mirror image on the forward lines


@pytest.mark.parametrize("scale", [1e-30, 1.0, 1e30])
def test_the_choice_does_not_depend_on_the_intensity_scale(scale, rng):
    raw = still_recording(rng)
    base = sm.choose_smoothing(raw[0::2], raw[1::2])
    scaled = sm.choose_smoothing(raw[0::2] * np.float32(scale), raw[1::2] * np.float32(scale))
    assert (scaled.sigma_t, scaled.sigma_xy) == (base.sigma_t, base.sigma_xy) and base.active
    flat = sm.choose_smoothing(np.full((16, 8, 8), 3.0, np.float32), raw[1:33:2, :8, :8])
    assert not flat.active and "flat" in flat.reason


def test_half_rate_ensemble_is_smoothed_like_any_output(rng):
    raw = still_recording(rng, t=40, size=32)
    plain = infer.denoise(raw, identity(), InferConfig(device="cpu", smoothing=(3.0, 0.5), half_rate=True))
    want = smoothed(raw, 3.0, 0.5)  # an identity model: the ensemble is the input itself
    np.testing.assert_allclose(plain, want, rtol=1e-5, atol=1e-3)


def drifting_scene(rng: np.random.Generator, t: int = 64, size: int = 40, speed: float = 0.35
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Sharp cells drifting ``speed`` px per frame along y and x (a linear drift), noise-free; (frames, shifts)."""
    margin = int(np.ceil(speed * t / 2)) + 4
    scene = ndimage.gaussian_filter(cells((size + 2 * margin, size + 2 * margin), rng, n=40), 0.0)
    shifts = np.repeat(speed * (np.arange(t) - (t - 1) / 2)[:, None], 2, axis=1)
    frames = np.stack([ndimage.shift(scene, s, order=3, mode="nearest")[margin:-margin, margin:-margin]
                       for s in shifts]).astype(np.float32)
    return frames, shifts


@pytest.mark.parametrize("block", [5, 64])
def test_smoothing_along_a_known_drift_keeps_moving_structure(block, rng):
    frames, shifts = drifting_scene(rng)
    errors = {}
    for name, along in (("in place", None), ("along", shifts)):
        smoother = sm.TemporalSmoother(sm.Smoothing(3.0, 0.0, shifts=along), len(frames))
        parts = []
        for t0 in range(0, len(frames), block):
            parts += smoother.push(t0, frames[t0 : t0 + block])
        got = np.concatenate([p[1] for p in parts])
        np.testing.assert_allclose(got.mean(axis=(1, 2)), frames.mean(axis=(1, 2)), rtol=1e-5)  # means kept
        inner = (slice(None), slice(6, -6), slice(6, -6))  # away from the edges the moves extend
        errors[name] = float(np.mean((got[inner] - frames[inner]) ** 2))
    # in place, a 3-frame kernel smears cells that move 1 px per 3 frames; along the drift they stay put (what
    # is left is the linear interpolation of the moves)
    assert errors["along"] < 0.25 * errors["in place"], errors


def test_calibration_follows_a_known_drift_with_bounded_smoothing(rng):
    frames, shifts = drifting_scene(rng, t=80)
    raw = rng.poisson(frames).astype(np.float32)
    blind = sm.choose_smoothing(raw[0::2], raw[1::2])
    assert not blind.active and "moves" in blind.describe()  # motion not measured: left alone
    known = sm.choose_smoothing(raw[0::2], raw[1::2], (shifts[0::2], shifts[1::2]))
    # one window up to MAX_SIGMA_T_ALONG; a two-scale one's coarse detail too, its fine detail up to 8 frames
    longest = sm.MAX_SIGMA_T_SPLIT_ALONG if known.split_px else sm.MAX_SIGMA_T_ALONG
    assert known.active and 0 < known.sigma_t <= longest and known.sigma_t_coarse <= sm.MAX_SIGMA_T_ALONG, known


def test_denoise_smooths_along_the_drift_it_measured(rng):
    frames, _ = drifting_scene(rng, t=160, size=48, speed=0.1)  # 16 px: slow, 0.2 px between frames 2 apart
    frames *= 5
    raw = rng.poisson(frames).astype(np.float32)
    events = []
    out = infer.denoise(raw, identity(), InferConfig(device="cpu", keep_average="off"), progress=events.append)
    said = [e.message for e in events if e.message.startswith(sm.SAID)]
    assert len(said) == 1 and "along the measured motion" in said[0], said
    plain = infer.denoise(raw, identity(), InferConfig(device="cpu", keep_average="off", registration="off"))
    np.testing.assert_allclose(plain, raw)  # unmeasured motion: no smoothing (the identity's output is the input)
    inner = (slice(None), slice(6, -6), slice(6, -6))
    assert np.mean((out - frames)[inner] ** 2) < 0.5 * np.mean((raw - frames)[inner] ** 2)


def _centred(frames: np.ndarray) -> np.ndarray:
    return frames - frames.mean(axis=(1, 2), keepdims=True)


@pytest.mark.parametrize("flip", [False, True])
def test_a_scans_interleaved_lines_are_smoothed_along_a_drift_direction_by_direction(flip, rng, monkeypatch):
    monkeypatch.setattr(device, "cpu_workers", lambda: 3)  # the work split over threads
    frames, shifts = drifting_scene(rng, t=40, size=24)
    scan = scan_of(frames, rng, flip)
    smoother = sm.TemporalSmoother(sm.Smoothing(2.0, 0.5, shifts=shifts, flip=flip), len(scan))
    got = np.concatenate([p for _, p in smoother.push(0, scan[:17])] + [p for _, p in smoother.push(17, scan[17:])])
    np.testing.assert_allclose(got.mean(axis=(1, 2)), scan.mean(axis=(1, 2)), rtol=1e-5)  # means kept

    def physical(lines: np.ndarray, backward: int) -> np.ndarray:
        return lines[..., ::-1] if flip and backward else lines

    # each direction's lines, in the physical orientation, smoothed along the drift as frames are (the frame's
    # mean is kept over both directions together: compare each direction's frames about their means)
    for backward in (0, 1):
        plain = sm.TemporalSmoother(sm.Smoothing(2.0, 0.5, shifts=shifts), len(scan))
        want = np.concatenate([p for _, p in plain.push(0, physical(scan[:, backward::2], backward))])
        np.testing.assert_allclose(_centred(physical(got[:, backward::2], backward)), _centred(want), atol=1e-3)


def test_a_mirrored_scan_is_smoothed_along_the_drift_it_measured(rng):
    frames, _ = drifting_scene(rng, t=160, size=48, speed=0.1)  # as above, each line scanned both ways
    scan = scan_of(5 * frames, rng, flip=True)
    den = make(Identity(), "mirrored", flip=True)
    for output in ("merged", "interleaved"):
        events = []
        cfg = InferConfig(device="cpu", keep_average="off", mirrored_output=output)
        out = infer.denoise(scan, den, cfg, progress=events.append)
        said = [e.message for e in events if e.message.startswith(sm.SAID)]
        assert len(said) == 1 and "along the measured motion" in said[0], (output, said)
        raw = infer.registration.PhysicalFrames(scan, True)[:] if output == "merged" else scan
        inner = (slice(None), slice(12, -12), slice(6, -6))  # (rows of the scan: two per physical row)
        truth = 5 * frames if output == "merged" else np.repeat(5 * frames, 2, axis=1)
        if output == "interleaved":
            truth[:, 1::2] = truth[:, 1::2, ::-1]
        assert np.mean((out - truth)[inner] ** 2) < 0.5 * np.mean((raw - truth)[inner] ** 2), output


@pytest.mark.parametrize("block", [7, 40])
def test_a_blend_with_the_inputs_gaussian_is_streamed_like_the_whole_stack(block, rng, monkeypatch):
    monkeypatch.setattr(device, "cpu_workers", lambda: 3)  # the work split over threads
    out = rng.normal(10, 1, (83, 8, 9)).astype(np.float32)
    inputs = rng.normal(10, 3, out.shape).astype(np.float32)
    choice = sm.Smoothing(1.0, 0.5, blend=0.4, blend_sigma=(2.0, 1.0))
    assert choice.radius == 6 and "40% a Gaussian of the input (2 frames, 1 px)" in choice.describe()
    smoother = sm.TemporalSmoother(choice, len(out), inputs)
    parts = [p for t0 in range(0, len(out), block) for p in smoother.push(t0, out[t0 : t0 + block])]
    got = np.concatenate([p[1] for p in parts])
    np.testing.assert_allclose(got, smoothed(out, 1.0, 0.5, 0.4, (2.0, 1.0), inputs), rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="input's frames"):
        sm.TemporalSmoother(choice, len(out))


def active_scene(rng: np.random.Generator, t: int = 80, size: int = 32) -> np.ndarray:
    """Cells whose brightness changes over a few frames (fast activity), noise-free."""
    img = np.zeros((12, size, size), np.float32)
    img[np.arange(12), rng.integers(2, size - 2, 12), rng.integers(2, size - 2, 12)] = 300.0
    img = ndimage.gaussian_filter(img, (0, 1.5, 1.5))
    activity = 1.0 + np.clip(ndimage.gaussian_filter1d(rng.normal(0, 4.0, (t, 12)), 3.0, axis=0), -0.8, 3.0)
    return 5.0 + np.einsum("ck,tc->tk", img.reshape(12, -1), activity).reshape(t, size, size)


def test_the_calibration_blends_in_the_inputs_gaussian_where_the_model_misses_activity(rng):
    clean = active_scene(rng).astype(np.float32)
    raw = rng.poisson(clean).astype(np.float32)
    blind = np.broadcast_to(clean.mean(axis=0), clean.shape)  # a model that took the activity for noise
    missed = sm.choose_smoothing(blind[0::2], raw[1::2], inputs=raw[0::2])
    assert missed.blend >= 0.4 and "Gaussian of the input" in missed.describe(), missed
    exact = sm.choose_smoothing(clean[0::2], raw[1::2], inputs=raw[0::2])  # a perfect model: nothing to add
    assert exact.blend == 0
    along = sm.choose_smoothing(blind[0::2], raw[1::2], (np.zeros((40, 2)),) * 2, inputs=raw[0::2])
    assert along.blend == 0  # not along a motion


def test_a_useless_model_gives_way_to_the_filter_altogether(rng):
    """Where the model's result tells nothing about the next frames (here: another recording's), the whole output
    is a Gaussian of the input: never worse than a plain filter."""
    clean = active_scene(rng).astype(np.float32)
    raw = rng.poisson(clean).astype(np.float32)
    n = len(clean[0::2])
    other = rng.permutation(clean[0::2].reshape(n, -1).T).T.reshape(n, *clean.shape[1:])  # its pixels shuffled
    useless = sm.choose_smoothing(other, raw[1::2], inputs=raw[0::2])
    assert useless.blend == 1.0 and "100% a Gaussian of the input" in useless.describe(), useless
    # the model's own smoothing does not reach such an output: none is held or described (every sigma ties)
    assert useless.sigma_t == useless.sigma_xy == 0.0 and "sigma 0 frames, 0 px" in useless.describe()
    # the same where the averages are put back; the gain reported is the filter's own over the model's result
    averaged = sm.choose_smoothing(other, raw[1::2], inputs=raw[0::2], averaged=True)
    assert (averaged.blend, averaged.sigma_t, averaged.sigma_xy) == (1.0, 0.0, 0.0)
    assert averaged.reason == useless.reason


def test_a_perfect_estimate_is_left_alone_without_warnings():
    frames = np.random.default_rng(3).uniform(1, 2, (32, 8, 8)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for averaged in (False, True):
            choice = sm.choose_smoothing(frames[0::2], frames[0::2], inputs=frames[1::2], averaged=averaged)
            assert not choice.active, choice


class TimeMean(torch.nn.Module):
    """A network that takes all activity for noise: every frame of a tile is the tile's average over time."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=2, keepdim=True).expand_as(x).clone()


def test_denoise_blends_the_input_in_where_the_model_misses_the_activity(rng):
    clean = active_scene(rng, t=120).astype(np.float32)
    raw = rng.poisson(clean).astype(np.float32)
    cfg = InferConfig(device="cpu", keep_average="off", registration="off")
    events = []
    out = infer.denoise(raw, make(TimeMean()), cfg, progress=events.append)
    said = [e.message for e in events if e.message.startswith(sm.SAID)]
    assert len(said) == 1 and "Gaussian of the input" in said[0], said
    flat = infer.denoise(raw, make(TimeMean()), dataclasses.replace(cfg, smoothing="off"))
    np.testing.assert_allclose(out.mean(axis=(1, 2)), raw.mean(axis=(1, 2)), rtol=1e-5)  # frame means kept
    assert np.mean((out - clean) ** 2) < 0.5 * np.mean((flat - clean) ** 2)


def test_a_scans_x_motion_is_seen_on_its_physical_frames(rng):
    """Backward lines stored x-reversed move the other way in x: on the interleaved lines a small x-motion of
    the two directions cancels out; the stillness check looks at the physical frames."""
    scene = cells((40, 56), rng)
    frames = np.stack([ndimage.shift(scene, (0.0, 0.3 * i), mode="nearest")[4:-4, 12:-12] for i in range(40)])
    scan = scan_of(frames.astype(np.float32) * 3, rng, flip=True)
    choice = sm.choose_smoothing(scan[0::2], scan[1::2], flip=True)
    assert not choice.active and "moves" in choice.reason, choice


def test_half_rate_and_merged_outputs_blend_the_input_in_like_any_output(rng):
    clean = active_scene(rng, t=120).astype(np.float32)
    raw = rng.poisson(clean).astype(np.float32)
    cfg = InferConfig(device="cpu", keep_average="off", registration="off")
    half = infer.denoise(raw, make(TimeMean()), dataclasses.replace(cfg, half_rate=True))
    # a scan of the same scene through a mirrored model that misses the activity, merged: its physical frames
    scan = scan_of(clean, rng, flip=True)
    events = []
    merged = infer.denoise(scan, make(TimeMean(), "mirrored", flip=True),
                           dataclasses.replace(cfg, mirrored_output="merged"), progress=events.append)
    said = [e.message for e in events if e.message.startswith(sm.SAID)]
    assert "Gaussian of the input" in said[0], said
    physical = infer.registration.PhysicalFrames(scan, True)[:]
    for out, noisy in ((half, raw), (merged, physical)):
        flat = np.broadcast_to(noisy.mean(axis=0), noisy.shape)
        assert np.mean((out - clean) ** 2) < 0.5 * np.mean((flat - clean) ** 2)
        np.testing.assert_allclose(out.mean(axis=(1, 2)), noisy.mean(axis=(1, 2)), rtol=1e-5)


def test_the_memory_check_counts_what_the_smoother_and_the_averages_hold(monkeypatch):
    """The smoother holds a block, its kernel's reach and (a blend) the input's frames alike; the time averages a
    few images per chunk: the pre-check counts both, and held_bytes bounds what a smoother really holds."""
    from napari_unet_att.inference import averages, denoising

    rng = np.random.default_rng(0)
    smoothing = sm.Smoothing(8.0, 0.5, blend=0.4, blend_sigma=(4.0, 1.0))
    frames = rng.normal(size=(300, 48, 40)).astype(np.float32)
    smoother = sm.TemporalSmoother(smoothing, len(frames), frames)
    most = 0
    for t0 in range(0, len(frames), 100):
        smoother.push(t0, frames[t0 : t0 + 100])
        most = max(most, smoother.held.nbytes + smoother.inputs.nbytes)
    assert 0 < most <= sm.held_bytes("auto", (48, 40), 100)
    assert sm.held_bytes("off", (48, 40), 100) == 0 < sm.held_bytes((2.0, 0.0), (48, 40), 100)
    seen = []
    monkeypatch.setattr(denoising.res, "check_memory",  # the whole stack's job (not the calibration's)
                        lambda est, what, *a, **k: seen.append(est) if "(120, 32, 32)" in what else None)
    x = rng.poisson(5.0, (120, 32, 32)).astype(np.uint16)
    for post in ("off", "auto"):
        infer.denoise(x, make(Identity()), InferConfig(device="cpu", smoothing=post, keep_average=post,
                                                       registration="off", strips="off", tile_t=40, give_back="off"))
    extra = sm.held_bytes("auto", (32, 32), 40) + averages.sums_bytes("auto", (120, 32, 32))
    assert averages.sums_bytes("auto", (120, 32, 32)) > 0 and len(seen) == 2 and seen[1] - seen[0] == extra


def test_moving_integer_frames_interpolates_in_floats_without_wrapping():
    from napari_unet_att.inference.tissue import moved

    frames = np.array([[[0, 60000, 10, 5]], [[7, 7, 7, 7]], [[1, 2, 3, 4]]], np.uint16)  # (3, 1, 4): a line each
    got = moved(frames, np.array([[0.0, 0.5], [0.0, -1.25], [0.0, 0.0]]))  # (the last one stays where it is)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, [[[0, 30000, 30005, 7.5]], [[7, 7, 7, 7]], [[1, 2, 3, 4]]])
