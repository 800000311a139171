"""Memory estimates and checks, so a job that cannot fit is refused before it starts.

A 3D UNet's memory is dominated by its activations, which grow with the voxels of a tile
(inference) or of a batch of patches (training). :func:`activation_elements` counts the
elements of every layer output for one input voxel (by running the network once on a tiny
input with forward hooks, so the count always matches the real layer sizes); the estimates
multiply that by the padded tile / patch volume and a calibrated factor:

- ``INFER_FACTOR``: peak extra memory of a forward pass in ``inference_mode`` over the summed
  layer outputs (most outputs are freed as soon as the next layer ran, but concatenations,
  interpolations and the skip tensors of UNet++ coexist).
- ``TRAIN_FACTOR``: the same for a training step (forward with autograd, backward, Adam):
  every activation is kept for the backward pass, and gradients of the same size appear.

The factors are calibrated on CPU (float32), measured peaks over the hooked sums, rounded up
so that estimates err on the safe side; the calibration runs and their history are in
docs/performance.md ("Memory-estimate calibration"). UNet3D's factor is larger because its
upsampling is not hooked. Small tiles carry a fixed overhead (allocator, oneDNN scratch) that
does not scale with the tile: ``FIXED_OVERHEAD``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from pathlib import Path

import torch

from ..errors import ResourceError
from ..stackio import format_bytes

#: Peak inference memory / summed hooked layer outputs, per architecture (calibration: docs/performance.md).
INFER_FACTOR: dict[str, float] = {"unet_att": 1.25, "unet3d": 1.65}
#: Peak training-step memory / summed hooked layer outputs, per architecture.
TRAIN_FACTOR: dict[str, float] = {"unet_att": 4.2, "unet3d": 4.0}
#: Allocator / kernel scratch that does not scale with the tile (measured at a few tens of MB).
FIXED_OVERHEAD = 64 * 2**20
#: Fraction of the available memory a job may plan to use (the rest is for the OS, napari, caches).
USABLE_FRACTION = 0.9
_FLOAT_BYTES = 4
_HOOKED = ("_ConvUnit", "MaxPool3d", "AttentionGate")
_PROBE = 32  # probe edge: a multiple of 8 and >= every architecture's minimum size


def padded_shape(shape: Sequence[int], arch: str) -> tuple[int, int, int]:
    from ..model.networks import padded_size

    t, y, x = (int(n) for n in shape)
    return (padded_size(t, arch), padded_size(y, arch), padded_size(x, arch))


@functools.lru_cache(maxsize=16)
def activation_elements(arch: str, base_channels: int) -> float:
    """Summed layer-output elements per (padded) input voxel, for batch 1.

    Counted once per ``(arch, base_channels)`` with forward hooks on a ``32^3`` input: every
    conv unit, pooling and attention-gate output. Layer outputs scale with the voxel count
    (each level holds 1/8 of the voxels of the one above), so the ratio holds for any size.
    """
    from ..model.networks import build_network

    # The fast path would bypass the module calls that the hooks count, whatever path inference takes.
    net = build_network(arch, int(base_channels), cpu_fast_path=False).eval()
    total = [0]

    def hook(_module, _inp, out) -> None:
        total[0] += out.numel()

    handles = [m.register_forward_hook(hook) for m in net.modules() if type(m).__name__ in _HOOKED]
    with torch.inference_mode():
        net(torch.zeros(1, 1, _PROBE, _PROBE, _PROBE))
    for h in handles:
        h.remove()
    return total[0] / _PROBE**3


@functools.lru_cache(maxsize=16)
def _param_bytes(arch: str, base_channels: int) -> int:
    from ..model.networks import build_network, count_parameters

    return _FLOAT_BYTES * count_parameters(build_network(arch, int(base_channels)))


def estimate_inference_memory(tile_shape: Sequence[int], arch: str, base_channels: int, batch: int = 1) -> int:
    """Bytes one forward pass of ``batch`` tiles of ``tile_shape`` (t, y, x) needs at its peak.

    Includes the padded input and output tensors and the weights; not the data around it
    (see :func:`estimate_denoise_memory`).
    """
    vox = math.prod(padded_shape(tile_shape, arch)) * int(batch)
    acts = INFER_FACTOR.get(arch, 2.5) * activation_elements(arch, int(base_channels)) * vox
    return int(_FLOAT_BYTES * (acts + 2 * vox) + _param_bytes(arch, base_channels) + FIXED_OVERHEAD)


def estimate_training_memory(
    patch_t: int, patch_xy: int, arch: str, base_channels: int, batch: int = 1
) -> int:
    """Bytes one training step on ``batch`` patches of ``(patch_t, patch_xy, patch_xy)`` needs at its peak.

    Activations kept for the backward pass and their gradients (``TRAIN_FACTOR``), input and
    target batches, and weights + gradients + Adam's two moment buffers (4x the parameters).
    """
    vox = math.prod(padded_shape((patch_t, patch_xy, patch_xy), arch)) * int(batch)
    acts = TRAIN_FACTOR.get(arch, 4.2) * activation_elements(arch, int(base_channels)) * vox
    return int(_FLOAT_BYTES * (acts + 3 * vox) + 4 * _param_bytes(arch, base_channels) + FIXED_OVERHEAD)


def estimate_denoise_memory(
    stack_shape: Sequence[int],
    tile_shape: Sequence[int],
    arch: str,
    base_channels: int,
    batch: int = 1,
    accumulator_frames: int = 0,
    n_views: int = 1,
    in_memory_output_bytes: int = 0,
) -> int:
    """Host memory of a whole tiled inference: network + rolling accumulators + prefetched batch
    + the output array when it is kept in memory (``in_memory_output_bytes``)."""
    _, y, x = (int(n) for n in stack_shape)
    tile_vox = math.prod(int(n) for n in tile_shape) * int(batch)
    accum = _FLOAT_BYTES * int(accumulator_frames) * y * x * int(n_views)
    prefetch = 2 * _FLOAT_BYTES * tile_vox  # the batch being run and the one read ahead
    return estimate_inference_memory(tile_shape, arch, base_channels, batch) + accum + prefetch + int(
        in_memory_output_bytes
    )


# ----------------------------------------------------------------------------------------------
# what is available
# ----------------------------------------------------------------------------------------------
def _meminfo_available(path: str = "/proc/meminfo") -> int | None:
    try:
        text = Path(path).read_text()
    except OSError:
        return None
    fields = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            fields[name.strip()] = int(parts[0]) * 1024  # values are in kB
    if "MemAvailable" in fields:
        return fields["MemAvailable"]
    if "MemFree" in fields:  # kernels before 3.14
        return fields["MemFree"] + fields.get("Cached", 0) + fields.get("Buffers", 0)
    return None


def _cgroup_limit() -> int | None:
    """Memory left under a cgroup v2 limit (containers), if one is set."""
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = Path("/sys/fs/cgroup/memory.current").read_text().strip()
    except OSError:
        return None
    if not limit.isdigit() or not used.isdigit():
        return None  # 'max': no limit
    return max(int(limit) - int(used), 0)


def available_memory(device: str | torch.device = "cpu") -> int | None:
    """Bytes that can still be allocated on ``device``; None when it cannot be told.

    CPU: ``psutil.virtual_memory().available`` when psutil is installed, else
    ``/proc/meminfo``'s MemAvailable, lowered to a cgroup (container) limit when there is one.
    CUDA: free memory reported by the driver.
    """
    dev = torch.device(device) if not isinstance(device, torch.device) else device
    if dev.type == "cuda":
        try:
            free, _total = torch.cuda.mem_get_info(dev)
            return int(free)
        except Exception:  # no driver / device: nothing to check against
            return None
    if dev.type != "cpu":
        return None
    avail: int | None
    try:
        import psutil

        avail = int(psutil.virtual_memory().available)
    except Exception:  # not installed, or unsupported platform
        avail = _meminfo_available()
    cg = _cgroup_limit()
    if cg is not None:
        avail = cg if avail is None else min(avail, cg)
    return avail


def check_memory(
    estimate: int,
    what: str,
    device: str | torch.device = "cpu",
    hint: str = "use smaller tiles / patches",
    available: int | None = None,
) -> None:
    """Raise :class:`ResourceError` if ``estimate`` bytes do not fit in the memory of ``device``.

    Parameters
    ----------
    estimate : int
        Bytes needed (from the ``estimate_*`` functions).
    what : str
        The job, for the message (e.g. ``'denoising a (2000, 512, 512) stack'``).
    hint : str
        What the user can do about it.
    available : int, optional
        Override the measured availability (tests); None measures it. An unknown
        availability never refuses a job.
    """
    if available is None:
        available = available_memory(device)
    if available is None:
        return
    usable = int(available * USABLE_FRACTION)
    if estimate > usable:
        where = "GPU memory" if torch.device(device).type == "cuda" else "memory"
        raise ResourceError(
            f"{what} needs about {format_bytes(estimate)} of {where}, {format_bytes(available)} are available; {hint}"
        )


def check_training_memory(
    patch_t: int, patch_xy: int, batch_size: int, arch: str, base_channels: int, device: str | torch.device = "cpu"
) -> int:
    """Refuse a training run whose step would not fit (call before the first step); returns the estimate.

    For the trainer: ``check_training_memory(rcfg['patch_t'], rcfg['patch_xy'], rcfg['batch_size'],
    den.arch, den.base_channels, device)``.
    """
    est = estimate_training_memory(patch_t, patch_xy, arch, base_channels, batch_size)
    check_memory(
        est,
        f"training {arch} (f={base_channels}) on batches of {batch_size} x {patch_t}x{patch_xy}x{patch_xy} patches",
        device,
        hint="use smaller patches (--patch-t / --patch-xy) or a smaller --batch-size",
    )
    return est


def is_out_of_memory(exc: BaseException) -> bool:
    """True for an out-of-memory error: CUDA's, a ``MemoryError``, or an allocator's RuntimeError."""
    oom = getattr(torch.cuda, "OutOfMemoryError", None)
    if (oom is not None and isinstance(exc, oom)) or isinstance(exc, MemoryError):
        return True
    text = str(exc).lower()  # CUDA / MPS / CPU allocators say it in words
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def free_accelerator_cache() -> None:
    """Give cached blocks back after an out-of-memory error, so a smaller retry can succeed."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


__all__ = [
    "FIXED_OVERHEAD",
    "INFER_FACTOR",
    "TRAIN_FACTOR",
    "activation_elements",
    "available_memory",
    "check_memory",
    "check_training_memory",
    "estimate_denoise_memory",
    "estimate_inference_memory",
    "estimate_training_memory",
    "format_bytes",
    "is_out_of_memory",
]
