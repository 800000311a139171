"""Weighted sums of tile outputs in a rolling window of frames, flushed as soon as they are final.

Tiles come in t order (:func:`~napari_unet_att.inference.tiles.plan_tiles`), so the frames before the
next pending tile's first frame receive nothing more: their sums are divided by the summed weights and
handed on, and the window slides past them. Memory is O(tile) rather than O(stack).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..modes import Slices
from .tiles import TilePlan

# ---------------------------------------------------------------------------------------------- rolling window


def accumulator_frames(tiles: Sequence[Slices], batch_size: int, n_views: int = 1) -> int:
    """Frames the rolling accumulator must hold for this plan and batch size.

    Frames before the first frame of the next pending tile are final and flushed after each
    batch; the window spans from the oldest unflushed frame to the furthest frame touched.
    """
    tasks = [sl for sl in tiles for _ in range(n_views)]
    base = furthest = need = 0
    for i in range(0, len(tasks), batch_size):
        furthest = max(furthest, *(sl[0].stop for sl in tasks[i : i + batch_size]))
        need = max(need, furthest - base)
        if i + batch_size < len(tasks):
            base = tasks[i + batch_size][0].start
    return need


class RollingAccumulator:
    """Weighted sums ``sum(w * out)`` for a sliding window of frames ``[base, base + capacity)``.

    Attributes
    ----------
    capacity : int
        Frames held (the memory bound: ``capacity * Y * X`` float32).
    base : int
        First frame not yet flushed.
    """

    def __init__(self, capacity: int, frame_shape: tuple[int, int]):
        self.capacity = int(capacity)
        self.base = 0
        self.sums = np.zeros((self.capacity, *frame_shape), dtype=np.float32)

    def add(self, sl: Slices, weighted: np.ndarray) -> None:
        """Add ``w * out`` of one tile."""
        t0, t1 = sl[0].start - self.base, sl[0].stop - self.base
        if t0 < 0 or t1 > self.capacity:  # a planning bug, not a user error
            raise RuntimeError(f"tile frames {sl[0]} outside the accumulator window [{self.base}, "
                               f"{self.base + self.capacity})")
        self.sums[t0:t1, sl[1], sl[2]] += weighted

    def pop(self, stop: int) -> np.ndarray:
        """Return the sums of frames ``[base, stop)`` and slide the window past them."""
        n = stop - self.base
        block = self.sums[:n].copy()
        self.sums[: self.capacity - n] = self.sums[n:]  # numpy buffers overlapping copies
        self.sums[self.capacity - n :] = 0.0
        self.base = stop
        return block


# --------------------------------------------------------------------------- checks


class BlendedSums:
    """One :class:`RollingAccumulator` per view of the input, weighted and normalised by a :class:`TilePlan`."""

    def __init__(self, plan: TilePlan, batch_size: int, n_views: int) -> None:
        self.plan = plan
        capacity = accumulator_frames(plan.tiles, batch_size, n_views)
        self.accs = [RollingAccumulator(capacity, (plan.shape[1], plan.shape[2])) for _ in range(n_views)]

    @property
    def base(self) -> int:
        """First frame not yet flushed."""
        return self.accs[0].base

    def add(self, sl: Slices, view: int, out: np.ndarray) -> None:
        """Add one tile's output of one view, weighted by its blending window."""
        self.accs[view].add(sl, out * self.plan.window(sl))

    def pop(self, stop: int) -> list[np.ndarray]:
        """The blended result of frames ``[base, stop)`` per view (float32), sliding the window past them."""
        denom = self.plan.weight_sum(self.base, stop)
        return [a.pop(stop) / denom for a in self.accs]


__all__ = ["BlendedSums", "RollingAccumulator", "accumulator_frames"]
