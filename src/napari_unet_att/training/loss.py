"""The training loss: a weighted sum of L1 and L2 (mean squared error).

``TrainConfig.l1_weight`` says why the default weight is 0 (pure MSE).
"""

from __future__ import annotations

import torch


def loss_fn(pred: torch.Tensor, target: torch.Tensor, l1_weight: float) -> torch.Tensor:
    """``w * L1 + (1 - w) * MSE`` in float32 (autocast outputs are upcast first).

    Parameters
    ----------
    pred, target : torch.Tensor
        The network's output and the (noisy) target, same shape.
    l1_weight : float
        ``w`` in [0, 1].

    Returns
    -------
    torch.Tensor
        The scalar loss.
    """
    pred = pred.float()
    return l1_weight * torch.nn.functional.l1_loss(pred, target) + (1.0 - l1_weight) * torch.nn.functional.mse_loss(
        pred, target
    )
