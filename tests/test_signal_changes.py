"""The signal's changes over time, measured through the noise (inference.signal_changes), and the smoothing they
stop."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from napari_unet_att.inference import smoothing as sm
from napari_unet_att.inference.signal_changes import SignalChanges, measure


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


def variance(movie: np.ndarray) -> float:
    """Each pixel's variance over time, averaged."""
    return float(np.mean(np.var(movie.astype(np.float64), axis=0)))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_noise_alone_shows_no_changes(seed):
    rng = np.random.default_rng(seed)
    clean = np.broadcast_to(10.0 + 80.0 * blobs(rng, 40, 48, 2.0).sum(axis=0), (96, 48, 48))
    noise = rng.normal(0, 8.0, clean.shape)
    # resampled or low-passed data: neighbouring rows' and columns' noise correlated (0.5 at lag 1, none at 3)
    noise = ndimage.convolve1d(ndimage.convolve1d(noise, [0.5, 1.0, 0.5], axis=1), [0.5, 1.0, 0.5], axis=2)
    raw = rng.poisson(clean) + noise
    found = measure(raw)
    assert abs(found.covariance[0]) < 0.01 * variance(raw)
    assert all(abs(found.cost(s)) < 0.01 * variance(raw) for s in sm.SIGMAS_T)


@pytest.mark.parametrize("seed", [0, 1])
def test_the_signals_changes_are_measured_through_the_noise(seed):
    rng = np.random.default_rng(seed)
    clean = flashing(rng)
    found = measure(rng.poisson(clean).astype(np.float32))
    # rows 3-4 apart see a blob of sigma 3 px at exp(-L^2 / 4 sigma^2) of its power: 0.5-0.6
    assert 0.4 * variance(clean) < found.covariance[0] < 1.1 * variance(clean), (found.covariance[:3], variance(clean))
    assert abs(found.covariance[1]) < 0.2 * found.covariance[0]  # flashes of one frame: nothing the next frame shares
    assert 4.0 < found.blob_px2 < 25.0  # the blobs' own scale (sigma 3 px: 9), not the pixel's
    assert found.fine_share(2.0) < found.fine_share(4.0) < 0.5


def rings(rng: np.random.Generator, t: int = 160, size: int = 64) -> np.ndarray:
    """A still scene of 12 ring-shaped cells (radius 4 px: cytosolic GCaMP around a dark nucleus) whose brightness
    rises in bursts and decays over ~4 frames, noise-free."""
    yy, xx = np.mgrid[:size, :size]
    cells = np.zeros((12, size, size), np.float32)
    for cell, (y, x) in zip(cells, rng.integers(8, size - 8, (12, 2)), strict=True):
        cell[:] = np.exp(-((np.hypot(yy - y, xx - x) - 4.0) ** 2) / 2.0)
    bursts = (rng.random((t, 12)) < 0.08) * rng.uniform(20, 60, (t, 12))
    activity = ndimage.convolve1d(bursts, np.exp(-np.arange(12) / 4.0), axis=0, origin=-5)  # (causal)
    return (10.0 + np.einsum("tc,cyx->tyx", activity + 5.0, cells)).astype(np.float32)


@pytest.mark.parametrize("seed", [0, 1])
def test_the_fine_share_of_the_changes_is_measured(seed):
    # rings' changes are finer than a blob of their size says: the blob model's share was 1.2-11x too small on the
    # independent simulator and its fine windows too long (jGCaMP8m at 5 Hz: -1.4 dB against no smoothing)
    rng = np.random.default_rng(seed)
    clean = rings(rng)
    truth = measure(clean, splits=(2.0, 4.0)).fine_shares
    found = measure(rng.poisson(clean).astype(np.float32), splits=(2.0, 4.0))
    for split in (2.0, 4.0):
        x = clean - clean.mean(axis=0)
        fine = x - ndimage.gaussian_filter(x, (0, split, split), truncate=4.0)
        changed = [variance(a[4:] - a[:-4]) for a in (fine, x)]  # the share of what changes over 4 frames
        assert truth[split] == pytest.approx(changed[0] / changed[1], abs=0.05)
        assert found.fine_share(split) == pytest.approx(truth[split], abs=0.08), (split, found.fine_shares, truth)
        assert found.fine_share(split) > SignalChanges(blob_px2=found.blob_px2).fine_share(split) + 0.1


def test_what_a_window_costs():
    flashes = SignalChanges(np.r_[1.0, np.zeros(60)])  # changes in single frames, unit power
    costs = [flashes.cost(s) for s in sm.SIGMAS_T]
    assert costs[0] == 0 and all(b > a for a, b in zip(costs, costs[1:], strict=False)) and costs[-1] < 2.0
    assert costs[2] == pytest.approx((1 - 0.399) ** 2 + 0.399**2 * 0 + 0.242**2 * 2 + 0.054**2 * 2 + 1 - (
        0.107**2 * 2 + 0.786**2), abs=0.01)  # full rate sigma 1 removes, the half-rate sigma 0.5 was credited
    assert flashes.cost(4.0, 1.0, 0.0) == pytest.approx(0.0)  # all of the raw input: every frame's own signal kept
    assert flashes.cost(4.0, 0.5, 2.0) < flashes.cost(4.0)
    steady = SignalChanges(np.ones(60))  # a change that lasts: no window removes it, and none was credited
    assert all(abs(steady.cost(s)) < 1e-9 for s in sm.SIGMAS_T)
    mixed = SignalChanges(np.ones(60), interpolated=0.5)  # (along a motion: the half-rate result partly interpolated)
    assert all(abs(mixed.cost(s)) < 1e-9 for s in sm.SIGMAS_T)
    # a change that fades over frames: charged less where the half-rate result is taken to interpolate it
    fading = np.exp(-np.arange(60) / 3.0)
    assert 0 < SignalChanges(fading, interpolated=0.5).cost(4.0) < SignalChanges(fading).cost(4.0)


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


def scan_lines(physical: np.ndarray) -> np.ndarray:
    """A bidirectional scan's interleaved lines ``(T, 2N, N)`` of physical frames: every line scanned forward, then
    backward (stored x-reversed)."""
    lines = np.repeat(physical, 2, axis=1)
    lines[:, 1::2] = lines[:, 1::2, ::-1]
    return lines


@pytest.mark.parametrize("seed", [0, 1])
def test_a_scans_interleaved_lines_keep_their_flashes_too(seed):
    # the same calibration on a scan's interleaved lines (each direction smoothed on its own): the changes are
    # measured on its physical frames; uncharged, the flashes were smoothed away
    rng = np.random.default_rng(seed)
    for scene, most, least in ((flashing, 0.5, 0.0), (slow, np.inf, 2.0)):
        clean = scan_lines(scene(rng))
        raw = rng.poisson(clean).astype(np.float32)
        estimate = clean[0::2] + rng.normal(0, 2.0, clean[0::2].shape).astype(np.float32)
        choice = sm.choose_smoothing(estimate, raw[1::2], flip=True, inputs=raw[0::2])
        assert least <= choice.sigma_t <= most and choice.blend == 0, (scene.__name__, choice)


def test_frames_too_small_to_measure_charge_nothing():
    rng = np.random.default_rng(0)
    for frames, margin in ((rng.normal(size=(16, 20, 4)), 2), (rng.normal(size=(4, 32, 32)), 0),
                           (np.zeros((16, 32, 32)), 0), (rng.normal(size=(16, 6, 32)), 0)):
        found = measure(frames, margin)
        assert not found.measured and found.cost(4.0) == 0.0
