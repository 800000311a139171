"""Reading a time-lapse from a TIFF (or zarr) file, with the file checked before its pixels are trusted.

:func:`read_stack` returns a ``(T, Y, X)`` array without reading the pixels: a
:class:`~.tiffarray.TiffArray` (positioned reads of the requested region only) for contiguous,
uncompressed TIFFs, a dask array otherwise, so files larger than RAM work. Nothing is
memory-mapped for reading (see :mod:`.tiffarray`). A missing, empty, foreign, truncated or
corrupt file is an :class:`~napari_unet_att.errors.InputError` that says which, before any
work starts; tifffile only logs some of these, so its log is captured and checked.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import struct  # tifffile lets struct.error through for files cut inside the header
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from ..errors import InputError, InputWarning
from .axes import as_timelapse, check_axes, frame_chunks, to_timelapse
from .tiffarray import TiffArray

PathLike = str | os.PathLike


class _LogCapture(logging.Handler):
    """Collect tifffile's log messages: it reports corrupt files there instead of raising."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def _capture_tifffile_log() -> Iterator[_LogCapture]:
    handler = _LogCapture()
    logger = logging.getLogger("tifffile")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


def read_stack(
    path: PathLike, channel: int | None = None, lazy: bool = True, axes: str | None = None, series: int | None = None
) -> np.ndarray:
    """Open a TIFF (or a zarr array) time-lapse as a ``(T, Y, X)`` array.

    Parameters
    ----------
    path : str or path-like
        ``.tif`` / ``.tiff`` (ImageJ hyperstack, OME-TIFF, BigTIFF, plain) or a ``.zarr`` folder.
    channel : int, optional
        Channel to take when the file has a channel (``C``) or sample (``S``, RGB) axis.
    lazy : bool
        True: nothing is read yet (a :class:`TiffArray` for contiguous uncompressed files,
        else a dask array reading frames on demand). False: a numpy array in memory.
    axes : str, optional
        One letter per axis of the file's data (e.g. ``'TYX'``), replacing the axes its header
        declares: ImageJ files in the wild often call their frames channels (``CYX``) or slices
        (``ZYX``). See :func:`check_axes`.
    series : int, optional
        Which image series of a TIFF holding several (OME / Micro-Manager positions, pages of
        different shapes) to read. Default: series 0, with an :class:`~napari_unet_att.errors.InputWarning`
        naming the others when there are several (an ImageJ hyperstack is one series).

    Returns
    -------
    array (T, Y, X)
        uint8, uint16, int16 or float32 (other dtypes converted exactly, see :func:`as_timelapse`).

    Raises
    ------
    InputError
        Missing file, not a TIFF, truncated / corrupt TIFF, no such series.
    LayoutError
        (an ``InputError``) A readable file whose data are not a time-lapse: its subject is
        ``'file NAME'`` (``'array'`` for zarr), its message gives the shape, axes and dtype found.
    """
    path, user_axes = Path(path), axes
    if path.suffix.lower() == ".zarr" and path.is_dir():
        if series not in (None, 0):
            raise InputError(f"{path} is a zarr array, which has no image series to choose; series is for TIFF files")
        return _read_zarr(path, channel, lazy, user_axes)
    check_readable_file(path)
    size = path.stat().st_size
    with _capture_tifffile_log() as log:
        try:
            with tifffile.TiffFile(path) as tif:
                index, note = choose_series(tif.series, series, path)
                chosen = tif.series[index]
                axes, shape = chosen.axes, tuple(chosen.shape)
                _check_complete(tif, chosen, path, size, log.messages)
                raw = _raw_layout(tif, chosen)
        except InputError:
            raise
        except tifffile.TiffFileError as exc:
            raise InputError(not_tiff_message(path, exc)) from None
        except (EOFError, OSError, ValueError, IndexError, KeyError, struct.error) as exc:
            raise InputError(f"{path} is a truncated or corrupted TIFF file ({type(exc).__name__}: {exc})") from None
    if note:  # before the layout checks: a refusal of series 0 is clearer knowing the others exist
        # Located here, not at the caller: a file read twice in one run is then reported once.
        warnings.warn(note, InputWarning, stacklevel=1)
    what = f"file {path.name}"
    arr = _open_pixels(path, raw, shape, index)
    out = to_timelapse(arr, check_axes(user_axes, shape, what) if user_axes else axes, channel, what)
    if lazy:
        return out
    try:
        return np.asarray(out)
    except Exception as exc:  # a decoder error while reading a damaged compressed file
        raise InputError(f"{path} could not be read completely; the TIFF is truncated or corrupted "
                         f"({type(exc).__name__}: {exc})") from None


