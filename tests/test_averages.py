"""Each pixel's time average kept (inference.averages): still detail a model blurred away is put back."""

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
from napari_unet_att.inference import average_filter as af
from napari_unet_att.inference import averages as av


class Blur(torch.nn.Module):
    """A 5 x 5 mean over each frame: fine still structure is lost, as a pretrained model loses it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = torch.full((1, 1, 1, 5, 5), 1 / 25, dtype=x.dtype)
        return torch.nn.functional.conv3d(torch.nn.functional.pad(x, (2, 2, 2, 2, 0, 0), mode="replicate"), k)


def recording(rng: np.random.Generator, t: int = 160, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Still fine structure (single bright pixels on a background) under Poisson noise; (noisy, clean)."""
    clean = np.full((size, size), 20.0, np.float32)
    clean[rng.integers(0, size, 40), rng.integers(0, size, 40)] = 80.0
    clean = np.broadcast_to(clean, (t, size, size)).astype(np.float32)
    return rng.poisson(clean).astype(np.float32), clean


def off(**kw) -> InferConfig:
    return InferConfig(device="cpu", smoothing="off", registration="off", give_back="off", **kw)


def mse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean((np.asarray(a, np.float64) - b) ** 2))


def sums(res: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`av.residual_means` of residual frames ``res`` (T, Y, X), one chunk."""
    edges = np.array([0, len(res)])
    return av.residual_means(*av.residual_sums(res, np.zeros_like(res), edges), edges)


def test_the_noise_image_carries_the_means_noise_and_none_of_its_detail(rng):
    res = rng.normal(0, 3, (300, 64, 64))
    res += np.linspace(-5, 5, 64)[None, None]  # a missing average, the same in both sets of blocks
    m, d = sums(res)
    assert np.allclose(m[0].mean(axis=0), np.linspace(-5, 5, 64), atol=0.2)
    assert abs(d.std() / (3 / np.sqrt(300)) - 1) < 0.05 and abs(d.mean()) < 0.01  # noise of m's size, no detail


def test_a_smooth_missing_average_is_smoothed_a_sharp_one_is_not(rng):
    """The filter (a weighted sum of Gaussians) takes out more of the noise where the missing detail is smooth."""
    n, size = 200, 96
    smooth_detail = ndimage.gaussian_filter(rng.normal(0, 4, (size, size)), 1.5)  # smooth, as a microscope's image
    sharp_detail = np.zeros((size, size))
    sharp_detail[rng.integers(0, size, 300), rng.integers(0, size, 300)] = 1.0  # single pixels
    for detail, smoothed in ((smooth_detail, True), (sharp_detail, False)):  # (a 0.3-px Gaussian keeps 80%)
        m, d = sums(rng.normal(0, 2, (n, size, size)) + detail)
        images, gain, _ = af.choose_correction(m, d)
        raw_error = mse(m[0] - m[0].mean(), detail - detail.mean())
        assert gain > 0.5, gain
        assert mse(images[0], detail - detail.mean()) < (0.6 if smoothed else 0.95) * raw_error
        # at least as close as the best single Gaussian, its gain chosen with the truth
        best_single = min(mse(g * af.blurred(m[:1] - m[0].mean(), s, False)[0], detail - detail.mean())
                          for s in af.SIGMAS_XY for g in np.linspace(0, 1, 21))
        assert mse(images[0], detail - detail.mean()) < 1.05 * best_single


def test_pure_noise_gets_no_correction(rng):
    m, d = sums(rng.normal(0, 2, (200, 64, 64)))
    images, gain, edge_gain = af.choose_correction(m, d)
    assert abs(gain) < 0.2 and edge_gain == 0 and np.sqrt(np.mean(images ** 2)) < 0.2 * np.sqrt(np.mean(m ** 2))


class DarkEdges(torch.nn.Module):
    """:class:`Blur`, then 1 (normalised units; about a count here) darker in the two outermost rows and columns."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = Blur()(x)
        edge = torch.ones_like(y, dtype=torch.bool)
        edge[..., 2:-2, 2:-2] = False
        return y - 1.0 * edge


def edge_minus_interior(stack: np.ndarray) -> float:
    mean = stack.mean(axis=0)
    return float(mean[[0, 1, -2, -1]].mean() - mean[8:-8, 8:-8].mean())


def test_edge_groups_are_rings_or_sides():
    rings = af.edge_groups((32, 40), 2, sides=False)
    assert rings[0, 5] == 1 and rings[1, 5] == 2 and rings[2, 5] == 0 and rings[16, 39] == 1
    assert np.count_nonzero(rings == 1) == 2 * (32 + 40) - 4
    sides = af.edge_groups((32, 40), 2, sides=True)
    assert sides[0, 5] == 1 and sides[31, 5] == 3 and sides[16, 0] == 5 and sides[16, 38] == 8
    assert set(np.unique(sides)) == set(range(9))
    lines = af.edge_groups((32, 40), 2, sides=False, lines=True)
    assert lines[0, 5] == 1 and lines[1, 5] == 2 + 8 and lines[31, 5] == 1 + 8
    assert af.edge_groups((7, 40), 2, sides=False) is None  # frames of little more than edges: none
    means = af.along_edges(np.arange(32 * 40, dtype=float).reshape(1, 32, 40), rings)
    assert np.isclose(means[0, 0, 3], means[0, 31, 39]) and np.isclose(means.mean(), 0)  # a ring shares its mean
    assert np.isclose(means[0, 0, 3] - means[0, 16, 20], np.arange(32 * 40).reshape(32, 40)[rings == 1].mean() - 639.5)


def test_a_bias_along_the_edges_is_removed_on_pure_noise(rng):
    noisy = rng.poisson(20.0, (200, 64, 64)).astype(np.float32)
    den = model(DarkEdges())
    said = []
    kept = infer.denoise(noisy, den, off(), progress=said.append)
    bare = infer.denoise(noisy, den, off(keep_average="off"))
    assert edge_minus_interior(bare) < -0.5  # the model's bias
    assert abs(edge_minus_interior(kept)) < 0.05  # gone, within the pooled noise (the previous code left 0.15-0.19)
    assert abs(edge_minus_interior(noisy)) < 0.05
    assert np.allclose(kept.mean(axis=(1, 2)), noisy.mean(axis=(1, 2)), atol=1e-3)  # frame means kept
    assert any("edges" in (e.message or "") for e in said if (e.message or "").startswith(av.SAID))


def test_no_edge_bias_none_removed_and_none_looked_for_in_the_tissue_frame(rng):
    said = []
    infer.denoise(rng.poisson(20.0, (200, 64, 64)).astype(np.float32), model(Blur()), off(), progress=said.append)
    assert not any("edges" in (e.message or "") for e in said)  # a model with no border bias: nothing "removed"
    res = rng.normal(0, 3, (300, 64, 64))
    res[:, :2] += 2.0  # a bias along the top rows
    m, d = sums(res)
    assert af.choose_correction(m, d)[2] > 0.5 and af.choose_correction(m, d, edges=False)[2] == 0


def test_the_description_says_what_the_filter_keeps():
    images, centres = np.zeros((1, 4, 4), np.float32), np.array([0.0])
    assert "50% of its smooth part" in av.AverageCorrection(images, centres, 0.5, 1.0).describe()
    assert "fine part only" in av.AverageCorrection(images, centres, 0.001, 1.0).describe()  # a band-pass
    edges_only = av.AverageCorrection(images, centres, 0.0, 1.0, edge_gain=0.9).describe()
    assert "edges removed (90% of it" in edges_only and "restored" not in edges_only


def test_chunks_and_their_interpolation():
    assert list(av.chunk_edges(100)) == [0, 100] and list(av.chunk_edges(700)) == [0, 700]
    edges = av.chunk_edges(2000)
    assert len(edges) == 5 and edges[0] == 0 and edges[-1] == 2000 and np.all(np.diff(edges) > 400)
    images = np.stack([np.array([[0.0, 2.0]]), np.array([[4.0, 2.0]])]).astype(np.float32)
    corr = av.AverageCorrection(images, np.array([10.0, 30.0]), 1.0, 1.0)
    frames = av.correction_frames(corr, 0, 40)
    assert np.allclose(frames.mean(axis=(1, 2)), 0, atol=1e-6)  # frame means untouched
    assert np.allclose(frames[:11, 0, 1] - frames[:11, 0, 0], 2.0)  # constant before the first centre
    assert np.allclose(frames[20, 0, 1] - frames[20, 0, 0], 0.0)  # halfway
    assert np.allclose(frames[30:, 0, 1] - frames[30:, 0, 0], -2.0)


def test_still_detail_a_model_blurred_comes_back(rng):
    noisy, clean = recording(rng)
    den = model(Blur())
    said = []
    kept = infer.denoise(noisy, den, off(), progress=said.append)
    bare = infer.denoise(noisy, den, off(keep_average="off"))
    assert mse(kept, clean) < 0.2 * mse(bare, clean)  # the bright pixels are back
    assert mse(kept, clean) < 0.5 * mse(noisy, clean)  # with far less noise than the raw frames
    assert np.allclose(kept.mean(axis=(1, 2)), noisy.mean(axis=(1, 2)), atol=1e-3)  # frame means kept
    assert any(e.message.startswith(av.SAID + "restored") for e in said)


def test_a_model_that_misses_nothing_is_left_alone(rng):
    noisy, _ = recording(rng)
    out = infer.denoise(noisy, model(Identity()), off())
    assert np.array_equal(out, noisy)


def test_a_drifting_baseline_is_followed_chunk_by_chunk(rng):
    t = 2048
    clean = np.full((t, 16, 16), 20.0, np.float32)
    clean[:, 8, 8] = np.linspace(20, 220, t)  # a pixel that brightens slowly (the blur spreads it)
    noisy = rng.poisson(clean).astype(np.float32)
    den = model(Blur())
    kept = infer.denoise(noisy, den, off())
    bare = infer.denoise(noisy, den, off(keep_average="off"))
    for part in (slice(300, 500), slice(1500, 1700)):  # between chunk centres: linear, as the drift
        assert mse(kept[part, 8, 8], clean[part, 8, 8]) < 0.1 * mse(bare[part, 8, 8], clean[part, 8, 8])


def test_integer_file_output_is_corrected_in_place(tmp_path, rng):
    noisy, clean = recording(rng)
    src = tmp_path / "in.tif"
    tifffile.imwrite(src, noisy.astype(np.uint16))
    dst = tmp_path / "out.tif"
    infer.denoise_file(src, dst, model(Blur()), off(output_dtype="input"))
    out = tifffile.imread(dst)
    bare = infer.denoise(noisy.astype(np.uint16), model(Blur()), off(output_dtype="input", keep_average="off"))
    assert out.dtype == np.uint16 and mse(out, clean) < 0.2 * mse(bare, clean)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.tif", "out.tif"]


@pytest.mark.parametrize("scale", [1e-30, 1e30])
def test_the_correction_does_not_depend_on_the_intensity_scale(scale, rng):
    noisy, _ = recording(rng)
    den = model(Blur())
    ref = infer.denoise(noisy, den, off(normalization="input"))
    out = infer.denoise((noisy * scale).astype(np.float32), den, off(normalization="input"))
    assert np.all(np.isfinite(out)) and np.allclose(out / scale, ref, rtol=1e-4, atol=1e-3)


def test_short_stacks_off_and_results_off_the_grid_are_left_alone(rng):
    noisy, _ = recording(rng, t=60)
    said = []
    blurred = infer.denoise(noisy, model(Blur()), off(keep_average="off"))
    assert np.array_equal(infer.denoise(noisy, model(Blur()), off(), progress=said.append), blurred)
    assert any("too few frames" in e.message for e in said if e.message.startswith(av.SAID))
    said.clear()
    infer.denoise(recording(rng, t=120)[0], model(Blur()), off(keep_average="off"), progress=said.append)
    assert not any(e.message.startswith(av.SAID) for e in said)
    why = run_to_end(av.iter_keep_average("auto", noisy, noisy[:, :16].copy(), "float32"))
    assert why is None  # not on the input's grid

    class WriteOnly:  # what iter_denoise accepts as out: slice assignment only
        def __init__(self, shape):
            self.shape, self.dtype, self.frames = shape, np.dtype(np.float32), np.zeros(shape, np.float32)

        def __setitem__(self, key, value):
            self.frames[key] = value

    long, _ = recording(rng)
    sink = WriteOnly(long.shape)
    said.clear()
    infer.denoise(long, model(Blur()), off(), out=sink, progress=said.append)
    assert np.array_equal(sink.frames, infer.denoise(long, model(Blur()), off(keep_average="off")))
    assert any("cannot be read back" in e.message for e in said)


def test_registered_and_half_rate_outputs_are_corrected_on_the_input_grid(rng):
    noisy, clean = recording(rng)
    den = model(Blur())
    bare = infer.denoise(noisy, den, off(keep_average="off"))
    for cfg in (off(half_rate=True), InferConfig(device="cpu", smoothing="off")):
        assert mse(infer.denoise(noisy, den, cfg), clean) < 0.2 * mse(bare, clean)


def test_setting_is_checked():
    with pytest.raises(InputError, match="keep_average"):
        InferConfig(keep_average="sometimes")


def drifting(rng: np.random.Generator, t: int = 200, size: int = 48) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fine still structure drifting slowly (2.5 px over the recording) under Poisson noise; (noisy, clean, shifts)."""
    big = np.full((size + 16, size + 16), 20.0)
    big[rng.integers(0, size + 16, 120), rng.integers(0, size + 16, 120)] = 120.0
    big = ndimage.gaussian_filter(big, 0.7)
    shifts = np.stack([np.linspace(-1.25, 1.25, t), np.linspace(1.0, -1.0, t)], axis=1)
    clean = np.stack([ndimage.shift(big, s, order=3, mode="nearest")[8:-8, 8:-8] for s in shifts]).astype(np.float32)
    return rng.poisson(clean).astype(np.float32), clean, shifts


def test_under_drift_the_average_is_taken_along_the_tissue(rng):
    noisy, clean, shifts = drifting(rng)
    blurred = infer.denoise(noisy, model(Blur()), off(keep_average="off"))
    errors = {}
    for name, along in (("in place", None), ("along", shifts)):
        out = blurred.copy()
        run_to_end(av.iter_keep_average("auto", noisy, out, "float32", along))
        errors[name] = mse(out, clean)
    assert errors["along"] < 0.6 * errors["in place"] < 0.6 * mse(blurred, clean)


def test_denoise_follows_the_drift_it_measured(rng):
    noisy, clean, _ = drifting(rng)
    said = []
    out = infer.denoise(noisy, model(Blur()), InferConfig(device="cpu", smoothing="off"), progress=said.append)
    messages = [e.message for e in said if e.message]
    assert any("slow" in m for m in messages)  # not registered: the network follows a slow drift
    assert any(m.startswith(av.SAID) and "along the measured motion" in m for m in messages)
    assert mse(out, clean) < 0.6 * mse(infer.denoise(noisy, model(Blur()), off(keep_average="off")), clean)


def test_mirrored_scan_results_are_corrected_merged_and_interleaved(rng):
    _, physical = recording(rng)
    clean = np.repeat(physical, 2, axis=1)  # (T, 2N, N): every line scanned forward, then backward
    noisy = rng.poisson(clean).astype(np.float32)
    den = model(Blur(), mode="mirrored")
    for output, truth in (("merged", physical), ("interleaved", clean)):
        kept = infer.denoise(noisy, den, off(mirrored_output=output))
        bare = infer.denoise(noisy, den, off(mirrored_output=output, keep_average="off"))
        assert kept.shape == truth.shape and mse(kept, truth) < 0.3 * mse(bare, truth), output


def test_an_interleaved_scan_is_averaged_along_the_drift_direction_by_direction(rng):
    _, physical, shifts = drifting(rng)
    clean = np.empty((len(physical), 2 * physical.shape[1], physical.shape[2]), np.float32)
    clean[:, 0::2], clean[:, 1::2] = physical, physical[..., ::-1]  # backward lines stored x-reversed
    noisy = rng.poisson(clean).astype(np.float32)
    blurred = infer.denoise(noisy, model(Blur(), mode="mirrored", flip=True), off(keep_average="off"))
    errors = {}
    for name, along in (("in place", None), ("along", shifts)):
        out = blurred.copy()
        corr = run_to_end(av.iter_keep_average("auto", noisy, out, "float32", along, bidirectional=True, flip=True))
        assert corr.flip is True  # the interleaved lines of a scan whose backward lines are x-reversed
        errors[name] = mse(out, clean)
    assert errors["along"] < 0.6 * errors["in place"] < 0.6 * mse(blurred, clean), errors
