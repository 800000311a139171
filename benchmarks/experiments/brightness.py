"""Where a denoiser's brightness shift comes from, and what keeping each frame's mean does.

    python benchmarks/experiments/brightness.py

Three cases, each denoised with ``keep_mean`` off (the network's own output) and on (the engine's default):

1. the old shipped sample model (trained with the papers' 0.5 L1 + 0.5 MSE loss) on its own sample: the L1 term
   estimates the median, which lies below the mean for skewed few-photon noise;
2. the generalist (MSE) on a simulated recording whose frames flicker in brightness (laser power, a global
   neuropil event: +-10% per frame, independent): a temporal model predicts each frame from its neighbours and
   cannot know a frame's own flicker, so its output follows the neighbours' brightness;
3. the generalist on the real thunder S1 movie (skewed int16 data).

Prints, per case, the mean offset of the output from the input (counts and %), the range of the per-frame offset,
and the slope of a per-frame fit of output means on input means.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile

from napari_unet_att.config import InferConfig
from napari_unet_att.evaluation.simulator import simulate
from napari_unet_att.inference.denoising import denoise
from napari_unet_att.model.checkpoint import load_any
from napari_unet_att.model.pretrained import load_model
from napari_unet_att.stackio import samples

REAL = Path(__file__).resolve().parents[3] / "shared" / "real-data"


def report(name: str, x: np.ndarray, den) -> None:
    x = np.asarray(x)
    m_in = x.mean(axis=(1, 2), dtype=np.float64)
    for keep in (False, True):
        y = denoise(x, den, InferConfig(device="cpu", keep_mean=keep))
        d = y.mean(axis=(1, 2), dtype=np.float64) - m_in
        slope = np.polyfit(m_in, y.mean(axis=(1, 2), dtype=np.float64), 1)[0]
        print(f"| {name} | {'on' if keep else 'off'} | {d.mean():+.2f} ({100 * d.mean() / m_in.mean():+.2f}%) | "
              f"{d.min():+.2f} .. {d.max():+.2f} | {slope:.3f} |", flush=True)


def main() -> int:
    print("| case | keep_mean | mean offset (counts, %) | per-frame offset range | slope of frame means |")
    print("|---|---|---|---|---|")
    noisy = tifffile.imread(samples.sample_path(samples.TEMPORAL_NOISY))
    old_model = load_any(samples.sample_path(samples.TEMPORAL_MODEL))
    report("L1 + MSE sample model on its own sample (2 ph)", noisy, old_model)
    gen = load_model("generalist")
    sim = simulate(n_frames=300, size=96, photons=2.0, seed=31)
    flicker = 1.0 + 0.1 * np.random.default_rng(31).uniform(-1, 1, (300, 1, 1))
    lam = np.clip((sim.clean - 100.0) / 20.0 * flicker, 0, None)  # back to photons, flickered, re-detected
    flick = (np.random.default_rng(32).poisson(lam) * 20 + 100).astype(np.uint16)
    report("generalist (MSE) on a simulation with +-10% frame flicker", flick, gen)
    thunder = tifffile.imread(REAL / "thunder_mouse_svoboda_500x64x64.tif")
    report("generalist (MSE) on the real thunder S1 movie", thunder, gen)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
