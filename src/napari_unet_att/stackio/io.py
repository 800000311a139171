"""TIFF (and zarr) reading and writing, and validation of time-lapse arrays.

Everything the engine reads goes through :func:`read_stack` / :func:`as_timelapse`, which
return a ``(T, Y, X)`` array without reading the pixels: a :class:`TiffArray` (positioned
reads of the requested region only) for contiguous, uncompressed TIFFs, a dask array
otherwise, so files larger than RAM work. Nothing is memory-mapped for reading: mapped file
pages count in the process's resident memory (``top``, ``ru_maxrss``, container limits) and
would make it grow with the file. Everything it writes goes through :func:`write_stack` /
:func:`output_stack`, which never leave a partial file behind: data go to a temporary file
in the destination folder that is renamed into place only once complete.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import math
import mmap
import os
import shutil
import struct  # tifffile lets struct.error through for files cut inside the header
import threading
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from ..errors import InputError, ResourceError
from ..provenance import timestamp

#: dtypes the engine takes as they are; others are converted exactly (see :func:`as_timelapse`).
NATIVE_DTYPES = tuple(np.dtype(d) for d in ("uint8", "uint16", "int16", "float32"))
#: dtypes ImageJ can open (tifffile refuses others with ``imagej=True``).
IMAGEJ_DTYPES = tuple(np.dtype(d) for d in ("uint8", "uint16", "int16", "float32"))
MIN_FRAMES = 3
BIGTIFF_BYTES = 2**31  # above 2 GB switch to BigTIFF: classic TIFF offsets stop at 4 GB, keep a margin
METADATA_KEY = "napari_unet_att"
_CHUNK_BYTES = 64 * 2**20  # frames per dask chunk / per write block: about 64 MB
_SPAN_BYTES = 4 * 2**20  # TiffArray: read a region's whole byte span at once up to this size (or 2x the region)

PathLike = str | os.PathLike


# ----------------------------------------------------------------------------------------------
# reading
# ----------------------------------------------------------------------------------------------
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


def read_stack(path: PathLike, channel: int | None = None, lazy: bool = True, axes: str | None = None) -> np.ndarray:
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

    Returns
    -------
    array (T, Y, X)
        uint8, uint16, int16 or float32 (other dtypes converted exactly, see :func:`as_timelapse`).

    Raises
    ------
    InputError
        Missing file, not a TIFF, truncated / corrupt TIFF, or data that are not a time-lapse
        (the message gives the shape, axes and dtype found).
    """
    path, user_axes = Path(path), axes
    if path.suffix.lower() == ".zarr" and path.is_dir():
        return _read_zarr(path, channel, lazy, user_axes)
    _check_readable_file(path)
    size = path.stat().st_size
    with _capture_tifffile_log() as log:
        try:
            with tifffile.TiffFile(path) as tif:
                series = tif.series[0]
                axes, shape = series.axes, tuple(series.shape)
                _check_complete(tif, series, path, size, log.messages)
                raw = _raw_layout(tif, series)
        except InputError:
            raise
        except tifffile.TiffFileError as exc:
            raise InputError(_not_tiff_message(path, exc)) from None
        except (EOFError, OSError, ValueError, IndexError, KeyError, struct.error) as exc:
            raise InputError(f"{path} is a truncated or corrupted TIFF file ({type(exc).__name__}: {exc})") from None
    what = f"file {path.name}"
    arr = _open_pixels(path, raw, shape)
    out = _to_timelapse(arr, check_axes(user_axes, shape, what) if user_axes else axes, channel, what)
    if lazy:
        return out
    try:
        return np.asarray(out)
    except Exception as exc:  # a decoder error while reading a damaged compressed file
        raise InputError(f"{path} could not be read completely; the TIFF is truncated or corrupted "
                         f"({type(exc).__name__}: {exc})") from None


def _check_readable_file(path: Path) -> None:
    if not path.exists():
        raise InputError(f"file not found: {path}")
    if path.is_dir():
        raise InputError(f"{path} is a folder; expected a TIFF file (.tif) or a .zarr array folder")
    if path.stat().st_size == 0:
        raise InputError(f"{path} is empty (0 bytes); expected a TIFF file")
    if not os.access(path, os.R_OK):
        raise InputError(f"{path} cannot be read (permission denied)")


def _not_tiff_message(path: Path, exc: Exception) -> str:
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


def _open_pixels(path: Path, raw: tuple[int, np.dtype] | None, shape: tuple[int, ...]) -> Any:
    """Positioned reads when the pixels are one uncompressed block, else a dask array over zarr."""
    if raw is not None:
        return TiffArray(path, raw[0], shape, raw[1])
    try:
        import dask.array as da
        import zarr

        store = tifffile.imread(path, aszarr=True, series=0)
        z = zarr.open(store, mode="r")
        return da.from_zarr(z, chunks=_frame_chunks(z.shape, z.dtype))
    except Exception:  # exotic layouts zarr cannot express: read it plainly (small files in practice)
        return tifffile.imread(path, series=0)


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


