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
costs at full rate and what the calibration saw of it at half rate follow (:meth:`SignalChanges.cost`: exact for a
model that passes the signal through and a half-rate result as modelled there; ``C``, that model and the two-scale
split are estimates, and on slowly changing signals the charge errs on the side of less smoothing: up to 0.6 dB on
the package's simulator, docs/benchmarks.md); the calibration's errors are charged the difference. A two-scale
smoothing's fine and coarse windows are charged their shares of the changes, the fine detail's measured on the input
as well (:func:`_fine_share`; from frame to frame the noise is independent even at one pixel).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import fft as sfft
from scipy import ndimage

from .temporal_filter import TRUNCATE, radius, smooth_xy

__all__ = ["FAR_LAG", "FINE_LAGS", "LAGS", "MAX_BLOB_PX2", "SignalChanges", "measure"]

LAGS: tuple[int, ...] = (3, 4)  # rows apart whose noise is independent (see above)
FAR_LAG = 6  # ... and farther apart: how fast the correlation decays gives the signal's spatial scale
# Along a measured motion the even frames' result is taken as partly interpolated to the odd frame between: 3/4 of
# the frame before, 1/4 after (the package's simulator under AR(1) motion: charged as a copy of the frame before,
# the coarse window went from 1 frame to none and lost 0.7 dB; the independent simulator's moving scenes: the same
# either way; still recordings with a fast indicator wanted the copy: 8m at 5 Hz +1.5 dB; docs/benchmarks.md)
ALONG_INTERPOLATED = 0.5
MAX_BLOB_PX2 = 30.0  # the largest blob variance taken (a soma of radius 8 px); a whole field's change counts as that
MAX_SCALE = 4.0  # the most the covariance between rows LAGS apart is scaled up to the signal's own (small blobs)
# Frames apart over which the fine detail's share of the changes is fitted (:func:`_fine_share`); a frame's noise is
# independent of another's, so from lag 1 on no rows need be apart (the blob model's share was 1.2-11x too small on
# the independent simulator, whose cells are rings and of many sizes: docs/benchmarks.md)
FINE_LAGS = 12


class SignalChanges:
    """The signal's covariance over time ``covariance[tau]`` (power per pixel, ``tau`` frames apart, each pixel's
    mean over the block removed; none: nothing measured) and the variance ``blob_px2`` (px^2) of a Gaussian blob
    with its spatial correlation. ``interpolated``: the share of the even frames' result taken as the mean of the
    even frames either side of the odd one it predicts, the rest as a copy of the frame before (:meth:`cost`)."""

    def __init__(self, covariance: np.ndarray | None = None, blob_px2: float = MAX_BLOB_PX2,
                 interpolated: float = 0.0, fine_shares: dict[float, float] | None = None) -> None:
        self.covariance = np.zeros(1) if covariance is None else np.asarray(covariance, np.float64)
        self.blob_px2 = blob_px2
        self.interpolated = interpolated
        self.fine_shares = dict(fine_shares or {})
        self._costs: dict[tuple[float, float, float], float] = {}

    @property
    def measured(self) -> bool:
        """Whether there is anything to charge."""
        return bool(np.any(self.covariance != 0))

    def fine_share(self, split_px: float) -> float:
        """The share of the signal's changes finer than a Gaussian of ``split_px`` (:mod:`.bands`): as measured
        (:attr:`fine_shares`, no less than the blob model's), else for Gaussian blobs of variance ``a``, split
        ``b = split_px^2 / 2``, ``1 - 2a / (a + b) + a / (a + 2b)``."""
        a, b = self.blob_px2, split_px**2 / 2
        blobs = float(1 - 2 * a / (a + b) + a / (a + 2 * b))
        return max(blobs, self.fine_shares.get(split_px, 0.0))

    def cost(self, sigma_t: float, blend: float = 0.0, blend_t: float = 0.0) -> float:
        """What smoothing the full-rate output over ``sigma_t`` frames (``blend`` of it replaced by the input smoothed
        over ``blend_t`` frames: :mod:`.smoothing`'s blend) costs against no smoothing, less what the calibration saw
        of that: the same window at half rate (``sigma_t / 2`` of the even frames' result) predicting the odd frames
        between them. For a model that passes the signal through (the generalists see each frame whole: jGCaMP8m at
        5 Hz, the unsmoothed output kept 0.92 of the transients' amplitude).

        With ``K`` the weights of each output frame's window (``A`` its autocorrelation), the full-rate error of the
        signal is ``sum_tau C(tau) A(tau) - 2 sum_i K_i C(i) + C(0)``; the half-rate one, against frames an odd
        number of frames away, ``sum_tau C(2 tau) A'(tau) - 2 sum_i K'_i C(2i + 1) + C(0)`` for a result that copies
        the even frame before (:attr:`interpolated` 0; a mix of the frames either side otherwise: :meth:`_half`), less
        its value without smoothing.
        """
        key = (sigma_t, blend, blend_t)
        if key not in self._costs:
            full = _mixed(_kernel(sigma_t), _kernel(blend_t), blend)
            half = _mixed(_kernel(sigma_t / 2), _kernel(blend_t / 2), blend)
            r = len(full) // 2
            self._costs[key] = self._error(np.arange(-r, r + 1), full) - (self._half(half) - self._half(np.ones(1)))
        return self._costs[key]

    def _half(self, weights: np.ndarray) -> float:
        """The signal's error of the even frames' result, smoothed by ``weights`` (centred, frames of the result),
        predicting the odd frame after the centre one (:attr:`interpolated` of each even frame's share on the one
        after it)."""
        r, lam = len(weights) // 2, self.interpolated
        before = 2 * np.arange(-r, r + 1) - 1
        return self._error(np.r_[before, before + 2], np.r_[weights * (1 - lam / 2), weights * lam / 2])

    def _error(self, offsets: np.ndarray, weights: np.ndarray) -> float:
        """The signal's mean squared error when frames ``offsets`` away, weighted by ``weights``, predict a frame."""
        c = self.covariance

        def cov(t: np.ndarray) -> np.ndarray:  # beyond the lags measured, the mean of the longer half (what lasts)
            t = np.abs(t)
            return np.where(t < len(c), c[np.minimum(t, len(c) - 1)], np.mean(c[len(c) // 2 :]))

        pairs = cov(offsets[:, None] - offsets[None, :])
        return float(weights @ pairs @ weights - 2 * np.sum(weights * cov(offsets)) + c[0])


def measure(frames: np.ndarray, margin: int = 0, interpolated: float = 0.0,
            splits: tuple[float, ...] = ()) -> SignalChanges:
    """The :class:`SignalChanges` of full-rate ``frames`` ``(n, Y, X)``; ``margin`` rows and columns at each edge are
    left out (a canvas's extended edges); ``interpolated`` as there; the fine detail's share measured for each of
    ``splits`` (pixels: :mod:`.bands`' scales)."""
    x = np.asarray(frames, np.float64)
    if margin > 0:
        x = x[:, margin:-margin, margin:-margin]
    if len(x) < 5 or x.shape[1] <= FAR_LAG or x.shape[2] == 0:
        return SignalChanges()
    x = x - x.mean(axis=0)
    cov = np.mean([_over_time(x[:, :-lag], x[:, lag:]) for lag in LAGS], axis=0)
    if not np.all(np.isfinite(cov)):
        return SignalChanges()
    near, far = cov[0], float(np.mean(x[:, :-FAR_LAG] * x[:, FAR_LAG:]))
    # a Gaussian blob's correlation falls as exp(-L^2 / 4a); barely falling (a whole field's change): the largest
    near_l2 = float(np.mean(np.square(LAGS)))
    blob = (FAR_LAG**2 - near_l2) / (4 * math.log(near / far)) if near > far > 0 else math.inf
    blob = min(max(float(blob), 1.0), MAX_BLOB_PX2)
    x32 = x.astype(np.float32) if splits else None  # (once for every split: the FFTs work in float32)
    whole = _over_time(x32) if splits else None
    shares = {split: _fine_share(x32, whole, split) for split in splits}
    return SignalChanges(cov * min(math.exp(near_l2 / (4 * blob)), MAX_SCALE), blob, interpolated,
                         {split: share for split, share in shares.items() if share is not None})


def _fine_share(x: np.ndarray, whole: np.ndarray, split_px: float) -> float | None:
    """The share of the changes of ``x`` (float32, each pixel's mean removed; ``whole``: its :func:`_over_time`)
    finer than a Gaussian of ``split_px``, or None.

    Each pixel's covariance over time from lag 1 on holds no noise, bar the same small bias at every lag (the block's
    mean removed): the slope of the fine detail's covariance against the whole's over lags 1 to :data:`FINE_LAGS` is
    the fine share of what changes between those lags, the bias falling out. (Where little changes over them, a fast
    indicator's transients within single frames, the fit is noisy: single-frame flashes in Poisson noise gave 0.27
    at 2 px against 0.05 clean; :meth:`SignalChanges.fine_share` takes no less than the blob model's. None where the
    whole's covariance is flat over those lags or not finite.)
    """
    lags = min(FINE_LAGS, len(x) // 4)
    if lags < 3:
        return None
    every, fine = whole[1 : lags + 1], _over_time(x - smooth_xy(x, split_px))[1 : lags + 1]
    spread = float(np.var(every))
    if not (np.isfinite(spread) and spread > 0 and np.all(np.isfinite(fine))):
        return None
    slope = float(np.mean((every - every.mean()) * (fine - fine.mean())) / spread)
    return min(max(slope, 0.0), 1.0)


def _over_time(a: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """``mean(a[i] b[i + t] + b[i] a[i + t]) / 2`` over frames ``i`` and pixels, for every ``t < n - 1``: both ways
    (symmetric in time for changes that travel across the rows), by one FFT along time of each (float32); ``b``
    None: ``a`` itself."""
    n = len(a)
    spectra = [sfft.rfft(np.asarray(v, np.float32).reshape(n, -1), 2 * n, axis=0) for v in (a, b) if v is not None]
    sums = sfft.irfft((np.conj(spectra[0]) * spectra[-1]).sum(axis=1, dtype=np.complex128), 2 * n)
    both = sums[: n - 1] + np.r_[sums[0], sums[2 * n - 1 : n + 1 : -1]]  # lags t and -t (wrapped to 2n - t)
    return both / (2 * (n - np.arange(n - 1)) * a[0].size)


def _mixed(a: np.ndarray, b: np.ndarray, w: float) -> np.ndarray:
    """``(1 - w) a + w b`` for centred kernels of any odd lengths."""
    n = max(len(a), len(b))
    a, b = (np.pad(k, (n - len(k)) // 2) for k in (a, b))
    return (1 - w) * a + w * b


def _kernel(sigma: float) -> np.ndarray:
    """The weights of :func:`.temporal_filter.smooth_t`'s Gaussian of ``sigma`` frames (a unit impulse, filtered)."""
    n = 2 * radius(sigma) + 3
    impulse = np.zeros(n)
    impulse[n // 2] = 1.0
    return ndimage.gaussian_filter1d(impulse, sigma, truncate=TRUNCATE) if sigma > 0 else impulse
