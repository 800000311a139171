"""A/B of one preset's CPU training step: this tree's networks against another revision's ``networks.py``.

Both networks (same seed, same initial weights) run the training step of
:mod:`napari_unet_att.training.trainer` (forward, ``loss_fn``, backward, gradient clipping, Adam) on the same
pre-drawn batches, alternately in one process (A, B, B, A, ...), so a shared machine's drift and load hit both
alike. First checks that both compute the same: the relative difference of the outputs and of all parameter
gradients on one batch. Float32 (no autocast) unless ``--amp``.

The baseline is a ``networks.py`` file, which runs on its own (it is the standalone architecture source of the
zoo packages)::

    git show HEAD~1:src/napari_unet_att/model/networks.py > /tmp/networks_old.py
    OMP_NUM_THREADS=1 python benchmarks/bench_train_ab.py /tmp/networks_old.py --threads 1
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from napari_unet_att.config import PRESETS
from napari_unet_att.model import networks
from napari_unet_att.model.normalization import Normalization
from napari_unet_att.runtime.device import autocast, reuse_freed_memory
from napari_unet_att.training.loss import loss_fn
from napari_unet_att.training.sampler import PatchSampler
from napari_unet_att.training.trainer import GRAD_CLIP

CPU = torch.device("cpu")


def load_networks(path: str) -> Any:
    spec = importlib.util.spec_from_file_location("networks_baseline", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def batches(preset: str, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    p = PRESETS[preset]
    stack = np.random.default_rng(0).poisson(200, size=(200, 128, 128)).astype(np.uint16)
    s = PatchSampler(stack, Normalization(float(stack.mean()), float(stack.std())), mode="temporal",
                     patch_t=p.patch_t, patch_xy=p.patch_xy, split="train", seed=0)
    return [tuple(torch.from_numpy(a) for a in s.sample(p.batch_size)) for _ in range(n)]


def build(mod: Any, preset: str) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    p = PRESETS[preset]
    torch.manual_seed(0)
    net = mod.build_network(p.arch, p.base_channels).train()
    return net, torch.optim.Adam(net.parameters(), lr=p.lr, betas=(0.9, 0.999))


def step(net: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, amp: bool) -> float:
    """One optimiser step as ``Trainer._step`` takes it (no gradient accumulation, no scaler: CPU)."""
    opt.zero_grad(set_to_none=True)
    with autocast(CPU, amp, training=True):
        pred = net(x)
    loss = loss_fn(pred, y, 0.0)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(net.parameters(), GRAD_CLIP)
    opt.step()
    return float(loss.item())


def agreement(nets: Sequence[torch.nn.Module], x: torch.Tensor, y: torch.Tensor, amp: bool) -> tuple[float, float]:
    """Relative difference of the outputs and of all gradients (as one vector) of two nets on one batch."""
    outs, grads = [], []
    for net in nets:
        net.zero_grad(set_to_none=True)
        with autocast(CPU, amp, training=True):
            out = net(x)
        loss_fn(out, y, 0.0).backward()
        outs.append(out.detach().double())
        grads.append(torch.cat([p.grad.double().flatten() for p in net.parameters()]))
    rel = [float((a - b).norm() / a.norm()) for a, b in (outs, grads)]
    return rel[0], rel[1]


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("baseline", help="networks.py of the revision to compare with (side A)")
    ap.add_argument("--preset", default="fast", choices=list(PRESETS))
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--steps", type=int, default=3, help="timed steps per side and round")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--amp", action="store_true", help="the engine's autocast (bf16 on CPUs with native bf16)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = batches(args.preset, 8)
    baseline = load_networks(args.baseline)
    sides = {"A (baseline)": build(baseline, args.preset), "B (this tree)": build(networks, args.preset)}
    (na, _), (nb, _) = sides.values()
    same = all(torch.equal(p, q) for p, q in zip(na.state_dict().values(), nb.state_dict().values(), strict=True))
    out_rel, grad_rel = agreement([na, nb], *data[0], args.amp)
    print(f"preset {args.preset}, {'autocast' if args.amp else 'float32'}, {args.threads} thread(s); same initial "
          f"weights: {same}; B vs A: output rel. diff {out_rel:.1e}, gradient rel. diff {grad_rel:.1e}", flush=True)
    times: dict[str, list[float]] = {k: [] for k in sides}
    with reuse_freed_memory(CPU):
        for net, opt in sides.values():  # warm-up
            for x, y in data[:2]:
                step(net, opt, x, y, args.amp)
        for r in range(args.rounds):
            for name in list(sides)[:: 1 if r % 2 == 0 else -1]:
                for i in range(args.steps):
                    x, y = data[(r * args.steps + i) % len(data)]
                    t = time.perf_counter()
                    step(*sides[name], x, y, args.amp)
                    times[name].append(time.perf_counter() - t)
            print(f"round {r}: " + ", ".join(f"{k} {1e3 * statistics.median(v[-args.steps:]):.0f} ms"
                                             for k, v in times.items()), flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    for k, v in times.items():
        q = statistics.quantiles(v, n=4)
        print(f"{k:14s} median {1e3 * med[k]:7.1f} ms/step (IQR {1e3 * q[0]:.0f}-{1e3 * q[2]:.0f}), "
              f"{1 / med[k]:.3f} steps/s")
    speedup = med["A (baseline)"] / med["B (this tree)"]
    print(f"B speed-up over A: {speedup:.3f}x")
    return {"output_rel_diff": out_rel, "grad_rel_diff": grad_rel, "median_s": med, "speedup": speedup}


if __name__ == "__main__":
    main()
