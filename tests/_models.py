"""Stand-in networks wrapped as models, shared by the inference tests (what a test needs from the network is
that its output is known: the identity, or a caricature the test defines)."""

from __future__ import annotations

import torch

from napari_unet_att.model.denoiser import Denoiser
from napari_unet_att.model.normalization import Normalization


class Identity(torch.nn.Module):
    """The network that returns its input (a copy: the engine may reuse the input tensor)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clone()


def make(net: torch.nn.Module, mode: str = "temporal", norm: Normalization | None = None,
         flip: bool = False) -> Denoiser:
    """``net`` as a UNet-Att model of ``mode`` with the identity normalisation (or ``norm``)."""
    return Denoiser(net=net, arch="unet_att", base_channels=8, preset="custom", mode=mode,
                    norm=norm or Normalization(0.0, 1.0), flip_backward=flip)
