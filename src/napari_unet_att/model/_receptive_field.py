"""The receptive field of each network, traced exactly along one axis.

:func:`receptive_field` bounds how far a voxel of the output can depend on the input: the
tiler's overlap (:mod:`napari_unet_att.inference.denoising`) and the halo of an exported
bioimage.io package (:mod:`napari_unet_att.zoo`) come from it. Every layer of
:mod:`~napari_unet_att.model.networks` is mirrored here by its index pattern, so a change to a
network's graph must be repeated in its tracer (``tests/test_networks.py`` checks the bound
against a measured impulse response).

The module's name is private so that it does not shadow the function: ``napari_unet_att.model``
re-exports :func:`receptive_field`, and a module of the same name would make
``napari_unet_att.model.receptive_field`` the module or the function depending on what was
imported first.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from ..errors import InputError
from .networks import ARCHS


class _Support:
    """For each voxel ``i`` of a 1-D feature axis, the input interval ``[lo[i], hi[i]]`` it depends on.

    Every op of the network is a fixed pattern of input indices per output index (conv
    taps, pooling windows, interpolation neighbours with non-zero weight), computed here
    exactly as PyTorch computes it; merging branches (concat, add, multiply) is the union.
    Kernels are isotropic, so one axis describes all three.
    """

    def __init__(self, lo: np.ndarray, hi: np.ndarray) -> None:
        self.lo, self.hi = lo, hi

    @classmethod
    def identity(cls, n: int) -> _Support:
        i = np.arange(n)
        return cls(i.copy(), i.copy())

    def __len__(self) -> int:
        return len(self.lo)

    def gather(self, reads: list[list[int]]) -> _Support:
        """Output voxel ``k`` depends on input voxels ``reads[k]``."""
        lo = np.array([min(self.lo[r] for r in rs) for rs in reads])
        hi = np.array([max(self.hi[r] for r in rs) for rs in reads])
        return _Support(lo, hi)

    def conv(self, k: int = 3, stride: int = 1, pad: int = 1) -> _Support:
        n = len(self)
        n_out = (n + 2 * pad - k) // stride + 1
        reads = [[j for j in range(o * stride - pad, o * stride - pad + k) if 0 <= j < n] for o in range(n_out)]
        return self.gather(reads)  # zero padding adds no dependence

    def pool(self) -> _Support:
        return self.conv(k=2, stride=2, pad=0)

    def nearest(self, n_out: int) -> _Support:
        n = len(self)
        return self.gather([[min(int(math.floor(o * n / n_out)), n - 1)] for o in range(n_out)])

    def linear(self, n_out: int, align_corners: bool) -> _Support:
        """Neighbours read by 1-D linear interpolation (one axis of trilinear), as ATen computes them."""
        n = len(self)
        reads = []
        for o in range(n_out):
            if align_corners:
                src = o * (n - 1) / (n_out - 1) if n_out > 1 else 0.0
            else:
                src = max((o + 0.5) * n / n_out - 0.5, 0.0)
            i0 = min(int(src), n - 1)
            i1 = min(i0 + 1, n - 1)
            reads.append([i0, i1] if src - i0 > 0 else [i0])
        return self.gather(reads)

    def union(*parts: _Support) -> _Support:
        return _Support(np.minimum.reduce([p.lo for p in parts]), np.maximum.reduce([p.hi for p in parts]))


def _double(s: _Support) -> _Support:
    return s.conv().conv()


def _gate(x: _Support, g: _Support) -> _Support:
    theta = x.conv(k=3, stride=2, pad=0)
    f = theta.union(g.linear(len(theta), align_corners=False))
    alpha = f.linear(len(x), align_corners=False)  # sig_conv is 1x1x1
    return x.union(alpha)  # W is 1x1x1, BatchNorm per voxel in eval


def _trace_unet_att(n: int) -> _Support:
    x00 = _double(_Support.identity(n))
    x10 = _double(x00.pool())
    x20 = _double(x10.pool())
    x30 = _double(x20.pool())

    def up(a: _Support, like: _Support) -> _Support:
        return a.linear(len(like), align_corners=True)

    a00, a10, a20 = _gate(x00, x10), _gate(x10, x20), _gate(x20, x30)
    x01 = _double(a00.union(up(x10, x00)))
    x11 = _double(a10.union(up(x20, x10)))
    x21 = _double(a20.union(up(x30, x20)))
    a01, a11 = _gate(x01, x11), _gate(x11, x21)
    x02 = _double(a00.union(a01, up(x11, x01)))
    x12 = _double(a10.union(a11, up(x21, x11)))
    a02 = _gate(x02, x12)
    x03 = _double(a00.union(a01, a02, up(x12, x02)))
    return x01.union(x02, x03)


def _trace_unet3d(n: int) -> _Support:
    s = _Support.identity(n)
    skips = []
    for level in range(4):
        s = _double(s.pool() if level else s)
        skips.append(s)
    for skip in reversed(skips[:-1]):
        s = _double(skip.union(s.nearest(len(skip))))
    return s


@functools.cache
def receptive_field(arch: str) -> int:
    """Receptive field of a network, in voxels per axis (the same on T, Y and X).

    Computed, not guessed: every layer's index pattern along one axis (3x3x3 conv taps,
    2x2x2 pooling windows, the gates' unpadded stride-2 convs, interpolation neighbours with
    non-zero weight, indexed exactly as PyTorch does) is traced through the network's graph
    for a 256-voxel axis (see :class:`_Support`), giving for each output voxel ``i`` the input
    interval ``[i - left_i, i + right_i]`` it can depend on. The result is
    ``max(left) + max(right) + 1``: the context needed on both sides together, which bounds
    both each voxel's dependence and the width of the output's response to one input voxel.

    Values: 103 for 'unet3d' (max one-sided context 51). 145 for 'unet_att' (72 per side): its
    gates resize ``g`` from n/2 to n/2 - 1 voxels (unpadded stride-2 conv), so the grid drifts
    along the axis and voxels near one end of a tile see up to 72 voxels towards the other end;
    mid-axis voxels need 131. These are hard bounds; a trained net's effective field is much
    narrower (most weight within a few tens of voxels), so blended tile overlaps can be smaller.

    Raises
    ------
    InputError
        For an unknown ``arch``.
    """
    tracers = {"unet_att": _trace_unet_att, "unet3d": _trace_unet3d}
    if arch not in tracers:
        raise InputError(f"unknown network architecture {arch!r}; expected one of: {', '.join(ARCHS)}")
    n = 256  # long enough for the deepest level to be periodic; the result is the same for any n >= 128
    s = tracers[arch](n)
    i = np.arange(n)
    # Border clipping only shrinks supports, so the maxima over the whole axis are the bounds.
    return int((i - s.lo).max() + (s.hi - i).max() + 1)


__all__ = ["receptive_field"]
