"""Lazy arrays over uncompressed TIFF pixels, read with positioned reads instead of a memory map.

A memory map would count the file's pages in the process's resident memory (``top``,
``ru_maxrss``, container limits) and make it grow with the file; a :class:`TiffArray` reads
only the region that is indexed, into a new numpy array.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError

_SPAN_BYTES = 4 * 2**20  # read a region's whole byte span at once up to this size (or 2x the region)

PathLike = str | os.PathLike


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
        key = full_index(key, self.ndim)
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


def full_index(key: Any, ndim: int) -> tuple[Any, ...]:
    """``key`` (an index of an ``ndim``-axis array) as one index per axis: an ellipsis expanded, the missing axes
    whole. ``IndexError`` for more than one ellipsis or more indices than axes. (Shared by the lazy views of stacks:
    this array, and the engine's views in :mod:`napari_unet_att.inference`.)"""
    key = key if isinstance(key, tuple) else (key,)
    dots = [i for i, k in enumerate(key) if k is Ellipsis]  # (by identity: array indices do not compare)
    if len(dots) > 1:
        raise IndexError("an index can only have a single ellipsis ('...')")
    if dots:
        key = key[: dots[0]] + (slice(None),) * (ndim - len(key) + 1) + key[dots[0] + 1 :]
    if len(key) > ndim:
        raise IndexError(f"too many indices for an array of {ndim} axes: {len(key)}")
    return key + (slice(None),) * (ndim - len(key))


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

