"""What the training loop computes to report rather than to train: the validation loss and previews."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..config import InferConfig, ResolvedTrainConfig
from ..errors import InputError
from ..model.denoiser import Denoiser
from ..runtime.device import autocast, to_device
from .loss import loss_fn


def validation_loss(net: torch.nn.Module, batches: list[tuple[np.ndarray, np.ndarray]], device: torch.device,
                    rcfg: ResolvedTrainConfig) -> float:
    """Mean loss of ``net`` on the held-out ``batches`` (eval mode, no gradients; train mode after)."""
    net.eval()
    losses = []
    with torch.inference_mode():
        for inp, tgt in batches:
            x, y = to_device(torch.from_numpy(inp), device), to_device(torch.from_numpy(tgt), device)
            with autocast(device, rcfg.amp):
                pred = net(x)
            losses.append(float(loss_fn(pred, y, rcfg.l1_weight).item()))
    net.train()
    return float(np.mean(losses))


def preview_output(stack: Any, den: Denoiser, rcfg: ResolvedTrainConfig, device: torch.device) -> np.ndarray:
    """The current model's output on the preview frames (``rcfg.preview_frames``) of ``stack`` (input units)."""
    from ..inference.denoising import denoise  # local: infer imports nothing from train, keep the graph one-way

    f0, f1 = rcfg.preview_frames or (0, min(stack.shape[0], 16))
    f0, f1 = max(0, int(f0)), min(stack.shape[0], int(f1))
    if f1 - f0 < 1:
        raise InputError(f"preview frames {f0}..{f1} are outside the stack's {stack.shape[0]} frames")
    den.net.eval()
    try:
        return denoise(stack[f0:f1], den, InferConfig(device=str(device), amp=rcfg.amp))
    finally:
        den.net.train()
