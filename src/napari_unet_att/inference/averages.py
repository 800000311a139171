"""Keeping each pixel's time average: still detail the model took out, put back where it exceeds the noise.

A pretrained model must tell structure from noise in a few dozen frames. Fine structure that never changes
(small somata and neurites of a resampled movie, a dim cell's outline at one photon per pixel) is blurred
with the noise around it. The recording knows better: a pixel's average over hundreds of frames has a
hundredth of one frame's noise variance and no blur. On the thunder mouse movie the temporal mean of the
generalist's output was off the input's by 89 counts^2 (mean squared), the best Gaussian's by 20;
on the same movie with Poisson noise at known truth, putting the missing average back gave +1.8 to +2.5 dB
(docs/benchmarks.md, twelfth session).

After the output is written, one pass reads it back beside the input and sums each pixel's residual
``input - output`` (and its square) over chunks of about :data:`CHUNK` frames. Each chunk's mean residual
``m`` is shrunk by its own noise, per pixel: ``m * max(0, 1 - SHRINK * v / m^2)`` with ``v`` the residual's
variance over the chunk divided by its frame count (positive-part James-Stein for ``SHRINK`` = 1). Where the
output's average already matches the input's, ``m`` is noise and is mostly dropped; where detail is missing,
it comes back almost whole. ``SHRINK`` = 2 rather than 1: the residual is not independent from frame to frame
(the output is smoothed over time), so ``v`` underestimates the mean's noise; over 24 simulated recordings
(1-5 photons, still, drifting, jittering) 2 never lost against no correction and 1 lost up to 0.08 dB on
drifting ones, for 0.02 dB less on average.
A second pass adds the correction (interpolated in time between chunk centres, so that drift and bleaching
over thousands of frames are followed) to every frame, each frame's mean kept.

Where the field of view was seen to move (:mod:`.registration` measured the shifts: slow drift, or fast motion
whose frames were registered, denoised and moved back), each frame's residual is moved by its sub-pixel shift
before it is averaged, and the correction is moved back with the frame: the average is taken along the tissue,
not across it (a mirrored-scan model's interleaved output: each scan direction's lines moved on their own). Under
slow drift (1 px) that gave +0.7 dB more than averaging in place, under jitter +0.6 to +0.8.

Any model whose output lies on the input's pixel grid, or on its physical frames (a mirrored-scan model's merged
output of a bidirectional scan: compared with both directions of each line averaged), and stacks of at least
:data:`MIN_FRAMES` frames: on 10 frames the average's own noise cost more than the detail gained.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..config import InferEvent
from .frame_means import to_target
from .registration import PhysicalFrames, moved

__all__ = ["BLOCK", "CHUNK", "MIN_FRAMES", "SAID", "SHRINK", "AverageCorrection", "block_frames", "chunk_edges",
           "correction_frames", "iter_keep_average", "moved", "residual_sums", "shrunk_means", "sums_bytes"]

MIN_FRAMES = 100  # fewer frames: the average is too noisy to be worth it (SIMA CA1, 10 frames: worse)
CHUNK = 512  # frames averaged together on long recordings (a few hundred: noise / 500, yet follows drift)
BLOCK = 1 << 14  # pixels read at a time (whole frames, at least one): the passes' temporaries stay small
SHRINK = 2.0  # how far beyond its noise a mean must be to be kept (see above)
SAID = "time average: "  # how every description starts (the docks and benchmarks look for it)


@dataclass(frozen=True)
class AverageCorrection:
    """What is added to each output frame: ``images[k]`` at frame ``centres[k]``, linear in between.

    ``changed`` is the share of pixels with a non-zero correction, ``rms`` the correction's RMS in output units;
    ``shifts`` ``(T, 2)``: where the tissue sits in each frame (the images are in its frame; None: still);
    ``flip`` not None: the output is a bidirectional scan's interleaved lines (:func:`.registration.moved`).
    """

    images: np.ndarray  # (chunks, Y, X) float32
    centres: np.ndarray  # (chunks,) float64, in frames
    changed: float
    rms: float
    shifts: np.ndarray | None = None
    flip: bool | None = None

    def describe(self) -> str:
        """One line for progress messages and logs."""
        along = ", averaged along the measured motion" if self.shifts is not None else ""
        return (f"{SAID}restored where the output's average missed the input's by more than the noise "
                f"({100 * self.changed:.0f}% of pixels, RMS {self.rms:.3g}{along})")


def chunk_edges(n_frames: int) -> np.ndarray:
    """Frame indices that cut ``n_frames`` into chunks of about :data:`CHUNK` frames (one chunk up to 1.5x)."""
    n = max(1, int(round(n_frames / CHUNK)))
    return np.linspace(0, n_frames, n + 1).round().astype(int)


def sums_bytes(setting: str, shape: tuple[int, ...]) -> int:
    """The host memory :func:`iter_keep_average` needs for ``setting`` on a ``(T, Y, X)`` output: per chunk,
    two float64 sums and a float32 image of a frame's size."""
    if setting == "off" or shape[0] < MIN_FRAMES:
        return 0
    return len(chunk_edges(int(shape[0]))) * int(np.prod(shape[1:])) * (8 + 8 + 4)


