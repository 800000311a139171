"""Simulated brain motion: rigid per-frame shifts (drift, correlated motion or jitter) and how they move a frame.

Part of the two-photon simulator (:mod:`.simulator`). Shifts are ``(dy, dx)`` in pixels of a frame's content:
``moved(y, x) = static(y - dy, x - dx)``.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

__all__ = ["MOTION_KINDS", "rigid_shifts", "shift_frame"]

# Frame-to-frame correlation of each motion kind's AR(1) shifts. 'walk': a mean-reverting drift (~1 s
# correlation at 30 Hz) that moves like real brain motion but stays put; 'ar': correlated motion between
# drift and jitter (consecutive frames ~1 px apart at std 1 px); 'jitter': independent per-frame shifts.
MOTION_KINDS: dict[str, float] = {"walk": 0.97, "ar": 0.5, "jitter": 0.0}


def rigid_shifts(rng: np.random.Generator, n: int, std: float, kind: str, limit: float) -> np.ndarray:
    """``(n, 2)`` float32 rigid shifts of motion ``kind`` (a key of :data:`MOTION_KINDS`).

    AR(1) with the kind's frame-to-frame correlation, rescaled to empirical std ``std`` per axis and zero mean,
    clipped to ``+-limit``; all zeros when ``std`` is 0.
    """
    if std == 0:
        return np.zeros((n, 2), np.float32)
    e = rng.normal(0, 1, (n, 2))
    rho = MOTION_KINDS[kind]
    if rho > 0:
        s = np.empty_like(e)
        s[0] = e[0]
        for t in range(1, n):
            s[t] = rho * s[t - 1] + math.sqrt(1 - rho * rho) * e[t]
    else:
        s = e
    s -= s.mean(axis=0)
    s *= std / np.maximum(s.std(axis=0), 1e-12)
    return np.clip(s, -limit, limit).astype(np.float32)


def shift_frame(frame: np.ndarray, shift: np.ndarray, row_shifts: np.ndarray | None, margin: int, ny: int,
                nx: int) -> np.ndarray:
    """Move a canvas frame's content by ``shift`` (or per-row ``row_shifts``, ``(ny, 2)``) and crop the field of
    view ``(ny, nx)`` that starts ``margin`` pixels into the canvas (cubic spline)."""
    if row_shifts is None:
        moved = ndimage.shift(frame, (float(shift[0]), float(shift[1])), order=3, mode="nearest")
        return moved[margin : margin + ny, margin : margin + nx]
    yy, xx = np.mgrid[0:ny, 0:nx].astype(np.float32)
    cy = yy + margin - row_shifts[:, 0:1]
    cx = xx + margin - row_shifts[:, 1:2]
    return ndimage.map_coordinates(frame, [cy, cx], order=3, mode="nearest")
