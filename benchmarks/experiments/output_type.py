"""What writing the denoised frames in the input's integer type costs, and what ``output_dtype='auto'`` chooses.

    python benchmarks/experiments/output_type.py
    python benchmarks/experiments/output_type.py --seeds 11 12 --photons 0.3 1 2 5 --frames 200 --size 96

A denoised frame estimates the expected intensity, which is no whole number of counts. The shipped temporal
generalist denoises held-out simulations (seeds the pretraining never drew) with the default settings twice: float32
output, and the input's integer type (clipped and rounded: ``output_dtype='input'``, what the CLI wrote by default
before ``auto``). Three kinds of counts: photon counts (1 count per photon, no offset or read noise), the
simulator's ADU (20 counts per photon, offset 100, read noise 4) and a high-gain detector (100 counts per photon,
offset 100, read noise 10). Prints, per case, the input's noise SD (``frame_means.noise_sd``), what 'auto' chose,
PSNR against the truth for float32 and for whole counts, and the largest frame-mean shift of each from the input's
(``evaluation.metrics.frame_mean_shift_pct``).
"""

from __future__ import annotations

import argparse

from napari_unet_att.config import InferConfig
from napari_unet_att.evaluation.metrics import frame_mean_shift_pct, psnr
from napari_unet_att.evaluation.simulator import simulate
from napari_unet_att.inference.denoising import denoise
from napari_unet_att.inference.frame_means import noise_sd, resolve_output_dtype
from napari_unet_att.model.pretrained import load_model

COUNTS = {"photon counts": dict(gain=1.0, offset=0.0, read_noise=0.0),
          "ADU, 20 per photon": dict(gain=20.0, offset=100.0, read_noise=4.0),
          "ADU, 100 per photon": dict(gain=100.0, offset=100.0, read_noise=10.0)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[11])
    ap.add_argument("--photons", type=float, nargs="+", default=[0.3, 1.0, 2.0, 5.0])
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--size", type=int, default=96)
    a = ap.parse_args()
    den = load_model("generalist", mode="temporal")
    print("| seed | counts | photons | noise SD | auto | PSNR float32 / whole counts (dB) | frame-mean shift float32 / "
          "whole counts (%) |\n|---|---|---:|---:|---|---|---|", flush=True)
    for seed in a.seeds:
        for name, kw in COUNTS.items():
            for ph in a.photons:
                sim = simulate(n_frames=a.frames, size=a.size, photons=ph, seed=seed, **kw)
                x = sim.noisy
                chosen = resolve_output_dtype(x, InferConfig(output_dtype="auto"))[0].output_dtype
                f = denoise(x, den, InferConfig(device="cpu"))
                i = denoise(x, den, InferConfig(device="cpu", output_dtype="input"))
                print(f"| {seed} | {name} | {ph:g} | {noise_sd(x):.1f} | {chosen if chosen == 'float32' else x.dtype} "
                      f"| {psnr(f, sim.clean):.2f} / {psnr(i, sim.clean):.2f} "
                      f"| {frame_mean_shift_pct(f, x):.3f} / {frame_mean_shift_pct(i, x):.3f} |", flush=True)


if __name__ == "__main__":
    main()
