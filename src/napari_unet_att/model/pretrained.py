"""The shipped pretrained ("generalist") models and the model name that finds them.

``generalist`` (in ``--model`` / ``--init``, the widgets and the Python API) resolves to the shipped
weights for the data's self-supervision mode: ``pretrained/generalist_<mode>_<preset>.pt`` inside the
package. They were trained offline by ``scripts/train_generalist.py`` on simulated recordings only
(:mod:`napari_unet_att.training.pretraining`), normalise every input by its own statistics, and can be used at
once (zero-shot) or fine-tuned on a user's recording (``train --init generalist``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import InputError

GENERALIST = "generalist"
DEFAULT_PRESET = "fast"
PRETRAINED_DIR = Path(__file__).resolve().parents[1] / "pretrained"

FAMILY_DESCRIPTION = (
    "simulated two-photon calcium recordings (napari_unet_att.training.pretraining.draw_params family): "
    "0.2-10 photons/pixel, Gaussian read noise 0.02-1.5 photons, gains 1-80 ADU/photon and offsets 0-2000 ADU, "
    "uint16 and int16 with negative values, somata of 1.5-11 px radius at 0.3-2.5x density with dendrites, "
    "PSF sigma 0.3-2 px, 25% with spatially correlated noise (resampled data), "
    "neurites, neuropil, 5-60 Hz with indicator decays of 0.1-2 s, 15% with saturated bright cells, "
    "no motion / slow drift / AR(1) rho 0.5 / per-frame jitter of 0.2-2 px, 30% with motion during the scan"
)


def is_generalist(name: Any) -> bool:
    """Whether a model argument names the shipped generalist rather than a file."""
    return isinstance(name, str) and name.strip().lower() == GENERALIST


def pretrained_path(mode: str, preset: str = DEFAULT_PRESET, must_exist: bool = True) -> Path:
    """Path of the shipped generalist for ``mode`` and ``preset``.

    Raises
    ------
    InputError
        No generalist exists for that mode / preset (row-split has none: its pairs mix two frames' rows,
        so fine-tune from scratch or use temporal mode).
    """
    path = PRETRAINED_DIR / f"generalist_{mode}_{preset}.pt"
    if must_exist and not path.is_file():
        have = sorted(p.stem.removeprefix("generalist_") for p in PRETRAINED_DIR.glob("generalist_*.pt"))
        raise InputError(f"no pretrained generalist for mode {mode!r} and preset {preset!r}; shipped: "
                         f"{', '.join(have) or 'none'} (mode_preset)")
    return path


def resolve_model(spec: str | os.PathLike, mode: str = "temporal", preset: str = DEFAULT_PRESET) -> Path:
    """A model argument as a path: ``generalist`` -> the shipped weights for ``mode``, else the path itself."""
    if is_generalist(spec):
        return pretrained_path(mode, preset)
    return Path(spec)


def load_model(spec: str | os.PathLike, mode: str = "temporal", device: Any = "cpu",
               preset: str = DEFAULT_PRESET):
    """Load a model by path or by the name ``generalist`` (see :func:`resolve_model`).

    Returns
    -------
    Denoiser
    """
    from .checkpoint import load_any

    return load_any(resolve_model(spec, mode, preset), device=device)
