"""Tiled, blended, streamed inference.

The reference tools hard-crop overlapping tiles (visible seams), stretch or rescale the
output (absolute intensities lost, brightness jumps), drop trailing frames and load whole
stacks as float32. Here instead:

- tiles cover the stack exactly; the last tile on an axis is shifted back, never padded;
- overlaps are blended with a separable raised-cosine window (no falloff on the volume's
  outer borders), so there are no seams;
- the model's normalisation is undone, so the output is in the input's intensity units;
  integer output is clipped, never wrapped;
- tiles are read one region at a time (``io.TiffArray``, numpy memmap, zarr and dask inputs
  stream; a TIFF input is read with positioned reads, never mapped) and the
  weighted sums live in a rolling window of frames that is flushed to the output as soon as
  no later tile touches it, so memory is O(tile) rather than O(stack);
- a job whose estimated memory exceeds what the machine has is refused before it starts
  (:mod:`~napari_unet_att.runtime.resources`); an accelerator out-of-memory error restarts the job with
  a smaller batch, then smaller tiles, and says so (see :func:`iter_denoise`).

:func:`iter_denoise` is a generator of :class:`~napari_unet_att.config.InferEvent` that
``return``s the result (napari's ``thread_worker`` and the CLI drain the same code);
:func:`denoise` is the blocking wrapper. :func:`iter_denoise_file` / :func:`denoise_file`
stream a TIFF to a TIFF atomically.
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from collections.abc import Callable, Generator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import stackio as tio
from ..augment import TTA_ORDER, d4_inverse, d4_transform
from ..config import InferConfig, InferEvent, run_to_end
from ..errors import InputError, ResourceError
from ..model.denoiser import Denoiser
from ..model.normalization import Normalization, stack_statistics
from ..model.receptive_field import receptive_field
from ..modes import View, split_views
from ..runtime import device as devmod
from ..runtime import resources as res

Slices = tuple[slice, slice, slice]
Triple = tuple[int, int, int]


# --------------------------------------------------------------------------- tile plan


#: Default host-memory budget of one forward pass on CPU (GB). With the ~0.25 GB of the process
#: itself and the I/O buffers, peak RSS stays near 1.3 GB whatever the file size; raise it
#: (``InferConfig.memory_gb``, ``--memory-gb``) for fewer tiles and faster runs on short stacks.
DEFAULT_CPU_BUDGET_GB = 1.0
#: Automatic tiles keep at least this many frames (the shortest training patch of the presets,
#: ``fast``'s 32), narrowing in y / x rather than in t below it.
MIN_CONTEXT_T = 32
#: ... but not narrower than this in y / x.
MIN_TILE_XY = 64


def _as_triple(value: int | Sequence[int], name: str) -> Triple:
    """Broadcast an int to the three axes (t, y, x), or check a 3-sequence."""
    if isinstance(value, (int, np.integer)):
        return (int(value),) * 3
    vals = tuple(int(v) for v in value)
    if len(vals) != 3:
        raise InputError(f"{name} needs one value or three (t, y, x), got {value!r}")
    return vals  # type: ignore[return-value]


def tile_shape_for(shape: Sequence[int], cfg: InferConfig) -> Triple:
    """Tile size for a stack: ``cfg.tile_t`` frames and whole frames up to ``cfg.max_tile_xy``.

    ``cfg.tile_t`` must be set (see :func:`resolve_tiles` for the automatic choice).
    """
    t, y, x = (int(s) for s in shape)
    tile_t = cfg.tile_t if cfg.tile_t is not None else t
    return (min(t, tile_t), min(y, cfg.max_tile_xy), min(x, cfg.max_tile_xy))


def resolve_tiles(shape: Sequence[int], denoiser: Denoiser, cfg: InferConfig, device: torch.device) -> InferConfig:
    """Fill in an automatic ``tile_t`` (and tile width): the plan that fits the memory budget
    and computes the fewest voxels.

    The budget is ``cfg.memory_gb``, by default :data:`DEFAULT_CPU_BUDGET_GB` in host memory
    (so the whole process stays under 1.5 GB for any file size) or, on a GPU,
    ``min(8 GB, half its free memory)``. For each tile width (whole frames, then halves down to
    :data:`MIN_TILE_XY`) the tiles along t are the fewest that fit (:func:`_fewest_tiles_length`):
    fewer, longer tiles waste less work on overlaps than fixed short tiles (the reference tools
    recompute about half of every tile). Narrower tiles fit more frames, so less overlap along
    t, but overlap more in y and x: the width whose plan computes the fewest voxels wins, among
    those with at least :data:`MIN_CONTEXT_T` frames per tile.
    """
    if cfg.tile_t is not None:
        return cfg
    t, y, x = (int(s) for s in shape)
    budget = _budget_bytes(cfg, device)
    o = cfg.overlap if cfg.overlap is not None else receptive_field(denoiser.arch)
    # Candidate tile widths: whole frames, then halves down to MIN_TILE_XY, each with the
    # fewest tiles along t that fit. The plan that computes the fewest voxels (overlaps
    # included) wins among those keeping MIN_CONTEXT_T frames of temporal context (a network
    # that sees few frames denoises poorly); the whole-frame plan when none does.
    plans: list[tuple[int, int]] = []  # (tile_t, width)
    xy = cfg.max_tile_xy
    while True:
        longest = _longest_tile(t, (min(y, xy), min(x, xy)), budget, denoiser, cfg.batch_size)
        plans.append((_fewest_tiles_length(t, longest, o), xy))
        if xy // 2 < MIN_TILE_XY:
            break
        xy //= 2
    enough = [p for p in plans if p[0] >= min(t, MIN_CONTEXT_T)]

    def work(plan: tuple[int, int]) -> int:
        tile, width = plan
        return _computed_voxels((t, y, x), (tile, min(y, width), min(x, width)), o)

    tile, xy = min(enough, key=work) if enough else plans[0]  # min keeps the widest of equals
    return dataclasses.replace(cfg, tile_t=max(8, min(t, tile)), max_tile_xy=xy)


def _fewest_tiles_length(t: int, longest: int, overlap: int) -> int:
    """Tile length along t for the fewest tiles no longer than ``longest`` frames.

    With ``n`` tiles overlapping by ``overlap``, each needs ``ceil((t + (n - 1) * overlap) / n)``
    frames; ``n`` grows while that still shrinks the tiles. When even two overlaps do not fit,
    the tile is the longest that fits (its overlap is then capped at half a tile).
    """
    if longest >= t:
        return t
    if longest <= 2 * overlap:
        return longest
    n = 2
    while -(-(t + (n - 1) * overlap) // n) > longest:
        n += 1
    return -(-(t + (n - 1) * overlap) // n)


def _computed_voxels(shape: Triple, tile: Triple, overlap: int) -> int:
    """Voxels the network computes for a plan: tiles times tile volume (overlaps included)."""
    return len(plan_tiles(shape, tile, overlap)) * math.prod(min(a, b) for a, b in zip(tile, shape, strict=True))


def _longest_tile(t: int, frame: tuple[int, int], budget: float, denoiser: Denoiser, batch: int) -> int:
    """The most frames (up to ``t``, at least 8) of ``frame``-sized tiles one forward pass fits in ``budget``."""

    def fits(frames: int) -> bool:
        need = res.estimate_inference_memory((frames, *frame), denoiser.arch, denoiser.base_channels, batch)
        return need <= budget

    lo, hi = 8, t  # below 8 frames the memory check that follows refuses the job
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid - 1)
    return lo


def _budget_bytes(cfg: InferConfig, device: torch.device) -> float:
    """The memory one forward pass may use: ``cfg.memory_gb`` or the device's default."""
    if cfg.memory_gb is not None:
        return cfg.memory_gb * 1e9
    if device.type == "cpu":
        return DEFAULT_CPU_BUDGET_GB * 1e9
    free = res.available_memory(device)
    return min(8e9, 0.5 * free) if free else 4e9


