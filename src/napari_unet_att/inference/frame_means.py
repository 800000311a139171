"""What every output frame keeps: its input frame's mean brightness (a shifted baseline F corrupts dF/F), and
its destination's value range.

Used on the model's output (:mod:`.denoising`, ``InferConfig.keep_mean``) and again after the output smoothing
(:mod:`.smoothing`) and after moving registered frames back (:mod:`.registration`), which must not move a frame's
mean either.
"""

from __future__ import annotations

import numpy as np

from ..stackio import to_output_dtype

__all__ = ["MAX_SCALE_CHANGE", "keep_frame_means", "keep_frame_scales", "set_frame_means", "to_target"]


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


#: The most a frame's contrast may move against its block's (:func:`keep_frame_scales`): laser power and detector
#: gain vary by a few percent from frame to frame.
MAX_SCALE_CHANGE = 0.1


def keep_frame_scales(smoothed: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """``smoothed`` (frames smoothed over time, ``(n, ...)``) with each frame's contrast about its mean rescaled to
    follow ``frames`` (the same frames unsmoothed), relative to the block.

    Laser power and detector gain change from frame to frame by a few percent, and every pixel's fluorescence with
    them; smoothing over time averages that away, and keeping each frame's mean (:func:`set_frame_means`, a shift)
    restores it only where the frame is as bright as its mean. Each frame's gain is the least-squares slope of its
    unsmoothed frame on its smoothed one (both less their means), divided by the block's mean slope so that the
    smoothing's own loss of contrast is not taken for a change (independent simulator, 1 % power flicker: +0.1 to
    +0.3 dB; the package's simulator, without flicker: -0.01 to +0.02 dB; docs/benchmarks.md), and kept within
    :data:`MAX_SCALE_CHANGE`. Frame means are unchanged; float32 out. A scan's planes ``(n, 2, Y, X)`` (one per
    direction, :func:`.tissue.as_planes`) are rescaled each on its own, as they are smoothed.
    """
    s = np.asarray(smoothed, np.float32)
    if len(s) < 2:
        return s
    if s.ndim == 4:
        return np.stack([keep_frame_scales(s[:, k], frames[:, k]) for k in range(s.shape[1])], axis=1)
    flat_s = s.reshape(len(s), -1)
    flat_f = np.asarray(frames, np.float32).reshape(len(s), -1)
    means = flat_s.mean(axis=1, dtype=np.float64)[:, None]
    centred = flat_s - means.astype(np.float32)
    var = np.einsum("ij,ij->i", centred, centred, dtype=np.float64)
    cov = np.einsum("ij,ij->i", centred, flat_f - flat_f.mean(axis=1, dtype=np.float64)[:, None].astype(np.float32),
                    dtype=np.float64)
    slope = np.where(var > 0, cov / np.where(var > 0, var, 1.0), 1.0)
    if not np.all(np.isfinite(slope)) or slope.mean() <= 0:
        return s
    gain = np.clip(slope / slope.mean(), 1 - MAX_SCALE_CHANGE, 1 + MAX_SCALE_CHANGE).astype(np.float32)
    return (means.astype(np.float32) + centred * gain[:, None]).reshape(s.shape)


def to_target(block: np.ndarray, output_dtype: str, input_dtype: np.dtype, target_dtype: np.dtype) -> np.ndarray:
    """Finished float frames as written: the input's dtype (clipped) when ``output_dtype`` is 'input'
    (``InferConfig.output_dtype``), and clipped to an integer destination's range (never wrapped)."""
    if output_dtype == "input":
        block = to_output_dtype(block, input_dtype)
    if target_dtype.kind in "iub":
        block = to_output_dtype(block, target_dtype)
    return block
