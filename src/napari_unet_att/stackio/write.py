"""Writing stacks: whole arrays (:func:`write_stack`) or frame by frame (:func:`output_stack`), never partially.

Data go to a temporary file in the destination folder that is renamed into place only once
complete (:mod:`.atomic`); the disk space is checked, and for frame-by-frame output reserved,
before any work. Float results are cast to the output dtype by clipping and rounding, never
wrapping (:func:`to_output_dtype`). TIFFs use the ImageJ layout where ImageJ can open them,
BigTIFF above :data:`BIGTIFF_BYTES`; each file carries its provenance (:mod:`.metadata`).
"""

from __future__ import annotations

import contextlib
import math
import mmap
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from ..errors import InputError
from .atomic import (
    atomic_file,
    prepare_output,
    replace_dir,
    reserve_blocks,
    temp_name,
    write_error,
)
from .axes import NATIVE_DTYPES, frame_chunks
from .metadata import METADATA_KEY, provenance_json, rewrite_tiff_metadata, tiff_metadata

BIGTIFF_BYTES = 2**31  # above 2 GB switch to BigTIFF: classic TIFF offsets stop at 4 GB, keep a margin

PathLike = str | os.PathLike


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
    imagej = not bigtiff and dtype in NATIVE_DTYPES and axes is not None  # the engine's dtypes are ImageJ's
    return imagej, bigtiff, axes



def _blocks(array: Any, dtype: np.dtype) -> Iterator[np.ndarray]:
    """Frame blocks of ``array`` converted to ``dtype`` (bounded memory for huge / lazy arrays)."""
    n = array.shape[0]
    k = frame_chunks(tuple(array.shape), np.dtype(np.float64))[0]
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
    arr = array if hasattr(array, "shape") else np.asarray(array)  # numpy, memmap, dask, zarr: not read here
    shape = tuple(int(n) for n in arr.shape)
    if len(shape) < 2 or 0 in shape:
        raise InputError(f"cannot write an array of shape {shape} as an image; expected (T, Y, X)")
    out_dtype = _resolve_output_dtype(dtype, input_dtype, np.dtype(arr.dtype))
    imagej, bigtiff, axes = _layout(shape, out_dtype)
    md = tiff_metadata(metadata, imagej, axes)
    prepare_output(path, math.prod(shape) * out_dtype.itemsize)
    data: Any = _blocks(arr, out_dtype) if len(shape) > 2 else _cast(np.asarray(arr), out_dtype)
    with atomic_file(path) as tmp:
        tifffile.imwrite(tmp, data, shape=shape, dtype=out_dtype, imagej=imagej, bigtiff=bigtiff,
                         metadata=md, photometric="minisblack")
    return path


# -- frame by frame ---------------------------------------------------------------------------
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
    ``metadata`` is stored when the file is created and again, as it is then, when the block ends: the
    job writing the frames may add to it what it chose on the way.

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
    prepare_output(path, math.prod(shape) * dtype.itemsize)
    if path.suffix.lower() == ".zarr":
        with _zarr_output(path, shape, dtype, metadata) as z:
            yield z
        return
    imagej, bigtiff, axes = _layout(shape, dtype)
    md = tiff_metadata(metadata, imagej, axes)
    with atomic_file(path) as tmp:
        mm = tifffile.memmap(tmp, shape=shape, dtype=dtype, imagej=imagej, bigtiff=bigtiff, metadata=md,
                             photometric="minisblack")
        try:
            reserve_blocks(tmp, path)
            out = _StreamedTiff(mm)
            yield out
            out.flush()
        finally:
            out = None
            del mm  # unmap before the rename (required on Windows)
        if metadata is not None:  # what the job added to it while it ran (still the temporary file)
            rewrite_tiff_metadata(tmp, metadata)


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


@contextlib.contextmanager
def _zarr_output(path: Path, shape: tuple[int, ...], dtype: np.dtype, metadata: dict[str, Any] | None) -> Iterator[Any]:
    import zarr

    tmp = temp_name(path)
    try:
        z = zarr.open_array(str(tmp), mode="w", shape=shape, dtype=dtype, chunks=frame_chunks(shape, dtype))
        z.attrs[METADATA_KEY] = provenance_json(metadata)
        yield z
        z.attrs[METADATA_KEY] = provenance_json(metadata)  # with what the job added to it while it ran
        replace_dir(tmp, path)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError):
            raise write_error(exc, path) from exc
        raise

