"""Giving back part of what the denoising took from each frame, at a cell's scale, as much as Stein's estimate says.

Where a fast indicator's transients last a frame or two and the field of view moves, the network averages part of
each transient away with its neighbours: on the independent simulator's jGCaMP8m at 5 Hz under AR(1) motion, 5
photons, the network's own ROI traces correlate 0.956 with the truth's, the raw input's 0.957 and the best 3D
Gaussian's 0.964 (docs/benchmarks.md, twenty-sixth session). The output ``f + w G (x - f)`` (``x`` the input, ``f``
the output, ``G`` a Gaussian of :data:`GIVE_BACK_PX` pixels over each frame) gives back what was taken at the scale
of a cell and leaves its pixel noise out. How much helps depends on the recording (on a still one at 1 photon,
``w = 0.6`` lost 1.9 dB), so ``w`` is chosen on a central block of the recording (:func:`block`), without ground
truth, by Stein's unbiased risk estimate (SURE):

* the error of ``f + w g`` (``g = G d``, ``d = x - f``) against the clean signal ``s`` is
  ``|f - s|^2 + 2 w <g, f - s> + w^2 |g|^2``, smallest at ``w = -<g, f - s> / |g|^2``;
* ``<g, f - s> = -<G d, d> + <G d, n>`` (``n = x - s`` the noise) and, for Gaussian noise of variance ``v`` at each
  pixel, Stein's lemma turns ``<G d, n>`` into ``sum v (G_xx - (G J)_xx)``: ``G_xx`` each pixel's weight on itself and
  ``J`` the Jacobian of the output in the input (the network and the smoothing after it);
* the trace of ``G J`` comes from one more pass of the block with a small random perturbation ``e b`` (``b`` random
  signs): ``b . G (f(x + e b) - f(x)) / e`` (Hutchinson's estimator), weighted by each pixel's ``v``;
* the noise's variance is not known: each pixel's variance over time of the network's residual ``x - net`` divided by
  ``(1 - 2 j)(1 - 1 / n)`` (``j`` the mean of the network's Jacobian's diagonal, from the same perturbation; ``n``
  frames), smoothed over :data:`NOISE_PX` pixels. Frame differences would hold the motion; the residual does not (its
  mean square over ``1 - 2 j``: 1.01-1.07 times the truth's on the independent simulator, frame differences 1.4-1.8
  under motion; docs/benchmarks.md, twenty-sixth session).

Where each pixel's average is put back afterwards (:mod:`.averages`), only what changes over time counts: ``d`` and the
perturbation's response lose each pixel's mean over the block first. A weight under :data:`MIN_WEIGHT` gives none.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..config import InferEvent, announced
from .frame_means import set_frame_means
from .smoothing import Smoothing, TemporalSmoother
from .temporal_filter import filter_matrix, smooth_xy

__all__ = ["BLOCK_FRAMES", "BLOCK_XY", "GIVE_BACK_PX", "MARGIN_FRAMES", "MAX_JACOBIAN", "MAX_NOISE_CORRELATION",
           "MAX_WEIGHT", "MIN_WEIGHT", "NOISE_PX", "PERTURBATION", "SAID", "GiveBack", "block", "central",
           "choose_weight", "iter_give_back", "neighbour_correlation", "own_weights", "recorded"]

GIVE_BACK_PX = 3.0  # a cell's scale (3 px gave back more of the traces than 6 px: docs/benchmarks.md)
NOISE_PX = 5.0  # the noise's variance map is smoothed over this many pixels (it changes slowly across the frame)
PERTURBATION = 0.05  # the perturbation's size, in robust noise SDs of the input's frame-to-frame differences
MIN_WEIGHT = 0.05  # below this, nothing is given back
MARGIN_FRAMES = 4  # frames either side of the block that the network and the smoothing see but the sums do not (8
# chose the same weights on two recordings, at 20% more work)
BLOCK_FRAMES, BLOCK_XY = 32, 128  # the central block the weight is chosen on, two network passes of it. What the
# estimate misses is mostly the block's own activity against the recording's: 40 frames chose up to 0.16 more than
# the whole recording's estimate (which found the truth's best weight), 24 frames or 96 x 96 pixels up to 0.31 more
# (up to -0.18 dB), and pieces of 8 frames spread over the recording less (docs/benchmarks.md, twenty-eighth session)
MAX_JACOBIAN = 0.4  # a network that passes more of each pixel through leaves no residual to measure the noise by
MAX_WEIGHT = 1.0  # at most all of it
MAX_NOISE_CORRELATION = 0.2  # noise more correlated between neighbouring pixels gets nothing (Stein's estimate takes
# each pixel's noise as independent: on the thunder movie's real noise, 0.35, it chose 1.0 and lost 1.2% of its MSE)
SAID = "give-back: "  # how every description starts (files.STEPS, the docks and benchmarks look for it)


@dataclass(frozen=True)
class GiveBack:
    """``weight`` times a Gaussian of ``sigma_px`` pixels of what the denoising took from each frame, added back
    (0: nothing); ``reason`` says in a few words why."""

    weight: float = 0.0
    reason: str = "off"
    sigma_px: float = GIVE_BACK_PX

    @property
    def active(self) -> bool:
        """Whether the output changes at all."""
        return self.weight > 0

    def apply(self, out: np.ndarray, inputs: np.ndarray) -> np.ndarray:
        """``out + weight * G(inputs - out)`` frame by frame, each frame's mean kept (float32; ``out`` itself when
        inactive)."""
        if not self.active:
            return out
        taken = np.asarray(inputs, np.float32) - out
        means = out.mean(axis=(1, 2), dtype=np.float64)  # (a mirrored Gaussian keeps them, but for float32 rounding)
        return set_frame_means(out + np.float32(self.weight) * smooth_xy(taken, self.sigma_px), means)

    def describe(self) -> str:
        """One line for progress messages and logs."""
        if not self.active:
            return f"{SAID}none ({self.reason})"
        return f"{SAID}{self.weight:.2f} of what was taken, over {self.sigma_px:g} px ({self.reason})"


def own_weights(shape: tuple[int, int], sigma_px: float) -> np.ndarray:
    """Each pixel's weight on itself in :func:`.temporal_filter.smooth_xy` over a frame of ``shape``: the kernel's
    centre, more near the edges, where the mirrored frame adds the pixel again (15% more in all on 48 x 48 pixels
    at 3 px)."""
    y, x = (np.diagonal(filter_matrix(n, sigma_px)) for n in shape)  # (smooth_xy's filter, one axis at a time)
    return np.outer(y, x)


def choose_weight(inputs: np.ndarray, net: np.ndarray, net_b: np.ndarray, out: np.ndarray, out_b: np.ndarray,
                  b: np.ndarray, e: float, averaged: bool = False, sigma_px: float = GIVE_BACK_PX) -> GiveBack:
    """The weight that Stein's estimate says brings ``out + w G(inputs - out)`` closest to the clean signal.

    Parameters
    ----------
    inputs : ndarray (n, Y, X)
        The input (raw, float).
    net, net_b : ndarray (n, Y, X)
        The network's output for ``inputs`` and for ``inputs + e * b`` (before any smoothing): its Jacobian's
        diagonal and so the noise's variance.
    out, out_b : ndarray (n, Y, X)
        The output that the give-back is added to (after the smoothing; ``net`` and ``net_b`` without one), for
        ``inputs`` and ``inputs + e * b``.
    b : ndarray (n, Y, X)
        The perturbation's random signs.
    e : float
        The perturbation's size, in the input's units.
    averaged : bool
        Each pixel's average is put back afterwards (:mod:`.averages`): only the error that changes over time counts.
    sigma_px : float
        The give-back's Gaussian, pixels.

    Returns
    -------
    GiveBack
        The weight (0 where it would be under :data:`MIN_WEIGHT`; where the network passes more than
        :data:`MAX_JACOBIAN` of each input pixel through, whose residual cannot measure the noise; and where the noise
        is correlated between neighbouring pixels beyond :data:`MAX_NOISE_CORRELATION`, :func:`neighbour_correlation`).
    """
    f32 = functools.partial(np.asarray, dtype=np.float32)  # (float32 arrays, float64 sums: a few block-sized copies)
    inputs, net, b = f32(inputs), f32(net), f32(b)
    n = len(inputs)
    j = _sum(b, f32(net_b) - net) / e / b.size  # the mean of the network's Jacobian's diagonal
    if not j < MAX_JACOBIAN:
        return GiveBack(reason=f"the network passes {j:.0%} of each pixel through: its noise cannot be measured")
    residual = inputs - net
    rho = neighbour_correlation(residual)
    if rho > MAX_NOISE_CORRELATION:
        return GiveBack(reason=f"the noise is correlated between neighbouring pixels (+{rho:.2f}): Stein's estimate, "
                        "which takes each pixel's noise as its own, would overrate the give-back")
    # (each pixel's residual less its mean over time: what the network blurred of still detail is no noise)
    spread = np.var(residual, axis=0, dtype=np.float64)
    v = smooth_xy(spread[None], NOISE_PX)[0] / ((1.0 - 2.0 * max(j, 0.0)) * (1.0 - 1.0 / n))  # the noise's variance
    d, response = inputs - f32(out), (f32(out_b) - f32(out)) / np.float32(e)  # ... and J b of the output
    kept = 1.0
    if averaged:  # only what changes over time stays: each pixel's mean taken off (a projection, so Stein still holds)
        d, response, kept = d - d.mean(axis=0), response - response.mean(axis=0), 1.0 - 1.0 / n
    g = smooth_xy(d, sigma_px)
    trace = _sum(v * b, smooth_xy(response, sigma_px))  # sum v (G J)_xx, by Hutchinson's estimator (v in float64:
    # a variance in the square of the input's units, which float32 cannot hold for inputs past ~1e19)
    noise = float(np.sum(v)) * n
    own = float(np.sum(v * own_weights(v.shape, sigma_px))) * n * kept
    cross = -_sum(g, d) + own - trace  # <g, out - s> by Stein
    size = _sum(g, g)
    if not (np.isfinite(cross) and np.isfinite(size)) or size <= 0:
        return GiveBack(reason="nothing was taken")
    w = min(-cross / size, MAX_WEIGHT)
    if w < MIN_WEIGHT:
        return GiveBack(reason=f"chosen on the recording: {max(w, 0.0):.2f} would not help")
    # (the output's own error by the same estimate is ~0 whatever it is: the variance is measured on its residual)
    drop = -(2 * w * cross + w * w * size) / max(noise, 1e-30)
    said = f"chosen on the recording: by Stein's estimate the error falls by {drop:.2%} of the noise's variance"
    return GiveBack(w, reason=said, sigma_px=sigma_px)


def central(shape: tuple[int, ...], frames: int, xy: int) -> tuple[slice, slice, slice]:
    """The central ``frames`` x ``xy`` x ``xy`` of a ``(T, Y, X)`` stack (all of an axis that is shorter)."""
    t, y, x = (int(n) for n in shape[:3])
    ts, ys, xs = (slice((n - m) // 2, (n - m) // 2 + m) for n, m in ((t, min(t, frames)), (y, min(y, xy)),
                                                                      (x, min(x, xy))))
    return ts, ys, xs


def block(shape: tuple[int, ...]) -> tuple[tuple[slice, slice, slice], slice]:
    """The central block of a ``(T, Y, X)`` stack that the weight is chosen on (at most :data:`BLOCK_FRAMES` x
    :data:`BLOCK_XY` x :data:`BLOCK_XY`) with up to :data:`MARGIN_FRAMES` more either side, and where those
    central frames lie in it."""
    frames, ys, xs = central(shape, BLOCK_FRAMES, BLOCK_XY)
    t0, t1 = frames.start, frames.stop
    lo, hi = max(t0 - MARGIN_FRAMES, 0), min(t1 + MARGIN_FRAMES, int(shape[0]))
    return (slice(lo, hi), ys, xs), slice(t0 - lo, t1 - lo)


def recorded(stack: Any, where: tuple[slice, slice, slice]) -> tuple[slice, slice, slice]:
    """``where`` narrowed to the pixels that every frame in it recorded. A registered recording's canvas
    (:class:`.registration.RegisteredStack`: its frames' corners at ``offsets``) fills its margins with copies of each
    frame's edge pixels, whose noise is another pixel's: Stein's estimate, which takes every pixel's noise as its
    own, then overrates what the give-back gains (64 x 64 frames under 1 px jitter: a weight of 0.98 that lost 1.9
    dB). Any other stack: ``where`` itself."""
    offsets, frame = getattr(stack, "offsets", None), getattr(stack, "frame", None)
    if offsets is None or frame is None or getattr(stack, "rows", 1) != 1:
        return where
    corners = np.asarray(offsets[where[0]])
    narrowed = []
    for s, first, last in zip(where[1:], corners.max(axis=0), corners.min(axis=0) + np.asarray(frame), strict=True):
        start = max(s.start, int(first))  # (the latest first recorded pixel to the earliest last: empty at worst)
        narrowed.append(slice(start, max(min(s.stop, int(last)), start)))
    return where[0], *narrowed


def neighbour_correlation(residual: np.ndarray) -> float:
    """The noise's correlation between neighbouring pixels beyond its correlation 2 px apart (the larger of along y and
    along x), from the difference of the mean ``residual`` of the even and the odd frames: the signal's slow part and
    what the network left of it cancel there, the noise stays. Real noise is correlated with the next pixel's (the
    thunder movie: 0.35), what a network left of fast transients is correlated over a cell's width, so at both lags
    (a test scene of one-frame flashes that a 5-frame mean takes away: 0.11; 0.58 at 1 px alone)."""
    half = len(residual) // 2
    d = residual[0 : 2 * half : 2].mean(axis=0, dtype=np.float64)
    d -= residual[1 : 2 * half : 2].mean(axis=0, dtype=np.float64)
    d -= d.mean()
    power = float(np.mean(d * d))
    if not power > 0:
        return 0.0

    def covariance(lag: int, axis: int) -> float:
        a = np.moveaxis(d, axis, 0)
        return float(np.mean(a[lag:] * a[:-lag]))

    return max(covariance(1, axis) - covariance(2, axis) for axis in (0, 1)) / power


def _sum(a: np.ndarray, b: np.ndarray) -> float:
    """The sum of ``a * b`` over every axis, accumulated in float64."""
    return float(np.sum(np.asarray(a, np.float64) * b))


def noise_scale(frames: np.ndarray) -> float:
    """A robust SD of the noise from frame-to-frame differences (motion included: it only sizes the perturbation;
    their plain SD where most differences are 0, 0 for a block that does not change)."""
    diff = np.diff(np.asarray(frames, np.float32), axis=0)
    mad = float(np.median(np.abs(diff - np.median(diff))))
    return 1.4826 * mad / np.sqrt(2.0) if mad > 0 else float(np.std(diff, dtype=np.float64)) / np.sqrt(2.0)


def iter_give_back(setting: str, stack: Any, smoothing: Smoothing,
                   run_model: Callable[[np.ndarray], Generator[InferEvent, None, np.ndarray]],
                   averaged: bool = False, seed: int = 0) -> Generator[InferEvent, None, GiveBack]:
    """The :class:`GiveBack` that ``setting`` (``InferConfig.give_back``) asks for on ``stack``, yielding progress.

    'auto' runs ``run_model`` (the model, no smoothing, float32 output) on the full-rate :func:`block` and on that
    block plus a small random perturbation, applies ``smoothing`` to both, and lets :func:`choose_weight` pick the
    weight on the block's central frames. The chosen give-back is announced in an event's message.
    """
    t = int(stack.shape[0])
    if setting == "off":
        return GiveBack()
    if t < 16:
        return GiveBack(reason=f"too few frames to choose it ({t}, 16 needed)")
    where, inner = block(stack.shape)
    where = recorded(stack, where)
    if min(where[1].stop - where[1].start, where[2].stop - where[2].start) < 16:
        return GiveBack(reason="too little of the block was recorded in all its frames")
    frames = np.ascontiguousarray(stack[where], np.float32)
    e = PERTURBATION * noise_scale(frames)
    if not (np.isfinite(e) and e > 0):
        return GiveBack(reason="the block does not change over time")
    b = np.random.default_rng(seed).choice(np.array([-1.0, 1.0], np.float32), size=frames.shape)
    said = "choosing how much of what was taken to give back, on a block of the recording"
    perturbed = frames + np.float32(e) * b  # (once: the network and a blend in the smoothing see the same)
    net = yield from announced(run_model(frames), said)
    net_b = yield from announced(run_model(perturbed), said)
    out, out_b = net, net_b
    if smoothing.active:  # the smoothing's Jacobian counts too: both smoothed as the output will be (a blend with
        # the input: with the input each pass saw)
        local = dataclasses.replace(smoothing, shifts=None if smoothing.shifts is None else smoothing.shifts[where[0]])
        out, out_b = (np.concatenate([p for _, p in TemporalSmoother(local, len(frames), x).push(0, a.copy())])
                      for a, x in ((net, frames), (net_b, perturbed)))
    # (the margins only give the central frames their neighbours: a block's own edges are not the output's)
    give_back = choose_weight(*(a[inner] for a in (frames, net, net_b, out, out_b, b)), e, averaged)
    yield InferEvent(done=0, total=1, message=give_back.describe())
    return give_back
