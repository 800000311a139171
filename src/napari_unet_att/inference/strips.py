"""Motion within frames: denoising overlapping strips of lines on their own, blended (piecewise rigid).

A resonant or galvo scanner takes a frame line by line, and the brain keeps moving while it does: under fast
motion every line has its own shift. One shift per frame (:mod:`.registration`) then cannot align neighbouring
frames, and the network's temporal context blurs: the twenty-first session measured 2.8-5 dB lost under jitter and
AR(1) motion within frames against the same motion between frames (docs/benchmarks.md). A strip of a few dozen
lines was scanned within a fraction of the frame's time, so it moves nearly rigidly: each strip is denoised by the
whole engine on its own (its own registration, smoothing, time averages) and the strips are blended with tent
weights about their centres (+2.2 to +5.4 dB on those recordings).

- **When** (:func:`iter_choose_strips`, ``InferConfig.strips`` 'auto'): the shifts of every frame are measured on
  its top and on its bottom :data:`STRIP_ROWS` lines (:func:`~.registration.estimate_shifts`); under rigid motion
  they differ only by their estimates' errors (1.1-1.5x them on the validation recordings), under motion within
  frames by far more (3.9-7.8x, 0.8-1.2 px RMS). Strips are cut where the difference exceeds :data:`MIN_RATIO`
  times the errors and :data:`MIN_PX`: where the motion is rigid the strips' noisier registration would cost
  0.4 dB. The same holds for tissue that shears from frame to frame (non-rigid motion between frames), and the
  left and right columns are compared the same way: where they move apart the frame is cut into strips of columns
  too (blocks). ``strips=N`` cuts N strips of lines whatever the motion; 'off' (or 1) none.
- **How** (:func:`iter_strips`): strips of about 1.5x their spacing (overlapping), each a lazy view of the stack's
  rows (:class:`RowStrip`: file-backed stacks stream) through the engine; the results (in memory, or float32
  temporary files in the system's temporary folder, ``TMPDIR``, when the output streams to a file) are blended a
  block of frames at a time; every frame's mean is set to the input frame's over the whole frame (``keep_mean``).
- Bidirectional ``(T, 2N, N)`` scans of a mirrored-scan model are cut into strips of whole lines (both directions of
  each: the strip's raw rows ``2 y0 .. 2 y1``), measured on their physical frames; each strip is a scan of its own
  (its two views, registered by direction).
"""

from __future__ import annotations

import math
import shutil
import tempfile
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..config import InferEvent, in_share
from ..errors import InputError
from ..runtime import resources as res
from ..stackio.tiffarray import full_index
from .frame_means import keep_frame_means, to_target
from .registration import MIN_FRAMES, MIN_MATCHED, PhysicalFrames, estimate_shifts

__all__ = ["MIN_PX", "MIN_RATIO", "SAID", "STRIP_ROWS", "RowStrip", "Strips", "disagreement", "iter_choose_strips",
           "iter_strips", "strip_rows"]

SAID = "strips: "  # how every description starts (files.STEPS, the dock)
STRIP_ROWS = 48  # lines per strip ('auto'), and the top / bottom lines whose shifts are compared
MIN_STRIP_ROWS = 16  # a strip narrower than this has too little structure to register (registration.MIN_XY)
MIN_RATIO = 3.0  # top - bottom shift difference / their estimates' error above which strips are cut
MIN_PX = 0.4  # ... and px RMS (a real brain's small non-rigid deformation is not worth the strips' noisier shifts)
BLOCK = 64  # frames blended at a time
ACROSS = 96  # px of the other axis that the top / bottom (left / right) regions span, centred
MAX_BLOCKS = 4  # strips per axis where lines and columns are both cut (16 parts at most, each its own job)


@dataclass(frozen=True)
class Strips:
    """How a stack is cut: ``rows`` ``[(y0, y1, centre), ...]`` in physical lines (none: denoised whole), the stack's
    rows per line (2: a bidirectional scan's raw rows) and why, in words."""

    rows: tuple[tuple[int, int, float], ...] = ()
    reason: str = "off"
    rows_per_line: int = 1
    cols: tuple[tuple[int, int, float], ...] = ()  # strips of columns too (none: whole lines)

    @property
    def active(self) -> bool:
        """Whether the stack is cut into strips (two or more)."""
        return len(self.rows) > 1 or len(self.cols) > 1

    def windows(self, n_rows: int, n_cols: int) -> list[tuple[tuple[int, int, float], tuple[int, int, float]]]:
        """Every part cut: ``((y0, y1, cy), (x0, x1, cx))`` in physical lines and columns, rows first."""
        rows = self.rows or ((0, n_rows, n_rows / 2),)
        return [(r, c) for r in rows for c in (self.cols or ((0, n_cols, n_cols / 2),))]

    def describe(self) -> str:
        """One line for progress messages, logs and the output's metadata."""
        if not self.active:
            return f"{SAID}none ({self.reason})"
        size = [f"{len(part)} strips of {part[0][1] - part[0][0]} {what}" for part, what in
                ((self.rows, "lines"), (self.cols, "columns")) if part]
        return f"{SAID}{' by '.join(size)} denoised apart and blended ({self.reason})"


