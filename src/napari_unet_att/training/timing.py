"""How long training will take on this machine, measured before it starts.

The speed of a training step varies 10-fold between machines (a CPU with native bfloat16 vs
one without, a GPU), so a budget in steps means nothing to a user until it is timed here.
:func:`measure_step_seconds` times a few optimiser steps of the configured network on random
patches of the configured size (no data read, nothing kept); :func:`describe_budget` turns
that into what the budget buys.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from ..config import DEFAULT_STEPS, TrainConfig, get_preset
from ..model.networks import build_network
from ..runtime.device import autocast, configure_process, grad_scaler, resolve_device, reuse_freed_memory, to_device
from .loss import loss_fn


def measure_step_seconds(cfg: TrainConfig, steps: int = 2) -> float:
    """Seconds per training step of ``cfg`` on this machine (median of ``steps`` timed steps).

    One untimed step comes first: it pays one-off costs (allocator, kernel selection) that a
    real run pays once too. Uses the config's preset network, patch, batch size, device and
    precision, random data and a fresh optimiser, so the estimate holds for any recording.

    Parameters
    ----------
    cfg : TrainConfig
    steps : int
        Timed steps (>= 1).

    Returns
    -------
    float
        Seconds per optimiser step.
    """
    rcfg = cfg.resolved()
    preset = get_preset(rcfg.preset)
    device = configure_process(resolve_device(rcfg.device))
    net = build_network(preset.arch, preset.base_channels).to(device).train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-6)
    scaler = grad_scaler(device, rcfg.amp)
    shape = (rcfg.batch_size, 1, rcfg.patch_t, rcfg.patch_xy, rcfg.patch_xy)
    gen = torch.Generator().manual_seed(0)
    x = to_device(torch.randn(shape, generator=gen), device)
    y = to_device(torch.randn(shape, generator=gen), device)
    accum = max(1, int(rcfg.accumulate))
    times = []
    with reuse_freed_memory(device):  # as the training loop runs (it changes CPU step times)
        for i in range(max(1, steps) + 1):
            t0 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            for _ in range(accum):
                with autocast(device, rcfg.amp, training=True):
                    pred = net(x)
                scaler.scale(loss_fn(pred, y, rcfg.l1_weight) / accum).backward()
            scaler.step(opt)
            scaler.update()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i > 0:
                times.append(time.perf_counter() - t0)
    return float(np.median(times))


def describe_budget(step_s: float, steps: int | None = None, seconds: float | None = None) -> str:
    """What a budget buys at ``step_s`` seconds per step, in one line.

    Examples
    --------
    >>> describe_budget(1.8, steps=500)
    '500 steps take about 15 min here (1.8 s/step)'
    >>> describe_budget(1.8, seconds=300)
    '5 min is about 166 steps here (1.8 s/step)'
    """
    rate = f"{step_s:.2g} s/step" if step_s >= 0.1 else f"{1.0 / step_s:.0f} steps/s"
    if seconds is not None:
        return f"{_duration(seconds)} is about {int(seconds / step_s)} steps here ({rate})"
    n = DEFAULT_STEPS if steps is None else int(steps)
    return f"{n} steps take about {_duration(n * step_s)} here ({rate})"


def _duration(seconds: float) -> str:
    """``'40 s'``, ``'15 min'``, ``'2.5 h'``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
