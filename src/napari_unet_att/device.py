"""All device handling in one place: which device, how many CPU threads, mixed precision.

Everything else asks this module for a ``torch.device`` and an autocast context, so the
CUDA path (AMP, cudnn autotune, pinned memory) is exercised by the same code as the CPU one.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

from .errors import InputError

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def available_devices() -> list[str]:
    """Names the user can pick, best first (``'cuda:0'`` ... then ``'cpu'``)."""
    names = [f"cuda:{i}" for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    return [*names, "cpu"]


def resolve_device(name: str = "auto") -> torch.device:
    """Turn a user's device choice into a ``torch.device``.

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
        configure_cpu_threads()
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError(f"device {name!r} was requested but CUDA is not available here; use 'cpu' or 'auto'")
        dev = torch.device(name)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InputError(f"device {name!r} does not exist: {torch.cuda.device_count()} CUDA device(s) found")
        torch.backends.cudnn.benchmark = True  # fixed tile shapes: autotuning pays off
        if dev.index is not None:
            torch.cuda.set_device(dev)  # NCCL and default allocations follow the chosen GPU
        return dev
    raise InputError(f"unknown device {name!r}; expected one of {', '.join(DEVICE_CHOICES)} or 'cuda:N'")


def configure_cpu_threads() -> int:
    """Use all physical cores for intra-op work unless the user set ``OMP_NUM_THREADS``."""
    if "OMP_NUM_THREADS" not in os.environ:
        n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        torch.set_num_threads(max(1, n))
    return torch.get_num_threads()


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
    for training steps on CPUs with native bf16 (measured here: a ``fast`` step 1.4x faster,
    ``unet3d`` 2.4x, and the same PSNR after 300 steps, 33.93 vs 33.85 dB), else none: without
    hardware bf16, and for inference (whose float32 oneDNN path it would bypass), it is slower.
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
