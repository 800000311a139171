"""What every output frame keeps: its input frame's mean brightness (a shifted baseline F corrupts dF/F), and
its destination's value range and resolution.

Used on the model's output (:mod:`.denoising`, ``InferConfig.keep_mean``) and again after the output smoothing
(:mod:`.smoothing`) and after moving registered frames back (:mod:`.registration`), which must not move a frame's
mean either.

A denoised frame estimates the expected intensity, which has no reason to be a whole number of counts. Rounding it
to the input's integer type adds 1/12 count^2 of error at every pixel, and, where the counts are few, it moves the
frames' means. With the shipped generalist on held-out simulations (``benchmarks/experiments/output_type.py``,
docs/benchmarks.md, thirty-first session): on photon counts (1 count per photon) at 0.3 photons per pixel, rounding
took 66-75% of the frames' brightness and 20 dB, at 1 photon 7-10% and 14 dB; at 20 counts per photon (the
simulator's ADU, noise SD 12-45 counts) it cost 0.8-1.5 dB at 0.3 photons, 0.13 dB at 2, 0.04 at 5; at 100 counts
per photon (SD 56-224) 0.00-0.08 dB. ``output_dtype='auto'`` (:func:`resolve_output_dtype`, the CLI's default) keeps
the input's integer type only where its noise makes that rounding negligible.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Generator
from typing import Any

import numpy as np

from ..config import InferConfig, InferEvent
from ..stackio import to_output_dtype

__all__ = ["SAID", "WHOLE_COUNTS_SD", "keep_frame_means", "noise_sd", "resolve_output_dtype", "said_first",
           "set_frame_means", "to_target"]

SAID = "output type: "  # how the choice is announced (files record it as one of the job's steps)
# The noise SD (counts) from which whole counts lose nothing measurable: rounding's 1/12 count^2 is then 1% of the
# error left after a denoising that removes 299/300 of the noise's variance (25 dB; the benchmarks' gains over the
# raw input are 20-25 dB), ~0.04 dB (measured: 0.04-0.08 dB at SD 56, 0.00-0.02 at 100-224, 0.04 at 45).
WHOLE_COUNTS_SD = 50.0
SAMPLED_PAIRS = 16  # pairs of consecutive frames, spread over the stack, that the noise is measured on


def keep_frame_means(out: np.ndarray, inp: np.ndarray) -> np.ndarray:
    """Shift every output frame so that its mean equals the input frame's mean (in place).

    Noise is zero-mean, so the mean of a recorded frame is the clean frame's mean up to its own
    noise, which averages over the whole frame (0.8% of the mean for 128 x 128 pixels at 1 photon,
    far below a pixel's or an ROI's noise). A network's output has no such guarantee: skewed
    low-photon noise, an L1 loss (the median sits below the mean), unseen brightness levels and
    frame-wide brightness changes between the paired frames all shift it, and a shifted baseline F
    corrupts every dF/F computed from the result. Matching the means frame by frame removes the bias
    without touching the spatial structure.
    """
    return set_frame_means(out, inp.mean(axis=(1, 2), dtype=np.float64))


def set_frame_means(out: np.ndarray, means: np.ndarray) -> np.ndarray:
    """Shift every output frame so that its mean is ``means[i]`` (in place; see :func:`keep_frame_means`)."""
    out += (means - out.mean(axis=(1, 2), dtype=np.float64)).astype(np.float32)[:, None, None]
    return out


def to_target(block: np.ndarray, output_dtype: str, input_dtype: np.dtype, target_dtype: np.dtype) -> np.ndarray:
    """Finished float frames as written: the input's dtype (clipped) when ``output_dtype`` is 'input'
    (``InferConfig.output_dtype``), and clipped to an integer destination's range (never wrapped)."""
    if output_dtype == "input":
        block = to_output_dtype(block, input_dtype)
    if target_dtype.kind in "iub":
        block = to_output_dtype(block, target_dtype)
    return block


def noise_sd(stack: Any) -> float:
    """The noise SD of a ``(T, Y, X)`` stack in its own units, from the differences of consecutive frames at up to
    :data:`SAMPLED_PAIRS` places spread over the stack (neighbouring columns' differences for one frame).

    What changes between frames (activity, motion) counts as noise, so the estimate errs high: it is meant for
    telling counts that are fine for whole-number storage (:data:`WHOLE_COUNTS_SD`) from coarse ones.
    """
    t = int(stack.shape[0])
    if t < 2:
        frame = np.asarray(stack[0], np.float64)
        return float(np.sqrt(np.mean(np.diff(frame, axis=1) ** 2) / 2)) if frame.shape[1] > 1 else 0.0
    starts = np.unique(np.linspace(0, t - 2, min(SAMPLED_PAIRS, t - 1)).round().astype(int))
    squares = [np.mean(np.diff(np.asarray(stack[s : s + 2], np.float64), axis=0) ** 2) for s in starts]
    return float(np.sqrt(np.mean(squares) / 2))


def resolve_output_dtype(stack: Any, cfg: InferConfig) -> tuple[InferConfig, str]:
    """``cfg`` with ``output_dtype='auto'`` made 'input' or 'float32' for ``stack``, and what was chosen and why
    (starting with :data:`SAID`; empty when ``cfg`` asked for a type itself).

    The input's integer type where its noise (:func:`noise_sd`) is at least :data:`WHOLE_COUNTS_SD` counts (whole
    counts lose nothing measurable there), float32 otherwise and for float inputs.
    """
    if cfg.output_dtype != "auto":
        return cfg, ""
    dtype = np.dtype(stack.dtype)
    sd = noise_sd(stack) if dtype.kind in "iu" else None
    if sd is None:
        chosen, why = "float32", f"float32 (the input is {dtype})"
    elif sd >= WHOLE_COUNTS_SD:
        chosen, why = "input", (f"{dtype}, as the input (its noise SD, {sd:.0f} counts, makes rounding to whole "
                                "counts negligible)")
    else:
        chosen, why = "float32", (f"float32, not the input's {dtype}: its noise SD is {sd:.2g} counts (under "
                                  f"{WHOLE_COUNTS_SD:.0f}), so rounding the denoised frames to whole counts would "
                                  "lose part of the gain and shift dim frames' means")
    return dataclasses.replace(cfg, output_dtype=chosen), SAID + why


def said_first(events: Generator[InferEvent, None, Any], said: str) -> Generator[InferEvent, None, Any]:
    """``events`` (a job's), with an event saying ``said`` (what :func:`resolve_output_dtype` chose; none when empty)
    just before the first of them: a job refused before it yields anything prints its refusal alone. Closing this
    closes ``events`` at once (its worker threads stop), wherever it was."""
    try:
        try:
            first = next(events)
        except StopIteration as stop:
            return stop.value
        if said:
            yield InferEvent(done=0, total=1, message=said)
        yield first
        return (yield from events)
    finally:
        events.close()
