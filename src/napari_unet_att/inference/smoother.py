"""The chosen output smoothing applied to the output as it streams out, a few frames at a time.

:func:`.smoothing.iter_smoothing` chooses a :class:`.smoothing.Smoothing`; :class:`TemporalSmoother` applies it to
the frame blocks that the denoising loop finishes, in order, holding only the frames its kernels reach: smoothed over
time (:func:`.temporal_filter.smooth_t_part`) and over each frame, its coarse part over its own window
(:mod:`.bands`), what it removed given back where it stands out (:mod:`.transients`), blended with the input, each
frame's mean kept.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..runtime.device import on_frame_parts
from .bands import combine
from .frame_means import set_frame_means
from .temporal_filter import smooth_t_part, smooth_xy
from .tissue import canvas_pad, from_tissue, to_tissue
from .transients import keep_fast

if TYPE_CHECKING:
    from .smoothing import Smoothing

__all__ = ["EMIT_FRAMES", "TemporalSmoother"]

EMIT_FRAMES = 16  # frames smoothed at a time (bounds the filter's temporaries)


class TemporalSmoother:
    """Apply a :class:`Smoothing` to frame blocks that arrive in order, each frame's mean kept.

    :meth:`push` takes the next block ``(start, block)`` and returns the frames that are final (every frame
    within :attr:`Smoothing.radius` of them has arrived; all of them once the stack's last frame has), in parts
    of :data:`EMIT_FRAMES`. At most ``radius`` frames are held back besides the block, so streamed outputs stay
    O(block). With :attr:`Smoothing.shifts` the frames are held moved into the tissue's frame and each smoothed
    frame is moved back to its own place. With :attr:`Smoothing.blend` the same frames of ``inputs`` (the input, read
    a block at a time) are held alike.
    """

    def __init__(self, smoothing: Smoothing, n_frames: int, inputs: Any = None) -> None:
        if smoothing.blend > 0 and inputs is None:
            raise ValueError("a blend needs the input's frames beside the output's")
        self.s, self.n, self.source = smoothing, int(n_frames), inputs
        self.held: np.ndarray | None = None  # frames [self.base, self.base + len(held)) not yet smoothed
        self.inputs = np.zeros(0, np.float32)  # the input's frames beside them (a blend only)
        self.means = np.zeros(0)  # the held frames' own means (before any move): what each output frame keeps
        self.pad = 0 if smoothing.shifts is None else canvas_pad(smoothing.shifts)
        self.base = 0
        self.done = 0  # frames returned so far

    def push(self, start: int, block: np.ndarray) -> list[tuple[int, np.ndarray]]:
        """Add frames ``[start, start + len(block))`` (the next ones); return the blocks now final."""
        if start != self.base + (0 if self.held is None else len(self.held)):
            raise ValueError(f"frames must arrive in order: expected {self.base}, got {start}")
        block = np.asarray(block, np.float32)
        if self.s.blend > 0:
            inputs = self._to_canvas(np.asarray(self.source[start : start + len(block)], np.float32), start)
            self.inputs = inputs if not len(self.inputs) else np.concatenate([self.inputs, inputs])
        self.means = np.concatenate([self.means, block.mean(axis=(1, 2), dtype=np.float64)])
        block = self._to_canvas(block, start)
        self.held = block if self.held is None else np.concatenate([self.held, block])
        return self._emit(final=start + len(block) >= self.n)

    def _shifts(self, start: int, stop: int) -> np.ndarray:
        """The moves of frames ``[start, stop)`` into the tissue's frame (none without a motion)."""
        return np.zeros((stop - start, 2)) if self.s.shifts is None else self.s.shifts[start:stop]

    def _to_canvas(self, frames: np.ndarray, start: int) -> np.ndarray:
        """Frames as they are held: moved into the tissue's frame, a scan's lines as two planes (:func:`to_tissue`)."""
        if self.s.shifts is None and self.s.flip is None:
            return frames
        return to_tissue(frames, self._shifts(start, start + len(frames)), self.pad, self.s.flip)

    def _in_time(self, sigma_t: float, lo: int, hi: int, first: int, last: int) -> np.ndarray:
        """Frames ``[first, last)`` smoothed over ``sigma_t`` frames, from the held frames ``[lo, hi)`` (one matrix
        product, which BLAS spreads over the cores itself)."""
        return smooth_t_part(self.held[lo - self.base : hi - self.base], lo, self.n, sigma_t, first, last)

    def _emit(self, final: bool) -> list[tuple[int, np.ndarray]]:
        r = self.s.radius
        end = self.base + len(self.held)
        ready = end if final else end - r  # frames whose whole kernel has arrived
        parts = []
        # a few frames at a time, each with the r frames either side that its kernel reaches (or the stack's edge,
        # mirrored as for a whole stack): temporaries stay small
        for first in range(self.done, ready, EMIT_FRAMES):
            last = min(first + EMIT_FRAMES, ready)
            lo, hi = max(first - r, self.base), min(last + r, end)
            part = self._in_time(self.s.sigma_t, lo, hi, first, last)
            out = on_frame_parts(lambda f: smooth_xy(np.array(f, np.float32), self.s.sigma_xy), part)
            if self.s.split_px > 0:  # the coarse part over its own window (:mod:`.bands`)
                out = combine(out, self._in_time(self.s.sigma_t_coarse, lo, hi, first, last), self.s.split_px)
            out = keep_fast(self.held[first - self.base : last - self.base], out, self.s.keep_k, self.s.keep_px)
            if self.s.blend > 0:
                bt, bxy = self.s.blend_sigma
                blurred = smooth_t_part(self.inputs[lo - self.base : hi - self.base], lo, self.n, bt, first, last)
                out = (1 - self.s.blend) * out + self.s.blend * smooth_xy(np.array(blurred, np.float32), bxy)
            if self.s.shifts is not None or self.s.flip is not None:
                out = from_tissue(out, self._shifts(first, last), self.pad, self.s.flip)
            parts.append((first, set_frame_means(out, self.means[first - self.base : last - self.base])))
        self.done = max(self.done, ready)
        keep_from = max(self.done - r, self.base) - self.base  # the next frame's kernel reaches r frames back
        self.held, self.means, self.base = self.held[keep_from:], self.means[keep_from:], self.base + keep_from
        self.inputs = self.inputs[keep_from:]
        return parts