def _frame_chunks(shape: tuple[int, ...], dtype: np.dtype) -> tuple[int, ...]:
    """Dask chunks of whole frames, about ``_CHUNK_BYTES`` each."""
    frame = math.prod(shape[1:]) * np.dtype(dtype).itemsize
    k = max(1, min(shape[0], _CHUNK_BYTES // max(1, frame))) if shape else 1
    return (k, *shape[1:])


# ----------------------------------------------------------------------------------------------
# positioned reads
# ----------------------------------------------------------------------------------------------
class _OpenFile:
    """One read-only file descriptor shared by a :class:`TiffArray` and its views.

    Reads are positioned (``os.preadv`` / ``os.pread``), so threads (the inference prefetch
    thread, napari's slicing thread) share it safely. Opened lazily and again after a fork;
    closed when the last view goes away.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh: Any = None
        self._pid = -1
        self._lock = threading.Lock()  # only for the seek + read fallback (no pread, e.g. Windows)

    def _handle(self) -> Any:
        if self._fh is None or self._pid != os.getpid():
            self._fh = open(self.path, "rb", buffering=0)  # noqa: SIM115 (lives as long as the array)
            self._pid = os.getpid()
        return self._fh

    def read_into(self, buf: memoryview, offset: int) -> None:
        """Fill ``buf`` (bytes) from ``offset``; a short file is an :class:`InputError`."""
        fh = self._handle()
        done = 0
        while done < len(buf):
            part = buf[done:]
            if hasattr(os, "preadv"):
                n = os.preadv(fh.fileno(), [part], offset + done)
            elif hasattr(os, "pread"):
                data = os.pread(fh.fileno(), len(part), offset + done)
                n = len(data)
                part[:n] = data
            else:
                with self._lock:
                    fh.seek(offset + done)
                    n = fh.readinto(part) or 0
            if n <= 0:
                raise InputError(f"{self.path} ended at byte {offset + done:,} while reading its pixels; the file "
                                 "was truncated or replaced after it was opened")
            done += n

    def close(self) -> None:
        if self._fh is not None:
            with contextlib.suppress(OSError):
                self._fh.close()
            self._fh = None

    def __del__(self) -> None:
        self.close()


class TiffArray:
    """Read-only lazy view of uncompressed pixels in a file, read with positioned reads.

    Like a ``np.memmap`` but without a memory map: indexing reads exactly the requested region
    (frame blocks, or ``(t, y, x)`` tiles) into a new numpy array, so the process's resident
    memory does not grow with the file. It supports the array protocol napari, dask and the
    engine use: ``shape``, ``dtype``, ``ndim``, ``size``, ``len``, ``arr[key]`` (basic indexing:
    integers, slices with any step, ``...``; returns a numpy array), ``np.asarray(arr)`` (reads
    everything), and lazy :meth:`subarray`, :meth:`transpose` and :meth:`astype`.

    Parameters
    ----------
    path : str or path-like
        The file.
    offset : int
        Byte offset of element ``[0, ..., 0]``.
    shape : tuple of int
        Shape of the (C-ordered) block.
    file_dtype : numpy dtype
        Element type as stored, with its byte order (``'>u2'`` for big-endian uint16).
    dtype : numpy dtype, optional
        Type of the arrays returned (default: ``file_dtype`` in native byte order); values are
        converted with ``astype`` on read.
    """

    def __init__(
        self,
        path: PathLike,
        offset: int,
        shape: tuple[int, ...],
        file_dtype: Any,
        dtype: Any = None,
        *,
        strides: tuple[int, ...] | None = None,
        _file: _OpenFile | None = None,
    ) -> None:
        self.path = Path(path)
        self.offset = int(offset)
        self.shape = tuple(int(n) for n in shape)
        self.file_dtype = np.dtype(file_dtype)
        self.dtype = np.dtype(dtype) if dtype is not None else self.file_dtype.newbyteorder("=")
        if strides is None:  # C order
            strides = _c_strides(self.shape, self.file_dtype.itemsize)
        self.strides = tuple(int(s) for s in strides)
        self._file = _file if _file is not None else _OpenFile(self.path)

    # -- array attributes
    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    @property
    def itemsize(self) -> int:
        return self.dtype.itemsize

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a 0-d array")
        return self.shape[0]

    def __repr__(self) -> str:
        return f"TiffArray({str(self.path)!r}, shape={self.shape}, dtype={self.dtype})"

    def __dask_tokenize__(self) -> tuple[Any, ...]:  # a stable dask key without reading the data
        st = self.path.stat()
        return (str(self.path), st.st_mtime_ns, st.st_size, self.offset, self.shape, self.file_dtype.str,
                self.dtype.str, self.strides)

    def __reduce__(self) -> tuple[Any, ...]:  # picklable (dask's process scheduler): reopened by path
        return (_rebuild_tiff_array, (str(self.path), self.offset, self.shape, self.file_dtype.str,
                                      self.dtype.str, self.strides))

    # -- lazy views
    def _derived(self, offset: int, shape: tuple[int, ...], strides: tuple[int, ...], dtype: np.dtype) -> TiffArray:
        return TiffArray(self.path, offset, shape, self.file_dtype, dtype, strides=strides, _file=self._file)

    def subarray(self, key: Any) -> TiffArray:
        """``self[key]`` as a lazy view (nothing read): basic indexing only."""
        key = key if isinstance(key, tuple) else (key,)
        if sum(k is Ellipsis for k in key) > 1:
            raise IndexError("an index can only have a single ellipsis ('...')")
        if Ellipsis in key:
            i = key.index(Ellipsis)
            key = key[:i] + (slice(None),) * (self.ndim - len(key) + 1) + key[i + 1 :]
        if len(key) > self.ndim:
            raise IndexError(f"too many indices for an array of shape {self.shape}: {len(key)}")
        key = key + (slice(None),) * (self.ndim - len(key))
        offset, shape, strides = self.offset, [], []
        for k, n, st in zip(key, self.shape, self.strides, strict=True):
            if isinstance(k, slice):
                start, stop, step = k.indices(n)
                m = len(range(start, stop, step))
                offset += start * st if m else 0
                shape.append(m)
                strides.append(st * step)
            elif isinstance(k, int | np.integer) and not isinstance(k, bool | np.bool_):
                i = int(k) + n if k < 0 else int(k)
                if not 0 <= i < n:
                    raise IndexError(f"index {int(k)} is out of bounds for an axis of size {n}")
                offset += i * st
            else:
                raise TypeError(f"TiffArray supports integers, slices and '...' as indices, got {type(k).__name__}; "
                                "read the region first (np.asarray(arr[a:b])) for fancy indexing")
        return self._derived(offset, tuple(shape), tuple(strides), self.dtype)

    def transpose(self, *axes: Any) -> TiffArray:
        """Lazy transpose (like ``np.transpose``; nothing read)."""
        if len(axes) == 1 and (axes[0] is None or not isinstance(axes[0], int | np.integer)):
            axes = axes[0]
        order = tuple(range(self.ndim))[::-1] if not axes else tuple(int(a) % self.ndim for a in axes)
        if sorted(order) != list(range(self.ndim)):
            raise ValueError(f"axes {axes} do not match an array of {self.ndim} dimensions")
        return self._derived(self.offset, tuple(self.shape[a] for a in order),
                             tuple(self.strides[a] for a in order), self.dtype)

    @property
    def T(self) -> TiffArray:  # noqa: N802 (numpy's name)
        return self.transpose()

    def astype(self, dtype: Any, copy: bool = True) -> TiffArray:
        """Lazy conversion: the values are converted with numpy's ``astype`` when read."""
        return self._derived(self.offset, self.shape, self.strides, np.dtype(dtype))

    # -- reading
    def __getitem__(self, key: Any) -> np.ndarray:
        return self.subarray(key).read()

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        out = self.read()
        return out if dtype is None else out.astype(dtype, copy=False)

    def read(self) -> np.ndarray:
        """All elements of this view as a new numpy array (only their bytes are read)."""
        offset, strides, flips = self.offset, list(self.strides), []
        for axis, (n, st) in enumerate(zip(self.shape, self.strides, strict=True)):
            if st < 0 and n > 1:  # negative steps: read forwards, reverse afterwards
                offset += st * (n - 1)
                strides[axis] = -st
                flips.append(axis)
        raw = np.empty(self.shape, dtype=self.file_dtype)
        if raw.size:
            self._fill(raw, offset, tuple(strides))
        if flips:
            raw = np.flip(raw, axis=tuple(flips))
        return raw.astype(self.dtype, copy=False) if raw.dtype != self.dtype else np.ascontiguousarray(raw)

    def _fill(self, out: np.ndarray, offset: int, strides: tuple[int, ...]) -> None:
        """Read the region (non-negative ``strides``) into the C-contiguous ``out``."""
        item = out.itemsize
        strides = tuple(s if n > 1 else 0 for n, s in zip(out.shape, strides, strict=True))
        span = item + sum((n - 1) * s for n, s in zip(out.shape, strides, strict=True))
        if out.flags.c_contiguous and strides == _c_strides(out.shape, item):
            self._file.read_into(memoryview(out.reshape(-1).view(np.uint8)), offset)  # straight into the result
            return
        if span <= max(2 * out.nbytes, _SPAN_BYTES) or out.ndim == 0:  # one read, then pick the elements
            buf = np.empty(span, dtype=np.uint8)
            self._file.read_into(memoryview(buf), offset)
            out[...] = np.ndarray(out.shape, dtype=out.dtype, buffer=buf, strides=strides)
            return
        axis = max(range(out.ndim), key=lambda a: strides[a] if out.shape[a] > 1 else -1)
        rest = strides[:axis] + strides[axis + 1 :]
        for i in range(out.shape[axis]):  # a big sparse region: one read per step of its widest axis
            self._fill(np.moveaxis(out, axis, 0)[i], offset + i * strides[axis], rest)


def _c_strides(shape: tuple[int, ...], item: int) -> tuple[int, ...]:
    """Byte strides of a C-ordered block; 0 on length-1 axes (never stepped along)."""
    out, step = [], item
    for n in reversed(shape):
        out.insert(0, step if n > 1 else 0)
        step *= n
    return tuple(out)


def _rebuild_tiff_array(path: str, offset: int, shape: tuple[int, ...], file_dtype: str, dtype: str,
                        strides: tuple[int, ...]) -> TiffArray:
    return TiffArray(path, offset, shape, file_dtype, dtype, strides=strides)


# ----------------------------------------------------------------------------------------------
# validation
# ----------------------------------------------------------------------------------------------
def as_timelapse(array: Any, channel: int | None = None, channel_axis: int | None = None,
                 axes: str | None = None) -> Any:
    """Validate an in-memory or lazy array as a ``(T, Y, X)`` time-lapse.

    Axes are guessed from the shape: ``(T, Y, X)``; ``(Y, X, 3|4)`` and ``(T, Y, X, 3|4)`` are
    RGB(A); other 4D arrays are ``(T, C, Y, X)``; 5D ``(T, Z, C, Y, X)`` (ImageJ order).
    ``channel_axis`` or ``axes`` (one letter per axis, e.g. ``'TYX'``, see :func:`check_axes`)
    overrides the guess. Singleton axes are dropped; a channel axis with more than one channel
    needs ``channel``.

    Dtypes: uint8, uint16, int16 and float32 are kept; int8 becomes int16, 32/64-bit
    integers and float16/float64 become float32, big-endian data become native (all exact
    or to float32 precision, never wrapped). Lazy inputs (dask, zarr, memmap, :class:`TiffArray`)
    stay lazy.
    Values are not checked for NaN / Inf here (normalisation does it while streaming).

    Raises
    ------
    InputError
        If the array is not a time-lapse of at least 3 frames, or its dtype is not an intensity.
    """
    arr = _as_array_like(array)
    if axes:
        return _to_timelapse(arr, check_axes(axes, tuple(arr.shape), "array"), channel, "array")
    return _to_timelapse(arr, _guess_axes(tuple(arr.shape), channel_axis), channel, "array")


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


AXIS_LETTERS = "TZCSYX"


def check_axes(axes: str, shape: tuple[int, ...], what: str = "array") -> str:
    """Validate axes given by the user for data of ``shape``; returns them in upper case.

    One letter per axis from T (time), Z, C (channel), S (RGB sample), Y, X, each at most
    once, Y and X included. The single non-spatial axis left after dropping singleton axes
    and selecting a channel is taken as time, whatever its letter.

    Raises
    ------
    InputError
        Wrong count, unknown or repeated letters, Y or X missing.
    """
    upper = str(axes).strip().upper()
    problem = None
    if len(upper) != len(shape):
        problem = f"{len(upper)} letters for {len(shape)} axes"
    elif set(upper) - set(AXIS_LETTERS):
        problem = f"unknown letters {''.join(sorted(set(upper) - set(AXIS_LETTERS)))}"
    elif len(set(upper)) != len(upper):
        problem = "a letter used twice"
    elif "Y" not in upper or "X" not in upper:
        problem = "Y and X are needed"
    if problem:
        raise InputError(f"{what}: axes {axes!r} do not fit data of shape {tuple(shape)} ({problem}); give one "
                         f"letter per axis from {', '.join(AXIS_LETTERS)}, e.g. 'TYX' for a time-lapse whose "
                         "header calls its frames channels or slices")
    return upper


def _as_array_like(array: Any) -> Any:
    if isinstance(array, np.ndarray | TiffArray) or _is_dask(array):
        return array
    if hasattr(array, "shape") and hasattr(array, "dtype") and hasattr(array, "__getitem__"):
        import dask.array as da  # zarr / h5py / other lazy arrays: wrap, do not read

        return da.from_array(array, chunks=_frame_chunks(tuple(array.shape), array.dtype))
    return np.asarray(array)


def _is_dask(x: Any) -> bool:
    return type(x).__module__.startswith("dask.")


def _guess_axes(shape: tuple[int, ...], channel_axis: int | None) -> str:
    nd = len(shape)
    if nd < 2:
        raise InputError(f"got an array of shape {shape} ({nd}D); expected a time-lapse (T, Y, X)")
    if channel_axis is not None:
        if not -nd <= channel_axis < nd:
            raise InputError(f"channel_axis {channel_axis} is out of range for an array of shape {shape}")
        c = channel_axis % nd
        rest = nd - 1
        names = ["Q"] * (rest - 2) + ["Y", "X"]
        names.insert(c, "C")
        return "".join(names)
    if nd == 2:
        return "YX"
    if nd == 3:
        return "YXS" if shape[-1] in (3, 4) and min(shape[:2]) > 4 else "TYX"
    if nd == 4:
        return "TYXS" if shape[-1] in (3, 4) and shape[1] > 4 else "TCYX"
    if nd == 5:
        return "TZCYX"
    raise InputError(f"got a {nd}D array of shape {shape}; expected a time-lapse (T, Y, X)")


def _subarray(arr: Any, index: tuple[Any, ...]) -> Any:
    """``arr[index]`` without reading: indexing a :class:`TiffArray` reads, its views do not."""
    return arr.subarray(index) if isinstance(arr, TiffArray) else arr[index]


def _to_timelapse(arr: Any, axes: str, channel: int | None, what: str) -> Any:
    """Select the channel, drop singleton axes, order as (T, Y, X), check size and dtype."""
    shape = tuple(arr.shape)
    axes = axes.upper()
    found = f"found shape {shape}, axes '{axes}', dtype {arr.dtype}"
    if "Y" not in axes or "X" not in axes:
        raise InputError(f"{what}: {found}; expected image axes Y and X")
    arr, axes = _select_channel(arr, axes, channel, what, found)
    drop = [n == 1 and a not in "YX" for n, a in zip(arr.shape, axes, strict=True)]  # singleton T/Z/C/...
    if any(drop):
        arr = _subarray(arr, tuple(0 if d else slice(None) for d in drop))
        axes = "".join(a for a, d in zip(axes, drop, strict=True) if not d)
    others = [i for i, a in enumerate(axes) if a not in "YX"]
    if not others:
        raise InputError(f"{what}: {found}: a single 2D image; expected a time-lapse (T, Y, X) of at least "
                         f"{MIN_FRAMES} frames")
    if len(others) > 1:
        sizes = ", ".join(f"{axes[i]}={arr.shape[i]}" for i in others)
        raise InputError(f"{what}: {found}: more than one non-spatial axis ({sizes}); expected a single time axis "
                         "(T, Y, X). Select one plane / position first.")
    order = (others[0], axes.index("Y"), axes.index("X"))
    if order != (0, 1, 2):
        arr = arr.transpose(order)
    t, y, x = arr.shape
    if t < MIN_FRAMES:
        raise InputError(f"{what}: {found}: only {t} frame(s); expected a time-lapse of at least {MIN_FRAMES} frames")
    if y < 2 or x < 2:
        raise InputError(f"{what}: {found}: frames of {y} x {x} pixels; expected images of at least 2 x 2")
    return _convert_dtype(arr, what, found)


def _select_channel(arr: Any, axes: str, channel: int | None, what: str, found: str) -> tuple[Any, str]:
    multi = [i for i, a in enumerate(axes) if a in "CS" and arr.shape[i] > 1]
    if len(multi) > 1:
        raise InputError(f"{what}: {found}: both a channel and a sample (RGB) axis; expected one channel")
    if not multi:
        if channel not in (None, 0):
            raise InputError(f"{what}: {found}: there is a single channel, so channel must be 0 or None "
                             f"(got {channel})")
        return arr, axes
    i = multi[0]
    n = arr.shape[i]
    kind = "RGB(A) samples" if axes[i] == "S" else "channels"
    if channel is None:
        raise InputError(f"{what}: {found}: {n} {kind}; choose one with channel = 0..{n - 1} (a single-channel "
                         "(T, Y, X) time-lapse is expected)")
    if not isinstance(channel, int | np.integer) or not 0 <= int(channel) < n:
        raise InputError(f"{what}: {found}: channel {channel!r} does not exist; expected 0..{n - 1}")
    index = tuple(int(channel) if j == i else slice(None) for j in range(len(axes)))
    return _subarray(arr, index), axes[:i] + axes[i + 1 :]


def _target_dtype(dtype: np.dtype, what: str, found: str) -> np.dtype:
    """The engine dtype for input ``dtype``: exact where possible, float32 otherwise."""
    if dtype.kind == "b":
        raise InputError(f"{what}: {found}: boolean values are a mask, not an intensity image; "
                         "expected uint8/uint16/int16/float32 intensities")
    if dtype.kind not in "iuf":
        raise InputError(f"{what}: {found}: unsupported data type; expected uint8/uint16/int16/float32 intensities")
    native = dtype.newbyteorder("=")
    if native in NATIVE_DTYPES:
        return native
    if native == np.dtype(np.int8):
        return np.dtype(np.int16)  # exact; int8 would wrap under arithmetic
    return np.dtype(np.float32)  # 32/64-bit integers and other floats: the network runs in float32 anyway


def _convert_dtype(arr: Any, what: str, found: str) -> Any:
    target = _target_dtype(np.dtype(arr.dtype), what, found)
    if np.dtype(arr.dtype) == target and np.dtype(arr.dtype).isnative:
        return arr
    if isinstance(arr, np.memmap):  # keep it lazy: convert frame chunks on access (a TiffArray converts itself)
        import dask.array as da

        arr = da.from_array(arr, chunks=_frame_chunks(tuple(arr.shape), arr.dtype))
    return arr.astype(target)


# ----------------------------------------------------------------------------------------------
# writing
# ----------------------------------------------------------------------------------------------
def to_output_dtype(x: Any, dtype: Any) -> np.ndarray:
    """Cast float data to ``dtype``: clip to its range, round to nearest, then cast (never wraps).

    NaN becomes 0 for integer types. Float targets are clipped to their finite range.
    """
    dtype = np.dtype(dtype)
    if dtype.kind == "b":
        raise InputError("cannot write intensities as a boolean image; choose a numeric dtype")
    if dtype.kind == "f":
        info = np.finfo(dtype)
        x = np.asarray(x)
        if dtype.itemsize < np.dtype(x.dtype).itemsize or dtype.kind != np.dtype(x.dtype).kind:
            x = np.clip(x, info.min, info.max)
        return x.astype(dtype, copy=False)
    if dtype.kind not in "iu":
        raise InputError(f"unsupported output dtype {dtype}; expected an integer or float type")
    info = np.iinfo(dtype)
    # float32 cannot hold e.g. 2**31 - 1 exactly: clip in float64 for wide types
    work = np.float32 if dtype.itemsize <= 2 else np.float64
    lo, hi = work(info.min), work(info.max)
    if int(hi) > info.max:  # rounding made the bound larger than the type's maximum
        hi = np.nextafter(hi, work(-np.inf))
    x = np.asarray(x, dtype=work)
    x = np.nan_to_num(x, nan=0.0, posinf=hi, neginf=lo)
    return np.rint(np.clip(x, lo, hi)).astype(dtype)


def _resolve_output_dtype(dtype: Any, input_dtype: Any, array_dtype: np.dtype) -> np.dtype:
    if isinstance(dtype, str) and dtype == "input":
        if input_dtype is None:
            raise InputError("dtype='input' needs input_dtype (the dtype of the stack that was denoised)")
        out = np.dtype(input_dtype)
    elif dtype is None:
        out = np.dtype(array_dtype)
    else:
        try:
            out = np.dtype(dtype)
        except TypeError:
            raise InputError(f"unknown output dtype {dtype!r}; expected 'float32' or 'input'") from None
    if out.kind == "b" or out.kind not in "iuf":
        raise InputError(f"cannot write a TIFF of dtype {out}; expected an integer or float type")
    return out.newbyteorder("=")


def _layout(shape: tuple[int, ...], dtype: np.dtype) -> tuple[bool, bool, str | None]:
    """(imagej, bigtiff, axes) for a stack of this shape and dtype."""
    nbytes = math.prod(shape) * dtype.itemsize
    bigtiff = nbytes > BIGTIFF_BYTES
    axes = {2: "YX", 3: "TYX", 4: "TCYX", 5: "TZCYX"}.get(len(shape))
    imagej = not bigtiff and dtype in IMAGEJ_DTYPES and axes is not None
    return imagej, bigtiff, axes


def _tiff_metadata(metadata: dict[str, Any] | None, imagej: bool, axes: str | None) -> dict[str, Any]:
    """tifffile ``metadata``: axes plus our JSON (ImageJ 'Info' property, or the JSON description)."""
    from .. import __version__

    md = {"software": f"napari-unet-att {__version__}",
          "written": timestamp()}
    md.update(metadata or {})
    md = json.loads(json.dumps(md, default=_json_default))  # plain JSON types only
    out: dict[str, Any] = {} if axes is None else {"axes": axes}
    if imagej:
        out["Info"] = json.dumps({METADATA_KEY: md})  # shown by ImageJ's Image > Show Info
    else:
        out[METADATA_KEY] = md  # tifffile stores the whole dict as the JSON ImageDescription
    return out


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)


def read_metadata(path: PathLike) -> dict[str, Any] | None:
    """The metadata dict stored by :func:`write_stack` / :func:`output_stack`, or None."""
    path = Path(path)
    if path.suffix.lower() == ".zarr" and path.is_dir():
        import zarr

        md = zarr.open(str(path), mode="r").attrs.get(METADATA_KEY)
        return dict(md) if md is not None else None
    _check_readable_file(path)
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
        raise InputError(_not_tiff_message(path, exc)) from None
    for d in shaped:
        md = d.get(METADATA_KEY) if isinstance(d, dict) else None
        if isinstance(md, dict):
            return md
    return None


def _free_bytes(directory: Path) -> int | None:
    try:
        return shutil.disk_usage(directory).free
    except OSError:
        return None


def _check_space(directory: Path, nbytes: int, path: Path) -> None:
    free = _free_bytes(directory)
    need = int(nbytes * 1.01) + 2**20
    if free is not None and free < need:
        raise ResourceError(f"not enough disk space to write {path}: it needs about {_gb(need)} and "
                            f"{directory} has {_gb(free)} free; free some space or choose another folder")


def _gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def _os_error(exc: OSError, path: Path) -> Exception:
    """A user-facing error for a failed write."""
    if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
        return ResourceError(f"the disk is full (or over quota) while writing {path}; nothing was written. "
                             "Free some space or choose another folder.")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return InputError(f"cannot write {path}: the folder {path.parent} is not writable ({exc.strerror})")
    return InputError(f"could not write {path}: {exc.strerror or exc}")


def _temp_name(path: Path) -> Path:
    # hidden, unique, in the same folder (so os.replace is an atomic rename on the same filesystem)
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")


def _fsync(path: Path) -> None:
    with open(path, "r+b") as fh:
        fh.flush()
        os.fsync(fh.fileno())


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable (POSIX only; a no-op elsewhere)."""
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _check_folder(path: Path) -> None:
    """Refuse an output path whose folder is missing or is a file, saying which."""
    folder = path.parent
    if folder.is_dir():
        return
    for parent in (folder, *folder.parents):
        if parent.exists() and not parent.is_dir():
            raise InputError(f"cannot write {path}: {parent} is a file, not a folder")
    raise InputError(f"cannot write {path}: the folder {folder} does not exist")


@contextlib.contextmanager
def atomic_file(path: PathLike) -> Iterator[Path]:
    """Yield a reserved temporary file beside ``path``; rename it into place if the block succeeds.

    On any error the temporary file is removed and an existing ``path`` is left untouched;
    an ``OSError`` becomes :class:`ResourceError` (disk full) or :class:`InputError`.
    """
    path = Path(path)
    _check_folder(path)
    tmp = _temp_name(path)
    try:
        os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))  # honours the umask
    except OSError as exc:
        raise _os_error(exc, path) from None
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError):
            raise _os_error(exc, path) from exc
        raise
    _fsync_dir(path.parent)


def _blocks(array: Any, dtype: np.dtype) -> Iterator[np.ndarray]:
    """Frame blocks of ``array`` converted to ``dtype`` (bounded memory for huge / lazy arrays)."""
    n = array.shape[0]
    k = _frame_chunks(tuple(array.shape), np.dtype(np.float64))[0]
    for t0 in range(0, n, k):
        block = np.asarray(array[t0 : t0 + k])
        yield _cast(block, dtype)


def _cast(block: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if block.dtype == dtype:
        return block
    if dtype.kind in "iu" and block.dtype.kind in "iu":
        info = np.iinfo(dtype)  # integer to integer: clip exactly, no float round trip
        return np.clip(block, info.min, info.max).astype(dtype)
    return to_output_dtype(block, dtype)


def write_stack(
    path: PathLike,
    array: Any,
    dtype: Any = "float32",
    input_dtype: Any = None,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Write an array as a TIFF, atomically.

    Parameters
    ----------
    path : str or path-like
        Destination ``.tif``; replaced only once the new file is complete.
    array : array-like
        Usually ``(T, Y, X)`` float32; numpy, memmap or dask (written in frame blocks).
    dtype : {'float32', 'input'} or numpy dtype
        ``'input'`` writes ``input_dtype``, clipped to its range and rounded (never wrapped).
    input_dtype : numpy dtype, optional
        Needed with ``dtype='input'``.
    metadata : dict, optional
        How the data were made (model, mode, versions, date); stored as JSON in the file and
        returned by :func:`read_metadata`.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    InputError
        Missing or unwritable folder, bad dtype.
    ResourceError
        Not enough disk space (checked first; a full disk during the write leaves no file).
    """
    path = Path(path)
    arr = array if (isinstance(array, np.ndarray) or _is_dask(array) or hasattr(array, "shape")) else np.asarray(array)
    shape = tuple(int(n) for n in arr.shape)
    if len(shape) < 2 or 0 in shape:
        raise InputError(f"cannot write an array of shape {shape} as an image; expected (T, Y, X)")
    out_dtype = _resolve_output_dtype(dtype, input_dtype, np.dtype(arr.dtype))
    imagej, bigtiff, axes = _layout(shape, out_dtype)
    md = _tiff_metadata(metadata, imagej, axes)
    _check_folder(path)
    _check_space(path.parent, math.prod(shape) * out_dtype.itemsize, path)
    data: Any = _blocks(arr, out_dtype) if len(shape) > 2 else _cast(np.asarray(arr), out_dtype)
    with atomic_file(path) as tmp:
        tifffile.imwrite(tmp, data, shape=shape, dtype=out_dtype, imagej=imagej, bigtiff=bigtiff,
                         metadata=md, photometric="minisblack")
    return path


# ----------------------------------------------------------------------------------------------
# progressive output
# ----------------------------------------------------------------------------------------------
@contextlib.contextmanager
def output_stack(
    path: PathLike, shape: tuple[int, ...], dtype: Any, metadata: dict[str, Any] | None = None
) -> Iterator[Any]:
    """A writable on-disk array that appears at ``path`` only if the ``with`` block succeeds.

    ``.zarr`` paths give a zarr array (chunks of whole frames), anything else a memory-mapped
    TIFF (ImageJ layout when possible, BigTIFF above 2 GB) whose disk blocks are reserved up
    front, so a full disk is reported now rather than crashing the process mid-write. Frames
    written to the TIFF are flushed to the file and dropped from this process's resident
    memory at once (see :class:`_StreamedTiff`), so writing a file larger than RAM keeps RSS flat.

    Yields
    ------
    array-like
        Supports ``out[t0:t1] = block`` (and reading back, ``np.asarray(out[t0:t1])``).

    Raises
    ------
    InputError, ResourceError
        Unwritable folder, not enough disk space.
    """
    path = Path(path)
    shape = tuple(int(n) for n in shape)
    dtype = np.dtype(dtype).newbyteorder("=")
    _check_folder(path)
    _check_space(path.parent, math.prod(shape) * dtype.itemsize, path)
    if path.suffix.lower() == ".zarr":
        with _zarr_output(path, shape, dtype, metadata) as z:
            yield z
        return
    imagej, bigtiff, axes = _layout(shape, dtype)
    md = _tiff_metadata(metadata, imagej, axes)
    with atomic_file(path) as tmp:
        mm = tifffile.memmap(tmp, shape=shape, dtype=dtype, imagej=imagej, bigtiff=bigtiff, metadata=md,
                             photometric="minisblack")
        try:
            _reserve(tmp, path)
            out = _StreamedTiff(mm)
            yield out
            out.flush()
        finally:
            out = None
            del mm  # unmap before the rename (required on Windows)


class _StreamedTiff:
    """The writable array :func:`output_stack` yields for a TIFF.

    Wraps the memory map of the temporary file. After every assignment the written frames are
    flushed to the file (``msync``) and released from this process's page tables
    (``madvise(MADV_DONTNEED)``): they stay in the kernel's page cache, but no longer count in
    the process's resident memory, which would otherwise grow to the size of the output
    (mapped file pages count in ``ru_maxrss``, ``top`` and container limits). Where ``madvise``
    is missing (Windows) it behaves as the plain memory map.
    """

    def __init__(self, mm: Any) -> None:
        self._mm = mm
        self.shape = tuple(int(n) for n in mm.shape)
        self.dtype = np.dtype(mm.dtype)
        self._frame_bytes = math.prod(self.shape[1:]) * self.dtype.itemsize
        raw = getattr(mm, "_mmap", None)  # numpy's mmap.mmap under the np.memmap
        usable = raw is not None and hasattr(raw, "madvise") and hasattr(mmap, "MADV_DONTNEED")
        self._map = raw if usable else None
        # numpy maps from the offset rounded down to the allocation granularity
        self._base = int(getattr(mm, "offset", 0)) % mmap.ALLOCATIONGRANULARITY if usable else 0

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __setitem__(self, key: Any, value: Any) -> None:
        self._mm[key] = value
        self._release(key)

    def __getitem__(self, key: Any) -> np.ndarray:
        return np.array(self._mm[key])

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        return np.array(self._mm, dtype=dtype)

    def flush(self) -> None:
        self._mm.flush()

    def _frames(self, key: Any) -> tuple[int, int]:
        """The range of frames an assignment with ``key`` touched (all of them when unsure)."""
        first = key[0] if isinstance(key, tuple) and key else key
        n = self.shape[0] if self.shape else 0
        if isinstance(first, slice):
            rng = range(*first.indices(n))
            return (min(rng), max(rng) + 1) if len(rng) else (0, 0)
        if isinstance(first, int | np.integer) and not isinstance(first, bool):
            i = int(first) % n if n else 0
            return i, i + 1
        return 0, n

    def _release(self, key: Any) -> None:
        if self._map is None or not self._frame_bytes:
            return
        start, stop = self._frames(key)
        page = mmap.PAGESIZE
        lo = self._base + start * self._frame_bytes
        hi = min(len(self._map), self._base + stop * self._frame_bytes)
        lo -= lo % page  # whole pages: on a shared file mapping a page dropped early is simply re-read
        hi = min(len(self._map), -(-hi // page) * page)
        if hi > lo:
            with contextlib.suppress(OSError, ValueError):
                self._map.flush(lo, hi - lo)
                self._map.madvise(mmap.MADV_DONTNEED, lo, hi - lo)


def _reserve(tmp: Path, path: Path) -> None:
    """Allocate the file's blocks now: writing to a sparse memmap on a full disk kills the process."""
    if not hasattr(os, "posix_fallocate"):
        return
    fd = os.open(tmp, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
            raise ResourceError(f"not enough disk space to write {path} ({_gb(os.fstat(fd).st_size)})") from None
        # EINVAL / EOPNOTSUPP: the filesystem cannot preallocate; go on without
    finally:
        os.close(fd)


@contextlib.contextmanager
def _zarr_output(path: Path, shape: tuple[int, ...], dtype: np.dtype, metadata: dict[str, Any] | None) -> Iterator[Any]:
    import zarr

    from .. import __version__

    tmp = _temp_name(path)
    try:
        z = zarr.open_array(str(tmp), mode="w", shape=shape, dtype=dtype, chunks=_frame_chunks(shape, dtype))
        md = {"software": f"napari-unet-att {__version__}",
              "written": timestamp(), **(metadata or {})}
        z.attrs[METADATA_KEY] = json.loads(json.dumps(md, default=_json_default))
        yield z
        _replace_dir(tmp, path)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError):
            raise _os_error(exc, path) from exc
        raise


def _replace_dir(tmp: Path, path: Path) -> None:
    """Move a finished zarr folder into place, replacing an old one only after the move succeeds."""
    old = None
    if path.exists():
        old = _temp_name(path)
        os.replace(path, old)
    try:
        os.replace(tmp, path)
    except OSError:
        if old is not None:
            os.replace(old, path)
        raise
    if old is not None and old.is_dir():
        shutil.rmtree(old, ignore_errors=True)
    elif old is not None:
        old.unlink()
