"""Smoothing a model's output over time (and a little in space), the amount chosen on the recording itself.

Where the field of view is still and photons are few, the best estimate of a pixel averages many frames: a 3D
Gaussian with ``sigma_t`` 4 to 10 frames beats the pretrained generalist there, and the generalist's output smoothed
over time beats both (docs/benchmarks.md). How much to smooth depends on the recording (photons, how fast the
indicator changes) and no ground truth is at hand, so it is chosen self-supervised, the way a temporal model is
trained: the model denoises the even frames of a calibration block on their own, each candidate smoothing of that
result predicts the odd frames between them, and the candidate with the smallest mean squared error wins. The odd
frames' noise is independent of everything the prediction saw, so that error is the error against the clean signal
plus a constant (the noise's variance): no candidate is favoured by the noise (Noise2Noise). Where each pixel's
average is put back afterwards (:mod:`.averages`), only the error that the output keeps is counted.

Where the motion is known to a fraction of a pixel, the output is smoothed *along the measured motion*: every frame
moved by minus its sub-pixel shift into the tissue's frame (on a canvas that keeps every recorded pixel), smoothed
there, and moved back; the calibration does the same (the even frames' result moved into the tissue's frame, each
candidate moved to where its odd frame is). That is a slow drift
that :mod:`.registration` measured but left to the network, and the sub-pixel motion left on the canvas of a
registered recording by its whole-pixel moves. On simulated drift at 1 photon per pixel smoothing along the
motion gave +2.2 dB, smoothing in place at best +0.9 (docs/benchmarks.md, thirteenth session).
Otherwise the choice is only made for still recordings. When the field of view moves, the even frames' result on
its own (which cannot see the frame in between) is a much poorer estimate than the full-rate one and profits from
smoothing that blurs the full-rate output; a frame-to-frame shift of the even frames' result above
:data:`MAX_STILL_SHIFT` therefore turns smoothing off where the motion was not measured, and keeps it to
:data:`MAX_SIGMA_T_ALONG` frames where it was (a two-scale smoothing's fine detail to :data:`MAX_SIGMA_T_SPLIT_ALONG`).

What changes within a frame or two (a fast indicator's transient at a low frame rate, a rise within one frame) is
partly noise to that half-rate prediction: each window is also charged what it removes of the signal at full rate
beyond what the prediction saw, from the signal's covariance over time measured on the input
(:mod:`.signal_changes`; jGCaMP8m at 5 Hz: the calibration chose 16 frames and lost 6 dB before).

With the smoothing the calibration chooses how much of the fast changes it removes to give back
(:mod:`.transients`: a transient's rise and peak, not the noise). The chosen smoothing is applied to the output as it
streams out (:class:`TemporalSmoother`), and every frame keeps its mean. Mirrored-scan models are calibrated the same
way, on whole frames: the even frames of the block (both scan directions of each) denoised on their own predict the
odd frames' raw lines (an interleaved output's, whose two directions' lines move apart: :func:`to_tissue`; a merged
output is a single view of the physical frames). Within frames (one direction's result predicting the other's
lines) it over-smoothed the two directions' average (docs/benchmarks.md).

On a still recording the calibration may also **blend in a Gaussian of the input** (:data:`BLENDS`,
:data:`BLEND_SIGMAS`): where the model takes real activity for noise (real noise unlike any it was trained on), the
input's own neighbours predict the next frame better than the model, and the same prediction error says so; taken
only where it lowers that error clearly (:data:`BLEND_MIN_GAIN_DB`; on the thunder movie's real noise, never on the
simulations: docs/benchmarks.md). Where the model does worse than a plain filter, the filter.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..config import InferEvent, announced
from ..model.denoiser import Denoiser
from .average_filter import blurred
from .bands import SPLITS_PX, choose_split, combine
from .registration import PhysicalFrames
from .signal_changes import ALONG_INTERPOLATED, SignalChanges, measure
from .smoother import EMIT_FRAMES, TemporalSmoother
from .temporal_filter import TRUNCATE, radius, smooth, smooth_t, smooth_xy
from .tissue import as_planes, canvas_pad, frame_shifts, from_tissue, to_tissue
from .transients import choose_threshold, keep_fast

__all__ = ["AVERAGED_SIGMA", "BLEND_MIN_GAIN_DB", "BLEND_SIGMAS", "BLENDS", "CALIBRATION_FRAMES", "CALIBRATION_VOXELS",
           "CALIBRATION_XY", "EMIT_FRAMES", "ALONG_SPLIT", "MAX_SIGMA_T_ALONG", "MAX_SIGMA_T_SPLIT_ALONG",
           "MAX_STILL_SHIFT", "SAID", "SIGMAS_T", "SIGMAS_XY", "Smoothing", "TemporalSmoother", "calibration_block",
           "calibration_errors", "canvas_pad", "choose_smoothing", "frame_shifts", "from_tissue", "held_bytes",
           "iter_smoothing", "smooth", "smooth_t", "smooth_xy", "to_tissue", "TRUNCATE"]

# frames of the full-rate output; 12 and 16 serve the fine detail of a two-scale smoothing (:mod:`.bands`: chosen
# on 5 of 6 validation recordings over 8, +0.1 to +0.4 dB); the calibration block's 80 frames judge no longer ones
SIGMAS_T: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0)
SIGMAS_XY: tuple[float, ...] = (0.0, 0.5)  # pixels
# Still recordings: the share of a Gaussian of the input (sigma_t frames, sigma_xy pixels) blended into the smoothed
# output (thunder movie's real noise: next-frame MSE 177.6 -> 144.5, best Gaussian 146.8; docs/benchmarks.md)
BLENDS: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 0.9, 1.0)
BLEND_SIGMAS: tuple[tuple[float, float], ...] = ((1.0, 0.25), (2.0, 0.25), (4.0, 0.25), (1.0, 0.5), (2.0, 0.5),
                                                 (4.0, 0.5), (1.0, 1.0), (2.0, 1.0), (4.0, 1.0))
# ... only where it lowers the prediction error by this much more than smoothing alone: the calibration overrates the
# input's help (at 5 photons a 20% blend for +0.002 dB there lost 0.25 dB of PSNR; thunder's real noise: 1.6 dB)
BLEND_MIN_GAIN_DB = 0.05
CALIBRATION_FRAMES = 80  # raw frames of the calibration block (its even half goes through the model)
CALIBRATION_XY = 128  # the block's largest height and width (a central crop)
# Smaller frames: more of them, up to this many voxels (the choice's noise falls with the voxels compared; on the
# 64 x 64 thunder movie 320 frames instead of 80 came 0.1 dB closer to the best smoothing: docs/benchmarks.md)
CALIBRATION_VOXELS = CALIBRATION_FRAMES * CALIBRATION_XY**2
# Where each pixel's average is put back (:mod:`.averages`: smoothed by 0.5-0.7 px on the benchmarks), only the part of
# each pixel's mean error finer than a Gaussian of this many pixels stays in the output: the calibration counts that
AVERAGED_SIGMA = 0.7
MAX_STILL_SHIFT = 0.1  # pixels, RMS shift between consecutive even frames above which smoothing stays off
# Along a measured motion the candidates stop at 2 frames: the half-rate result of a moving recording is a poorer
# estimate, so the calibration over-smooths (4-8 frames where 2-3 gave the best PSNR on validation seeds), and longer
# windows add up the motion estimates' errors: sigma 2 was within 0.5 dB of the best, ROI traces as correlated as none.
MAX_SIGMA_T_ALONG = 2.0
# ... but a two-scale smoothing's fine detail (:mod:`.bands`) over up to 8 (validation, AR and jitter motion: the split
# at 2 px with fine detail over 8 frames gained 0.6-0.7 dB over 2 frames for all; 16 lost)
MAX_SIGMA_T_SPLIT_ALONG = 8.0
# ... its coarse detail over at most 1 frame, split at 2 px: the calibration took 2 frames and 4 px wherever it could,
# for +0.1-0.3 dB more and ROI traces 0.002-0.005 less correlated with the truth than one window's (validation, AR and
# jitter motion): the longest coarse window and the split scales tried
ALONG_SPLIT: tuple[float, tuple[float, ...]] = (1.0, (2.0,))
SAID = "output smoothing: "  # how every description starts (the docks and benchmarks look for it)


@dataclass(frozen=True)
class Smoothing:
    """Gaussian smoothing of the output: ``sigma_t`` frames, ``sigma_xy`` pixels (0, 0: none).

    ``shift_px`` is the RMS frame-to-frame shift measured on the calibration block (None when none
    was measured) and ``reason`` says in a few words why this smoothing was chosen. With ``shifts``
    ``(T, 2)`` (the output's frames' sub-pixel shifts, :attr:`.registration.Registration.shifts`) the
    output is smoothed along them: in the tissue's frame instead of the image's; ``flip`` not None says that
    the output is a bidirectional scan's interleaved lines (:func:`to_tissue`). ``blend`` > 0 (still recordings
    only): the result is ``(1 - blend)`` times the smoothed output plus ``blend`` times the input (in the
    output's layout) smoothed by a Gaussian of ``blend_sigma`` ``(sigma_t frames, sigma_xy pixels)``. A finite
    ``keep_k`` gives back what the smoothing removed beyond ``keep_k`` robust deviations of it, pooled over a Gaussian
    of ``keep_px`` pixels first (:mod:`.transients`).
    """

    sigma_t: float = 0.0
    sigma_xy: float = 0.0
    shift_px: float | None = None
    reason: str = "off"
    shifts: np.ndarray | None = field(default=None, compare=False, repr=False)
    flip: bool | None = None
    blend: float = 0.0
    blend_sigma: tuple[float, float] = (0.0, 0.0)
    keep_k: float = math.inf
    keep_px: float = 0.0
    split_px: float = 0.0
    sigma_t_coarse: float = 0.0

    @property
    def active(self) -> bool:
        """Whether the output changes at all."""
        return self.sigma_t > 0 or self.sigma_xy > 0 or self.blend > 0 or self.over_time

    @property
    def over_time(self) -> bool:
        """Whether any part of the output is smoothed over time (what follows a measured motion)."""
        return self.sigma_t > 0 or (self.split_px > 0 and self.sigma_t_coarse > 0)

    @property
    def radius(self) -> int:
        """Frames either side that an output frame depends on."""
        coarse = self.sigma_t_coarse if self.split_px > 0 else 0.0
        return radius(max(self.sigma_t, coarse, self.blend_sigma[0] if self.blend > 0 else 0.0))

    def describe(self) -> str:
        """One line for progress messages and logs."""
        if not self.active:
            return f"{SAID}none ({self.reason})"
        along = ", along the measured motion" if self.shifts is not None else ""
        if self.split_px > 0:
            along += f", detail coarser than {self.split_px:g} px over {self.sigma_t_coarse:g} frames"
        if math.isfinite(self.keep_k):
            pooled = f" (pooled over {self.keep_px:g} px)" if self.keep_px > 0 else ""
            along += f", fast changes above {self.keep_k:g}x their noise{pooled} kept"
        if self.blend > 0:
            bt, bxy = self.blend_sigma
            along += f", {self.blend:.0%} a Gaussian of the input ({bt:g} frames, {bxy:g} px)"
        return f"{SAID}Gaussian sigma {self.sigma_t:g} frames, {self.sigma_xy:g} px{along} ({self.reason})"


def calibration_block(shape: tuple[int, int, int], bidirectional: bool = False) -> tuple[slice, slice, slice]:
    """The central block of a ``(T, Y, X)`` stack that calibration reads: at most :data:`CALIBRATION_XY` pixels each
    way (a scan: ``2M`` rows of ``M <= CALIBRATION_XY`` columns) and :data:`CALIBRATION_FRAMES` frames, or as many
    more as :data:`CALIBRATION_VOXELS` allows for smaller frames (an even number, from an even frame).

    ``bidirectional``: ``shape`` is a ``(T, 2N, N)`` scan, or a part of one's lines ``(T, 2L, N)`` (a strip:
    :mod:`.strips`); the block is one too (whole lines, from an even row, so forward lines stay forward; ``M`` lines
    of a whole scan, at most ``M`` of a part) and its columns sit symmetrically, so that the block of x-reversed
    backward lines holds the same physical columns as the forward lines' block.
    """
    t, y, x = shape
    ny, nx = min(y, CALIBRATION_XY), min(x, CALIBRATION_XY)
    y0 = (y - ny) // 2
    if bidirectional:  # a whole scan: 2M rows from row x - nx, even
        nx -= (x - nx) % 2
        lines = min(y // 2, nx)
        ny, y0 = 2 * lines, 2 * ((y // 2 - lines) // 2)
    nt = min(t - t % 2, max(CALIBRATION_FRAMES, CALIBRATION_VOXELS // max(ny * nx, 1) // 2 * 2))
    t0, x0 = (t - nt) // 2 // 2 * 2, (x - nx) // 2
    return slice(t0, t0 + nt), slice(y0, y0 + ny), slice(x0, x0 + nx)


def choose_smoothing(estimate: np.ndarray, target: np.ndarray,
                     shifts: tuple[np.ndarray, np.ndarray] | None = None, flip: bool | None = None,
                     inputs: np.ndarray | None = None, averaged: bool = False, lines: bool | None = None) -> Smoothing:
    """The smoothing of :data:`SIGMAS_T` x :data:`SIGMAS_XY` under which the model's ``estimate`` predicts the
    independent ``target`` best (mean squared error); none when the field of view moves (consecutive frames of
    ``estimate`` shifted by more than :data:`MAX_STILL_SHIFT`: an estimate from half the frames is then a poor
    guide).

    Parameters
    ----------
    estimate : ndarray (n, Y, X)
        The model's output from part of the recording: the even frames ``0, 2, ...`` of the calibration block
        denoised on their own.
    target : ndarray (n, Y, X)
        What the model was trained to predict from that part, raw, in the same intensity units: the odd
        frames ``1, 3, ...``.
    shifts : (ndarray (n, 2), ndarray (n, 2)), optional
        The measured sub-pixel shifts of the ``estimate`` and ``target`` frames: the estimate is then moved
        into the tissue's frame (minus its shifts) and smoothed there, each candidate is moved to its target
        frame's place before it is compared, and the candidates stop at :data:`MAX_SIGMA_T_ALONG`.
    flip : bool, optional
        Not None: ``estimate`` and ``target`` are a bidirectional scan's interleaved lines, each direction moved
        on its own (:func:`to_tissue`).
    inputs : ndarray (n, Y, X), optional
        What the model saw to make ``estimate`` (the even frames, raw, in the same layout and units): without
        ``shifts``, each candidate is also blended with Gaussians of it (:data:`BLENDS` x :data:`BLEND_SIGMAS`).
    averaged : bool
        Each pixel's average is put back afterwards (:mod:`.averages`): the smoothing is then chosen by the error
        that the output keeps (:func:`calibration_errors`); a blend with the input still by the whole error.
    lines : bool, optional
        ``estimate`` and ``target`` are a bidirectional scan's interleaved lines, whose averages are smoothed
        direction by direction (default: ``flip is not None``).

    Returns
    -------
    Smoothing
        Sigmas in frames of the output (two per frame of ``estimate``) and pixels, with what it gives back.
    """
    n = min(len(estimate), len(target))
    if n < 8:
        return Smoothing(reason=f"calibration needs 8 frames, found {n}")
    lines = flip is not None if lines is None else lines
    # one affine rescaling of both (which changes no ranking) keeps products finite at any intensity scale
    offset = float(np.mean(estimate[:n], dtype=np.float64))
    scale = float(np.std(estimate[:n], dtype=np.float64))
    if not (np.isfinite(scale) and scale > 0):
        return Smoothing(reason="the model's result is flat")

    def rescaled(a: np.ndarray) -> np.ndarray:
        return ((np.asarray(a[:n], np.float64) - offset) / scale).astype(np.float32)

    estimate, target = rescaled(estimate), rescaled(target)
    inputs = None if inputs is None else rescaled(inputs)
    if shifts is None:  # (a scan's lines: on its physical frames, where its directions' x-moves do not cancel)
        physical = estimate if flip is None else PhysicalFrames(estimate, flip)[:]
        shift = float(np.sqrt(np.mean(np.sum(frame_shifts(physical) ** 2, axis=1))))
        if not np.isfinite(shift):
            return Smoothing(reason="the frames of the model's result could not be registered")
        if shift > MAX_STILL_SHIFT:
            return Smoothing(shift_px=shift, reason=f"the field of view moves, {shift:.2f} px between frames 2 apart")
        pad, place = 0, np.zeros((n, 2))  # a scan's lines are still smoothed direction by direction
        estimate = as_planes(estimate, flip)
    else:  # the motion is known: into the tissue's frame, and each candidate to its target frame's place
        pad = canvas_pad(np.concatenate([shifts[0][:n], shifts[1][:n]]))
        estimate, place, shift = to_tissue(estimate, shifts[0][:n], pad, flip), shifts[1][:n], None
    # the input's Gaussians at half rate, as the estimate's frames are two output frames apart
    planes = None if inputs is None or shifts is not None else as_planes(inputs, flip)
    gaussians = {} if planes is None else {g: smooth(planes, g[0] / 2, g[1]) for g in BLEND_SIGMAS}
    if flip is not None:  # (back to the interleaved lines the guesses are compared in, once)
        gaussians = {g: from_tissue(filtered, place, pad, flip) for g, filtered in gaussians.items()}
    candidates = SIGMAS_T if shifts is None else [st for st in SIGMAS_T if st <= MAX_SIGMA_T_ALONG]
    changes = _signal_changes(inputs, target, shifts, flip)

    def cost(st: float, split_px: float = 0.0, fine: bool | None = None) -> float:
        """What a window (of a two-scale smoothing's fine or coarse detail) costs of the signal at full rate beyond
        what the errors below can see (:mod:`.signal_changes`)."""
        whole = changes.cost(st)
        if fine is None:
            return whole
        share = changes.fine_share(split_px)
        return whole * (share if fine else 1.0 - share)

    def back(a: np.ndarray) -> np.ndarray:  # a candidate in its target's place
        return a if shifts is None and flip is None else from_tissue(a, place, pad, flip)

    # the smoothing, by what the output keeps of its error; then how much of the fast changes it removes to give back,
    # by the same error (:mod:`.transients`; not together: docs/benchmarks.md); then a blend, by the whole error
    kept, whole, every, chosen = {}, {}, {}, (0.0, 0.0)  # (0, 0), no smoothing, is the first candidate
    for st in candidates:
        along_t = smooth_t(estimate, st / 2)
        for sxy in SIGMAS_XY:
            every[st, sxy] = candidate = smooth_xy(along_t, sxy)
            kept[st, sxy], whole[st, sxy] = calibration_errors(back(candidate) - target, averaged, lines)
            kept[st, sxy] += cost(st)
            if kept[st, sxy] < kept[chosen]:  # (the first of equals, as min() would pick)
                chosen = (st, sxy)
    (st, sxy), smoothed, w, g = chosen, every[chosen], 0.0, (0.0, 0.0)

    def error(miss: np.ndarray) -> float:
        return calibration_errors(miss, averaged, lines)[0]

    # fine and coarse detail over windows of their own (:mod:`.bands`), where that predicts better; along a motion in
    # the tissue's frame (the target moved there: its noise stays independent), fine windows to MAX_SIGMA_T_SPLIT_ALONG
    split = None
    if flip is None:
        here = target if shifts is None else to_tissue(target, place, pad)
        if shifts is not None:
            for st_ in [st_ for st_ in SIGMAS_T if MAX_SIGMA_T_ALONG < st_ <= MAX_SIGMA_T_SPLIT_ALONG]:
                along_t = smooth_t(estimate, st_ / 2)  # (each window once, as in the loop above)
                every.update({(st_, sxy_): smooth_xy(along_t, sxy_) for sxy_ in SIGMAS_XY})
        plain = kept[chosen] if shifts is None else error(every[chosen] - here) + cost(chosen[0])
        split = choose_split(estimate, here, every, error, plain, *(() if shifts is None else ALONG_SPLIT), cost=cost)
    if split is not None:
        st, sxy = split.sigma_t, split.sigma_xy
        # (the coarse window is one of the candidates: unblurred, it is that window's smoothing of the estimate)
        smoothed = combine(every[st, sxy], every[split.sigma_t_coarse, 0.0], split.split_px)
    del every
    # what to give back of what the smoothing removed, pooled over how many pixels (no smoothing: k stays inf)
    k, px, kept_k = choose_threshold(estimate, smoothed, lambda c: error(c - target), back)
    kept_k += cost(st) if split is None else cost(st, split.split_px, True) + cost(
        split.sigma_t_coarse, split.split_px, False)
    guess = back(keep_fast(estimate, smoothed, k, px))
    miss = guess - target
    best = calibration_errors(miss, averaged, lines)[1]
    blends, before_blend = {}, best
    f_st = st if split is None else split.sigma_t_coarse  # (the window most of each frame's own signal is under)
    for sigmas, filtered in gaussians.items():
        # the error of (1 - w) guess + w filtered is quadratic in w: three means give every w's
        step = filtered - guess
        cross, size = float(np.mean(miss * step, dtype=np.float64)), float(np.mean(step**2, dtype=np.float64))
        blends.update({(b, sigmas): best + 2 * b * cross + b * b * size + changes.cost(f_st, b, sigmas[0])
                       - changes.cost(f_st) for b in BLENDS[1:]})
    if blends:
        (bw, bg), blended = min(blends.items(), key=lambda kv: kv[1])
        if best > 0 and blended > 0 and 10 * np.log10(best / blended) >= BLEND_MIN_GAIN_DB:
            (w, g), best = (bw, bg), blended
    if w == 1.0:  # all the filter: the model's smoothing (a tie) does not reach it; its gain is the filter's own
        st, sxy, k, px, split = 0.0, 0.0, math.inf, 0.0, None
        gain = 10 * np.log10(whole[0.0, 0.0] / best) if best > 0 else 0.0
    else:  # what the smoothing gained by the error it was chosen on, and a blend by the whole error
        gain = 10 * np.log10(kept[0.0, 0.0] / kept_k) if kept_k > 0 else 0.0
        gain += 10 * np.log10(before_blend / best) if best > 0 else 0.0
    said = "error the output keeps" if averaged and w < 1.0 else "prediction error"
    said = ("the signal's changes between frames counted; " if changes.measured else "") + said
    return Smoothing(st, sxy, shift, reason=f"chosen on the recording: {said} {gain:.3f} dB lower",
                     blend=w, blend_sigma=g, keep_k=k, keep_px=px, split_px=0.0 if split is None else split.split_px,
                     sigma_t_coarse=0.0 if split is None else split.sigma_t_coarse)


def _signal_changes(inputs: np.ndarray | None, target: np.ndarray, shifts: tuple[np.ndarray, np.ndarray] | None,
                    flip: bool | None) -> SignalChanges:
    """The signal's changes over time (:mod:`.signal_changes`) in the full-rate calibration block, its even frames
    ``inputs`` and odd frames ``target`` (along a measured motion: in the tissue's frame, where the smoothing works);
    none without ``inputs``. A scan's interleaved lines (``flip`` not None) are measured on its physical frames: both
    directions of a line show the same signal (uncharged, the calibration smoothed a fast indicator's lines 2.3 dB
    too much: docs/benchmarks.md)."""
    if inputs is None:
        return SignalChanges()
    if flip is not None:
        inputs, target = (PhysicalFrames(a, flip)[:] for a in (inputs, target))
    n = min(len(inputs), len(target))
    frames = np.empty((2 * n, *target.shape[1:]), np.float32)
    frames[0::2], frames[1::2] = inputs[:n], target[:n]
    if shifts is None:
        return measure(frames, splits=SPLITS_PX)
    moves = np.empty((2 * n, 2))
    moves[0::2], moves[1::2] = shifts[0][:n], shifts[1][:n]
    pad = canvas_pad(moves)
    # (every frame moved by up to pad px on a canvas padded by its edge rows: up to 2 pad rows of copies each side)
    return measure(to_tissue(frames, moves, pad), margin=2 * pad, interpolated=ALONG_INTERPOLATED,
                   splits=SPLITS_PX)


def calibration_errors(miss: np.ndarray, averaged: bool, lines: bool) -> tuple[float, float]:
    """The mean squared ``miss`` ``(n, Y, X)`` that counts and the whole of it.

    With ``averaged`` (each pixel's average is put back afterwards) what counts is what the output keeps: the error
    less each pixel's mean error over the frames, plus that mean's part finer than a Gaussian of
    :data:`AVERAGED_SIGMA` pixels (else a long window or a blur wins that only helps the still part, which the
    averages replace: docs/benchmarks.md, seventeenth session); otherwise the whole error. ``lines``: ``miss`` is a
    scan's interleaved lines (each direction's rows smoothed on their own).
    """
    whole = float(np.mean(miss**2, dtype=np.float64))
    if not averaged:
        return whole, whole
    mean = miss.mean(axis=0, dtype=np.float64)
    fine = mean - blurred(mean[None], AVERAGED_SIGMA, lines)[0]
    return whole - float(np.mean(mean**2)) + float(np.mean(fine**2)), whole


def iter_smoothing(setting: str | tuple[float, ...], denoiser: Denoiser, stack: Any,
                   run_model: Callable[[np.ndarray], Generator[InferEvent, None, np.ndarray]],
                   shifts: np.ndarray | None = None, layout: str = "frames",
                   averaged: bool = False) -> Generator[InferEvent, None, Smoothing]:
    """The :class:`Smoothing` that ``setting`` (``InferConfig.smoothing``) asks for on ``stack``, yielding progress.

    'auto' runs ``run_model`` (the model, no smoothing, float32 output) on the even frames of
    :func:`calibration_block` and lets :func:`choose_smoothing` pick how the result best predicts the odd frames,
    in the output's ``layout``: 'frames' (the output's frames are the input's), or 'interleaved' (a mirrored-scan
    model's ``(T, 2N, N)`` scan: the odd frames' raw lines are the target). With ``shifts`` ``(T, 2)``, the
    measured sub-pixel motion of the (physical) frames (a slow drift left to the network, or what whole-pixel
    registration left), both the choice and the smoothing follow the motion. ``averaged``: as
    :func:`choose_smoothing`'s. A smoothing in use is announced in an event's message.
    """
    if setting == "off":
        return Smoothing(reason="off")
    t = int(stack.shape[0])
    # An interleaved output's lines are smoothed direction by direction (as two planes, :func:`to_tissue`) along a
    # motion, and where backward lines are stored x-reversed (beside a forward line, a backward one shows the
    # mirror image); otherwise smoothing across its rows averages the two directions' results of a line.
    scan = layout == "interleaved" and (shifts is not None or denoiser.flip_backward)
    flip = denoiser.flip_backward if scan else None
    if setting != "auto":
        st, sxy, *split = setting  # (a two-scale one: and the split's px and the coarse detail's frames)
        smoothing = Smoothing(st, sxy, reason="as given", split_px=split[0] if split else 0.0,
                              sigma_t_coarse=split[1] if split else 0.0)
    elif t < 16:
        return Smoothing(reason=f"too few frames to choose it ({t}, 16 needed)")
    else:
        where = calibration_block(tuple(int(n) for n in stack.shape), bidirectional=layout == "interleaved")
        block = np.asarray(stack[where], np.float32)
        estimate = yield from announced(run_model(np.ascontiguousarray(block[0::2])),
                                        "choosing the output smoothing on a block of the recording")
        along = None if shifts is None else (shifts[where[0]][0::2], shifts[where[0]][1::2])
        smoothing = choose_smoothing(estimate, block[1::2], along, flip, block[0::2], averaged,
                                     lines=layout == "interleaved")
    if smoothing.active:
        along = shifts is not None and smoothing.over_time
        smoothing = dataclasses.replace(smoothing, shifts=np.asarray(shifts, np.float64) if along else None, flip=flip)
    yield InferEvent(done=0, total=1, message=smoothing.describe())
    return smoothing


def held_bytes(setting: str | tuple[float, ...], frame: tuple[int, int], block: int) -> int:
    """The most host memory a :class:`TemporalSmoother` holds for ``setting`` (``InferConfig.smoothing``), blocks of
    ``block`` frames: the block and its kernel's reach (the widest candidate's) on a canvas a few pixels larger (a
    motion's moves), a copy of them, and as much of the input's frames for a blend (not for given sigmas)."""
    given = isinstance(setting, tuple)
    frames_sigma = (setting[0], *setting[3:]) if given else (SIGMAS_T[-1], *(g[0] for g in BLEND_SIGMAS))
    frames = block + 2 * radius(max(frames_sigma)) + EMIT_FRAMES
    split = given and len(setting) == 4 and setting[2] > 0  # (its coarse part, their difference and its blur too)
    copies = 0 if setting == "off" else (5 if split else 2) if given else 4
    return copies * frames * (frame[0] + 16) * (frame[1] + 16) * 4
