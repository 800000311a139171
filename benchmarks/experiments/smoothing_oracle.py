"""How close the output smoothing's self-supervised choice comes to the best one, criterion by criterion.

For each recording (a held-out simulation, or the thunder movie's structure with Poisson noise, as
``bench_generalist.py realnoise``), every candidate smoothing of ``smoothing.SIGMAS_T`` x ``SIGMAS_XY`` is run as given
(time averages and registration as by default) and scored against the truth; the calibration's own block is captured
and each criterion's choice recomputed from it: the whole prediction error ("whole"), the error the output keeps
once the averages are put back ("kept", the engine's), and that error with the mean's fine part taken above other
Gaussians. Prints, per recording, the best candidate and what each criterion loses against it (dB).

    python benchmarks/experiments/smoothing_oracle.py thunder:1:3 thunder:1:4 21:1 22:2
    python benchmarks/experiments/smoothing_oracle.py --block-voxels 0 thunder:1:3   # the 80-frame block of before

A recording is ``thunder:<photons>:<noise seed>`` or ``<simulator seed>:<photons>[:<size>]`` (400 frames, still).
One thread per run is enough; each recording takes 16 full denoising runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench_generalist import _real_clean, generalist, run_model  # noqa: E402

from napari_unet_att.evaluation.metrics import psnr  # noqa: E402
from napari_unet_att.evaluation.simulator import simulate  # noqa: E402
from napari_unet_att.inference import smoothing as sm  # noqa: E402

FINE = (0.5, 0.7, 1.0, 1.5)  # pixels: the Gaussians above which a pixel's mean error counts


def recording(spec: str) -> tuple[np.ndarray, np.ndarray]:
    """The noisy stack and its truth for ``spec`` (see the module's docstring)."""
    parts = spec.split(":")
    if parts[0] == "thunder":
        return _real_clean("thunder_mouse_svoboda_500x64x64.tif", float(parts[1]), seed=int(parts[2]))
    size = int(parts[2]) if len(parts) > 2 else 128
    sim = simulate(n_frames=400, size=size, photons=float(parts[1]), motion_std=0.0, motion="walk", seed=int(parts[0]))
    return sim.noisy, sim.clean


def criteria(estimate: np.ndarray, target: np.ndarray) -> dict[str, dict[tuple[float, float], float]]:
    """Each criterion's error of every candidate, from the calibration's ``estimate`` and ``target``."""
    n = min(len(estimate), len(target))
    out: dict[str, dict[tuple[float, float], float]] = {"whole": {}, "kept": {}, "mean removed": {}}
    out.update({f"fine > {s:g} px": {} for s in FINE})
    for st in sm.SIGMAS_T:
        for sxy in sm.SIGMAS_XY:
            miss = sm.smooth_xy(sm.smooth_t(estimate[:n], st / 2), sxy).astype(np.float64) - target[:n]
            whole = float(np.mean(miss**2))
            mean = miss.mean(axis=0)
            key = (st, sxy)
            out["whole"][key] = whole
            out["kept"][key] = sm.calibration_errors(miss, True, False)[0]
            out["mean removed"][key] = whole - float(np.mean(mean**2))
            for s in FINE:
                fine = mean - ndimage.gaussian_filter(mean, s, mode="reflect", truncate=3.0)
                out[f"fine > {s:g} px"][key] = out["mean removed"][key] + float(np.mean(fine**2))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("recordings", nargs="+")
    ap.add_argument("--block-voxels", type=int, default=sm.CALIBRATION_VOXELS,
                    help="smoothing.CALIBRATION_VOXELS (0: always CALIBRATION_FRAMES frames)")
    a = ap.parse_args()
    sm.CALIBRATION_VOXELS = a.block_voxels
    den = generalist("temporal")
    captured: list[tuple[np.ndarray, np.ndarray]] = []
    choose = sm.choose_smoothing

    def spy(estimate, target, *args, **kwargs):  # the calibration's block, as the engine computed it
        captured.append((np.array(estimate, np.float32), np.array(target, np.float32)))
        return choose(estimate, target, *args, **kwargs)

    sm.choose_smoothing = spy
    for spec in a.recordings:
        noisy, clean = recording(spec)
        rng = float(clean.max() - clean.min())
        captured.clear()
        run_model(noisy, den)
        estimate, target = captured[-1]
        scores = {}
        for st in sm.SIGMAS_T:
            for sxy in sm.SIGMAS_XY:
                given = "off" if st == sxy == 0 else (st, sxy)
                scores[st, sxy] = psnr(run_model(noisy, den, smoothing=given)[0], clean, data_range=rng)
        best = max(scores, key=scores.get)
        print(f"{spec}: best {best} {scores[best]:.3f} dB", flush=True)
        for name, errors in criteria(estimate, target).items():
            pick = min(errors, key=errors.get)
            print(f"    {name:>14}: {pick} {scores[pick] - scores[best]:+.3f} dB", flush=True)


if __name__ == "__main__":
    main()
