"""The in-memory model: a network plus everything needed to apply it correctly."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from .normalization import Normalization


@dataclass
class Denoiser:
    """A trained (or imported) network with its metadata.

    Attributes
    ----------
    net : torch.nn.Module
        Maps ``(B, 1, T, Y, X)`` float32 normalised data to the same shape.
    arch : str
        ``'unet_att'`` or ``'unet3d'``.
    base_channels : int
        First-level channel count ``f``.
    preset : str
        Preset name it was built from (``'custom'`` / ``'imported'`` otherwise).
    mode : str
        Self-supervision mode it was trained with; decides how inference splits the input
        (a ``'mirrored'`` model applied to a ``(T, 2N, N)`` stack denoises forward and
        backward lines separately).
    norm : Normalization
        Intensity normalisation of the training data.
    flip_backward : bool
        Backward lines were stored x-mirrored in the training data.
    train_shape : tuple of int or None
        Shape of the (first) training stack.
    train_config : dict
        Resolved :class:`~napari_unet_att.config.TrainConfig` of the run.
    provenance : dict
        Package version, creation time, source files, steps, seed, origin of imported weights.
    step : int
        Optimiser steps taken.
    """

    net: torch.nn.Module
    arch: str
    base_channels: int
    preset: str
    mode: str
    norm: Normalization
    flip_backward: bool = False
    train_shape: tuple[int, ...] | None = None
    train_config: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    step: int = 0

    def describe(self) -> str:
        """One paragraph for the UI and ``--help`` style listings."""
        n = sum(p.numel() for p in self.net.parameters())
        when = self.provenance.get("created", "unknown time")
        shape = "x".join(map(str, self.train_shape)) if self.train_shape else "unknown"
        src = self.provenance.get("source", "napari-unet-att")
        return (
            f"{self.arch} (f={self.base_channels}, {n:,} parameters), preset '{self.preset}', mode '{self.mode}', "
            f"trained {self.step} steps on a {shape} stack, {when}; origin: {src}"
        )
