"""Smoothing a temporal model's output over time, the amount chosen on the recording itself.

Where the field of view is still and photons are few, the best estimate of a pixel averages many frames:
a 3D Gaussian with ``sigma_t`` 4 to 10 frames beats the pretrained generalist there, and the generalist's
output smoothed over time beats both (docs/benchmarks.md). How much to smooth depends on the recording
(photons, how fast the indicator changes) and no ground truth is at hand, so it is chosen self-supervised,
the way a temporal model is trained: the model denoises the even frames of a calibration block on their
own, each candidate smoothing of that result predicts the odd frames between them, and the candidate with
the smallest mean squared error wins. The odd frames' noise is independent of everything the prediction
saw, so that error is the error against the clean signal plus a constant (the noise's variance): no
candidate is favoured by the noise (Noise2Noise).

The choice is only made for still recordings. When the field of view moves, the even frames' result on its
own (which cannot see the frame in between) is a much poorer estimate than the full-rate one and profits
from smoothing that blurs the full-rate output; a frame-to-frame shift of the even frames' result above
:data:`MAX_STILL_SHIFT` therefore turns smoothing off.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage
from skimage.registration import phase_cross_correlation

from ..config import InferEvent
from ..model.denoiser import Denoiser

__all__ = ["CALIBRATION_FRAMES", "CALIBRATION_XY", "MAX_STILL_SHIFT", "SIGMAS_T", "SIGMAS_XY", "Smoothing",
           "TemporalSmoother", "calibration_block", "choose_smoothing", "frame_shifts", "iter_smoothing", "smooth"]

SIGMAS_T: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0)  # frames of the full-rate output
SIGMAS_XY: tuple[float, ...] = (0.0, 0.5)  # pixels
CALIBRATION_FRAMES = 96  # raw frames of the calibration block (its even half goes through the model)
CALIBRATION_XY = 128  # the block's largest height and width (a central crop)
MAX_STILL_SHIFT = 0.1  # pixels, RMS shift between consecutive even frames above which smoothing stays off
TRUNCATE = 4.0  # the Gaussian kernel reaches TRUNCATE * sigma frames either way


@dataclass(frozen=True)
class Smoothing:
    """Gaussian smoothing of the output: ``sigma_t`` frames, ``sigma_xy`` pixels (0, 0: none).

    ``shift_px`` is the RMS frame-to-frame shift measured on the calibration block (None when none
    was measured) and ``reason`` says in a few words why this smoothing was chosen.
    """

    sigma_t: float = 0.0
    sigma_xy: float = 0.0
    shift_px: float | None = None
    reason: str = "off"

    @property
    def active(self) -> bool:
        """Whether the output changes at all."""
        return self.sigma_t > 0 or self.sigma_xy > 0

    @property
    def radius(self) -> int:
        """Frames either side that an output frame depends on."""
        return int(TRUNCATE * self.sigma_t + 0.5)

    def describe(self) -> str:
        """One line for progress messages and logs."""
        if not self.active:
            return f"output smoothing: none ({self.reason})"
        return (f"output smoothing: Gaussian sigma {self.sigma_t:g} frames, {self.sigma_xy:g} px ({self.reason})")


def calibration_block(shape: tuple[int, int, int], lines: int = 1) -> tuple[slice, slice, slice]:
    """The central block of a ``(T, Y, X)`` stack that calibration reads: at most :data:`CALIBRATION_FRAMES`
    frames (an even number, from an even frame) and :data:`CALIBRATION_XY` lines and columns, the columns
    centred exactly (so that a crop of x-mirrored lines is the mirror of the crop). ``lines`` rows make one
    line (2: a bidirectional scan's forward and backward pass), and the block holds whole lines.
    """
    t, y, x = shape
    y //= lines
    nt = min(t - t % 2, CALIBRATION_FRAMES)
    ny, nx = min(y, CALIBRATION_XY), min(x, CALIBRATION_XY - (x - CALIBRATION_XY) % 2)
    t0, y0, x0 = (t - nt) // 2 // 2 * 2, (y - ny) // 2, (x - nx) // 2
    return slice(t0, t0 + nt), slice(lines * y0, lines * (y0 + ny)), slice(x0, x0 + nx)


def frame_shifts(frames: np.ndarray) -> np.ndarray:
    """``(n - 1, 2)`` shifts ``(dy, dx)`` in pixels between consecutive frames (phase correlation, 1/20 px)."""
    return np.array([phase_cross_correlation(a, b, upsample_factor=20, normalization=None)[0]
                     for a, b in zip(frames[:-1], frames[1:], strict=True)], dtype=np.float64).reshape(-1, 2)


def smooth(stack: np.ndarray, sigma_t: float, sigma_xy: float) -> np.ndarray:
    """``stack`` (float32) smoothed by a Gaussian of ``sigma_t`` frames and ``sigma_xy`` pixels, mirrored at the
    edges (scipy's 'reflect'); ``stack`` itself when both are 0."""
    if sigma_t <= 0 and sigma_xy <= 0:
        return stack
    return ndimage.gaussian_filter(stack, (sigma_t, sigma_xy, sigma_xy), mode="reflect", truncate=TRUNCATE)


def choose_smoothing(estimate: np.ndarray, target: np.ndarray, step: int = 2, check_motion: bool = True
                     ) -> Smoothing:
    """The smoothing of :data:`SIGMAS_T` x :data:`SIGMAS_XY` under which the model's ``estimate`` predicts the
    independent ``target`` best (mean squared error); with ``check_motion``, none when the field of view moves.

    Parameters
    ----------
    estimate : ndarray (n, Y, X)
        The model's output from part of the recording: the even frames ``0, 2, ...`` of the calibration block
        denoised on their own (temporal models), or its forward lines (mirrored-scan models).
    target : ndarray (n, Y, X)
        What the model was trained to predict from that part, raw, in the same intensity units: the odd
        frames ``1, 3, ...``, or the backward lines (x-mirrored like the model's view of them).
    step : int
        Output frames per frame of ``estimate``: the smoothing of ``s`` of its frames is ``step * s`` frames
        of the output.
    check_motion : bool
        Measure the shifts between consecutive frames of ``estimate`` and smooth nothing above
        :data:`MAX_STILL_SHIFT` (the temporal case, whose estimate sees half the frames).

    Returns
    -------
    Smoothing
        Sigmas in frames of the output and pixels.
    """
    n = min(len(estimate), len(target))
    if n < 8:
        return Smoothing(reason=f"calibration needs 8 frames, found {n}")
    estimate = np.asarray(estimate[:n], np.float32)
    target = np.asarray(target[:n], np.float32)
    shift = float(np.sqrt(np.mean(np.sum(frame_shifts(estimate) ** 2, axis=1))))
    if check_motion and shift > MAX_STILL_SHIFT:
        return Smoothing(shift_px=shift, reason=f"the field of view moves, {shift:.2f} px between frames {step} "
                         "apart")
    errors = {(st, sxy): float(np.mean((smooth(estimate, st / step, sxy) - target) ** 2, dtype=np.float64))
              for st in SIGMAS_T for sxy in SIGMAS_XY}
    (st, sxy), best = min(errors.items(), key=lambda kv: kv[1])
    gain = 10 * np.log10(errors[(0.0, 0.0)] / best) if best > 0 else 0.0
    return Smoothing(st, sxy, shift, reason=f"chosen on the recording: prediction error {gain:.3f} dB lower")


def iter_smoothing(setting: str | tuple[float, float], denoiser: Denoiser, stack: Any,
                   run_model: Callable[[np.ndarray], Generator[InferEvent, None, np.ndarray]]
                   ) -> Generator[InferEvent, None, Smoothing]:
    """The :class:`Smoothing` that ``setting`` (``InferConfig.smoothing``) asks for on ``stack``, yielding progress.

    'auto' runs ``run_model`` (the model, no smoothing, float32 output) on part of :func:`calibration_block`
    and lets :func:`choose_smoothing` pick: a temporal model on the even frames, predicting the odd ones; a
    mirrored-scan model on the forward lines of a ``(T, 2N, N)`` scan, predicting the backward lines of the same
    frames (so motion cannot mislead it). A smoothing in use is announced in an event's message.
    """
    if setting == "off":
        return Smoothing(reason="off")
    t, y, x = (int(n) for n in stack.shape)
    mirrored = denoiser.mode == "mirrored" and y == 2 * x
    if setting != "auto":
        smoothing = Smoothing(*setting, reason="as given")
    elif denoiser.mode != "temporal" and not mirrored:
        return Smoothing(reason="chosen on the recording for temporal and mirrored-scan models only")
    elif t < 16:
        return Smoothing(reason=f"too few frames to choose it ({t}, 16 needed)")
    else:
        block = np.asarray(stack[calibration_block((t, y, x), lines=2 if mirrored else 1)], np.float32)
        if mirrored:
            part, target = block[:, 0::2], block[:, 1::2, ::-1] if denoiser.flip_backward else block[:, 1::2]
        else:
            part, target = block[0::2], block[1::2]
        estimate = yield from _announced(run_model(np.ascontiguousarray(part)),
                                         "choosing the output smoothing on a block of the recording")
        smoothing = choose_smoothing(estimate, target, step=1 if mirrored else 2, check_motion=not mirrored)
    yield InferEvent(done=0, total=1, message=smoothing.describe())
    return smoothing


def _announced(gen: Generator[InferEvent, None, Any], message: str) -> Generator[InferEvent, None, Any]:
    """``gen``'s events, the first one carrying ``message``; returns ``gen``'s value."""
    first = True
    while True:
        try:
            ev = next(gen)
        except StopIteration as stop:
            return stop.value
        if first:
            ev, first = dataclasses.replace(ev, message=ev.message or message), False
        yield ev


class TemporalSmoother:
    """Apply a :class:`Smoothing` to frame blocks that arrive in order, each frame's mean kept.

    :meth:`push` takes the next block ``(start, block)`` and returns the blocks that are final (every frame
    within :attr:`Smoothing.radius` of them has arrived); :meth:`finish` returns the rest. Only the last
    ``2 * radius`` frames are held back, so streamed outputs stay O(block).
    """

    def __init__(self, smoothing: Smoothing, n_frames: int) -> None:
        self.s, self.n = smoothing, int(n_frames)
        self.held: np.ndarray | None = None  # frames [self.base, self.base + len(held)) not yet smoothed
        self.base = 0
        self.done = 0  # frames returned so far

    def push(self, start: int, block: np.ndarray) -> list[tuple[int, np.ndarray]]:
        """Add frames ``[start, start + len(block))`` (the next ones); return the blocks now final."""
        if start != self.base + (0 if self.held is None else len(self.held)):
            raise ValueError(f"frames must arrive in order: expected {self.base}, got {start}")
        block = np.asarray(block, np.float32)
        self.held = block if self.held is None else np.concatenate([self.held, block])
        return self._emit(final=start + len(block) >= self.n)

    def finish(self) -> list[tuple[int, np.ndarray]]:
        """Everything still held (the stack's last frames)."""
        return self._emit(final=True) if self.held is not None and self.done < self.base + len(self.held) else []

    def _emit(self, final: bool) -> list[tuple[int, np.ndarray]]:
        r = self.s.radius
        end = self.base + len(self.held)
        ready = end if final else end - r  # frames whose whole kernel has arrived
        if ready <= self.done:
            return []
        # held starts r frames before the first frame to emit (or at the stack's start, where the filter's own
        # mirroring is the edge rule, as for a whole stack) and ends r frames after the last (or at the stack's end)
        sm = smooth(self.held, self.s.sigma_t, self.s.sigma_xy)
        lo, hi = self.done - self.base, ready - self.base
        out = sm[lo:hi]
        means = self.held[lo:hi].mean(axis=(1, 2), dtype=np.float64)
        out += (means - out.mean(axis=(1, 2), dtype=np.float64)).astype(np.float32)[:, None, None]
        first = self.done
        self.done = ready
        keep_from = max(ready - r, self.base) - self.base  # the next frame's kernel reaches r frames back
        self.held, self.base = self.held[keep_from:], self.base + keep_from
        return [(first, out)]
