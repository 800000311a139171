"""Quality of the shipped generalist models on recordings they never saw (issue 11's targets).

Every recording here is held out from the pretraining: simulator seeds below 100000 (pretraining uses
``napari_unet_att.training.pretraining.PRETRAIN_SEED0`` = 1000000 and up), and real recordings the pretraining never
read. The best 3D Gaussian (its sigma chosen with the ground truth) runs beside the model in the same run.

    python benchmarks/bench_generalist.py zeroshot            # 1 / 2 / 5 photons x none / jitter / ar motion
    python benchmarks/bench_generalist.py mirrored            # bidirectional scan, every motion kind
    python benchmarks/bench_generalist.py realnoise           # real structure (thunder S1 movie), known noise
    python benchmarks/bench_generalist.py realnext            # real noise: denoise even frames, MSE to next odd
    python benchmarks/bench_generalist.py purenoise           # flat Poisson: invented structure, borders
    python benchmarks/bench_generalist.py finetune --seconds 600 [--scratch]   # generalist + N CPU seconds
    python benchmarks/bench_generalist.py score --model ft.pt --tta 4 --half-rate  # a model file on that recording

Rows are Markdown; ``--json FILE`` also writes them as JSON.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import numpy as np
import tifffile
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_quality import edge_mask, edge_psnr  # noqa: E402 - benchmarks folder

from napari_unet_att.cli_args import smoothing_arg, strips_arg  # noqa: E402
from napari_unet_att.config import InferConfig, TrainConfig  # noqa: E402
from napari_unet_att.evaluation.baselines import DEFAULT_SIGMAS, best_gaussian, gaussian3d  # noqa: E402
from napari_unet_att.evaluation.metrics import (  # noqa: E402
    extract_traces,
    frame_mean_shift_pct,
    psnr,
    ssim_frames,
    trace_correlation,
)
from napari_unet_att.evaluation.simulator import simulate  # noqa: E402
from napari_unet_att.inference.averages import SAID as AVG_SAID  # noqa: E402
from napari_unet_att.inference.denoising import denoise  # noqa: E402
from napari_unet_att.inference.give_back import SAID as GIVE_SAID  # noqa: E402
from napari_unet_att.inference.registration import SAID as REG_SAID  # noqa: E402
from napari_unet_att.inference.smoothing import SAID  # noqa: E402
from napari_unet_att.inference.strips import SAID as STRIPS_SAID  # noqa: E402
from napari_unet_att.model.pretrained import load_model  # noqa: E402
from napari_unet_att.modes import merge_directions  # noqa: E402

REAL = Path(__file__).resolve().parents[2] / "shared" / "real-data"
ROWS: list[dict] = []
ENSEMBLE = False  # --ensemble: also score the half-rate ensemble (an experiment, not in the engine)
INFER: dict = {}  # --tta / --half-rate: inference options for every model run
SMOOTHING: list[str] = []  # the last model run's output smoothing, in words
REGISTRATION: list[str] = []  # the last model run's frame registration, in words
AVERAGE: list[str] = []  # the last model run's time averages, in words
STRIPS: list[str] = []  # the last model run's strips of lines, in words
GIVE_BACK: list[str] = []  # the last model run's give-back, in words
LINES = {False: "", True: " within frames"}  # how a case says that its motion continues during the scan
CANDIDATE: dict[str, str] = {}  # --candidate MODE=FILE: a model file scored in place of the shipped generalist


def emit(row: dict) -> None:
    ROWS.append(row)
    cells = [row.get(k, "") for k in ("case", "method", "psnr", "edge_psnr", "ssim", "trace_r", "trace_gain",
                                      "mean_shift_pct", "note")]
    print("| " + " | ".join(f"{c:.3f}" if isinstance(c, float) else str(c) for c in cells) + " |", flush=True)


def score(case: str, method: str, x: np.ndarray, clean: np.ndarray, inp: np.ndarray, masks=None,
          note: str = "") -> dict:
    rng = float(clean.max() - clean.min())
    row = {"case": case, "method": method, "psnr": float(psnr(x, clean, data_range=rng)),
           "edge_psnr": edge_psnr(x, clean, edge_mask(clean), rng),
           "ssim": float(np.mean(ssim_frames(x, clean, data_range=rng))),
           "trace_r": float(np.nanmean(trace_correlation(x, clean, masks))) if masks is not None else "",
           "trace_gain": trace_gain(x, clean, masks) if masks is not None else "",
           "mean_shift_pct": frame_mean_shift_pct(x, inp), "note": note}
    emit(row)
    return row


def trace_gain(x: np.ndarray, clean: np.ndarray, masks) -> float:
    """How much of the cells' activity the ROI traces keep: the median over ROIs of the least-squares slope of a
    trace on the truth's (each less its mean). 1: transients at full size (the raw movie's, up to its noise); below 1:
    blunted, which every dF/F computed from the output inherits."""
    tx, tc = extract_traces(x, masks), extract_traces(clean, masks)
    tx, tc = tx - tx.mean(axis=1, keepdims=True), tc - tc.mean(axis=1, keepdims=True)
    return float(np.median(np.sum(tx * tc, axis=1) / np.maximum(np.sum(tc * tc, axis=1), 1e-12)))


def generalist(mode: str):
    return load_model(CANDIDATE.get(mode, "generalist"), mode=mode)


def run_model(stack, den, **kw) -> tuple[np.ndarray, float]:
    """The model's output and seconds taken; the output smoothing it chose goes to SMOOTHING (for notes)."""
    t0 = time.perf_counter()
    said = []
    out = denoise(stack, den, InferConfig(device="cpu", **{**INFER, **kw}), progress=said.append)
    messages = [re.sub(r"^(strip|block) 1 of \d+: ", "", e.message) for e in said]  # (cut: the first part's)
    for notes, prefix, none in ((SMOOTHING, SAID, "none"), (REGISTRATION, REG_SAID, "none"),
                                (AVERAGE, AVG_SAID, "off"), (STRIPS, STRIPS_SAID, "none"),
                                (GIVE_BACK, GIVE_SAID, "none")):
        notes[:] = [m[len(prefix):] for m in messages if m.startswith(prefix)] or [none]
    return np.asarray(out, np.float32), time.perf_counter() - t0


