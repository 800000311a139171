"""Intensity normalisation that is stored with a model and undone at inference."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..errors import InputError

RELATIVE_SPREAD = 1e-12  # a spread (sd) below this share of the mean's magnitude is rounding: constant data


@dataclass(frozen=True)
class Normalization:
    """``z = (x - offset) / scale`` and back.

    Attributes
    ----------
    offset : float
        Subtracted first (the stack mean, as in DeepCAD-RT / DeepBID).
    scale : float
        Divided next (the stack standard deviation), so networks see unit-variance data.
    """

    offset: float
    scale: float

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Normalise ``x`` to float32."""
        return ((np.asarray(x, dtype=np.float32) - np.float32(self.offset)) / np.float32(self.scale)).astype(
            np.float32, copy=False
        )

    def invert(self, z: np.ndarray) -> np.ndarray:
        """Map normalised values back to the input's intensity units (float32)."""
        return (np.asarray(z, dtype=np.float32) * np.float32(self.scale) + np.float32(self.offset)).astype(
            np.float32, copy=False
        )

    def to_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> Normalization:
        """Rebuild from :meth:`to_dict`; ``ValueError`` unless offset is finite and scale finite and > 0."""
        offset, scale = float(d["offset"]), float(d["scale"])
        if not (np.isfinite(offset) and np.isfinite(scale) and scale > 0):
            raise ValueError(f"invalid normalisation offset={offset!r}, scale={scale!r}: expected finite numbers "
                             "and scale > 0")
        return cls(offset, scale)


def stack_statistics(stack, frames_per_chunk: int = 64) -> tuple[float, float, int]:
    """Mean, standard deviation and voxel count of a stack in one streaming pass.

    Works on numpy arrays, memory maps and dask arrays alike without holding more than
    ``frames_per_chunk`` frames as float64 at once.

    Raises
    ------
    InputError
        If the stack holds NaN or Inf values.
    """
    n = 0
    total = 0.0
    total_sq = 0.0
    shift = None  # shifted sums keep the variance accurate for large offsets
    for t0 in range(0, stack.shape[0], frames_per_chunk):
        chunk = np.asarray(stack[t0 : t0 + frames_per_chunk], dtype=np.float64)
        if not np.isfinite(chunk).all():
            raise InputError(f"the stack holds NaN or Inf values (first in frames {t0}..{t0 + len(chunk) - 1}); "
                             "replace them (e.g. with 0 or the mean) before training or denoising")
        if shift is None:
            shift = float(chunk.mean())
        c = chunk - shift
        total += float(c.sum())
        total_sq += float((c * c).sum())
        n += chunk.size
    if n == 0:
        raise InputError("the stack is empty")
    mean_c = total / n
    var = max(total_sq / n - mean_c * mean_c, 0.0)
    return shift + mean_c, float(np.sqrt(var)), n


def pool_statistics(stats: list[tuple[float, float, int]]) -> Normalization:
    """Combine per-stack ``(mean, std, count)`` from :func:`stack_statistics` into one normalisation.

    Raises
    ------
    InputError
        If the pooled data are constant (nothing to denoise), or beyond float32.
    """
    n = sum(k for _, _, k in stats)
    mean = sum(m * k for m, _, k in stats) / n
    var = sum(k * (sd * sd + (m - mean) ** 2) for m, sd, k in stats) / n
    sd = float(np.sqrt(var))
    # Relative to the data's own level, never to 1: a stack whose values are all ~1e-30 but vary is
    # data (any unit is allowed); only a spread at the rounding error of its mean is none.
    if not sd > RELATIVE_SPREAD * abs(mean):
        raise InputError(f"the data are constant (every value is {mean:g}); there is no signal or noise to learn from")
    f32 = np.finfo(np.float32)
    if not (f32.tiny <= sd and abs(mean) + sd <= f32.max):  # the network computes in float32 (or less)
        raise InputError(f"the data's values (mean {mean:g}, spread {sd:g}) are outside what float32 computation "
                         f"can represent ({f32.tiny:g} to {f32.max:g}); rescale them first")
    return Normalization(float(mean), sd)
