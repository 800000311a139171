"""Model files: one-file checkpoints of ours (save, load, resume state) and the reference tools' weights.

A checkpoint (``.pt``) is a ``torch.save`` of a dict of tensors and plain Python types, laid out
as :mod:`~napari_unet_att.model.checkpoint_format` describes and checked there when loaded.

Files are serialised in memory, then written atomically (temporary file in the same folder,
fsync, rename), so a full disk is an ``OSError`` we report, never a half-written file. Weights or
normalisation that are not finite are refused both when saving and when loading.

Every file is read by :func:`~napari_unet_att.model.safe_loading.safe_load`. Weights of the
reference tools (UNet-Att, DeepCAD-RT, DeepBID) are converted by
:mod:`~napari_unet_att.model.reference`; :func:`import_reference` and :func:`load_any` (ours, a
reference tool's, or a bioimage.io package of ours) build the :class:`Denoiser` from them.
"""

from __future__ import annotations

import dataclasses
import io as _pyio
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import __version__
from ..errors import CheckpointError, InputError, ResourceError
from ..provenance import timestamp
from ..runtime.device import configure_process, resolve_device
from ..stackio import atomic_file
from . import networks
from .checkpoint_format import (
    FORMAT_VERSION,
    MAGIC,
    CheckpointFields,
    check_checkpoint,
    check_training_state,
    content_checksum,
    is_checkpoint,
)
from .denoiser import Denoiser
from .normalization import Normalization
from .reference import convert_reference_state_dict, reference_normalization, reference_provenance, reference_source
from .safe_loading import CHECKPOINT_EXT, safe_load

PathLike = str | os.PathLike


# ----------------------------------------------------------------------------------------------
# saving
# ----------------------------------------------------------------------------------------------
def save_checkpoint(path: PathLike, denoiser: Denoiser, training_state: dict[str, Any] | None = None) -> Path:
    """Write ``denoiser`` (and optionally the state needed to resume training) to one file.

    Parameters
    ----------
    path : str or path-like
        Destination, conventionally ending in ``.pt``; replaced atomically.
    denoiser : Denoiser
        Network and metadata.
    training_state : dict, optional
        Optimiser / scaler state dicts, RNG states, step, elapsed time, loss history. Must
        consist of tensors and plain Python types (numpy arrays become tensors, numpy
        scalars Python numbers).

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    InputError, ResourceError
        Unwritable folder, full disk (an existing file at ``path`` is then left as it was).
    """
    path = Path(path)
    ckpt = checkpoint_dict(denoiser)
    bad = _nonfinite(ckpt["state_dict"])
    if bad or not _finite_norm(ckpt["normalization"]):
        what = f"weights ({', '.join(bad[:3])})" if bad else f"normalisation {ckpt['normalization']}"
        raise CheckpointError(f"refusing to save {path}: the model's {what} hold NaN or inf values (its training "
                              "diverged); a model that cannot denoise is never written")
    if training_state is not None:
        ckpt["training_state"] = _plain(training_state, strict=True)
    ckpt["checksum"] = content_checksum(ckpt)
    # torch.save into memory first: torch reports a full disk as a RuntimeError from its zip
    # writer; a plain write raises OSError(ENOSPC), which atomic_file reports and cleans up.
    buffer = _pyio.BytesIO()
    with atomic_file(path) as tmp:  # which fsyncs the file and its folder
        torch.save(ckpt, buffer)
        with open(tmp, "wb") as fh:
            fh.write(buffer.getbuffer())
    return path


def _nonfinite(state: Mapping[str, Any]) -> list[str]:
    """Names of floating-point tensors in ``state`` holding NaN or inf."""
    return [str(k) for k, v in state.items()
            if isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all())]


def _finite_norm(norm: Any) -> bool:
    try:
        Normalization.from_dict(norm)
    except (KeyError, TypeError, ValueError):
        return False
    return True


