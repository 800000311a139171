"""The output smoothing by spatial scale: fine detail smoothed over many frames, coarse detail over few.

What noise the model leaves is mostly fine (pixel-scale) detail, and smoothing it over time helps; a cell's activity is
coarse (the size of the cell), and smoothing *that* over time blunts every transient, while the model's output barely
needs it there: over a cell's area the noise is averaged away already. One window for every scale is a compromise
that serves neither: on held-out simulations it cut the cells' trace amplitude to 0.76-0.89 of the truth's, and the
traces' correlation with the truth fell below the unsmoothed output's. So the output is split at a spatial scale
(a Gaussian of ``split_px`` pixels): its coarse part ``G(x)`` is smoothed over its own, shorter window, its fine part
``x - G(x)`` over the longer one. By linearity that is ``fine + G(coarse - fine)``, with ``fine`` and ``coarse`` the
output smoothed by either window (:func:`combine`): one spatial filter per frame.

The windows and the scale are chosen on the recording with the smoothing (:func:`choose_split`), by the same
prediction of held-out frames, scale by scale: the two parts' errors add up (nearly: the two Gaussian parts are not
exactly orthogonal), so each window is the one whose part predicts best, and the pair is kept only where the whole
prediction beats the best single window.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from .temporal_filter import smooth_t, smooth_xy

__all__ = ["SPLITS_PX", "Split", "choose_split", "combine"]

# Scales tried (Gaussian sigma, pixels). On held-out simulations without motion (1-5 photons), splitting at 2-4 px
# and leaving the coarse part unsmoothed over time raised PSNR by 0.5-0.9 dB over the best single window and kept
# 0.87-0.93 of the cells' trace amplitude (0.76-0.89 before).
SPLITS_PX: tuple[float, ...] = (2.0, 4.0)


@dataclass(frozen=True)
class Split:
    """A two-scale smoothing: the fine part over ``sigma_t`` frames and ``sigma_xy`` pixels, the part coarser than
    a Gaussian of ``split_px`` pixels over ``sigma_t_coarse`` frames; ``error`` is its calibration error."""

    split_px: float
    sigma_t: float
    sigma_xy: float
    sigma_t_coarse: float
    error: float


def combine(fine: np.ndarray, coarse: np.ndarray, split_px: float) -> np.ndarray:
    """The fine part of ``fine`` plus the coarse part of ``coarse`` (split by a Gaussian of ``split_px`` pixels):
    ``fine + G(coarse - fine)``, float32."""
    return (fine + smooth_xy(np.asarray(coarse, np.float32) - fine, split_px)).astype(np.float32, copy=False)


def choose_split(estimate: np.ndarray, target: np.ndarray, smoothed: Mapping[tuple[float, float], np.ndarray],
                 error: Callable[[np.ndarray], float], best: float, coarsest: float = np.inf,
                 splits: tuple[float, ...] | None = None,
                 cost: Callable[[float, float, bool], float] = lambda st, split_px, fine: 0.0) -> Split | None:
    """The two-scale smoothing that predicts ``target`` better than ``best`` (the best single window's error), or None.

    Parameters
    ----------
    estimate : ndarray (n, Y, X)
        The model's result on the calibration block (half rate: its windows are half the output's).
    target : ndarray (n, Y, X)
        The frames it predicts.
    smoothed : mapping
        ``(sigma_t, sigma_xy)`` (of the output, frames and pixels) -> ``estimate`` smoothed so: every candidate.
    error : callable
        The error of a miss ``candidate - target`` that the choice minimises.
    best : float
        The error of the best single window.
    coarsest : float
        The longest window the coarse detail may have (frames of the output).
    splits : tuple of float, optional
        The scales tried (pixels; default :data:`SPLITS_PX`).
    cost : callable
        ``cost(window, split_px, fine)``: what the fine (or coarse) detail's window (frames of the output) costs
        beyond its error (:mod:`.signal_changes`: what it removes of the signal at full rate, unseen by the error).
    """
    windows = sorted({st for st, _ in smoothed})
    chosen: Split | None = None
    for split_px in SPLITS_PX if splits is None else splits:
        # G commutes with smoothing over time: the coarse part of every candidate is the same window's smoothing of
        # G(estimate), one filter for all (a fine part's blur of at most 0.5 px barely changes G's 2-4 px: left out)
        low_target, low = smooth_xy(target, split_px), smooth_xy(estimate, split_px)
        low_misses = {st: smooth_t(low, st / 2) - low_target for st in windows}
        coarse = min((st for st in windows if st <= coarsest),
                     key=lambda st: error(low_misses[st]) + cost(st, split_px, False))
        fine = {(st, sxy): error((cand - target) - low_misses[st]) + cost(st, split_px, True)
                for (st, sxy), cand in smoothed.items()}
        st, sxy = min(fine, key=fine.__getitem__)
        err = (error((smoothed[st, sxy] - target) - low_misses[st] + low_misses[coarse]) + cost(st, split_px, True)
               + cost(coarse, split_px, False))
        if coarse != st and err < (best if chosen is None else chosen.error):  # (one window for both: no split)
            chosen = Split(split_px, st, sxy, coarse, err)
    return chosen
