"""Signal specific to single frames, measured on the input (inference.frame_specific), and the smoothing it stops."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from napari_unet_att.inference import smoothing as sm
from napari_unet_att.inference.frame_specific import blend_cost, frame_specific_power, window_cost


def blobs(rng: np.random.Generator, n: int, size: int, sigma: float = 3.0) -> np.ndarray:
    """``n`` unit-peak Gaussian blobs ``(n, size, size)``, one each, away from the edges."""
    img = np.zeros((n, size, size), np.float32)
    img[np.arange(n), rng.integers(6, size - 6, n), rng.integers(6, size - 6, n)] = 1.0
    img = ndimage.gaussian_filter(img, (0, sigma, sigma))
    return img / img.max(axis=(1, 2), keepdims=True)


def flashing(rng: np.random.Generator, t: int = 96, size: int = 48, flash: float = 30.0) -> np.ndarray:
    """A still scene of 40 small cells and 8 larger ones that light up in single frames (a fast indicator at a low
    frame rate), noise-free."""
    static = 10.0 + 80.0 * blobs(rng, 40, size, 2.0).sum(axis=0)
    cells = blobs(rng, 8, size)
    lit = (rng.random((t, 8)) < 0.15) * flash
    return (static[None] + np.einsum("tc,cyx->tyx", lit, cells)).astype(np.float32)


def slow(rng: np.random.Generator, t: int = 96, size: int = 48) -> np.ndarray:
    """The same kind of scene whose brightness changes slowly (over ~10 frames), noise-free."""
    static = 10.0 + 80.0 * blobs(rng, 40, size, 2.0).sum(axis=0)
    return (static[None] * (1 + 0.3 * np.sin(np.arange(t) / 8.0))[:, None, None]).astype(np.float32)


def true_power(clean: np.ndarray) -> float:
    d = clean[1:-1].astype(np.float64) - 0.5 * (clean[:-2] + clean[2:])
    return float(np.mean(d**2) / 1.5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_noise_alone_has_no_frame_specific_power(seed):
    rng = np.random.default_rng(seed)
    clean = slow(rng)
    noise = rng.normal(0, 8.0, clean.shape)
    # resampled or low-passed data: neighbouring rows' and columns' noise correlated (0.5 at lag 1, none at 3)
    noise = ndimage.convolve1d(ndimage.convolve1d(noise, [0.5, 1.0, 0.5], axis=1), [0.5, 1.0, 0.5], axis=2)
    raw = rng.poisson(clean) + noise
    found = frame_specific_power(raw)
    assert found.power < 0.02 * true_power(raw), found  # the raw movie's frame-to-frame power is the noise's


@pytest.mark.parametrize("seed", [0, 1])
def test_frame_specific_power_is_measured_through_the_noise(seed):
    rng = np.random.default_rng(seed)
    clean = flashing(rng)
    found = frame_specific_power(rng.poisson(clean).astype(np.float32))
    # rows 3-4 apart see a blob of sigma 3 px at exp(-L^2 / 4 sigma^2) of its power: 0.5-0.6
    assert 0.4 * true_power(clean) < found.power < 1.1 * true_power(clean), (found, true_power(clean))
    assert 4.0 < found.blob_px2 < 25.0  # the blobs' own scale (sigma 3 px: 9), not the pixel's
    assert found.fine_share(2.0) < found.fine_share(4.0) < 0.5


def test_a_windows_cost_grows_with_the_window_and_a_blend_of_the_raw_input_costs_nothing():
    costs = [window_cost(s) for s in sm.SIGMAS_T]
    assert costs[0] == 0 and all(b > a for a, b in zip(costs, costs[1:], strict=False)) and costs[-1] < 2.0
    assert blend_cost(0.0, 0.0, 4.0) == window_cost(4.0)
    assert blend_cost(1.0, 0.0, 4.0) == pytest.approx(0.0)  # all of the input: every frame's own signal kept
    assert blend_cost(0.5, 2.0, 4.0) < window_cost(4.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cells_lighting_up_in_single_frames_are_not_smoothed_away(seed):
    # a model that passes each frame's signal through, with some noise left: the even frames' result predicts the
    # odd frames, whose flashes are their own; the calibration used to credit smoothing with removing the even
    # frames' flashes, and chose long windows that erase every transient from the full-rate output
    rng = np.random.default_rng(seed)
    clean = flashing(rng)
    raw = rng.poisson(clean).astype(np.float32)
    estimate = clean[0::2] + rng.normal(0, 2.0, clean[0::2].shape).astype(np.float32)
    choice = sm.choose_smoothing(estimate, raw[1::2], inputs=raw[0::2])
    coarse = choice.sigma_t_coarse if choice.split_px > 0 else choice.sigma_t
    assert coarse <= 0.5 and choice.blend == 0, choice
    # the same model on slowly changing cells: smoothing over time still chosen
    clean = slow(rng)
    raw = rng.poisson(clean).astype(np.float32)
    estimate = clean[0::2] + rng.normal(0, 2.0, clean[0::2].shape).astype(np.float32)
    assert sm.choose_smoothing(estimate, raw[1::2], inputs=raw[0::2]).sigma_t >= 2.0