def strip_rows(n_rows: int, n_strips: int) -> tuple[tuple[int, int, float], ...]:
    """``n_strips`` overlapping strips of a frame of ``n_rows`` lines: ``(y0, y1, centre)``, centres evenly spread,
    each 1.5x the spacing tall (clipped to the frame). Raises :class:`InputError` where they would be too thin."""
    if n_strips < 2:
        return ()
    height = min(n_rows, math.ceil(1.5 * n_rows / n_strips))
    if height < MIN_STRIP_ROWS:
        raise InputError(f"{n_strips} strips of a {n_rows}-line frame would be {height} lines tall, "
                         f"{MIN_STRIP_ROWS} needed; use fewer strips")
    out = []
    for centre in (np.arange(n_strips) + 0.5) * n_rows / n_strips:
        y0 = int(max(0, min(n_rows - height, round(centre - height / 2))))
        out.append((y0, y0 + height, float(centre)))
    return tuple(out)


def weights(rows: tuple[tuple[int, int, float], ...], n_rows: int) -> list[np.ndarray]:
    """Each strip's blending weight per line: a tent about its centre (never 0 inside it: every line covered),
    normalised so that the strips' weights add up to 1 on every line."""
    tents = [np.clip(1.0 - np.abs(np.arange(y0, y1) - c) / ((y1 - y0) / 2), 0.05, None) for y0, y1, c in rows]
    total = np.zeros(n_rows)
    for (y0, y1, _), w in zip(rows, tents, strict=True):
        total[y0:y1] += w
    return [w / total[y0:y1] for (y0, y1, _), w in zip(rows, tents, strict=True)]


class RowStrip:
    """Lines ``[y0, y1)`` (and columns ``[x0, x1)``, default all) of every frame of ``stack``, read lazily (only the
    region asked for)."""

    def __init__(self, stack: Any, y0: int, y1: int, x0: int = 0, x1: int | None = None) -> None:
        t, _, x = (int(n) for n in stack.shape)
        self.stack, self.y0, self.y1, self.x0, self.x1 = stack, int(y0), int(y1), int(x0), int(x if x1 is None else x1)
        self.shape, self.dtype, self.ndim = (t, self.y1 - self.y0, self.x1 - self.x0), np.dtype(stack.dtype), 3

    def __getitem__(self, key: Any) -> np.ndarray:
        t, y, x = full_index(key, 3)
        return np.asarray(self.stack[(t, _within(self.y0, self.y1, y), _within(self.x0, self.x1, x))])


class _Turned:
    """``stack`` with its lines and columns swapped, read lazily by ``(t, y, x)`` slices."""

    def __init__(self, stack: Any) -> None:
        t, y, x = (int(n) for n in stack.shape)
        self.stack, self.shape, self.dtype, self.ndim = stack, (t, x, y), np.dtype(stack.dtype), 3

    def __getitem__(self, key: Any) -> np.ndarray:
        t, y, x = full_index(key, 3)
        return np.swapaxes(np.asarray(self.stack[(t, x, y)]), -1, -2)


def _within(start: int, stop: int, key: Any) -> Any:
    """``key`` (an index or a contiguous slice of ``[0, stop - start)``) as an index of ``[start, stop)``."""
    inner = range(start, stop)[key]
    if not isinstance(inner, range):
        return inner
    if inner.step != 1:  # the engine reads contiguous ranges only
        raise TypeError(f"index rows and columns with contiguous slices, got {key!r}")
    return slice(inner.start, inner.stop)


# ---------------------------------------------------------------------------------------------- when


