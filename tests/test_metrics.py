"""Metric sanity: known values, invariances, identities, layouts and JSON output."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from napari_unet_att.errors import InputError
from napari_unet_att.evaluation import metrics


@pytest.fixture
def pair():
    rng = np.random.default_rng(0)
    ref = rng.uniform(0, 100, (6, 16, 16))
    noisy = ref + rng.normal(0, 5, ref.shape)
    return noisy, ref


def test_psnr_known_value_and_identity(pair):
    _, ref = pair
    ref = ref.copy()
    ref.flat[0], ref.flat[1] = 0.0, 100.0  # range exactly 100
    x = ref + 2.0  # MSE = 4 -> PSNR = 10 log10(100^2 / 4)
    assert metrics.psnr(x, ref) == pytest.approx(10 * math.log10(100**2 / 4))
    assert metrics.psnr(x, ref, data_range=10.0) == pytest.approx(10 * math.log10(100 / 4))
    np.testing.assert_allclose(metrics.psnr_frames(x, ref), 10 * math.log10(100**2 / 4))
    assert metrics.psnr(ref, ref) == math.inf
    assert metrics.psnr(ref.astype(np.uint16), ref.astype(np.uint16)) == math.inf  # integer input, no wrap
    assert metrics.snr3d(ref, ref) == math.inf
    assert metrics.nrmse(ref, ref) == 0.0


def test_snr3d_and_nrmse_known_values():
    ref = np.full((2, 4, 4), 3.0)
    x = ref + 1.0  # RSS(ref) / RSS(diff) = 3
    assert metrics.snr3d(x, ref) == pytest.approx(20 * math.log10(3))
    assert metrics.nrmse(x, ref) == pytest.approx(1 / 3)
    assert metrics.nrmse(x, ref, "mean") == pytest.approx(1 / 3)
    with pytest.raises(InputError, match="normalization"):
        metrics.nrmse(x, ref, "std")


def test_affine_psnr_is_invariant_to_scale_and_offset(pair):
    noisy, ref = pair
    base = metrics.psnr_affine(noisy, ref)
    assert metrics.psnr_affine(3.7 * noisy - 250.0, ref) == pytest.approx(base, abs=1e-9)
    assert metrics.psnr_affine(-0.01 * noisy + 1e4, ref) == pytest.approx(base, abs=1e-6)
    # plain PSNR punishes the scale; the affine fit recovers it exactly for an exact affine map
    assert metrics.psnr(3.7 * noisy - 250.0, ref) < base - 10
    assert metrics.psnr_affine(2 * ref + 5, ref) > 250  # exact up to rounding
    a, b = metrics.affine_fit(2 * ref + 5, ref)
    assert a == pytest.approx(0.5) and b == pytest.approx(-2.5)


def test_ssim_per_frame(pair):
    noisy, ref = pair
    s = metrics.ssim_frames(ref, ref)
    assert s.shape == (6,) and np.allclose(s, 1.0)
    sn = metrics.ssim_frames(noisy, ref)
    assert np.all(sn < 1.0) and np.all(sn > 0)
    assert np.all(metrics.ssim_frames(ref + 4 * (noisy - ref), ref) < sn - 0.1)  # more noise, lower SSIM
    # a frame smaller than the 11-tap window still works (uniform window)
    assert np.allclose(metrics.ssim_frames(ref[:, :7, :9], ref[:, :7, :9]), 1.0)
    # X is not a channel axis: swapping two columns changes the result
    swapped = ref.copy()
    swapped[..., [0, 8]] = swapped[..., [8, 0]]
    assert np.all(metrics.ssim_frames(swapped, ref) < 1.0)


def test_chunking_does_not_change_results(pair, monkeypatch):
    noisy, ref = pair
    full = (metrics.psnr(noisy, ref), metrics.psnr_affine(noisy, ref), metrics.snr3d(noisy, ref))
    frames = metrics.adjacent_frame_corr(noisy)
    monkeypatch.setattr(metrics, "FRAMES_PER_CHUNK", 4)  # 6 frames -> chunks of 4 and 2
    monkeypatch.setattr(metrics._pairs, "__defaults__", (4,))
    monkeypatch.setattr(metrics._frames, "__defaults__", (4,))
    chunked = (metrics.psnr(noisy, ref), metrics.psnr_affine(noisy, ref), metrics.snr3d(noisy, ref))
    np.testing.assert_allclose(chunked, full, rtol=1e-12)
    np.testing.assert_allclose(metrics.adjacent_frame_corr(noisy), frames, rtol=1e-12)


def test_traces_and_trace_correlation(pair):
    noisy, ref = pair
    labels = np.zeros((16, 16), np.int32)
    labels[2:6, 2:6] = 3
    labels[8:12, 9:14] = 7
    stack = np.stack([labels == 3, labels == 7])
    tr = metrics.extract_traces(ref, labels)
    assert tr.shape == (2, 6)
    np.testing.assert_allclose(tr[0], ref[:, 2:6, 2:6].mean(axis=(1, 2)))
    np.testing.assert_allclose(metrics.extract_traces(ref, stack), tr)
    np.testing.assert_allclose(metrics.trace_correlation(ref, ref, labels), 1.0)
    np.testing.assert_allclose(metrics.trace_correlation(5 * ref + 1, ref, stack), 1.0)
    np.testing.assert_allclose(metrics.trace_correlation(ref, tr, labels), 1.0)  # ready-made traces
    r = metrics.trace_correlation(noisy, ref, labels)
    assert np.all(r < 1.0) and np.all(r > 0.5)
    with pytest.raises(InputError, match="masks cover"):
        metrics.extract_traces(ref, labels[:, :8])
    with pytest.raises(InputError, match="no ROI"):
        metrics.extract_traces(ref, np.zeros((16, 16), int))


def test_reference_free_correlations():
    rng = np.random.default_rng(1)
    static = rng.uniform(0, 1, (12, 12))
    clean = np.broadcast_to(static, (10, 12, 12)).copy()
    noisy = clean + rng.normal(0, 0.3, clean.shape)
    assert np.allclose(metrics.corr_with_mean(clean), 1.0)
    assert np.allclose(metrics.adjacent_frame_corr(clean), 1.0)
    adj = metrics.adjacent_frame_corr(noisy)
    assert adj.shape == (9,) and np.all(adj < 0.9)
    assert metrics.corr_with_mean(noisy).mean() > adj.mean()  # the mean is less noisy than a neighbour frame
    # known value: frames that alternate sign have r = -1 with their neighbour
    alt = np.stack([static - 0.5, 0.5 - static, static - 0.5])
    np.testing.assert_allclose(metrics.adjacent_frame_corr(alt), -1.0)


def test_bidirectional_layout_is_compared_with_repeated_rows(pair):
    noisy, ref = pair
    bidir = np.repeat(ref, 2, axis=1)
    assert metrics.psnr(bidir, ref) == math.inf
    assert np.allclose(metrics.ssim_frames(bidir, ref), 1.0)
    labels = np.zeros((16, 16), int)
    labels[3:7, 3:7] = 1
    np.testing.assert_allclose(metrics.extract_traces(bidir, labels), metrics.extract_traces(ref, labels))
    with pytest.raises(InputError, match="does not match"):
        metrics.psnr(noisy[:, :15], ref)


def test_bad_inputs_raise_input_errors(pair):
    noisy, ref = pair
    with pytest.raises(InputError, match="constant"):
        metrics.psnr(noisy, np.zeros_like(ref))
    with pytest.raises(InputError, match="T, Y, X"):
        metrics.psnr(noisy[0], ref[0])


def test_evaluate_is_json_and_shows_improvement(pair):
    noisy, ref = pair
    rng = np.random.default_rng(2)
    denoised = ref + rng.normal(0, 1, ref.shape)
    labels = np.zeros((16, 16), int)
    labels[2:8, 2:8] = 1
    labels[9:14, 9:14] = 2
    out = metrics.evaluate(denoised, reference=ref, raw=noisy, masks=labels)
    text = json.dumps(out, allow_nan=False)
    assert json.loads(text) == out
    d, r = out["denoised"], out["raw"]
    for key in ("psnr", "psnr_affine", "ssim", "nrmse", "snr3d", "trace_correlation", "corr_with_mean"):
        assert key in d and key in r
    assert d["psnr"] > r["psnr"] and out["improvement"]["psnr"] == pytest.approx(d["psnr"] - r["psnr"])
    assert d["ssim"] > r["ssim"]
    assert len(d["per_frame"]["psnr"]) == 6 and len(d["per_frame"]["adjacent_frame_corr"]) == 5
    assert len(d["per_roi"]["trace_correlation"]) == 2
    assert d["psnr"] == pytest.approx(metrics.psnr(denoised, ref))
    # identical stacks: infinite PSNR becomes None (strict JSON), reference-free only without a reference
    same = metrics.evaluate(ref, reference=ref, rois=labels)
    assert same["denoised"]["psnr"] is None and same["denoised"]["ssim"] == pytest.approx(1.0)
    free = metrics.evaluate(denoised)
    assert set(free["denoised"]) == {"corr_with_mean", "adjacent_frame_corr", "per_frame", "per_roi"}
    json.dumps(free, allow_nan=False)


def test_evaluate_on_a_simulation(tiny_sim):
    out = metrics.evaluate(tiny_sim.clean, reference=tiny_sim.clean, raw=tiny_sim.noisy, masks=tiny_sim.masks)
    assert out["raw"]["psnr"] < 40 and out["denoised"]["psnr"] is None
    assert out["denoised"]["trace_correlation"] == pytest.approx(1.0)
    assert 0 < out["raw"]["trace_correlation"] < 1.0