def compare(case: str, noisy: np.ndarray, clean: np.ndarray, masks, den, y_scale: float = 1.0,
            merge: bool = False) -> None:
    """Raw, best Gaussian and the model on one recording (scored in the physical layout)."""
    view = merge_directions if merge else (lambda a: np.asarray(a, np.float32))
    raw = view(noisy)
    score(case, "raw", raw, clean, raw, masks)
    sigma, gauss, _ = best_gaussian(noisy, clean, y_scale=y_scale)
    g = score(case, "best 3D Gaussian", view(gauss), clean, raw, masks, note=f"sigma {tuple(sigma)}")
    out, s = run_model(noisy, den, mirrored_output="merged")
    smoothed = not SMOOTHING[0].startswith("none")  # (SMOOTHING is the last run's: the runs below change it)
    m = score(case, f"generalist {den.mode} (zero-shot)", out, clean, raw, masks,
              note=f"{noisy.shape[0] / s:.1f} frames/s; smoothing {SMOOTHING[0]}; registration {REGISTRATION[0]}; "
                   f"time average {AVERAGE[0]}; strips {STRIPS[0]}; give-back {GIVE_BACK[0]}")
    print(f"<!-- {case}: model - Gaussian = {m['psnr'] - g['psnr']:+.2f} dB -->", flush=True)
    if INFER.get("strips") != "off" and not STRIPS[0].startswith("none"):
        whole, _ = run_model(noisy, den, mirrored_output="merged", strips="off")
        w = score(case, f"generalist {den.mode}, strips off (whole frames)", whole, clean, raw, masks)
        print(f"<!-- {case}: strips gave {m['psnr'] - w['psnr']:+.2f} dB -->", flush=True)
    if INFER.get("keep_average") != "off" and AVERAGE[0].startswith("restored"):
        plain, _ = run_model(noisy, den, mirrored_output="merged", keep_average="off")
        k = score(case, f"generalist {den.mode}, time average off", plain, clean, raw, masks)
        print(f"<!-- {case}: the time average gave {m['psnr'] - k['psnr']:+.2f} dB -->", flush=True)
    if INFER.get("registration") != "off" and not REGISTRATION[0].startswith("none"):
        fixed, _ = run_model(noisy, den, mirrored_output="merged", registration="off")
        r = score(case, f"generalist {den.mode}, registration off", fixed, clean, raw, masks,
                  note=f"smoothing {SMOOTHING[0]}")
        print(f"<!-- {case}: registration gave {m['psnr'] - r['psnr']:+.2f} dB -->", flush=True)
    if INFER.get("smoothing") != "off" and smoothed:
        bare, _ = run_model(noisy, den, mirrored_output="merged", smoothing="off")
        b = score(case, f"generalist {den.mode}, output smoothing off", bare, clean, raw, masks)
        print(f"<!-- {case}: smoothing gave {m['psnr'] - b['psnr']:+.2f} dB -->", flush=True)
    if ENSEMBLE and den.mode == "temporal":
        half = np.empty_like(out)
        half[0::2], half[1::2] = run_model(noisy[0::2], den)[0], run_model(noisy[1::2], den)[0]
        score(case, "generalist, even / odd frames apart (half rate, as trained)", half, clean, raw, masks)
        e = score(case, "generalist, mean of full-rate and half-rate", 0.5 * (out + half), clean, raw, masks)
        print(f"<!-- {case}: ensemble - Gaussian = {e['psnr'] - g['psnr']:+.2f} dB -->", flush=True)


