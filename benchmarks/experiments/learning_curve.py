"""Learning curve on the simulator: train one config for N steps, print PSNR at chosen steps.

Quality per *step* does not depend on machine load, so configurations can be compared on a busy
machine; the steps/s of each are measured separately. Used for the short experiments in
docs/benchmarks.md, e.g.::

    python benchmarks/experiments/learning_curve.py --preset unet3d --steps 300 --evals 300 --l1 0.0 \
        --tag u3_l2 --save /tmp/u3_l2.pt
"""

import argparse
import time

import numpy as np
import torch

from napari_unet_att.config import InferConfig, TrainConfig
from napari_unet_att.evaluation.metrics import psnr
from napari_unet_att.evaluation.simulator import simulate
from napari_unet_att.inference.denoising import denoise
from napari_unet_att.model.checkpoint import save_checkpoint
from napari_unet_att.training.trainer import Trainer

p = argparse.ArgumentParser()
p.add_argument("--preset", default="fast")
p.add_argument("--steps", type=int, default=1000)
p.add_argument("--seconds", type=float, default=None)
p.add_argument("--lr", type=float)
p.add_argument("--bs", type=int)
p.add_argument("--pt", type=int)
p.add_argument("--pxy", type=int)
p.add_argument("--no-amp", action="store_true", help="float32 training even where bf16 autocast is available")
p.add_argument("--save", help="write the trained model here")
p.add_argument("--evals", default="250,500,750,1000")
p.add_argument("--photons", type=float, default=2)
p.add_argument("--tag", default="")
p.add_argument("--l1", type=float, default=0.5)
p.add_argument("--lr-floor", type=float, default=None, help="end of the cosine lr decay, x lr (engine: 0)")
p.add_argument("--warmup", type=float, default=None, help="lr warm-up share of the budget (engine: 0.05; 0: none)")
a = p.parse_args()
if a.lr_floor is not None or a.warmup is not None:
    import functools

    import napari_unet_att.training.trainer as _train

    sched = {k: v for k, v in (("floor", a.lr_floor), ("warmup", a.warmup)) if v is not None}
    _train.lr_factor = functools.partial(_train.lr_factor, **sched)
torch.set_num_threads(2)
sim = simulate(n_frames=400, size=128, photons=a.photons, motion_std=0, seed=0)
noisy, clean = sim.noisy, sim.clean.astype(np.float32)
rng = float(clean.max() - clean.min())
cfg = TrainConfig(
    mode="temporal",
    preset=a.preset,
    steps=a.steps,
    seconds=a.seconds,
    lr=a.lr,
    batch_size=a.bs,
    patch_t=a.pt,
    patch_xy=a.pxy,
    device="cpu",
    checkpoint_every=0,
    l1_weight=a.l1,
    amp=not a.no_amp,
    log_every=1,
)
tr = Trainer([noisy], cfg)
evals = set(int(s) for s in a.evals.split(","))
t0 = time.perf_counter()
tt = 0.0
gen = tr.run()
res = []
try:
    while True:
        ev = next(gen)
        if ev.step in evals and np.isfinite(ev.loss):
            tt = time.perf_counter() - t0
            net = tr.denoiser.net
            net.eval()
            out = denoise(noisy, tr.denoiser, InferConfig(device="cpu", amp=False))
            net.train()
            q = psnr(out, clean, data_range=rng)
            res.append((ev.step, round(tt, 1), round(q, 2)))
            print(a.tag, "step", ev.step, "train_s", round(tt, 1), "psnr", round(q, 2), "val", ev.val_loss, flush=True)
            t0 += time.perf_counter() - t0 - tt
except StopIteration as e:
    den = e.value
tt = time.perf_counter() - t0
den.net.eval()
out = denoise(noisy, den, InferConfig(device="cpu", amp=False))
if a.save:
    save_checkpoint(a.save, den)
print(
    a.tag,
    "FINAL step",
    den.step,
    "train_s",
    round(tt, 1),
    "psnr",
    round(psnr(out, clean, data_range=rng), 2),
    flush=True,
)
