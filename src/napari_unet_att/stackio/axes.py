"""Any image array to the engine's ``(T, Y, X)`` time-lapse: axes, channel choice and dtype, without reading.

Axes come from the file's header, from the user (:func:`check_axes`) or are guessed from the
shape; a channel is selected, singleton axes are dropped and the rest ordered as
``(T, Y, X)``; the dtype becomes one of :data:`NATIVE_DTYPES`, exactly where possible.
Lazy inputs (dask, zarr, memmap, :class:`~.tiffarray.TiffArray`) stay lazy.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import ChannelChoiceError, InputError, LayoutError
from .tiffarray import TiffArray

#: dtypes the engine takes as they are (others are converted exactly, see :func:`as_timelapse`);
#: also the dtypes ImageJ can open (tifffile refuses others with ``imagej=True``).
NATIVE_DTYPES = tuple(np.dtype(d) for d in ("uint8", "uint16", "int16", "float32"))
MIN_FRAMES = 3
AXIS_LETTERS = "TZCSYX"
CHUNK_BYTES = 64 * 2**20  # frames per dask chunk / per write block: about 64 MB


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
    LayoutError
        (an :class:`~napari_unet_att.errors.InputError`) If the array is not a time-lapse of at
        least 3 frames or its dtype is not an intensity; :class:`ChannelChoiceError` when it has
        several channels and ``channel`` is None. The message starts with ``'array: '``.
    InputError
        Fewer than 2 or more than 5 dimensions, or ``channel_axis`` out of range.
    """
    arr = _as_array_like(array)
    if axes:
        return to_timelapse(arr, check_axes(axes, tuple(arr.shape), "array"), channel, "array")
    return to_timelapse(arr, _guess_axes(tuple(arr.shape), channel_axis), channel, "array")


def check_axes(axes: str, shape: tuple[int, ...], what: str = "array") -> str:
    """Validate axes given by the user for data of ``shape``; returns them in upper case.

    One letter per axis from T (time), Z, C (channel), S (RGB sample), Y, X, each at most
    once, Y and X included. The single non-spatial axis left after dropping singleton axes
    and selecting a channel is taken as time, whatever its letter.

    Raises
    ------
    LayoutError
        Wrong count, unknown or repeated letters, Y or X missing (the message starts with ``what``).
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
        raise LayoutError(what, f"axes {axes!r} do not fit data of shape {tuple(shape)} ({problem}); give one "
                                f"letter per axis from {', '.join(AXIS_LETTERS)}, e.g. 'TYX' for a time-lapse whose "
                                "header calls its frames channels or slices")
    return upper


def frame_chunks(shape: tuple[int, ...], dtype: np.dtype) -> tuple[int, ...]:
    """Dask chunks (or write blocks) of whole frames, about :data:`CHUNK_BYTES` each."""
    frame = math.prod(shape[1:]) * np.dtype(dtype).itemsize
    k = max(1, min(shape[0], CHUNK_BYTES // max(1, frame))) if shape else 1
    return (k, *shape[1:])


def _as_array_like(array: Any) -> Any:
    if isinstance(array, np.ndarray | TiffArray) or _is_dask(array):
        return array
    if hasattr(array, "shape") and hasattr(array, "dtype") and hasattr(array, "__getitem__"):
        import dask.array as da  # zarr / h5py / other lazy arrays: wrap, do not read

        return da.from_array(array, chunks=frame_chunks(tuple(array.shape), array.dtype))
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


def to_timelapse(arr: Any, axes: str, channel: int | None, what: str) -> Any:
    """Select the channel, drop singleton axes, order as (T, Y, X), check size and dtype.

    Parameters
    ----------
    arr : array-like
        numpy, dask, zarr or :class:`TiffArray` data (not read).
    axes : str
        One letter per axis of ``arr`` (see :func:`check_axes`).
    channel : int, optional
        Channel to take from a channel (``C``) or sample (``S``) axis.
    what : str
        Names the data in messages (``'file NAME'``, ``'array'``): the :class:`LayoutError`'s subject.
    """
    shape = tuple(arr.shape)
    axes = axes.upper()
    found = f"found shape {shape}, axes '{axes}', dtype {arr.dtype}"
    if "Y" not in axes or "X" not in axes:
        raise LayoutError(what, f"{found}; expected image axes Y and X")
    arr, axes = _select_channel(arr, axes, channel, what, found)
    drop = [n == 1 and a not in "YX" for n, a in zip(arr.shape, axes, strict=True)]  # singleton T/Z/C/...
    if any(drop):
        arr = _subarray(arr, tuple(0 if d else slice(None) for d in drop))
        axes = "".join(a for a, d in zip(axes, drop, strict=True) if not d)
    others = [i for i, a in enumerate(axes) if a not in "YX"]
    if not others:
        raise LayoutError(what, f"{found}: a single 2D image; expected a time-lapse (T, Y, X) of at least "
                                f"{MIN_FRAMES} frames")
    if len(others) > 1:
        sizes = ", ".join(f"{axes[i]}={arr.shape[i]}" for i in others)
        raise LayoutError(what, f"{found}: more than one non-spatial axis ({sizes}); expected a single time axis "
                                "(T, Y, X). Select one plane / position first.")
    order = (others[0], axes.index("Y"), axes.index("X"))
    if order != (0, 1, 2):
        arr = arr.transpose(order)
    t, y, x = arr.shape
    if t < MIN_FRAMES:
        raise LayoutError(what, f"{found}: only {t} frame(s); expected a time-lapse of at least {MIN_FRAMES} frames")
    if y < 2 or x < 2:
        raise LayoutError(what, f"{found}: frames of {y} x {x} pixels; expected images of at least 2 x 2")
    return _convert_dtype(arr, what, found)


def _select_channel(arr: Any, axes: str, channel: int | None, what: str, found: str) -> tuple[Any, str]:
    multi = [i for i, a in enumerate(axes) if a in "CS" and arr.shape[i] > 1]
    if len(multi) > 1:
        raise LayoutError(what, f"{found}: both a channel and a sample (RGB) axis; expected one channel")
    if not multi:
        if channel not in (None, 0):
            raise LayoutError(what, f"{found}: there is a single channel, so channel must be 0 or None "
                                    f"(got {channel})")
        return arr, axes
    i = multi[0]
    n = arr.shape[i]
    kind = "RGB(A) samples" if axes[i] == "S" else "channels"
    if channel is None:
        raise ChannelChoiceError(what, f"{found}: {n} {kind}; choose one with channel = 0..{n - 1} (a single-channel "
                                       "(T, Y, X) time-lapse is expected)", axis=i)
    if not isinstance(channel, int | np.integer) or not 0 <= int(channel) < n:
        raise LayoutError(what, f"{found}: channel {channel!r} does not exist; expected 0..{n - 1}")
    index = tuple(int(channel) if j == i else slice(None) for j in range(len(axes)))
    return _subarray(arr, index), axes[:i] + axes[i + 1 :]


def _target_dtype(dtype: np.dtype, what: str, found: str) -> np.dtype:
    """The engine dtype for input ``dtype``: exact where possible, float32 otherwise."""
    if dtype.kind == "b":
        raise LayoutError(what, f"{found}: boolean values are a mask, not an intensity image; "
                                "expected uint8/uint16/int16/float32 intensities")
    if dtype.kind not in "iuf":
        raise LayoutError(what, f"{found}: unsupported data type; expected uint8/uint16/int16/float32 intensities")
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

        arr = da.from_array(arr, chunks=frame_chunks(tuple(arr.shape), arr.dtype))
    return arr.astype(target)

