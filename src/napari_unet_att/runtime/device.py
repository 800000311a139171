"""All device handling in one place: which device, how many CPU threads, mixed precision.

Everything else asks this module for a ``torch.device`` and an autocast context, so the
CUDA path (AMP, cudnn autotune, pinned memory) is exercised by the same code as the CPU one.
A job names its device with :func:`resolve_device` (no side effects) and then sets the process
up for it with :func:`configure_process` (threads, cudnn, the current CUDA device).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from threadpoolctl import ThreadpoolController

from ..errors import InputError

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def available_devices() -> list[str]:
    """Names the user can pick, best first (``'cuda:0'`` ... then ``'cpu'``)."""
    names = [f"cuda:{i}" for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    return [*names, "cpu"]


def resolve_device(name: str = "auto") -> torch.device:
    """Turn a user's device choice into a ``torch.device`` (changing no setting: see :func:`configure_process`).

    Parameters
    ----------
    name : str
        ``'auto'`` (CUDA when present, else CPU), ``'cpu'``, ``'cuda'`` or ``'cuda:N'``.

    Raises
    ------
    InputError
        If CUDA is requested but not available, or the name is unknown.
    """
    name = (name or "auto").strip().lower()
    local_rank = os.environ.get("LOCAL_RANK")  # set by torchrun: one GPU per process
    if name in ("auto", "cuda") and torch.cuda.is_available() and local_rank is not None:
        name = f"cuda:{int(local_rank)}"
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError(f"device {name!r} was requested but CUDA is not available here; use 'cpu' or 'auto'")
        dev = torch.device(name)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InputError(f"device {name!r} does not exist: {torch.cuda.device_count()} CUDA device(s) found")
        return dev
    raise InputError(f"unknown device {name!r}; expected one of {', '.join(DEVICE_CHOICES)} or 'cuda:N'")


def configure_process(device: torch.device) -> torch.device:
    """Set this process up to run jobs on ``device`` (from :func:`resolve_device`); returns ``device``.

    CPU: one intra-op thread per core (:func:`configure_cpu_threads`). CUDA: cudnn autotuning on
    (tiles have fixed shapes, so it pays off) and, for ``cuda:N``, GPU N made the current device
    (NCCL and default allocations follow it).
    """
    if device.type == "cpu":
        configure_cpu_threads()
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        if device.index is not None:
            torch.cuda.set_device(device)
    return device


def configure_cpu_threads() -> int:
    """Use all physical cores for intra-op work unless the user set ``OMP_NUM_THREADS``."""
    if "OMP_NUM_THREADS" not in os.environ:
        n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        torch.set_num_threads(max(1, n))
    return torch.get_num_threads()


def cpu_workers() -> int:
    """Threads for the engine's own array work around the network (registration, smoothing): as many as torch's.

    That work is numpy and scipy, one thread each unless split; on a GPU machine it would otherwise take several
    times the network's own time (1000 x 256 x 256 on an H200: network 2.7-4.0 s, default steps 16-23 s).
    """
    return max(1, torch.get_num_threads())


def on_frame_parts(fn: Callable[[np.ndarray], np.ndarray], frames: np.ndarray, axis: int = 0) -> np.ndarray:
    """``fn(frames)`` for an ``fn`` that treats each slice along ``axis`` (default: each frame) on its own, run on
    :func:`cpu_workers` parts at once (numpy's and scipy's array work releases the GIL; numpy's BLAS then runs one
    thread in each part, :data:`one_blas_thread`); the same values as one call (a new array, where one call's could be
    a view). Not for an ``fn`` that itself calls this function."""
    n = min(cpu_workers(), frames.shape[axis])
    if n <= 1:
        return fn(frames)
    edges = np.linspace(0, frames.shape[axis], n + 1).astype(int)
    before = (slice(None),) * (axis % frames.ndim)
    parts = [frames[(*before, slice(a, b))] for a, b in zip(edges[:-1], edges[1:], strict=True)]  # views
    # a pool per call (~0.1 ms): none is left running once a job ends (the jobs' own threads are checked so)
    with one_blas_thread(), ThreadPoolExecutor(n, thread_name_prefix="unet-att-frames") as ex:
        return np.concatenate(list(ex.map(fn, parts)), axis=axis)


class _Shared:
    """A process-wide setting that jobs (threads) share: ``start`` when the first user enters, ``stop`` when the last
    one leaves, so that overlapping users neither undo each other's setting nor keep it after the last."""

    def __init__(self, start: Callable[[], object], stop: Callable[[object], None]) -> None:
        self._start, self._stop, self._lock, self._users, self._state = start, stop, threading.Lock(), 0, None

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        with self._lock:
            if self._users == 0:
                self._state = self._start()
            self._users += 1
        try:
            yield
        finally:
            with self._lock:
                self._users -= 1
                if self._users == 0:
                    self._stop(self._state)


