"""Advice before temporal training on a recording whose signal changes fast from frame to frame.

Temporal self-supervision pairs the even frames (input) with the odd ones (target). Where a transient lasts a frame
or two (a fast indicator at a low frame rate) the two differ by the transient, and the loss, which scores how well
the odd frames are predicted, rewards blurring it: the model learns to average it with its neighbours, and the loss
cannot tell (it improves). Fine-tuning the temporal generalist for 300 s on such simulated recordings made it worse
than the generalist as it is: -0.2 to -1.3 dB on the package's simulator (5 Hz, decay 0.1 s, still and moving),
-1.2 dB on the independent one (jGCaMP8m at 5 Hz); on slower signals it gained up to +0.4 dB (docs/benchmarks.md,
thirty-second session). The signal's correlation between consecutive frames, measured through the noise
(:func:`~napari_unet_att.inference.signal_changes.measure`: rows a few pixels apart, whose noise is independent) on
the frames as training sees them (registered where they move), told them apart: 0.39-0.72 where fine-tuning lost,
0.81-0.95 where it gained or changed little (-0.08 dB at 0.92). Ten recordings of two simulators: a guide, not a
verdict, and said as advice.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..inference.give_back import central, recorded
from ..inference.signal_changes import FAR_LAG, measure

__all__ = ["ADVICE_FRAMES", "ADVICE_XY", "MIN_FRAME_CORRELATION", "frame_correlation", "temporal_advice"]

MIN_FRAME_CORRELATION = 0.75  # below this, temporal training is advised against (see above)
ADVICE_FRAMES, ADVICE_XY = 200, 128  # the central block it is measured on (its frames steady it: 64-frame blocks
# of the package's four fast movies in docs/benchmarks.md gave 0.29-0.55, their 200 frames 0.39-0.54)
MIN_FRAMES = 16  # fewer frames measure nothing
SIGNIFICANT = 5.0  # how many times its own noise the signal's measured variance must be


def frame_correlation(stack: Any) -> float | None:
    """The signal's correlation between consecutive frames on a central block of a ``(T, Y, X)`` stack (at most
    :data:`ADVICE_FRAMES` x :data:`ADVICE_XY` x :data:`ADVICE_XY`, only pixels that every frame recorded), the noise
    left out; None where too little was recorded or nothing changes."""
    if int(stack.shape[0]) < MIN_FRAMES:
        return None
    where = recorded(stack, central(stack.shape, ADVICE_FRAMES, ADVICE_XY))
    frames = np.asarray(stack[where], np.float32)
    if min(frames.shape[1:]) <= FAR_LAG:  # (a registered stack whose frames share too little)
        return None
    c = measure(frames).covariance
    # the signal's variance must stand out of what the noise alone leaves in it: about the noise's variance (here
    # with the signal's changes: it errs high) over the square root of the products averaged (pure Poisson noise,
    # 96 x 48 x 48: 0.0006 where this asks for 0.02)
    noise = float(np.mean(np.square(np.diff(frames, axis=0)), dtype=np.float64)) / 2
    if len(c) < 2 or not (np.isfinite(c[0]) and c[0] > SIGNIFICANT * noise / np.sqrt(frames.size)):
        return None
    return float(c[1] / c[0])


def temporal_advice(stacks: Sequence[Any], sources: Sequence[str], mode: str) -> list[str]:
    """A note for each stack whose signal changes too fast for temporal pairs (:func:`frame_correlation` under
    :data:`MIN_FRAME_CORRELATION`); none in the other modes, whose pairs are recorded at the same time."""
    if mode != "temporal":
        return []
    notes = []
    for stack, source in zip(stacks, sources, strict=True):
        r = frame_correlation(stack)
        if r is not None and r < MIN_FRAME_CORRELATION:
            notes.append(
                f"{source}: the signal changes fast from frame to frame (correlation {r:.2f} between consecutive "
                f"frames, under {MIN_FRAME_CORRELATION:g}): temporal pairs (even and odd frames) differ by its "
                "transients, and training on them teaches the model to blur them (fine-tuning the generalist on "
                "simulated fast indicators at 5 Hz lost 0.2-1.3 dB against it). Compare with the generalist without "
                "training (the model 'generalist'); on a raw bidirectional scan, train in mirrored-scan mode instead"
            )
    return notes
