"""Which normalisation a denoising job uses, and the check that a model's stored one fits the input.

A model that normalises by its training data's statistics sees a stack in other units (scaled, or stored as
0..1 floats) far outside anything it learned; a generalist normalises every input by its own statistics.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..config import InferConfig
from ..errors import InputError
from ..model.denoiser import Denoiser
from ..model.normalization import Normalization, stack_statistics
from ..modes import Slices, View

__all__ = ["NORM_MISMATCH", "check_model_norm", "choose_norm", "sample_statistics"]


def choose_norm(stack: Any, denoiser: Denoiser, cfg: InferConfig) -> Normalization:
    """The model's stored statistics, or the input's own (one streaming pass) when asked to."""
    if cfg.normalization == "input" or denoiser.provenance.get("normalization") == "input":
        mean, sd, _ = stack_statistics(stack)
        return Normalization(mean, sd if sd > 0 else 1.0)  # a constant stack: identity scale
    return denoiser.norm


# A model sees its training data at unit spread; input that its stored statistics map this many times
# farther off (or closer together) is outside anything it learned: its output is flat or garbage.
NORM_MISMATCH = 1e5
_SAMPLE_TILES = 8  # the sample that checks it: the first frame of this many tiles spread over the plan


def sample_statistics(view: View, tiles: Sequence[Slices]) -> tuple[float, float]:
    """Mean and standard deviation (float64) of the first frame of a few ``tiles`` spread over ``view`` (only tile
    regions are read, as by the denoising itself)."""
    picks = np.unique(np.linspace(0, len(tiles) - 1, min(len(tiles), _SAMPLE_TILES)).astype(int))
    sample = np.concatenate([view.read((slice(t.start, t.start + 1), y, x)).astype(np.float64).ravel()
                             for t, y, x in (tiles[i] for i in picks)])
    return float(sample.mean()), float(sample.std())


def check_model_norm(view: View, tiles: Sequence[Slices], norm: Normalization) -> None:
    """Refuse input that ``norm`` (a model's stored statistics) maps far outside the model's range.

    The model was trained on its data normalised to mean 0 and spread 1; a stack in other units
    (scaled by 1e30, or stored as 0..1 floats for a model of raw counts) would reach it with a spread
    or offset :data:`NORM_MISMATCH` times off, and the result is a flat image. Ordinary data are
    never changed by this check: it reads a sample of ``view``'s ``tiles`` and passes or raises.
    """
    mean, sd = sample_statistics(view, tiles)
    spread, level = sd / norm.scale, abs(mean - norm.offset) / norm.scale
    if not (spread > NORM_MISMATCH or 0 < spread < 1 / NORM_MISMATCH or level > NORM_MISMATCH):
        return
    raise InputError(
        f"the model's stored normalisation (offset {norm.offset:g}, scale {norm.scale:g}, from its training data) "
        f"maps this stack (mean {mean:g}, spread {sd:g}) to a spread of {spread:.3g} around {level:.3g} instead "
        "of about 1 around 0: its output would be meaningless (flat); normalise with the stack's own statistics "
        "instead (CLI --input-norm, the denoise dock's Normalisation 'input', InferConfig(normalization='input'))"
    )
