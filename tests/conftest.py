"""Shared fixtures. Keep this file small: module-specific fixtures belong in their test file."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(autouse=True)
def _isolated_settings(tmp_path_factory, monkeypatch):
    """Widgets remember settings in a JSON file: never touch the real user config in tests."""
    monkeypatch.setenv("NAPARI_UNET_ATT_CONFIG_DIR", str(tmp_path_factory.mktemp("config")))


@pytest.fixture(scope="session")
def tiny_sim():
    """A tiny simulated recording (24 x 32 x 32) with ground truth and soma masks."""
    from napari_unet_att.evaluation.simulator import simulate

    return simulate(n_frames=24, size=32, photons=3.0, seed=3)


@pytest.fixture
def tiny_denoiser():
    """An untrained, small UNet-Att Denoiser (fast to apply; enough to test plumbing)."""
    import torch

    from napari_unet_att.model.denoiser import Denoiser
    from napari_unet_att.model.networks import build_network
    from napari_unet_att.model.normalization import Normalization

    torch.manual_seed(0)
    net = build_network("unet_att", 4).eval()
    return Denoiser(net, "unet_att", 4, "fast", "temporal", Normalization(100.0, 50.0), train_shape=(24, 32, 32))


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def notes(monkeypatch) -> list[tuple[str, str]]:
    """Every napari notification the widgets send: ``(level, text)``."""
    import napari.utils.notifications as nn

    shown: list[tuple[str, str]] = []
    for level in ("error", "warning", "info"):
        monkeypatch.setattr(nn, f"show_{level}", lambda msg, level=level: shown.append((level, str(msg))))
    return shown
