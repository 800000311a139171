"""Weights of the reference tools (UNet-Att, DeepCAD-RT, DeepBID) as this package's networks.

Pure conversions of what the reference code saved: :func:`reference_source` tells which tool
a state dict comes from, :func:`convert_reference_state_dict` turns it into the state dict of
one of our networks (the module names are the references', so only prefixes are stripped),
and :func:`reference_normalization` reads the normalisation a ``para.yaml`` beside the
weights may hold. Reading the file itself (safely) and building the
:class:`~napari_unet_att.model.denoiser.Denoiser` is
:func:`napari_unet_att.model.checkpoint.import_reference`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import __version__
from ..errors import CheckpointError
from ..provenance import timestamp
from .networks import build_network
from .normalization import Normalization
from .safe_loading import error_summary

_FIRST_CONV = "encoders.0.basic_module.SingleConv1.conv.weight"
_FIRST_LEVEL_OUT = "encoders.0.basic_module.SingleConv2.conv.weight"
_PREFIXES = ("module.", "Generator.", "net_g.")
_WRAPPERS = ("params", "params_ema", "state_dict", "model_state_dict")


def _strip_prefixes(state: Mapping[str, object]) -> tuple[dict[str, object], list[str]]:
    """Remove ``module.`` / ``Generator.`` prefixes (in any nesting) common to all keys."""
    stripped: list[str] = []
    out = dict(state)
    changed = True
    while changed and out:
        changed = False
        for p in _PREFIXES:
            if all(k.startswith(p) for k in out):
                out = {k[len(p) :]: v for k, v in out.items()}
                stripped.append(p)
                changed = True
    return out, stripped


def _unwrap(state: object) -> Mapping[str, object]:
    if not isinstance(state, Mapping) or not state:
        raise CheckpointError(f"expected a non-empty state dict (name -> tensor); got {type(state).__name__}")
    # Lenient: also accept a BasicSR / training wrapper that the caller did not unwrap.
    for key in _WRAPPERS:
        if key in state and isinstance(state[key], Mapping) and not isinstance(state[key], torch.Tensor):
            return _unwrap(state[key])
    bad = [k for k in state if not isinstance(k, str)]
    if bad:
        raise CheckpointError(f"state dict keys must be strings; found {bad[:3]!r}")
    return state


def _brief(names: Sequence[str], limit: int = 5) -> str:
    """The first ``limit`` of ``names``, sorted and comma-separated, with how many more there are."""
    names = sorted(names)
    more = f" (+{len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def reference_source(state: Mapping[str, object]) -> str:
    """Which tool a state dict most likely comes from: 'UNet-Att', 'DeepCAD-RT', 'DeepBID' or 'unknown'.

    UNet-Att has attention gates; DeepCAD-RT saves the plain UNet under ``Generator.``;
    DeepBID (BasicSR) saves it without a prefix.
    """
    try:
        inner, stripped = _strip_prefixes(_unwrap(state))
    except CheckpointError:
        return "unknown"
    if any(k.startswith("attentionblocks.") for k in inner):
        return "UNet-Att"
    if _FIRST_CONV not in inner:
        return "unknown"
    return "DeepCAD-RT" if "Generator." in stripped else "DeepBID"


def convert_reference_state_dict(state: Mapping[str, object]) -> tuple[str, int, dict[str, torch.Tensor]]:
    """Turn a reference tool's state dict into ``(arch, base_channels, state)`` for :func:`build_network`.

    Accepts DeepCAD-RT and UNet-Att files (keys prefixed ``Generator.``), DeepBID ones (the
    ``params`` dict, no prefix) and this package's own networks' state dicts. The architecture
    comes from the keys (attention gates or not), ``base_channels`` from the first level's
    weight shapes; every key and shape is then checked against a freshly built network.
    Our module names equal the references', so the only mapping is prefix stripping.

    Raises
    ------
    CheckpointError
        When the dict matches no known layout: names the missing / unexpected keys or the
        mismatched shapes.
    """
    inner, _ = _strip_prefixes(_unwrap(state))
    arch = "unet_att" if any(k.startswith("attentionblocks.") for k in inner) else "unet3d"
    first, level = inner.get(_FIRST_CONV), inner.get(_FIRST_LEVEL_OUT)
    if not isinstance(first, torch.Tensor) or not isinstance(level, torch.Tensor):
        raise CheckpointError(
            "not a UNet-Att / DeepCAD-RT / DeepBID state dict: no first-level conv weights "
            f"({_FIRST_CONV!r}); keys start with: {_brief(list(inner), 4)}"
        )
    if first.ndim != 5 or level.ndim != 5 or first.shape[1] != 1:
        raise CheckpointError(
            f"first conv weight has shape {tuple(first.shape)}; expected (f/2, 1, 3, 3, 3) "
            "for a single-channel 3D network"
        )
    base_channels = int(level.shape[0])
    expected = build_network(arch, base_channels).state_dict()
    out = _match_keys(inner, expected, arch, base_channels)
    return arch, base_channels, out


def _match_keys(
    inner: Mapping[str, object], expected: Mapping[str, torch.Tensor], arch: str, base_channels: int
) -> dict[str, torch.Tensor]:
    """Check ``inner`` against ``expected`` key by key and shape by shape."""
    # BatchNorm's step counter is absent from files written by old torch versions: harmless.
    optional = {k for k in expected if k.endswith("num_batches_tracked")}
    missing = [k for k in expected if k not in inner and k not in optional]
    unexpected = [k for k in inner if k not in expected]
    what = f"{arch} with base_channels={base_channels}"
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} key(s): {_brief(missing)}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} key(s): {_brief(unexpected)}")
        raise CheckpointError(f"state dict does not match {what}: " + "; ".join(parts))
    wrong = []
    out: dict[str, torch.Tensor] = {}
    for k, ref in expected.items():
        v = inner.get(k, ref)
        if not isinstance(v, torch.Tensor):
            raise CheckpointError(f"state dict entry {k!r} is a {type(v).__name__}, not a tensor")
        if tuple(v.shape) != tuple(ref.shape):
            wrong.append(f"{k} {tuple(v.shape)} (expected {tuple(ref.shape)})")
        out[k] = v
    if wrong:
        raise CheckpointError(f"state dict does not match {what}: wrong shape for {_brief(wrong, 3)}")
    return out


# ----------------------------------------------------------------------------------------------
# what the reference tools keep beside the weights
# ----------------------------------------------------------------------------------------------
_NORM_KEYS = (("norm_offset", "norm_scale"), ("offset", "scale"), ("mean", "std"))


def _flatten(d: Any, out: dict[str, Any] | None = None) -> dict[str, Any]:
    out = {} if out is None else out
    if isinstance(d, Mapping):
        for k, v in d.items():
            if isinstance(v, Mapping):
                _flatten(v, out)
            else:
                out.setdefault(str(k), v)
    return out


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and np.isfinite(float(x))


def reference_normalization(path: Path) -> tuple[Normalization, dict[str, Any]]:
    """Normalisation from a ``para.yaml`` beside the weights at ``path``, else 'use the input's own'.

    Returns
    -------
    (Normalization, dict)
        The normalisation and provenance notes; ``notes['normalization']`` is ``'model'`` when
        ``para.yaml`` held one, ``'input'`` when inference must use each input's statistics.
    """
    para = path.parent / "para.yaml"
    notes: dict[str, Any] = {}
    if para.is_file():
        notes["para_yaml"] = str(para)
        try:
            import yaml

            flat = _flatten(yaml.safe_load(para.read_text(encoding="utf-8", errors="replace")))
        except Exception as exc:  # a damaged / foreign yaml must not block the import
            flat = {}
            notes["para_yaml_error"] = error_summary(exc)
        if "fmap" in flat:
            notes["para_yaml_fmap"] = flat["fmap"]
        for off_key, scale_key in _NORM_KEYS:
            off, scale = flat.get(off_key), flat.get(scale_key)
            if _is_number(off) and _is_number(scale) and float(scale) > 0:
                notes["normalization"] = "model"
                return Normalization(float(off), float(scale)), notes
    notes["normalization"] = "input"
    notes["normalization_note"] = ("the reference tools do not store their normalisation: normalise each input "
                                   "with its own statistics (they subtract the stack mean or minimum)")
    return Normalization(0.0, 1.0), notes


def reference_provenance(source: str, path: Path, notes: Mapping[str, Any]) -> dict[str, Any]:
    """Provenance of weights of ``source`` (a :func:`reference_source` name) imported from ``path``."""
    return {
        "source": f"{source} weights imported from {path.name}",
        "reference_tool": source,
        "imported_from": str(path),
        "created": timestamp(),
        "package": f"napari-unet-att {__version__}",
        "torch": torch.__version__,
        **notes,
    }


__all__ = [
    "convert_reference_state_dict",
    "reference_normalization",
    "reference_provenance",
    "reference_source",
]
