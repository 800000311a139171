"""A bidirectional scanner's line phase: backward lines put back where they belong before denoising.

A resonant scanner records every other line backwards, and the microscope's software places those lines by a
"scan phase" that is rarely set exactly: the backward lines then sit a fraction of a pixel to a few pixels to the
side of the forward ones, and every edge in the frame is combed. Suite2p measures and corrects that offset before
anything else (``do_bidiphase``); a denoiser must too: under an offset of 0.5 px the generalists lost 2.9-3.2 dB,
under 1 px 6.8-7.4 dB (the temporal one fell below the best Gaussian; docs/benchmarks.md, twenty-third session),
since the network keeps the combing as structure and the merged output of a scan averages two images side by side.

- **Where the lines are**: the backward lines are the odd rows, in both layouts: an ordinary ``(T, Y, X)`` frame
  of a bidirectional scanner (row ``y`` scanned forward when even, backward when odd) and a mirrored-scan model's
  ``(T, 2N, N)`` scan (every line recorded both ways; its backward rows possibly stored x-reversed, ``flip``).
- **Measured** (:func:`estimate_line_phase`) on the time averages of eight interleaved sets of up to
  :data:`FRAMES` central frames (the frames' noise averaged away, each set's estimate independent): the backward
  rows cross-correlated along x (sub-pixel, upsampled) with what the forward rows show at the same place (the same
  line for a scan, the mean of the lines above and below in a frame), twice: the second time on lines already
  moved back by the first (the taper biases a peak towards 0). The spread of the eight gives the error (at least
  the correlation's 1/20 px). Frames narrower than :data:`MIN_XY` are not measured.
- **Corrected** (:class:`PhaseCorrected`, a lazy view of the stack) where the offset is over :data:`MIN_PX` and
  :data:`MIN_Z` times its error, and the lines correlate there (:data:`MIN_R`: not noise, not single pixels):
  the backward rows moved by it (linear interpolation, edges extended; rounded to the stack's integers), so that
  everything after (registration, strips, the network, smoothing, time averages, the output) sees and keeps a
  frame whose lines agree. The output is the corrected frame.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import numpy as np
from skimage.registration import phase_cross_correlation

from ..config import InferEvent
from ..stackio.tiffarray import full_index

__all__ = ["SAID", "LinePhase", "PhaseCorrected", "estimate_line_phase", "iter_line_phase"]

SAID = "line phase: "  # how every description starts (the docks and benchmarks look for it)
FRAMES = 200  # central frames whose averages are compared
SETS = 8  # interleaved sets of those frames, each measured on its own (their spread: the error)
CHUNK = 32  # frames read at a time
MIN_FRAMES = 16  # fewer frames: too few for SETS averages
MIN_XY = 32  # narrower frames, or fewer lines: too little to correlate (16 px frames at 0.2 photons measured a
# consistent 0.4 px where there was none)
MIN_PX = 0.2  # offsets below this are left (a fifth of a pixel costs less than the interpolation)
MIN_Z = 5.0  # ... and below this many times their error (4: 1 of 1152 recordings without an offset moved)
MAX_PX = 16.0  # offsets beyond this are not a scan phase (nothing is moved)
MIN_R = 0.3  # the lines' correlation at the offset below which they show no common structure to measure it on
# (simulated recordings 0.65-0.89 at 0.5-2 photons, pure noise 0.07, single bright pixels on a flat field 0.18)
UPSAMPLE = 20  # sub-pixel resolution of the cross-correlation (1 / 20 px): also the least error claimed


@dataclass(frozen=True)
class LinePhase:
    """How far right (px) the backward lines sit from where they belong, ``offset`` (None: not measured), its
    error, and whether it is corrected (``active``); ``reason`` says why not."""

    offset: float | None = None
    error: float | None = None
    active: bool = False
    reason: str = "off"

    def describe(self) -> str:
        """One line for progress messages and the output's metadata."""
        if not self.active:
            return f"{SAID}none ({self.reason})"
        side = "right" if self.offset > 0 else "left"
        return (f"{SAID}backward lines moved {abs(self.offset):.2f} px back ({self.reason}: they sat "
                f"{abs(self.offset):.2f} +- {self.error:.2f} px to the {side} of the forward lines)")


