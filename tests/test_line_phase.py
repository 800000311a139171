"""A bidirectional scanner's line phase: measured, and the backward lines moved back (inference.line_phase)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from _models import Identity
from _models import make as model
from napari_unet_att import inference as infer
from napari_unet_att.cli_args import build_parser
from napari_unet_att.config import InferConfig, run_to_end
from napari_unet_att.errors import InputError
from napari_unet_att.evaluation.simulator import simulate
from napari_unet_att.inference import line_phase as lp

BARE = {"device": "cpu", "smoothing": "off", "registration": "off", "keep_average": "off", "strips": "off"}


def phased(offset: float, frames: int = 48, photons: float = 5.0, seed: int = 4):
    """A simulated still recording seen by a bidirectional scanner whose backward lines sit ``offset`` px to the
    right: ``(scan, frames, clean)``, the ``(T, 2N, N)`` scan of every line both ways and the ``(T, N, N)`` frames
    whose odd rows are backward lines (Poisson noise drawn after)."""
    sim = simulate(n_frames=frames, size=64, photons=photons, seed=seed)
    clean = sim.clean
    backward = ndimage.shift(clean, (0, 0, offset), order=1, mode="nearest")
    rng = np.random.default_rng(seed)
    g, o = sim.params["gain"], sim.params["offset"]

    def noisy(x):
        return (rng.poisson(np.clip((x - o) / g, 0, None)) * g + o).astype(np.uint16)

    scan = np.empty((frames, 128, 64), np.uint16)
    scan[:, 0::2], scan[:, 1::2] = noisy(clean), noisy(backward)
    combed = clean.copy()
    combed[:, 1::2] = backward[:, 1::2]
    return scan, noisy(combed), clean


@pytest.mark.parametrize("offset", [0.0, 0.5, 1.3, -2.0])
def test_the_offset_is_measured_in_both_layouts(offset):
    scan, frames, _ = phased(offset)
    stored = scan.copy()
    stored[:, 1::2] = stored[:, 1::2, ::-1]  # backward lines stored x-reversed
    for stack, is_scan, flip in ((scan, True, False), (frames, False, False), (stored, True, True)):
        measured, error, r = lp.estimate_line_phase(stack, is_scan, flip)
        assert abs(measured - offset) < 0.1, (is_scan, flip, measured)
        assert error < 0.1 and r > 0.5


def test_noise_and_aligned_lines_are_left_alone(rng):
    noise = rng.poisson(2.0, (64, 64, 64)).astype(np.uint16)  # no structure: the sets disagree
    assert not lp._choose(*lp.estimate_line_phase(noise, False)).active
    _, frames, _ = phased(0.0)
    phase = lp._choose(*lp.estimate_line_phase(frames, False))
    assert not phase.active and "agree" in phase.reason
    assert not lp._choose(30.0, 0.01).active  # not a scan phase
    flat = np.full((32, 32), 20.0)
    flat[rng.integers(0, 32, 40), rng.integers(0, 32, 40)] = 80.0  # single bright pixels: no lines to compare
    sparse = rng.poisson(np.broadcast_to(flat, (160, 32, 32))).astype(np.float32)
    phase = lp._choose(*lp.estimate_line_phase(sparse, False))
    assert not phase.active and "too little structure" in phase.reason
    nan = np.ones((16, 32, 32), np.float32)
    nan[3, 4, 5] = np.nan
    assert "not finite" in run_to_end(lp.iter_line_phase("auto", nan, False)).reason
    assert lp._choose(0.6, 0.05).active and not lp._choose(0.6, 0.2).active  # beyond 4x its error only


@pytest.mark.parametrize("flip", [False, True])
def test_the_corrected_view_reads_like_an_array(rng, flip):
    stack = rng.integers(0, 1000, (6, 10, 24)).astype(np.uint16)
    view = lp.PhaseCorrected(stack, 1.25, flip)
    whole = view[:]
    assert whole.dtype == np.uint16 and whole.shape == stack.shape
    assert np.array_equal(whole[:, 0::2], stack[:, 0::2])  # forward rows untouched
    cols = np.arange(24)
    src = np.clip(cols + (-1.25 if flip else 1.25), 0, 23)
    lo = np.floor(src).astype(int)
    hi = np.minimum(lo + 1, 23)
    w = src - lo
    expected = stack[:, 1::2][..., lo] * (1 - w) + stack[:, 1::2][..., hi] * w
    assert np.array_equal(whole[:, 1::2], np.rint(expected).astype(np.uint16))
    for key in (np.s_[2:5, 3:9, 4:20], np.s_[1, 1::2, :], np.s_[0:6, 0::2, 5], np.s_[3], np.s_[:, 7, 2:3],
                np.s_[4:4], np.s_[1:3, ::-1, 20:]):
        assert np.array_equal(view[key], whole[key]), key
    assert np.array_equal(lp.PhaseCorrected(stack, 0.0)[:], stack)
    assert np.array_equal(lp.PhaseCorrected(stack, 2.0)[:, 1::2, :-2], stack[:, 1::2, 2:])  # whole pixels: exact


def test_the_engine_moves_the_backward_lines_back_and_says_so():
    scan, frames, clean = phased(1.5)
    den = model(Identity())
    said = []
    out = infer.denoise(frames, den, InferConfig(**BARE, output_dtype="input"), progress=said.append)
    messages = [e.message for e in said if e.message and e.message.startswith(lp.SAID)]
    measured = lp.estimate_line_phase(frames, False)[0]
    assert abs(measured - 1.5) < 0.15
    assert len(messages) == 1 and f"moved {measured:.2f} px" in messages[0] and "right" in messages[0]
    assert out.dtype == np.uint16
    assert np.abs(out.astype(np.float32) - lp.PhaseCorrected(frames, measured)[:]).max() <= 1
    # the combing is gone: the odd rows' time average is where the truth's is
    def odd_error(x):
        return float(np.mean((np.asarray(x, np.float32)[:, 1::2].mean(0) - clean[:, 1::2].mean(0)) ** 2))

    assert odd_error(out) < 0.2 * odd_error(frames)
    off = infer.denoise(frames, den, InferConfig(**BARE, line_phase="off"))
    assert np.array_equal(off, frames.astype(np.float32))
    # a mirrored-scan model's scan: merged output in place, interleaved output's backward lines moved back
    mirrored = model(Identity(), "mirrored")
    merged = infer.denoise(scan, mirrored, InferConfig(**BARE, mirrored_output="merged"))
    plain = infer.denoise(scan, mirrored, InferConfig(**BARE, mirrored_output="merged", line_phase="off"))
    err = [float(np.mean((np.asarray(m).mean(0) - clean.mean(0)) ** 2)) for m in (merged, plain)]
    assert err[0] < 0.2 * err[1]
    set_px = infer.denoise(scan, mirrored, InferConfig(**BARE, line_phase=1.5))
    assert np.allclose(set_px, lp.PhaseCorrected(scan, 1.5)[:], atol=1)


def test_settings_and_cli():
    assert InferConfig().line_phase == "auto"
    assert InferConfig(line_phase="-0.75").line_phase == -0.75
    for bad in ("x", True, np.True_, float("inf"), 65):
        with pytest.raises(InputError, match="line_phase"):
            InferConfig(line_phase=bad)
    p = build_parser()
    args = ["denoise", "a.tif", "--model", "m.pt", "--out", "o.tif"]
    assert p.parse_args(args).line_phase == "auto"
    assert p.parse_args([*args, "--line-phase", "off"]).line_phase == "off"
    assert p.parse_args([*args, "--line-phase", "1.5"]).line_phase == 1.5
    with pytest.raises(SystemExit):
        p.parse_args([*args, "--line-phase", "left"])


def test_short_stacks_are_not_measured():
    phase = run_to_end(lp.iter_line_phase("auto", np.zeros((4, 32, 32), np.uint16), False))
    assert not phase.active and "too few" in phase.reason


def test_training_puts_the_backward_lines_back_too():
    from napari_unet_att.config import TrainConfig
    from napari_unet_att.training import iter_train

    _, frames, _ = phased(1.5)

    def said(**settings) -> list[str]:
        gen = iter_train([frames], TrainConfig(steps=2, patch_t=8, patch_xy=16, batch_size=1, device="cpu",
                                               **settings))
        messages = []
        while True:
            try:
                ev = next(gen)
            except StopIteration:
                return [m for m in messages if lp.SAID in m]
            if getattr(ev, "message", None):
                messages.append(ev.message)

    assert len(said()) == 1 and "moved 1." in said()[0]
    assert said(registration="off") == []  # (the same setting: frames put in place before training)


def test_the_view_keeps_wide_integers_and_reads_an_ellipsis():
    big = np.full((2, 4, 8), 2**31 - 1, np.int32)
    big[:, 1::2, ::2] = 2**31 - 3
    moved = lp.PhaseCorrected(big, 0.5)[:]
    assert moved.dtype == np.int32 and moved.max() == 2**31 - 1 and moved.min() >= 2**31 - 3  # no wrap-around
    view = lp.PhaseCorrected(np.arange(2 * 4 * 8, dtype=np.float64).reshape(2, 4, 8), 0.25)
    assert np.array_equal(view[..., 0], view[:][:, :, 0]) and np.array_equal(view[1, ...], view[:][1])