# ----------------------------------------------------------------------------------------------- cases


def cmd_zeroshot(a) -> None:
    den = generalist("temporal")
    for photons in a.photons:
        for motion in a.motion:
            for seed in a.seeds:
                kind, std = (motion, 1.0) if motion != "none" else ("walk", 0.0)
                sim = simulate(n_frames=a.frames, size=a.size, photons=photons, motion_std=std, motion=kind,
                               seed=seed, line_motion=a.line_motion)
                compare(f"{photons:g} ph, {motion}{LINES[a.line_motion]}, seed {seed}", sim.noisy, sim.clean,
                        sim.labels(), den)


def cmd_mirrored(a) -> None:
    mir, tem = generalist("mirrored"), generalist("temporal")
    for motion in a.motion:
        kind, std = (motion, 1.0) if motion != "none" else ("walk", 0.0)
        for seed in a.seeds:
            sim = simulate(n_frames=a.frames, size=a.size, photons=2.0, motion_std=std, motion=kind,
                           bidirectional=True, seed=seed, line_motion=a.line_motion)
            case = f"bidirectional 2 ph, {motion}{LINES[a.line_motion]}, seed {seed}"
            raw = merge_directions(sim.noisy)
            score(case, "raw (lines averaged)", raw, sim.clean, raw, sim.labels())
            sigma, gauss, _ = best_gaussian(sim.noisy, sim.clean, y_scale=2.0)
            score(case, "best 3D Gaussian", merge_directions(gauss), sim.clean, raw, sim.labels(),
                  note=f"sigma {tuple(sigma)}")
            # temporal mode sees what an ordinary scan gives: both directions of each line averaged
            out_t, _ = run_model(raw, tem)
            t = score(case, "generalist temporal on the line-averaged movie", out_t, sim.clean, raw, sim.labels())
            out_m, _ = run_model(sim.noisy, mir, mirrored_output="merged")
            m = score(case, "generalist mirrored (zero-shot)", out_m, sim.clean, raw, sim.labels())
            print(f"<!-- {case}: mirrored - temporal = {m['psnr'] - t['psnr']:+.2f} dB -->", flush=True)


