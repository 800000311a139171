"""Write the quality benchmark's recording for a peer tool, and score the peer's denoised stack on it.

Run with the project's interpreter::

    .venv/bin/python benchmarks/peers/score_peer.py --make-input /tmp/bench_p2.tif
    .venv/bin/python benchmarks/peers/score_peer.py --score /tmp/deepcad_p2.tif --log /tmp/deepcad_p2.log

The recording is ``bench_quality.run_setting``'s for ``--photons 2 --motion 0`` (400 x 128 x 128, walk, ordinary
layout, seed 0); ``sim.noisy`` (uint16) is the input. Scoring simulates it again and prints ``bench_quality.score``'s
metrics (PSNR, edge PSNR, SSIM, trace r, all on the output as it is) plus the PSNR after the least-squares affine fit
(``metrics.psnr_affine``; it forgives a wrong offset or scale), for raw and the denoised file, as Markdown rows.
``--log`` takes training seconds, iterations and inference frames/s from the peer runner's ``RESULT`` line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import tifffile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench_quality import edge_mask, score  # noqa: E402 - benchmarks folder

from napari_unet_att.evaluation.baselines import best_gaussian  # noqa: E402
from napari_unet_att.evaluation.metrics import psnr_affine  # noqa: E402
from napari_unet_att.evaluation.simulator import SimResult, simulate  # noqa: E402

PHOTONS, MOTION = 2.0, 0.0


def bench_recording() -> SimResult:
    """The benchmark recording, exactly as ``bench_quality.run_setting`` simulates it with its defaults."""
    return simulate(n_frames=400, size=128, photons=PHOTONS, motion_std=MOTION, bidirectional=False, seed=0,
                    motion="walk")


def read_result(log: Path) -> dict:
    """The JSON of the last ``RESULT {...}`` line of a peer runner's log."""
    lines = [ln for ln in log.read_text().splitlines() if ln.startswith("RESULT ")]
    return json.loads(lines[-1][len("RESULT "):]) if lines else {}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--make-input", type=Path, help="write sim.noisy (uint16 (T, Y, X)) here")
    ap.add_argument("--score", type=Path, help="denoised (T, Y, X) TIFF to score")
    ap.add_argument("--log", type=Path, help="peer runner's stdout (its RESULT line fills train s / frames/s)")
    ap.add_argument("--name", default="DeepCAD-RT 1.2.0", help="method name in the table")
    ap.add_argument("--gaussian", action="store_true", help="also score the best 3D Gaussian (slower)")
    args = ap.parse_args()
    sim = bench_recording()
    if args.make_input:
        tifffile.imwrite(args.make_input, sim.noisy)
        print(f"wrote {args.make_input}: {sim.noisy.shape} {sim.noisy.dtype}, mean {sim.noisy.mean():.2f}")
    if not args.score:
        return
    clean, masks = sim.clean.astype(np.float32), sim.masks
    edges, rng = edge_mask(clean), float(clean.max() - clean.min())
    raw = sim.noisy.astype(np.float32)
    den = tifffile.imread(args.score).astype(np.float32)
    if den.shape != clean.shape:
        raise SystemExit(f"{args.score}: shape {den.shape}, expected {clean.shape}")
    res = read_result(args.log) if args.log else {}
    methods = [("raw", raw, {})]
    if args.gaussian:
        sigma, gauss, _ = best_gaussian(raw, clean)
        methods.append((f"gaussian3d {np.round(np.atleast_1d(sigma), 2).tolist()}", gauss, {}))
    methods.append((args.name, den, res))
    print("| photons | motion px | layout | method | PSNR dB | edge PSNR dB | SSIM | trace r | affine PSNR dB "
          "| train s (steps) | infer frames/s |")
    print("|---" * 11 + "|")
    for name, x, extra in methods:
        r = score(name, x, clean, masks, edges)
        tr = f"{extra['train_s']:.1f} ({extra['iterations']})" if "train_s" in extra else "-"
        print(f"| {PHOTONS:g} | {MOTION:g} | (T,N,N) | {name} | {r['psnr']:.2f} | {r['edge_psnr']:.2f} | "
              f"{r['ssim']:.3f} | {r['trace_r']:.3f} | {psnr_affine(x, clean, data_range=rng):.2f} | {tr} | "
              f"{extra.get('infer_fps', '-')} |")


if __name__ == "__main__":
    main()
