"""napari-unet-att: self-supervised UNet-Att denoising of two-photon calcium-imaging time-lapses.

The subpackages follow the data:

* ``stackio``: reading TIFF / zarr time-lapses as ``(T, Y, X)`` arrays and writing results atomically.
* ``modes`` (which frames and rows are input and target in each self-supervision mode) and ``augment``
  (the D4 flips and rotations).
* ``training``: patch pairs from the stacks, the training loop, pretraining of the generalists.
* ``model``: the networks (the attention gate lives here), the :class:`Denoiser` and its checkpoint files.
* ``inference``: tiled, blended denoising of whole stacks, in memory or file to file.
* ``evaluation``: metrics, classical baselines and the ground-truth simulator.
* ``config`` (the settings dataclasses), ``runtime`` (devices, memory, signals), ``errors``, ``zoo``
  (bioimage.io packages), ``cli`` and ``demo``.

All of that is the engine and works without Qt or napari; ``_napari`` is the napari plugin.

The common names are importable from here; ``import napari_unet_att`` is cheap because each one is
imported from its subpackage (and torch with it) only when first used.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> the subpackage (or top-level module) that exports it
_API: dict[str, str] = {
    "read_stack": "stackio",
    "write_stack": "stackio",
    "TrainConfig": "config",
    "InferConfig": "config",
    "TrainEvent": "config",
    "InferEvent": "config",
    "Preset": "config",
    "train": "training",
    "iter_train": "training",
    "Denoiser": "model",
    "load_checkpoint": "model",
    "save_checkpoint": "model",
    "load_any": "model",
    "load_model": "model",
    "denoise": "inference",
    "iter_denoise": "inference",
    "denoise_file": "inference",
    "iter_denoise_file": "inference",
    "simulate": "evaluation",
    "SimResult": "evaluation",
    "evaluate": "evaluation",
    "psnr": "evaluation",
    "psnr_affine": "evaluation",
    "gaussian3d": "evaluation",
    "best_gaussian": "evaluation",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    """Import a public name from its subpackage on first use (PEP 562), then keep it here."""
    if name not in _API:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_API[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