def check_readable_file(path: Path) -> None:
    """Refuse a path that is missing, a folder, empty or unreadable, saying which (:class:`InputError`)."""
    if not path.exists():
        raise InputError(f"file not found: {path}")
    if path.is_dir():
        raise InputError(f"{path} is a folder; expected a TIFF file (.tif) or a .zarr array folder")
    if path.stat().st_size == 0:
        raise InputError(f"{path} is empty (0 bytes); expected a TIFF file")
    if not os.access(path, os.R_OK):
        raise InputError(f"{path} cannot be read (permission denied)")


def not_tiff_message(path: Path, exc: Exception) -> str:
    """What a file tifffile refused (``exc``) is instead: a cut header, a text file, or its first bytes."""
    with open(path, "rb") as fh:
        head = fh.read(512)
    if len(head) < 8 and head[:2] in (b"II", b"MM"):
        return f"{path} is a truncated TIFF file: only {len(head)} bytes, not even a complete header"
    kind = "a text file" if looks_like_text(head) else f"not a TIFF file (it starts with {head[:8]!r})"
    return f"{path} is {kind}; expected a TIFF image stack ({exc})"


def looks_like_text(head: bytes) -> bool:
    """Whether the first bytes of a file are printable UTF-8 text (a file that is not an image or model)."""
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return bool(text) and all(c.isprintable() or c in "\r\n\t" for c in text)


def choose_series(found: Sequence[Any], series: int | None, path: Path) -> tuple[int, str | None]:
    """The index of the series to read and, when it was not chosen among several, a note saying so.

    Raises
    ------
    InputError
        ``series`` is not one of the file's series (the message lists them).
    """
    n = len(found)
    if not n:
        raise InputError(f"{path} is a truncated or corrupted TIFF file: no image series in it")
    if series is None:
        if n == 1:
            return 0, None
        return 0, (f"file {path.name} holds {n} image series ({_describe_series(found)}); series 0 is read, "
                   f"not the others (choose one with series = 0..{n - 1})")
    if isinstance(series, bool) or not isinstance(series, int | np.integer) or not 0 <= series < n:
        held = f"{n} ({_describe_series(found)}); choose series = 0..{n - 1}" if n > 1 else "a single one, series 0"
        raise InputError(f"file {path.name} has no image series {series!r}: it holds {held}")
    return int(series), None


def _describe_series(found: Sequence[Any], most: int = 6) -> str:
    """``0: (10, 64, 64) TYX uint16, 1-3: (5, 32, 32) TYX uint16``: runs of alike series grouped."""
    runs: list[list[Any]] = []
    for i, s in enumerate(found):
        desc = f"{tuple(s.shape)} {s.axes} {getattr(s.dtype, 'name', s.dtype)}"
        if runs and runs[-1][2] == desc:
            runs[-1][1] = i
        else:
            runs.append([i, i, desc])
    parts = [f"{a}: {d}" if a == b else f"{a}-{b}: {d}" for a, b, d in runs]
    more = f", … {len(parts) - most} more" if len(parts) > most else ""
    return ", ".join(parts[:most]) + more


