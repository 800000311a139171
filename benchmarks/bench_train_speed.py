"""CPU training speed per preset, and where a step's time goes (issue: scale/speed).

Runs the training step of :mod:`napari_unet_att.training.trainer` (same sampler, loss and optimiser:
``PatchSampler.sample`` -> ``device.to_device`` -> forward -> ``train.loss_fn`` -> backward ->
Adam step) with each preset's default patch and batch on a 400 x 128 x 128 uint16 stack, timing
each part with ``time.perf_counter`` (CPU execution is synchronous, so the timers are exact).
Prints steps/s and the share of time spent outside forward + backward + optimiser (data
sampling and host-to-device copy), plus a rough training GFLOP/s (3 x the forward convolution
FLOPs per step, the usual forward + two backward products).

``--float32`` turns autocast off (what ``--no-amp`` does in training): the precision of CPUs without
native bfloat16, on any CPU. ``--threads N`` sets the intra-op threads (default: one per core).

Example::

    python benchmarks/bench_train_speed.py --steps 5 --json train_speed.json
    OMP_NUM_THREADS=1 python benchmarks/bench_train_speed.py --presets fast --float32 --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from bench_speed import conv_flops, machine_info, make_stack

from napari_unet_att.config import PRESETS
from napari_unet_att.model.networks import build_network
from napari_unet_att.model.normalization import Normalization
from napari_unet_att.runtime.device import amp_dtype, autocast, to_device
from napari_unet_att.training.loss import loss_fn
from napari_unet_att.training.sampler import PatchSampler

PARTS = ("sample", "to_device", "forward", "backward", "optimizer")


def time_steps(preset: str, stack: np.ndarray, steps: int, warmup: int = 1, amp: bool = True) -> dict[str, Any]:
    """Time ``steps`` training steps of ``preset`` (after ``warmup`` untimed ones), part by part.

    ``amp=False``: no autocast (float32), as ``TrainConfig(amp=False)``.
    """
    p = PRESETS[preset]
    torch.manual_seed(0)
    net = build_network(p.arch, p.base_channels).train()
    opt = torch.optim.Adam(net.parameters(), lr=p.lr)
    sampler = PatchSampler(stack, Normalization(float(stack.mean()), float(stack.std())), mode="temporal",
                           patch_t=p.patch_t, patch_xy=p.patch_xy, split="train", seed=0)
    device = torch.device("cpu")
    totals = dict.fromkeys(PARTS, 0.0)
    for i in range(warmup + steps):
        t = [time.perf_counter()]
        inp, tgt = sampler.sample(p.batch_size)
        t.append(time.perf_counter())
        x, y = to_device(torch.from_numpy(inp), device), to_device(torch.from_numpy(tgt), device)
        t.append(time.perf_counter())
        with autocast(device, amp, training=True):  # what Trainer does: bf16 on CPUs with native bf16
            pred = net(x)
        loss = loss_fn(pred, y, 0.5)
        t.append(time.perf_counter())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        t.append(time.perf_counter())
        opt.step()
        float(loss.item())
        t.append(time.perf_counter())
        if i >= warmup:
            for k, name in enumerate(PARTS):
                totals[name] += t[k + 1] - t[k]
    total = sum(totals.values())
    fwd = conv_flops(net, (p.patch_t, p.patch_xy, p.patch_xy)) * p.batch_size
    return {
        "preset": preset,
        "precision": str((amp and amp_dtype(device, training=True)) or "float32").replace("torch.", ""),
        "patch": [p.patch_t, p.patch_xy, p.patch_xy],
        "batch_size": p.batch_size,
        "steps": steps,
        "seconds_per_step": total / steps,
        "steps_per_s": steps / total,
        "parts_s_per_step": {k: v / steps for k, v in totals.items()},
        "outside_share": (totals["sample"] + totals["to_device"]) / total,
        "train_gflops_est": 3 * fwd / (total / steps) / 1e9,
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--presets", nargs="+", default=list(PRESETS), choices=list(PRESETS))
    ap.add_argument("--steps", type=int, default=5, help="timed steps per preset (after 1 warm-up step)")
    ap.add_argument("--shape", nargs=3, type=int, default=[400, 128, 128], metavar=("T", "Y", "X"))
    ap.add_argument("--json", help="also write the results to this JSON file")
    ap.add_argument("--float32", action="store_true", help="no autocast: train in float32 (as --no-amp)")
    ap.add_argument("--threads", type=int, help="intra-op threads (default: one per core)")
    args = ap.parse_args(argv)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    torch.set_num_threads(args.threads or cores)
    info = machine_info()
    stack = make_stack(args.shape)
    print(f"machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']}, load {info['load_avg'][0]:.1f}")
    print(f"{'preset':8} {'patch':>10} {'batch':>5} {'steps/s':>8} {'s/step':>7} {'sample ms':>9} {'fwd s':>6} "
          f"{'bwd s':>6} {'opt ms':>7} {'outside%':>8} {'GFLOP/s':>8}")
    rows = []
    for name in args.presets:
        r = time_steps(name, stack, args.steps, amp=not args.float32)
        rows.append(r)
        q = r["parts_s_per_step"]
        print(f"{name:8} {'x'.join(map(str, r['patch'])):>10} {r['batch_size']:5d} {r['steps_per_s']:8.3f} "
              f"{r['seconds_per_step']:7.2f} {1e3 * (q['sample'] + q['to_device']):9.1f} {q['forward']:6.2f} "
              f"{q['backward']:6.2f} {1e3 * q['optimizer']:7.1f} {100 * r['outside_share']:8.2f} "
              f"{r['train_gflops_est']:8.1f}", flush=True)
    res = {"machine": info, "shape": list(args.shape), "rows": rows, "load_avg_after": os.getloadavg()}
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res, fh, indent=1)
    return res


if __name__ == "__main__":
    main()
