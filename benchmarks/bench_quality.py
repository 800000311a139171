"""Denoising quality benchmark on the simulator (issue: core, item 11).

For each photon level and motion setting, simulates a recording with ground truth, trains each
requested preset x mode for a fixed CPU time budget, denoises, and prints one table row per
method with PSNR, SSIM, ROI-trace correlation, training time and inference frames/s, beside the
baselines (raw, best 3D Gaussian, best temporal moving mean).

Temporal and row-split modes run on an ordinary ``(T, N, N)`` recording. Mirrored mode runs on a
bidirectional ``(T, 2N, N)`` recording; on that layout every method (temporal included, trained
on the same raw stack) is scored on the average of the two line directions, ``(T, N, N)``,
against the same clean movie, so the comparison is on the same data.

Example (the README's table)::

    python benchmarks/bench_quality.py --photons 2 --motion 0 --presets fast --modes temporal --seconds 600
    python benchmarks/bench_quality.py --photons 2 --motion 1 --bidirectional --presets fast \
        --modes temporal mirrored --seconds 600
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from napari_unet_att.config import InferConfig, TrainConfig
from napari_unet_att.evaluation.baselines import best_gaussian, best_moving_mean
from napari_unet_att.evaluation.metrics import psnr, ssim_frames, trace_correlation
from napari_unet_att.evaluation.simulator import simulate
from napari_unet_att.inference.denoising import denoise
from napari_unet_att.modes import merge_directions
from napari_unet_att.training.trainer import train


def edge_mask(clean: np.ndarray, fraction: float = 0.1) -> np.ndarray:
    """Pixels of the clean movie on the steepest ``fraction`` of spatial gradients (cell edges, per frame).

    Motion blur and the ghost of a moving cell (a faint copy where it was in a neighbouring frame)
    put their error on these pixels first, where a whole-movie PSNR dilutes it.
    """
    gy, gx = np.gradient(clean, axis=(1, 2))
    mag = np.hypot(gy, gx)
    return mag >= np.quantile(mag, 1.0 - fraction)


def edge_psnr(x: np.ndarray, clean: np.ndarray, edges: np.ndarray, data_range: float) -> float:
    """PSNR over the edge pixels only (same data range as the whole-movie PSNR)."""
    err = np.asarray(x, np.float64)[edges] - clean[edges]
    return float(10.0 * np.log10(data_range**2 / np.mean(err * err)))


def score(name: str, x: np.ndarray, clean: np.ndarray, masks, edges: np.ndarray, extra: dict | None = None) -> dict:
    rng = float(clean.max() - clean.min())
    row = {
        "method": name,
        "psnr": float(psnr(x, clean, data_range=rng)),
        "edge_psnr": edge_psnr(x, clean, edges, rng),
        "ssim": float(np.mean(ssim_frames(x, clean, data_range=rng))),
        "trace_r": float(np.nanmean(trace_correlation(x, clean, masks))),
    }
    row.update(extra or {})
    return row


def run_setting(args: argparse.Namespace, photons: float, motion: float) -> list[dict]:
    sim = simulate(n_frames=args.frames, size=args.size, photons=photons, motion_std=motion,
                   bidirectional=args.bidirectional, seed=args.seed, motion=args.motion_kind)
    noisy, clean, masks = sim.noisy, sim.clean.astype(np.float32), sim.masks
    edges = edge_mask(clean)
    view = merge_directions if args.bidirectional else (lambda a: np.asarray(a, dtype=np.float32))
    raw = view(noisy)
    rows = [score("raw", raw, clean, masks, edges)]
    sigma, gauss, _ = best_gaussian(raw, clean)
    rows.append(score(f"gaussian3d {np.round(np.atleast_1d(sigma), 2).tolist()}", gauss, clean, masks, edges))
    window, mm, _ = best_moving_mean(raw, clean)
    rows.append(score(f"moving mean w={window}", mm, clean, masks, edges))
    for preset in args.presets:
        for mode in args.modes:
            if (mode == "mirrored") != args.bidirectional and mode != "temporal":
                continue
            cfg = TrainConfig(mode=mode, preset=preset, seconds=args.seconds, seed=args.seed, device="cpu",
                              checkpoint_every=0)
            t0 = time.perf_counter()
            den = train([noisy], cfg, init=args.init)
            t_train = time.perf_counter() - t0
            icfg = InferConfig(device="cpu", mirrored_output="interleaved")
            t1 = time.perf_counter()
            out = denoise(noisy, den, icfg)
            fps = noisy.shape[0] / (time.perf_counter() - t1)
            rows.append(score(f"{preset} / {mode}", view(out), clean, masks, edges,
                              {"train_s": round(t_train, 1), "steps": den.step, "infer_fps": round(fps, 1)}))
    for r in rows:
        r.update({"photons": photons, "motion": motion, "motion_kind": args.motion_kind,
                  "layout": "(T,2N,N)" if args.bidirectional else "(T,N,N)"})
    return rows


def print_table(rows: list[dict]) -> None:
    head = ("| photons | motion px | layout | method | PSNR dB | edge PSNR dB | SSIM | trace r | train s (steps) "
            "| infer frames/s |")
    print(head)
    print("|---" * (head.count("|") - 1) + "|")
    for r in rows:
        tr = f"{r['train_s']} ({r['steps']})" if "train_s" in r else "-"
        motion = f"{r['motion']:g}" + (f" {r['motion_kind']}" if r["motion"] else "")
        print(f"| {r['photons']:g} | {motion} | {r['layout']} | {r['method']} | {r['psnr']:.2f} | "
              f"{r['edge_psnr']:.2f} | {r['ssim']:.3f} | {r['trace_r']:.3f} | {tr} | {r.get('infer_fps', '-')} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--photons", type=float, nargs="+", default=[1.0, 2.0, 5.0])
    p.add_argument("--motion", type=float, nargs="+", default=[0.0, 1.0])
    p.add_argument("--motion-kind", choices=["walk", "ar", "jitter"], default="walk",
                   help="walk: slow drift (AR(1), ~1 s correlation); ar: AR(1) with rho 0.5; "
                        "jitter: an independent shift every frame")
    p.add_argument("--bidirectional", action="store_true", help="simulate (T, 2N, N) bidirectional recordings")
    p.add_argument("--presets", nargs="+", default=["fast", "paper", "unet3d"])
    p.add_argument("--modes", nargs="+", default=["temporal", "rowsplit", "mirrored"])
    p.add_argument("--seconds", type=float, default=600.0, help="CPU training budget per model")
    p.add_argument("--frames", type=int, default=400)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--init", help="start every model from these weights (e.g. generalist: the mode's own)")
    p.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = p.parse_args()
    print(f"# machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; budget {args.seconds:g} s per model; {args.frames}x{args.size}x"
          f"{args.size} simulated, seed {args.seed}", flush=True)
    rows: list[dict] = []
    for photons in args.photons:
        for motion in args.motion:
            rows += run_setting(args, photons, motion)
    print_table(rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