def checkpoint_dict(den: Denoiser) -> dict[str, Any]:
    """What a checkpoint of ``den`` stores (without ``training_state`` and ``checksum``): the one place that says so."""
    prov = dict(den.provenance)
    prov.setdefault("package", f"napari-unet-att {__version__}")
    prov.setdefault("torch", torch.__version__)
    prov.setdefault("created", timestamp())
    return {
        "magic": MAGIC,
        "format_version": FORMAT_VERSION,
        "state_dict": {k: v.detach().to("cpu") for k, v in den.net.state_dict().items()},
        "arch": str(den.arch),
        "base_channels": int(den.base_channels),
        "preset": str(den.preset),
        "mode": str(den.mode),
        "flip_backward": bool(den.flip_backward),
        "normalization": den.norm.to_dict(),
        "train_shape": None if den.train_shape is None else [int(n) for n in den.train_shape],
        "train_config": _plain(den.train_config),
        "provenance": _plain(prov),
        "step": int(den.step),
    }


def _plain(obj: Any, strict: bool = False) -> Any:
    """Recursively turn ``obj`` into tensors and plain Python types (what ``weights_only`` reads).

    Unknown objects become ``str(obj)`` in metadata; with ``strict`` they raise ``TypeError``
    (training state must round-trip exactly).
    """
    if obj is None or type(obj) in (bool, int, float, str, bytes):
        return obj
    for base in (bool, int, float, str, bytes):  # subclasses (torch.__version__, IntEnum) are globals to pickle
        if isinstance(obj, base):
            return base(obj)
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu")
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(obj).copy())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Mapping):
        return {(k if isinstance(k, str | int) else str(k)): _plain(v, strict) for k, v in obj.items()}
    if isinstance(obj, tuple):
        return tuple(_plain(v, strict) for v in obj)
    if isinstance(obj, list | set | frozenset):
        return [_plain(v, strict) for v in obj]
    if isinstance(obj, os.PathLike):
        return str(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _plain(dataclasses.asdict(obj), strict)
    if strict:
        raise TypeError(f"cannot store a {type(obj).__name__} in a checkpoint; use tensors and plain Python types")
    return str(obj)


# ----------------------------------------------------------------------------------------------
# loading ours
# ----------------------------------------------------------------------------------------------
def target_device(device: Any) -> torch.device:
    """``device`` as a ``torch.device``; a name is resolved and the process configured for it."""
    return device if isinstance(device, torch.device) else configure_process(resolve_device(str(device)))


def build_from_state(arch: Any, base_channels: Any, state: Any, path: Path) -> torch.nn.Module:
    """Build the network and load ``state`` strictly, with errors naming ``path``."""
    try:
        net = networks.build_network(arch, base_channels)
    except (InputError, ResourceError) as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{path}: the weights are a {type(state).__name__}, not a state dict")
    bad = _nonfinite(state)
    if bad:
        raise CheckpointError(f"{path}: the weights hold NaN or inf values ({', '.join(bad[:3])}"
                              f"{', ...' if len(bad) > 3 else ''}); the model is damaged or its training diverged, "
                              "and it would turn every input into NaN or a flat image")
    try:
        net.load_state_dict(state, strict=True)
    except (RuntimeError, KeyError, TypeError) as exc:
        detail = " ".join(str(exc).split())[:400]
        raise CheckpointError(f"{path}: the weights do not match a {arch} network with base_channels="
                              f"{base_channels} ({detail})") from None
    return net


def _denoiser_from_ours(obj: Mapping[str, Any], path: Path, device: Any) -> Denoiser:
    f = CheckpointFields.parse(check_checkpoint(obj, path), path)
    net = build_from_state(f.arch, f.base_channels, obj["state_dict"], path)
    return Denoiser(
        net=net.to(target_device(device)).eval(), arch=f.arch, base_channels=f.base_channels, preset=f.preset,
        mode=f.mode, norm=f.norm, flip_backward=f.flip_backward, train_shape=f.train_shape,
        train_config=f.train_config, provenance=f.provenance, step=f.step,
    )


def load_checkpoint(path: PathLike, device: Any = "cpu") -> Denoiser:
    """Load a napari-unet-att checkpoint (never executing code from the file).

    Raises
    ------
    CheckpointError
        Missing, empty, truncated or corrupt file; not a checkpoint of ours (foreign torch
        file or pickle, text); unsafe content (refused, not loaded); a newer format version;
        weights that do not match the stored architecture.
    """
    path = Path(path)
    return _denoiser_from_ours(safe_load(path), path, device)


def load_training_state(path: PathLike, complete: bool = False) -> dict[str, Any] | None:
    """The resume state stored by :func:`save_checkpoint`, or None for a final model.

    The fields the trainer reads are type-checked when present; ``complete=True`` (the trainer's
    resume) also requires every one of them.
    """
    path = Path(path)
    ck = check_checkpoint(safe_load(path), path)
    state = ck.get("training_state")
    return None if state is None else check_training_state(state, path, complete)


# ----------------------------------------------------------------------------------------------
# reference weights (UNet-Att, DeepCAD-RT, DeepBID) and any model file
# ----------------------------------------------------------------------------------------------
def _denoiser_from_reference(obj: Any, path: Path, device: Any) -> Denoiser:
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}; expected a state dict of UNet-Att / "
                              "DeepCAD-RT weights or DeepBID's {'params': state_dict}")
    try:
        source = reference_source(obj)
        arch, base_channels, state = convert_reference_state_dict(obj)
    except (CheckpointError, InputError, ResourceError) as exc:  # ResourceError: an absurd width
        raise CheckpointError(f"{path}: {exc}") from None
    net = build_from_state(arch, base_channels, state, path)
    norm, notes = reference_normalization(path)
    return Denoiser(net=net.to(target_device(device)).eval(), arch=arch, base_channels=base_channels,
                    preset="imported", mode="temporal", norm=norm,
                    provenance=reference_provenance(source, path, notes))