def _real_clean(name: str, photons: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A real movie's structure as the truth, with Poisson noise at ``photons`` per pixel on average.

    The truth is the recording smoothed by a small 3D Gaussian (sigma 1 frame, 0.7 px), which removes
    most of its own noise but keeps its cells, transients and motion. That smoothing favours the
    Gaussian baseline, so the comparison is conservative for the network.
    """
    movie = tifffile.imread(REAL / name).astype(np.float32)
    clean = ndimage.gaussian_filter(movie, (1.0, 0.7, 0.7))
    clean -= clean.min()
    scale = photons / clean.mean()
    lam = clean * scale
    noisy = np.random.default_rng(seed).poisson(lam).astype(np.float32) * 10.0 + 100.0  # gain 10, offset 100
    return noisy.astype(np.uint16), (lam * 10.0 + 100.0).astype(np.float32)


def _finetuned(noisy: np.ndarray, seconds: float, scratch: bool = False, **settings):
    """The temporal generalist fine-tuned (self-supervised, as a user would) on ``noisy`` for ``seconds``.

    ``scratch``: from random weights instead; ``settings``: other :class:`TrainConfig` fields (lr, patch_t...).
    """
    from napari_unet_att.training.trainer import train

    return train([noisy], TrainConfig(mode="temporal", preset="fast", seconds=seconds, device="cpu", **settings),
                 init=None if scratch else CANDIDATE.get("temporal", "generalist"))


def cmd_realnoise(a) -> None:
    den = generalist("temporal")
    for photons in a.photons:
        noisy, clean = _real_clean("thunder_mouse_svoboda_500x64x64.tif", photons, seed=a.noise_seed)
        case = f"thunder S1 structure, {photons:g} ph"
        compare(case, noisy, clean, None, den)
        if a.finetune:
            tuned = _finetuned(noisy, a.finetune)
            out, _ = run_model(noisy, tuned)
            score(case, f"generalist + {a.finetune:g} s fine-tuning on this noisy movie", out, clean,
                  noisy.astype(np.float32), note=f"{tuned.step} steps")


def cmd_realnext(a) -> None:
    """Real noise, no truth: denoise the even frames, score against the next (odd) frames."""
    den = generalist("temporal")
    for name in ("thunder_mouse_svoboda_500x64x64.tif", "sima_ca1_20x128x256.tif"):
        movie = tifffile.imread(REAL / name)
        even = np.ascontiguousarray(movie[0::2])
        odd = movie[1::2].astype(np.float32)[: len(even)]
        even = even[: len(odd)]

        def mse(x, odd=odd):
            return float(np.mean((x - odd) ** 2))

        best = min(DEFAULT_SIGMAS, key=lambda s: mse(gaussian3d(even, s)))  # the grid of best_gaussian, by MSE
        gauss = gaussian3d(even, best)
        out, _ = run_model(even, den)
        said = f"smoothing {SMOOTHING[0]}; time average {AVERAGE[0]}"
        plain, _ = run_model(even, den, keep_average="off")
        whole, _ = run_model(movie, den)
        inp = even.astype(np.float32)
        rows = [("raw even frames", inp, ""), ("best 3D Gaussian", gauss, f"sigma {best}"),
                ("generalist temporal (zero-shot)", out, said), ("generalist, time average off", plain, "")]
        if a.finetune:  # trained on the even frames only: the odd frames it is scored on stay unseen
            tuned = _finetuned(even, a.finetune)
            x = run_model(even, tuned)[0]
            rows.append((f"generalist + {a.finetune:g} s fine-tuning on the even frames", x,
                         f"{tuned.step} steps; smoothing {SMOOTHING[0]}; time average {AVERAGE[0]}"))
        for method, x, note in rows:
            row = {"case": f"{name} next-frame MSE", "method": method, "psnr": mse(x), "edge_psnr": "",
                   "ssim": "", "trace_r": "", "mean_shift_pct": frame_mean_shift_pct(x, inp), "note": note}
            emit(row)
        m_in, m_out = float(movie.mean()), float(whole.mean())
        emit({"case": f"{name} whole movie", "method": "generalist temporal (zero-shot)", "psnr": "",
              "edge_psnr": "", "ssim": "", "trace_r": "", "mean_shift_pct": frame_mean_shift_pct(whole, movie),
              "note": f"input mean {m_in:.2f}, output mean {m_out:.2f}"})


def _autocorr(img: np.ndarray, lag: int) -> float:
    z = img - img.mean()
    return float((z[lag:] * z[:-lag]).mean() + (z[:, lag:] * z[:, :-lag]).mean()) / (2 * float((z * z).mean()))


BANDS_PX = ((2, 4), (4, 8), (8, 16), (16, 64))  # spatial periods (pixels) of the band powers compared


def _band_powers(img: np.ndarray) -> list[float]:
    """Mean power of ``img`` (mean removed) in each of :data:`BANDS_PX`, radially in Fourier space.

    A normalised autocorrelation rates a fainter pattern as more structured when it is smoother; the power at
    each scale says whether a pattern is stronger than another there (the Gaussian's temporal mean, say).
    """
    z = img - img.mean()
    power = np.abs(np.fft.fft2(z)) ** 2
    fy, fx = np.meshgrid(np.fft.fftfreq(z.shape[0]), np.fft.fftfreq(z.shape[1]), indexing="ij")
    period = 1.0 / np.maximum(np.hypot(fy, fx), 1e-9)
    return [float(power[(period >= lo) & (period < hi)].mean()) for lo, hi in BANDS_PX]


def cmd_purenoise(a) -> None:
    """Flat Poisson (no cells): is structure invented, are borders biased?"""
    rng = np.random.default_rng(9)
    noisy = (rng.poisson(2.0, (a.frames // 2, a.size, a.size)) * 20 + 100).astype(np.uint16)
    x = noisy.astype(np.float32)
    out = {"raw": x, "Gaussian (6, 0.75, 0.75)": gaussian3d(noisy, (6.0, 0.75, 0.75))}
    dens = [("generalist temporal (zero-shot)", generalist("temporal"), {}),
            ("generalist, time average off", generalist("temporal"), {"keep_average": "off"})]
    if a.model:
        dens.append((f"model {a.model}", load_model(a.model), {}))
    said = {}
    for name, den, kw in dens:
        out[name] = run_model(noisy, den, **kw)[0]
        said[name] = f"; smoothing {SMOOTHING[0]}; time average {AVERAGE[0]}"
    reference = _band_powers(out["Gaussian (6, 0.75, 0.75)"].mean(axis=0))
    for name, y in out.items():
        tm = y.mean(axis=0)
        # power at each scale over the Gaussian's: above 1, the pattern is stronger than the filter's there
        ratios = zip(BANDS_PX, _band_powers(tm), reference, strict=True)
        bands = ", ".join(f"{lo}-{hi} px {p / r:.2f}" for (lo, hi), p, r in ratios)
        border = np.ones_like(tm, bool)
        border[4:-4, 4:-4] = False
        lags = "/".join(f"{_autocorr(tm, k):.3f}" for k in (1, 2, 3))
        # blobs: what is left of the temporal mean at scales of 2 px and more (a normalised autocorrelation rates
        # a fainter pattern as more structured when it is smoother; this is its amplitude at those scales)
        blobs = float(ndimage.gaussian_filter(tm - tm.mean(), 2.0)[8:-8, 8:-8].std())
        edge = tm[border].mean() - tm[~border].mean()
        emit({"case": "flat Poisson 2 ph", "method": name, "psnr": "", "edge_psnr": "", "ssim": "",
              "trace_r": "", "mean_shift_pct": frame_mean_shift_pct(y, x),
              "note": f"temporal mean: lag-1/2/3 autocorrelation {lags}, std {tm.std():.3f}, std at >= 2 px "
                      f"{blobs:.3f}, power over the Gaussian's at periods {bands}, 4-px border minus "
                      f"interior {edge:+.3f}, mean {y.mean():.2f} (input {x.mean():.2f}){said.get(name, '')}"})


def _finetune_recording(seed: int = 0):
    """The 10-minute benchmark recording (400 x 128 x 128, 2 photons/pixel, no motion, seed 0 unless told)."""
    return simulate(n_frames=400, size=128, photons=2.0, motion_std=0.0, motion="walk", seed=seed)


def cmd_score(a) -> None:
    """A model file (e.g. ``finetune --save-model``) on the fine-tuning recording, with ``--tta`` / ``--half-rate``."""
    sim = _finetune_recording(a.ft_seed)
    out, s = run_model(sim.noisy, load_model(a.model))
    opts = f"tta {INFER['tta']}, half-rate {INFER['half_rate']}"
    score(f"2 ph, none, seed {a.ft_seed} (400x128x128)", f"model {a.model}, {opts}", out, sim.clean,
          sim.noisy.astype(np.float32), sim.labels(),
          note=f"{sim.noisy.shape[0] / s:.1f} frames/s; smoothing {SMOOTHING[0]}; time average {AVERAGE[0]}")


def cmd_finetune(a) -> None:
    """The generalist fine-tuned for ``--seconds`` on the benchmark recording (or a model from scratch)."""
    sim = _finetune_recording(a.ft_seed)
    t0 = time.perf_counter()
    den = _finetuned(sim.noisy, a.seconds, a.scratch, lr=a.lr, patch_t=a.patch_t, batch_size=a.batch)
    took = time.perf_counter() - t0
    out, s = run_model(sim.noisy, den)
    raw = sim.noisy.astype(np.float32)
    what = "from scratch" if a.scratch else "generalist +"
    lr = f", lr {a.lr:g}" if a.lr else ""
    lr += f", patch_t {a.patch_t}" if a.patch_t else ""
    lr += f", batch {a.batch}" if a.batch else ""
    score(f"2 ph, none, seed {a.ft_seed} (400x128x128)", f"fast temporal, {what} {a.seconds:g} s{lr}", out,
          sim.clean, raw, sim.labels(), note=f"{den.step} steps in {took:.0f} s; {sim.noisy.shape[0] / s:.1f} "
          f"frames/s; smoothing {SMOOTHING[0]}; time average {AVERAGE[0]}")
    if a.gaussian:
        sigma, gauss, _ = best_gaussian(sim.noisy, sim.clean)
        score(f"2 ph, none, seed {a.ft_seed} (400x128x128)", "best 3D Gaussian", gauss, sim.clean, raw,
              sim.labels(), note=f"sigma {tuple(sigma)}")
    if a.save:
        tifffile.imwrite(a.save, out)
    if a.save_model:
        from napari_unet_att.model.checkpoint import save_checkpoint

        save_checkpoint(a.save_model, den)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("case", choices=["zeroshot", "mirrored", "realnoise", "realnext", "purenoise", "finetune",
                                       "score"])
    ap.add_argument("--photons", type=float, nargs="+", default=[1.0, 2.0, 5.0])
    ap.add_argument("--motion", nargs="+", default=["none", "jitter", "ar"],
                    choices=["none", "walk", "ar", "jitter"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[11])
    ap.add_argument("--line-motion", action="store_true",
                    help="zeroshot / mirrored: the motion goes on during each frame's scan (each line its own shift)")
    ap.add_argument("--noise-seed", type=int, default=3,
                    help="realnoise: seed of the added Poisson noise (3: the benchmark's; others for validation)")
    ap.add_argument("--frames", type=int, default=400)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--seconds", type=float, default=600.0)
    ap.add_argument("--lr", type=float, help="finetune: learning rate (default: the engine's choice)")
    ap.add_argument("--ft-seed", type=int, default=0,
                    help="finetune / score: simulator seed of the recording (0: the benchmark recording)")
    ap.add_argument("--patch-t", type=int, help="finetune: frames per training patch (default: the preset's)")
    ap.add_argument("--batch", type=int, help="finetune: patches per step (default: the preset's)")
    ap.add_argument("--finetune", type=float, default=0.0,
                    help="realnoise / realnext: also fine-tune the generalist for this many seconds on each movie")
    ap.add_argument("--gaussian", action="store_true", help="finetune: also score the best 3D Gaussian")
    ap.add_argument("--scratch", action="store_true", help="finetune: train from random weights instead")
    ap.add_argument("--model", help="purenoise: also this model file; score: the model file to score")
    ap.add_argument("--save", help="finetune: write the denoised stack here")
    ap.add_argument("--save-model", help="finetune: write the fine-tuned model here (e.g. for purenoise --model)")
    ap.add_argument("--json", help="also write the rows as JSON")
    ap.add_argument("--ensemble", action="store_true", help="also score the full + half-rate ensemble")
    ap.add_argument("--tta", type=int, default=1, help="test-time flips averaged by every model run (1, 2, 4, 8)")
    ap.add_argument("--half-rate", action="store_true", help="every temporal model run with the half-rate ensemble")
    ap.add_argument("--smoothing", default="auto", type=smoothing_arg,
                    help="every model run's output smoothing (auto, off, T,XY; as denoise --smoothing)")
    ap.add_argument("--registration", default="auto", choices=("auto", "off"),
                    help="every model run's frame registration (as denoise --registration)")
    ap.add_argument("--keep-average", default="auto", choices=("auto", "off"),
                    help="every model run's time averages (as denoise --keep-average)")
    ap.add_argument("--strips", default="auto", type=strips_arg,
                    help="every model run's strips of lines (auto, off or a number; as denoise --strips)")
    ap.add_argument("--candidate", action="append", default=[], metavar="MODE=FILE",
                    help="score this model file in place of the shipped generalist of MODE (e.g. a run's checkpoint)")
    a = ap.parse_args(argv)
    CANDIDATE.update(c.split("=", 1) for c in a.candidate)
    INFER.update(tta=a.tta, half_rate=a.half_rate, smoothing=a.smoothing, registration=a.registration,
                 keep_average=a.keep_average, strips=a.strips)
    global ENSEMBLE
    ENSEMBLE = a.ensemble
    if a.case == "mirrored" and a.size == 128:
        a.size = 64  # a (T, 128, 64) raw scan, as the shipped sample
    print("| case | method | PSNR dB (realnext: MSE) | edge PSNR dB | SSIM | trace r | trace gain "
          "| max frame-mean shift % | note |")
    print("|---|---|---|---|---|---|---|---|---|")
    globals()[f"cmd_{a.case}"](a)
    if a.json:
        Path(a.json).write_text(json.dumps(ROWS, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
