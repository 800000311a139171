"""Registering a moving recording before denoising it, and moving the result back.

A denoiser of time-lapses gets most of its gain from neighbouring frames; when the brain moves from one frame to the
next, a pixel's neighbours in time show other tissue and both the network and any temporal filter fall back on the
frame alone (docs/benchmarks.md: under jitter and AR(1) motion of 1 px the pretrained generalist gained +0.2 to +1.3
dB over the best Gaussian, +4.4 to +5.5 dB once the frames were registered). Every two-photon pipeline registers
frames before analysis; here the denoiser does it for itself, and the user's geometry is kept: every output frame
is moved back to where its input frame was.

- **Estimation** (:func:`estimate_shifts`): two templates from disjoint frames of a central block, registered among
  themselves, then every frame (streamed, a chunk at a time) cross-correlated with both, after a band-pass that
  keeps the correlation peak above the photon noise and the background's slopes, a clip that keeps a cell lighting
  up from counting more than the structure that stays (:func:`_band_passed`), and an edge taper; sub-pixel
  peaks, rigid shifts. A frame whose two answers disagree was matched to noise, not structure; a recording with
  too many of those (pure noise, no structure) is not registered at all.
- **Only whole pixels** are applied: an integer move keeps the noise of every pixel as it was recorded (any
  interpolation would blur it, and a network trained on independent noise then sees correlated noise), and
  moving back restores every input pixel's position exactly. The residual, below half a pixel, is motion the
  network copes with.
- **Only a field of view that moves from frame to frame, measurably** is registered (:func:`choose_registration`):
  the estimates' own error is measured (the two halves of each frame matched apart) and taken off; above
  :data:`MAX_NOISE` px nothing is moved (rounding would move frames by the noise: a still 64 x 64 recording at 0.2
  photons had 28% of its frames moved before this check), below :data:`MIN_MOTION` px RMS of motion beyond the
  noise rounding would move few frames, and below :data:`MIN_STEP` px RMS between consecutive frames (slow drift)
  the network already follows the motion and whole-pixel moves turn the smooth drift into jumps (measured on a
  slow drift of 1 px, two seeds: +0.50 / +0.11 dB at 1 photon, +0.02 / +0.13 at 2, -0.67 / -0.05 at 5); only the
  frames that jump away from those around them are moved then (a twitch: +2.6 to +12 dB on those frames). Where
  it registers, it moves by the whole estimated shift (moving only the fast part, leaving the slow part, was
  worse in 10 of 14 cases, by up to 0.7 dB).
- **Bidirectional scans** (a mirrored-scan model's ``(T, 2N, N)`` input) are registered on their physical frames
  (both directions of each line averaged); every line moves with its direction (rows by twice the shift, backward
  lines stored x-reversed the other way in x) on a canvas that stays ``(T, 2M, M)``.
- The registered stack is a lazy view, :class:`RegisteredStack`: each frame placed on a canvas large enough for
  every move, the margins filled with the frame's nearest edge pixels, read a region at a time like any input;
  :class:`MovedBack` crops each finished frame back to its place (and keeps its mean) on the way to the output.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import fft as sfft
from scipy import ndimage

from ..config import InferConfig, InferEvent
from ..runtime.device import cpu_workers, on_frame_parts
from ..stackio.tiffarray import full_index
from .frame_means import keep_frame_means, to_target
from .temporal_filter import smooth_xy

__all__ = ["MIN_FRAMES", "MIN_XY", "SAID", "MovedBack", "PhysicalFrames", "RegisteredStack", "Registration",
           "choose_registration", "estimate_shifts", "iter_registration"]

SAID = "frame registration: "  # how every description starts (the dock and benchmarks look for it)
MIN_FRAMES = 16  # fewer frames: nothing to register against
MIN_XY = 16  # (physical) frames narrower than this: too little structure to match (2 x 2 noise frames "matched")
TEMPLATE_FRAMES = 100  # frames of the central block that make the template
TEMPLATE_ROUNDS = 3  # register the block to its mean, re-average, ...
MAX_XY = 256  # correlate at most this central crop of each frame (enough structure, 4x cheaper at 512)
SMOOTH_PX = 1.5  # Gaussian smoothing before correlating: the peak must rise above the photon noise
BACKGROUND_PX = 5.0  # ... minus the background at this scale (its slopes bias the peak towards no shift)
CLIP_MADS = 4.0  # ... clipped to this many robust standard deviations (1.4826 MAD) about its median
TAPER = 0.15  # fraction of each side of the frame tapered to zero before correlating
CHUNK = 64  # frames read and correlated at a time
AGREE_PX = 1.0  # a frame's shifts against the two templates must agree this well (px, each axis)
MIN_MATCHED = 0.8  # fraction of the frames that must be matched for any to be moved
MIN_STEP = 0.5  # px RMS between consecutive frames below which nothing is moved (slow drift)
MAX_NOISE = 0.3  # px RMS error of a shift estimate above which rounding it would move frames by the noise
MIN_MOTION = 0.3  # px RMS of motion beyond the estimates' error below which nothing is moved (still: 0.03-0.18 px)
JUMP_PX = 2.5  # px from the frames around it beyond which a frame of a still or slow recording is moved all the same
JUMP_FRAMES = 31  # frames of the running median that a jump is measured from (jumps up to 15 frames long)


@dataclass(frozen=True)
class Registration:
    """How each frame is moved before denoising: ``moves[t] = (dy, dx)`` whole pixels by which frame ``t``'s
    content sits displaced (the frame is moved by ``-moves[t]`` to register it, and its result back); None
    when nothing moves.

    ``motion_px`` is the RMS of the estimated shifts about their median, the estimates' own error taken off (None
    when not estimated), ``reason`` says in a few words why. ``shifts`` ``(T, 2)`` are the estimated sub-pixel
    shifts about their median (frames not matched: 0) where motion was measured, moved or not (slow drift).
    """

    moves: np.ndarray | None = None
    motion_px: float | None = None
    reason: str = "off"
    shifts: np.ndarray | None = None

    @property
    def active(self) -> bool:
        """Whether any frame is moved."""
        return self.moves is not None and bool(np.any(self.moves))

    @property
    def margin(self) -> np.ndarray:
        """``(2,)`` extra rows and columns of the canvas (the range of the moves)."""
        return np.ptp(self.moves, axis=0).astype(int) if self.active else np.zeros(2, int)

    @property
    def offsets(self) -> np.ndarray:
        """``(T, 2)`` where each frame's top-left corner sits on the canvas."""
        return (self.moves.max(axis=0) - self.moves).astype(int)

    def describe(self, then: str = "and moved back after denoising") -> str:
        """One line for progress messages and logs; ``then`` says what happens to the moved frames."""
        if not self.active:
            return f"{SAID}none ({self.reason})"
        moved = float(np.mean(np.any(self.moves != 0, axis=1)))
        return (f"{SAID}{moved:.0%} of the frames moved by whole pixels (up to {int(np.abs(self.moves).max())} px) "
                f"{then} ({self.reason})")


