"""Test-time augmentation of one trained model: average over 1, 2, 4, 8 D4 flips of (y, x), then
also time reversal. Usage: ``python benchmarks/experiments/tta_flips.py MODEL.pt``
"""

import sys

import numpy as np
import torch

from napari_unet_att.config import InferConfig
from napari_unet_att.evaluation.metrics import psnr
from napari_unet_att.evaluation.simulator import simulate
from napari_unet_att.inference.denoising import denoise
from napari_unet_att.model.checkpoint import load_checkpoint

torch.set_num_threads(2)
sim = simulate(n_frames=400, size=128, photons=2, motion_std=0, seed=0)
noisy, clean = sim.noisy, sim.clean.astype(np.float32)
rng = float(clean.max() - clean.min())
den = load_checkpoint(sys.argv[1])


class TTA(torch.nn.Module):
    def __init__(s, net, k):
        super().__init__()
        s.net = net
        s.k = k

    def forward(s, x):
        outs = []
        ts = [
            (False, False, False),
            (True, False, False),
            (False, True, False),
            (True, True, False),
            (False, False, True),
            (True, False, True),
            (False, True, True),
            (True, True, True),
        ][: s.k]
        for fy, fx, tr in ts:
            z = x
            if fy:
                z = z.flip(-2)
            if fx:
                z = z.flip(-1)
            if tr:
                z = z.transpose(-1, -2)
            o = s.net(z)
            if tr:
                o = o.transpose(-1, -2)
            if fx:
                o = o.flip(-1)
            if fy:
                o = o.flip(-2)
            outs.append(o)
        return torch.stack(outs).mean(0)


ic = InferConfig(device="cpu", amp=False)
base = den.net
for k in (1, 2, 4, 8):
    den.net = TTA(base, k).eval()
    out = denoise(noisy, den, ic)
    print("tta", k, round(psnr(out, clean, data_range=rng), 2), flush=True)


# time reversal
class TR(torch.nn.Module):
    def __init__(s, net):
        super().__init__()
        s.net = net

    def forward(s, x):
        return 0.5 * (s.net(x) + s.net(x.flip(-3)).flip(-3))


den.net = TR(TTA(base, 8)).eval()
out = denoise(noisy, den, ic)
print("tta8+timerev", round(psnr(out, clean, data_range=rng), 2))
