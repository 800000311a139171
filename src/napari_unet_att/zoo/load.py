"""Import of a bioimage.io package exported by napari-unet-att, without ``bioimageio.spec``.

:func:`load_package` reads the package's description and weights without unpickling
(``torch.load(weights_only=True)`` of the state dict; the TorchScript file is never loaded);
:func:`is_package` tells :func:`~napari_unet_att.model.checkpoint.load_any` when to call it.
Packages of other models are refused, named.
"""

from __future__ import annotations

import hashlib
import io as _pyio
import os
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError
from ..model.checkpoint import build_from_state, target_device
from ..model.denoiser import Denoiser
from ..model.normalization import Normalization
from ..provenance import timestamp
from .package import CONFIG_KEY, PACKAGE_FORMAT

PathLike = str | os.PathLike
_RDF_NAMES = ("rdf.yaml", "bioimageio.yaml")


def is_package(path: PathLike) -> bool:
    """True for a path that should be read as a bioimage.io package (a ``.zip`` or a zip with an RDF)."""
    path = Path(path)
    if path.suffix.lower() == ".zip":
        return True
    try:
        with zipfile.ZipFile(path) as zf:
            return any(n in _RDF_NAMES for n in zf.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def _read_rdf(zf: zipfile.ZipFile, path: Path) -> dict[str, Any]:
    import yaml

    name = next((n for n in _RDF_NAMES if n in zf.namelist()), None)
    if name is None:
        raise CheckpointError(f"{path} is a zip file but not a bioimage.io package (no rdf.yaml / bioimageio.yaml)")
    try:
        rdf = yaml.safe_load(zf.read(name).decode("utf-8"))
    except Exception as exc:
        raise CheckpointError(f"{path}: the package's {name} is unreadable ({type(exc).__name__}); the file is "
                              "damaged") from None
    if not isinstance(rdf, dict):
        raise CheckpointError(f"{path}: the package's {name} is not a description (a {type(rdf).__name__})")
    return rdf


def _what_it_is(rdf: Mapping[str, Any]) -> str:
    """A short description of a foreign package: name, type, weight formats, architecture."""
    weights = rdf.get("weights") if isinstance(rdf.get("weights"), Mapping) else {}
    arch = ""
    psd = weights.get("pytorch_state_dict") if isinstance(weights, Mapping) else None
    if isinstance(psd, Mapping) and isinstance(psd.get("architecture"), Mapping):
        arch = f", architecture {psd['architecture'].get('callable', '?')}"
    formats = ", ".join(sorted(map(str, weights))) or "none"
    return (f"the {rdf.get('type', 'unknown')} '{rdf.get('name', '?')}' (format {rdf.get('format_version', '?')}, "
            f"weights: {formats}{arch})")


def load_package(path: PathLike, device: Any = "cpu") -> Denoiser:
    """Load a bioimage.io package exported by napari-unet-att (no code run, nothing unpickled).

    Raises
    ------
    CheckpointError
        Missing / corrupt zip, not a bioimage.io package, a package of another model (named),
        weights that fail their sha256 or do not match the stored architecture.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"model package not found: {path}")
    try:
        with zipfile.ZipFile(path) as zf:
            rdf = _read_rdf(zf, path)
            meta = (rdf.get("config") or {}).get(CONFIG_KEY) if isinstance(rdf.get("config"), Mapping) else None
            if not isinstance(meta, Mapping):
                raise CheckpointError(f"{path} is {_what_it_is(rdf)}, not a napari-unet-att model; only packages "
                                      "exported by napari-unet-att can be loaded")
            entry = (rdf.get("weights") or {}).get("pytorch_state_dict") or {}
            data = zf.read(str(entry.get("source", "")))
    except (zipfile.BadZipFile, EOFError, KeyError, OSError, zipfile.LargeZipFile, zlib.error) as exc:
        # zlib.error: a damaged byte inside a compressed member fails while inflating, before any checksum
        raise CheckpointError(f"{path} is a corrupt or truncated bioimage.io package ({type(exc).__name__}: "
                              f"{str(exc)[:120]})") from None
    if entry.get("sha256") and hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise CheckpointError(f"{path}: the weights do not match their sha256 in the package; the file is damaged")
    return _denoiser(meta, data, path, target_device(device))


def _denoiser(meta: Mapping[str, Any], data: bytes, path: Path, device: torch.device) -> Denoiser:
    version = meta.get("package_format")
    if not isinstance(version, int) or version > PACKAGE_FORMAT:
        raise CheckpointError(f"{path} was exported by a newer napari-unet-att (package format {version!r}); "
                              "update napari-unet-att")
    try:
        state = torch.load(_pyio.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: the package's weights are unreadable or unsafe ({type(exc).__name__}); "
                              "they were not loaded") from None
    try:
        norm = Normalization.from_dict(meta["normalization"])
        arch, f, mode = str(meta["arch"]), int(meta["base_channels"]), str(meta["mode"])
    except (KeyError, TypeError, ValueError):
        raise CheckpointError(f"{path}: incomplete napari-unet-att metadata in the package") from None
    net = build_from_state(arch, f, state, path)
    shape = meta.get("train_shape")
    prov = dict(meta.get("provenance") or {})
    prov["imported_from"] = str(path)
    prov.setdefault("created", timestamp())
    return Denoiser(net=net.to(device).eval(), arch=arch, base_channels=f, preset=str(meta.get("preset", "custom")),
                    mode=mode, norm=norm, flip_backward=bool(meta.get("flip_backward", False)),
                    train_shape=None if shape is None else tuple(int(n) for n in shape),
                    train_config=dict(meta.get("train_config") or {}), provenance=prov,
                    step=int(meta.get("step", 0)))


__all__ = ["is_package", "load_package"]
