"""How the signal changes from frame to frame, measured through the noise: what the output smoothing's calibration
cannot see.

The smoothing is chosen by how well the model's result on the even frames of a block predicts the odd frames
(:mod:`.smoothing`). That prediction judges each window at half the frame rate, against frames half a frame away:
whatever in the signal changes within a frame or two (a fast indicator's transient at a low frame rate, a rise
within one frame) is partly noise to it. It cannot see what a window removes of that signal from the full-rate
output, and it credits each window with removing it from the even frames' result, where it does not match the odd
frames. On independent simulations the calibration chose 16 frames where no smoothing was 6 dB better (jGCaMP8m at
5 Hz) and 2 frames where none was 0.9 dB better (jGCaMP8m at 15 Hz; docs/benchmarks.md).

The signal's covariance over time can be measured on the input itself, free of the noise: the noise of rows
:data:`LAGS` apart is independent (a detector's low-pass correlates neighbours along a line, a resampled movie
neighbouring rows: 0.39 at lag 1, 0.05 at lag 2, none beyond) while a cell spans many rows, so the product of
each pixel's change from its mean with another's that many rows away, ``tau`` frames later, averages to the
signal's covariance ``C(tau)`` times its spatial correlation at that distance; the correlation's decay to rows
:data:`FAR_LAG` apart gives the signal's scale (a Gaussian blob's), and so that factor. From ``C``, what a window
costs at full rate and what the calibration saw of it at half rate follow (:meth:`SignalChanges.cost`: the
windows' formulas are exact, ``C`` and the two-scale split are estimates); the calibration's errors are charged the
difference.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import fft as sfft
from scipy import ndimage

from .temporal_filter import TRUNCATE

__all__ = ["FAR_LAG", "LAGS", "MAX_BLOB_PX2", "SignalChanges", "measure"]

LAGS: tuple[int, ...] = (3, 4)  # rows apart whose noise is independent (see above)
FAR_LAG = 6  # ... and farther apart: how fast the correlation decays gives the signal's spatial scale
MAX_BLOB_PX2 = 30.0  # the largest blob variance taken (a soma of radius 8 px); a whole field's change counts as that
MAX_SCALE = 4.0  # the most the covariance between rows LAGS apart is scaled up to the signal's own (small blobs)


class SignalChanges:
    """The signal's covariance over time ``covariance[tau]`` (power per pixel, ``tau`` frames apart, each pixel's
    mean over the block removed; none: nothing measured) and the variance ``blob_px2`` (px^2) of a Gaussian blob
    with its spatial correlation."""

    def __init__(self, covariance: np.ndarray | None = None, blob_px2: float = MAX_BLOB_PX2) -> None:
        self.covariance = np.zeros(1) if covariance is None else np.asarray(covariance, np.float64)
        self.blob_px2 = blob_px2
        self._costs: dict[tuple[float, float, float], float] = {}

    @property
    def measured(self) -> bool:
        """Whether there is anything to charge."""
        return bool(np.any(self.covariance != 0))

    def fine_share(self, split_px: float) -> float:
        """The share of the signal's changes finer than a Gaussian of ``split_px`` (:mod:`.bands`): for Gaussian
        blobs of variance ``a``, split ``b = split_px^2 / 2``, ``1 - 2a / (a + b) + a / (a + 2b)``."""
        a, b = self.blob_px2, split_px**2 / 2
        return float(1 - 2 * a / (a + b) + a / (a + 2 * b))

    def cost(self, sigma_t: float, blend: float = 0.0, blend_t: float = 0.0) -> float:
        """What smoothing the full-rate output over ``sigma_t`` frames (``blend`` of it replaced by the input smoothed
        over ``blend_t`` frames: :mod:`.smoothing`'s blend) costs against no smoothing, less what the calibration saw
        of that: the same window at half rate (``sigma_t / 2`` of the even frames' result) predicting the odd frames
        between them. For a model that passes the signal through (the generalists see each frame whole: jGCaMP8m at
        5 Hz, the unsmoothed output kept 0.92 of the transients' amplitude).

        With ``K`` the weights of each output frame's window (``A`` its autocorrelation), the full-rate error of the
        signal is ``sum_tau C(tau) A(tau) - 2 sum_i K_i C(i) + C(0)``; the half-rate one, against frames an odd
        number of frames away, ``sum_tau C(2 tau) A'(tau) - 2 sum_i K'_i C(2i + 1) + C(0)``, less its value
        without smoothing.
        """
        key = (sigma_t, blend, blend_t)
        if key not in self._costs:
            full = _mixed(_kernel(sigma_t), _kernel(blend_t), blend)
            half = _mixed(_kernel(sigma_t / 2), _kernel(blend_t / 2), blend)
            self._costs[key] = self._error(full, 1, 0) - (self._error(half, 2, 1) - self._error(np.ones(1), 2, 1))
        return self._costs[key]

    def _error(self, weights: np.ndarray, step: int, offset: int) -> float:
        """The signal's mean squared error when frames ``step`` apart, weighted by ``weights`` (centred), predict the
        frame ``offset`` frames after the centre one."""
        c = self.covariance
        r = len(weights) // 2
        auto = np.correlate(weights, weights, mode="full")  # lags -2r .. 2r
        lags = np.abs(np.arange(-2 * r, 2 * r + 1) * step)
        at = np.abs(np.arange(-r, r + 1) * step + offset)
        # beyond the lags measured, the mean of the longer half of them (what lasts: a drift, bleaching)
        cov = lambda t: np.where(t < len(c), c[np.minimum(t, len(c) - 1)], np.mean(c[len(c) // 2 :]))  # noqa: E731
        return float(np.sum(auto * cov(lags)) - 2 * np.sum(weights * cov(at)) + c[0])


def measure(frames: np.ndarray, margin: int = 0) -> SignalChanges:
    """The :class:`SignalChanges` of full-rate ``frames`` ``(n, Y, X)``; ``margin`` rows and columns at each edge are
    left out (a canvas's extended edges)."""
    x = np.asarray(frames, np.float64)
    if margin > 0:
        x = x[:, margin:-margin, margin:-margin]
    if len(x) < 5 or x.shape[1] <= FAR_LAG or x.shape[2] == 0:
        return SignalChanges()
    x = x - x.mean(axis=0)
    # both ways (row y then y + L, and y + L then y): symmetric in time for changes that travel across the rows
    cov = np.mean([_over_time(a, b) + _over_time(b, a) for a, b in ((x[:, :-L], x[:, L:]) for L in LAGS)], axis=0) / 2
    near, far = cov[0], float(np.mean(x[:, :-FAR_LAG] * x[:, FAR_LAG:]))
    if not np.all(np.isfinite(cov)):
        return SignalChanges()
    # a Gaussian blob's correlation falls as exp(-L^2 / 4a); barely falling (a whole field's change): the largest
    near_l2 = float(np.mean(np.square(LAGS)))
    blob = (FAR_LAG**2 - near_l2) / (4 * math.log(near / far)) if near > far > 0 else math.inf
    blob = min(max(float(blob), 1.0), MAX_BLOB_PX2)
    return SignalChanges(cov * min(math.exp(near_l2 / (4 * blob)), MAX_SCALE), blob)


def _over_time(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``mean(a[i] * b[i + t])`` over frames ``i`` and pixels, for every ``t < n - 1`` (by FFT along time)."""
    n = len(a)
    spectra = np.conj(sfft.rfft(a.reshape(n, -1), 2 * n, axis=0)) * sfft.rfft(b.reshape(n, -1), 2 * n, axis=0)
    sums = sfft.irfft(spectra.sum(axis=1), 2 * n)[: n - 1]
    return sums / ((n - np.arange(n - 1)) * a[0].size)


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