# ---------------------------------------------------------------------------------------------- estimation


def _read(stack: Any, start: int, stop: int) -> np.ndarray:
    """Frames ``[start, stop)`` of ``stack`` as correlated: float32, the central crop of at most :data:`MAX_XY`
    (the only region read), band-passed.

    The band-pass (a Gaussian of :data:`SMOOTH_PX` less its own of :data:`BACKGROUND_PX`, clipped: :func:`_band_passed`)
    keeps the cells' and vessels' scale: finer is photon noise, coarser is the background whose slopes, like the
    frame's edges in a circular correlation, pull every peak towards no shift (a 2-px shift of a 64 x 64 frame
    measured 1.4 px without them and the taper of :func:`_shifts_to`).
    """
    _, y, x = (int(n) for n in stack.shape)
    cy, cx = min(y, MAX_XY), min(x, MAX_XY)
    crop = np.asarray(stack[start:stop, (y - cy) // 2 : (y - cy) // 2 + cy, (x - cx) // 2 : (x - cx) // 2 + cx],
                      np.float64)
    # one scaling for the chunk keeps any intensity scale (1e-30 .. 1e30) finite in the products below
    scale = float(np.max(np.abs(crop))) or 1.0
    crop = (crop / scale).astype(np.float32)
    return on_frame_parts(_band_passed, crop)


def _band_passed(frames: np.ndarray) -> np.ndarray:
    """Each frame smoothed by :data:`SMOOTH_PX`, clipped to 2 :data:`CLIP_MADS` robust deviations, less its background
    at :data:`BACKGROUND_PX`, clipped to :data:`CLIP_MADS`. The clips keep a transient from being taken for motion: a
    correlation weighs structure by its brightness squared, and a cell lit up 3-fold paired with a bright cell of the
    template 47 px away (a still GCaMP6s simulation's strips: docs/benchmarks.md). The first clip bounds a cell lit
    up 16-fold before the background's subtraction spreads it; the second makes cells count by shape and place."""
    smooth = _clipped(smooth_xy(frames, SMOOTH_PX), 2 * CLIP_MADS)  # (scipy's filters, as products on small frames)
    return _clipped(smooth - smooth_xy(smooth, BACKGROUND_PX, mode="nearest"), CLIP_MADS)


def _clipped(frames: np.ndarray, mads: float) -> np.ndarray:
    """Each frame clipped to ``mads`` robust SDs (1.4826 MAD) about its median; a mostly flat one by the rest's MAD."""
    sample = frames[..., ::2, ::2]  # (every other row and column: the same statistics, a quarter of the work)
    median = np.median(sample, axis=(-2, -1), keepdims=True)
    dev = np.abs(sample - median)
    mad, top = np.median(dev, axis=(-2, -1)).ravel(), 1e-6 * np.max(dev, axis=(-2, -1)).ravel()
    for i in np.flatnonzero(mad <= top):  # (a constant frame has nothing to clip)
        rest = dev[i][dev[i] > top[i]]
        mad[i] = np.median(rest) if rest.size else np.inf
    spread = mads * 1.4826 * mad.reshape(median.shape)
    return np.clip(frames, median - spread, median + spread)


def _taper(n: int) -> np.ndarray:
    """1 in the middle, a half Hann window over :data:`TAPER` of ``n`` at either end."""
    w, k = np.ones(n, np.float32), max(1, int(TAPER * n))
    ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(k) + 0.5) / k)
    w[:k], w[n - k :] = ramp, ramp[::-1]
    return w


