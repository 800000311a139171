"""The filter that puts each pixel's missing time average back (:mod:`.averages`), chosen by Stein's estimate.

``m`` is each chunk's mean residual (input minus output, the detail the output missed plus noise), ``d`` a noise
image with ``m``'s covariance (:func:`.averages.residual_means`). For a linear ``F``, Stein's unbiased estimate of
``|F(m) - mu|^2`` against the true missing average ``mu`` is ``|F(m) - m|^2 + 2 <F(d), d> - |d|^2``, with no model of
the noise. Two stages: a bias along the frame's edges (:func:`along_edges`), then a weighted sum of Gaussians
(:func:`filter_responses`) of what is left; :func:`choose_correction` makes both choices.
"""

from __future__ import annotations

import functools
import itertools

import numpy as np
from scipy import optimize

from .temporal_filter import smooth_xy

__all__ = ["EDGE_WIDTHS", "EDGE_Z", "SIGMAS_XY", "along_edges", "blurred", "choose_correction", "edge_groups",
           "filter_responses"]

# pixels: the Gaussians whose weighted sum filters the correction (0: none; a point-spread function is ~1-2 px wide)
SIGMAS_XY: tuple[float, ...] = (0.0, 0.3, 0.5, 0.7, 1.0, 1.5, 2.0)
# rows / columns next to the edges whose mean residual is pooled along them (a network's border bias): the fewer
# groups, the less noise their correction adds where there is no bias
EDGE_WIDTHS: tuple[int, ...] = (2, 4, 8)
# standard deviations of its noise by which an edge map's estimated gain must stand out to be used (on pure noise,
# without it, one of the six maps got a gain in 85% of chunks, each adding a little noise)
EDGE_Z = 3.0


def blurred(images: np.ndarray, sigma: float, lines: bool) -> np.ndarray:
    """``images`` ``(chunks, Y, X)`` each smoothed by a Gaussian of ``sigma`` pixels (mirrored edges); ``lines``:
    they are a scan's interleaved lines, each direction's rows smoothed on their own."""
    if sigma <= 0:
        return images
    if lines:
        out = np.empty_like(images)
        out[:, 0::2], out[:, 1::2] = blurred(images[:, 0::2], sigma, False), blurred(images[:, 1::2], sigma, False)
        return out
    return smooth_xy(images, sigma)


def edge_groups(shape: tuple[int, int], width: int, sides: bool, lines: bool = False) -> np.ndarray | None:
    """Each pixel's group for :func:`along_edges`: ``1 + distance`` for the pixels within ``width`` of the frame's
    nearest edge, 0 for the others; ``sides``: each side (top, bottom, left, right; a corner's pixel goes to the
    first nearest) in groups of its own; ``lines``: a scan's interleaved lines, the odd rows in groups of their own.
    None for frames under ``4 * width`` pixels high or wide (their edges are most of them)."""
    y, x = shape
    if min(y, x) < 4 * width:
        return None
    yy, xx = np.mgrid[:y, :x]
    dist = np.stack([yy, y - 1 - yy, xx, x - 1 - xx])
    near = dist.min(axis=0)
    groups = 1 + near + (dist.argmin(axis=0) * width if sides else 0)
    groups = np.where(near < width, groups, 0)
    if lines:
        groups = np.where((groups > 0) & (yy % 2 == 1), groups + 4 * width, groups)
    return groups