@functools.cache
def _blas_libraries() -> ThreadpoolController:
    """The BLAS libraries loaded (numpy's), found once (a search takes ~1 ms, a limit through it ~0.02)."""
    return ThreadpoolController()


#: While :func:`on_frame_parts` runs, numpy's BLAS uses one thread: its parts already keep every core busy, and
#: BLAS's own threads in each part (:func:`.temporal_filter.smooth_xy`'s matrix products) made the registration's
#: band-pass slower, 0.35 -> 0.56 s (docs/benchmarks.md, twenty-ninth and thirtieth sessions).
one_blas_thread = _Shared(lambda: _blas_libraries().limit(limits=1, user_api="blas"),
                          lambda limiter: limiter.restore_original_limits())


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 in hardware (AMX or AVX-512 BF16)."""
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    try:
        return any(getattr(torch.cpu, name, lambda: False)() for name in checks)
    except RuntimeError:  # pragma: no cover - an unusual build
        return False


def amp_dtype(device: torch.device, training: bool = False) -> torch.dtype | None:
    """The autocast dtype to use on ``device``, or None for full precision.

    On CUDA: bf16 where the GPU supports it (no loss scaling needed), else fp16. On CPU: bf16
    for training steps on CPUs with native bf16 (faster at the same PSNR: docs/performance.md,
    "Measurements behind the code"), else none: without hardware bf16, and for inference
    (whose float32 oneDNN path it would bypass), it is slower.
    """
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and training and cpu_has_native_bf16():
        return torch.bfloat16
    return None


def autocast(device: torch.device, enabled: bool = True, training: bool = False) -> contextlib.AbstractContextManager:
    """Autocast context for ``device`` (a no-op where :func:`amp_dtype` says so, or when disabled)."""
    dtype = amp_dtype(device, training)
    if not enabled or dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler(device: torch.device, enabled: bool = True) -> torch.amp.GradScaler:
    """A GradScaler that is active only for fp16 autocast (bf16 and fp32 need none)."""
    active = enabled and amp_dtype(device) == torch.float16
    return torch.amp.GradScaler(device.type if device.type == "cuda" else "cpu", enabled=active)


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Copy a CPU tensor to ``device``; pinned and non-blocking on CUDA."""
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t


@contextlib.contextmanager
def inference_mode() -> Iterator[None]:
    """``torch.inference_mode`` (kept here so all torch switches live in one module)."""
    with torch.inference_mode():
        yield


# glibc mallopt parameters (malloc.h) and their defaults, restored after a job.
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8
_MALLOPT_DEFAULTS = ((_M_MMAP_MAX, 65536), (_M_TRIM_THRESHOLD, 128 * 1024), (_M_ARENA_MAX, 0))
_MALLOPT_JOB = ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2**31 - 1), (_M_ARENA_MAX, 1))


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """The C library when it is glibc (``mallopt`` and ``malloc_trim`` exist), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        lib = ctypes.CDLL("libc.so.6")
        lib.mallopt, lib.malloc_trim  # noqa: B018 - raises AttributeError on musl and others
    except (OSError, AttributeError):
        return None
    return lib


def _mallopt(settings: tuple[tuple[int, int], ...]) -> None:
    lib = _glibc()
    if lib is not None:
        for param, value in settings:
            lib.mallopt(param, value)


@contextlib.contextmanager
def reuse_freed_memory(device: torch.device) -> Iterator[None]:
    """Keep the CPU memory that tensors free inside the process while a job runs (glibc only).

    glibc returns every block of 32 MB or more to the system when it is freed, and the next
    tensor of that size page-faults its memory back in: a UNet-Att forward pass spends a large
    part of its CPU time in the kernel's page-fault handler. Inside this context, large blocks
    come from the heap (``M_MMAP_MAX`` = 0), freed memory stays there for the next tile
    (``M_TRIM_THRESHOLD``) and threads started meanwhile share that heap (``M_ARENA_MAX`` = 1).
    The cost is the heap's fragmentation, a somewhat higher peak RSS (the memory estimates'
    factors include it; figures for both in docs/performance.md, "Measurements behind the
    code"). glibc's default settings are put back, and the
    retained memory handed back (``malloc_trim``), when the last job using this ends (glibc's
    dynamic mmap threshold then stays at the value it had reached). Elsewhere (CUDA, other C
    libraries) this does nothing.
    """
    if device.type != "cpu" or _glibc() is None:
        yield
        return
    with _job_heap():
        yield


def _default_heap(_: object) -> None:
    """glibc's default settings back, and the memory retained handed back."""
    _mallopt(_MALLOPT_DEFAULTS)
    _glibc().malloc_trim(0)


_job_heap = _Shared(lambda: _mallopt(_MALLOPT_JOB), _default_heap)
