"""What a new user meets first: time budgets, CLI outputs and messages (issue 15)."""

from __future__ import annotations

import time

import numpy as np
import torch

from napari_unet_att.config import TrainConfig
from napari_unet_att.train import Trainer

TINY = dict(patch_t=8, patch_xy=16, batch_size=1, val_every=1000, val_patches=1, device="cpu")


def test_time_budget_ends_within_it_and_reports_100_percent(tiny_sim, monkeypatch):
    """A 3.5 s budget with 1 s steps ends after 3 steps (at 3 s), not after a 4th (at 4 s).

    The trainer's clock is a fake one that only the steps advance, so the test measures the
    stopping rule, not this machine's speed.
    """
    import types

    import napari_unet_att.train as train_mod

    clock = [0.0]
    fake_time = types.SimpleNamespace(perf_counter=lambda: clock[0], time=time.time, monotonic=time.monotonic,
                                      sleep=time.sleep)
    real_loss = train_mod.loss_fn

    def one_second_step(*args, **kwargs):
        if torch.is_grad_enabled():  # training steps only, not the validation's loss
            clock[0] += 1.0
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(train_mod, "time", fake_time)
    monkeypatch.setattr(train_mod, "loss_fn", one_second_step)
    cfg = TrainConfig(seconds=3.5, **TINY)
    events = [e for e in Trainer([tiny_sim.noisy], cfg).run() if e.step > 0]
    last = events[-1]
    assert last.step == 3 and last.elapsed_s <= cfg.seconds
    assert last.fraction == 1.0  # the bar ends full when the time budget ends
    assert np.isfinite(last.loss)
