"""Crash safety: ``SIGKILL`` a real ``python -m napari_unet_att`` process mid-run.

Training with ``--checkpoint-every 1`` writes ``checkpoint-last.pt`` every step, so kills land
between steps, during steps and (by killing the moment a save's temporary file appears) during
a checkpoint write. After every kill the last complete checkpoint must load, hold its training
state and resume; nothing but hidden ``.*.tmp`` files may be left beside it. A killed ``denoise``
leaves the previous output untouched. ``scripts/robustness_report.py`` does the same 20 times.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from napari_unet_att.model import checkpoint as ck
from napari_unet_att.model.denoiser import Denoiser
from napari_unet_att.model.networks import build_network
from napari_unet_att.model.normalization import Normalization

TRAIN = ["--steps", "1000", "--checkpoint-every", "1", "--patch-t", "4", "--patch-xy", "16", "--seed", "0"]
LAST = "checkpoint-last.pt"


def _cli(*args: object) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    return subprocess.Popen([sys.executable, "-m", "napari_unet_att", *map(str, args)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=env)


def _wait(cond, proc: subprocess.Popen, timeout: float = 90.0, poll: float = 0.002) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if proc.poll() is not None:
            raise AssertionError(f"process ended (rc {proc.returncode}) before the moment to kill it: "
                                 f"{proc.stderr.read() if proc.stderr else ''}")
        if time.monotonic() > end:
            proc.kill()
            raise AssertionError("timed out waiting for the process")
        time.sleep(poll)


def _kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def _temps(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp")]


def _check_last(folder: Path) -> int:
    """The last checkpoint is complete and resumable; only hidden temporaries lie beside it."""
    visible = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
    assert visible == [LAST], visible  # no model.pt (the run never finished), no half-written file
    assert all(p.name.startswith(f".{LAST}.") for p in _temps(folder))
    den = ck.load_checkpoint(folder / LAST)
    state = ck.load_training_state(folder / LAST)
    assert state is not None and int(state["step"]) == den.step >= 1
    return den.step


@pytest.fixture(scope="module")
def tiny_stack(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("data") / "stack.tif"
    tifffile.imwrite(p, np.random.default_rng(0).poisson(50, (24, 16, 16)).astype(np.uint16),
                     metadata={"axes": "TYX"})
    return p


def test_training_killed_at_random_moments_resumes(tiny_stack, tmp_path):
    rnd = random.Random(1234)
    out = tmp_path / "run"
    last = out / LAST

    # 1: a fresh run, killed at a random moment after its first checkpoint
    proc = _cli("train", tiny_stack, "--out", out, *TRAIN)
    _wait(last.exists, proc)
    time.sleep(rnd.uniform(0.0, 1.0))
    _kill(proc)
    step1 = _check_last(out)

    # 2: resumed, killed the moment its next checkpoint save has begun (temporary file present)
    before = {p.name for p in _temps(out)}
    proc = _cli("train", tiny_stack, "--out", out, "--resume", last, *TRAIN[2:])
    _wait(lambda: {p.name for p in _temps(out)} - before, proc)
    time.sleep(rnd.uniform(0.0, 0.02))
    _kill(proc)
    step2 = _check_last(out)
    assert step2 >= step1  # the complete file is the old one or the new one, never a mix

    # 3: resumed with a budget of one more step: runs to the end and writes the final model
    proc = _cli("train", tiny_stack, "--out", out, "--resume", last, "--steps", "1")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    final = ck.load_checkpoint(out / "model.pt")
    assert final.step == step2 + 1
    assert ck.load_checkpoint(last).step == step2 + 1
    for p in _temps(out):  # leftovers of the killed saves are hidden, never loadable as results
        assert p.name.startswith(f".{LAST}.")


def test_denoise_killed_leaves_previous_output(tmp_path):
    stack = np.random.default_rng(2).poisson(50, (256, 32, 32)).astype(np.uint16)
    src = tmp_path / "in.tif"
    tifffile.imwrite(src, stack, metadata={"axes": "TYX"})
    torch.manual_seed(0)
    den = Denoiser(build_network("unet_att", 4).eval(), "unet_att", 4, "fast", "temporal", Normalization(50.0, 7.0))
    model = ck.save_checkpoint(tmp_path / "m.pt", den)
    out = tmp_path / "out.tif"
    previous = np.full((256, 32, 32), 7, np.uint16)
    tifffile.imwrite(out, previous, metadata={"axes": "TYX"})

    proc = _cli("denoise", src, "--model", model, "--out", out, "--tile-t", "8", "--overwrite")
    _wait(lambda: bool(_temps(tmp_path)), proc)  # the output is being written
    time.sleep(random.Random(7).uniform(0.0, 0.3))
    _kill(proc)
    np.testing.assert_array_equal(tifffile.imread(out), previous)
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == ["in.tif", "m.pt", "out.tif"]
