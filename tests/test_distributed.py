"""torchrun + DistributedDataParallel on 2 CPU processes (gloo): the loss falls and the checkpoint loads."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import tifffile

from napari_unet_att.evaluation.simulator import simulate
from napari_unet_att.model.checkpoint import load_checkpoint, load_training_state
from napari_unet_att.runtime.distributed import DistEnv, shard


def test_shard_round_robin():
    items = list(range(7))
    parts = [shard(items, DistEnv(r, 3, r)) for r in range(3)]
    assert parts == [[0, 3, 6], [1, 4], [2, 5]]
    assert sorted(sum(parts, [])) == items


def test_torchrun_two_cpu_processes(tmp_path):
    sim = simulate(n_frames=40, size=32, photons=5.0, seed=5)
    tifffile.imwrite(tmp_path / "noisy.tif", sim.noisy)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "napari_unet_att", "train", str(tmp_path / "noisy.tif"), "--out", str(tmp_path / "run"),
           "--steps", "30", "--patch-t", "8", "--patch-xy", "16", "--batch-size", "2", "--lr", "2e-3",
           "--device", "cpu"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    # Only rank 0 reports and writes.
    reports = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    assert len(reports) == 1
    den = load_checkpoint(tmp_path / "run" / "model.pt")
    assert den.step == 30
    hist = load_training_state(tmp_path / "run" / "model.pt")["history"]
    first, last = sum(hist["loss"][:5]) / 5, sum(hist["loss"][-5:]) / 5
    assert last < first, (first, last)
    assert not list((tmp_path / "run").glob("*.tmp*"))
