"""The tile plan: how a ``(T, Y, X)`` volume is cut into overlapping tiles and blended back.

- tiles cover the volume exactly; the starts on each axis are spread evenly from 0 to
  ``size - tile``, so the last tile is shifted back, never padded;
- overlaps are blended with a separable raised-cosine window (no falloff on the volume's outer
  borders), so there are no seams; dividing by the weight sums makes any overlap a partition of unity;
- the tile size is chosen to fit a memory budget (:func:`resolve_tiles`).

:func:`build_plan` works all of this out once for a view of the input: a :class:`TilePlan`, which the
denoising loop reads tiles from, weights their outputs with and divides the sums by.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
import torch

from ..config import InferConfig
from ..errors import InputError
from ..model._receptive_field import receptive_field
from ..model.denoiser import Denoiser
from ..modes import Slices, Triple
from ..runtime import resources as res

# ---------------------------------------------------------------------------------------------- tile size


#: Default host-memory budget of one forward pass on CPU (GB). With the ~0.25 GB of the process
#: itself and the I/O buffers, peak RSS stays near 1.3 GB whatever the file size; raise it
#: (``InferConfig.memory_gb``, ``--memory-gb``) for fewer tiles and faster runs on short stacks.
DEFAULT_CPU_BUDGET_GB = 1.0
#: Automatic tiles keep at least this many frames (the shortest training patch of the presets,
#: ``fast``'s 32), narrowing in y / x rather than in t below it.
MIN_CONTEXT_T = 32
#: ... but not narrower than this in y / x.
MIN_TILE_XY = 64
#: The default overlap of neighbouring tiles (voxels, on every split axis), where the network's receptive field is
#: wider: a trained network's output depends on a few tens of voxels either way, not on its whole field (145 for
#: UNet-Att), and the blend window fades each tile's border out. On held-out simulations (400 x 128 x 128 tiled in
#: t, 200 x 256 x 256 tiled in y and x; 1 and 5 photons, still and jittering) overlaps of 16 to 32 and the
#: receptive field gave PSNR within 0.03 dB of each other and of one whole-stack tile, and the receptive field cost
#: 1.4-2x the network's work (docs/performance.md).
DEFAULT_OVERLAP = 32


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
    o = wanted_overlap(cfg, denoiser.arch)
    # Candidate tile widths: whole frames, then halves down to MIN_TILE_XY, each with the
    # fewest tiles along t that fit. The plan that computes the fewest voxels (overlaps
    # included) wins among those keeping MIN_CONTEXT_T frames of temporal context (a network
    # that sees few frames denoises poorly); the whole-frame plan when none does.
    plans: list[tuple[int, int]] = []  # (tile_t, width)
    for xy in _tile_widths((y, x), o, cfg.max_tile_xy):
        longest = _longest_tile(t, (min(y, xy), min(x, xy)), budget, denoiser, cfg.batch_size)
        plans.append((_fewest_tiles_length(t, longest, o), xy))
    enough = [p for p in plans if p[0] >= min(t, MIN_CONTEXT_T)]

    def work(plan: tuple[int, int]) -> int:
        tile, width = plan
        return _computed_voxels((t, y, x), (tile, min(y, width), min(x, width)), o)

    tile, xy = min(enough, key=work) if enough else plans[0]  # min keeps the widest of equals
    return dataclasses.replace(cfg, tile_t=max(8, min(t, tile)), max_tile_xy=xy)


def _tile_widths(frame: tuple[int, int], overlap: int, widest: int) -> list[int]:
    """Candidate tile widths (square tiles, at most ``widest``), widest first: ``widest`` and its halves down to
    :data:`MIN_TILE_XY`, and for each axis the width of the fewest tiles that overlap by ``overlap`` (rounded up
    to 8 voxels, the networks' pooling step): 2 tiles of 144 cover a 256-pixel frame with a 32-pixel overlap,
    where tiles of 128 would need 3 (2.25x the work in y and x)."""
    widths, xy = {widest}, widest
    while xy // 2 >= MIN_TILE_XY:
        xy //= 2
        widths.add(xy)
    for size in frame:
        for n in range(2, size // MIN_TILE_XY + 1):  # (bounded: with a wide overlap the widths stop shrinking)
            w = min(size, 8 * -(-(size + (n - 1) * overlap) // (8 * n)))
            if w < MIN_TILE_XY:
                break
            if w <= widest:
                widths.add(w)
    return sorted(widths, reverse=True)


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
    UNet-Att's receptive field (145 voxels) exceeds a 128-frame tile, so an uncapped overlap
    would leave no step forward at all. Beyond half a tile
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


# ---------------------------------------------------------------------------------------------- blending


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


# ---------------------------------------------------------------------------------------------- the plan


def wanted_overlap(cfg: InferConfig, arch: str) -> int:
    """The overlap asked for: ``cfg.overlap``, by default the network's receptive field up to
    :data:`DEFAULT_OVERLAP`."""
    return cfg.overlap if cfg.overlap is not None else min(receptive_field(arch), DEFAULT_OVERLAP)


@dataclasses.dataclass(frozen=True, eq=False)
class TilePlan:
    """Tiles of one ``(T, Y, X)`` view and their blending, worked out once (:func:`build_plan`).

    Attributes
    ----------
    shape : (int, int, int)
        The view's shape.
    tile : (int, int, int)
        Every tile's shape (at most ``shape``).
    overlap : (int, int, int)
        Overlap used per axis (:func:`effective_overlap`).
    tiles : tuple of (slice, slice, slice)
        :func:`plan_tiles`, in t order.
    sums : tuple of 3 numpy.ndarray
        Per-axis sums of the blending weights (:func:`weight_sums`).
    """

    shape: Triple
    tile: Triple
    overlap: Triple
    tiles: tuple[Slices, ...]
    sums: tuple[np.ndarray, np.ndarray, np.ndarray]

    def window(self, sl: Slices) -> np.ndarray:
        """The blending window of tile ``sl`` (float32, :func:`blend_window`)."""
        return blend_window(self.tile, sl, self.shape, self.overlap)

    def weight_sum(self, start: int, stop: int) -> np.ndarray:
        """The summed weights of frames ``[start, stop)``, float32 ``(stop - start, Y, X)``."""
        w = self.sums
        return (w[0][start:stop, None, None] * w[1][None, :, None] * w[2][None, None, :]).astype(np.float32)


def build_plan(shape: Sequence[int], cfg: InferConfig, arch: str) -> TilePlan:
    """The tile plan of a ``shape`` view with ``cfg``'s tiles (``tile_t`` resolved) for a network ``arch``."""
    shape3 = _as_triple(shape, "shape")
    tile = tile_shape_for(shape3, cfg)
    overlap = effective_overlap(shape3, tile, wanted_overlap(cfg, arch))
    tiles = tuple(plan_tiles(shape3, tile, overlap))
    sums = weight_sums(shape3, tiles, overlap)
    return TilePlan(shape3, tile, overlap, tiles, (sums[0], sums[1], sums[2]))


__all__ = [
    "DEFAULT_CPU_BUDGET_GB",
    "DEFAULT_OVERLAP",
    "MIN_CONTEXT_T",
    "MIN_TILE_XY",
    "TilePlan",
    "axis_starts",
    "axis_weights",
    "blend_window",
    "build_plan",
    "effective_overlap",
    "plan_tiles",
    "resolve_tiles",
    "tile_shape_for",
    "wanted_overlap",
    "weight_sums",
]
