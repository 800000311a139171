"""The output smoothing by spatial scale (inference.bands): fine detail over a long window, coarse over a short one."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from napari_unet_att.inference import bands
from napari_unet_att.inference import smoothing as sm


def test_combine_takes_each_scale_from_its_own_input(rng):
    def smooth_field() -> np.ndarray:  # detail far coarser than the split
        return ndimage.gaussian_filter(rng.normal(size=(4, 64, 64)), (0, 8, 8)).astype(np.float32) * 40

    def fine_texture() -> np.ndarray:  # detail far finer than the split (pixel noise less its blur)
        a = rng.normal(size=(4, 64, 64)).astype(np.float32)
        return a - ndimage.gaussian_filter(a, (0, 1, 1))

    texture, field = fine_texture(), smooth_field()
    fine_in, coarse_in = texture + smooth_field(), fine_texture() + field
    np.testing.assert_allclose(bands.combine(fine_in, fine_in, 3.0), fine_in, atol=1e-5)
    out = bands.combine(fine_in, coarse_in, 3.0)
    inner = (slice(None), slice(8, -8), slice(8, -8))  # (away from the mirrored edges)
    err = (out - (texture + field))[inner]  # the fine input's fine detail, the coarse input's coarse detail
    assert np.std(err) < 0.2 * np.std(texture), (np.std(err), np.std(texture))  # (either input alone: 1.4-2.5x)


def scene(rng: np.random.Generator, t: int = 96, size: int = 48) -> np.ndarray:
    """A still recording: fine static texture, and blobs of 3-4 px (cells) whose brightness jumps every few frames."""
    texture = ndimage.gaussian_filter(rng.normal(size=(size, size)), 0.7)
    clean = np.repeat((30 + 8 * texture / texture.std())[None], t, axis=0)
    for _ in range(8):
        y, x = rng.integers(6, size - 6, 2)
        blob = np.zeros((size, size))
        blob[y, x] = 1.0
        blob = ndimage.gaussian_filter(blob, 3.5)
        activity = np.repeat(rng.uniform(0, 1, t // 4), 4) ** 3  # changes every 4 frames
        clean += 25 * (blob / blob.max())[None] * activity[:, None, None]
    return clean.astype(np.float32)


@pytest.mark.parametrize("seed", [0, 1])
def test_fine_detail_is_smoothed_longer_than_coarse_activity(seed):
    rng = np.random.default_rng(seed)
    clean = scene(rng)
    noise = 3.0
    estimate = clean[0::2] + rng.normal(0, noise, clean[0::2].shape).astype(np.float32)  # a model's noisy guess
    target = clean[1::2] + rng.normal(0, noise, clean[1::2].shape).astype(np.float32)
    choice = sm.choose_smoothing(estimate, target)
    assert choice.split_px > 0 and choice.sigma_t > choice.sigma_t_coarse, choice
    assert f"detail coarser than {choice.split_px:g} px over {choice.sigma_t_coarse:g} frames" in choice.describe()
    # applied to a full-rate output with the same noise: closer to the truth than one window for every scale
    full = clean + rng.normal(0, noise, clean.shape).astype(np.float32)

    def streamed(s: sm.Smoothing) -> np.ndarray:
        return np.concatenate([part for _, part in sm.TemporalSmoother(s, len(full)).push(0, full)])

    one = min((sm.Smoothing(st, sxy) for st in sm.SIGMAS_T for sxy in sm.SIGMAS_XY),
              key=lambda s: float(np.mean((streamed(s) - clean) ** 2)))  # the best single window, by the truth
    assert np.mean((streamed(choice) - clean) ** 2) < 0.9 * np.mean((streamed(one) - clean) ** 2), one


def test_a_split_that_smooths_only_the_coarse_detail_is_applied(rng):
    """A fine window of none and a coarse one over time is still a smoothing (active, streamed, along a motion)."""
    choice = sm.Smoothing(0.0, 0.0, split_px=4.0, sigma_t_coarse=2.0)
    assert choice.active and choice.over_time and choice.radius == 6
    frames = rng.normal(10.0, 2.0, (30, 32, 32)).astype(np.float32)
    out = np.concatenate([p for _, p in sm.TemporalSmoother(choice, len(frames)).push(0, frames)])
    want = bands.combine(frames, sm.smooth_t(frames, 2.0), 4.0)
    want += (frames.mean(axis=(1, 2)) - want.mean(axis=(1, 2)))[:, None, None]
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-4)
    assert np.std(out - frames) > 0.1  # (not the input back)
