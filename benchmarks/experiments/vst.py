"""Does a variance-stabilising transform help? The generalised Anscombe transform with the *true* noise model.

    python benchmarks/experiments/vst.py [--seconds 300] [--photons 1 2] [--seed 5]

Issue 11 asks whether a variance-stabilising transform (Anscombe / generalised Anscombe) helps on
photon-limited data. This measures its upper bound: the simulator's own gain, offset and read noise
(which a user would have to estimate) define the transform, so any loss comes from the idea, not from an
estimate. Per recording (simulator seed ``--seed``, 400 x 128 x 128, no motion; never a pretraining seed):

- ``raw``: the temporal generalist fine-tuned for ``--seconds`` on the recording, then denoised (the engine's path);
- ``GAT``: the same on the transformed recording (each pixel ``2 sqrt(p + 3/8 + s^2)``, ``p`` photons, ``s`` the
  read noise in photons), mapped back with the closed-form unbiased inverse (Makitalo & Foi 2011), so the output is
  in counts again.

Both on one thread, one after the other; the best 3D Gaussian (sigma chosen with the truth) beside them.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from napari_unet_att.config import InferConfig, TrainConfig
from napari_unet_att.evaluation.baselines import best_gaussian
from napari_unet_att.evaluation.metrics import frame_mean_shift_pct, psnr
from napari_unet_att.evaluation.simulator import simulate
from napari_unet_att.inference.denoising import denoise
from napari_unet_att.training.trainer import train

GAIN, OFFSET, READ = 20.0, 100.0, 4.0  # the simulator's defaults (ADU per photon, ADU, ADU)


def forward(x: np.ndarray) -> np.ndarray:
    """Generalised Anscombe transform of counts, with the simulator's noise model (unit noise variance after)."""
    p = (np.asarray(x, np.float64) - OFFSET) / GAIN
    return (2.0 * np.sqrt(np.maximum(p + 3.0 / 8.0 + (READ / GAIN) ** 2, 0.0))).astype(np.float32)


def inverse(d: np.ndarray) -> np.ndarray:
    """Closed-form approximation of the exact unbiased inverse (Makitalo & Foi 2011), back to counts."""
    d = np.maximum(np.asarray(d, np.float64), 0.8)  # the series diverges at 0; below 0.8 means ~0 photons anyway
    s = np.sqrt(1.5)
    p = d ** 2 / 4 + s / (4 * d) - 11 / (8 * d ** 2) + 5 * s / (8 * d ** 3) - 1 / 8 - (READ / GAIN) ** 2
    return (p * GAIN + OFFSET).astype(np.float32)


def fine_tuned(stack: np.ndarray, seconds: float) -> tuple[np.ndarray, int]:
    den = train([stack], TrainConfig(mode="temporal", preset="fast", seconds=seconds, device="cpu"), init="generalist")
    return np.asarray(denoise(stack, den, InferConfig(device="cpu")), np.float32), int(den.step)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=300.0)
    ap.add_argument("--photons", type=float, nargs="+", default=[1.0, 2.0])
    ap.add_argument("--seed", type=int, default=5)
    a = ap.parse_args()
    print("| photons | method | PSNR dB | max frame-mean shift % | steps |\n|---|---|---:|---:|---:|", flush=True)
    for photons in a.photons:
        sim = simulate(n_frames=400, size=128, photons=photons, motion_std=0.0, motion="walk", seed=a.seed,
                       gain=GAIN, offset=OFFSET, read_noise=READ)
        rng = float(sim.clean.max() - sim.clean.min())
        raw = sim.noisy.astype(np.float32)
        sigma, gauss, _ = best_gaussian(sim.noisy, sim.clean)
        print(f"| {photons:g} | best 3D Gaussian {tuple(sigma)} | {psnr(gauss, sim.clean, data_range=rng):.2f} | "
              f"{frame_mean_shift_pct(gauss, raw):.3f} | |", flush=True)
        for name, to, back in (("raw", lambda x: x, lambda y: y), ("GAT (true noise model)", forward, inverse)):
            t0 = time.perf_counter()
            out, steps = fine_tuned(to(sim.noisy), a.seconds)
            out = back(out)
            print(f"| {photons:g} | generalist + {a.seconds:g} s, {name} | {psnr(out, sim.clean, data_range=rng):.2f} "
                  f"| {frame_mean_shift_pct(out, raw):.3f} | {steps} ({time.perf_counter() - t0:.0f} s) |", flush=True)


if __name__ == "__main__":
    main()
