"""Self-supervised training patches, sampled straight from (possibly lazy) stacks.

The pair geometry of each mode (which frames / rows are input and target) is :mod:`napari_unet_att.modes`;
the D4 augmentation is :mod:`napari_unet_att.augment`. This module decides *where* patches come from.

Train / validation split
------------------------
The last ``val_fraction`` of each stack's frames (enlarged to one patch if that is less) is validation; no
patch crosses the boundary. When a stack is too short to hold one training patch *and* one validation patch
in time, a fixed random ``val_fraction`` of its patch *positions* is held out instead. Those positions
overlap training patches in voxels, so the validation loss is then optimistic; the sampler says so in
:attr:`PatchSampler.notices`. The held-out set depends only on the stack shape, mode and patch size (not on
the seed), so separate train and validation samplers always agree.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from ..augment import d4_transform
from ..config import check_mode
from ..errors import CheckpointError, InputError
from ..model.normalization import Normalization
from ..modes import check_stack_for_mode, extract_pair, raw_frames_per_patch

SPLITS: tuple[str, ...] = ("train", "val")

# Fallback split: grids up to this many positions are enumerated (exact held-out count), larger ones use a hash.
_SMALL_GRID = 1 << 18
_SPLIT_SALT = 0x5EED_5B117  # fixed: train and val samplers must hold out the same positions
_VAL_SALT = 0x7A11_DA7E  # stream of the fixed validation positions (mixed with the sampler seed)
_MASK64 = (1 << 64) - 1


# ---------------------------------------------------------------------------------------------- position grids


@dataclass(frozen=True)
class _Axis:
    """Start positions ``start + step * i`` for ``i`` in ``range(count)``."""

    start: int
    count: int
    step: int

    def value(self, i: int) -> int:
        return self.start + self.step * int(i)


def _time_axis(lo: int, hi: int, raw_frames: int, step: int) -> _Axis:
    """Patch starts whose ``raw_frames`` frames all lie in ``[lo, hi)``."""
    last = hi - raw_frames
    return _Axis(lo, (last - lo) // step + 1 if last >= lo else 0, step)


def _splitmix64(v: int) -> int:
    z = (v + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def _hash_unit(flat: int) -> float:
    return (_splitmix64(flat ^ _SPLIT_SALT) >> 11) / float(1 << 53)


@dataclass
class _Plan:
    """Where patches of one stack may start, per split."""

    shape: tuple[int, int, int]
    t_all: _Axis
    t_train: _Axis
    t_val: _Axis
    y: _Axis
    x: _Axis
    boundary: int | None  # first validation raw frame (time split) or None
    fallback: bool
    train_idx: np.ndarray | None = None  # fallback on small grids: flat position indices
    val_idx: np.ndarray | None = None
    hash_fraction: float = 0.0  # fallback on large grids: held out iff hash(flat) < hash_fraction

    def n_positions(self, split: str) -> float:
        n_all = self.t_all.count * self.y.count * self.x.count
        if not self.fallback:
            ax = self.t_train if split == "train" else self.t_val
            return float(ax.count * self.y.count * self.x.count)
        if self.val_idx is not None:
            return float(len(self.train_idx if split == "train" else self.val_idx))
        f = self.hash_fraction
        return n_all * ((1.0 - f) if split == "train" else f)

    def draw(self, split: str, rng: np.random.Generator) -> tuple[int, int, int]:
        """A uniform random raw position ``(t0, y0, x0)`` of ``split``."""
        if not self.fallback:
            ax = self.t_train if split == "train" else self.t_val
            return ax.value(rng.integers(ax.count)), self.y.value(rng.integers(self.y.count)), self.x.value(
                rng.integers(self.x.count)
            )
        if self.val_idx is not None:
            idx = self.train_idx if split == "train" else self.val_idx
            flat = int(idx[rng.integers(len(idx))])
        else:
            n_all = self.t_all.count * self.y.count * self.x.count
            while True:  # rejection: expected < 2 draws for train, 1 / fraction for val
                flat = int(rng.integers(n_all))
                if (_hash_unit(flat) < self.hash_fraction) == (split == "val"):
                    break
        it, rem = divmod(flat, self.y.count * self.x.count)
        iy, ix = divmod(rem, self.x.count)
        return self.t_all.value(it), self.y.value(iy), self.x.value(ix)

    def is_val_flat(self, flat: int) -> bool:
        """Fallback only: whether the flat position index is held out."""
        if self.val_idx is not None:
            return bool(np.isin(flat, self.val_idx))
        return _hash_unit(flat) < self.hash_fraction

    def flat_index(self, t0: int, y0: int, x0: int) -> int:
        it = (t0 - self.t_all.start) // self.t_all.step
        iy = (y0 - self.y.start) // self.y.step
        ix = (x0 - self.x.start) // self.x.step
        return (it * self.y.count + iy) * self.x.count + ix


def _plan_stack(shape: tuple[int, int, int], mode: str, patch_t: int, patch_xy: int, val_fraction: float) -> _Plan:
    t, y, x = shape
    p = patch_xy
    raw = raw_frames_per_patch(mode, patch_t)
    tstep = 2 if mode == "rowsplit" else 1
    t_eff = t - t % 2 if mode == "rowsplit" else t  # rowsplit ignores an unpaired last frame
    y_ax = _Axis(0, (y - (2 * p if mode == "mirrored" else p)) // (2 if mode != "temporal" else 1) + 1,
                 2 if mode != "temporal" else 1)
    x_ax = _Axis(0, x - p + 1, 1)
    t_all = _time_axis(0, t_eff, raw, tstep)
    empty = _Axis(0, 0, tstep)
    if val_fraction <= 0:
        return _Plan(shape, t_all, t_all, empty, y_ax, x_ax, None, False)
    n_val = math.ceil(val_fraction * t_eff - 1e-9)
    n_val += n_val % tstep  # whole frame pairs in rowsplit
    n_val = max(n_val, raw)  # at least one validation patch
    boundary = t_eff - n_val
    if boundary >= raw:
        return _Plan(shape, t_all, _time_axis(0, boundary, raw, tstep), _time_axis(boundary, t_eff, raw, tstep),
                     y_ax, x_ax, boundary, False)
    return _fallback_plan(shape, t_all, y_ax, x_ax, val_fraction)


def _fallback_plan(shape, t_all: _Axis, y_ax: _Axis, x_ax: _Axis, val_fraction: float) -> _Plan:
    n_all = t_all.count * y_ax.count * x_ax.count
    plan = _Plan(shape, t_all, t_all, t_all, y_ax, x_ax, None, True)
    if n_all > _SMALL_GRID:
        plan.hash_fraction = max(val_fraction, 64.0 / n_all)  # >= 64 expected held-out positions
        return plan
    perm = np.random.default_rng(_SPLIT_SALT).permutation(n_all)
    if n_all == 1:  # a single position cannot be split: validation repeats the training patch
        plan.train_idx = plan.val_idx = perm
        return plan
    n_val = min(max(1, round(val_fraction * n_all)), n_all - 1)
    plan.val_idx, plan.train_idx = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    return plan


# ---------------------------------------------------------------------------------------------- sampler


class Position(NamedTuple):
    """Where a patch came from and what was done to it (raw coordinates, see the module docstring)."""

    stack: int
    t0: int
    y0: int
    x0: int
    swapped: bool = False
    k: int = 0  # D4 element applied to input and target


class PatchSampler:
    """Random self-supervised patch pairs from one or several stacks.

    Parameters
    ----------
    stacks : array-like (T, Y, X) or sequence of them
        numpy arrays, memory maps, zarr or dask arrays; only patch regions are ever read.
    norms : Normalization or sequence of Normalization
        One per stack (or one for all); patches are normalised with their stack's.
    mode : {'temporal', 'mirrored', 'rowsplit'}
        How a pair is formed (module docstring).
    patch_t, patch_xy : int
        Patch ``(t, p, p)`` in network-input voxels.
    split : {'train', 'val'}
        Which part of each stack :meth:`sample` draws from (the split is described in the module docstring).
    val_fraction : float
        Last fraction of frames held out, in ``[0, 0.5)``; 0 means no validation data.
    swap, augment : bool
        Train only: swap input and target with p = 0.5; apply one of 8 D4 transforms of the (y, x) plane.
    flip_backward : bool
        ``mirrored`` only (ignored otherwise): backward lines are stored x-mirrored.
    seed : int
        Seed of the numpy Generator; the stream is reproducible and resumable (:meth:`state`).
    targets : sequence of array-like, optional
        Clean twins of ``stacks`` (same shape and layout, e.g. a simulator's ground truth): the target
        patch is then read from the twin at the same place, so the pair is (noisy input, clean target).
        The minimiser of the MSE is the same as with the noisy target (noise is zero-mean and independent
        of the input), but the gradient carries no target noise, so pretraining on simulations converges
        several times faster. Normalised with the noisy stack's statistics.
    target_view : {'pair', 'same'}
        With ``targets``: ``'pair'`` reads the clean twin of the *target* view (the self-supervised task,
        with less noise); ``'same'`` reads the clean twin of the *input* view itself (plain supervised
        denoising: the network may use every frame and row it sees, the current one included, which
        no self-supervised pair allows).

    Attributes
    ----------
    notices : list of str
        Things the user should be told (e.g. a stack too short for a validation split in time).
    last_positions : list of Position
        Where the patches of the last :meth:`sample` call came from.
    """

    def __init__(
        self,
        stacks: Any,
        norms: Normalization | Sequence[Normalization],
        mode: str,
        patch_t: int,
        patch_xy: int,
        split: str = "train",
        val_fraction: float = 0.1,
        swap: bool = True,
        augment: bool = True,
        flip_backward: bool = False,
        seed: int = 0,
        targets: Sequence[Any] | None = None,
        target_view: str = "pair",
    ) -> None:
        check_mode(mode)
        if target_view not in ("pair", "same"):
            raise InputError(f"target_view must be 'pair' or 'same', got {target_view!r}")
        if split not in SPLITS:
            raise InputError(f"split must be one of {SPLITS}, got {split!r}")
        if not 0.0 <= val_fraction < 0.5:
            raise InputError(f"val_fraction must be within [0, 0.5), got {val_fraction}")
        self.stacks = [stacks] if hasattr(stacks, "shape") else list(stacks)
        if not self.stacks:
            raise InputError("no stacks given to sample training patches from")
        self.norms = [norms] * len(self.stacks) if isinstance(norms, Normalization) else list(norms)
        if len(self.norms) != len(self.stacks):
            raise InputError(f"got {len(self.norms)} normalisations for {len(self.stacks)} stacks; give one per stack")
        self.targets = None if targets is None else list(targets)
        if self.targets is not None and [tuple(t.shape) for t in self.targets] != [tuple(s.shape) for s in self.stacks]:
            raise InputError("clean targets must match the noisy stacks one to one, with the same shapes")
        self.target_view = target_view
        self.mode, self.patch_t, self.patch_xy = mode, int(patch_t), int(patch_xy)
        self.split, self.val_fraction, self.seed = split, float(val_fraction), int(seed)
        self.swap, self.augment = bool(swap), bool(augment)
        self.flip_backward = bool(flip_backward) and mode == "mirrored"
        self.notices: list[str] = []
        self.plans = [self._plan(i, s) for i, s in enumerate(self.stacks)]
        self._weights = {sp: self._stack_weights(sp) for sp in SPLITS}
        if self._weights[split] is None:
            raise InputError("no validation data: val_fraction is 0; set val_fraction > 0 to validate")
        self._rng = np.random.default_rng(self.seed)
        self.last_positions: list[Position] = []

    # -- setup

    def _plan(self, i: int, stack: Any) -> _Plan:
        shape = tuple(int(s) for s in stack.shape)
        try:
            check_stack_for_mode(shape, self.mode, self.patch_t, self.patch_xy)
        except InputError as e:
            raise InputError(f"stack {i}: {e}" if len(self.stacks) > 1 else str(e)) from None
        plan = _plan_stack(shape, self.mode, self.patch_t, self.patch_xy, self.val_fraction)  # type: ignore[arg-type]
        if plan.fallback:
            n_all = plan.t_all.count * plan.y.count * plan.x.count
            extra = " (it has a single patch position, so validation repeats that training patch)" if n_all == 1 else ""
            self.notices.append(
                f"stack {i} ({shape[0]} frames) is too short to hold out its last {self.val_fraction:.0%} of frames "
                f"for validation with patch_t={self.patch_t}; validation uses a fixed random "
                f"{self.val_fraction:.0%} of patch positions instead, which overlap training patches, so the "
                f"validation loss is optimistic{extra}"
            )
        return plan

    def _stack_weights(self, split: str) -> np.ndarray | None:
        """Cumulative probability of each stack, proportional to its number of positions (None: no positions)."""
        counts = np.array([p.n_positions(split) for p in self.plans], dtype=np.float64)
        if counts.sum() <= 0:
            return None
        return np.cumsum(counts / counts.sum())

    def n_positions(self, split: str | None = None) -> float:
        """Number of valid patch positions in ``split`` (default: this sampler's), all stacks together."""
        return float(sum(p.n_positions(split or self.split) for p in self.plans))

    @property
    def boundaries(self) -> list[int | None]:
        """First validation raw frame of each stack (None: no time split, see :attr:`notices`)."""
        return [p.boundary for p in self.plans]

    # -- drawing

    def _draw(self, split: str, rng: np.random.Generator, train_aug: bool) -> Position:
        cum = self._weights[split]
        if cum is None:
            raise InputError("no validation data: val_fraction is 0; set val_fraction > 0 to validate")
        i = min(int(np.searchsorted(cum, rng.random(), side="right")), len(cum) - 1)
        t0, y0, x0 = self.plans[i].draw(split, rng)
        swapped = bool(train_aug and self.swap and rng.random() < 0.5)
        k = int(rng.integers(8)) if train_aug and self.augment else 0
        return Position(i, t0, y0, x0, swapped, k)

    def pair_at(self, pos: Position) -> tuple[np.ndarray, np.ndarray]:
        """Normalised float32 ``(t, p, p)`` input and target for one position (swap and D4 applied)."""
        where = (self.mode, pos.t0, pos.y0, pos.x0, self.patch_t, self.patch_xy, self.flip_backward)
        inp, tgt = extract_pair(self.stacks[pos.stack], *where)
        if self.targets is not None:  # the same views of the clean twin replace the noisy targets
            clean_inp, clean_tgt = extract_pair(self.targets[pos.stack], *where)
            if pos.swapped:
                inp, clean_inp, clean_tgt = tgt, clean_tgt, clean_inp
            # 'same': supervised, the clean version of what the network sees
            tgt = clean_inp if self.target_view == "same" else clean_tgt
        elif pos.swapped:
            inp, tgt = tgt, inp
        norm = self.norms[pos.stack]
        inp, tgt = norm.apply(inp), norm.apply(tgt)
        return d4_transform(inp, pos.k), d4_transform(tgt, pos.k)

    def _batch(self, positions: Sequence[Position]) -> tuple[np.ndarray, np.ndarray]:
        shape = (len(positions), 1, self.patch_t, self.patch_xy, self.patch_xy)
        inp, tgt = np.empty(shape, np.float32), np.empty(shape, np.float32)
        for b, pos in enumerate(positions):
            inp[b, 0], tgt[b, 0] = self.pair_at(pos)  # assignment copies, so outputs are contiguous
        return inp, tgt

    def sample(self, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """A random batch ``(inp, tgt)``, float32 ``(B, 1, t, p, p)``, normalised, from this sampler's split."""
        if batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {batch_size}")
        train = self.split == "train"
        self.last_positions = [self._draw(self.split, self._rng, train) for _ in range(batch_size)]
        return self._batch(self.last_positions)

    def validation_positions(self, n: int, batch_size: int) -> list[list[Position]]:
        """The fixed validation positions: ``n`` batches of ``batch_size``, always the same for a seed.

        Drawn from the validation part of the stacks whatever this sampler's split; a longer request
        starts with the same positions as a shorter one.
        """
        rng = np.random.default_rng([self.seed, _VAL_SALT])
        return [[self._draw("val", rng, False) for _ in range(batch_size)] for _ in range(n)]

    def validation_batches(self, n: int, batch_size: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """``n`` deterministic validation batches (no swap, no augmentation), see :meth:`validation_positions`."""
        return [self._batch(b) for b in self.validation_positions(n, batch_size)]

    # -- resumable stream

    def state(self) -> dict[str, Any]:
        """The random stream's state (plain Python types, safe for ``torch.save`` / weights-only loading)."""
        return {"bit_generator": copy.deepcopy(self._rng.bit_generator.state), "seed": self.seed}

    def set_state(self, state: dict[str, Any]) -> None:
        """Continue exactly where :meth:`state` was taken."""
        try:
            self._rng.bit_generator.state = copy.deepcopy(state["bit_generator"])
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"the stored sampler state is not usable ({e}); start the run afresh") from None


class Prefetcher:
    """Draws the next training batches in a thread while the model works on the current ones.

    :attr:`state` is the sampler's state *before* the prefetched batches, the one checkpoints
    save, so a resumed run draws exactly the batches the interrupted one would have.

    Parameters
    ----------
    sampler : PatchSampler
        The training sampler (its stream continues from its current state).
    batch_size : int
        Patches per batch.
    n_batches : int
        Batches per optimiser step (gradient accumulation).
    """

    def __init__(self, sampler: PatchSampler, batch_size: int, n_batches: int) -> None:
        self._sampler, self._batch_size, self._n = sampler, batch_size, n_batches
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="unet-att-sampler")
        self._submit()

    def _submit(self) -> None:
        self.state = self._sampler.state()
        self._pending = self._pool.submit(lambda: [self._sampler.sample(self._batch_size) for _ in range(self._n)])

    def next(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """The next step's batches (waiting for them if needed); starts drawing the ones after."""
        batches = self._pending.result()
        self._submit()
        return batches

    def close(self) -> None:
        """Drop the pending batches and end the thread."""
        self._pending.cancel()
        self._pool.shutdown(wait=True)
