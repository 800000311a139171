"""The learning-rate schedule and the budget (steps and / or seconds) a run trains for.

The schedule is a function of the *fraction of the budget spent*, so any budget (steps, time or
both) ends with the smallest steps; docs/performance.md ("Training schedule") has the measurements
behind its shape and constants.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..config import ResolvedTrainConfig

WARMUP = 0.05  # share of the budget over which the learning rate ramps up
# Fine-tuning (--init) scales the preset's learning rate by this: the pretrained start does not need
# smaller steps (measured, docs/performance.md), as the warm-up and the decay to zero already keep the
# first and last steps small.
FINETUNE_LR_FACTOR = 1.0
# A set-up longer than the time budget still leaves this share of it to train (at least one step
# is always made): the schedule needs a positive length.
MIN_TRAIN_FRACTION = 1e-3


def lr_factor(fraction: float, floor: float = 0.0, warmup: float = WARMUP) -> float:
    """Learning-rate multiplier at ``fraction`` of the budget.

    A linear warm-up over the first ``warmup`` (5%), then a cosine decay to ``floor`` (0). The
    targets are as noisy as the inputs, so the last steps' gradient noise sets how far the weights
    end from a good solution; the warm-up keeps Adam's first, badly scaled steps from throwing the
    unnormalised network off. ``floor`` and ``warmup`` exist for the schedule experiments
    (benchmarks/experiments).

    Parameters
    ----------
    fraction : float
        Share of the budget spent; clamped to [0, 1].
    floor : float
        Multiplier at the end of the budget.
    warmup : float
        Share of the budget over which the rate ramps up (0: none).

    Returns
    -------
    float
        The multiplier of the configured learning rate.
    """
    f = min(max(fraction, 0.0), 1.0)
    warm = min(1.0, (f + 0.1 * warmup) / warmup) if warmup > 0 else 1.0  # the first step moves (0.1 x lr)
    return warm * (floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * f)))


@dataclass(frozen=True)
class Budget:
    """The segment of training a run's budget covers, and how much of it is spent.

    Attributes
    ----------
    base_step, base_elapsed : int, float
        Step and training seconds at which the segment began.
    max_steps : int or None
        Step at which the segment ends (None: no step limit).
    max_seconds : float or None
        Training seconds the segment lasts (None: no time limit).
    """

    base_step: int
    base_elapsed: float
    max_steps: int | None
    max_seconds: float | None

    @classmethod
    def plan(cls, rcfg: ResolvedTrainConfig, stored: Sequence[Any] | None, step: int, elapsed_s: float,
             setup_s: float = 0.0) -> Budget:
        """The budget of a run starting at ``step`` / ``elapsed_s``.

        ``stored`` is the ``schedule`` of a resumed run's training state when no new budget was
        given: the run then continues that schedule exactly (the same result as an uninterrupted
        run). Otherwise (a new run, or a resume with a new budget) a new segment starts here; a
        time budget bounds the whole command, so the ``setup_s`` seconds spent before training
        (reading the data, its statistics, building the model) are taken off its training time.
        The schedule then spans the time left, warm-up included.
        """
        if stored is not None:
            return cls(int(stored[0]), float(stored[1]), stored[2], stored[3])
        max_steps = rcfg.steps + step if rcfg.steps is not None else None
        seconds = rcfg.seconds
        if seconds is not None:
            seconds = max(seconds - max(setup_s, 0.0), MIN_TRAIN_FRACTION * seconds)
        return cls(step, elapsed_s, max_steps, seconds)

    def fraction(self, step: int, elapsed_s: float) -> float:
        """Share of the budget spent at ``step`` after ``elapsed_s`` training seconds (at most 1)."""
        fs = (step - self.base_step) / (self.max_steps - self.base_step) if self.max_steps else 0.0
        ft = (elapsed_s - self.base_elapsed) / self.max_seconds if self.max_seconds else 0.0
        return min(1.0, max(fs, ft))

    def as_list(self) -> list[Any]:
        """The form stored in a checkpoint's training state (``schedule``)."""
        return [self.base_step, self.base_elapsed, self.max_steps, self.max_seconds]
