"""What one of our checkpoint files holds, and the checks a loaded one must pass before it is used.

A checkpoint (``.pt``) is a ``torch.save`` of a dict that holds only tensors and plain Python
types, so it is always read with ``torch.load(weights_only=True)``: a file crafted to run
code when unpickled is refused, never executed. Layout (``FORMAT_VERSION`` 1)::

    magic            'napari-unet-att'
    format_version   1
    state_dict       {name: tensor}
    arch, base_channels, preset, mode, flip_backward
    normalization    {'offset': float, 'scale': float}
    train_shape      [T, Y, X] or None
    train_config     resolved TrainConfig (dict)
    provenance       package / torch versions, creation time, sources, ...
    step             optimiser steps
    training_state   optional, for resuming: optimizer / scaler state, RNG states, elapsed
                     time, loss history (whatever the trainer stores, as tensors / plain types)
    checksum         optional 'sha256:<hex>' of everything above (tensor bytes included), so a
                     flipped byte is caught; files written before it existed load without it

:func:`check_checkpoint` refuses a foreign object, an unknown format version, missing entries
and a checksum mismatch; :class:`CheckpointFields` then checks every metadata field for type
and range, and :func:`check_training_state` the fields the trainer's resume reads. Each
failure is one :class:`~napari_unet_att.errors.CheckpointError` naming the bad field.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import CheckpointError, TrainingStateError
from . import networks
from .normalization import Normalization
from .reference import reference_source

MAGIC = "napari-unet-att"
FORMAT_VERSION = 1
_REQUIRED = ("state_dict", "arch", "base_channels", "mode", "normalization")


def content_checksum(ckpt: Mapping[str, Any]) -> str:
    """``'sha256:<hex>'`` over every entry but ``checksum``: keys, plain values, tensor dtypes, shapes, bytes."""
    h = hashlib.sha256()
    _feed(h, {k: v for k, v in ckpt.items() if k != "checksum"})
    return "sha256:" + h.hexdigest()


def _feed(h: Any, obj: Any) -> None:
    if isinstance(obj, torch.Tensor):
        t = obj.detach().to("cpu").contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy())
    elif isinstance(obj, Mapping):
        h.update(b"{%d" % len(obj))
        for k in sorted(obj, key=lambda k: (type(k).__name__, str(k))):
            h.update(repr(k).encode())
            _feed(h, obj[k])
    elif isinstance(obj, list | tuple):
        h.update(b"[%d" % len(obj))
        for v in obj:
            _feed(h, v)
    else:
        h.update(f"{type(obj).__name__}:{obj!r}".encode())


def is_checkpoint(obj: Any) -> bool:
    """True for a loaded object carrying this package's magic string."""
    return isinstance(obj, Mapping) and obj.get("magic") == MAGIC


def check_checkpoint(obj: Any, path: Path) -> Mapping[str, Any]:
    """``obj`` (loaded from ``path``) if it is a complete checkpoint of ours that we can read, intact."""
    if not is_checkpoint(obj):
        hint = ""
        if isinstance(obj, Mapping) and reference_source(obj) != "unknown":
            hint = (f"; it looks like {reference_source(obj)} weights: import it as a reference model "
                    "(load_any / import_reference)")
        kind = f"a {type(obj).__name__}"
        if isinstance(obj, Mapping):
            keys = sorted(map(str, obj))
            more = ", ..." if len(keys) > 3 else ""
            kind += f" with {len(keys)} key(s): " + ", ".join(keys[:3]) + more
        raise CheckpointError(f"{path} is not a napari-unet-att checkpoint (it holds {kind}){hint}")
    version = obj.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise CheckpointError(f"{path} has an invalid format version {version!r}; the file is damaged")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{path} was written by a newer napari-unet-att (checkpoint format {version}; this "
                              f"version reads format {FORMAT_VERSION} and older); update napari-unet-att")
    missing = [k for k in _REQUIRED if k not in obj]
    if missing:
        raise CheckpointError(f"{path} is an incomplete checkpoint: missing {', '.join(missing)}")
    stored = obj.get("checksum")
    if stored is not None and stored != content_checksum(obj):
        raise CheckpointError(f"{path} is corrupted: its content does not match the checksum stored in it (damaged "
                              "on disk or in transfer, or edited); use another copy of the model")
    return obj


