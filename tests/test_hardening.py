"""Field hardening (issue 14): signals, colliding outputs, poisoned models and odd numbers.

Every case ends with exit 0 / 2 / 130 / 143, one clear line, no traceback, no lost model or
input and no leftover file. Signals are sent to a real ``python -m napari_unet_att`` process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_unet_att.model import checkpoint as ck

SMALL = ["--patch-t", "4", "--patch-xy", "16"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("data") / "stack.tif"
    tifffile.imwrite(p, np.random.default_rng(0).poisson(50, (24, 16, 16)).astype(np.uint16),
                     metadata={"axes": "TYX"})
    return p


def _start(args: list[object], err: Path) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    return subprocess.Popen([sys.executable, "-m", "napari_unet_att", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=open(err, "w"), text=True, env=env)  # noqa: SIM115 - the child owns it


def _wait_for(err: Path, text: str, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    end = time.monotonic() + timeout
    while text not in err.read_text():
        assert proc.poll() is None, f"ended (rc {proc.returncode}) before {text!r}: {err.read_text()}"
        assert time.monotonic() < end, f"timed out waiting for {text!r}"
        time.sleep(0.05)


def _last_line(err: Path) -> str:
    lines = [ln for ln in err.read_text().replace("\r", "\n").splitlines() if ln.strip()]
    return lines[-1]


def _no_traceback(err: Path) -> None:
    assert "Traceback" not in err.read_text(), err.read_text()


# -- 1. signals ------------------------------------------------------------------------------
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_during_training_saves_the_model(stack, tmp_path, sig, code):
    """The first periodic checkpoint is far away (--checkpoint-every 0): the model must still be saved."""
    out, err = tmp_path / "run", tmp_path / "err.txt"
    proc = _start(["train", stack, "--steps", "100000", "--checkpoint-every", "0", *SMALL, "--out", out], err)
    _wait_for(err, "loss=", proc)  # inside the loop: steps are being made
    proc.send_signal(sig)
    stdout, _ = proc.communicate(timeout=120)
    assert proc.returncode == code
    _no_traceback(err)
    line = _last_line(err)
    assert line.startswith(f"napari-unet-att train: interrupted by {signal.Signals(sig).name}; "), line
    assert "is saved in" in line and str(out / "model.pt") in line
    den = ck.load_checkpoint(out / "model.pt")
    assert den.step >= 1
    assert str(den.step) in line
    assert ck.load_training_state(out / "checkpoint-last.pt")["step"] == den.step
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["checkpoint-last.pt", "model.pt"]
    assert f'"steps": {den.step}' in stdout


def test_second_signal_interrupts_and_keeps_files_valid(stack, tmp_path):
    """A user who insists (two signals) gets out at once; whatever is on disk still loads."""
    out, err = tmp_path / "run", tmp_path / "err.txt"
    proc = _start(["train", stack, "--steps", "100000", "--checkpoint-every", "1", *SMALL, "--out", out], err)
    _wait_for(err, "loss=", proc)
    proc.send_signal(signal.SIGTERM)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=120)
    assert proc.returncode == 143
    _no_traceback(err)
    assert "interrupted by SIGTERM" in _last_line(err)
    for name in ("checkpoint-last.pt", "model.pt"):
        if (out / name).exists():
            assert ck.load_checkpoint(out / name).step >= 1


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_during_denoise_leaves_no_file(stack, tmp_path, sig, code):
    long = tmp_path / "long.tif"
    tifffile.imwrite(long, np.random.default_rng(1).poisson(50, (1024, 32, 32)).astype(np.uint16),
                     metadata={"axes": "TYX"})
    model = tmp_path / "m" / "model.pt"
    _save_model(model)
    out, err = tmp_path / "out", tmp_path / "err.txt"
    proc = _start(["denoise", long, "--model", model, "--out", out / "d.tif", "--tile-t", "8", "--tta", "8"], err)
    _wait_for(err, "frames/s", proc)  # the network runs: the output is being written
    proc.send_signal(sig)
    proc.communicate(timeout=120)
    assert proc.returncode == code
    _no_traceback(err)
    assert _last_line(err) == (f"napari-unet-att denoise: interrupted by {signal.Signals(sig).name}; "
                               "no partial output was kept")
    assert list(out.iterdir()) == []  # not even the hidden temporary file


def _save_model(path: Path, base_channels: int = 4):
    from napari_unet_att.model.denoiser import Denoiser
    from napari_unet_att.model.networks import build_network
    from napari_unet_att.model.normalization import Normalization

    path.parent.mkdir(parents=True, exist_ok=True)
    den = Denoiser(build_network("unet_att", base_channels), "unet_att", base_channels, "custom", "temporal",
                   Normalization(50.0, 7.0))
    ck.save_checkpoint(path, den)
    return den


def test_stop_signals_policy_in_process():
    """Cooperative first signal, Interrupted on the second or when the job cannot stop cleanly."""
    from napari_unet_att.runtime.signals import Interrupted, StopSignals

    asked = []
    with StopSignals() as sig:
        sig.cooperate(lambda: asked.append(1) or True)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.01)
        assert asked == [1] and sig.signum == signal.SIGTERM and sig.exit_code == 143
        with pytest.raises(Interrupted) as info:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)
    assert info.value.exit_code == 130 and info.value.signum == signal.SIGINT
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # restored
    with pytest.raises(Interrupted, match="SIGTERM"), StopSignals() as sig:
        sig.cooperate(lambda: False)  # e.g. training still reading its statistics
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.01)


def test_trainer_cooperates_only_inside_the_loop(stack):
    from napari_unet_att.config import TrainConfig
    from napari_unet_att.stackio import read_stack
    from napari_unet_att.training.trainer import Trainer

    trainer = Trainer([read_stack(stack)], TrainConfig(steps=3, patch_t=4, patch_xy=16))
    assert trainer.request_stop() is False  # nothing trained yet: the caller must interrupt


# -- 2. output locations -------------------------------------------------------------------
def _cli(argv: list[object], capsys) -> tuple[int, str]:
    from napari_unet_att.cli import main

    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    lines = [ln for ln in err.replace("\r", "\n").splitlines() if ln.strip() and "error" in ln]
    return code, (lines[-1] if lines else err)


def test_colliding_denoise_outputs_refused_before_writing(stack, tmp_path, capsys):
    model = tmp_path / "m.pt"
    _save_model(model)
    (tmp_path / "d1").mkdir()
    (tmp_path / "d2").mkdir()
    a, b = tmp_path / "d1" / "rec.tif", tmp_path / "d2" / "rec.tif"
    a.write_bytes(stack.read_bytes())
    b.write_bytes(stack.read_bytes())
    code, line = _cli(["denoise", a, b, "--model", model, "--out", tmp_path / "O"], capsys)
    assert code == 2 and "would both be written to" in line and "rec_denoised.tif" in line
    assert not (tmp_path / "O" / "rec_denoised.tif").exists()
    # output 1 is input 2: refused before input 2 is touched
    x = tmp_path / "x"
    x.mkdir()
    (x / "a.tif").write_bytes(stack.read_bytes())
    (x / "a_denoised.tif").write_bytes(stack.read_bytes())
    code, line = _cli(["denoise", x / "a.tif", x / "a_denoised.tif", "--model", model, "--out", x], capsys)
    assert code == 2 and "would overwrite the input" in line
    assert (x / "a_denoised.tif").read_bytes() == stack.read_bytes()
    assert sorted(p.name for p in x.iterdir()) == ["a.tif", "a_denoised.tif"]
    # a hard link to the input is the input
    os.link(x / "a.tif", x / "hard.tif")
    code, line = _cli(["denoise", x / "a.tif", "--model", model, "--out", x / "hard.tif"], capsys)
    assert code == 2 and "would overwrite the input" in line


def test_existing_output_refused_without_overwrite(stack, tmp_path):
    from napari_unet_att.errors import InputError
    from napari_unet_att.stackio.outputs import check_denoise_outputs

    out = tmp_path / "o.tif"
    out.write_bytes(b"old")
    with pytest.raises(InputError, match="already exists; pass --overwrite"):
        check_denoise_outputs([stack], [out], overwrite=False)
    assert check_denoise_outputs([stack], [out], overwrite=True) == [out]
    assert out.read_bytes() == b"old"


def test_denoise_outputs_need_room_for_all_files(stack, tmp_path, monkeypatch):
    from napari_unet_att.errors import ResourceError
    from napari_unet_att.stackio import atomic as tio
    from napari_unet_att.stackio.outputs import check_denoise_outputs

    monkeypatch.setattr(tio, "free_bytes", lambda d: 5 * 2**19)  # 2.5 MB free: each file fits, both do not
    outs = [tmp_path / "a.tif", tmp_path / "b.tif"]
    with pytest.raises(ResourceError, match="not enough disk space for 2 output file"):
        check_denoise_outputs([stack, stack], outs, nbytes=[2**20, 2**20])
    check_denoise_outputs([stack], outs[:1], nbytes=[2**20])


@pytest.mark.parametrize(("out", "expected"), [
    ("x.png", "looks like a file name"), ("model.pt", "looks like a file name"),
    ("{stack}", "is an existing file"), ("{blocker}/run", "is a file, not a folder"),
])
def test_train_out_checked_before_training(stack, tmp_path, capsys, out, expected):
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    out = out.format(stack=stack, blocker=blocker)
    t0 = time.perf_counter()
    code, line = _cli(["train", stack, "--steps", "100000", *SMALL, "--out", tmp_path / out if "/" not in out
                       else out], capsys)
    assert code == 2 and expected in line, line
    assert time.perf_counter() - t0 < 30  # refused at once, not after the budget
    assert blocker.read_text() == "x" and not (tmp_path / "x.png").exists()


def test_train_out_unwritable_or_full_found_first(stack, tmp_path, capsys, monkeypatch):
    import _bad_inputs as bi
    from napari_unet_att.stackio import atomic as tio

    locked = tmp_path / "locked"
    locked.mkdir()
    bi.install_fault("unwritable", monkeypatch.setattr, locked)
    code, line = _cli(["train", stack, "--steps", "100000", *SMALL, "--out", locked], capsys)
    assert code == 2 and "not writable" in line and "Permission denied" in line
    monkeypatch.undo()
    monkeypatch.setattr(tio, "free_bytes", lambda d: 2**20)
    code, line = _cli(["train", stack, "--steps", "100000", *SMALL, "--out", tmp_path / "full"], capsys)
    assert code == 2 and "not enough disk space for the model and its checkpoints" in line
    assert not (tmp_path / "full").exists()  # the folder this run created is removed again


def test_two_training_runs_cannot_share_an_out_folder(stack, tmp_path):
    from napari_unet_att.config import TrainConfig
    from napari_unet_att.errors import InputError
    from napari_unet_att.stackio import read_stack
    from napari_unet_att.stackio.outputs import LOCK_NAME, OutputLock
    from napari_unet_att.training.trainer import Trainer

    out = tmp_path / "run"
    cfg = TrainConfig(steps=2, patch_t=4, patch_xy=16, checkpoint_every=0)
    out.mkdir()
    with OutputLock(out):
        with pytest.raises(InputError, match=r"another training run \(process \d+\) is writing into"):
            next(Trainer([read_stack(stack)], cfg, out_dir=out).run())
    assert not (out / LOCK_NAME).exists()  # released and removed
    gen = Trainer([read_stack(stack)], cfg, out_dir=out).run()
    next(gen)  # the first run holds the lock while it trains ...
    with pytest.raises(InputError, match="another training run"):
        next(Trainer([read_stack(stack)], cfg, out_dir=out).run())
    gen.close()  # ... and releases it when it ends
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint-last.pt", "model.pt"]


def test_lock_held_by_another_process(stack, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    code = ("import sys, time; from napari_unet_att.stackio.outputs import OutputLock; "
            f"l = OutputLock({str(out)!r}).acquire(); print('locked', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        proc = subprocess.run([sys.executable, "-m", "napari_unet_att", "train", str(stack), "--steps", "5", *SMALL,
                               "--out", str(out)], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and f"(process {holder.pid})" in proc.stderr
        assert "Traceback" not in proc.stderr and not (out / "model.pt").exists()
    finally:
        holder.kill()
        holder.wait()
    # the kernel released the dead holder's lock: the next run works
    proc = subprocess.run([sys.executable, "-m", "napari_unet_att", "train", str(stack), "--steps", "2", *SMALL,
                           "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint-last.pt", "model.pt"]


class _FullAfter:
    """``open`` for the checkpoint module: the (n+1)-th file written there hits a full disk half-way."""

    def __init__(self, n: int) -> None:
        self.left = n

    def __call__(self, path, mode="r", *a, **kw):
        import builtins
        import errno

        fh = builtins.open(path, mode, *a, **kw)
        if "w" not in mode:
            return fh
        self.left -= 1
        if self.left >= 0:
            return fh
        real_write = fh.write

        def write(data):
            real_write(bytes(memoryview(data)[:100]))
            raise OSError(errno.ENOSPC, "No space left on device")

        fh.write = write
        return fh


def test_disk_full_during_checkpoint_keeps_the_previous_one(stack, tmp_path, monkeypatch):
    from napari_unet_att.config import TrainConfig
    from napari_unet_att.errors import ResourceError
    from napari_unet_att.stackio import read_stack
    from napari_unet_att.training.trainer import Trainer

    out = tmp_path / "run"
    monkeypatch.setattr(ck, "open", _FullAfter(1), raising=False)  # step 2's checkpoint does not fit
    cfg = TrainConfig(steps=10, patch_t=4, patch_xy=16, checkpoint_every=2)
    with pytest.raises(ResourceError) as info:
        for _ in Trainer([read_stack(stack)], cfg, out_dir=out).run():
            pass
    msg = str(info.value)
    assert msg.startswith("could not save the checkpoint of step 4: the disk is full"), msg
    assert f"{out / 'checkpoint-last.pt'} (step 2) is kept" in msg
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint-last.pt"]  # no temporary, no model.pt
    assert ck.load_checkpoint(out / "checkpoint-last.pt").step == 2


# -- 3. non-finite and tampered models ------------------------------------------------------
def _tampered(src: Path, dst: Path, change) -> Path:
    import torch

    obj = torch.load(src, weights_only=True)
    change(obj)
    obj.pop("checksum", None)  # as an old file (or a careful forger) would be: the field checks must hold alone
    torch.save(obj, dst)
    return dst


def _weight(obj):
    return obj["state_dict"]["encoders.0.basic_module.SingleConv1.conv.weight"].view(-1)


TAMPER = {
    "nan_weight": (lambda o: _weight(o).__setitem__(0, float("nan")), "weights hold NaN or inf"),
    "inf_weight": (lambda o: _weight(o).__setitem__(3, float("-inf")), "weights hold NaN or inf"),
    "inf_scale": (lambda o: o.__setitem__("normalization", {"offset": 1.0, "scale": float("inf")}),
                  "invalid normalisation"),
    "zero_scale": (lambda o: o.__setitem__("normalization", {"offset": 1.0, "scale": 0.0}), "invalid normalisation"),
    "nan_offset": (lambda o: o.__setitem__("normalization", {"offset": float("nan"), "scale": 1.0}),
                   "invalid normalisation"),
    "step_text": (lambda o: o.__setitem__("step", "abc"), "invalid step"),
    "step_negative": (lambda o: o.__setitem__("step", -3), "invalid step"),
    "shape_bad": (lambda o: o.__setitem__("train_shape", [5, "y"]), "invalid train_shape"),
    "shape_2d": (lambda o: o.__setitem__("train_shape", [5, 6]), "invalid train_shape"),
    "provenance_int": (lambda o: o.__setitem__("provenance", 7), "invalid provenance"),
    "mode_unknown": (lambda o: o.__setitem__("mode", "spiral"), "invalid mode"),
    "arch_list": (lambda o: o.__setitem__("arch", ["unet_att"]), "unknown network architecture"),
    "width_huge": (lambda o: o.__setitem__("base_channels", 100000), "widths above 512 are refused"),
    "width_text": (lambda o: o.__setitem__("base_channels", "8"), "invalid base_channels"),
}


@pytest.mark.parametrize("case", list(TAMPER))
def test_tampered_checkpoint_refused_on_every_command(stack, tmp_path, capsys, case):
    change, expected = TAMPER[case]
    good = tmp_path / "good.pt"
    _save_model(good)
    bad = _tampered(good, tmp_path / f"{case}.pt", change)
    for argv in (["info", bad], ["denoise", stack, "--model", bad, "--out", tmp_path / "o.tif"],
                 ["train", stack, "--init", bad, "--steps", "1", *SMALL, "--out", tmp_path / "run"]):
        code, line = _cli(argv, capsys)
        assert code == 2 and expected in line and str(bad) in line, (argv[0], line)
    assert not (tmp_path / "o.tif").exists() and not (tmp_path / "run" / "model.pt").exists()


def test_flipped_byte_caught_by_the_checksum(tmp_path):
    import torch

    good = tmp_path / "good.pt"
    _save_model(good)
    ck.load_checkpoint(good)  # the checksum of an untouched file matches
    obj = torch.load(good, weights_only=True)
    _weight(obj)[0] += 1e-6  # one value changed slightly, checksum kept: what a damaged copy looks like
    torch.save(obj, tmp_path / "flip.pt")
    with pytest.raises(ck.CheckpointError, match="does not match the checksum"):
        ck.load_checkpoint(tmp_path / "flip.pt")
    # an old file without a checksum still loads
    obj.pop("checksum")
    torch.save(obj, tmp_path / "old.pt")
    assert ck.load_checkpoint(tmp_path / "old.pt").arch == "unet_att"


def test_huge_width_refused_before_allocating():
    from napari_unet_att.errors import InputError, ResourceError
    from napari_unet_att.model.networks import build_network
    from napari_unet_att.runtime.resources import check_memory

    with pytest.raises(ResourceError, match="base_channels=200000 would need about"):
        build_network("unet3d", 200000)
    with pytest.raises(InputError):
        build_network("unet_att", 0)
    with pytest.raises(ResourceError, match="needs about"):
        check_memory(4 * 6400 * 300**2, "a unet_att network with base_channels=300", available=10**8)


def test_reference_weights_declaring_a_huge_width(tmp_path, capsys):
    """A 2 KB .pth with an expanded (stride-0) tensor declaring 200000 channels."""
    import torch

    w = torch.zeros(1).expand(200000, 100000, 3, 3, 3)
    path = tmp_path / "huge.pth"
    torch.save({"encoders.0.basic_module.SingleConv1.conv.weight": torch.zeros(1).expand(100000, 1, 3, 3, 3),
                "encoders.0.basic_module.SingleConv2.conv.weight": w}, path)
    assert path.stat().st_size < 100_000
    code, line = _cli(["info", path], capsys)
    assert code == 2 and "base_channels=200000" in line and str(path) in line


def test_saving_a_non_finite_model_is_refused(tmp_path):
    import torch

    den = _save_model(tmp_path / "ok.pt")
    with torch.no_grad():
        next(den.net.parameters()).view(-1)[0] = float("nan")
    with pytest.raises(ck.CheckpointError, match="refusing to save"):
        ck.save_checkpoint(tmp_path / "nan.pt", den)
    assert not (tmp_path / "nan.pt").exists() and [p.name for p in tmp_path.iterdir()] == ["ok.pt"]


def test_diverged_run_writes_no_nan_model(stack, tmp_path, monkeypatch):
    import torch

    from napari_unet_att.config import TrainConfig
    from napari_unet_att.errors import InputError
    from napari_unet_att.stackio import read_stack
    from napari_unet_att.training import trainer as train_mod

    calls = {"n": 0}
    real = train_mod.loss_fn

    def diverging(pred, target, w):  # steps 1-2 train normally, step 3 blows up
        calls["n"] += 1
        loss = real(pred, target, w)
        return loss * float("nan") if calls["n"] >= 3 and torch.is_grad_enabled() else loss

    monkeypatch.setattr(train_mod, "loss_fn", diverging)
    out = tmp_path / "run"
    cfg = TrainConfig(steps=50, patch_t=4, patch_xy=16, checkpoint_every=2, val_every=1000)
    with pytest.raises(InputError) as info:
        for _ in train_mod.Trainer([read_stack(stack)], cfg, out_dir=out).run():
            pass
    msg = str(info.value)
    assert "training diverged at step 3" in msg and "no model was written" in msg, msg
    assert f"{out / 'checkpoint-last.pt'} (step 2) is kept" in msg
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint-last.pt"]
    assert ck.load_checkpoint(out / "checkpoint-last.pt").step == 2


@pytest.mark.parametrize("change", ["missing_optimizer", "rng_text", "sampler_list", "schedule_short",
                                    "elapsed_nan", "state_list"])
def test_tampered_resume_state_refused(stack, tmp_path, capsys, change):
    import torch

    run = tmp_path / "run"
    code, _ = _cli(["train", stack, "--steps", "2", *SMALL, "--out", run], capsys)
    assert code == 0

    def edit(o):
        st = o["training_state"]
        if change == "missing_optimizer":
            st.pop("optimizer")
        elif change == "rng_text":
            st["torch_rng"] = "seed"
        elif change == "sampler_list":
            st["sampler"] = [1, 2]
        elif change == "schedule_short":
            st["schedule"] = [0]
        elif change == "elapsed_nan":
            st["elapsed_s"] = float("nan")
        else:
            o["training_state"] = [st]

    bad = _tampered(run / "checkpoint-last.pt", tmp_path / "bad.pt", edit)
    code, line = _cli(["train", stack, "--resume", bad, "--steps", "1", "--out", tmp_path / "run2"], capsys)
    assert code == 2 and "training state" in line and "--init" in line, line
    assert torch.load(bad, weights_only=True)  # the file itself was not touched


# -- 4. numeric options ----------------------------------------------------------------------
@pytest.mark.parametrize(("option", "value", "expected"), [
    ("--seed", "-1", "seed must be an integer from 0 to"), ("--seed", str(10**30), "seed must be an integer"),
    ("--lr", "-1", "lr (learning rate) must be a finite number"), ("--lr", "nan", "lr (learning rate)"),
    ("--lr", "inf", "lr (learning rate)"), ("--lr", "0", "lr (learning rate)"), ("--lr", "1e30", "(0, 10]"),
    ("--seconds", "nan", "seconds must be a finite number > 0"), ("--seconds", "inf", "seconds must be a finite"),
    ("--seconds", "-5", "seconds must be a finite"), ("--batch-size", "0", "batch_size must be an integer >= 1"),
    ("--patch-t", "-4", "patch_t must be an integer >= 1"), ("--checkpoint-every", "-1", "checkpoint_every"),
])
def test_bad_numbers_refused_in_one_line(stack, tmp_path, capsys, option, value, expected):
    args = ["train", stack, "--out", tmp_path / "run", option, value]
    if option not in ("--seconds",):
        args += ["--steps", "1"]
    if option not in ("--patch-t",):
        args += SMALL
    code, line = _cli(args, capsys)
    assert code == 2 and expected in line, line
    assert not (tmp_path / "run").exists()


def test_tiny_time_budget_still_writes_a_model(stack, tmp_path, capsys):
    out = tmp_path / "run"
    from napari_unet_att.cli import main

    assert main(["train", str(stack), "--seconds", "1e-9", *SMALL, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert str(out / "model.pt") in printed and (out / "model.pt").exists()
    assert ck.load_checkpoint(out / "model.pt").step == 1


def test_memory_error_advice_names_only_existing_options(stack, capsys, monkeypatch):
    from napari_unet_att.cli import main
    from napari_unet_att.evaluation import metrics

    def boom(*a, **kw):
        raise MemoryError

    monkeypatch.setattr(metrics, "evaluate", boom)
    assert main(["evaluate", str(stack), "--reference", str(stack)]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("napari-unet-att evaluate: error: out of memory;") and "--tile-t" not in line
