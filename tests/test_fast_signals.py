"""Advice before temporal training on a signal that changes fast between frames (training.fast_signals)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_unet_att.config import TrainConfig
from napari_unet_att.evaluation.simulator import simulate
from napari_unet_att.training.fast_signals import MIN_FRAME_CORRELATION, frame_correlation, temporal_advice
from napari_unet_att.training.trainer import iter_train


def _movie(fast: bool, seed: int = 1) -> np.ndarray:
    """96 x 48 x 48 at 2 photons, still: a fast indicator at 5 Hz (decay 0.1 s) or a slow one at 30 Hz (0.7 s)."""
    fps, tau, rise = (5.0, 0.1, 0.02) if fast else (30.0, 0.7, 0.05)
    return simulate(n_frames=96, size=48, photons=2.0, seed=seed, fps=fps, tau_decay=tau, tau_rise=rise).noisy


@pytest.mark.parametrize("seed", [1, 2])
def test_frame_correlation_tells_fast_signals_from_slow(seed):
    fast, slow = frame_correlation(_movie(True, seed)), frame_correlation(_movie(False, seed))
    assert fast < 0.6 < MIN_FRAME_CORRELATION < 0.9 < slow, (fast, slow)


def test_frame_correlation_leaves_the_noise_out():
    """Pure noise changes completely from frame to frame, but it is no signal: nothing to advise on."""
    for seed in range(8):  # (seed 5's measured signal variance is positive: 0.0006)
        assert frame_correlation(np.random.default_rng(seed).poisson(2.0, (96, 48, 48)).astype(np.float32)) is None
    assert frame_correlation(np.full((96, 48, 48), 5.0, np.float32)) is None  # nothing changes
    assert frame_correlation(_movie(True)[:8]) is None  # too few frames
    assert frame_correlation(_movie(True)[:, :6]) is None  # too few rows


def test_frame_correlation_reads_a_lazy_stack():
    da = pytest.importorskip("dask.array")
    fast = _movie(True)
    assert frame_correlation(da.from_array(fast, chunks=(16, 48, 48))) == pytest.approx(frame_correlation(fast))


def test_advice_only_for_temporal_pairs():
    fast = _movie(True)
    notes = temporal_advice([fast, _movie(False)], ["fast.tif", "slow.tif"], "temporal")
    assert len(notes) == 1 and notes[0].startswith("fast.tif: the signal changes fast from frame to frame")
    assert "the model 'generalist'" in notes[0] and "mirrored-scan" in notes[0]
    assert temporal_advice([fast], ["fast.tif"], "mirrored") == []  # pairs recorded at the same time
    assert temporal_advice([fast], ["fast.tif"], "rowsplit") == []


def test_training_says_it_before_the_first_step():
    cfg = TrainConfig(mode="temporal", preset="fast", steps=1, patch_t=8, patch_xy=16, batch_size=1, val_patches=1,
                      device="cpu")
    said = [e.message for e in iter_train([_movie(True)], cfg, sources=["fast.tif"]) if e.message]
    assert any(m.startswith("fast.tif: the signal changes fast") for m in said), said
    said = [e.message for e in iter_train([_movie(False)], cfg, sources=["slow.tif"]) if e.message]
    assert not any("changes fast" in m for m in said), said
