"""The output smoothing's Gaussian filters: over time, over each frame, and over time for a few frames of a stream.

:class:`~napari_unet_att.inference.smoother.TemporalSmoother` emits the smoothed output a few frames at a time,
holding only the frames their kernel reaches. :func:`smooth_t_part` computes exactly those frames, the whole
stack's result (:func:`smooth_t`, scipy's ``gaussian_filter1d`` with ``mode='reflect'``) to float32
rounding: filtering the held window and keeping its middle also filtered the kernel's reach either side, 3.3x the
work at 6 frames.
"""

from __future__ import annotations

import functools

import numpy as np
from scipy import ndimage

TRUNCATE = 3.0  # the Gaussian kernel reaches TRUNCATE * sigma frames either way (99.7% of its weight)
MATRIX_FRAMES = 512  # up to this many frames, :func:`smooth_t` is one matrix product (its weights: 1 MB in float32)
MATRIX_TAPS = 32  # :func:`smooth_xy` by matrix products where a frame's height and width add up to at most this
# many times the kernel's taps (a product costs both per pixel, scipy the taps: 40 x 128 x 128 at 1.5 / 5 px took
# 7.3 / 14.7 ms in scipy, 4.5 as products; 8 x 512 x 512 at 5 px 50 and 49 ms)

__all__ = ["MATRIX_FRAMES", "MATRIX_TAPS", "TRUNCATE", "filter_matrix", "radius", "smooth", "smooth_t",
           "smooth_t_part", "smooth_xy"]


def radius(sigma: float) -> int:
    """How many samples either way scipy's Gaussian of ``sigma`` reaches (:data:`TRUNCATE`): its kernel has
    ``2 * radius + 1`` taps."""
    return int(TRUNCATE * sigma + 0.5)


def smooth_t(stack: np.ndarray, sigma_t: float) -> np.ndarray:
    """``stack`` (float32) smoothed along time by a Gaussian of ``sigma_t`` frames, mirrored at the ends (scipy's
    'reflect'); the time axis of ``smoothing.smooth``; ``stack`` itself when ``sigma_t`` is 0.

    Up to :data:`MATRIX_FRAMES` frames of floats, one product with the filter's ``(n, n)`` matrix (scipy's weights,
    to float32 rounding): scipy's filter along the first axis of a C-ordered stack took 8-15 ms on 40 x 128 x 128
    frames, the product 1-3 ms (the output smoothing's calibration filters a block 20 to 40 times).
    """
    if sigma_t <= 0:
        return stack
    n = len(stack)
    if not 0 < n <= MATRIX_FRAMES or stack.dtype not in (np.float32, np.float64):
        return ndimage.gaussian_filter1d(stack, sigma_t, axis=0, mode="reflect", truncate=TRUNCATE)
    return (filter_matrix(n, sigma_t, stack.dtype) @ stack.reshape(n, -1)).reshape(stack.shape)


def filter_matrix(n: int, sigma: float, dtype: np.dtype | type = np.float64, mode: str = "reflect") -> np.ndarray:
    """The ``(n, n)`` matrix of scipy's ``gaussian_filter1d`` of ``sigma`` over ``n`` samples (``mode`` at the ends,
    :data:`TRUNCATE`): ``M @ x`` filters ``x`` along its first axis (read-only: shared)."""
    return _matrix(int(n), float(sigma), np.dtype(dtype).str, mode)


@functools.lru_cache(maxsize=32)
def _matrix(n: int, sigma: float, dtype: str, mode: str) -> np.ndarray:
    """:func:`filter_matrix`: the filter's response to each sample alone, cached."""
    m = ndimage.gaussian_filter1d(np.eye(n), sigma, axis=0, mode=mode, truncate=TRUNCATE).astype(dtype)
    m.setflags(write=False)
    return m


def smooth(stack: np.ndarray, sigma_t: float, sigma_xy: float) -> np.ndarray:
    """``stack`` (float32) smoothed by a Gaussian of ``sigma_t`` frames and ``sigma_xy`` pixels, mirrored at the
    edges (scipy's 'reflect'); ``stack`` itself when both are 0."""
    return smooth_xy(smooth_t(stack, sigma_t), sigma_xy)


def smooth_xy(stack: np.ndarray, sigma_xy: float, mode: str = "reflect") -> np.ndarray:
    """The frame axes of :func:`smooth` alone (the last two: each frame, or each plane of a
    :func:`.tissue.to_tissue` canvas of a scan, on its own); ``mode``: scipy's, at the frame's edges.

    Wide kernels on small frames (:data:`MATRIX_TAPS`) as two matrix products, scipy's weights to float32 rounding.
    """
    if sigma_xy <= 0:
        return stack
    ny, nx = stack.shape[-2:]
    taps = 2 * radius(sigma_xy) + 1
    if stack.dtype in (np.float32, np.float64) and ny + nx <= MATRIX_TAPS * taps:
        rows, cols = (filter_matrix(n, sigma_xy, stack.dtype, mode) for n in (ny, nx))
        return np.matmul(rows, stack @ cols.T)
    sigma = (0.0,) * (stack.ndim - 2) + (sigma_xy, sigma_xy)
    return ndimage.gaussian_filter(stack, sigma, mode=mode, truncate=TRUNCATE)


def smooth_t_part(window: np.ndarray, lo: int, n_frames: int, sigma_t: float, first: int, last: int) -> np.ndarray:
    """Frames ``[first, last)`` of ``smooth_t(stack, sigma_t)`` (float32; with ``sigma_t`` 0 a view of ``window``),
    from ``window`` = ``stack[lo : lo + len(window)]``.

    ``window`` must hold every frame of the stack (``n_frames`` long) that those frames' kernel reaches, the
    stack's ends mirrored as by :func:`smooth_t` (scipy's 'reflect'). The result is the whole stack's to float32
    rounding, from one matrix product of the frames' weights on the window's: filtering the window and keeping its
    middle (as ``TemporalSmoother`` did) also filtered the kernel's reach either side, 3.3x the work at 6 frames;
    a weighted sum of whole frames per tap took 1.2 / 2.3 ms for 16 frames of 128 x 64 at 4 / 8 frames, the
    product 0.25 / 0.34 ms.
    """
    if sigma_t <= 0:
        return window[first - lo : last - lo]  # a view, as smooth_t gives the stack itself
    if last <= first:
        return np.zeros((0, *window.shape[1:]), np.float32)
    r = radius(sigma_t)  # (as :attr:`Smoothing.radius`)
    src = _reflected(np.arange(first, last)[:, None] + np.arange(-r, r + 1), n_frames) - lo  # (frame, tap)
    if src.min() < 0 or src.max() >= len(window):
        raise ValueError(f"frames {first}-{last} of {n_frames} need frames {lo + src.min()}-{lo + src.max()}, "
                         f"not only the window's {lo}-{lo + len(window) - 1}")
    w = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma_t) ** 2)
    weights = np.zeros((last - first, len(window)))
    np.add.at(weights, (np.arange(last - first)[:, None], src), w / w.sum())  # (a mirrored frame: its taps add up)
    return np.tensordot(weights.astype(np.result_type(window, np.float32)), window, axes=1)


def _reflected(t: np.ndarray, n: int) -> np.ndarray:
    """Frame indices ``t`` mirrored into ``[0, n)`` about the half-frame past each end (scipy's 'reflect')."""
    t = np.mod(t, 2 * n)
    return np.where(t < n, t, 2 * n - 1 - t)