def import_reference(path: PathLike, device: Any = "cpu") -> Denoiser:
    """Import UNet-Att / DeepCAD-RT (``Generator.`` state dict) or DeepBID (``{'params': ...}``) weights.

    Loaded with ``weights_only=True``. Mode is ``'temporal'``, preset ``'imported'``; the
    normalisation comes from a ``para.yaml`` beside the file when it holds one, otherwise
    ``provenance['normalization'] == 'input'`` tells inference to use the input's statistics.
    A napari-unet-att checkpoint given here is simply loaded.

    Raises
    ------
    CheckpointError
        As :func:`load_checkpoint`, or when the weights match no known layout.
    """
    path = Path(path)
    obj = safe_load(path)
    if is_checkpoint(obj):
        return _denoiser_from_ours(obj, path, device)
    return _denoiser_from_reference(obj, path, device)


def load_any(path: PathLike, device: Any = "cpu") -> Denoiser:
    """Load our checkpoint, or else import reference weights; one clear error if neither fits.

    A ``.zip`` (or any zip holding an ``rdf.yaml``) is read as a bioimage.io package exported by
    napari-unet-att (:func:`~napari_unet_att.zoo.load_package`; other packages are refused, named).
    """
    path = Path(path)
    from .. import zoo

    if zoo.is_package(path):
        return zoo.load_package(path, device)
    obj = safe_load(path)
    if is_checkpoint(obj):
        return _denoiser_from_ours(obj, path, device)
    try:
        return _denoiser_from_reference(obj, path, device)
    except CheckpointError as exc:
        raise CheckpointError(f"{path} is neither a napari-unet-att checkpoint nor recognised UNet-Att / "
                              f"DeepCAD-RT / DeepBID weights: {exc}") from None


__all__ = [
    "CHECKPOINT_EXT",
    "FORMAT_VERSION",
    "MAGIC",
    "import_reference",
    "is_checkpoint",
    "load_any",
    "load_checkpoint",
    "load_training_state",
    "save_checkpoint",
    "build_from_state",
    "checkpoint_dict",
    "target_device",
]