def _forward_at_backward(mean: np.ndarray, scan: bool) -> tuple[np.ndarray, np.ndarray]:
    """The backward rows of a time average and what the forward rows show at their place: the same line (a scan),
    or the mean of the lines above and below (a frame). Both ``(K, X)``, in stored orientation."""
    fwd, bwd = mean[0::2], mean[1::2]
    if scan:
        k = min(len(fwd), len(bwd))
        return bwd[:k], fwd[:k]
    k = min(len(bwd), len(fwd) - 1)
    return bwd[:k], 0.5 * (fwd[:k] + fwd[1 : k + 1])


def _offset(backward: np.ndarray, forward: np.ndarray) -> tuple[float, float]:
    """How far right (px) ``backward`` sits from ``forward`` (both ``(K, X)``), and their correlation there: an
    upsampled cross-correlation along x of the two, each less its rows' means and tapered at the sides (no
    wrap-around edge)."""
    taper = np.hanning(backward.shape[1] + 2)[1:-1]

    def prepared(a: np.ndarray) -> np.ndarray:
        return (a - a.mean(axis=1, keepdims=True)) * taper

    shift, error, _ = phase_cross_correlation(prepared(forward), prepared(backward), upsample_factor=UPSAMPLE,
                                              normalization=None)
    # (the shift registers backward with forward: minus where it sits; error is 1 - the peak's correlation^2)
    return -float(shift[1]), float(np.sqrt(max(0.0, 1.0 - float(error))))


def estimate_line_phase(stack: Any, scan: bool, flip: bool = False) -> tuple[float, float, float]:
    """``(offset, error, r)``: how far right (px, in the physical orientation) the backward lines of ``stack`` sit
    from where they belong, the error of that estimate and the lines' correlation there, from :data:`SETS`
    interleaved sets of up to :data:`FRAMES` central frames (their time averages compared; see the module
    docstring); NaN where the frames hold values that are not finite. ``flip``: a scan's backward rows are stored
    x-reversed."""
    t = int(stack.shape[0])
    n = min(t, FRAMES)
    t0 = (t - n) // 2
    sums = np.zeros((SETS, *(int(s) for s in stack.shape[1:])), np.float64)
    for start in range(t0, t0 + n, CHUNK):
        block = np.asarray(stack[start : min(start + CHUNK, t0 + n)], np.float64)
        for i, frame in enumerate(block):
            sums[(start + i - t0) % SETS] += frame
    if not np.isfinite(sums).all():  # (refused with a clear error where the frames are read)
        return np.nan, np.nan, np.nan
    found = []
    for total in sums:
        if scan and flip:
            total[1::2] = total[1::2, ::-1]
        found.append(_refined(total, scan))
    offsets, r = np.asarray(found).T
    error = max(float(offsets.std(ddof=1) / np.sqrt(SETS)), 1.0 / UPSAMPLE)  # (sets that agree to the grid's step)
    return float(offsets.mean()), error, float(r.mean())


def _refined(mean: np.ndarray, scan: bool) -> tuple[float, float]:
    """:func:`_offset` of a time average's lines, measured again once they are moved back by it, the two added: the
    taper pulls a peak towards 0 by a few per cent of the offset (1.5 px measured 1.45), of the remainder far less."""
    first, _ = _offset(*_forward_at_backward(mean, scan))
    moved = PhaseCorrected(mean[None], first)[0]
    rest, r = _offset(*_forward_at_backward(moved, scan))
    return first + rest, r


