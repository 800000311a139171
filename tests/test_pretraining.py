"""Pretraining of the generalists: clean-twin targets, the simulated family, resumable rounds, the model name."""

from __future__ import annotations

import numpy as np
import pytest

from napari_unet_att.augment import d4_transform
from napari_unet_att.config import TrainConfig
from napari_unet_att.errors import InputError
from napari_unet_att.evaluation.motion import rigid_shifts as _motion
from napari_unet_att.evaluation.simulator import simulate
from napari_unet_att.model.checkpoint import load_checkpoint
from napari_unet_att.model.normalization import Normalization
from napari_unet_att.model.pretrained import is_generalist, pretrained_path, resolve_model
from napari_unet_att.modes import extract_pair
from napari_unet_att.training import pretraining
from napari_unet_att.training.sampler import PatchSampler


@pytest.mark.parametrize("view", ["pair", "same"])
def test_clean_twins_replace_the_targets_at_the_same_place(view: str):
    # 'pair': the clean twin of the self-supervised target view; 'same': of the input view itself
    sim = simulate(n_frames=32, size=32, photons=2.0, seed=5)
    norm = Normalization(100.0, 10.0)
    s = PatchSampler([sim.noisy], norm, "temporal", 4, 16, swap=True, augment=True, seed=1, targets=[sim.clean],
                     target_view=view)
    for _ in range(6):
        inp, tgt = s.sample(1)
        pos = s.last_positions[0]
        noisy_in, noisy_tgt = extract_pair(sim.noisy, "temporal", pos.t0, pos.y0, pos.x0, 4, 16)
        clean_in, clean_tgt = extract_pair(sim.clean, "temporal", pos.t0, pos.y0, pos.x0, 4, 16)
        if view == "pair":
            want_in, want_tgt = (noisy_tgt, clean_in) if pos.swapped else (noisy_in, clean_tgt)
        else:
            want_in, want_tgt = (noisy_tgt, clean_tgt) if pos.swapped else (noisy_in, clean_in)
        np.testing.assert_allclose(inp[0, 0], d4_transform(norm.apply(want_in), pos.k), atol=1e-5)
        np.testing.assert_allclose(tgt[0, 0], d4_transform(norm.apply(want_tgt), pos.k), atol=1e-5)
    with pytest.raises(InputError, match="one to one"):
        PatchSampler([sim.noisy], norm, "temporal", 4, 16, targets=[sim.clean[:-1]])
    with pytest.raises(InputError, match="target_view"):
        PatchSampler([sim.noisy], norm, "temporal", 4, 16, targets=[sim.clean], target_view="next")


def test_ar_motion_sits_between_drift_and_jitter():
    def lag1(kind: str) -> float:
        s = _motion(np.random.default_rng(0), 4000, 1.0, kind, 10.0)[:, 0]
        return float(np.corrcoef(s[1:], s[:-1])[0, 1])

    assert lag1("jitter") < 0.1 < 0.35 < lag1("ar") < 0.65 < 0.9 < lag1("walk")
    with pytest.raises(InputError, match="motion must be one of"):
        simulate(n_frames=8, size=16, motion="spin", motion_std=1.0)


def test_family_spans_dtypes_and_is_deterministic():
    pool = pretraining.make_pool("temporal", 0, 12, (24, 24, 24))
    dtypes = {r.noisy.dtype for r in pool}
    assert dtypes <= {np.dtype(np.uint16), np.dtype(np.int16)}
    assert all(r.clean.shape == r.noisy.shape and r.clean.dtype == np.float32 for r in pool)
    photons = [r.params["photons"] for r in pool]
    assert 0.2 <= min(photons) and max(photons) <= 10.0 and max(photons) / min(photons) > 3
    again = pretraining.make_pool("temporal", 0, 12, (24, 24, 24))
    assert all(np.array_equal(a.noisy, b.noisy) for a, b in zip(pool, again, strict=True))
    other_round = pretraining.make_pool("temporal", 1, 12, (24, 24, 24))
    assert not np.array_equal(pool[0].noisy, other_round[0].noisy)
    # int16 recordings have their dark level near zero, negative values included, and the clean twin shifted alike
    params = dict(pretraining.draw_params(np.random.default_rng(3), False), int16=True, saturate=False,
                  photons=1.0, read_noise=20.0, gain=20.0, offset=0.0)
    rec = pretraining.make_recording(params, (16, 24, 24), seed=1_000_123)
    assert rec.noisy.dtype == np.int16 and rec.noisy.min() < 0
    assert abs(float(rec.noisy.mean()) - float(rec.clean.mean())) < 0.05 * float(rec.noisy.std())
    mirrored = pretraining.make_pool("mirrored", 0, 1, (8, 24, 24))[0]
    assert mirrored.noisy.shape == (8, 48, 24) and mirrored.params["bidirectional"]


def test_worker_processes_simulate_the_same_pools():
    shape = (8, 16, 16)
    with pretraining.PoolSource("temporal", 2, shape, workers=1) as pools:
        # round 4 is simulated while round 3 trains; round 9 (a run resumed elsewhere) when it is asked for
        got = {r: pools.get(r) for r in (3, 4, 9)}
    for r, recs in got.items():
        want = pretraining.make_pool("temporal", r, 2, shape)
        assert all(np.array_equal(a.noisy, b.noisy) and np.array_equal(a.clean, b.clean) and a.params == b.params
                   for a, b in zip(recs, want, strict=True))


def test_pretraining_runs_in_resumable_rounds(tmp_path):
    cfg = TrainConfig(mode="temporal", steps=4, patch_t=4, patch_xy=16, batch_size=1, device="cpu", l1_weight=0.0,
                      val_every=1000, checkpoint_every=0)
    final = pretraining.pretrain(cfg, tmp_path, pool=2, round_steps=2, shape=(24, 24, 24), log=lambda s: None)
    assert final.exists() and load_checkpoint(final).step == 4
    # supervised (same-view) rounds start from given weights and see every frame (each one stored twice)
    said: list[str] = []  # continuing a generalist: fresh recordings from round 7 on (not the parent's again)
    same = pretraining.pretrain(cfg, tmp_path / "same", pool=1, round_steps=2, shape=(24, 24, 24),
                                log=said.append, target_view="same", init=final, first_round=7, workers=1)
    assert [s.split(":")[0] for s in said] == ["round 7", "round 8"]
    assert "pretraining round 8 recording 0" in load_checkpoint(same).provenance["sources"]
    den = load_checkpoint(same)
    assert den.step == 4 and den.provenance["parent"]["model"] == str(final)
    assert [list(s) for s in den.provenance["shapes"]] == [[48, 24, 24]]
    with pytest.raises(ValueError, match="temporal"):
        pretraining.pretrain(TrainConfig(mode="mirrored", steps=2), tmp_path / "m", target_view="same")
    # a finished run does nothing more when started again
    assert pretraining.pretrain(cfg, tmp_path, pool=2, round_steps=2, shape=(24, 24, 24), log=lambda s: None) == final
    assert load_checkpoint(final).step == 4


def test_the_generalist_name():
    assert is_generalist("generalist") and is_generalist(" Generalist ") and not is_generalist("model.pt")
    assert resolve_model("generalist", "mirrored") == pretrained_path("mirrored")
    assert pretrained_path("temporal").stat().st_size < 10_000_000  # shipped in the wheel: small
    with pytest.raises(InputError, match="no pretrained generalist for mode 'rowsplit'"):
        resolve_model("generalist", "rowsplit")