def _check_complete(tif: tifffile.TiffFile, series: Any, path: Path, size: int, log: list[str]) -> None:
    """Raise if the file is shorter than its own structure says (tifffile only logs that)."""
    problem = None
    if tif.is_imagej:
        images = (tif.imagej_metadata or {}).get("images")
        found = math.prod(n for n, a in zip(series.shape, series.axes, strict=True) if a not in "YXS")
        if images and int(images) > found:
            problem = f"ImageJ metadata announce {images} images, the file holds {found}"
    if problem is None and series.dataoffset is not None:
        end = series.dataoffset + series.nbytes
        if end > size:
            problem = f"the pixel data should end at byte {end:,} but the file has {size:,} bytes"
    if problem is None and series.dataoffset is None:
        problem = _check_pages(series, size)
    if problem is not None:
        hint = f"; tifffile: {log[0]}" if log else ""
        raise InputError(f"{path} is a truncated or corrupted TIFF file: {problem}{hint}")


def _check_pages(series: Any, size: int) -> str | None:
    pages = list(series.pages)
    if not pages or pages[0] is None:
        return "no readable image page"
    expected = series.size // max(1, math.prod(pages[0].shape))
    if len(pages) < expected or any(p is None for p in pages):
        n = sum(p is not None for p in pages)
        return f"{n} of {expected} image pages are present"
    for i, p in enumerate(pages):
        ends = [o + c for o, c in zip(p.dataoffsets, p.databytecounts, strict=False) if c]
        if ends and max(ends) > size:
            return f"page {i} points beyond the end of the file ({max(ends):,} > {size:,} bytes)"
    return None


def _raw_layout(tif: tifffile.TiffFile, series: Any) -> tuple[int, np.dtype] | None:
    """(byte offset, dtype as stored) when the pixels are one uncompressed block, else None."""
    offset, dtype = series.dataoffset, series.dtype  # tifffile: None unless one block in final form
    if offset is None or dtype is None or not tif.filehandle.is_file:
        return None
    if series.keyframe.bitspersample != 8 * dtype.itemsize:  # packed 1 / 12-bit samples: let tifffile decode
        return None
    return int(offset), np.dtype(tif.byteorder + dtype.char)  # the file's byte order, converted when read


def _open_pixels(path: Path, raw: tuple[int, np.dtype] | None, shape: tuple[int, ...], series: int = 0) -> Any:
    """Positioned reads when the pixels are one uncompressed block, else a dask array over zarr (of ``series``)."""
    if raw is not None:
        return TiffArray(path, raw[0], shape, raw[1])
    try:
        import dask.array as da
        import zarr

        store = tifffile.imread(path, aszarr=True, series=series)
        z = zarr.open(store, mode="r")
        return da.from_zarr(z, chunks=frame_chunks(z.shape, z.dtype))
    except Exception:  # exotic layouts zarr cannot express: read it plainly (small files in practice)
        return tifffile.imread(path, series=series)


def _read_zarr(path: Path, channel: int | None, lazy: bool, axes: str | None = None) -> Any:
    import dask.array as da
    import zarr

    try:
        z = zarr.open(str(path), mode="r")
    except Exception as exc:
        raise InputError(f"{path} is not a readable zarr array ({type(exc).__name__}: {exc})") from None
    if not hasattr(z, "shape"):
        raise InputError(f"{path} is a zarr group, not an array; expected a single (T, Y, X) array")
    out = as_timelapse(da.from_zarr(z), channel=channel, axes=axes)
    return out if lazy else np.asarray(out)


def expand_inputs(paths: Sequence[PathLike]) -> list[str]:
    """Input paths with every folder replaced by the TIFF files directly in it, sorted by name.

    A ``.zarr`` folder is an array, not a folder of inputs, and stays as it is.

    Raises
    ------
    InputError
        A folder with no ``.tif`` / ``.tiff`` file in it.
    """
    out: list[str] = []
    for path in map(Path, paths):
        if path.is_dir() and path.suffix.lower() != ".zarr":
            found = sorted(p for p in path.iterdir()
                           if p.suffix.lower() in (".tif", ".tiff") and p.is_file() and not p.name.startswith("."))
            if not found:
                raise InputError(f"{path} is a folder with no .tif / .tiff file in it; give TIFF files or a folder "
                                 "of them")
            out += [str(p) for p in found]
        else:
            out.append(str(path))
    return out