def block_frames(shape: tuple[int, ...]) -> int:
    """Frames per read: :data:`BLOCK` pixels, at least one frame."""
    return max(1, BLOCK // max(1, int(np.prod(shape[1:]))))


def residual_sums(stack: Any, result: Any, edges: np.ndarray, shifts: np.ndarray | None = None,
                  flip: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per chunk, the sum over frames of ``stack - result`` and of its square (float64, ``(chunks, Y, X)``); with
    ``shifts`` ``(T, 2)``, each frame's residual is first moved by ``-shifts[t]`` (into the tissue's frame; the
    interleaved lines of a scan direction by direction when ``flip`` is not None).

    Both are read :func:`block_frames` frames at a time, never whole.
    """
    shape = (len(edges) - 1, *(int(n) for n in stack.shape[1:]))
    s1, s2 = np.zeros(shape), np.zeros(shape)
    step = block_frames(stack.shape)
    for k, (lo, hi) in enumerate(zip(edges[:-1], edges[1:], strict=True)):
        for t0 in range(int(lo), int(hi), step):
            t1 = min(t0 + step, int(hi))
            r = np.array(stack[t0:t1], np.float32)
            r -= np.asarray(result[t0:t1], np.float32)
            r = moved(r, None if shifts is None else -np.asarray(shifts[t0:t1]), flip)
            s1[k] += r.sum(axis=0, dtype=np.float64)
            s2[k] += np.square(r, dtype=np.float64).sum(axis=0)  # float64: no overflow at any intensity scale
    return s1, s2


def shrunk_means(s1: np.ndarray, s2: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Each chunk's mean residual, shrunk toward 0 by its own noise (float32, like ``s1``).

    ``m * max(0, 1 - SHRINK * v / m^2)``: ``m = s1 / n``, ``v`` the variance of the mean (the residual's
    variance over the chunk / n). A mean within its noise is mostly dropped, a mean far beyond it is kept.
    """
    n = np.asarray(counts, np.float64)[:, None, None]
    m = s1 / n
    v = np.maximum(s2 / n - m * m, 0.0) / n
    keep = np.clip(1.0 - SHRINK * v / np.maximum(m * m, np.finfo(np.float64).tiny), 0.0, 1.0)
    return (m * keep).astype(np.float32)


def correction_frames(corr: AverageCorrection, t0: int, t1: int) -> np.ndarray:
    """The correction of frames ``t0 .. t1 - 1`` ``(t1 - t0, Y, X)``, each moved with its frame (``corr.shifts``)
    and with its spatial mean removed."""
    t = np.arange(t0, t1, dtype=np.float64)
    if len(corr.centres) == 1:
        out = np.repeat(corr.images[:1], len(t), axis=0)
    else:  # linear between neighbouring chunk centres, constant beyond the first / last
        pos = np.clip(np.interp(t, corr.centres, np.arange(len(corr.centres))), 0, len(corr.centres) - 1)
        lo = np.minimum(pos.astype(int), len(corr.centres) - 2)
        w = (pos - lo).astype(np.float32)[:, None, None]
        out = (1 - w) * corr.images[lo] + w * corr.images[lo + 1]
    out = moved(out, None if corr.shifts is None else corr.shifts[t0:t1], corr.flip)
    out -= out.mean(axis=(1, 2), dtype=np.float64).astype(np.float32)[:, None, None]  # frame means stay
    return out


def _applies(setting: str, stack: Any, result: Any) -> str | None:
    """Why the time average is not kept (None: it is)."""
    if setting == "off":
        return "off"
    if tuple(result.shape) != tuple(stack.shape):
        return "the output is not on the input's pixel grid"
    if not hasattr(result, "__getitem__"):
        return "the destination cannot be read back"
    if int(stack.shape[0]) < MIN_FRAMES:
        return f"too few frames ({int(stack.shape[0])}, {MIN_FRAMES} needed)"
    return None


def iter_keep_average(setting: str, stack: Any, result: Any, output_dtype: str, shifts: np.ndarray | None = None,
                      bidirectional: bool = False, flip: bool = False
                      ) -> Generator[InferEvent, None, AverageCorrection | None]:
    """Correct ``result`` (the written output of ``stack``, modified in place) by the shrunk residual average.

    Parameters
    ----------
    setting : str
        ``InferConfig.keep_average``: 'auto' (at least :data:`MIN_FRAMES` frames) or 'off'.
    stack, result : array-like (T, Y, X)
        The input and the finished output (numpy, memory-mapped TIFF or zarr: read and written by frame blocks).
    output_dtype : str
        ``InferConfig.output_dtype``: the corrected frames are converted (and clipped) as the first pass's were.
    shifts : ndarray (T, 2), optional
        Where the tissue sits in each frame (``Registration.shifts``): the averages are taken along it.
    bidirectional, flip : bool
        ``stack`` is the ``(T, 2N, N)`` scan of a mirrored-scan model (backward lines x-reversed when ``flip``):
        a merged ``(T, N, N)`` result is compared with the physical frames; an interleaved one line by line,
        each direction's lines moved on their own.

    Yields
    ------
    InferEvent
        Blocks read, then written; the last one's message describes the correction.

    Returns
    -------
    AverageCorrection or None
        None when nothing was done (the reason is in an event's message).
    """
    lines = flip if bidirectional and tuple(result.shape) == tuple(stack.shape) else None  # interleaved output
    if bidirectional and lines is None:
        stack = PhysicalFrames(stack, flip)
    why = _applies(setting, stack, result)
    if why is not None:
        if setting != "off":
            yield InferEvent(done=0, total=1, message=f"{SAID}not kept ({why})")
        return None
    t = int(stack.shape[0])
    yield InferEvent(done=0, total=2 * t)
    edges = chunk_edges(t)
    s1, s2 = residual_sums(stack, result, edges, shifts, lines)
    images = shrunk_means(s1, s2, np.diff(edges))
    del s1, s2
    corr = AverageCorrection(images, (edges[:-1] + edges[1:] - 1) / 2.0, float(np.mean(images != 0)),
                             float(np.sqrt(np.mean(np.square(images, dtype=np.float64)))), shifts, lines)
    yield InferEvent(done=t, total=2 * t)
    in_dtype, out_dtype = np.dtype(stack.dtype), np.dtype(result.dtype)
    step = block_frames(stack.shape)
    for t0 in range(0, t, step):
        t1 = min(t0 + step, t)
        block = np.asarray(result[t0:t1], np.float32) + correction_frames(corr, t0, t1)
        result[t0:t1] = to_target(block, output_dtype, in_dtype, out_dtype)
    yield InferEvent(done=2 * t, total=2 * t, message=corr.describe())
    return corr
