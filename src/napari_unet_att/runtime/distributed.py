"""Multi-process training and sharded denoising with PyTorch's own engine (``torchrun`` + DDP).

``torchrun --nproc_per_node=K -m napari_unet_att train ...`` sets ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK``; everything here is a no-op when they are absent, so single-process runs pay
nothing. NCCL is used between GPUs, gloo between CPU processes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits in a ``torchrun`` job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def dist_env() -> DistEnv:
    """Read the launcher's environment variables (defaults: a single process)."""
    return DistEnv(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                   int(os.environ.get("LOCAL_RANK", 0)))


def init_process_group(device: torch.device) -> DistEnv:
    """Join the process group once (NCCL for CUDA devices, gloo otherwise)."""
    env = dist_env()
    if env.enabled and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return env


def shutdown() -> None:
    """Leave the process group if this process joined one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_max(values: Sequence[float], env: DistEnv) -> list[float]:
    """Element-wise maximum over ranks (keeps budgets and stop requests in lock-step)."""
    if not env.enabled:
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.cpu().tolist()


def all_mean(value: float, env: DistEnv) -> float:
    """Mean of a scalar over ranks (for logging losses)."""
    if not env.enabled:
        return float(value)
    t = torch.tensor([float(value)], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return float(t.item()) / env.world_size


def barrier(env: DistEnv) -> None:
    if env.enabled and dist.is_initialized():
        dist.barrier()


def shard(items: Sequence[T], env: DistEnv | None = None) -> list[T]:
    """This rank's share of a list of jobs (round robin: ``items[rank::world_size]``)."""
    env = env or dist_env()
    return list(items[env.rank :: env.world_size])


def wrap_model(net: torch.nn.Module, device: torch.device, env: DistEnv) -> torch.nn.Module:
    """DistributedDataParallel around ``net`` when running under torchrun, else ``net`` itself."""
    if not env.enabled:
        return net
    ids = [device.index if device.index is not None else env.local_rank] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(net, device_ids=ids)