def effective_overlap(shape: Sequence[int], tile: int | Sequence[int], overlap: int | Sequence[int]) -> Triple:
    """Overlap actually used per axis.

    0 on an axis that fits in one tile (no neighbour to blend with); otherwise the requested
    overlap, capped at half a tile. The cap keeps the step positive and the work bounded:
    UNet-Att's receptive field (131 voxels) exceeds the default 128-frame tile, and an
    uncapped overlap would mean a step of one frame (~100x the compute). Beyond half a tile
    every voxel is covered by three or more tiles for little gain, since a trained net's
    effective field is much narrower than its theoretical one.
    """
    tile3, ov3 = _as_triple(tile, "tile"), _as_triple(overlap, "overlap")
    if any(o < 0 for o in ov3):
        raise InputError(f"overlap must be >= 0, got {overlap!r}")
    eff = (0 if s <= t else min(o, t // 2) for s, t, o in zip(shape, tile3, ov3, strict=True))
    return tuple(eff)  # type: ignore[return-value]


def axis_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Tile starts along one axis, spread evenly from 0 to ``size - tile``.

    The fewest tiles whose neighbours overlap by at least ``overlap``; spreading them evenly
    (rather than shifting only the last one back) keeps every overlap about the same size.
    """
    if size <= tile:
        return [0]
    n = 1 + -(-(size - tile) // (tile - overlap))  # ceil: steps of at most tile - overlap
    return [round(i * (size - tile) / (n - 1)) for i in range(n)]


def plan_tiles(shape: Sequence[int], tile: int | Sequence[int], overlap: int | Sequence[int]) -> list[Slices]:
    """Tiles that cover a ``(T, Y, X)`` volume exactly.

    Parameters
    ----------
    shape : sequence of 3 int
        Volume shape.
    tile : int or sequence of 3 int
        Wanted tile size per axis; clipped to the volume, so every tile has the same shape
        ``min(tile, shape)``.
    overlap : int or sequence of 3 int
        Overlap between neighbouring tiles on each axis that is split (see
        :func:`effective_overlap`); an axis that fits in one tile gets none.

    Returns
    -------
    list of (slice, slice, slice)
        In t order (then y, then x), so frame blocks before the next tile's first frame
        are final and can be flushed.
    """
    shape3 = _as_triple(shape, "shape")
    if any(s < 1 for s in shape3):
        raise InputError(f"cannot tile an empty volume of shape {tuple(shape3)}")
    tile3 = tuple(min(int(t), s) for t, s in zip(_as_triple(tile, "tile"), shape3, strict=True))
    if any(t < 1 for t in tile3):
        raise InputError(f"tile sizes must be >= 1, got {tile!r}")
    ov3 = effective_overlap(shape3, tile3, overlap)
    st, sy, sx = (axis_starts(s, t, o) for s, t, o in zip(shape3, tile3, ov3, strict=True))
    tt, ty, tx = tile3
    return [(slice(t, t + tt), slice(y, y + ty), slice(x, x + tx)) for t in st for y in sy for x in sx]


# --------------------------------------------------------------------------- blending


def _ramp(n: int) -> np.ndarray:
    """Rising raised cosine sampled at voxel centres: strictly inside (0, 1), C1-smooth at both ends.

    ``_ramp(n) + _ramp(n)[::-1] == 1``, so two tiles that overlap by exactly ``n`` form a
    partition of unity; any other overlap is handled by dividing by the weight sum.
    """
    i = np.arange(n, dtype=np.float64) + 0.5
    return 0.5 - 0.5 * np.cos(np.pi * i / n)


def axis_weights(start: int, size: int, full: int, overlap: int) -> np.ndarray:
    """1-D blending weights of a tile ``[start, start + size)`` on an axis of length ``full``."""
    w = np.ones(size, dtype=np.float64)
    n = min(int(overlap), size)
    if n > 0 and start > 0:  # a neighbour before: fade in
        w[:n] *= _ramp(n)
    if n > 0 and start + size < full:  # a neighbour after: fade out
        w[size - n :] *= _ramp(n)[::-1]
    return w


def blend_window(
    tile_shape: Sequence[int], slices: Slices, full_shape: Sequence[int], overlap: int | Sequence[int]
) -> np.ndarray:
    """Separable blending window of one tile, float32 of ``tile_shape``.

    A raised-cosine ramp over ``overlap`` voxels on each interior border (> 0 everywhere, so
    normalising by the weight sum is safe), weight 1 on the volume's outer borders (nothing
    to blend with there).
    """
    ov3 = _as_triple(overlap, "overlap")
    parts = zip(slices, tile_shape, full_shape, ov3, strict=True)
    w = [axis_weights(s.start, int(n), int(f), o) for s, n, f, o in parts]
    return (w[0][:, None, None] * w[1][None, :, None] * w[2][None, None, :]).astype(np.float32)


def weight_sums(shape: Sequence[int], tiles: Sequence[Slices], overlap: int | Sequence[int]) -> list[np.ndarray]:
    """Per-axis sums of the blending weights over a tile grid.

    The plan is a full grid and the windows are separable, so the 3-D weight sum is the
    outer product of these 1-D sums: no second full-size accumulator is needed.
    """
    ov3 = _as_triple(overlap, "overlap")
    sums = [np.zeros(int(s), dtype=np.float64) for s in shape]
    for ax in range(3):
        for sl in {(t[ax].start, t[ax].stop) for t in tiles}:
            sums[ax][sl[0] : sl[1]] += axis_weights(sl[0], sl[1] - sl[0], int(shape[ax]), ov3[ax])
    return sums


# --------------------------------------------------------------------------- rolling accumulator


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


# --------------------------------------------------------------------------- views of the input


# --------------------------------------------------------------------------- checks


def _check_inputs(stack: Any, cfg: InferConfig, out: Any) -> None:
    shape = getattr(stack, "shape", None)
    if shape is None or len(shape) != 3:
        raise InputError(f"expected a (T, Y, X) time-lapse, got an array of shape {shape}; "
                         "pick a channel / squeeze singleton axes first")
    if min(shape) < 1:
        raise InputError(f"the stack is empty (shape {tuple(shape)})")
    if cfg.normalization not in ("model", "input"):
        raise InputError(f"normalization must be 'model' or 'input', got {cfg.normalization!r}")
    if cfg.mirrored_output not in ("interleaved", "merged"):
        raise InputError(f"mirrored_output must be 'interleaved' or 'merged', got {cfg.mirrored_output!r}")
    if out is not None and not hasattr(out, "__setitem__"):
        raise InputError(f"out must support slice assignment (out[t0:t1] = block), got {type(out).__name__}")


def _choose_norm(stack: Any, denoiser: Denoiser, cfg: InferConfig) -> Normalization:
    """The model's stored statistics, or the input's own (one streaming pass) when asked to."""
    if cfg.normalization == "input" or denoiser.provenance.get("normalization") == "input":
        mean, sd, _ = stack_statistics(stack)
        return Normalization(mean, sd if sd > 0 else 1.0)  # a constant stack: identity scale
    return denoiser.norm


def keep_frame_means(out: np.ndarray, inp: np.ndarray) -> np.ndarray:
    """Shift every output frame so that its mean equals the input frame's mean (in place).

    Noise is zero-mean, so the mean of a recorded frame is the clean frame's mean up to its own
    noise, which averages over the whole frame (0.8% of the mean for 128 x 128 pixels at 1 photon,
    far below a pixel's or an ROI's noise). A network's output has no such guarantee: skewed
    low-photon noise, an L1 loss (the median sits below the mean), unseen brightness levels and
    frame-wide brightness changes between the paired frames all shift it, and a shifted baseline F
    corrupts every dF/F computed from the result. Matching the means frame by frame removes the bias
    without touching the spatial structure.
    """
    axes = (1, 2)
    out += (inp.mean(axis=axes, dtype=np.float64) - out.mean(axis=axes, dtype=np.float64)).astype(
        np.float32)[:, None, None]
    return out


def _output_dtype(stack: Any, cfg: InferConfig) -> np.dtype:
    return np.dtype(stack.dtype) if cfg.output_dtype == "input" else np.dtype(np.float32)


# --------------------------------------------------------------------------- the loop


def _load_batch(views: list[View], batch: list[tuple[Slices, int]], norm: Normalization) -> np.ndarray:
    """Read and normalise a batch of tiles into ``(B, 1, t, y, x)`` float32 (runs in the prefetch thread)."""
    tiles = []
    for sl, v in batch:
        tile = norm.apply(views[v].read(sl))
        if not np.isfinite(tile).all():
            raise InputError(f"the stack holds NaN or Inf values (frames {sl[0].start}..{sl[0].stop - 1}); "
                             "replace them before denoising")
        tiles.append(tile)
    return np.ascontiguousarray(np.stack(tiles)[:, None])


def _forward(net: torch.nn.Module, x: np.ndarray, device: torch.device, amp: bool, tta: int = 1) -> np.ndarray:
    """One batched forward pass, averaged over the first ``tta`` D4 transforms of each tile.

    Inference mode and autocast only around the call, never across a yield.
    """
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


class _OutOfMemory(Exception):
    """Internal: a forward pass ran out of accelerator memory (carries the original error)."""


def _smaller_config(cfg: InferConfig, vshape: Triple) -> InferConfig | None:
    """The next configuration to try after an out-of-memory error, or None when nothing is left.

    Halve the batch first (no effect on the result), then the tile: frames down to 32 (temporal
    context matters most for quality), rows / columns down to 64, then both down to the minimum.
    """
    if cfg.batch_size > 1:
        return dataclasses.replace(cfg, batch_size=cfg.batch_size // 2)
    t, y, x = tile_shape_for(vshape, cfg)
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


_EVENT_HAS_MESSAGE = "message" in {f.name for f in dataclasses.fields(InferEvent)}


def _notice(message: str, done: int, total: int) -> InferEvent | None:
    """An event carrying ``message`` where :class:`InferEvent` has the field; else a warning (and None)."""
    if _EVENT_HAS_MESSAGE:
        return InferEvent(done=done, total=total, message=message)  # type: ignore[call-arg]
    warnings.warn(message, RuntimeWarning, stacklevel=3)
    return None


def _check_host_memory(stack: Any, denoiser: Denoiser, cfg: InferConfig, device: torch.device, out: Any) -> None:
    """Refuse before any work when the tiles, accumulators and in-memory output cannot fit in RAM."""
    views, _, out_shape = split_views(stack, denoiser.mode, denoiser.flip_backward, cfg.mirrored_output)
    vshape = views[0].shape
    tile = tile_shape_for(vshape, cfg)
    wanted = cfg.overlap if cfg.overlap is not None else receptive_field(denoiser.arch)
    tiles = plan_tiles(vshape, tile, effective_overlap(vshape, tile, wanted))
    capacity = accumulator_frames(tiles, cfg.batch_size, len(views))
    out_bytes = 0 if out is not None else int(np.prod(out_shape)) * _output_dtype(stack, cfg).itemsize
    est = res.estimate_denoise_memory(vshape, tile, denoiser.arch, denoiser.base_channels, cfg.batch_size,
                                      capacity, len(views), out_bytes)
    if device.type != "cpu":  # the network runs on the accelerator: its out-of-memory errors are retried
        est -= res.estimate_inference_memory(tile, denoiser.arch, denoiser.base_channels, cfg.batch_size)
    hint = "use smaller tiles (tile_t / max_tile_xy, CLI --tile-t) or a smaller batch"
    if out is None:
        hint += ", or stream the result to a file (CLI denoise / iter_denoise_file)"
    res.check_memory(est, f"denoising a {tuple(int(n) for n in stack.shape)} stack with tiles of "
                     f"{tile[0]}x{tile[1]}x{tile[2]} (batch {cfg.batch_size})", "cpu", hint=hint)


def iter_denoise(
    stack: Any, denoiser: Denoiser, cfg: InferConfig | None = None, out: Any = None
) -> Generator[InferEvent, None, Any]:
    """Denoise a ``(T, Y, X)`` stack tile by tile, yielding progress.

    Parameters
    ----------
    stack : array-like (T, Y, X)
        numpy array, ``io.TiffArray`` (what ``io.read_stack`` returns for plain TIFFs),
        ``np.memmap``, zarr or dask array; only tile regions are read.
    denoiser : Denoiser
        Model and metadata. A ``'mirrored'`` model given a ``(T, 2N, N)`` stack denoises the
        forward (even) and backward (odd) rows as two ``(T, N, N)`` stacks (backward rows
        x-reversed first when ``denoiser.flip_backward``, and reversed back), then interleaves
        them, or averages them with ``cfg.mirrored_output == 'merged'``: the output is then
        ``(T, N, N)``, not the input's shape. Any other model or shape: the stack as is.
    cfg : InferConfig, optional
        Tiling, device, batch, output dtype, normalisation source, prefetch.
    out : array-like, optional
        Destination supporting ``out[t0:t1] = block`` (e.g. from ``io.output_stack``); frame
        blocks are written as soon as they are final. Integer destinations are always clipped.

    Yields
    ------
    InferEvent
        After each batch of tiles: tiles done / total, frames per second, ETA. After an
        out-of-memory retry, an event whose ``message`` says what was changed (a
        ``RuntimeWarning`` where :class:`InferEvent` has no ``message`` field); ``total`` then
        counts the new plan's tiles and ``done`` starts again from 0.

    Returns
    -------
    numpy.ndarray or ``out``
        float32 in the input's intensity units (or the input's dtype, clipped, with
        ``cfg.output_dtype == 'input'``); ``out`` itself when given.

    Raises
    ------
    InputError
        Not a (T, Y, X) stack, NaN / Inf values, an ``out`` of the wrong shape.
    ResourceError
        The job cannot fit in memory (checked before any work), or out-of-memory errors
        persist down to the smallest batch and tiles.
    """
    cfg = cfg or InferConfig()
    _check_inputs(stack, cfg, out)
    if cfg.half_rate and denoiser.mode == "temporal":
        return (yield from _iter_half_rate(stack, denoiser, cfg, out))
    views, _, out_shape = split_views(stack, denoiser.mode, denoiser.flip_backward, cfg.mirrored_output)
    device = devmod.configure_process(devmod.resolve_device(cfg.device))
    cfg = resolve_tiles(views[0].shape, denoiser, cfg, device)
    _check_host_memory(stack, denoiser, cfg, device, out)
    norm = _choose_norm(stack, denoiser, cfg)
    dtype = _output_dtype(stack, cfg)
    if out is None:
        target = np.empty(out_shape, dtype=dtype)
    else:
        if tuple(out.shape) != tuple(out_shape):
            raise InputError(f"out has shape {tuple(out.shape)}; this model and input give {tuple(out_shape)}")
        target = out
    while True:
        try:
            return (yield from _run(stack, denoiser, cfg, target, norm, device))
        except _OutOfMemory as exc:
            res.free_accelerator_cache()
            smaller = _smaller_config(cfg, views[0].shape)
            old = tile_shape_for(views[0].shape, cfg)
            if smaller is None:
                raise ResourceError(
                    f"out of memory on {device} even with one {old[0]}x{old[1]}x{old[2]} tile per pass; "
                    "use the CPU (device 'cpu') or free memory used by other programs"
                ) from exc.__cause__
            new = tile_shape_for(views[0].shape, smaller)
            msg = (f"out of memory on {device} with batch {cfg.batch_size} of {old[0]}x{old[1]}x{old[2]} tiles; "
                   f"retrying with batch {smaller.batch_size} of {new[0]}x{new[1]}x{new[2]} tiles")
            cfg = smaller
            vshape = views[0].shape
            total = len(plan_tiles(vshape, new, 0)) * len(views)  # a lower bound is enough for the notice
            event = _notice(msg, 0, total)
            if event is not None:
                yield event


class _EveryOther:
    """Frames ``parity, parity + 2, ...`` of a stack, read lazily (contiguous raw reads, then every other)."""

    def __init__(self, stack: Any, parity: int) -> None:
        self.stack, self.parity = stack, int(parity)
        t = int(stack.shape[0])
        self.shape = ((t - self.parity + 1) // 2, *(int(n) for n in stack.shape[1:]))
        self.dtype = np.dtype(stack.dtype)
        self.ndim = 3

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        t, rest = key[0], key[1:]
        start, stop, step = t.indices(self.shape[0]) if isinstance(t, slice) else (0, 0, 0)
        if step != 1:  # the engine reads frame ranges only
            raise TypeError(f"index time with a contiguous slice, got {t!r}")
        first = 2 * start + self.parity
        last = first + max(2 * (stop - start) - 1, 0)  # an empty range reads nothing
        return np.asarray(self.stack[(slice(first, last), *rest)])[::2]


def _iter_half_rate(stack: Any, denoiser: Denoiser, cfg: InferConfig, out: Any) -> Generator[InferEvent, None, Any]:
    """Temporal models: the mean of the full-rate result and of even and odd frames denoised apart.

    A temporal model is trained on frames two apart (even -> odd), so the full-rate stack shows it
    signals that change half as fast as in training; the even and odd frames on their own are what it
    was trained on but hold half the photons. Their mean beats either (docs/benchmarks.md), at twice
    the work; the result is assembled in memory.
    """
    t = int(stack.shape[0])
    if t < 6:
        raise InputError(f"the half-rate ensemble needs at least 6 frames (3 per half), found {t}; turn it off")
    res.check_memory(2 * t * int(np.prod(stack.shape[1:])) * 4, f"the half-rate ensemble of a {tuple(stack.shape)} "
                     "stack (two float32 copies in memory)", "cpu", hint="turn the half-rate ensemble off")
    sub = dataclasses.replace(cfg, half_rate=False, output_dtype="float32")
    shares = ((0.5, 0.0), (0.25, 0.5), (0.25, 0.75))  # (share of the work, progress before the pass)
    units = 1000
    results = []
    for (share, before), part in zip(shares, (stack, _EveryOther(stack, 0), _EveryOther(stack, 1)), strict=True):
        gen = iter_denoise(part, denoiser, sub)
        while True:
            try:
                ev = next(gen)
            except StopIteration as stop:
                results.append(stop.value)
                break
            yield dataclasses.replace(ev, done=round(units * (before + share * ev.done / max(ev.total, 1))),
                                      total=units)
    full = results[0]
    full[0::2] += results[1]
    full[1::2] += results[2]
    full *= 0.5
    if cfg.output_dtype == "input":
        full = tio.to_output_dtype(full, np.dtype(stack.dtype))
    if out is None:
        return full
    if tuple(out.shape) != tuple(full.shape):
        raise InputError(f"out has shape {tuple(out.shape)}; this model and input give {tuple(full.shape)}")
    out_dtype = np.dtype(getattr(out, "dtype", full.dtype))
    for t0 in range(0, t, 64):
        block = full[t0 : t0 + 64]
        out[t0 : t0 + 64] = tio.to_output_dtype(block, out_dtype) if out_dtype.kind in "iub" else block
    return out


def _run(
    stack: Any, denoiser: Denoiser, cfg: InferConfig, target: Any, norm: Normalization, device: torch.device
) -> Generator[InferEvent, None, Any]:
    """One attempt of :func:`iter_denoise` with a fixed tile plan (raises :class:`_OutOfMemory`)."""
    views, combine, out_shape = split_views(stack, denoiser.mode, denoiser.flip_backward, cfg.mirrored_output)
    vshape = views[0].shape
    tile = tile_shape_for(vshape, cfg)
    wanted = cfg.overlap if cfg.overlap is not None else receptive_field(denoiser.arch)
    overlap = effective_overlap(vshape, tile, wanted)
    tiles = plan_tiles(vshape, tile, overlap)
    wsum = weight_sums(vshape, tiles, overlap)
    target_dtype = np.dtype(getattr(target, "dtype", _output_dtype(stack, cfg)))
    src_dtype = np.dtype(stack.dtype)

    tasks = [(sl, v) for sl in tiles for v in range(len(views))]
    batches = [tasks[i : i + cfg.batch_size] for i in range(0, len(tasks), cfg.batch_size)]
    capacity = accumulator_frames(tiles, cfg.batch_size, len(views))
    accs = [RollingAccumulator(capacity, vshape[1:]) for _ in views]

    def flush(stop: int) -> None:
        start = accs[0].base
        if stop <= start:
            return
        denom = (wsum[0][start:stop, None, None] * wsum[1][None, :, None] * wsum[2][None, None, :]).astype(np.float32)
        blocks = []
        for v, a in zip(views, accs, strict=True):
            z = a.pop(stop) / denom
            if cfg.keep_mean:
                z = keep_frame_means(z, norm.apply(v.read((slice(start, stop), slice(0, vshape[1]),
                                                           slice(0, vshape[2])))))
            blocks.append(v.restore(norm.invert(z)))
        block = combine(blocks)
        if cfg.output_dtype == "input":
            block = tio.to_output_dtype(block, src_dtype)
        if target_dtype.kind in "iub":  # never let a float block wrap around in an integer destination
            block = tio.to_output_dtype(block, target_dtype)
        target[start:stop] = block

    net = denoiser.net.to(device)  # in place: the model stays on the device for the next call
    was_training = net.training
    net.eval()  # attention-gate BatchNorm must use its running statistics
    pool = ThreadPoolExecutor(1, thread_name_prefix="unet-att-prefetch") if cfg.prefetch and len(batches) > 1 else None
    t_start, done = time.perf_counter(), 0
    with devmod.reuse_freed_memory(device):
        try:
            pending: Future | None = pool.submit(_load_batch, views, batches[0], norm) if pool else None
            for k, batch in enumerate(batches):
                x = pending.result() if pending is not None else _load_batch(views, batch, norm)
                if pool is not None and k + 1 < len(batches):
                    pending = pool.submit(_load_batch, views, batches[k + 1], norm)
                try:
                    y = _forward(net, x, device, cfg.amp, cfg.tta)
                except (RuntimeError, MemoryError) as exc:
                    if res.is_out_of_memory(exc):
                        raise _OutOfMemory() from exc
                    raise
                for (sl, v), y_tile in zip(batch, y[:, 0], strict=True):
                    accs[v].add(sl, y_tile * blend_window(y_tile.shape, sl, vshape, overlap))
                flush(batches[k + 1][0][0][0].start if k + 1 < len(batches) else vshape[0])
                done += len(batch)
                elapsed = max(time.perf_counter() - t_start, 1e-9)
                yield InferEvent(
                    done=done,
                    total=len(tasks),
                    frames_per_s=done / len(tasks) * out_shape[0] / elapsed,
                    eta_s=elapsed * (len(tasks) - done) / done,
                )
        finally:  # also runs when the consumer closes the generator (cancel)
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
            net.train(was_training)
    return target


def denoise(
    stack: Any,
    denoiser: Denoiser,
    cfg: InferConfig | None = None,
    out: Any = None,
    progress: Callable[[InferEvent], Any] | None = None,
) -> Any:
    """Blocking :func:`iter_denoise`; ``progress`` (optional) is called with every event."""
    return run_to_end(iter_denoise(stack, denoiser, cfg, out), progress)


# --------------------------------------------------------------------------- files


def check_not_input(in_path: str | Path, out_path: str | Path) -> None:
    """Refuse an output path that is the input file itself (it would be replaced by the result)."""
    from ..stackio.outputs import same_file

    if same_file(Path(in_path), Path(out_path)):  # the same path, a link to it, or a hard link
        raise InputError(f"the output {out_path} would overwrite the input {in_path}; choose another output path")


def iter_denoise_file(
    in_path: str | Path,
    out_path: str | Path,
    denoiser: Denoiser,
    cfg: InferConfig | None = None,
    channel: int | None = None,
    axes: str | None = None,
) -> Generator[InferEvent, None, Path]:
    """Stream a TIFF through the model into another TIFF, atomically.

    The input is read lazily (positioned reads of each tile), finished frames are written to
    ``out_path`` as they complete and dropped from the process's memory (``io.output_stack``),
    so peak memory does not grow with the file; the file only appears once everything
    succeeded: an error or closing this generator leaves no (partial) output. Returns ``out_path``.
    ``channel`` and ``axes`` are :func:`~napari_unet_att.stackio.read_stack`'s.
    """
    check_not_input(in_path, out_path)
    cfg = cfg or InferConfig()
    stack = tio.read_stack(in_path, channel=channel, lazy=True, axes=axes)
    _check_inputs(stack, cfg, None)
    _, _, out_shape = split_views(stack, denoiser.mode, denoiser.flip_backward, cfg.mirrored_output)
    dtype = _output_dtype(stack, cfg)
    meta = {"denoiser": denoiser.describe(), "source": str(in_path)}
    with tio.output_stack(out_path, out_shape, dtype, metadata=meta) as out:
        yield from iter_denoise(stack, denoiser, cfg, out=out)
    return Path(out_path)


def denoise_file(
    in_path: str | Path,
    out_path: str | Path,
    denoiser: Denoiser,
    cfg: InferConfig | None = None,
    channel: int | None = None,
    progress: Callable[[InferEvent], Any] | None = None,
    axes: str | None = None,
) -> Path:
    """Blocking :func:`iter_denoise_file`."""
    return run_to_end(iter_denoise_file(in_path, out_path, denoiser, cfg, channel, axes), progress)
