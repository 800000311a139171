"""Fast changes kept through the output smoothing: what the smoothing takes away is given back where it stands out.

The output smoothing (:mod:`.smoothing`) is chosen for the smallest error over the whole recording, and most of a
calcium recording is baseline: the best window there is several frames long, and it blunts every transient's rise and
peak (on held-out simulations at 1 photon per pixel, a 6-frame window cut the peak dF/F of the cells' traces to 0.69 of
the truth's, where the model's own output kept 0.98; the traces' correlation with the truth fell too).
What the smoothing removes, ``unsmoothed - smoothed``, is mostly noise (small, everywhere) and, at a transient, signal
(large, rare). Soft thresholding separates them (Donoho and Johnstone's wavelet shrinkage, on this one band): the
removed part is given back less a threshold ``k`` robust deviations of it wide, so baseline noise stays smoothed
away and a fast change keeps all but ``k`` deviations of its size. The removed part may first be pooled over each
frame by a Gaussian of ``px`` pixels (:data:`KEEP_PX`): a transient fills a cell or a bouton, several pixels at once,
the noise the model leaves varies from pixel to pixel, so pooling raises a transient above the threshold where each
pixel alone stays under it; where a recording's activity is finer than that (resampled real movies), pooling blurs
what it gives back, so the width is chosen with ``k`` (docs/benchmarks.md, twenty-first session). Both are chosen on
the recording with the smoothing (:func:`choose_threshold`), by the same prediction of held-out frames; :data:`KEEP_K`
starts with no giving back (infinity), so without a clear gain the smoothing stays as it was.

The deviation is measured frame by frame on the data the threshold is applied to (the calibration's half-rate result,
each frame of the full-rate output as it streams out): a robust one (the median absolute deviation, so that the
transients themselves do not widen it), on a regular subsample of each frame (:data:`PER_FRAME` values).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from .temporal_filter import smooth_xy

__all__ = ["KEEP_K", "KEEP_PX", "PER_FRAME", "choose_threshold", "keep_fast", "pooled", "robust_sd"]

# Thresholds tried, in robust deviations of what the smoothing removes; infinity (nothing given back) first, so it wins
# ties. Oracle sweep on held-out simulations (1-5 photons, still and moving): 4-6 deviations kept PSNR level or better
# and lifted the traces' peak dF/F by 0.02-0.10; 2-3 kept more of the peaks at up to 0.4 dB of PSNR.
KEEP_K: tuple[float, ...] = (math.inf, 8.0, 6.0, 4.0, 3.0, 2.0)
# Widths (pixels) of the Gaussian the removed part is pooled over before it is thresholded; 0 (each pixel alone) first.
KEEP_PX: tuple[float, ...] = (0.0, 1.0, 2.0)
PER_FRAME = 4096  # values of each frame that measure its deviation (a regular subsample of larger frames)


def robust_sd(values: np.ndarray) -> np.ndarray:
    """A robust standard deviation of each frame of ``values`` (the first axis): 1.4826 times the median absolute
    deviation from the median, on a regular subsample of about :data:`PER_FRAME` of its values, those exactly 0 (where
    the smoothing changed nothing: a constant region) or not finite left out (0 where none is left); float32
    ``(n, 1, ...)``, to broadcast against ``values``.

    Frame by frame, so that the output does not depend on how the frames are streamed (the parts a
    :class:`~napari_unet_att.inference.smoother.TemporalSmoother` emits depend on the blocks it is given).
    """
    arr = np.asarray(values, np.float32)
    flat = arr.reshape(len(arr), -1)
    flat = flat[:, :: max(1, flat.shape[1] // PER_FRAME)]
    flat = np.where(np.isfinite(flat) & (flat != 0), flat, np.nan)
    out = np.zeros(len(arr), np.float32)
    counted = ~np.all(np.isnan(flat), axis=1)
    if counted.any():
        centre = _nanmedian_rows(flat[counted])
        out[counted] = 1.4826 * _nanmedian_rows(np.abs(flat[counted] - centre[:, None]))
    return out.reshape((len(arr),) + (1,) * (arr.ndim - 1))


def _nanmedian_rows(a: np.ndarray) -> np.ndarray:
    """``np.nanmedian(a, axis=1)`` of a 2D ``a`` with a number in every row, all rows at once (numpy's takes a row at
    a time): each row sorted, NaNs last, its middle number or the mean of its middle two."""
    s, n, rows = np.sort(a, axis=1), np.count_nonzero(~np.isnan(a), axis=1), np.arange(len(a))
    return (s[rows, (n - 1) // 2] + s[rows, n // 2]) / a.dtype.type(2)


def keep_fast(unsmoothed: np.ndarray, smoothed: np.ndarray, k: float, px: float = 0.0) -> np.ndarray:
    """``smoothed`` plus what the smoothing removed from ``unsmoothed``, pooled over ``px`` pixels (:func:`pooled`),
    soft-thresholded at ``k`` robust deviations of it (float32; ``smoothed`` itself for an infinite ``k``)."""
    if not math.isfinite(k):
        return smoothed
    removed = pooled(unsmoothed, smoothed, px)
    return _given_back(smoothed, removed, np.float32(k) * robust_sd(removed))


def pooled(unsmoothed: np.ndarray, smoothed: np.ndarray, px: float) -> np.ndarray:
    """What the smoothing removed, each frame (each plane of a scan's canvas) blurred by a Gaussian of ``px``
    pixels (float32; 0: not blurred)."""
    return smooth_xy(np.asarray(unsmoothed, np.float32) - smoothed, px)


def _given_back(smoothed: np.ndarray, removed: np.ndarray, tau: np.ndarray) -> np.ndarray:
    """``smoothed + removed`` with ``removed`` soft-thresholded at ``tau`` (float32; per frame)."""
    kept = np.sign(removed) * np.maximum(np.abs(removed) - tau, np.float32(0))
    return (smoothed + kept).astype(np.float32, copy=False)


def choose_threshold(unsmoothed: np.ndarray, smoothed: np.ndarray, score: Callable[[np.ndarray], float],
                     place: Callable[[np.ndarray], np.ndarray] = lambda a: a) -> tuple[float, float, float]:
    """The ``k`` of :data:`KEEP_K` and the pooling width ``px`` of :data:`KEEP_PX` whose :func:`keep_fast` result
    scores lowest, and that score (``k`` infinite and ``px`` 0 where nothing given back scores best).

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
    best_k, best_px, best = math.inf, 0.0, score(place(smoothed))
    for px in KEEP_PX:
        removed = pooled(unsmoothed, smoothed, px)
        sd = robust_sd(removed)
        for k in KEEP_K[1:]:
            err = score(place(_given_back(smoothed, removed, np.float32(k) * sd)))
            if err < best:
                best_k, best_px, best = k, px, err
    return best_k, best_px, best
