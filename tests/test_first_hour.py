"""What a new user meets first: time budgets, CLI outputs and messages (issue 15)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from napari_unet_att.config import TrainConfig
from napari_unet_att.training.trainer import Trainer

TINY = dict(patch_t=8, patch_xy=16, batch_size=1, val_every=1000, val_patches=1, device="cpu")


def test_time_budget_ends_within_it_and_reports_100_percent(tiny_sim, monkeypatch):
    """A 3.5 s budget with 1 s steps ends after 3 steps (at 3 s), not after a 4th (at 4 s).

    The trainer's clock is a fake one that only the steps advance, so the test measures the
    stopping rule, not this machine's speed.
    """
    import types

    import napari_unet_att.training.trainer as train_mod

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


# -- command line (as a user runs it: a subprocess) -----------------------------------------
def _cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "napari_unet_att", *args], capture_output=True, text=True,
                          timeout=300, **kwargs)


@pytest.fixture(scope="module")
def rec(tmp_path_factory):
    from napari_unet_att.evaluation.simulator import simulate

    d = tmp_path_factory.mktemp("first_hour")
    sim = simulate(n_frames=24, size=32, photons=3.0, seed=3)
    tifffile.imwrite(d / "noisy.tif", sim.noisy)
    tifffile.imwrite(d / "clean.tif", sim.clean.astype(np.float32))
    tifffile.imwrite(d / "labels.tif", sim.labels().astype(np.uint16))
    return d


def test_info_into_a_closed_pipe_exits_quietly():
    from napari_unet_att.stackio import samples

    model = samples.sample_path(samples.TEMPORAL_MODEL)
    proc = subprocess.Popen([sys.executable, "-m", "napari_unet_att", "info", str(model)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()  # `| head -0`: the reader is gone before the first line is written
    _, err = proc.communicate(timeout=300)
    assert err.decode().strip() == ""
    assert proc.returncode == 141  # as a program ended by SIGPIPE, not "error: Broken pipe", exit 2


def test_a_refused_input_prints_its_error_and_no_progress_bar(tmp_path):
    from napari_unet_att.stackio import samples

    model = samples.sample_path(samples.TEMPORAL_MODEL)
    res = _cli("denoise", str(tmp_path / "nonexistent.tif"), "--model", str(model), "--out", str(tmp_path / "o.tif"))
    assert res.returncode == 2
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "nonexistent.tif" in lines[0] and "|" not in lines[0], res.stderr  # no bar


def test_evaluate_rois_accepts_a_label_image_and_says_what_it_used(rec):
    res = _cli("evaluate", str(rec / "clean.tif"), "--raw", str(rec / "noisy.tif"), "--rois", str(rec / "labels.tif"))
    assert res.returncode == 0, res.stderr
    assert "ROIs from labels.tif (labels" in res.stderr and "needs --reference" in res.stderr
    assert "needs --reference" in json.loads(res.stdout)["rois"]


def test_evaluate_rois_accepts_a_napari_shapes_export(rec, tmp_path):
    rows = ["index,shape-type,vertex-index,axis-0,axis-1"]
    rows += [f"0,rectangle,{i},{y},{x}" for i, (y, x) in enumerate([(2, 2), (2, 10), (10, 10), (10, 2)])]
    rows += [f"1,ellipse,{i},{y},{x}" for i, (y, x) in enumerate([(15, 15), (15, 25), (25, 25), (25, 15)])]
    (tmp_path / "rois.csv").write_text("\n".join(rows) + "\n")
    res = _cli("evaluate", str(rec / "noisy.tif"), "--reference", str(rec / "clean.tif"), "--rois",
               str(tmp_path / "rois.csv"))
    assert res.returncode == 0, res.stderr
    assert "2 ROIs from rois.csv (shapes" in res.stderr
    assert json.loads(res.stdout)["denoised"]["trace_correlation"] is not None


@pytest.mark.parametrize("kind", ["stack", "float", "noise"])
def test_evaluate_rois_refuses_what_is_not_a_label_image(rec, tmp_path, kind):
    rng = np.random.default_rng(0)
    bad = {"stack": (rng.random((24, 32, 32)) > 0.5).astype(np.uint8),  # a (T, Y, X) stack, not ROIs
           "float": rng.random((32, 32)).astype(np.float32),  # intensities, not labels
           "noise": rng.integers(0, 5000, (32, 32)).astype(np.uint16)}[kind]  # thousands of 1-pixel "labels"
    tifffile.imwrite(tmp_path / "bad.tif", bad)
    res = _cli("evaluate", str(rec / "noisy.tif"), "--reference", str(rec / "clean.tif"), "--rois",
               str(tmp_path / "bad.tif"))
    assert res.returncode == 2 and res.stdout == ""
    assert {"stack": "2D label image", "float": "integers", "noise": "not a label image"}[kind] in res.stderr


def test_axes_option_reads_a_stack_whose_header_calls_its_frames_channels(rec, tmp_path):
    from napari_unet_att.stackio import samples

    frames = tifffile.imread(rec / "noisy.tif")
    mislabelled = tmp_path / "mislabelled.tif"
    tifffile.imwrite(mislabelled, frames, imagej=True, metadata={"axes": "CYX"})  # 24 frames said to be channels
    model = str(samples.sample_path(samples.TEMPORAL_MODEL))
    refused = _cli("denoise", str(mislabelled), "--model", model, "--out", str(tmp_path / "a.tif"))
    assert refused.returncode == 2 and "channels" in refused.stderr
    res = _cli("denoise", str(mislabelled), "--model", model, "--out", str(tmp_path / "b.tif"), "--axes", "TYX")
    assert res.returncode == 0, res.stderr
    assert tifffile.imread(tmp_path / "b.tif").shape == frames.shape
    bad = _cli("evaluate", str(mislabelled), "--axes", "TX")
    assert bad.returncode == 2 and "2 letters for 3 axes" in bad.stderr


def test_train_takes_a_folder_of_tiffs(rec, tmp_path):
    folder = tmp_path / "recordings"
    folder.mkdir()
    frames = tifffile.imread(rec / "noisy.tif")
    tifffile.imwrite(folder / "a.tif", frames)
    tifffile.imwrite(folder / "b.tiff", frames[:, ::-1])
    (folder / "notes.txt").write_text("not an input")
    res = _cli("train", str(folder), "--steps", "1", "--patch-t", "8", "--patch-xy", "16", "--batch-size", "1",
               "--device", "cpu", "--out", str(tmp_path / "run"))
    assert res.returncode == 0, res.stderr
    from napari_unet_att.model.checkpoint import load_checkpoint

    sources = load_checkpoint(json.loads(res.stdout.strip().splitlines()[-1])["model"]).provenance["sources"]
    assert [Path(s).name for s in sources] == ["a.tif", "b.tiff"]
    empty = tmp_path / "empty"
    empty.mkdir()
    res = _cli("train", str(empty), "--steps", "1", "--out", str(tmp_path / "run2"))
    assert res.returncode == 2 and "no .tif / .tiff file" in res.stderr


def test_denoise_refuses_an_existing_output_unless_overwrite(rec, tmp_path):
    from napari_unet_att.stackio import samples

    model = str(samples.sample_path(samples.TEMPORAL_MODEL))
    out = tmp_path / "out.tif"
    out.write_bytes(b"an earlier result")
    res = _cli("denoise", str(rec / "noisy.tif"), "--model", model, "--out", str(out))
    assert res.returncode == 2 and "already exists; pass --overwrite" in res.stderr
    assert out.read_bytes() == b"an earlier result"  # untouched
    res = _cli("denoise", str(rec / "noisy.tif"), "--model", model, "--out", str(out), "--overwrite")
    assert res.returncode == 0, res.stderr
    assert tifffile.imread(out).shape == tifffile.imread(rec / "noisy.tif").shape