def disagreement(stack: Any, rows: int = STRIP_ROWS,
                 columns: bool = False) -> Generator[InferEvent, None, tuple[float, float, float]]:
    """How far the shifts measured on the top and on the bottom ``rows`` lines of every frame disagree (``columns``:
    on the left and the right ``rows`` columns): their difference's RMS (px, less its median: a fixed offset is no
    motion), what the two estimates' own errors alone give (px), and the fraction of frames matched on both; yields
    progress."""
    # Each estimate's error is measured between its region's halves, which must share the region's motion, or the
    # error grows with the very shear measured: column regions are read turned a quarter (their top and bottom
    # halves, not their left and right), and every region spans only the central ACROSS px of the other axis (a
    # shear along that axis: corners jittering apart measured 2.0x on whole lines). The difference's RMS does not
    # depend on the turn.
    _, ny, nx = (int(n) for n in stack.shape)
    n, m = (nx, ny) if columns else (ny, nx)
    a0 = max(0, (m - ACROSS) // 2)
    a1 = min(m, a0 + ACROSS)
    first, last = ((_Turned(RowStrip(stack, a0, a1, 0, rows)), _Turned(RowStrip(stack, a0, a1, n - rows, n)))
                   if columns else (RowStrip(stack, 0, rows, a0, a1), RowStrip(stack, n - rows, n, a0, a1)))
    top, top_err = yield from estimate_shifts(first)
    bottom, bottom_err = yield from estimate_shifts(last)
    d = top - bottom
    ok = np.isfinite(d).all(axis=1)
    if not ok.any():
        return float("nan"), float("inf"), 0.0
    d = d[ok] - np.median(d[ok], axis=0)
    return float(np.sqrt(np.mean(np.sum(d**2, axis=1)))), float(np.hypot(top_err, bottom_err)), float(ok.mean())


def iter_choose_strips(setting: str | int, stack: Any, scan: bool = False,
                       flip: bool = False) -> Generator[InferEvent, None, Strips]:
    """The :class:`Strips` that ``setting`` (``InferConfig.strips``) asks for on ``stack``, yielding progress (the
    choice announced in an event's message). ``scan``: ``stack`` is a bidirectional scan's ``(T, 2N, N)`` lines
    (backward lines x-reversed when ``flip``), cut into whole lines (never into columns: its backward lines'
    columns are the forward lines' mirrored) and measured on its physical frames. A number of strips cuts lines."""
    if setting == "off" or setting == 1:
        return Strips(reason="off")
    lines = PhysicalFrames(stack, flip) if scan else stack
    t, n_rows, n_cols = (int(n) for n in lines.shape)
    r = 2 if scan else 1
    if setting != "auto":
        choice = Strips(strip_rows(n_rows, int(setting)), "asked for", r)
    elif t < MIN_FRAMES:
        choice = Strips(reason=f"too few frames ({t}, {MIN_FRAMES} needed)")
    else:  # (an axis too short to cut, or too thin across for a strip to register, is not measured)
        cut, said = {}, []
        for axis, n, across in (("lines", n_rows, n_cols), ("columns", 0 if scan else n_cols, n_rows)):
            if n >= 2 * STRIP_ROWS and across >= MIN_STRIP_ROWS:  # (a strip must be wide enough to register)
                cut[axis], words = _cut(*(yield from disagreement(lines, columns=axis == "columns")), axis)
                said.append(words)
        # blocks (both cut): at most MAX_BLOCKS per axis, so that the parts' own steps do not multiply
        most = MAX_BLOCKS if len(cut) == 2 and all(cut.values()) else None
        rows, cols = (strip_rows(n, min(math.ceil(n / (STRIP_ROWS / 1.5)), most or n)) if cut.get(axis) else ()
                      for axis, n in (("lines", n_rows), ("columns", n_cols)))
        choice = Strips(rows, ("non-rigid motion, within or between frames: " if rows or cols else
                               "no non-rigid motion measured: ") + "; ".join(said), r, cols) if said else Strips(
            reason=f"frames too small to cut ({n_rows} x {n_cols}, {2 * STRIP_ROWS} by {MIN_STRIP_ROWS} needed)")
    yield InferEvent(done=0, total=1, message=choice.describe())
    return choice


def _cut(rms: float, err: float, matched: float, axis: str) -> tuple[bool, str]:
    """'auto''s decision on one axis ('lines' or 'columns') from :func:`disagreement`'s figures, and its reason."""
    ends = "top and bottom lines" if axis == "lines" else "left and right columns"
    if matched < MIN_MATCHED:
        return False, f"only {matched:.0%} of the frames' {ends} matched reliably"
    return (rms > MIN_RATIO * err and rms > MIN_PX,
            f"{ends}' shifts differ by {rms:.2f} px RMS, {rms / err:.1f}x their error")


# ---------------------------------------------------------------------------------------------- how


RunPart = Callable[[Any, Any], Generator[InferEvent, None, Any]]


def iter_strips(stack: Any, strips: Strips, run_part: RunPart, target: Any, keep_mean: bool, output_dtype: str,
                in_memory: bool, new_target: bool = False) -> Generator[InferEvent, None, Any]:
    """``stack`` denoised strip by strip and blended into ``target`` (the job's output: the stack's shape, or a
    scan's physical frames).

    ``run_part(strip, out)`` runs the engine on one :class:`RowStrip` into ``out`` (None: a new float32 array) and
    returns the result. The strips' results are kept in memory (``in_memory``; the memory check counts ``target``
    too when it is a ``new_target``, not yet written) or in float32 temporary files, then blended a block of frames
    at a time; each frame's mean is set to the input frame's (``keep_mean``) and the block converted as
    ``output_dtype`` says (:func:`~.frame_means.to_target`). Yields progress: each strip's events (its phases, as a
    whole job's: motion measured, the network's tiles...) within its share of 1000, their messages prefixed with the
    strip.
    """
    t, x = int(stack.shape[0]), int(stack.shape[2])
    r_in, units = strips.rows_per_line, 1000
    n_lines = int(stack.shape[1]) // r_in
    parts_at = strips.windows(n_lines, x)
    r_out, n = int(target.shape[1]) // n_lines, len(parts_at)  # output rows per line
    name = "block" if strips.rows and strips.cols else "strip"
    nbytes = sum(t * r_out * (y1 - y0) * (x1 - x0) * 4 for (y0, y1, _), (x0, x1, _) in parts_at)
    with tempfile.TemporaryDirectory(prefix="unet-att-strips-") as tmp:
        if in_memory:
            res.check_memory(nbytes + (int(np.prod(target.shape)) * np.dtype(target.dtype).itemsize if new_target
                                       else 0),
                             f"the {n} strips' results of a {tuple(target.shape)} output (float32, in memory)",
                             "cpu", hint="stream the result to a file, or turn the strips off")
        else:
            _check_disk(nbytes, Path(tmp))
        parts: list[Any] = []
        for k, ((y0, y1, _), (x0, x1, _)) in enumerate(parts_at):
            dest = None if in_memory else np.lib.format.open_memmap(Path(tmp) / f"{k}.npy", "w+", np.float32,
                                                                    (t, r_out * (y1 - y0), x1 - x0))
            gen = run_part(RowStrip(stack, r_in * y0, r_in * y1, x0, x1), dest)
            del dest  # (only ``parts`` holds the temporary files: closed before their folder goes)
            parts.append((yield from in_share(gen, k / n, 1 / n, units, f"{name} {k + 1} of {n}: ")))
        _blend(stack, _window_weights(strips, parts_at, n_lines, x, r_out), parts_at, r_out, parts, target, keep_mean,
               output_dtype)
        parts.clear()
    yield InferEvent(done=units, total=units)
    return target


def _check_disk(nbytes: int, folder: Path) -> None:
    """Refuse before any work when the temporary folder cannot hold the strips' results."""
    free = shutil.disk_usage(folder).free
    if nbytes > 0.9 * free:
        raise InputError(f"the strips' results need {nbytes / 1e9:.1f} GB of temporary files in {folder.parent}, "
                         f"{free / 1e9:.1f} GB free; set TMPDIR to a larger disk, or turn the strips off")


def _window_weights(strips: Strips, windows: list, n_lines: int, n_cols: int, r_out: int) -> list[np.ndarray]:
    """Each part's blending weights ``(r_out * lines, columns)``, float32: the product of its strip of lines' and its
    strip of columns' tents (:func:`weights`; 1 along an axis not cut), adding up to 1 on every output pixel."""
    wy = dict(zip(strips.rows, weights(strips.rows, n_lines), strict=True)) if strips.rows else {}
    wx = dict(zip(strips.cols, weights(strips.cols, n_cols), strict=True)) if strips.cols else {}
    return [np.outer(np.repeat(wy.get(ry, np.ones(ry[1] - ry[0])), r_out),
                     wx.get(rx, np.ones(rx[1] - rx[0]))).astype(np.float32) for ry, rx in windows]


def _blend(stack: Any, ws: list[np.ndarray], windows: list, r_out: int, parts: list[Any], target: Any,
           keep_mean: bool, output_dtype: str) -> None:
    """The parts' results (``r_out`` rows per line) blended into ``target`` with their weights ``ws``
    (:func:`_window_weights`), :data:`BLOCK` frames at a time."""
    t, n_rows, x = (int(n) for n in target.shape)
    in_dtype, target_dtype = np.dtype(stack.dtype), np.dtype(getattr(target, "dtype", np.float32))
    for t0 in range(0, t, BLOCK):
        t1 = min(t, t0 + BLOCK)
        block = np.zeros((t1 - t0, n_rows, x), np.float32)
        for ((y0, y1, _), (x0, x1, _)), w, part in zip(windows, ws, parts, strict=True):
            block[:, r_out * y0 : r_out * y1, x0:x1] += np.asarray(part[t0:t1], np.float32) * w
        if keep_mean:  # each strip kept its own lines' means; the frame's is kept over the whole frame (each
            inp = np.asarray(stack[t0:t1], np.float32)  # direction's of an interleaved scan, as a whole job does)
            for d in range(r_out):
                keep_frame_means(block[:, d::r_out], inp[:, d::r_out] if r_out > 1 else inp)
        target[t0:t1] = to_target(block, output_dtype, in_dtype, target_dtype)
