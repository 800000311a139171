"""Regions of interest (cells) read from a file, for ROI trace measures.

Two kinds are accepted, each checked so that a wrong file is refused with a reason instead of
silently giving numbers (a ``(T, Y, X)`` stack once passed as 300 "ROIs", a float image as
thousands of labels):

- a 2D integer **label image** (``.tif`` / ``.tiff`` / ``.npy``; 0 = background, one integer
  per cell), of the frames' size;
- a napari **Shapes export** (``.csv`` as napari's *File > Save Selected Layers* writes it:
  ``index, shape-type, vertex-index, axis-0, axis-1[, ...]``), rasterised to labels here;
  polygons, rectangles and ellipses are regions, lines and paths are refused.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from ..errors import InputError

#: Smallest typical ROI (pixels): a label image whose median label is smaller is noise, not cells.
MIN_MEDIAN_ROI_PIXELS = 4
_AREA_SHAPES = ("polygon", "rectangle", "ellipse")


def read_rois(path: str | os.PathLike, shape_yx: tuple[int, int]) -> tuple[np.ndarray, str]:
    """ROIs of a file as a ``(Y, X)`` int32 label image, and one line saying what was used.

    Parameters
    ----------
    path : str or path-like
        A label image (``.tif``, ``.tiff``, ``.npy``) or a napari Shapes ``.csv``.
    shape_yx : (int, int)
        The frames' size: a label image must have it; shapes are drawn into it.

    Raises
    ------
    InputError
        Missing or unreadable file, not 2D, not integer, a different size, no ROI, labels that
        look like noise, or shapes that are not regions.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"ROI file not found: {path}")
    shape_yx = (int(shape_yx[0]), int(shape_yx[1]))
    if path.suffix.lower() == ".csv":
        labels = _rasterise_shapes_csv(path, shape_yx)
        kind = "shapes"
    else:
        labels = _check_label_image(_read_label_file(path), path, shape_yx)
        kind = "labels"
    ids, sizes = np.unique(labels[labels > 0], return_counts=True)
    what = (f"{len(ids)} ROIs from {path.name} ({kind}, {int(sizes.min())}-{int(sizes.max())} pixels each) "
            f"on {shape_yx[0]} x {shape_yx[1]} frames")
    return labels, what


def _read_label_file(path: Path) -> np.ndarray:
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            return np.load(path, allow_pickle=False)
        if suffix in (".tif", ".tiff"):
            import tifffile

            return tifffile.imread(path)
    except Exception as exc:  # any reader failure means "not a readable label image"
        raise InputError(f"{path} could not be read as a label image ({type(exc).__name__}: {exc})") from None
    raise InputError(f"{path}: ROIs must be a label image (.tif, .tiff, .npy) or a napari Shapes export (.csv)")


def _check_label_image(arr: np.ndarray, path: Path, shape_yx: tuple[int, int]) -> np.ndarray:
    """A 2D integer label image of the frames' size, with ROIs of plausible size."""
    arr = np.asarray(arr)
    found = f"found shape {arr.shape}, dtype {arr.dtype}"
    squeezed = arr.squeeze() if arr.ndim > 2 else arr
    if squeezed.ndim != 2:
        raise InputError(f"{path}: {found}; ROIs must be one 2D label image (Y, X) (0 = background, one integer "
                         "per cell), not a stack: draw or export them on a single frame")
    if squeezed.dtype.kind not in "biu":
        raise InputError(f"{path}: {found}; a label image holds integers (0 = background, one per cell), not "
                         f"{squeezed.dtype} intensities")
    if squeezed.shape != shape_yx:
        raise InputError(f"{path}: {found}; the ROIs must cover the frames, which are {shape_yx[0]} x "
                         f"{shape_yx[1]}")
    labels = squeezed.astype(np.int64)
    if labels.min() < 0:
        raise InputError(f"{path}: {found}; labels must be >= 0 (0 = background)")
    _, sizes = np.unique(labels[labels > 0], return_counts=True)
    if not len(sizes):
        raise InputError(f"{path}: {found}; no ROI in it (every pixel is 0, the background)")
    if np.median(sizes) < MIN_MEDIAN_ROI_PIXELS:
        raise InputError(f"{path}: {found}; {len(sizes)} labels of median size {np.median(sizes):g} pixels: this "
                         "looks like an intensity image, not a label image of cells")
    return labels.astype(np.int32)


def _rasterise_shapes_csv(path: Path, shape_yx: tuple[int, int]) -> np.ndarray:
    """Draw the regions of a napari Shapes CSV into a label image (later shapes under earlier ones)."""
    from skimage.draw import ellipse, polygon

    shapes = _read_shapes_csv(path)
    labels = np.zeros(shape_yx, dtype=np.int32)
    for i, (kind, yx) in enumerate(shapes, start=1):
        if kind == "ellipse":
            (y0, x0), (y1, x1) = yx.min(axis=0), yx.max(axis=0)
            rr, cc = ellipse((y0 + y1) / 2, (x0 + x1) / 2, (y1 - y0) / 2, (x1 - x0) / 2, shape=shape_yx)
        else:
            rr, cc = polygon(yx[:, 0], yx[:, 1], shape=shape_yx)
        free = labels[rr, cc] == 0
        labels[rr[free], cc[free]] = i
    if not labels.any():
        raise InputError(f"{path}: its {len(shapes)} shapes lie outside the {shape_yx[0]} x {shape_yx[1]} frames")
    return labels


def _read_shapes_csv(path: Path) -> list[tuple[str, np.ndarray]]:
    """``[(shape_type, (n, 2) y/x vertices), ...]`` of a napari Shapes CSV, in file order."""
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path} could not be read as a napari Shapes export ({exc})") from None
    header = [h.strip() for h in rows[0]] if rows else []
    axes = [h for h in header if h.startswith("axis-")]
    if header[:3] != ["index", "shape-type", "vertex-index"] or len(axes) < 2:
        raise InputError(f"{path} is not a napari Shapes export: expected the columns index, shape-type, "
                         f"vertex-index, axis-0, axis-1, ... (found {', '.join(header[:6]) or 'nothing'})")
    cols = [header.index(a) for a in axes[-2:]]  # (y, x): the last two axes; any others are time/z
    shapes: dict[str, tuple[str, list]] = {}
    try:
        for row in rows[1:]:
            if row:
                kind, vertices = shapes.setdefault(row[0], (row[1].strip(), []))
                vertices.append([float(row[c]) for c in cols])
    except (ValueError, IndexError) as exc:
        raise InputError(f"{path}: a row of the Shapes export is malformed ({exc})") from None
    if not shapes:
        raise InputError(f"{path} holds no shape: draw ROIs around cells first")
    bad = sorted({kind for kind, _ in shapes.values() if kind not in _AREA_SHAPES})
    if bad:
        raise InputError(f"{path}: {', '.join(bad)} shapes enclose no area; ROIs must be polygons, rectangles or "
                         "ellipses")
    return [(kind, np.asarray(v, dtype=float)) for kind, v in shapes.values()]
