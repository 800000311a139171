"""Keeping each pixel's time average: still detail the model took out, put back where it exceeds the noise.

A pretrained model must tell structure from noise in a few dozen frames. Fine structure that never changes
(small somata and neurites of a resampled movie, a dim cell's outline at one photon per pixel) is blurred
with the noise around it. The recording knows better: a pixel's average over hundreds of frames has a
hundredth of one frame's noise variance and no blur. On the thunder mouse movie the temporal mean of the
generalist's output was off the input's by 89 counts^2 (mean squared), the best Gaussian's by 20;
on the same movie with Poisson noise at known truth, putting the missing average back gave +1.8 to +2.5 dB
(docs/benchmarks.md, twelfth session).

After the output is written, one pass reads it back beside the input and sums each pixel's residual ``input - output``
over chunks of about :data:`CHUNK` frames, and apart over the frames of alternate blocks of :data:`SPLIT` frames. Each
chunk's mean residual ``m`` is the detail the output missed plus noise; the difference of the two sets of blocks'
means, rescaled, is noise alone with the same covariance as ``m``'s (``d``: the blocks interleave, so drift and
bleaching cancel in it). The correction is a filter of ``m``: ``sum_k a_k G_k(m)``, the ``G_k`` Gaussians of
:data:`.average_filter.SIGMAS_XY` pixels (0: ``m`` itself), the weights chosen by Stein's unbiased estimate of the
error against the true missing average, ``|F(m) - m|^2 + 2 <F(d), d> - <d, d>`` for a linear ``F``, which needs no
model of the noise (its variance per pixel and its correlation between neighbours are ``d``'s) and is quadratic in the
weights: a small quadratic problem (SURE-LET, Blu and Luisier 2007), solved with the filter's response kept between 0
and 1 at every frequency (no part of the difference is worth more than all of it, nor less than none). Any image a
microscope records is smooth at the scale of its point-spread function, the noise of an average is not. One Gaussian
and a gain chosen the same way gave +0.38 / +0.28 / +0.12 dB on the thunder movie with Poisson noise (1 / 2 / 5
photons) over the per-pixel shrinkage it replaced (sixteenth session); the weighted sum, which can also sharpen, +0.1
dB more on that movie's validation noise and on held-out simulations (nineteenth session, docs/benchmarks.md). Where
the output's average already matches the input's (a flat field, an identity model) the weights fall to about 0.
A network's zero-padded convolutions leave a bias along the frame's edges (on flat Poisson noise the generalist's
temporal mean was 0.49 counts darker in the outermost row and column, 0.29 in the next: docs/benchmarks.md, nineteenth
session) that no pixel's own average shows above its noise where nothing else is missing. So the mean residual of the
pixels at each distance from the edges is taken first, pooled along them (hundreds of pixels: a tenth of the noise or
less), the depth (:data:`.average_filter.EDGE_WIDTHS`), whether each side has its own, and the gain chosen by the same
estimate, when that bias stands clearly above its noise (:data:`.average_filter.EDGE_Z`); the rest of ``m`` is then
filtered as above. Not on moving recordings: their residuals are averaged in the tissue's frame, where the frame's
edges move.
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
from .average_filter import choose_correction
from .frame_means import to_target
from .registration import PhysicalFrames
from .tissue import moved

__all__ = ["BLOCK", "CHUNK", "MIN_FRAMES", "SAID", "SPLIT", "AverageCorrection", "block_frames", "chunk_edges",
           "correction_frames", "expected", "in_first_set", "iter_keep_average", "moved", "residual_means",
           "residual_sums", "sums_bytes"]

MIN_FRAMES = 100  # fewer frames: the average is too noisy to be worth it (SIMA CA1, 10 frames: worse)
CHUNK = 512  # frames averaged together on long recordings (a few hundred: noise / 500, yet follows drift)
BLOCK = 1 << 14  # pixels read at a time (whole frames, at least one): the passes' temporaries stay small
SPLIT = 16  # frames per block of the two interleaved sets whose means' difference measures the noise
SAID = "time average: "  # how every description starts (the docks and benchmarks look for it)


@dataclass(frozen=True)
class AverageCorrection:
    """What is added to each output frame: ``images[k]`` at frame ``centres[k]``, linear in between.

    ``gain`` (the filter's response to a smooth difference: the sum of its weights) and ``edge_gain`` are what
    :func:`choose_correction` chose, ``rms`` the correction's RMS in output units; ``shifts`` ``(T, 2)``: where
    the tissue sits in each frame (the images are in its frame; None: still); ``flip`` not None: the output is a
    bidirectional scan's interleaved lines
    (:func:`.tissue.moved`).
    """

    images: np.ndarray  # (chunks, Y, X) float32
    centres: np.ndarray  # (chunks,) float64, in frames
    gain: float
    rms: float
    shifts: np.ndarray | None = None
    flip: bool | None = None
    edge_gain: float = 0.0

    def describe(self) -> str:
        """One line for progress messages and logs."""
        along = ", averaged along the measured motion" if self.shifts is not None else ""
        if self.gain == 0:
            return (f"{SAID}the output's bias along the frame's edges removed ({self.edge_gain:.0%} of it; "
                    f"RMS {self.rms:.3g}{along})")
        edges = f"{self.edge_gain:.0%} of the bias along the frame's edges; " if self.edge_gain > 0 else ""
        # a band-pass (weights summing to about 0) keeps none of the smooth part: say what it keeps
        part = "its fine part only" if abs(self.gain) < 0.005 else f"{self.gain:.0%} of its smooth part"
        return (f"{SAID}restored where the output's average missed the input's ({edges}the difference filtered as "
                f"Stein's estimate chose, {part}; RMS {self.rms:.3g}{along})")


def chunk_edges(n_frames: int) -> np.ndarray:
    """Frame indices that cut ``n_frames`` into chunks of about :data:`CHUNK` frames (one chunk up to 1.5x)."""
    n = max(1, int(round(n_frames / CHUNK)))
    return np.linspace(0, n_frames, n + 1).round().astype(int)


def sums_bytes(setting: str, shape: tuple[int, ...]) -> int:
    """The host memory :func:`iter_keep_average` needs for ``setting`` on a ``(T, Y, X)`` output: per chunk, two
    float64 sums (then the mean and the noise image in their place), their two float64 copies (less their means)
    while the correction is chosen, and its float32 image, each of a frame's size (the filtering's temporaries are
    a few frames, not per chunk)."""
    if setting == "off" or shape[0] < MIN_FRAMES:
        return 0
    return len(chunk_edges(int(shape[0]))) * int(np.prod(shape[1:])) * (4 * 8 + 4)


def block_frames(shape: tuple[int, ...]) -> int:
    """Frames per read: :data:`BLOCK` pixels, at least one frame."""
    return max(1, BLOCK // max(1, int(np.prod(shape[1:]))))


def in_first_set(t: np.ndarray) -> np.ndarray:
    """Whether frames ``t`` belong to the first of the two interleaved sets of :data:`SPLIT`-frame blocks."""
    return (np.asarray(t) // SPLIT) % 2 == 0


def residual_sums(stack: Any, result: Any, edges: np.ndarray, shifts: np.ndarray | None = None,
                  flip: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per chunk, the sum over its frames of ``stack - result``, and the sum over those of them in the first set
    (:func:`in_first_set`) (float64, ``(chunks, Y, X)``); with ``shifts`` ``(T, 2)``, each frame's residual is
    first moved by ``-shifts[t]`` (into the tissue's frame; the interleaved lines of a scan direction by direction
    when ``flip`` is not None).

    Both are read :func:`block_frames` frames at a time, never whole.
    """
    shape = (len(edges) - 1, *(int(n) for n in stack.shape[1:]))
    total, first = np.zeros(shape), np.zeros(shape)
    step = block_frames(stack.shape)
    for k, (lo, hi) in enumerate(zip(edges[:-1], edges[1:], strict=True)):
        for t0 in range(int(lo), int(hi), step):
            t1 = min(t0 + step, int(hi))
            r = np.array(stack[t0:t1], np.float32)
            r -= np.asarray(result[t0:t1], np.float32)
            r = moved(r, None if shifts is None else -np.asarray(shifts[t0:t1]), flip)
            total[k] += r.sum(axis=0, dtype=np.float64)  # float64: no loss over thousands of frames
            first[k] += r[in_first_set(np.arange(t0, t1))].sum(axis=0, dtype=np.float64)
    return total, first


