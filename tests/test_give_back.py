"""Part of what the denoising took given back, as much as Stein's estimate says (inference.give_back)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from _models import make
from napari_unet_att import inference as infer
from napari_unet_att.config import InferConfig, run_to_end
from napari_unet_att.errors import InputError
from napari_unet_att.inference import give_back as gb
from napari_unet_att.inference import smoothing as sm
from napari_unet_att.inference.smoothing import Smoothing
from napari_unet_att.inference.temporal_filter import smooth_xy


def _scene(rng: np.random.Generator, n: int = 60, size: int = 48, flashes: float = 120.0) -> np.ndarray:
    """Still blobs, and blobs that light up for one frame (``flashes``: their brightness times 25, 0: none): what a
    blur over time takes away."""
    base = np.zeros((size, size), np.float32)
    base[rng.integers(4, size - 4, 25), rng.integers(4, size - 4, 25)] = 40.0
    clean = np.repeat(ndimage.gaussian_filter(base, 2.0)[None] + 5.0, n, axis=0)
    if flashes:
        for t in range(n):
            spot = np.zeros((size, size), np.float32)
            spot[rng.integers(6, size - 6, 3), rng.integers(6, size - 6, 3)] = flashes
            clean[t] += ndimage.gaussian_filter(spot, 2.0)
    return clean


def _blur(x: np.ndarray) -> np.ndarray:
    """A linear 'denoiser' that averages over time (2 frames) and a little over each frame."""
    return ndimage.gaussian_filter(np.asarray(x, np.float32), (2.0, 0.7, 0.7), mode="reflect")


def _weights(clean: np.ndarray, rng: np.random.Generator, averaged: bool = False) -> tuple[float, float]:
    """The weight that Stein's estimate picks for :func:`_blur`'s output, and the truth's best one."""
    x = clean + rng.normal(0, 3.0, clean.shape).astype(np.float32)
    b = rng.choice(np.array([-1.0, 1.0], np.float32), size=x.shape)
    e = gb.PERTURBATION * 3.0
    out, out_b = _blur(x), _blur(x + e * b)
    chosen = gb.choose_weight(x, out, out_b, out, out_b, b, e, averaged)
    d, miss = x - out, out - clean
    if averaged:
        d, miss = d - d.mean(axis=0), miss - miss.mean(axis=0)
    g = smooth_xy(d, gb.GIVE_BACK_PX)
    return chosen.weight, -float(np.sum(g * miss)) / float(np.sum(g * g))


@pytest.mark.parametrize("averaged", [False, True])
def test_steins_weight_is_the_truths_where_the_denoiser_blurs_fast_changes(averaged, rng):
    w, truth = _weights(_scene(rng), rng, averaged)
    assert truth > 0.3  # (the case needs a give-back)
    assert w == pytest.approx(truth, abs=0.1)


def test_nothing_is_given_back_where_the_signal_holds_still(rng):
    w, truth = _weights(_scene(rng, flashes=0.0), rng)
    assert truth < gb.MIN_WEIGHT
    assert w == 0.0


def test_the_give_back_keeps_each_frames_mean(rng):
    out = rng.normal(10, 1, (5, 32, 32)).astype(np.float32)
    inputs = out + rng.normal(0, 3, out.shape).astype(np.float32) + np.linspace(0, 5, 32, dtype=np.float32)
    given = gb.GiveBack(0.7).apply(out.copy(), inputs)
    np.testing.assert_allclose(given.mean(axis=(1, 2)), out.mean(axis=(1, 2)), atol=1e-4)
    assert np.abs(given - out).max() > 0.5
    assert gb.GiveBack(0.0).apply(out, inputs) is out


class _TimeBlur(torch.nn.Module):
    """A network that averages each pixel over 5 frames: it takes a one-frame flash for noise."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = torch.ones(1, 1, 5, 1, 1, dtype=x.dtype) / 5
        return torch.nn.functional.conv3d(torch.nn.functional.pad(x, (0, 0, 0, 0, 2, 2), mode="replicate"), k)


def test_denoise_gives_back_what_a_blurring_network_took_and_says_so(rng):
    clean = _scene(rng, n=120, size=64, flashes=1000.0)
    noisy = clean + rng.normal(0, 3.0, clean.shape).astype(np.float32)
    den = make(_TimeBlur())
    cfg = dict(device="cpu", smoothing="off", registration="off", keep_average="off", strips="off")
    said = []
    out = infer.denoise(noisy, den, InferConfig(**cfg), progress=said.append)
    plain = infer.denoise(noisy, den, InferConfig(**cfg, give_back="off"))
    messages = [e.message for e in said if e.message.startswith(gb.SAID)]
    assert len(messages) == 1 and "of what was taken" in messages[0]
    assert np.mean((out - clean) ** 2) < 0.8 * np.mean((plain - clean) ** 2)
    np.testing.assert_allclose(out.mean(axis=(1, 2)), noisy.mean(axis=(1, 2)), rtol=1e-5)


def test_give_back_setting_is_checked():
    with pytest.raises(InputError, match="give_back"):
        InferConfig(give_back="yes")


def test_short_or_unchanging_stacks_get_nothing_and_no_network_pass():
    def never(block):
        raise AssertionError("no network pass expected")

    for stack, why in ((np.full((40, 16, 16), 3.0, np.float32), "does not change"), (np.zeros((8, 16, 16)), "too few")):
        chosen = run_to_end(gb.iter_give_back("auto", stack, Smoothing(), never))
        assert not chosen.active and why in chosen.reason
    assert run_to_end(gb.iter_give_back("off", np.zeros((40, 16, 16)), Smoothing(), never)) == gb.GiveBack()


def _returns(value: np.ndarray):
    """A ``run_model`` generator that yields nothing and returns ``value``."""
    yield from ()
    return value


def test_a_blend_with_the_input_counts_in_the_jacobian(rng):
    """A smoothing that blends in a Gaussian of the input passes the input's perturbation through itself: Stein's
    weight for the blended output is still the truth's."""
    clean = _scene(rng, n=60, size=48)
    x = clean + rng.normal(0, 3.0, clean.shape).astype(np.float32)
    smoothing = Smoothing(1.0, 0.0, blend=0.5, blend_sigma=(1.0, 1.0))
    chosen = run_to_end(gb.iter_give_back("auto", x, smoothing, lambda block: _returns(_blur(block))))
    (where, inner) = gb.block(x.shape)
    out = np.concatenate([p for _, p in sm.TemporalSmoother(smoothing, len(x[where]), x[where]).push(
        0, _blur(x[where]))])[inner]
    d, miss = x[where][inner] - out, out - clean[where][inner]
    g = smooth_xy(d, gb.GIVE_BACK_PX)
    truth = -float(np.sum(g * miss)) / float(np.sum(g * g))
    assert truth > 0.2 and chosen.weight == pytest.approx(truth, abs=0.12)


