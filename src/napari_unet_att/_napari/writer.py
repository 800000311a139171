"""napari writer: an image layer to a TIFF, atomically, through :func:`napari_unet_att.stackio.write_stack`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import InputError, UserError


class WriteError(UserError, OSError):
    """A refused write (missing or unwritable folder, bad dtype), raised so that napari shows it.

    napari's writer lookup treats a ``ValueError`` from the writer as "this plugin cannot
    write that" and replaces the message with a vague warning; the engine's
    :class:`~napari_unet_att.errors.InputError` is a ``ValueError``, so it is re-raised as
    this ``OSError`` (what napari expects from a failed save), with the same message.
    """


def write_tiff(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write one image layer; returns the written path (napari's single-layer writer protocol).

    The layer's own dtype is kept (``dtype='input'``); the layer metadata that can be stored
    as JSON (e.g. how a denoised layer was made, its metrics) goes into the TIFF description.
    """
    import numpy as np

    from ..stackio import write_stack

    out = Path(path)
    if out.suffix.lower() not in (".tif", ".tiff"):
        out = out.with_suffix(".tif")
    input_dtype = np.dtype(getattr(data, "dtype", np.float32))
    try:
        write_stack(out, data, dtype="input", input_dtype=input_dtype,
                    metadata=_jsonable(meta.get("metadata") or {}))
    except InputError as exc:
        raise WriteError(str(exc)) from None
    return [str(out)]


def _jsonable(meta: dict[str, Any]) -> dict[str, Any]:
    """Keep only the entries that survive a JSON round trip (arrays, objects dropped)."""
    keep = {}
    for key, value in meta.items():
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            continue
        keep[str(key)] = value
    return keep
