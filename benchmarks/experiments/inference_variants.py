"""Inference variants of one trained temporal model on the 400x128x128, 2-photon simulation.

Full-rate input (what `denoise` does), even / odd frames denoised separately and interleaved
(half rate, as in training), their average, and a self-supervised intensity calibration
(piecewise-linear map from predictions on even frames to the odd frames, applied to the output).
Usage: ``python benchmarks/experiments/inference_variants.py MODEL.pt``
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
ic = InferConfig(device="cpu", amp=False)
full = denoise(noisy, den, ic)
print("full", psnr(full, clean, data_range=rng))
ev = denoise(noisy[0::2], den, ic)
od = denoise(noisy[1::2], den, ic)
inter = np.empty_like(full)
inter[0::2] = ev
inter[1::2] = od
print("interleaved half-rate", psnr(inter, clean, data_range=rng))
print("avg full+inter", psnr(0.5 * (full + inter), clean, data_range=rng))


# calibration: pred from even frames vs odd frames target
def fit_pl(p, y, k=24):
    q = np.quantile(p, np.linspace(0, 1, k))
    q = np.unique(q)
    # hat basis
    idx = np.clip(np.searchsorted(q, p) - 1, 0, len(q) - 2)
    w = np.clip((p - q[idx]) / (q[idx + 1] - q[idx]), 0, 1)
    A = np.zeros((p.size, len(q)), np.float64)
    A[np.arange(p.size), idx] = 1 - w
    A[np.arange(p.size), idx + 1] += w
    coef, *_ = np.linalg.lstsq(A, y, rcond=None)
    return q, coef


def apply_pl(p, q, coef):
    return np.interp(p, q, coef)  # flat outside (fine)


tgt = noisy[1::2].astype(np.float32)
n = min(len(ev), len(tgt))
sel = np.random.default_rng(0).choice(n * 128 * 128, 400000, replace=False)
p = ev[:n].ravel()[sel]
y = tgt[:n].ravel()[sel]
q, c = fit_pl(p, y)
print("knots", np.round(q[::4], 1), "corr", np.round((c - q)[::4], 1))
cal = apply_pl(full, q, c)
print("calibrated full", psnr(cal, clean, data_range=rng))
q2, c2 = fit_pl(ev[:n].ravel()[sel] * 0 + full[0::2][:n].ravel()[sel], y)
print("calibrated full (fit on full-rate even outputs)", psnr(apply_pl(full, q2, c2), clean, data_range=rng))
print("bias full-clean mean", float((full - clean).mean()), "rng", rng)