def _peaks(corr: np.ndarray) -> np.ndarray:
    """``(n, 2)`` sub-pixel ``(dy, dx)`` of the maximum of each ``(n, Y, X)`` circular cross-correlation (a parabola
    through the peak along each axis; all frames at once: one frame at a time, Python took a third of the time)."""
    n, n_y, n_x = corr.shape
    i, j = np.unravel_index(corr.reshape(n, n_y * n_x).argmax(axis=1), (n_y, n_x))  # (n may be 0)
    out, f = np.empty((n, 2)), np.arange(n)
    for axis, (k, m) in enumerate(((i, n_y), (j, n_x))):
        lo, mid, hi = (corr[f, (k + d) % m, j] if axis == 0 else corr[f, i, (k + d) % m] for d in (-1, 0, 1))
        den = lo - 2 * mid + hi
        frac = np.where(den < 0, 0.5 * (lo - hi) / np.where(den < 0, den, 1), 0.0)
        out[:, axis] = (k + m // 2) % m - m // 2 + np.clip(frac, -0.5, 0.5)
    return out


def _shifts_to(frames: np.ndarray, template: np.ndarray) -> np.ndarray:
    """``(n, 2)`` sub-pixel displacement of each prepared frame's content relative to ``template`` (both tapered
    to zero at their edges first: a Hann window over :data:`TAPER` of each side)."""
    window = _taper(template.shape[0])[:, None] * _taper(template.shape[1])[None, :]

    def tapered(x: np.ndarray) -> np.ndarray:
        x = x * window
        return x - x.mean(axis=(-2, -1), keepdims=True)

    ref = np.conj(sfft.rfft2(tapered(template).astype(np.float32)))
    n = cpu_workers()
    corr = sfft.irfft2(sfft.rfft2(tapered(frames).astype(np.float32), workers=n) * ref, s=template.shape, workers=n)
    return _peaks(corr)


def _halves_noise(frames: np.ndarray, template: np.ndarray) -> np.ndarray:
    """``(n,)`` squared difference ``|d|^2`` of each frame's shift measured on its left and on its right half (disjoint
    pixels, independent noise, the same rigid shift): its mean is four times the variance of a whole-frame
    estimate's noise (each half has twice the whole frame's)."""
    h = template.shape[1] // 2
    d = _shifts_to(frames[..., :h], template[:, :h]) - _shifts_to(frames[..., h:], template[:, h:])
    return np.sum(d**2, axis=1)


def _template(block: np.ndarray) -> np.ndarray:
    """The mean of ``block`` (prepared frames) after registering them to their own mean, a few rounds.

    (Starting from the mean of the frames most alike instead, as suite2p does, gave the same shifts to 0.003 px
    on five simulated recordings, motion of 1 to 3 px.)
    """
    template = block.mean(axis=0)
    for _ in range(TEMPLATE_ROUNDS):
        moves = np.rint(_shifts_to(block, template)).astype(int)
        template = np.mean([np.roll(f, tuple(-m), axis=(0, 1)) for f, m in zip(block, moves, strict=True)], axis=0)
    return template


def estimate_shifts(stack: Any) -> Generator[InferEvent, None, tuple[np.ndarray, float]]:
    """``(T, 2)`` sub-pixel rigid displacement ``(dy, dx)`` of each frame's content, NaN for frames that could not
    be matched reliably, and the RMS error of an estimate (px, both axes together), yielding progress.

    Two templates are made from disjoint frames (even and odd) of the central :data:`TEMPLATE_FRAMES`, and every
    frame is matched to both: where the two answers differ by more than :data:`AGREE_PX` (noise matched to noise,
    a frame without structure) the frame's shift is NaN. The error is measured on the frames themselves: the
    left and right halves of each frame, matched apart, differ by the noise alone (:func:`_halves_noise`). The
    stack is read once more, :data:`CHUNK` frames at a time (file-backed stacks stream).
    """
    t = int(stack.shape[0])
    t0 = max(0, (t - TEMPLATE_FRAMES) // 2)
    block = _read(stack, t0, t0 + TEMPLATE_FRAMES)
    first, second = _template(block[0::2]), _template(block[1::2])
    offset = _shifts_to(second[None], first)[0]  # where the second template sits relative to the first
    shifts, halves = np.empty((t, 2)), np.empty(t)
    for start in range(0, t, CHUNK):
        frames = _read(stack, start, start + CHUNK)
        a, b = _shifts_to(frames, first), _shifts_to(frames, second) + offset
        agree = np.all(np.abs(a - b) <= AGREE_PX, axis=1)
        shifts[start : start + CHUNK] = np.where(agree[:, None], 0.5 * (a + b), np.nan)
        halves[start : start + CHUNK] = _halves_noise(frames, first)
        yield InferEvent(done=min(start + CHUNK, t), total=t)
    matched = np.isfinite(shifts).all(axis=1)
    noise = float(np.sqrt(np.median(halves[matched]) / 4)) if matched.any() else float("inf")
    return shifts, noise


def choose_registration(shifts: np.ndarray, noise: float = 0.0) -> Registration:
    """The whole-pixel moves for estimated ``shifts`` ``(T, 2)``: rounded, relative to their median (the typical
    frame stays put); none when fewer than :data:`MIN_MATCHED` of the frames were matched (NaN rows: frames not
    matched stay where they are), when the estimates' own error ``noise`` (px RMS) is too large to round them
    (:data:`MAX_NOISE`), or when the motion beyond that error is small (:data:`MIN_MOTION` px RMS) or slow
    (:data:`MIN_STEP` px RMS from frame to frame: then only frames that jump away from those around them move)."""
    shifts = np.asarray(shifts, np.float64)
    matched = np.all(np.isfinite(shifts), axis=1)
    if matched.mean() < MIN_MATCHED:
        return Registration(reason=f"only {matched.mean():.0%} of the frames matched a template reliably")
    if not noise <= MAX_NOISE:
        return Registration(reason=f"the shifts cannot be measured to whole pixels: {noise:.2f} px RMS error")
    centred = shifts - np.median(shifts[matched], axis=0)
    centred[~matched] = 0.0
    # the estimates' noise adds its variance to the motion's, twice to the changes between frames
    rms = float(np.sqrt(max(np.mean(np.sum(centred**2, axis=1)) - noise**2, 0.0)))
    if rms < MIN_MOTION:  # (the frames of a twitch moved back, the recording stays still: shifts None)
        return _jumps_only(centred, matched, rms, f"still: {rms:.2f} px RMS motion", None)
    steps = np.diff(shifts, axis=0)
    step2 = np.nanmean(np.sum(steps**2, axis=1)) if np.isfinite(steps).all(axis=1).any() else 0.0
    step = float(np.sqrt(max(step2 - 2 * noise**2, 0.0)))
    if step < MIN_STEP:
        return _jumps_only(centred, matched, rms, f"slow: {step:.2f} px RMS from frame to frame, {rms:.2f} px RMS "
                           "motion", centred)
    # the template sits at some sub-pixel position; round about the shifts' common fractional part (their
    # circular mean), so that frames displaced by whole pixels from each other are told apart exactly
    phase = np.angle(np.mean(np.exp(2j * np.pi * centred), axis=0)) / (2 * np.pi)
    moves = np.rint(centred - phase).astype(int)
    moves -= np.rint(np.median(moves, axis=0)).astype(int)
    return Registration(moves, rms, reason=f"{rms:.2f} px RMS motion", shifts=centred)


def _jumps_only(centred: np.ndarray, matched: np.ndarray, rms: float, reason: str,
                shifts: np.ndarray | None) -> Registration:
    """A recording too still or too slow to register whole (``reason``): only the frames that jump are moved
    (:func:`_jumps`); ``shifts``, the motion that the smoothing and the averages follow (None: still)."""
    jumps = _jumps(centred, matched)
    if not jumps.any():
        return Registration(motion_px=rms, reason=reason, shifts=shifts)
    return Registration(jumps, rms, f"{reason}; frames that jumped away from those around them", shifts)


def _jumps(centred: np.ndarray, matched: np.ndarray) -> np.ndarray:
    """``(T, 2)`` whole-pixel moves of the matched frames whose shift stands more than :data:`JUMP_PX` from the running
    median of the :data:`JUMP_FRAMES` matched frames around them, 0 elsewhere: a twitch in a recording too still or
    too slow to register whole (its drift is left to the network, the jump is not). (:data:`MAX_NOISE` keeps the
    estimates' error far below.)"""
    fast = np.zeros_like(centred)  # (the running median of the matched frames alone: unmatched ones sit at 0)
    fast[matched] = centred[matched] - ndimage.median_filter(centred[matched], size=(JUMP_FRAMES, 1), mode="nearest")
    jump = matched & (np.hypot(fast[:, 0], fast[:, 1]) > JUMP_PX)
    return np.where(jump[:, None], np.rint(fast), 0).astype(int)


def iter_registration(setting: str, stack: Any, bidirectional: bool = False,
                      flip: bool = False) -> Generator[InferEvent, None, Registration]:
    """The :class:`Registration` that ``setting`` (``InferConfig.registration``) asks for on ``stack``, yielding
    progress; a registration in use (or a skipped one) is announced in an event's message.

    ``bidirectional``: ``stack`` is the ``(T, 2N, N)`` layout of a mirrored-scan model (backward lines stored
    x-reversed when ``flip``); the shifts are estimated on the physical frames (both directions averaged).
    """
    if setting == "off":
        return Registration(reason="off")
    t, y, x = (int(n) for n in stack.shape)
    size = min(y // 2 if bidirectional else y, x)
    if t < MIN_FRAMES:
        reg = Registration(reason=f"too few frames ({t}, {MIN_FRAMES} needed)")
    elif size < MIN_XY:
        reg = Registration(reason=f"frames too small ({size} px, {MIN_XY} needed)")
    else:
        shifts, noise = yield from estimate_shifts(PhysicalFrames(stack, flip) if bidirectional else stack)
        reg = choose_registration(shifts, noise)
    yield InferEvent(done=0, total=1, message=reg.describe())
    return reg


# ---------------------------------------------------------------------------------------------- views


def _frames(key: Any, n: int) -> tuple[int, int, bool]:
    """Frame range ``[start, stop)`` of a time index (a slice of step 1 or an int) and whether it was an int."""
    if isinstance(key, slice):
        start, stop, step = key.indices(n)
        if step != 1:
            raise TypeError(f"index time with a contiguous slice, got {key!r}")
        return start, max(start, stop), False
    i = int(key) + (n if int(key) < 0 else 0)
    return i, i + 1, True


def _span(key: Any, n: int) -> np.ndarray:
    """The indices ``[lo, hi)`` of a contiguous slice of an axis of length ``n``."""
    if not isinstance(key, slice) or key.step not in (None, 1):
        raise TypeError(f"index the canvas with contiguous slices, got {key!r}")
    lo, hi, _ = key.indices(n)
    return np.arange(lo, max(lo, hi))


class PhysicalFrames:
    """The physical frames ``(T, N, N)`` of a bidirectional ``(T, 2N, N)`` stack: both directions of each line
    averaged (backward lines x-reversed first when ``flip``), float32 (``dtype`` says the stack's); read by any
    index of frames and columns, and rows by a slice of step 1."""

    def __init__(self, stack: Any, flip: bool) -> None:
        t, y, x = (int(n) for n in stack.shape)
        self.stack, self.flip, self.shape, self.dtype = stack, flip, (t, y // 2, x), np.dtype(stack.dtype)
        self.ndim = 3

    def __getitem__(self, key: Any) -> np.ndarray:
        t, y, x = full_index(key, 3)
        rows = _span(y, self.shape[1])
        lo, hi = (int(rows[0]), int(rows[-1]) + 1) if rows.size else (0, 0)
        raw = np.asarray(self.stack[t, 2 * lo : 2 * hi], np.float32)
        back = raw[..., 1::2, ::-1] if self.flip else raw[..., 1::2, :]
        return 0.5 * (raw[..., 0::2, x] + back[..., x])


class RegisteredStack:
    """``stack`` with every frame moved by ``-moves[t]`` onto a canvas that holds all of them: shape
    ``(T, Y + margin_y, X + margin_x)``; margins take the frame's nearest edge pixels. Read lazily, a region at
    a time (one read of the frames' union box per request).

    ``bidirectional``: ``stack`` is a ``(T, 2N, N)`` scan and the moves are physical: rows move by twice as many
    (each line was scanned twice, so forward lines stay forward), backward lines stored x-reversed (``flip``)
    move the other way in x, a margin row repeats the nearest line of its own direction, and the canvas is
    ``(T, 2M, M)`` (both margins the larger one), the layout a mirrored-scan model reads.
    """

    def __init__(self, stack: Any, registration: Registration, bidirectional: bool = False,
                 flip: bool = False) -> None:
        self.stack = stack
        self.rows = 2 if bidirectional else 1  # raw rows per physical line
        self.flip = bool(flip and bidirectional)
        t, y, x = (int(n) for n in stack.shape)
        self.frame = (y, x)
        self.offsets = registration.offsets  # physical (line, column) of each frame's corner on the canvas
        my, mx = (int(m) for m in registration.margin)
        if bidirectional:  # physically square, as a mirrored-scan model's (T, 2N, N) input must be
            my = mx = max(my, mx)
        self.margin = (my, mx)
        self.shape = (t, y + self.rows * my, x + mx)
        self.dtype = np.dtype(stack.dtype)
        self.ndim = 3

    def column_offsets(self, t0: int, t1: int) -> tuple[np.ndarray, np.ndarray]:
        """Canvas column of the first stored pixel of frames ``[t0, t1)``: of forward (or all) rows, of backward."""
        ox = self.offsets[t0:t1, 1]
        return ox, (self.margin[1] - ox if self.flip else ox)

    def __getitem__(self, key: Any) -> np.ndarray:
        key = full_index(key, 3)
        t0, t1, single = _frames(key[0], self.shape[0])
        rows, cols = _span(key[1], self.shape[1]), _span(key[2], self.shape[2])
        n, (y, x), r = t1 - t0, self.frame, self.rows
        # source pixel of every canvas pixel, per frame: the nearest pixel (of the same direction) where the
        # frame does not reach
        parity = rows % r
        ry = np.clip(rows[None, :] - r * self.offsets[t0:t1, 0, None], parity, y - r + parity)
        ox_fwd, ox_back = self.column_offsets(t0, t1)
        rx_fwd, rx_back = (np.clip(cols[None, :] - o[:, None], 0, x - 1) for o in (ox_fwd, ox_back))
        out = np.empty((n, rows.size, cols.size), self.dtype)
        if out.size:
            by = int(ry.min()), int(ry.max()) + 1
            bx = int(min(rx_fwd.min(), rx_back.min())), int(max(rx_fwd.max(), rx_back.max())) + 1
            raw = np.asarray(self.stack[t0:t1, by[0] : by[1], bx[0] : bx[1]])
            back = parity == 1  # rows of backward lines (none unless bidirectional)
            for i in range(n):  # one frame at a time: two 1-D gathers, no (n, Y, X) index arrays
                picked = np.take(raw[i], ry[i] - by[0], axis=0)
                out[i] = np.take(picked, rx_fwd[i] - bx[0], axis=1)
                if self.flip and back.any():
                    out[i, back] = np.take(picked[back], rx_back[i] - bx[0], axis=1)
        return out[0] if single else out


class MovedBack:
    """A destination for finished canvas frames of :class:`RegisteredStack`: ``self[t0:t1] = block`` crops each
    frame back to its place, keeps its input frame's mean (``keep_mean``; each direction's for an interleaved
    bidirectional result), converts to the destination (``output_dtype`` as ``InferConfig.output_dtype``) and
    writes ``target[t0:t1]``; ``cfg`` is the job's :class:`~napari_unet_att.config.InferConfig`."""

    def __init__(self, target: Any, canvas: RegisteredStack, cfg: InferConfig, in_memory: bool) -> None:
        self.target, self.canvas, self.keep_mean, self.output_dtype = target, canvas, cfg.keep_mean, cfg.output_dtype
        self.shape, self.dtype, self.ndim = canvas.shape, np.dtype(np.float32), 3
        self.in_memory = in_memory  # the memory check counts an in-memory target

    def __setitem__(self, key: slice, block: np.ndarray) -> None:
        t0, t1, _ = _frames(key, self.shape[0])
        c, r = self.canvas, self.canvas.rows  # (rows per physical line)
        y, x = c.frame
        out = np.empty((t1 - t0, y, x), np.float32)
        ox_fwd, ox_back = c.column_offsets(t0, t1)
        for i, oy in enumerate(c.offsets[t0:t1, 0]):
            rows = block[i, r * oy : r * oy + y]
            out[i, 0::r] = rows[0::r, ox_fwd[i] : ox_fwd[i] + x]
            if r == 2:
                out[i, 1::2] = rows[1::2, ox_back[i] : ox_back[i] + x]
        if self.keep_mean:
            inp = np.asarray(c.stack[t0:t1], np.float32)
            for p in range(r):  # each direction its own mean, as without registration
                out[:, p::r] = keep_frame_means(np.ascontiguousarray(out[:, p::r]), inp[:, p::r])
        self.target[t0:t1] = to_target(out, self.output_dtype, c.dtype,
                                       np.dtype(getattr(self.target, "dtype", np.float32)))
