"""Frames moved into the tissue's frame and back (sub-pixel, along a measured motion), and between-frame shifts.

The output smoothing (:mod:`.smoothing`) smooths along the motion: every frame moved by minus its shift onto a
canvas a few pixels larger, smoothed there, moved back. A bidirectional scan's interleaved lines move direction by
direction, each as a frame of its own (a plane of the canvas).
"""

from __future__ import annotations

import numpy as np
from skimage.registration import phase_cross_correlation

from .registration import line_shifts, moved

__all__ = ["canvas_pad", "frame_shifts", "from_tissue", "as_planes", "to_tissue"]


def frame_shifts(frames: np.ndarray) -> np.ndarray:
    """``(n - 1, 2)`` shifts ``(dy, dx)`` in pixels between consecutive frames (phase correlation, 1/20 px; each
    frame's own mean removed first, so that brightness changes do not count)."""
    centred = [f - f.mean(dtype=np.float64) for f in np.asarray(frames, np.float64)]
    return np.array([phase_cross_correlation(a, b, upsample_factor=20, normalization=None)[0]
                     for a, b in zip(centred[:-1], centred[1:], strict=True)], dtype=np.float64).reshape(-1, 2)


def to_tissue(frames: np.ndarray, shifts: np.ndarray, pad: int, flip: bool | None = None) -> np.ndarray:
    """``frames`` ``(n, Y, X)`` moved by minus their ``shifts`` onto a canvas ``pad`` pixels larger each way (edges
    extended): every recorded pixel stays on the canvas, so :func:`from_tissue` gives each frame's own back.

    ``flip`` not None: ``frames`` are the interleaved lines ``(n, 2N, N)`` of a bidirectional scan (backward
    lines x-reversed when ``flip``) and ``shifts`` the physical frames' motion; each direction's lines move as a
    frame of their own (the backward ones the other way in x when stored reversed): canvas ``(n, 2, Y', X')``.
    """
    if flip is not None:
        return np.stack([to_tissue(lines, by, pad) for lines, by in _directions(frames, shifts, flip)], axis=1)
    return moved(np.pad(frames, ((0, 0), (pad, pad), (pad, pad)), mode="edge"), -np.asarray(shifts))


def from_tissue(canvas: np.ndarray, shifts: np.ndarray, pad: int, flip: bool | None = None) -> np.ndarray:
    """Frames of a :func:`to_tissue` canvas moved by ``shifts`` and cropped back to the frame (``flip`` as there:
    the directions' lines interleaved again)."""
    if flip is not None:
        (fwd, by), (bwd, by_back) = _directions(canvas, shifts, flip, planes=True)
        out = np.empty((len(canvas), 2 * (canvas.shape[2] - 2 * pad), canvas.shape[3] - 2 * pad), np.float32)
        out[:, 0::2], out[:, 1::2] = from_tissue(fwd, by, pad), from_tissue(bwd, by_back, pad)
        return out
    out = moved(canvas, np.asarray(shifts))
    return np.ascontiguousarray(out[:, pad : out.shape[1] - pad, pad : out.shape[2] - pad])


def _directions(frames: np.ndarray, shifts: np.ndarray, flip: bool,
                planes: bool = False) -> list[tuple[np.ndarray, np.ndarray]]:
    """The forward and backward lines of interleaved scan ``frames`` (or of a canvas's two ``planes``), each
    with the shifts by which they move (:func:`.registration.line_shifts`)."""
    lines = (frames[:, 0], frames[:, 1]) if planes else (frames[:, 0::2], frames[:, 1::2])
    return list(zip(lines, line_shifts(shifts, flip), strict=True))


def canvas_pad(shifts: np.ndarray) -> int:
    """The margin that holds every move of ``shifts`` (pixels, one spare)."""
    return int(np.ceil(np.max(np.abs(shifts), initial=0.0))) + 1


def as_planes(frames: np.ndarray, flip: bool | None) -> np.ndarray:
    """``frames`` as smoothed without a motion: a scan's interleaved lines (``flip`` not None) as two planes, one
    per direction (:func:`to_tissue` without moves), so that no smoothing mixes the two directions' lines."""
    return frames if flip is None else to_tissue(frames, np.zeros((len(frames), 2)), 0, flip)
