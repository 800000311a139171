"""The simulator: reproducible, right photon level, right layouts, right motion."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

from napari_unet_att.errors import InputError
from napari_unet_att.evaluation.simulator import SimResult, simulate


def _small(**kw) -> SimResult:
    args = {"n_frames": 20, "size": 32, "photons": 4.0, "seed": 1}
    args.update(kw)
    return simulate(**args)


def test_outputs_have_documented_shapes_dtypes_and_units():
    r = _small(n_cells=5)
    assert r.noisy.shape == (20, 32, 32) and r.noisy.dtype == np.uint16
    assert r.clean.shape == (20, 32, 32) and r.clean.dtype == np.float32
    assert r.traces.shape == (5, 20) and r.spikes.shape == (5, 20)
    assert r.masks.shape == (5, 32, 32) and r.masks.dtype == bool and r.masks.any(axis=(1, 2)).all()
    assert r.shifts.shape == (20, 2)
    # clean is the expected value of noisy, in the same ADU units
    assert abs(float(r.noisy.mean()) - float(r.clean.mean())) < 0.05 * float(r.clean.mean() - r.params["offset"])
    assert r.clean.min() >= r.params["offset"]
    json.dumps(r.params)  # serialisable
    lab = r.labels()
    assert lab.shape == (32, 32) and lab.max() == 5


def test_same_seed_same_movie_and_different_seed_different_movie():
    a, b, c = _small(seed=7), _small(seed=7), _small(seed=8)
    np.testing.assert_array_equal(a.noisy, b.noisy)
    np.testing.assert_array_equal(a.clean, b.clean)
    np.testing.assert_array_equal(a.masks, b.masks)
    assert not np.array_equal(a.noisy, c.noisy)
    assert not np.array_equal(a.masks, c.masks)


def test_same_seed_keeps_cells_across_photon_levels():
    lo, hi = _small(photons=1.0), _small(photons=10.0)
    np.testing.assert_array_equal(lo.masks, hi.masks)
    np.testing.assert_allclose(lo.traces, hi.traces)
    # clean scales with the photon level once the offset is removed
    np.testing.assert_allclose(hi.expected_photons(), 10 * lo.expected_photons(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("photons", [0.5, 2.0, 10.0])
def test_photon_level_is_as_requested(photons):
    r = _small(photons=photons, n_frames=30)
    g, o = r.params["gain"], r.params["offset"]
    measured = (float(r.noisy.mean()) - o) / g
    assert abs(measured - photons) < 0.2 * photons
    assert abs(float(r.expected_photons().mean()) - photons) < 1e-3 * photons
    # shot noise: the variance in photons^2 is about the mean (plus a little read noise)
    resid = (r.noisy.astype(np.float64) - r.clean) / g
    var_expected = photons + (r.params["read_noise"] / g) ** 2 + 1 / (12 * g * g)
    assert abs(resid.var() - var_expected) < 0.15 * var_expected


def test_values_clip_instead_of_wrapping():
    r = _small(photons=5000.0, n_frames=4)  # far beyond 65535 ADU at the brightest pixels
    assert r.noisy.max() == 65535
    bright = r.clean > 70000
    assert bright.any() and (r.noisy[bright] == 65535).all()


def test_bidirectional_rows_share_content_with_independent_noise():
    r = _small(bidirectional=True, photons=3.0, n_frames=30)
    assert r.noisy.shape == (30, 64, 32)
    fwd = r.noisy[:, 0::2].astype(np.float64)
    bwd = r.noisy[:, 1::2].astype(np.float64)
    assert abs(fwd.mean() - bwd.mean()) < 0.02 * fwd.mean()
    e_f, e_b = (fwd - r.clean).ravel(), (bwd - r.clean).ravel()
    assert abs(np.corrcoef(e_f, e_b)[0, 1]) < 0.03
    # the content is the same: each pass correlates with the clean movie as well as the other does
    assert np.corrcoef(fwd.ravel(), r.clean.ravel())[0, 1] > 0.5
    lay = r.clean_for_layout()
    assert lay.shape == r.noisy.shape
    np.testing.assert_array_equal(lay[:, 0::2], lay[:, 1::2])
    # same cells and activity as the ordinary layout with the same seed
    np.testing.assert_allclose(r.clean, _small(photons=3.0, n_frames=30).clean)


def test_backward_mirrored_reverses_backward_lines_only():
    plain = _small(bidirectional=True, n_frames=6)
    mirrored = _small(bidirectional=True, n_frames=6, backward_mirrored=True)
    np.testing.assert_array_equal(mirrored.noisy[:, 0::2], plain.noisy[:, 0::2])
    np.testing.assert_array_equal(mirrored.noisy[:, 1::2], plain.noisy[:, 1::2, ::-1])
    lay = mirrored.clean_for_layout()
    np.testing.assert_array_equal(lay[:, 1::2], mirrored.clean[:, :, ::-1])


def _moved_error(moving: SimResult, still: SimResult, t: int, shift) -> tuple[float, float]:
    """Mean |error| inside the frame of ``moving[t]`` against ``still[t]`` shifted by ``shift`` and not shifted."""
    k = moving.params["photon_scale"] / still.params["photon_scale"]  # the photon scaling differs slightly
    ref = (still.clean[t].astype(np.float64) - still.params["offset"]) * k
    got = moving.clean[t] - moving.params["offset"]
    m = int(np.ceil(np.abs(shift).max())) + 3
    inner = (slice(m, -m), slice(m, -m))
    moved = ndimage.shift(ref, shift, order=3)
    return float(np.abs(got - moved)[inner].mean()), float(np.abs(got - ref)[inner].mean())


@pytest.mark.parametrize("kind", ["walk", "jitter"])
def test_motion_has_requested_std_and_moves_the_content(kind):
    still = _small(n_frames=40)
    moving = _small(n_frames=40, motion_std=1.5, motion=kind)
    np.testing.assert_array_equal(still.masks, moving.masks)  # the same cells, only moved
    np.testing.assert_array_equal(still.traces, moving.traces)
    assert np.all(np.abs(moving.shifts.std(axis=0) - 1.5) < 0.15)
    assert np.all(still.shifts == 0)
    if kind == "walk":  # a walk is smooth in time, jitter is not
        assert np.abs(np.diff(moving.shifts, axis=0)).mean() < 0.5 * np.abs(moving.shifts).mean()
    level = float(np.mean(still.clean - still.params["offset"]))
    for t in (3, 21, 37):
        err_moved, err_still = _moved_error(moving, still, t, moving.shifts[t])
        assert err_moved < 0.01 * level < err_still


def test_line_motion_is_shared_by_forward_and_backward_lines():
    r = _small(n_frames=8, motion_std=2.0, motion="jitter", line_motion=True, bidirectional=True)
    still = _small(n_frames=8)
    lay = r.clean_for_layout()
    np.testing.assert_array_equal(lay[:, 0::2], lay[:, 1::2])
    # line y of frame t moved by s_t + y / Y (s_{t+1} - s_t): check the middle line against a whole-frame shift
    t = int(np.argmax(np.abs(np.diff(r.shifts, axis=0)).sum(axis=1)))
    mid_shift = r.shifts[t] + 0.5 * (r.shifts[t + 1] - r.shifts[t])
    k = r.params["photon_scale"] / still.params["photon_scale"]
    ref = (still.clean[t].astype(np.float64) - still.params["offset"]) * k
    got = r.clean[t, 16] - r.params["offset"]
    m = int(np.ceil(np.abs(r.shifts).max())) + 3
    err_mid = np.abs(got - ndimage.shift(ref, mid_shift, order=3)[16])[m:-m].mean()
    err_first = np.abs(got - ndimage.shift(ref, r.shifts[t], order=3)[16])[m:-m].mean()
    assert err_mid < 0.2 * err_first


def test_shape_keyword_and_bad_arguments():
    assert simulate(shape=(5, 16, 24), photons=1.0).noisy.shape == (5, 16, 24)
    with pytest.raises(InputError, match="photons"):
        simulate(n_frames=5, size=16, photons=0)
    with pytest.raises(InputError, match="motion"):
        simulate(n_frames=5, size=16, motion="spin")
    with pytest.raises(InputError, match="8 x 8"):
        simulate(n_frames=5, size=4)
