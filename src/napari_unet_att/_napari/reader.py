"""napari reader: TIFF time-lapses, opened lazily (memory map or dask), never read whole."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import LayoutError

TIFF_SUFFIXES = (".tif", ".tiff")

LayerData = tuple[Any, dict[str, Any], str]


def napari_get_reader(path: str | list[str]) -> Callable[[str | list[str]], list[LayerData]] | None:
    """Return :func:`read_tiffs` when every path is a TIFF file or a folder holding TIFF files,
    else None (napari tries others)."""
    paths = [path] if isinstance(path, str) else list(path)
    if not paths or not all(str(p).lower().endswith(TIFF_SUFFIXES) or _tiff_folder(p) for p in paths):
        return None
    return read_tiffs


def _tiff_folder(path: Any) -> bool:
    """A folder (not a .zarr array) with at least one TIFF file directly in it."""
    path = Path(path)
    return (path.is_dir() and path.suffix.lower() != ".zarr"
            and any(p.suffix.lower() in TIFF_SUFFIXES and p.is_file() for p in path.iterdir()))


def read_tiffs(path: str | list[str]) -> list[LayerData]:
    """One image layer per file (a folder: per TIFF file in it), named after the file, data left on disk.

    A folder of recordings dropped on napari becomes one layer each, ready to be trained on
    together (the training dock's "Also train on").

    A stack our engine accepts comes through :func:`napari_unet_att.stackio.read_stack` (memory
    map / dask); anything else it rejects (e.g. several channels without a choice) is still
    shown, as a lazy view of the file, so dropping a file never ends in nothing.
    """
    from ..stackio import expand_inputs

    paths = [path] if isinstance(path, str) else list(path)
    return [_read_one(Path(p)) for p in expand_inputs(paths)]


def _read_one(path: Path) -> LayerData:
    from ..errors import InputError
    from ..stackio import read_stack

    meta: dict[str, Any] = {"source_path": str(path)}
    try:
        data = read_stack(path, lazy=True)
    except InputError as exc:
        data = _viewable(path, exc)
        if data is None:
            raise  # the engine's message: missing file, not a TIFF, truncated, unsupported dtype
        meta["unet_att_note"] = str(exc)
    return data, {"name": path.stem, "metadata": meta}, "image"


def _viewable(path: Path, exc: Exception) -> Any:
    """A lazy view of a TIFF the engine refused for its layout only (2D, channels, bool), else None.

    :func:`~napari_unet_att.stackio.read_stack` reports layout and dtype problems of a readable
    TIFF as a :class:`~napari_unet_att.errors.LayoutError`; problems with the file itself
    (missing, not a TIFF, truncated) are other errors. Only the first kind can be shown: a truncated file
    would fail later, while napari draws it, with an error nobody can act on. Data napari
    cannot display (complex) are refused too.
    """
    if not isinstance(exc, LayoutError):
        return None
    try:
        data = _lazy_any_tiff(path)
    except Exception:  # noqa: BLE001 - the engine's message is the better one to show
        return None
    return data if data.dtype.kind in "biuf" else None


def _lazy_any_tiff(path: Path) -> Any:
    """The file's first series as a dask array (chunks read on demand)."""
    import dask.array as da
    import tifffile
    import zarr

    store = tifffile.imread(path, aszarr=True)
    return da.from_zarr(zarr.open(store, mode="r"))
