"""Classical denoisers to compare the networks with: 3-D Gaussian smoothing and a temporal moving mean.

All functions take a ``(T, Y, X)`` stack of any real dtype and return float32 in the same intensity units. The
``best_*`` searches are oracles: they pick the parameters with the highest PSNR against a known clean stack, which
is what a fair comparison with a self-supervised network on simulated data needs (an upper bound for the baseline).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from scipy import ndimage

from ..errors import InputError
from ..modes import layout_factor
from . import metrics

__all__ = ["DEFAULT_SIGMAS", "DEFAULT_WINDOWS", "best_gaussian", "best_moving_mean", "gaussian3d", "moving_mean"]

# (sigma_t, sigma_xy) pairs: temporal smoothing matters most for calcium data (transients decay over ~20 frames at
# 30 Hz; slow, photon-starved movies want sigma_t past 8), spatial smoothing only up to ~the PSF size
DEFAULT_SIGMAS: tuple[tuple[float, float], ...] = tuple(
    (st, sxy) for st in (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 10.0, 12.0, 16.0)
    for sxy in (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0)
)
DEFAULT_WINDOWS: tuple[int, ...] = (1, 3, 5, 7, 9, 11, 15, 21, 31, 41, 61)
_SEARCH_FRAMES = 100  # the searches score about this many frames


def _as_stack(x) -> np.ndarray:
    a = np.asarray(x)
    metrics.check_stack(a)
    if not np.issubdtype(a.dtype, np.number) or np.issubdtype(a.dtype, np.complexfloating):
        raise InputError(f"expected real numbers, got dtype {a.dtype}")
    return a


def _sigma3(sigma) -> tuple[float, float, float]:
    s = np.atleast_1d(np.asarray(sigma, dtype=np.float64)).ravel()
    if s.size == 1:
        s = np.repeat(s, 3)
    elif s.size == 2:  # (sigma_t, sigma_xy)
        s = np.array([s[0], s[1], s[1]])
    if s.size != 3 or not np.all(np.isfinite(s)) or np.any(s < 0):
        raise InputError(f"sigma must be a scalar, (t, xy) or (t, y, x) of values >= 0, got {sigma!r}")
    return float(s[0]), float(s[1]), float(s[2])


def gaussian3d(x, sigma) -> np.ndarray:
    """Gaussian smoothing along (t, y, x), float32 output of ``x``'s shape and units.

    ``sigma`` (in frames and pixels): a scalar, ``(sigma_t, sigma_xy)`` or ``(sigma_t, sigma_y, sigma_x)``; 0 leaves
    an axis untouched. Edges are reflected.
    """
    a = _as_stack(x)
    s = _sigma3(sigma)
    return ndimage.gaussian_filter(a.astype(np.float32, copy=False), s, mode="reflect", truncate=4.0)


def best_gaussian(noisy, clean, sigmas: Iterable | None = None, *, y_scale: float = 1.0,
                  data_range: float | None = None,
                  exhaustive: bool = False) -> tuple[tuple[float, float, float], np.ndarray, float]:
    """Oracle 3-D Gaussian: the sigma with the highest PSNR against ``clean``.

    Parameters
    ----------
    noisy : (T, Y, X) array
    clean : array
        Ground truth in the same units: same shape, or ``(T, Y/2, X)`` for a bidirectional ``noisy`` (see
        :mod:`.metrics`).
    sigmas : iterable, optional
        Candidates, each a scalar, ``(sigma_t, sigma_xy)`` or ``(sigma_t, sigma_y, sigma_x)``; default
        :data:`DEFAULT_SIGMAS`.
    y_scale : float
        Multiplies every sigma_y: 2 for the bidirectional ``(T, 2N, N)`` layout, whose rows are half a pixel apart.
    data_range : float, optional
        R for the PSNR (default: ``clean``'s range).
    exhaustive : bool
        Try every candidate. By default the search walks sigma_t upwards, hill-climbs the spatial sigma from the
        previous sigma_t's optimum, and stops once PSNR falls (PSNR is unimodal in the amount of smoothing): the same
        optimum in practice, several times faster. Candidates are scored on ~100 evenly spaced frames; the returned
        PSNR is that of the whole stack.

    Returns
    -------
    (sigma_t, sigma_y, sigma_x), denoised float32, psnr in dB
    """
    a = _as_stack(noisy).astype(np.float32, copy=False)
    cands = [_sigma3(s) for s in (DEFAULT_SIGMAS if sigmas is None else sigmas)]
    if not cands:
        raise InputError("sigmas is empty")
    cands = [(st, sy * y_scale, sx) for st, sy, sx in cands]
    ref = _reference_in_layout(a, clean)
    data_range = metrics.reference_range(clean, data_range)
    # score on evenly spaced frames (spatial filtering is per frame, so those frames are exact): ~4x cheaper
    sub = slice(None, None, max(1, a.shape[0] // _SEARCH_FRAMES))
    ref_sub = np.ascontiguousarray(ref[sub])
    scores: dict[tuple[float, float, float], float] = {}

    def score_of(sigma, along_t) -> float:
        if sigma not in scores:
            frames = np.ascontiguousarray(along_t[sub])
            out = ndimage.gaussian_filter(frames, (0.0, sigma[1], sigma[2]), mode="reflect")
            scores[sigma] = _psnr_fast(out, ref_sub, data_range)
        return scores[sigma]

    best_prev_t = -np.inf
    start = 0
    for st in sorted({c[0] for c in cands}):
        along_t = ndimage.gaussian_filter1d(a, st, axis=0, mode="reflect") if st > 0 else a
        row = sorted({c for c in cands if c[0] == st}, key=lambda c: (c[1] + c[2], c))
        if exhaustive:
            row_scores = [score_of(c, along_t) for c in row]
        else:
            # hill-climb from the previous sigma_t's optimum: the best spatial sigma moves little between rows
            j = min(start, len(row) - 1)
            score_of(row[j], along_t)
            for step in (1, -1):
                while 0 <= j + step < len(row) and score_of(row[j + step], along_t) > score_of(row[j], along_t):
                    j += step
            start = j
            row_scores = [scores[c] for c in row if c in scores]
        if not exhaustive and max(row_scores) < best_prev_t:
            break
        best_prev_t = max(best_prev_t, max(row_scores))
    sigma = max(scores, key=scores.get)
    out = gaussian3d(a, sigma)
    return sigma, out, metrics.psnr(out, clean, data_range)


def _reference_in_layout(a: np.ndarray, clean) -> np.ndarray:
    """``clean`` as float32 in ``a``'s layout (rows repeated for a bidirectional stack); checks the shapes."""
    factor = layout_factor(np.shape(a), np.shape(clean))
    ref = np.asarray(clean, dtype=np.float32)
    return np.repeat(ref, 2, axis=1) if factor == 2 else ref


def _psnr_fast(out: np.ndarray, ref: np.ndarray, data_range: float) -> float:
    """PSNR (dB) for the parameter searches: float32 per frame chunk, summed in float64 (~1e-5 dB accurate)."""
    sse = 0.0
    for t0 in range(0, len(out), metrics.FRAMES_PER_CHUNK):
        d = (out[t0 : t0 + metrics.FRAMES_PER_CHUNK] - ref[t0 : t0 + metrics.FRAMES_PER_CHUNK]).ravel()
        sse += float(np.dot(d, d))
    mse = sse / out.size
    return float("inf") if mse == 0 else 10.0 * float(np.log10(data_range * data_range / mse))


def moving_mean(x, window: int) -> np.ndarray:
    """Centred temporal moving mean over ``window`` frames, float32 of ``x``'s shape and units.

    Near the first and last frames the window shrinks to the frames that exist (no padding, so no edge bias). An even
    ``window`` reaches one frame further back than forward.
    """
    a = _as_stack(x)
    window = int(window)
    if window < 1:
        raise InputError(f"window must be >= 1 frames, got {window}")
    if window == 1:
        return a.astype(np.float32, copy=True)
    # sum of the existing frames in the window / their number: uniform filter with zero padding, divided by coverage
    total = ndimage.uniform_filter1d(a.astype(np.float64), window, axis=0, mode="constant", cval=0.0)
    coverage = ndimage.uniform_filter1d(np.ones(a.shape[0]), window, mode="constant", cval=0.0)
    return (total / coverage[:, None, None]).astype(np.float32)


def best_moving_mean(noisy, clean, windows: Sequence[int] = DEFAULT_WINDOWS, *,
                     data_range: float | None = None) -> tuple[int, np.ndarray, float]:
    """Oracle moving mean: the window (frames) with the highest PSNR (dB) against ``clean``.

    ``clean`` as for :func:`best_gaussian`. Returns ``(window, denoised float32, psnr)``.
    """
    if not list(windows):
        raise InputError("windows is empty")
    a = _as_stack(noisy)
    ref = _reference_in_layout(a, clean)
    data_range = metrics.reference_range(clean, data_range)
    best: tuple | None = None
    for w in windows:
        out = moving_mean(a, w)
        score = _psnr_fast(out, ref, data_range)
        if best is None or score > best[2]:
            best = (int(w), out, score)
    return best
