"""Frames moved into the tissue's frame and back (sub-pixel, along a measured motion), and between-frame shifts.

The output smoothing (:mod:`.smoothing`) smooths along the motion: every frame moved by minus its shift onto a
canvas a few pixels larger, smoothed there, moved back. A bidirectional scan's interleaved lines move direction by
direction, each as a frame of its own (a plane of the canvas).
"""

from __future__ import annotations

import numpy as np
from skimage.registration import phase_cross_correlation

__all__ = ["as_planes", "canvas_pad", "frame_shifts", "from_tissue", "line_shifts", "moved", "to_tissue"]


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
    with the shifts by which they move (:func:`line_shifts`)."""
    lines = (frames[:, 0], frames[:, 1]) if planes else (frames[:, 0::2], frames[:, 1::2])
    return list(zip(lines, line_shifts(shifts, flip), strict=True))


def canvas_pad(shifts: np.ndarray) -> int:
    """The margin that holds every move of ``shifts`` (pixels, one spare)."""
    return int(np.ceil(np.max(np.abs(shifts), initial=0.0))) + 1


def as_planes(frames: np.ndarray, flip: bool | None) -> np.ndarray:
    """``frames`` as smoothed without a motion: a scan's interleaved lines (``flip`` not None) as two planes, one
    per direction (:func:`to_tissue` without moves), so that no smoothing mixes the two directions' lines."""
    return frames if flip is None else to_tissue(frames, np.zeros((len(frames), 2)), 0, flip)


def line_shifts(shifts: np.ndarray, flip: bool) -> tuple[np.ndarray, np.ndarray]:
    """How the forward and the backward lines of a bidirectional scan move when its physical frames move by
    ``shifts`` ``(n, 2)``: alike, except in x for backward lines stored x-reversed (``flip``)."""
    shifts = np.asarray(shifts, np.float64)
    return shifts, shifts * np.array([1.0, -1.0]) if flip else shifts


def moved(frames: np.ndarray, by: np.ndarray | None, flip: bool | None = None) -> np.ndarray:
    """``frames`` ``(n, Y, X)``, each moved by ``by[i] = (dy, dx)`` pixels (linear interpolation, edges extended);
    ``frames`` itself when ``by`` is None. ``flip`` not None: ``frames`` are the interleaved lines ``(n, 2N, N)``
    of a bidirectional scan and ``by`` its physical frames' motion; each direction's lines move on their own
    (:func:`line_shifts`)."""
    if by is None:
        return frames
    if flip is not None:
        out = np.empty(np.shape(frames), np.result_type(frames, np.float32))
        for rows, d in zip((slice(0, None, 2), slice(1, None, 2)), line_shifts(by, flip), strict=True):
            out[:, rows] = moved(frames[:, rows], d)
        return out
    frames, by = np.asarray(frames), np.asarray(by, np.float64).reshape(-1, 2)
    # (x as rows of the transposed frames: a gather of rows is several times faster than one of columns)
    across = _shifted(np.ascontiguousarray(_shifted(frames, by[:, 0]).transpose(0, 2, 1)), by[:, 1])
    return np.ascontiguousarray(across.transpose(0, 2, 1))


def _shifted(frames: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Each frame ``frames[i]`` moved by ``d[i]`` pixels along its rows (axis 1), linear between pixels, edges
    extended: what ``ndimage.shift(order=1, mode='nearest')`` does along that axis (two gathers, ~2x faster), all
    frames at once; ``frames`` itself where none moves (a frame that does not move is copied as it is)."""
    n, still = frames.shape[1], d == 0
    if n < 2 or still.all():
        return frames
    dtype = np.result_type(frames, np.float32)  # (integer frames in floats: b - a must not wrap)
    src = np.clip(np.arange(n) - d[:, None], 0, n - 1)  # where each output row reads
    lo = np.minimum(src.astype(np.intp), n - 2)
    f = np.arange(len(frames))[:, None]
    a, b = (frames[f, i].astype(dtype, copy=False) for i in (lo, lo + 1))
    b -= a  # a + (b - a) w, in place in the fresh gather
    b *= (src - lo).astype(dtype)[:, :, None]
    b += a
    b[still] = frames[still]
    return b