def iter_line_phase(setting: str | float, stack: Any, scan: bool,
                    flip: bool = False) -> Generator[InferEvent, None, LinePhase]:
    """The :class:`LinePhase` that ``setting`` (``InferConfig.line_phase``: 'auto', 'off' or px) asks for on
    ``stack``; its description is announced in an event's message. ``scan``: a mirrored-scan model's
    ``(T, 2N, N)`` scan (or part of one's lines), else frames whose odd rows are backward lines."""
    if setting == "off":
        return LinePhase()
    t, y, x = (int(n) for n in stack.shape)
    if not isinstance(setting, str):
        phase = LinePhase(float(setting), 0.0, float(setting) != 0, "as set")
    elif t < MIN_FRAMES or min(y // 2 if scan else y, x) < MIN_XY:
        phase = LinePhase(reason=f"too few frames or pixels to measure ({t} x {y} x {x}; {MIN_FRAMES} frames of "
                                 f"{MIN_XY} x {MIN_XY} needed)")
    else:
        phase = _choose(*estimate_line_phase(stack, scan, flip))
    yield InferEvent(done=0, total=1, message=phase.describe())
    return phase


def _choose(offset: float, error: float, r: float = 1.0) -> LinePhase:
    """Whether a measured ``offset`` (px) with its ``error`` and the lines' correlation ``r`` there is corrected
    (see the module docstring)."""
    said = f"backward lines {offset:+.2f} +- {error:.2f} px"
    if not np.isfinite([offset, error, r]).all():
        return LinePhase(reason="not measured: values not finite")
    if r < MIN_R:
        return LinePhase(offset, error, reason=f"{said}, but the lines share too little structure (r {r:.2f})")
    if abs(offset) > MAX_PX:
        return LinePhase(offset, error, reason=f"{said}: beyond {MAX_PX:g} px, not a scan phase")
    if abs(offset) < MIN_PX or abs(offset) < MIN_Z * error:
        return LinePhase(offset, error, reason=f"{said}: the lines agree")
    return LinePhase(offset, error, True, "measured")


class PhaseCorrected:
    """``stack`` with its backward (odd) rows moved left by ``offset`` px (right when ``flip``: a scan's backward
    rows stored x-reversed): linear between pixels, edges extended, rounded to the stack's integers. Read lazily
    by any index of its three axes (one read of the rows' box, widened by the move, per request)."""

    def __init__(self, stack: Any, offset: float, flip: bool = False) -> None:
        self.stack, self.offset = stack, -float(offset) if flip else float(offset)
        self.shape = tuple(int(n) for n in stack.shape)
        self.dtype, self.ndim = np.dtype(stack.dtype), 3
        self.reach = int(np.ceil(abs(self.offset))) + 1  # extra columns either side that a moved row reads

    def __getitem__(self, key: Any) -> np.ndarray:
        key = full_index(key, 3)
        t_key, y_key, x_key = key
        _, n_y, n_x = self.shape
        rows, cols = np.arange(n_y)[y_key], np.arange(n_x)[x_key]
        flat_rows, flat_cols = np.atleast_1d(rows), np.atleast_1d(cols)
        if flat_rows.size == 0 or flat_cols.size == 0:
            return np.asarray(self.stack[key])
        y0, y1 = int(flat_rows.min()), int(flat_rows.max()) + 1
        x0, x1 = max(0, int(flat_cols.min()) - self.reach), min(n_x, int(flat_cols.max()) + 1 + self.reach)
        raw = np.asarray(self.stack[t_key, y0:y1, x0:x1])
        picked = raw[..., flat_rows - y0, :]
        out = np.take(picked, flat_cols - x0, axis=-1)
        back = flat_rows % 2 == 1
        if back.any():  # backward rows read at x + offset (moved left by it)
            src = np.clip(flat_cols + self.offset, 0, n_x - 1) - x0
            lo = np.clip(np.floor(src).astype(int), 0, picked.shape[-1] - 1)
            hi = np.minimum(lo + 1, picked.shape[-1] - 1)
            work = np.result_type(self.dtype, np.float32)  # (float64 for 32-bit integers: exact)
            w = (src - lo).astype(work)
            rows_b = picked[..., back, :].astype(work)
            moved = np.take(rows_b, lo, axis=-1) * (1 - w) + np.take(rows_b, hi, axis=-1) * w
            if np.issubdtype(self.dtype, np.integer):  # (a convex mix of integers stays within their range)
                moved = np.rint(moved)
            out[..., back, :] = moved.astype(self.dtype)
        if np.ndim(rows) == 0:
            out = out[..., 0, :]
        if np.ndim(cols) == 0:
            out = out[..., 0]
        return out
