"""The D4 group of the (y, x) plane: the 8 flips and quarter turns, forward and inverse.

Training augments patches with it (:class:`~napari_unet_att.training.sampler.PatchSampler`) and test-time
augmentation averages a model's outputs over it (:mod:`napari_unet_att.inference`). Element ``k`` rotates
``k % 4`` quarter turns, then mirrors x if ``k >= 4``; ``k = 0`` is the identity.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: The order in which test-time augmentation uses the group (the first ``tta`` elements): identity,
#: mirror x, mirror y, both (the flips of the recorded orientation), then the four that swap y and x.
TTA_ORDER: tuple[int, ...] = (0, 4, 6, 2, 7, 1, 3, 5)


def _check_k(k: int) -> int:
    if int(k) != k or not 0 <= k <= 7:
        raise ValueError(f"D4 element k must be an integer in 0..7, got {k!r}")
    return int(k)


def _is_torch(arr: Any) -> bool:
    return type(arr).__module__.split(".")[0] == "torch"


def d4_transform(arr: Any, k: int) -> Any:
    """One of the 8 flips / rotations of the last two axes: rotate ``k % 4`` quarter turns, then mirror x
    if ``k >= 4``. Works on numpy arrays (returns a view) and torch tensors. ``k = 0`` is the identity.
    """
    k = _check_k(k)
    if _is_torch(arr):
        import torch

        out = torch.rot90(arr, k % 4, dims=(-2, -1))
        return torch.flip(out, dims=(-1,)) if k >= 4 else out
    out = np.rot90(arr, k % 4, axes=(-2, -1))
    return np.flip(out, axis=-1) if k >= 4 else out


def d4_inverse(arr: Any, k: int) -> Any:
    """Undo :func:`d4_transform` with the same ``k``."""
    k = _check_k(k)
    if _is_torch(arr):
        import torch

        if k >= 4:
            arr = torch.flip(arr, dims=(-1,))
        return torch.rot90(arr, -(k % 4), dims=(-2, -1))
    if k >= 4:
        arr = np.flip(arr, axis=-1)
    return np.rot90(arr, -(k % 4), axes=(-2, -1))