def residual_means(total: np.ndarray, first: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each chunk's mean residual ``m`` and a noise image ``d`` with ``m``'s covariance (the sums of
    :func:`residual_sums`, overwritten).

    With ``a`` and ``b`` frames in the two sets, ``m = (a m_a + b m_b) / n`` and ``d = (m_a - m_b) sqrt(a b) / n``:
    for frames with independent noise of any variance ``V`` per pixel, both carry ``V / n``, uncorrelated, and what
    the two sets share (the missing detail) cancels in ``d``.
    """
    n = np.diff(edges).astype(np.float64)
    a = np.array([np.count_nonzero(in_first_set(np.arange(lo, hi))) for lo, hi in zip(edges[:-1], edges[1:],
                                                                                        strict=True)], np.float64)
    b = n - a
    rest = total - first  # the second set's sum
    with np.errstate(invalid="ignore", divide="ignore"):  # a chunk with one set empty: no noise image (d = 0)
        weight = np.where((a > 0) & (b > 0), np.sqrt(a * b) / n, 0.0)[:, None, None]
        first /= np.maximum(a, 1)[:, None, None]
        rest /= np.maximum(b, 1)[:, None, None]
    total /= n[:, None, None]
    first -= rest
    first *= weight
    return total, first


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


def expected(setting: str, n_frames: int) -> bool:
    """Whether ``setting`` keeps the averages of an output of ``n_frames`` frames on the input's grid."""
    return setting != "off" and n_frames >= MIN_FRAMES


def _applies(setting: str, stack: Any, result: Any) -> str | None:
    """Why the time average is not kept (None: it is)."""
    if setting == "off":
        return "off"
    if tuple(result.shape) != tuple(stack.shape):
        return "the output is not on the input's pixel grid"
    if not hasattr(result, "__getitem__"):
        return "the destination cannot be read back"
    if not expected(setting, int(stack.shape[0])):
        return f"too few frames ({int(stack.shape[0])}, {MIN_FRAMES} needed)"
    return None


def iter_keep_average(setting: str, stack: Any, result: Any, output_dtype: str, shifts: np.ndarray | None = None,
                      bidirectional: bool = False, flip: bool = False
                      ) -> Generator[InferEvent, None, AverageCorrection | None]:
    """Correct ``result`` (the written output of ``stack``, modified in place) by the residual average, filtered
    (:func:`choose_correction`).

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
    m, d = residual_means(*residual_sums(stack, result, edges, shifts, lines), edges)
    images, gain, edge_gain = choose_correction(m, d, lines is not None, edges=shifts is None)
    del m, d
    if gain == 0 and edge_gain == 0:
        yield InferEvent(done=2 * t, total=2 * t, message=f"{SAID}not needed (the output's average is within the "
                                                          "noise of the input's)")
        return None
    corr = AverageCorrection(images, (edges[:-1] + edges[1:] - 1) / 2.0, gain,
                             float(np.sqrt(np.mean(np.square(images, dtype=np.float64)))), shifts, lines, edge_gain)
    yield InferEvent(done=t, total=2 * t)
    in_dtype, out_dtype = np.dtype(stack.dtype), np.dtype(result.dtype)
    step = block_frames(stack.shape)
    for t0 in range(0, t, step):
        t1 = min(t0 + step, t)
        block = np.asarray(result[t0:t1], np.float32) + correction_frames(corr, t0, t1)
        result[t0:t1] = to_target(block, output_dtype, in_dtype, out_dtype)
    yield InferEvent(done=2 * t, total=2 * t, message=corr.describe())
    return corr