def along_edges(images: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """``images`` ``(chunks, Y, X)`` with each pixel of a group (:func:`edge_groups`) replaced by its group's mean
    less the mean of the pixels in none (the interior), and 0 in the interior, then the image's mean taken off
    (each frame keeps its mean) (float64): how the edges differ from the rest, a linear map, so Stein's estimate
    applies to it as to a Gaussian."""
    flat = groups.ravel()
    count = np.maximum(np.bincount(flat), 1)
    out = np.empty(images.shape, np.float64)
    for k, image in enumerate(images):
        means = np.bincount(flat, weights=image.ravel().astype(np.float64)) / count
        means -= means[0]
        out[k] = means[groups]
        out[k] -= out[k].mean()
    return out


def _gain_and_risk(energy: float, excess: float) -> tuple[float, float]:
    """The gain in [0, 1] of ``gain * F(m)`` with the least estimated risk, and that risk less the risk of no
    correction, for one linear map ``F``: ``energy`` = ``|F(m)|^2``, ``excess`` = ``<F(m), m> - <F(d), d>``."""
    gain = float(np.clip(excess / energy, 0.0, 1.0)) if energy > 0 else 0.0
    return gain, gain * gain * energy - 2 * gain * excess


def _edge_stage(m: np.ndarray, d: np.ndarray, lines: bool) -> tuple[float, np.ndarray | None]:
    """The gain and groups (:func:`edge_groups`) of the edge map with the least estimated risk among those whose gain
    stands :data:`EDGE_Z` noise deviations above 0; (0, None) when none does."""
    best: tuple[float, float, np.ndarray | None] = (0.0, 0.0, None)  # (risk, gain, groups)
    for width, sides in itertools.product(EDGE_WIDTHS, (False, True)):
        groups = edge_groups(m.shape[1:], width, sides, lines)
        if groups is None:
            continue
        pmm = pp = pdd = 0.0
        for c in range(len(m)):  # (chunk by chunk: no copy of the whole)
            pm, pd = along_edges(m[c:c + 1], groups), along_edges(d[c:c + 1], groups)
            pmm, pp, pdd = pmm + float(np.vdot(pm, m[c])), pp + float(np.vdot(pm, pm)), pdd + float(np.vdot(pd, d[c]))
        # on noise alone <P m, m> and <P d, d> are about pdd each, with a spread of sqrt(2 / k) pdd for k groups
        k = len(m) * int(groups.max())
        if pp <= 0 or pmm - pdd <= EDGE_Z * 2 * np.sqrt(max(k, 1)) * pdd / max(k, 1):
            continue
        gain, risk = _gain_and_risk(pp, pmm - pdd)
        if risk < best[0]:
            best = (risk, gain, groups)
    return best[1], best[2]


@functools.cache
def filter_responses() -> np.ndarray:
    """The frequency responses ``(F, K)`` of :data:`SIGMAS_XY`'s Gaussians (as :func:`blurred` samples them) at a
    grid of 2D frequencies from 0 to half a cycle per pixel on each axis: a weighted sum's response is ``R @ a``."""
    freq = np.linspace(0.0, 0.5, 17)
    cols = []
    for sigma in SIGMAS_XY:
        if sigma <= 0:
            cols.append(np.ones(freq.size**2))
            continue
        x = np.arange(-int(3.0 * sigma + 0.5), int(3.0 * sigma + 0.5) + 1)
        w = np.exp(-0.5 * (x / sigma) ** 2)
        h = (w / w.sum()) @ np.cos(2 * np.pi * np.outer(x, freq))  # one axis
        cols.append(np.outer(h, h).ravel())
    return np.stack(cols, axis=1)


def _filter_weights(m: np.ndarray, d: np.ndarray, lines: bool) -> np.ndarray:
    """The weights ``a`` of :data:`SIGMAS_XY`'s Gaussians whose sum ``sum_k a_k G_k(m)`` has the least estimated
    risk ``a' A a - 2 a' b`` (``A_jk = <G_j m, G_k m>``, ``b_k = <G_k m, m> - <G_k d, d>``) among those whose
    response lies between 0 and 1 at every frequency (:func:`filter_responses`); zeros where none beats no filter.

    The bounds matter: a residual's average is the missing detail plus noise, so no frequency of it deserves more
    than all of it, nor less than none; unbounded weights fitted the flat-noise stack's residual with a response of
    -3 at the lowest frequencies and added blotches 4.8x the Gaussian's power (nineteenth session).
    """
    n = len(SIGMAS_XY)
    a_mat, b = np.zeros((n, n)), np.zeros(n)
    for c in range(len(m)):  # (chunk by chunk: n filtered frames at a time)
        gm = np.stack([blurred(m[c:c + 1], s, lines)[0] for s in SIGMAS_XY]).reshape(n, -1)
        a_mat += gm @ gm.T
        b += gm @ m[c].ravel() - [float(np.vdot(blurred(d[c:c + 1], s, lines), d[c])) for s in SIGMAS_XY]
    if not (np.all(np.isfinite(a_mat)) and np.all(np.isfinite(b))) or np.trace(a_mat) <= 0:
        return np.zeros(n)
    scale = np.trace(a_mat) / n  # (the risk in units of a filtered image's energy: well-scaled for the solver)

    def risk(a: np.ndarray) -> float:
        return float(a @ a_mat @ a - 2 * a @ b) / scale

    # the best single Gaussian with a gain in [0, 1] obeys the bounds: the start, and the answer if the solver fails
    singles = [_gain_and_risk(float(a_mat[i, i]), float(b[i])) for i in range(n)]
    k = int(np.argmin([r for _, r in singles]))
    start = np.zeros(n)
    start[k] = singles[k][0]
    resp = filter_responses()
    fit = optimize.minimize(risk, start, jac=lambda a: (2 * a_mat @ a - 2 * b) / scale, method="SLSQP",
                            constraints=[{"type": "ineq", "fun": lambda a: resp @ a, "jac": lambda a: resp},
                                         {"type": "ineq", "fun": lambda a: 1 - resp @ a, "jac": lambda a: -resp}])
    feasible = fit.success and np.all(resp @ fit.x > -1e-6) and np.all(resp @ fit.x < 1 + 1e-6)
    weights = fit.x if feasible and risk(fit.x) < risk(start) else start
    return weights if risk(weights) < 0 else np.zeros(n)


def choose_correction(m: np.ndarray, d: np.ndarray, lines: bool = False, edges: bool = True
                      ) -> tuple[np.ndarray, float, float]:
    """The correction: ``edge_gain * P(m)`` (:func:`along_edges`, a bias along the frame's edges: :func:`_edge_stage`)
    plus ``sum_k a_k G_k(m')`` of what is left, ``m' = m - edge_gain * P(m)`` (:func:`_filter_weights`), each
    chosen by Stein's unbiased estimate of the squared error against ``m``'s noise-free part, with ``d`` a noise
    image of ``m``'s covariance (:func:`.averages.residual_means`).

    For a linear ``F``, ``E |F(m) - mu|^2 = E |F(m) - m|^2 + 2 E <F(d), d> - E <d, d>`` (any ``F``, symmetric or
    not). ``m'`` and ``d - edge_gain * P(d)`` are the same linear map of ``m`` and ``d``, so the second choice is
    as unbiased as the first. A constant part of ``m`` is left out (every frame keeps its mean).

    Parameters
    ----------
    m, d : ndarray (chunks, Y, X)
        Each chunk's mean residual and its noise image (not modified).
    lines : bool
        The images are a scan's interleaved lines, each direction filtered and pooled on its own.
    edges : bool
        Look for a bias along the edges (not for residuals averaged in the tissue's frame of a moving recording).

    Returns
    -------
    images : ndarray (chunks, Y, X), float32
        The correction.
    gain : float
        The filter's response to a smooth difference (the sum of its weights; 0: none).
    edge_gain : float
        The share of the edges' bias removed (0: none).
    """
    m, d = m - m.mean(axis=(1, 2), keepdims=True), d - d.mean(axis=(1, 2), keepdims=True)  # (copies)
    images = np.zeros(m.shape, np.float32)
    edge_gain, groups = _edge_stage(m, d, lines) if edges else (0.0, None)
    if groups is not None:
        for c in range(len(m)):
            edge = edge_gain * along_edges(m[c:c + 1], groups)[0]
            images[c] = edge
            m[c] -= edge
            d[c] -= edge_gain * along_edges(d[c:c + 1], groups)[0]
    weights = _filter_weights(m, d, lines)
    if np.any(weights):
        for c in range(len(m)):  # filtered again rather than n filtered copies of every chunk kept from the fit
            images[c] += sum(w * blurred(m[c:c + 1], s, lines)[0] for w, s in zip(weights, SIGMAS_XY, strict=True))
    return images, float(weights.sum()), edge_gain