def test_a_mirrored_model_on_ordinary_frames_is_weighed_on_one_view(rng):
    # (a central block of 128 x 64 pixels looks like a (T, 2N, N) scan: the block passes must not take it for one)
    stack = rng.normal(10, 1, (60, 200, 64)).astype(np.float32)
    out = infer.denoise(stack, make(_TimeBlur(), "mirrored"), InferConfig(device="cpu", mirrored_output="merged",
                                                                          smoothing="off", registration="off"))
    assert out.shape == stack.shape


@pytest.mark.parametrize("path", [{}, {"half_rate": True}, {"strips": 3}, {"tile_t": 16, "overlap": 4}])
def test_every_path_gives_back_each_frame_once(path, monkeypatch, rng):
    """A fixed weight on every way through the engine: each output pixel given back once, and the frame means kept."""
    from napari_unet_att.inference import denoising

    applied = []
    apply = gb.GiveBack.apply

    def counted(self, out, inputs):
        applied.append(np.prod(out.shape))
        return apply(self, out, inputs)

    def fixed(setting, *args, **kwargs):
        yield from ()
        return gb.GiveBack(0.5 if setting == "auto" else 0.0, "fixed")

    monkeypatch.setattr(gb.GiveBack, "apply", counted)
    monkeypatch.setattr(denoising, "iter_give_back", fixed)
    x = _scene(rng, n=60, size=48, flashes=1000.0) + rng.normal(0, 3, (60, 48, 48)).astype(np.float32)
    cfg = {**dict(device="cpu", smoothing="off", registration="off", keep_average="off", strips="off"), **path}
    plain = infer.denoise(x, make(_TimeBlur()), InferConfig(**{**cfg, "give_back": "off"}))
    out = infer.denoise(x, make(_TimeBlur()), InferConfig(**cfg))
    if "strips" in path:  # (they overlap: each strip is given back whole)
        assert sum(applied) > x.size
    else:
        assert sum(applied) == x.size
    np.testing.assert_allclose(out.mean(axis=(1, 2)), x.mean(axis=(1, 2)), rtol=1e-5)
    if "strips" not in path:
        np.testing.assert_allclose(out, apply(gb.GiveBack(0.5), plain.copy(), x), rtol=1e-5, atol=1e-3)


def test_the_block_keeps_to_the_pixels_every_frame_recorded():
    class Canvas:  # (a registered recording's canvas: each frame's corner at its offset, its margins copies)
        shape, frame, rows = (3, 13, 16), (10, 12), 1
        offsets = np.array([[0, 0], [2, 1], [1, 3]])

    where = gb.recorded(Canvas(), (slice(0, 3), slice(0, 13), slice(0, 16)))
    assert where == (slice(0, 3), slice(2, 10), slice(3, 12))
    plain = (slice(0, 3), slice(1, 9), slice(0, 16))
    assert gb.recorded(np.zeros((3, 13, 16)), plain) == plain


def test_noise_correlated_with_the_next_pixel_is_told_from_signal_over_a_cells_width(rng):
    white = rng.normal(size=(40, 96, 96))
    neighbours = ndimage.uniform_filter(rng.normal(size=(40, 96, 96)), (1, 2, 2))  # (correlated at 1 px only)
    blobs = ndimage.gaussian_filter(rng.normal(size=(40, 96, 96)), (0, 3, 3)) * 10 + white  # (over a cell's width)
    assert abs(gb.neighbour_correlation(white)) < 0.05
    assert gb.neighbour_correlation(neighbours) > 0.4 > gb.MAX_NOISE_CORRELATION
    assert gb.neighbour_correlation(blobs) < gb.MAX_NOISE_CORRELATION
