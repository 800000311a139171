"""What every output frame keeps: its input frame's mean brightness (a shifted baseline F corrupts dF/F), and
its destination's value range.

Used on the model's output (:mod:`.denoising`, ``InferConfig.keep_mean``) and again after the output smoothing
(:mod:`.smoothing`) and after moving registered frames back (:mod:`.registration`), which must not move a frame's
mean either.
"""

from __future__ import annotations

import numpy as np

from ..stackio import to_output_dtype

__all__ = ["keep_frame_means", "set_frame_means", "to_target"]


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
