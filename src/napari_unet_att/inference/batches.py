"""Tiles in batches through the network: reading (one batch ahead, in a thread), the forward pass with
test-time flips, and what to try after the accelerator runs out of memory."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType

import numpy as np
import torch

from ..augment import TTA_ORDER, d4_inverse, d4_transform
from ..config import InferConfig
from ..errors import InputError
from ..model.normalization import Normalization
from ..modes import Slices, Triple, View
from ..runtime import device as devmod
from ..runtime import resources as res

#: One unit of work: a tile and the index of the view it is read from.
Task = tuple[Slices, int]


def make_batches(tiles: Sequence[Slices], n_views: int, batch_size: int) -> list[list[Task]]:
    """Every tile of every view, in tile order (the views of a tile together), cut into batches."""
    tasks = [(sl, v) for sl in tiles for v in range(n_views)]
    return [tasks[i : i + batch_size] for i in range(0, len(tasks), batch_size)]


def load_batch(views: Sequence[View], batch: Sequence[Task], norm: Normalization) -> np.ndarray:
    """Read and normalise a batch of tiles into ``(B, 1, t, y, x)`` float32 (runs in the prefetch thread)."""
    tiles = []
    for sl, v in batch:
        tile = norm.apply(views[v].read(sl))
        if not np.isfinite(tile).all():
            raise InputError(f"the stack holds NaN or Inf values (frames {sl[0].start}..{sl[0].stop - 1}); "
                             "replace them before denoising")
        tiles.append(tile)
    return np.ascontiguousarray(np.stack(tiles)[:, None])


class BatchReader:
    """The batches' input arrays in order; with ``prefetch``, the next batch is read in a background
    thread while the network runs on this one. A context manager: leaving it stops the thread."""

    def __init__(self, views: Sequence[View], batches: Sequence[Sequence[Task]], norm: Normalization,
                 prefetch: bool) -> None:
        self.views, self.batches, self.norm = views, batches, norm
        self._pool = (ThreadPoolExecutor(1, thread_name_prefix="unet-att-prefetch")
                      if prefetch and len(batches) > 1 else None)

    def _load(self, k: int) -> np.ndarray:
        return load_batch(self.views, self.batches[k], self.norm)

    def __iter__(self) -> Iterator[np.ndarray]:
        pool = self._pool
        pending: Future | None = pool.submit(self._load, 0) if pool is not None else None
        for k in range(len(self.batches)):
            x = pending.result() if pending is not None else self._load(k)
            if pool is not None and k + 1 < len(self.batches):
                pending = pool.submit(self._load, k + 1)
            yield x

    def __enter__(self) -> BatchReader:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


class OutOfMemory(Exception):
    """A forward pass ran out of accelerator memory (raised from the original error)."""


def forward(net: torch.nn.Module, x: np.ndarray, device: torch.device, amp: bool, tta: int = 1) -> np.ndarray:
    """One batched forward pass, averaged over the first ``tta`` D4 transforms of each tile.

    Inference mode and autocast only around the call, never across a yield.

    Raises
    ------
    OutOfMemory
        The device ran out of memory (:func:`~napari_unet_att.runtime.resources.is_out_of_memory`);
        a smaller configuration may fit (:func:`smaller_config`).
    """
    try:
        return _forward(net, x, device, amp, tta)
    except (RuntimeError, MemoryError) as exc:
        if res.is_out_of_memory(exc):
            raise OutOfMemory() from exc
        raise


def _forward(net: torch.nn.Module, x: np.ndarray, device: torch.device, amp: bool, tta: int) -> np.ndarray:
    xt = devmod.to_device(torch.from_numpy(x), device)
    total = None
    with devmod.inference_mode(), devmod.autocast(device, amp):
        for k in TTA_ORDER[:tta]:
            y = d4_inverse(net(d4_transform(xt, k).contiguous()), k).float()
            total = y if total is None else total.add_(y)
    assert total is not None
    if tuple(total.shape) != tuple(xt.shape):
        raise RuntimeError(f"the network changed the tile shape from {tuple(xt.shape)} to {tuple(total.shape)}")
    return (total / tta).cpu().numpy()


def smaller_config(cfg: InferConfig, tile: Triple) -> InferConfig | None:
    """The next configuration to try after an out-of-memory error with tiles of ``tile``, or None
    when nothing is left.

    Halve the batch first (no effect on the result), then the tile: frames down to 32 (temporal
    context matters most for quality), rows / columns down to 64, then both down to the minimum.
    """
    if cfg.batch_size > 1:
        return dataclasses.replace(cfg, batch_size=cfg.batch_size // 2)
    t, y, x = tile
    xy = max(y, x)
    for cond, kw in (
        (t > 32, {"tile_t": max(32, t // 2)}),
        (xy > 64, {"max_tile_xy": max(64, xy // 2)}),
        (t > 8, {"tile_t": max(8, t // 2)}),
        (xy > 16, {"max_tile_xy": max(16, xy // 2)}),
    ):
        if cond:
            return dataclasses.replace(cfg, **kw)
    return None


__all__ = ["BatchReader", "OutOfMemory", "Task", "forward", "load_batch", "make_batches", "smaller_config"]
