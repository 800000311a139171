"""Classical baselines: correct filters, correct edges, and they beat the raw stack."""

from __future__ import annotations

import numpy as np
import pytest

from napari_unet_att.errors import InputError
from napari_unet_att.evaluation import baselines, metrics
from napari_unet_att.evaluation.simulator import simulate


@pytest.fixture(scope="module")
def sim():
    return simulate(n_frames=40, size=32, photons=2.0, seed=5)


def test_gaussian3d_sigma_forms_and_units():
    rng = np.random.default_rng(0)
    x = rng.poisson(50, (10, 12, 12)).astype(np.uint16)
    out = baselines.gaussian3d(x, 1.0)
    assert out.dtype == np.float32 and out.shape == x.shape
    assert abs(float(out.mean()) - float(x.mean())) < 0.01 * float(x.mean())  # smoothing keeps the level
    np.testing.assert_allclose(baselines.gaussian3d(x, (1.0, 1.0, 1.0)), out)
    np.testing.assert_allclose(baselines.gaussian3d(x, (0, 0, 0)), x)
    # sigma_t only: every pixel is smoothed along time alone
    t_only = baselines.gaussian3d(x, (2.0, 0.0))
    from scipy.ndimage import gaussian_filter1d

    np.testing.assert_allclose(t_only, gaussian_filter1d(x.astype(np.float32), 2.0, axis=0), rtol=1e-5)
    with pytest.raises(InputError, match="sigma"):
        baselines.gaussian3d(x, (1.0, -1.0))
    with pytest.raises(InputError, match="T, Y, X"):
        baselines.gaussian3d(x[0], 1.0)


def test_moving_mean_values_and_edges():
    x = np.arange(6, dtype=np.float64)[:, None, None] * np.ones((1, 2, 3))
    out = baselines.moving_mean(x, 3)
    # interior: mean of t-1, t, t+1 = t; edges: mean of the frames that exist (0,1) -> 0.5, (4,5) -> 4.5
    np.testing.assert_allclose(out[:, 0, 0], [0.5, 1, 2, 3, 4, 4.5])
    np.testing.assert_allclose(baselines.moving_mean(x, 1), x)
    # a constant stack is unchanged at the edges too (no zero padding bias)
    np.testing.assert_allclose(baselines.moving_mean(np.full((5, 2, 2), 7.0), 5), 7.0)
    with pytest.raises(InputError, match="window"):
        baselines.moving_mean(x, 0)


def test_best_gaussian_improves_psnr(sim):
    raw = metrics.psnr(sim.noisy, sim.clean)
    sigma, den, score = baselines.best_gaussian(sim.noisy, sim.clean)
    assert den.shape == sim.noisy.shape and den.dtype == np.float32
    assert score == pytest.approx(metrics.psnr(den, sim.clean))
    assert score > raw + 6
    assert sigma[0] > 0 and len(sigma) == 3
    # the fast search finds the exhaustive optimum
    sigma_ex, _, score_ex = baselines.best_gaussian(sim.noisy, sim.clean, exhaustive=True)
    assert score == pytest.approx(score_ex, abs=0.05)
    # a user grid is honoured
    s1, _, _ = baselines.best_gaussian(sim.noisy, sim.clean, sigmas=[(1.0, 0.5)])
    assert s1 == (1.0, 0.5, 0.5)


def test_best_gaussian_on_the_bidirectional_layout():
    bi = simulate(n_frames=30, size=24, photons=2.0, seed=5, bidirectional=True)
    raw = metrics.psnr(bi.noisy, bi.clean)  # compared with the repeated rows
    sigma, den, score = baselines.best_gaussian(bi.noisy, bi.clean, y_scale=2.0)
    assert den.shape == bi.noisy.shape and score > raw + 6
    assert sigma[1] == pytest.approx(2 * sigma[2])
    assert score == pytest.approx(metrics.psnr(den, bi.clean_for_layout()))


def test_best_moving_mean_improves_psnr(sim):
    raw = metrics.psnr(sim.noisy, sim.clean)
    window, den, score = baselines.best_moving_mean(sim.noisy, sim.clean, windows=(1, 3, 5, 9))
    assert window in (3, 5, 9) and score > raw + 3
    assert score == pytest.approx(metrics.psnr(den, sim.clean), abs=1e-4)
