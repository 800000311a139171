"""Signal that changes from one frame to the next: what the output smoothing's calibration cannot see, measured.

The smoothing is chosen by how well the model's result on the even frames of a block predicts the odd frames
(:mod:`.smoothing`). Whatever in the signal is specific to one frame (a fast indicator's transient at a low frame
rate, a rise within one frame, laser flicker) is in no other frame: to that prediction it is noise. So the
calibration is blind to what smoothing over time removes of it from the full-rate output, and worse, it *credits*
each window with removing it from the even frames' result, where it does not match the odd frames. On an
independent simulation with jGCaMP8m at 5 Hz the calibration chose 16 frames and the output lost 6 dB against no
smoothing (docs/benchmarks.md).

Its power can be measured on the input itself, free of the noise: the temporal second difference
``D = x_t - (x_{t-1} + x_{t+1}) / 2`` keeps what is specific to frame ``t`` (1.5 times its power) and the noise,
and the noise of rows :data:`LAGS` apart is independent (a detector's low-pass correlates neighbours along a line,
and resampled movies neighbouring rows: 0.39 at lag 1, 0.05 at lag 2, none beyond), while a cell's transient spans
many rows. The product of ``D`` at rows that far apart averages to the frame-specific power there.
:func:`window_cost` turns it into what a window of the output smoothing costs against no smoothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

import numpy as np
from scipy import ndimage

from .temporal_filter import TRUNCATE

__all__ = ["LAGS", "FrameSpecific", "blend_cost", "frame_specific_power", "window_cost"]

LAGS: tuple[int, ...] = (3, 4)  # rows apart whose noise is independent (see above)
FAR_LAG = 6  # ... and farther apart: how fast the correlation decays gives the signal's spatial scale
MAX_BLOB_PX2 = 30.0  # the largest blob variance taken (a soma of radius 8 px); a whole field's change counts as that
SHRINK_SE = 2.0  # the estimate less this many of its standard errors (frame to frame), never below 0


@dataclass(frozen=True)
class FrameSpecific:
    """The signal specific to single frames: its mean ``power`` per pixel and the variance ``blob_px2`` (px^2) of a
    Gaussian blob with its spatial correlation (from its decay between :data:`LAGS` and :data:`FAR_LAG`)."""

    power: float = 0.0
    blob_px2: float = MAX_BLOB_PX2

    def fine_share(self, split_px: float) -> float:
        """The share of its power finer than a Gaussian of ``split_px`` (:mod:`.bands`): for Gaussian blobs of
        variance ``a``, split ``b = split_px^2 / 2``, ``1 - 2a / (a + b) + a / (a + 2b)``."""
        a, b = self.blob_px2, split_px**2 / 2
        return float(1 - 2 * a / (a + b) + a / (a + 2 * b))


def frame_specific_power(frames: np.ndarray, margin: int = 0) -> FrameSpecific:
    """The signal in full-rate ``frames`` ``(n, Y, X)`` that no other frame shares: its power per pixel less
    :data:`SHRINK_SE` standard errors (0 where it does not stand out from its own noise) and its spatial scale;
    ``margin`` rows and columns at each edge are left out (a canvas's extended edges)."""
    x = np.asarray(frames, np.float64)
    if margin > 0:
        x = x[:, margin:-margin, margin:-margin]
    if len(x) < 5 or x.shape[1] <= FAR_LAG:
        return FrameSpecific()
    d = x[1:-1] - 0.5 * (x[:-2] + x[2:])
    per_frame = np.mean([np.mean(d[:, :-lag] * d[:, lag:], axis=(1, 2)) for lag in LAGS], axis=0) / 1.5
    # the standard error from the noise's spread, robustly (a few frames' transients carry much of the power; second
    # differences two frames apart share a frame: every other one counts)
    spread = 1.4826 * np.median(np.abs(per_frame - np.median(per_frame)))
    power = float(np.mean(per_frame)) - SHRINK_SE * float(spread / np.sqrt(max(len(per_frame) / 2, 1.0)))
    if power <= 0:
        return FrameSpecific()
    far = float(np.mean(d[:, :-FAR_LAG] * d[:, FAR_LAG:])) / 1.5
    near, near_l2 = float(np.mean(per_frame)), float(np.mean(np.square(LAGS)))
    # a Gaussian blob's correlation falls as exp(-L^2 / 4a); barely falling (flicker, a whole field's change): large
    blob = (FAR_LAG**2 - near_l2) / (4 * math.log(near / far)) if near > far > 0 else math.inf
    return FrameSpecific(power, min(max(blob, 1.0), MAX_BLOB_PX2))


def window_cost(sigma_t: float, passed: float = 1.0) -> float:
    """What smoothing the full-rate output by a Gaussian of ``sigma_t`` frames costs, in units of the frame-specific
    power, beyond what its calibration sees, for a model that passes ``passed`` of that signal through: what the
    window removes of it from each output frame, less what the calibration credited it with removing from the even
    frames' result (the half-rate window, ``sigma_t / 2``), where it does not match the odd frames. 0 for no
    smoothing.

    The engine takes ``passed`` 1: the generalists see each frame whole (jGCaMP8m at 5 Hz, 5 photons: the unsmoothed
    output kept 0.92 of the transients' amplitude), and a share from a Wiener filter's gain on single frames (0.34
    for GCaMP6f at 10 Hz, 1 photon) undercharged: its truth wanted less smoothing still (docs/benchmarks.md).
    """
    return blend_cost(0.0, 0.0, sigma_t, passed)


@cache
def blend_cost(blend: float, blend_t: float, sigma_t: float, passed: float = 1.0) -> float:
    """:func:`window_cost` of the output smoothed over ``sigma_t`` frames, ``blend`` of it replaced by the input
    smoothed over ``blend_t`` frames (:mod:`.smoothing`'s blend; the input keeps all of each frame's signal).

    With ``K`` the share of a frame's own signal that lands in each output frame (``K_0`` in its own) and ``K'``
    the same at half rate, the full-rate error ``(1 - K_0)^2 + sum_{j != 0} K_j^2`` less the calibration's
    ``sum_j K'_j^2``, both against no smoothing (``K = passed`` in its own frame alone).
    """
    g = passed
    full = _mixed(g * _kernel(sigma_t), _kernel(blend_t), blend)
    half = _mixed(g * _kernel(sigma_t / 2), _kernel(blend_t / 2), blend)
    mid = len(full) // 2
    missed = (1 - full[mid]) ** 2 + np.sum(full**2) - full[mid] ** 2
    return float(missed - (1 - g) ** 2 - np.sum(half**2) + g**2)


def _mixed(a: np.ndarray, b: np.ndarray, w: float) -> np.ndarray:
    """``(1 - w) a + w b`` for centred kernels of any odd lengths."""
    n = max(len(a), len(b))
    a, b = (np.pad(k, (n - len(k)) // 2) for k in (a, b))
    return (1 - w) * a + w * b


def _kernel(sigma: float) -> np.ndarray:
    """The weights of :func:`.temporal_filter.smooth_t`'s Gaussian of ``sigma`` frames (a unit impulse, filtered)."""
    n = 2 * int(TRUNCATE * sigma + 0.5) + 3
    impulse = np.zeros(n)
    impulse[n // 2] = 1.0
    return ndimage.gaussian_filter1d(impulse, sigma, truncate=TRUNCATE) if sigma > 0 else impulse
