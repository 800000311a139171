"""What the output smoothing removes, given back where it stands out (inference.transients)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import ndimage

from napari_unet_att.inference import smoothing as sm
from napari_unet_att.inference.transients import KEEP_K, choose_threshold, keep_fast, robust_sd


def pulses(rng: np.random.Generator, t: int = 96, size: int = 32) -> np.ndarray:
    """A still textured scene (10 to 30 counts) in which 4 x 4 patches rise sharply by 40 counts at random times and
    stay there for 6 frames (a fast indicator's transients), float32 ``(t, size, size)``."""
    texture = ndimage.gaussian_filter(rng.normal(size=(size, size)), 1.5)
    clean = np.repeat((20 + 10 * texture / texture.std())[None], t, axis=0).astype(np.float32)
    for _ in range(size):
        y, x, start = rng.integers(0, size - 4), rng.integers(0, size - 4), rng.integers(0, t - 6)
        clean[start : start + 6, y : y + 4, x : x + 4] += 40.0
    return clean


def test_robust_sd_per_frame_ignores_rare_large_values_constant_parts_and_nan(rng):
    noise = rng.normal(0.0, 2.0, (3, 200, 200)).astype(np.float32)
    noise[1] *= 3
    sd = robust_sd(noise)
    assert sd.shape == (3, 1, 1) and sd.ravel() == pytest.approx([2.0, 6.0, 2.0], rel=0.05)
    noise.reshape(3, -1)[:, ::50] = 1e4  # 2% outliers: a plain standard deviation is 700x the noise's
    noise[2, :150] = 0.0  # 75% of a frame unchanged by the smoothing (a constant region)
    noise[2, 160, 3] = np.nan
    assert robust_sd(noise).ravel() == pytest.approx([2.0, 6.0, 2.0], rel=0.1)
    assert robust_sd(np.zeros((2, 4, 4))).ravel().tolist() == [0.0, 0.0]


@pytest.mark.parametrize("shape", [(4, 64, 64), (3, 7, 9), (2, 1, 2)])
def test_robust_sd_is_numpys_nanmedian_of_the_deviations(shape, rng):
    values = rng.normal(0.0, 3.0, shape).astype(np.float32)
    values[rng.random(shape) < 0.3] = 0.0  # left out: an odd or even count per frame
    values[rng.random(shape) < 0.1] = np.inf
    values[0] = 0.0
    flat = np.where(np.isfinite(values) & (values != 0), values, np.nan).reshape(len(values), -1)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # (the all-NaN frame)
        want = 1.4826 * np.nanmedian(np.abs(flat - np.nanmedian(flat, axis=1, keepdims=True)), axis=1)
    np.testing.assert_array_equal(robust_sd(values).ravel(), np.nan_to_num(want, nan=0.0).astype(np.float32))


def test_keep_fast_does_not_depend_on_how_frames_are_streamed(rng):
    """Each frame's threshold is its own: any blocks the smoother is pushed give the same output."""
    frames = (pulses(rng, t=60) + rng.normal(0.0, 2.0, (60, 32, 32))).astype(np.float32)
    choice = sm.Smoothing(4.0, 0.0, keep_k=3.0, keep_px=1.0, split_px=2.0, sigma_t_coarse=1.0)
    outs = []
    for block in (60, 7, 13):
        smoother = sm.TemporalSmoother(choice, len(frames))
        parts = [p for i in range(0, 60, block) for p in smoother.push(i, frames[i : i + block])]
        outs.append(np.concatenate([p for _, p in sorted(parts, key=lambda p: p[0])]))
    np.testing.assert_allclose(outs[1], outs[0], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(outs[2], outs[0], rtol=1e-5, atol=1e-4)


def test_keep_fast_gives_back_what_stands_out(rng):
    clean = pulses(rng)
    noisy = clean + rng.normal(0.0, 1.0, clean.shape).astype(np.float32)
    smoothed = sm.smooth_t(noisy, 4.0)
    assert keep_fast(noisy, smoothed, math.inf) is smoothed
    np.testing.assert_allclose(keep_fast(noisy, smoothed, 0.0), noisy, rtol=1e-5, atol=1e-4)
    kept = keep_fast(noisy, smoothed, 3.0)
    on = clean - clean.min(axis=0) > 20
    # the pulses: most of their height back; the baseline: still smoothed (far from the raw noise)
    assert np.mean(kept[on]) > np.mean(smoothed[on]) + 0.5 * (np.mean(clean[on]) - np.mean(smoothed[on]))
    still = np.abs(sm.smooth_t(clean, 4.0) - clean) < 1e-3  # far from any pulse
    assert np.std(kept[still] - clean[still]) < 0.6 * np.std(noisy[still] - clean[still])
    assert np.mean((kept - clean) ** 2) < np.mean((smoothed - clean) ** 2)


@pytest.mark.parametrize("seed", range(8))
def test_choose_threshold_keeps_the_smoothing_without_a_gain(seed):
    """Where the smoothing found the truth (0), anything given back is worse: none, on every seed; the raw as the
    truth: all of it back, pixel by pixel."""
    noisy = np.random.default_rng(seed).normal(0.0, 1.0, (20, 16, 16)).astype(np.float32)
    k, px, err = choose_threshold(noisy, np.zeros_like(noisy), lambda c: float(np.mean(c**2)))
    assert k == KEEP_K[0] == math.inf and px == 0 and err == 0.0
    smoothed = sm.smooth_t(noisy, 3.0)
    k, px, _ = choose_threshold(noisy, smoothed, lambda c: float(np.mean((c - noisy) ** 2)))  # the raw itself is best
    assert k == min(KEEP_K) and px == 0  # (pooling would blur the pixel noise that this "truth" holds)


def test_pooling_gives_back_transients_that_no_single_pixel_shows(rng):
    """Patch-sized transients of 8 counts, blunted by the smoothing, under pixel noise of 2: few pixels stand out,
    the patch does; pooled over a pixel or two the giving back keeps more of them and is closer to the
    truth, and the choice takes a pooling."""
    clean = pulses(rng) / 5.0
    noisy = clean + rng.normal(0.0, 2.0, clean.shape).astype(np.float32)
    smoothed = sm.smooth_t(noisy, 4.0)
    on = clean - clean.min(axis=0) > 4
    pixel, pooled = keep_fast(noisy, smoothed, 3.0), keep_fast(noisy, smoothed, 3.0, px=1.5)
    assert np.mean(pooled[on]) > np.mean(pixel[on]) + 0.3
    assert np.mean((pooled - clean) ** 2) < np.mean((pixel - clean) ** 2)
    k, px, _ = choose_threshold(noisy, smoothed, lambda c: float(np.mean((c - clean) ** 2)))
    assert math.isfinite(k) and px > 0


@pytest.mark.parametrize("seed", [0, 1])
def test_calibration_gives_back_fast_transients(seed):
    """A still recording with sharp transients: the calibration smooths over time and gives the transients back,
    and the result is closer to the truth than the smoothing alone; what the smoother streams is that result."""
    rng = np.random.default_rng(seed)
    clean = pulses(rng)
    estimate = clean[0::2] + rng.normal(0.0, 2.0, clean[0::2].shape).astype(np.float32)  # a model's noisy guess
    target = (clean[1::2] + rng.normal(0.0, 6.0, clean[1::2].shape)).astype(np.float32)
    choice = sm.choose_smoothing(estimate, target)
    assert choice.sigma_t > 0 and math.isfinite(choice.keep_k), choice
    assert f"fast changes above {choice.keep_k:g}x their noise" in choice.describe()
    full = clean + rng.normal(0.0, 2.0, clean.shape).astype(np.float32)
    plain = sm.TemporalSmoother(sm.Smoothing(choice.sigma_t, choice.sigma_xy), len(full)).push(0, full)
    kept = sm.TemporalSmoother(choice, len(full)).push(0, full)
    plain, kept = np.concatenate([p for _, p in plain]), np.concatenate([p for _, p in kept])
    assert np.mean((kept - clean) ** 2) < 0.9 * np.mean((plain - clean) ** 2)
    on = clean - clean.min(axis=0) > 20
    assert np.mean(kept[on]) > np.mean(plain[on])
