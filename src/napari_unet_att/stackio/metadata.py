"""How the data were made, stored as JSON in every output file and read back by :func:`read_metadata`.

TIFFs written in ImageJ layout carry it in the ImageJ ``Info`` property (shown by ImageJ's
Image > Show Info), other TIFFs as the JSON image description, zarr arrays in their attributes;
always under :data:`METADATA_KEY`.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from ..errors import InputError
from ..provenance import timestamp
from .read import check_readable_file, not_tiff_message

METADATA_KEY = "napari_unet_att"

PathLike = str | os.PathLike


def provenance_json(metadata: dict[str, Any] | None) -> dict[str, Any]:
    """``metadata`` after the software version and the time of writing, as plain JSON types."""
    from .. import __version__

    md = {"software": f"napari-unet-att {__version__}",
          "written": timestamp()}
    md.update(metadata or {})
    return json.loads(json.dumps(md, default=_json_default))


def tiff_metadata(metadata: dict[str, Any] | None, imagej: bool, axes: str | None) -> dict[str, Any]:
    """tifffile ``metadata``: axes plus our JSON (ImageJ 'Info' property, or the JSON description)."""
    md = provenance_json(metadata)
    out: dict[str, Any] = {} if axes is None else {"axes": axes}
    if imagej:
        out["Info"] = json.dumps({METADATA_KEY: md})  # shown by ImageJ's Image > Show Info
    else:
        out[METADATA_KEY] = md  # tifffile stores the whole dict as the JSON ImageDescription
    return out


def rewrite_tiff_metadata(path: PathLike, metadata: dict[str, Any] | None) -> None:
    """Store ``metadata`` (:func:`tiff_metadata`'s JSON) in place of what a TIFF written by this module holds.

    A file streamed frame by frame gets its header when it is created, before the job has chosen what it does
    on the way (the output smoothing, the registration); this brings the record up to date at the end. The
    first page's tag is rewritten (a longer value goes to the end of the file); the pixels are not touched.
    """
    md = provenance_json(metadata)
    with tifffile.TiffFile(path, mode="r+b") as tif:
        page = tif.pages.first
        if tif.is_imagej:  # the ImageJ 'Info' property: the byte counts and the data tags together
            counts, data = tifffile.imagej_metadata_tag({"Info": json.dumps({METADATA_KEY: md})}, tif.byteorder)
            page.tags[counts[0]].overwrite(counts[3])
            page.tags[data[0]].overwrite(data[3])
        else:  # the JSON image description that tifffile wrote: its 'shape' kept, our entry replaced
            tag = page.tags["ImageDescription"]
            description = json.loads(tag.value)
            description[METADATA_KEY] = md
            tag.overwrite(json.dumps(description).encode("ascii"))  # (json.dumps escapes anything else)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)


def read_metadata(path: PathLike) -> dict[str, Any] | None:
    """The metadata dict stored by :func:`~.write.write_stack` / :func:`~.write.output_stack`, or None."""
    path = Path(path)
    if path.suffix.lower() == ".zarr" and path.is_dir():
        import zarr

        md = zarr.open(str(path), mode="r").attrs.get(METADATA_KEY)
        return dict(md) if md is not None else None
    check_readable_file(path)
    try:
        with tifffile.TiffFile(path) as tif:
            if tif.is_imagej:
                info = (tif.imagej_metadata or {}).get("Info")
                with contextlib.suppress(TypeError, ValueError):
                    md = json.loads(info).get(METADATA_KEY) if info else None
                    if isinstance(md, dict):
                        return md
            shaped = tif.shaped_metadata or ()
    except tifffile.TiffFileError as exc:
        raise InputError(not_tiff_message(path, exc)) from None
    for d in shaped:
        md = d.get(METADATA_KEY) if isinstance(d, dict) else None
        if isinstance(md, dict):
            return md
    return None

