"""The simulated microscope: it scans the moving scene into frames and counts photons into ADU.

Part of the two-photon simulator (:mod:`.simulator`).

* :func:`scan`: the clean movie as the field of view sees it, frame by frame, with the scene moved by each frame's
  rigid shift (or, with line motion, every line by its own shift: motion continues during the scan).
* :func:`detect`: Poisson shot noise at the expected photon count of each pixel, then ``gain`` (ADU per photon),
  Gaussian read noise (ADU) and an ``offset``, rounded and clipped to uint16 like PMT data (values clip, they never
  wrap). In the bidirectional layout every physical line is recorded twice (forward, backward) with independent
  noise; backward lines may be stored x-reversed.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse

from .motion import shift_frame

__all__ = ["detect", "scan"]

_UINT16_MAX = 65535
_FRAMES_PER_CHUNK = 32  # frames built (and noised) at once: bounds the float32 temporaries


def scan(footprints: sparse.csr_matrix, activity: np.ndarray, neuropil: tuple[np.ndarray, np.ndarray],
         neuropil_gain: np.ndarray, shifts: np.ndarray, line_motion: bool, margin: int,
         canvas: tuple[int, int], fov: tuple[int, int]) -> np.ndarray:
    """Clean movie in arbitrary units, ``(T, Y, X)`` float32, built chunk by chunk.

    Parameters
    ----------
    footprints : sparse ``(canvas pixels, components)``
        Where each component's fluorescence falls on the canvas.
    activity : ``(components, T)``
        Each component's fluorescence in every frame.
    neuropil : (static, pattern)
        Flattened canvas images of the background and of its fluctuating part.
    neuropil_gain : ``(2, T)``
        Weights of ``static`` and ``pattern`` in every frame.
    shifts : ``(T + 1, 2)``
        Rigid shift of every frame's content; the extra last one ends the last frame (for ``line_motion``).
    line_motion : bool
        Interpolate the shift linearly from frame ``t`` to ``t + 1`` along the lines of frame ``t``.
    margin, canvas, fov
        The canvas ``(Y + 2 margin, X + 2 margin)`` holds the field of view ``(Y, X)`` at ``margin``; with margin 0
        there is no motion and frames are not resampled.
    """
    n_frames = activity.shape[1]
    ny, nx = fov
    np_static, np_pattern = neuropil
    out = np.empty((n_frames, ny, nx), np.float32)
    for t0 in range(0, n_frames, _FRAMES_PER_CHUNK):
        t1 = min(n_frames, t0 + _FRAMES_PER_CHUNK)
        frames = np.asarray(footprints @ activity[:, t0:t1]).T  # (pixels, t) -> (t, pixels)
        frames = frames + np.outer(neuropil_gain[0, t0:t1], np_static) + np.outer(neuropil_gain[1, t0:t1], np_pattern)
        frames = frames.reshape(t1 - t0, *canvas).astype(np.float32, copy=False)
        if margin == 0:
            out[t0:t1] = frames
            continue
        for i, t in enumerate(range(t0, t1)):
            rows = None
            if line_motion:  # continuous motion during the scan: line y is at s_t + y/Y (s_{t+1} - s_t)
                frac = (np.arange(ny, dtype=np.float32) / ny)[:, None]
                rows = shifts[t][None, :] + frac * (shifts[t + 1] - shifts[t])[None, :]
            out[t] = shift_frame(frames[i], shifts[t], rows, margin, ny, nx)
    return out


def detect(clean_au: np.ndarray, scale: float, gain: float, offset: float, read_noise: float, bidirectional: bool,
           mirrored: bool, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Turn arbitrary units into expected ADU (in place) and draw the recorded uint16 movie.

    ``scale`` converts arbitrary units to expected photons. Returns ``(clean, noisy)``: ``clean`` is ``clean_au``
    overwritten with ``photons * gain + offset`` (``(T, Y, X)``); ``noisy`` is ``(T, Y, X)``, or ``(T, 2Y, X)``
    with even rows forward and odd rows backward when ``bidirectional`` (x-reversed when ``mirrored``).
    """
    n_frames, ny, nx = clean_au.shape
    noisy = np.empty((n_frames, 2 * ny if bidirectional else ny, nx), np.uint16)
    for t0 in range(0, n_frames, _FRAMES_PER_CHUNK):
        t1 = min(n_frames, t0 + _FRAMES_PER_CHUNK)
        lam = np.clip(clean_au[t0:t1] * np.float32(scale), 0, None)
        clean_au[t0:t1] = lam * np.float32(gain) + np.float32(offset)  # clean output, same units as noisy
        if bidirectional:
            lam = np.repeat(lam, 2, axis=1)  # each physical line recorded twice, independent noise
        adu = rng.poisson(lam).astype(np.float32) * np.float32(gain) + np.float32(offset)
        if read_noise > 0:
            adu += rng.normal(0.0, read_noise, adu.shape).astype(np.float32)
        noisy[t0:t1] = np.clip(np.rint(adu), 0, _UINT16_MAX).astype(np.uint16)
    if bidirectional and mirrored:
        noisy[:, 1::2, :] = noisy[:, 1::2, ::-1]
    return clean_au, noisy
