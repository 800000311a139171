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

from napari_unet_att import checkpoint as ck

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
    _wait_for(err, "tile", proc)  # the progress bar has started: the output is being written
    proc.send_signal(sig)
    proc.communicate(timeout=120)
    assert proc.returncode == code
    _no_traceback(err)
    assert _last_line(err) == (f"napari-unet-att denoise: interrupted by {signal.Signals(sig).name}; "
                               "no partial output was kept")
    assert list(out.iterdir()) == []  # not even the hidden temporary file


def _save_model(path: Path, base_channels: int = 4):
    from napari_unet_att.denoiser import Denoiser
    from napari_unet_att.networks import build_network
    from napari_unet_att.normalization import Normalization

    path.parent.mkdir(parents=True, exist_ok=True)
    den = Denoiser(build_network("unet_att", base_channels), "unet_att", base_channels, "custom", "temporal",
                   Normalization(50.0, 7.0))
    ck.save_checkpoint(path, den)
    return den


def test_stop_signals_policy_in_process():
    """Cooperative first signal, Interrupted on the second or when the job cannot stop cleanly."""
    from napari_unet_att.signals import Interrupted, StopSignals

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
    from napari_unet_att.io import read_stack
    from napari_unet_att.train import Trainer

    trainer = Trainer([read_stack(stack)], TrainConfig(steps=3, patch_t=4, patch_xy=16))
    assert trainer.request_stop() is False  # nothing trained yet: the caller must interrupt
