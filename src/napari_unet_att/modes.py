"""The three self-supervision modes as geometry: which frames and rows are input and target.

Every mode splits one noisy ``(T, Y, X)`` stack into two independent noisy views of the same content
(METHODS.md section 1); this module is the one place that knows how. Patch sizes ``(t, p, p)`` are
always in *network-input* voxels:

``temporal``
    raw frames ``[s, s + 2t)``, rows ``[y0, y0 + p)``, columns ``[x0, x0 + p)``;
    input = frames ``s, s+2, ...``, target = frames ``s+1, s+3, ...``. The network sees ``(T//2, Y, X)``.
``mirrored``
    a raw bidirectional scan ``(T, 2N, N)``: frames ``[s, s + t)``, raw rows ``[y0, y0 + 2p)`` (``y0`` even),
    columns ``[x0, x0 + p)``; input = even rows (forward lines), target = odd rows (backward lines).
    With ``flip_backward`` the backward lines are stored x-mirrored (column ``x`` holds ``N-1-x``), so the
    target is read from the mirrored column window and reversed. The network sees ``(T, N, N)``.
``rowsplit``
    frames ``2k, 2k+1`` for ``k`` in ``[k0, k0 + t)``, raw rows ``[y0, y0 + p)`` (``y0`` even, so input rows are
    always the frame's even rows), columns ``[x0, x0 + p)``; input = even rows of frame ``2k`` stacked above
    the even rows of frame ``2k+1`` (``p/2`` rows each), target = the same with odd rows. The network sees
    ``(T//2, Y, X)``.

Positions are given in *raw* coordinates ``(t0, y0, x0)`` = first raw frame, first raw row, first column.

Only the region a patch needs is indexed, so ``np.memmap``, zarr and dask stacks are never loaded whole
and never converted to float32 whole.

"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .config import check_mode
from .errors import InputError

Triple = tuple[int, int, int]
Slices = tuple[slice, slice, slice]


# ---------------------------------------------------------------------------------------------- training pairs

def _shape3(shape: Sequence[int]) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3:
        raise InputError(
            f"expected a 3D time-lapse (T, Y, X), found a {len(shape)}D array of shape {shape}; "
            "select one channel / plane first"
        )
    return shape  # type: ignore[return-value]


def network_input_shape(shape: Sequence[int], mode: str) -> tuple[int, int, int]:
    """Shape ``(T, Y, X)`` of what the network sees for a raw stack of ``shape`` in ``mode``.

    ``temporal``: ``(T//2, Y, X)`` per pair set; ``mirrored``: ``(T, Y//2, X)``; ``rowsplit``:
    ``(T//2, Y, X)`` (the even rows of two frames stacked make one ``(Y, X)`` image).
    """
    check_mode(mode)
    t, y, x = _shape3(shape)
    if mode == "mirrored":
        return (t, y // 2, x)
    return (t // 2, y, x)


def raw_frames_per_patch(mode: str, patch_t: int) -> int:
    """Raw frames that one patch of ``patch_t`` network-input frames spans."""
    return patch_t if mode == "mirrored" else 2 * patch_t


def check_stack_for_mode(shape: Sequence[int], mode: str, patch_t: int, patch_xy: int) -> None:
    """Raise :class:`InputError` saying what is wrong if ``mode`` cannot cut ``(patch_t, patch_xy, patch_xy)``
    patches (network-input voxels) from a stack of ``shape``.
    """
    check_mode(mode)
    t, y, x = _shape3(shape)
    found = f"found (T, Y, X) = ({t}, {y}, {x})"
    if mode == "mirrored" and (y % 2 or y != 2 * x):
        hint = "; for an ordinary (T, Y, X) scan use mode 'temporal' or 'rowsplit'" if y == x else ""
        raise InputError(
            "mirrored-scan expects a raw bidirectional stack of shape (T, 2N, N) (forward lines in even rows, "
            f"backward lines in odd rows, so rows == 2 * columns), {found}{hint}"
        )
    if mode == "rowsplit" and y % 2:
        raise InputError(
            f"rowsplit pairs even rows with odd rows and needs an even number of rows, {found}; crop one row"
        )
    for name, v in (("patch_t", patch_t), ("patch_xy", patch_xy)):
        if int(v) != v or v < 1:
            raise InputError(f"{name} must be a positive integer, got {v!r}")
    if mode == "rowsplit" and patch_xy % 2:
        raise InputError(
            f"rowsplit needs an even patch_xy (each half of a patch holds patch_xy/2 rows of one frame), "
            f"got {patch_xy}; use {max(2, patch_xy - 1)}"
        )
    _check_frames(t, mode, patch_t, found)
    _, yn, xn = network_input_shape(shape, mode)
    if min(yn, xn) < patch_xy:
        largest = min(yn, xn) - (min(yn, xn) % 2 if mode == "rowsplit" else 0)
        advice = f"use a smaller patch (patch_xy <= {largest})" if largest >= 1 else "the frames are too small"
        raise InputError(
            f"a {patch_xy}x{patch_xy} patch does not fit the {yn}x{xn} (rows x columns) images that {mode} mode "
            f"gives the network for a stack of shape ({t}, {y}, {x}); {advice}"
        )


def _check_frames(t: int, mode: str, patch_t: int, found: str) -> None:
    need = raw_frames_per_patch(mode, patch_t)
    if t >= need:
        return
    why = {
        "temporal": "input and target frames alternate",
        "mirrored": "all frames are kept",
        "rowsplit": "each network frame is built from a pair of frames 2k, 2k+1",
    }[mode]
    largest = t if mode == "mirrored" else t // 2
    advice = f"use a smaller patch (patch_t <= {largest})" if largest >= 1 else f"{mode} mode needs more frames"
    raise InputError(
        f"{mode} mode needs at least {need} frames for patch_t={patch_t} ({why}), {found} with {t} frames; {advice}"
    )


def max_patch_for(shape: Sequence[int], mode: str, multiple: int = 1) -> tuple[int, int]:
    """Largest valid ``(patch_t, patch_xy)`` for a stack, each rounded down to a multiple of ``multiple``.

    Lets callers shrink their patch for small stacks (and tell the user). Raises :class:`InputError` if the
    stack does not suit ``mode`` at all or is too small for even the smallest patch.
    """
    check_stack_for_mode(shape, mode, 1, 2 if mode == "rowsplit" else 1)
    tn, yn, xn = network_input_shape(shape, mode)
    step_xy = math.lcm(multiple, 2) if mode == "rowsplit" else multiple
    pt = tn - tn % multiple
    pxy = min(yn, xn) - min(yn, xn) % step_xy
    if pt < 1 or pxy < 1:
        raise InputError(
            f"a stack of shape {tuple(shape)} gives the network {tn} frames of {yn}x{xn} in {mode} mode, too small "
            f"for patches that are multiples of {multiple}"
        )
    return pt, pxy




def _read(stack: Any, t: tuple[int, int], y: tuple[int, int], x: tuple[int, int]) -> np.ndarray:
    """Index one region only (works for numpy, memmap, zarr and dask) in the stack's own dtype."""
    want = (t[1] - t[0], y[1] - y[0], x[1] - x[0])
    if min(t[0], y[0], x[0]) < 0:
        raise ValueError(f"negative region start {(t[0], y[0], x[0])}")
    region = np.asarray(stack[t[0] : t[1], y[0] : y[1], x[0] : x[1]])
    if region.shape != want:  # slicing past the end silently truncates: refuse instead
        raise ValueError(f"region {t}, {y}, {x} is outside a stack of shape {tuple(stack.shape)}")
    return region


def extract_pair(
    stack: Any,
    mode: str,
    t0: int,
    y0: int,
    x0: int,
    patch_t: int,
    patch_xy: int,
    flip_backward: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Input and target patches ``(patch_t, patch_xy, patch_xy)`` in the stack's dtype.

    ``(t0, y0, x0)`` is the raw position (first raw frame, first raw row, first column); ``y0`` must be even
    for ``mirrored`` and ``rowsplit``, ``t0`` even for ``rowsplit``. See the module docstring for the layouts.
    """
    t, p = patch_t, patch_xy
    if mode == "temporal":
        region = _read(stack, (t0, t0 + 2 * t), (y0, y0 + p), (x0, x0 + p))
        return region[0::2], region[1::2]
    if mode == "mirrored":
        if y0 % 2:
            raise ValueError(f"mirrored patches start on a forward (even) row, got y0={y0}")
        region = _read(stack, (t0, t0 + t), (y0, y0 + 2 * p), (x0, x0 + p))
        if not flip_backward:
            return region[:, 0::2], region[:, 1::2]
        n = stack.shape[2]  # backward column x is stored at n-1-x: read the mirrored window, then reverse it
        back = _read(stack, (t0, t0 + t), (y0, y0 + 2 * p), (n - x0 - p, n - x0))
        return region[:, 0::2], back[:, 1::2, ::-1]
    if mode == "rowsplit":
        if t0 % 2 or y0 % 2 or p % 2:
            raise ValueError(f"rowsplit needs even t0, y0 and patch_xy, got {t0}, {y0}, {p}")
        region = _read(stack, (t0, t0 + 2 * t), (y0, y0 + p), (x0, x0 + p))
        first, second = region[0::2], region[1::2]
        inp = np.concatenate([first[:, 0::2], second[:, 0::2]], axis=1)
        tgt = np.concatenate([first[:, 1::2], second[:, 1::2]], axis=1)
        return inp, tgt
    check_mode(mode)
    raise AssertionError("unreachable")


# ---------------------------------------------------------------------------------------------- inference views


@dataclass
class View:
    """A ``(T, Y', X')`` view of the input: the whole stack, or the forward / backward lines
    of a bidirectional ``(T, 2N, N)`` scan (read as contiguous row blocks, since zarr and
    some memmaps do not support strided slicing)."""

    stack: Any
    shape: Triple
    parity: int | None = None  # None: all rows; 0: rows 0::2; 1: rows 1::2
    flip: bool = False  # x-mirrored on disk: reverse when reading, and the result back

    def read(self, sl: Slices) -> np.ndarray:
        t, y, x = sl
        if self.parity is None:
            return np.asarray(self.stack[t, y, x])
        n_x = self.shape[2]
        xs = slice(n_x - x.stop, n_x - x.start) if self.flip else x
        raw = np.asarray(self.stack[t, 2 * y.start : 2 * y.stop, xs])[:, self.parity :: 2]
        return raw[..., ::-1] if self.flip else raw

    def restore(self, block: np.ndarray) -> np.ndarray:
        """Undo the read-time flip on finished frames."""
        return block[..., ::-1] if self.flip else block


def split_views(
    stack: Any, mode: str, flip_backward: bool, mirrored_output: str, scan: bool | None = None
) -> tuple[list[View], Callable[[list[np.ndarray]], np.ndarray], Triple]:
    """How a model of ``mode`` sees a stack: the views, a combiner of finished view blocks, and the
    output shape.

    A mirrored-scan model on a ``(T, 2N, N)`` stack sees its forward and backward lines as two
    ``(T, N, N)`` views (the backward ones x-mirrored back when ``flip_backward``); the results are
    interleaved back into ``(T, 2N, N)``, or averaged into ``(T, N, N)`` when ``mirrored_output`` is
    ``'merged'`` (in the forward lines' orientation: the physical one). Any other model sees the whole stack.
    ``scan``: whether the stack is such a scan's lines (a part of one: ``(T, 2M, N)``); None: it is when
    ``(T, 2N, N)``.
    """
    shape = tuple(int(s) for s in stack.shape)
    t, y, x = shape
    if mode != "mirrored" or not (y == 2 * x if scan is None else scan and y % 2 == 0):
        return [View(stack, shape)], (lambda blocks: blocks[0]), shape  # type: ignore[return-value]
    half = (t, y // 2, x)
    views = [View(stack, half, 0, False), View(stack, half, 1, bool(flip_backward))]
    if mirrored_output == "merged":  # averaged in the physical orientation (backward lines x-reversed back)
        return views, (lambda b: 0.5 * (b[0] + (b[1][..., ::-1] if flip_backward else b[1]))), half

    def interleave(blocks: list[np.ndarray]) -> np.ndarray:
        out = np.empty((blocks[0].shape[0], y, x), dtype=np.float32)
        out[:, 0::2], out[:, 1::2] = blocks
        return out

    return views, interleave, shape  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------- scoring layouts


def layout_factor(shape: Sequence[int], ref_shape: Sequence[int]) -> int:
    """Rows of a stack per row of its reference: 1 if the shapes match, 2 if the stack is the bidirectional
    ``(T, 2N, N)`` layout of a ``(T, N, N)`` reference (each physical line scanned twice).

    Raises :class:`InputError` for anything else, or if either is not a non-empty ``(T, Y, X)`` stack.
    """
    for name, sh in (("the stack", shape), ("the reference", ref_shape)):
        if len(sh) != 3:
            raise InputError(f"{name} must be a (T, Y, X) stack, got shape {tuple(sh)}")
        if min(sh) < 1:
            raise InputError(f"{name} is empty (shape {tuple(sh)})")
    x, ref = tuple(shape), tuple(ref_shape)
    if x == ref:
        return 1
    if x[0] == ref[0] and x[2] == ref[2] and x[1] == 2 * ref[1]:
        return 2
    raise InputError(
        f"stack shape {x} does not match reference shape {ref}; expected the same shape, "
        "or twice the rows (bidirectional layout)"
    )


def merge_directions(x: Any) -> np.ndarray:
    """A bidirectional ``(T, 2N, N)`` stack in its physical layout ``(T, N, N)``: forward (even) and backward
    (odd) lines averaged, float32."""
    x = np.asarray(x, dtype=np.float32)
    return 0.5 * (x[:, 0::2] + x[:, 1::2])
