"""Field hardening of training options, modes and normalisation (issues 14 and 15).

A resumed run refuses options that contradict it, patch advice can be followed, any intensity scale
trains, a model far off its normalisation says so, and a time budget bounds the whole run.
"""

from __future__ import annotations

import re
import time
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_unet_att import write_stack
from napari_unet_att.config import InferConfig, TrainConfig
from napari_unet_att.errors import InputError
from napari_unet_att.evaluation import simulate
from napari_unet_att.model import checkpoint as ck

TINY = ["--patch-t", "8", "--patch-xy", "32", "--batch-size", "1", "--device", "cpu"]
TINY_CFG = dict(patch_t=8, patch_xy=32, batch_size=1, val_every=1000, val_patches=1, device="cpu")


@pytest.fixture(scope="module")
def sim():
    return simulate(n_frames=40, size=32, photons=3.0, seed=5)


@pytest.fixture(scope="module")
def stack(sim, tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("data") / "stack.tif"
    write_stack(p, sim.noisy)
    return p


def _cli(argv: list[object], capsys) -> tuple[int, list[str]]:
    """Exit code and the non-empty stderr lines of ``napari-unet-att ARGV`` run in this process."""
    from napari_unet_att.cli import main

    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    return code, [ln for ln in err.replace("\r", "\n").splitlines() if ln.strip()]


# -- 1. a resumed run refuses options that contradict it --------------------------------------------
@pytest.fixture(scope="module")
def rowsplit_run(stack, tmp_path_factory) -> Path:
    """checkpoint-last.pt of a 2-step rowsplit run."""
    from napari_unet_att.cli import main

    out = tmp_path_factory.mktemp("rowsplit")
    assert main(["train", str(stack), "--mode", "rowsplit", "--steps", "2", "--out", str(out), *TINY]) == 0
    return out / "checkpoint-last.pt"


@pytest.mark.parametrize(("extra", "words"), [
    (["--mode", "temporal"], ["--mode 'temporal'", "'rowsplit'"]),  # the default, but given: still refused
    (["--mode", "mirrored"], ["--mode 'mirrored'", "'rowsplit'"]),
    (["--preset", "paper"], ["--preset 'paper'", "'fast'"]),
    (["--patch-xy", "16", "--seed", "7"], ["--patch-xy 16", "--seed 7"]),
])
def test_resume_refuses_conflicting_options(stack, rowsplit_run, tmp_path, capsys, extra, words):
    out = tmp_path / "run2"
    code, lines = _cli(["train", stack, "--resume", rowsplit_run, "--steps", "1", "--out", out,
                        *[a for a in TINY if a not in ("--patch-xy", "32")], *extra], capsys)
    assert code == 2
    assert len(lines) == 1 and "Traceback" not in lines[0], lines
    for w in words:
        assert w in lines[0], lines[0]
    assert "--init" in lines[0]  # what to do instead
    assert not out.exists()


def test_resume_keeps_working_with_the_same_or_changeable_options(stack, rowsplit_run, tmp_path, capsys):
    """The command that started the run, with --resume and a new budget and learning rate, resumes it."""
    out = tmp_path / "run3"
    code, lines = _cli(["train", stack, "--mode", "rowsplit", "--resume", rowsplit_run, "--steps", "1", "--lr",
                        "1e-4", "--out", out, *TINY], capsys)
    assert code == 0, lines
    den = ck.load_checkpoint(out / "model.pt")
    assert den.mode == "rowsplit" and den.step == 3
    assert den.train_config["lr"] == pytest.approx(1e-4)  # the new learning rate is used, not ignored


def test_resume_refuses_conflicts_in_python_too(sim, rowsplit_run, tmp_path):
    from napari_unet_att.training import Trainer

    trainer = Trainer([sim.noisy], TrainConfig(mode="mirrored", steps=1, **TINY_CFG), out_dir=tmp_path / "r",
                      resume=rowsplit_run)
    with pytest.raises(InputError, match=r"mode='mirrored' \(the run has 'rowsplit'\)") as exc:
        next(trainer.run())
    assert "--" not in str(exc.value)  # the Python API's words (init=), not the command line's


# -- 2. patch advice that can be followed -----------------------------------------------------------
SMALL_SHAPES = [(t, y, x) for t in (2, 3, 5, 7, 8, 9, 12) for y, x in ((8, 8), (12, 12), (16, 16), (32, 16),
                                                                      (32, 32), (24, 12))]


@pytest.mark.parametrize("mode", ["temporal", "mirrored", "rowsplit"])
def test_patch_advice_can_be_followed(mode):
    """What the trainer and the train dock's check advise (patch_t <= N, patch_xy <= N) is accepted once
    followed (before: a 3-frame stack was advised patch_t <= 1, and refused again with patch_t = 1)."""
    from napari_unet_att.modes import check_stack_for_mode
    from napari_unet_att.training.start import fit_patch

    def dock_then_trainer(rcfg, shape):
        check_stack_for_mode(shape, mode, rcfg.patch_t, rcfg.patch_xy)
        fit_patch(rcfg, [shape])

    advised = 0
    for shape in SMALL_SHAPES:
        for check in (dock_then_trainer, lambda rcfg, shape: fit_patch(rcfg, [shape])):
            rcfg = TrainConfig(mode=mode).resolved()
            for _ in range(3):  # the preset's patch, then the advice (frames, then rows) followed
                try:
                    check(rcfg, shape)
                    break
                except InputError as exc:
                    found = re.search(r"(patch_t|patch_xy) <= (\d+)", str(exc))
                    if found is None:
                        break  # refused without advice: the stack does not suit the mode at all
                    assert int(found.group(2)) < getattr(rcfg, found.group(1)), f"{shape}: {exc}"
                    advised += 1
                    rcfg = rcfg.merged({found.group(1): int(found.group(2))})
            else:
                pytest.fail(f"{shape}: advice followed twice and still refused")
    assert advised  # the loop did meet advice to follow


def test_following_the_patch_advice_trains(tmp_path, capsys):
    p = tmp_path / "short.tif"
    write_stack(p, np.random.default_rng(0).poisson(20, (3, 32, 32)).astype(np.uint16))
    argv = ["train", p, "--steps", "1", "--out", tmp_path / "o", "--device", "cpu"]
    code, lines = _cli(argv, capsys)
    assert code == 2 and "use a smaller patch (patch_t <= 1)" in lines[-1], lines
    code, lines = _cli([*argv, "--patch-t", "1"], capsys)  # before: the same advice again
    assert code == 0, lines
    assert ck.load_checkpoint(tmp_path / "o" / "model.pt").train_config["patch_t"] == 1


# -- 3. any intensity scale trains ------------------------------------------------------------------
@pytest.mark.parametrize("factor", [1e-30, 1e30])
def test_tiny_and_huge_intensity_scales_train_and_denoise(sim, factor):
    from napari_unet_att.inference import denoise
    from napari_unet_att.training import train

    x = (sim.noisy.astype(np.float64) * factor).astype(np.float32)
    den = train([x], TrainConfig(steps=2, amp=False, **TINY_CFG))
    assert den.norm.scale == pytest.approx(float(x.std(dtype=np.float64)), rel=1e-3)
    out = denoise(x, den, InferConfig(device="cpu"))
    assert np.isfinite(out).all()
    # In the data's own units: the same frame means (kept) and a spread of the same order as the input's.
    assert np.allclose(out.mean(axis=(1, 2)), x.mean(axis=(1, 2)), rtol=1e-3)
    assert 1e-3 < out.std(dtype=np.float64) / x.std(dtype=np.float64) < 10


def test_constant_stacks_are_still_refused_at_any_scale():
    from napari_unet_att.model.normalization import pool_statistics, stack_statistics

    for value in (0.0, 1e-30, 3.0, 1e30):
        with pytest.raises(InputError, match="constant"):
            pool_statistics([stack_statistics(np.full((4, 8, 8), value, dtype=np.float32))])


# -- 4. a model far off its normalisation says so ---------------------------------------------------
@pytest.mark.parametrize("factor", [1e30, 1e-30])
def test_model_far_off_its_normalisation_is_refused_with_advice(sim, tiny_denoiser, tmp_path, capsys, factor):
    from napari_unet_att.inference import denoise
    from napari_unet_att.model.normalization import Normalization

    tiny_denoiser.norm = Normalization(float(sim.noisy.mean()), float(sim.noisy.std()))
    x = (sim.noisy.astype(np.float64) * factor).astype(np.float32)
    with pytest.raises(InputError, match="input-norm"):
        denoise(x, tiny_denoiser, InferConfig(device="cpu"))
    # the same data in the model's units pass, and the advice given works
    assert np.isfinite(denoise(sim.noisy, tiny_denoiser, InferConfig(device="cpu"))).all()
    out = denoise(x, tiny_denoiser, InferConfig(device="cpu", normalization="input"))
    assert np.isfinite(out).all() and out.std(dtype=np.float64) > 0
    # the command line: one line, exit 2, no output file; --input-norm works
    model, src = ck.save_checkpoint(tmp_path / "m.pt", tiny_denoiser), tmp_path / "far.tif"
    write_stack(src, x)
    code, lines = _cli(["denoise", src, "--model", model, "--out", tmp_path / "o.tif", "--device", "cpu"], capsys)
    assert code == 2 and len(lines) == 1 and "--input-norm" in lines[0], lines
    assert not (tmp_path / "o.tif").exists()
    code, lines = _cli(["denoise", src, "--model", model, "--out", tmp_path / "o.tif", "--device", "cpu",
                        "--input-norm"], capsys)
    assert code == 0, lines


# -- 5. a time budget bounds the whole run ----------------------------------------------------------
def test_time_budget_counts_the_set_up(tiny_sim, monkeypatch):
    """10 s budget, 5 s of set-up (slow statistics), 1 s steps: the run ends by 10 s, not 5 + 10 s.

    The trainer's clock is a fake one that only the set-up and the steps advance.
    """
    import napari_unet_att.training.trainer as train_mod

    clock = [0.0]
    fake_time = types.SimpleNamespace(perf_counter=lambda: clock[0], time=time.time, monotonic=time.monotonic,
                                      sleep=time.sleep)
    real_loss, real_norms = train_mod.loss_fn, train_mod.normalizations

    def one_second_step(*args, **kwargs):
        if torch.is_grad_enabled():
            clock[0] += 1.0
        return real_loss(*args, **kwargs)

    def slow_statistics(*args, **kwargs):
        clock[0] += 5.0
        return real_norms(*args, **kwargs)

    monkeypatch.setattr(train_mod, "time", fake_time)
    monkeypatch.setattr(train_mod, "loss_fn", one_second_step)
    monkeypatch.setattr(train_mod, "normalizations", slow_statistics)
    cfg = TrainConfig(seconds=10.0, patch_t=8, patch_xy=16, batch_size=1, val_every=1000, val_patches=1,
                      device="cpu")
    events = [e for e in train_mod.Trainer([tiny_sim.noisy], cfg).run() if e.step > 0]
    assert clock[0] <= cfg.seconds  # set-up and training together (before: 5 s + 9 steps = 14 s)
    assert events[-1].step >= 3 and events[-1].fraction == 1.0
    assert np.isfinite(events[-1].loss)


def test_train_dock_refuses_a_resume_in_another_mode(make_napari_viewer, qtbot, tiny_sim, tmp_path, monkeypatch):
    """The dock shows a mode: resuming a run of another mode with it is refused, with the run's mode named."""
    from napari_unet_att import _napari as common
    from napari_unet_att._napari import TrainWidget
    from napari_unet_att.training import train

    train([tiny_sim.noisy], TrainConfig(mode="rowsplit", steps=1, patch_t=8, patch_xy=16, batch_size=1,
                                        device="cpu"), out_dir=tmp_path / "run")
    shown: list[str] = []
    monkeypatch.setattr("napari.utils.notifications.show_error", lambda msg: shown.append(str(msg)))
    viewer = make_napari_viewer()
    w = TrainWidget(viewer)
    w.patch_t.setValue(8)
    w.patch_xy.setValue(16)
    w.budget.setValue(1)
    w.budget_unit.setCurrentText("steps")
    w.device.setCurrentText("cpu")
    viewer.add_image(tiny_sim.noisy, name="movie")
    w.resume.setText(str(tmp_path / "run" / "checkpoint-last.pt"))
    worker = w.start()  # the form's mode is 'temporal'
    if worker is not None:
        qtbot.waitUntil(lambda: not common.worker_busy(worker), timeout=60_000)
    assert shown and "'temporal'" in shown[-1] and "'rowsplit'" in shown[-1], shown
    assert w.start_btn.isEnabled() and not w.stop_btn.isEnabled()