@dataclasses.dataclass(frozen=True)
class CheckpointFields:
    """The metadata of one of our checkpoints, each field checked for type and range."""

    arch: str
    base_channels: int
    preset: str
    mode: str
    flip_backward: bool
    norm: Normalization
    train_shape: tuple[int, int, int] | None
    train_config: dict[str, Any]
    provenance: dict[str, Any]
    step: int

    @classmethod
    def parse(cls, ck: Mapping[str, Any], path: Path) -> CheckpointFields:
        """Validate ``ck`` (a loaded checkpoint dict); one :class:`CheckpointError` names the bad field."""
        def bad(field: str, expected: str) -> CheckpointError:
            return CheckpointError(f"{path}: invalid {field} {_short(ck.get(field))}; expected {expected}; the file "
                                   "is damaged or was not written by napari-unet-att")

        from ..config import MODES

        if not isinstance(ck["arch"], str) or ck["arch"] not in networks.ARCHS:
            raise CheckpointError(f"{path}: unknown network architecture {_short(ck['arch'])}; expected one of: "
                                  f"{', '.join(networks.ARCHS)}")
        if not _is_int(ck["base_channels"]) or ck["base_channels"] < 1:
            raise bad("base_channels", "a positive integer")
        if not isinstance(ck["mode"], str) or ck["mode"] not in MODES:
            raise bad("mode", f"one of {', '.join(MODES)}")
        try:
            norm = Normalization.from_dict(ck["normalization"])
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{path}: invalid normalisation {_short(ck['normalization'])}; expected a finite "
                                  "offset and scale > 0; the model file is damaged (not the input)") from None
        shape = ck.get("train_shape")
        if shape is not None and not (isinstance(shape, list | tuple) and len(shape) == 3
                                      and all(_is_int(n) and n > 0 for n in shape)):
            raise bad("train_shape", "[T, Y, X] of positive integers or None")
        step = ck.get("step", 0)
        if not _is_int(step) or step < 0:
            raise bad("step", "a non-negative integer")
        for field in ("train_config", "provenance"):
            if ck.get(field) is not None and not isinstance(ck[field], Mapping):
                raise bad(field, "a dict")
        if not isinstance(ck.get("flip_backward", False), bool):
            raise bad("flip_backward", "True or False")
        if not isinstance(ck.get("preset", "custom"), str):
            raise bad("preset", "a preset name")
        return cls(
            arch=ck["arch"], base_channels=int(ck["base_channels"]), preset=ck.get("preset", "custom"),
            mode=ck["mode"], flip_backward=ck.get("flip_backward", False), norm=norm,
            train_shape=None if shape is None else tuple(int(n) for n in shape),
            train_config=dict(ck.get("train_config") or {}), provenance=dict(ck.get("provenance") or {}),
            step=int(step),
        )


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and np.isfinite(float(x))


def _short(x: Any) -> str:
    text = repr(x)
    return text if len(text) <= 80 else text[:77] + "..."


# key: (check, what is expected); the trainer uses exactly these
_STATE_FIELDS: dict[str, tuple[Any, str]] = {
    "optimizer": (lambda v: isinstance(v, Mapping) and isinstance(v.get("state"), Mapping)
                  and isinstance(v.get("param_groups"), list | tuple), "an optimiser state dict"),
    "sampler": (lambda v: isinstance(v, Mapping) and isinstance(v.get("bit_generator"), Mapping),
                "a sampler state"),
    "torch_rng": (lambda v: isinstance(v, torch.Tensor) and v.dtype == torch.uint8 and v.ndim == 1,
                  "a uint8 RNG state tensor"),
    "step": (lambda v: _is_int(v) and v >= 0, "a non-negative integer"),
    "elapsed_s": (lambda v: _is_number(v) and v >= 0, "a finite number of seconds >= 0"),
    "schedule": (lambda v: isinstance(v, list | tuple) and len(v) == 4 and _is_int(v[0]) and _is_number(v[1])
                 and (v[2] is None or _is_int(v[2])) and (v[3] is None or _is_number(v[3])),
                 "[base step, base seconds, max steps, max seconds]"),
}


def check_training_state(state: Any, path: Path, complete: bool) -> dict[str, Any]:
    """The resume state, every field the trainer reads checked (one line names the first bad one).

    Raises
    ------
    TrainingStateError
        A missing or wrong field. The message says what is wrong only: what to do instead (start a
        new run from the weights) is for the resuming caller to say, in its front end's words.
    """
    if not isinstance(state, Mapping):
        raise TrainingStateError(f"{path}: the training state is a {type(state).__name__}, not a dict; the file is "
                                 "damaged")
    for key, (ok, expected) in _STATE_FIELDS.items():
        if (key in state or complete) and (key not in state or not ok(state[key])):
            found = "missing" if key not in state else _short(state[key])
            raise TrainingStateError(f"{path}: the training state's {key} is {found}; expected {expected}; the "
                                     "file is damaged")
    for key in ("scaler", "history"):
        if state.get(key) is not None and not isinstance(state[key], Mapping):
            raise TrainingStateError(f"{path}: the training state's {key} is {_short(state[key])}; expected a dict; "
                                     "the file is damaged")
    return dict(state)


__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "CheckpointFields",
    "check_checkpoint",
    "check_training_state",
    "content_checksum",
    "is_checkpoint",
]
