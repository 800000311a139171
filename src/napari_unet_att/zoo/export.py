"""Export of one of our models as a BioImage Model Zoo (bioimage.io) package: one validated ``.zip``."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..model.denoiser import Denoiser
from ..stackio import atomic_file
from .package import DEFAULT_MIN_SIZE, bioimageio_spec, build_description

PathLike = str | os.PathLike


def export_bioimageio(den: Denoiser, out: PathLike, sample: Any = None,
                      min_size: int = DEFAULT_MIN_SIZE, name: str | None = None) -> Path:
    """Write ``den`` as a BioImage Model Zoo package (``.zip``, format 0.5), atomically.

    Parameters
    ----------
    den : Denoiser
        Model to export (normalisation stored in the model).
    out : str or path-like
        Destination ``.zip``; replaced only when the whole package was written and validated.
    sample : array-like (T, Y, X), optional
        Recording to cut the test input from (a centred ``min_size`` cube; a mirrored-scan model's
        raw ``(T, 2N, N)`` scan gives its forward lines); default: the shipped simulated
        recording of the model's mode.
    min_size : int
        Smallest valid tile per axis (see :func:`~napari_unet_att.zoo.package.tile_geometry`).
    name : str, optional
        Model name in the package.

    Returns
    -------
    Path
        ``out``.

    Raises
    ------
    InputError, ResourceError
        Missing ``bioimageio.spec``, a model the zoo's processing cannot express, an invalid
        size / sample / destination (a failed export leaves no file).
    """
    out = Path(out)
    if out.suffix.lower() != ".zip":
        raise InputError(f"a bioimage.io package is a .zip file; got --out {out}")
    spec, _ = bioimageio_spec()
    with tempfile.TemporaryDirectory(prefix="unet-att-zoo-") as tmp:
        folder = Path(tmp) / "files"
        folder.mkdir()
        try:
            descr = build_description(den, folder, sample, min_size, name)
        except ValueError as exc:  # pydantic's ValidationError, e.g. a --name the spec refuses
            if isinstance(exc, InputError):
                raise
            lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip() and "errors.pydantic" not in ln]
            raise InputError("bioimageio.spec refused the package: " + "; ".join(lines[1:4])) from None
        summary = descr.validation_summary
        if summary.status not in ("passed", "valid-format"):
            raise InputError(f"bioimageio.spec refused the package: {summary.format()[:600]}")
        staged = Path(tmp) / "package.zip"
        spec.save_bioimageio_package(descr, output_path=staged)
        with atomic_file(out) as dest:
            shutil.copyfile(staged, dest)
    return out


__all__ = ["export_bioimageio"]
