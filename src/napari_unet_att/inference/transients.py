"""Fast changes kept through the output smoothing: what the smoothing takes away is given back where it stands out.

The output smoothing (:mod:`.smoothing`) is chosen for the smallest error over the whole recording, and most of a
calcium recording is baseline: the best window there is several frames long, and it blunts every transient's rise and
peak (on held-out simulations at 1 photon per pixel, a 6-frame window cut the peak dF/F of the cells' traces to 0.69 of
the truth's, where the model's own output kept 0.98; the traces' correlation with the truth fell too).
What the smoothing removes, ``unsmoothed - smoothed``, is mostly noise (small, everywhere) and, at a transient, signal
(large, rare). Soft thresholding separates them (Donoho and Johnstone's wavelet shrinkage, on this one band): the
removed part is given back less a threshold ``k`` robust deviations of it wide, so baseline noise stays smoothed
away and a fast change keeps all but ``k`` deviations of its size. ``k`` is chosen on the recording with the smoothing
(:func:`choose_threshold`), by the same prediction of held-out frames; :data:`KEEP_K` starts with no giving back
(infinity), so without a clear gain the smoothing stays as it was.

The deviation is measured on the data the threshold is applied to (the calibration's half-rate result, each part of
the full-rate output as it streams out): a robust one (the median absolute deviation, so the transients themselves do
not widen it), on a regular subsample of the values (:data:`SUBSAMPLE`) to keep its cost small.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

__all__ = ["KEEP_K", "SUBSAMPLE", "choose_threshold", "keep_fast", "robust_sd"]

# Thresholds tried, in robust deviations of what the smoothing removes; infinity (nothing given back) first, so it wins
# ties. Oracle sweep on held-out simulations (1-5 photons, still and moving): 4-6 deviations kept PSNR level or better
# and lifted the traces' peak dF/F by 0.02-0.10; 2-3 kept more of the peaks at up to 0.4 dB of PSNR.
KEEP_K: tuple[float, ...] = (math.inf, 8.0, 6.0, 4.0, 3.0, 2.0)
SUBSAMPLE = 16  # every SUBSAMPLE-th value measures the deviation (a 16-frame part of 128 x 128 frames: 16,384 values)


def robust_sd(values: np.ndarray) -> float:
    """A robust standard deviation of ``values``: 1.4826 times the median absolute deviation from the median, on every
    :data:`SUBSAMPLE`-th value (all of them below 4,096 values); 0 for none."""
    flat = np.asarray(values, np.float32).reshape(-1)
    if flat.size >= 4096:
        flat = flat[::SUBSAMPLE]
    if flat.size == 0:
        return 0.0
    centre = np.median(flat)
    return float(1.4826 * np.median(np.abs(flat - centre)))


def keep_fast(unsmoothed: np.ndarray, smoothed: np.ndarray, k: float) -> np.ndarray:
    """``smoothed`` plus what the smoothing removed from ``unsmoothed``, soft-thresholded at ``k`` robust deviations
    of it (float32; ``smoothed`` itself for an infinite ``k``)."""
    if not math.isfinite(k):
        return smoothed
    removed = np.asarray(unsmoothed, np.float32) - smoothed
    return _given_back(smoothed, removed, k * robust_sd(removed))


def _given_back(smoothed: np.ndarray, removed: np.ndarray, tau: float) -> np.ndarray:
    """``smoothed + removed`` with ``removed`` soft-thresholded at ``tau`` (float32)."""
    kept = np.sign(removed) * np.maximum(np.abs(removed) - np.float32(tau), np.float32(0))
    return (smoothed + kept).astype(np.float32, copy=False)


def choose_threshold(unsmoothed: np.ndarray, smoothed: np.ndarray, score: Callable[[np.ndarray], float],
                     place: Callable[[np.ndarray], np.ndarray] = lambda a: a) -> tuple[float, float]:
    """The ``k`` of :data:`KEEP_K` whose :func:`keep_fast` result scores lowest, and that score.

    Parameters
    ----------
    unsmoothed, smoothed : ndarray
        The model's result on the calibration block before and after a smoothing, where the smoothing works (the
        tissue's frame of a moving recording).
    score : callable
        The error of a candidate, in the target's place (lower is better).
    place : callable
        Moves a candidate to the target's place (identity where the smoothing works in place).
    """
    removed = np.asarray(unsmoothed, np.float32) - smoothed
    sd = robust_sd(removed)
    best_k, best = math.inf, score(place(smoothed))
    for k in KEEP_K[1:]:
        err = score(place(_given_back(smoothed, removed, k * sd)))
        if err < best:
            best_k, best = k, err
    return best_k, best
