"""Simulated calcium activity: spike trains through a calcium kernel, and slow fluctuations.

Part of the two-photon simulator (:mod:`.simulator`). Activity is dF/F: Poisson spikes convolved with a
difference-of-exponentials kernel (rise ``tau_rise``, decay ``tau_decay``); a component's fluorescence is
``baseline * (1 + dF/F)``.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage, signal

__all__ = ["calcium_activity", "smooth_noise"]


def calcium_activity(rng: np.random.Generator, n: int, n_frames: int, fps: float, rate: float, tau_decay: float,
                     tau_rise: float, dff: float) -> tuple[np.ndarray, np.ndarray]:
    """Spike counts ``(n, T)`` int32 and dF/F ``(n, T)`` float32 for ``n`` components.

    Spike rates (mean ``rate`` Hz) are log-normally spread over the components, and so are the amplitudes (mean
    ``dff`` per spike). A burn-in of five decay times is simulated and dropped so the movie does not start quiet.
    """
    if n == 0:
        return np.zeros((0, n_frames), np.int32), np.zeros((0, n_frames), np.float32)
    burn = int(math.ceil(5 * tau_decay * fps))
    rates = rate * rng.lognormal(0.0, 0.7, n)  # some cells are much more active than others
    spikes = rng.poisson((rates / fps)[:, None], (n, n_frames + burn))
    g_d = math.exp(-1.0 / (tau_decay * fps))
    g_r = math.exp(-1.0 / (max(tau_rise, 1e-6) * fps))
    kern_peak = _kernel_peak(g_d, g_r)
    c = signal.lfilter([1.0], [1.0, -g_d], spikes, axis=1) - signal.lfilter([1.0], [1.0, -g_r], spikes, axis=1)
    amp = dff * rng.lognormal(0.0, 0.3, n) / kern_peak
    return spikes[:, burn:].astype(np.int32), (amp[:, None] * c[:, burn:]).astype(np.float32)


def _kernel_peak(g_d: float, g_r: float) -> float:
    """Peak of the discrete kernel ``g_d**k - g_r**k`` (so that amplitudes are per-spike peaks)."""
    k = np.arange(200)
    return float(np.max(g_d**k - g_r**k)) or 1.0


def smooth_noise(rng: np.random.Generator, n: int, n_frames: int, fps: float, timescale: float = 1.0) -> np.ndarray:
    """``(n, T)`` zero-mean, unit-std noise low-passed at ``timescale`` seconds (e.g. neuropil fluctuations)."""
    z = rng.normal(0, 1, (n, n_frames))
    z = ndimage.gaussian_filter1d(z, timescale * fps, axis=1, mode="reflect")
    z -= z.mean(axis=1, keepdims=True)
    return (z / np.maximum(z.std(axis=1, keepdims=True), 1e-12)).astype(np.float32)
