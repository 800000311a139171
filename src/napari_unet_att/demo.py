"""The main job on the shipped sample data, for the CLI's ``demo`` and the README.

Denoises the simulated samples with the shipped **generalist** models (pretrained offline on other
simulated recordings: the samples' seeds were never part of the pretraining, see
:mod:`napari_unet_att.training.pretraining`), or with a model fine-tuned from them for ``train_seconds``, and
scores the result beside the raw data and the best 3D Gaussian filter (its sigma chosen with the
ground truth, which no real user has) against the simulator's ground truth: PSNR, SSIM, the
correlation of the soma traces with the true ones, and how far each frame's mean brightness moved.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from .config import DEMO_OUT, InferConfig, TrainConfig
from .evaluation.baselines import best_gaussian
from .evaluation.metrics import frame_mean_shift_pct, psnr, ssim_frames, trace_correlation
from .inference.denoising import denoise
from .model.pretrained import load_model, pretrained_path
from .modes import merge_directions
from .stackio import read_stack, samples, write_stack


def _summary(x: np.ndarray, clean: np.ndarray, rois: np.ndarray | None, brightness_of: np.ndarray) -> dict[str, Any]:
    """Scores of one result against the ground truth, and its brightness against the input's."""
    rng = float(clean.max() - clean.min())
    out: dict[str, Any] = {"psnr_db": round(float(psnr(x, clean, data_range=rng)), 2),
                           "ssim": round(float(np.mean(ssim_frames(x, clean, data_range=rng))), 4)}
    if rois is not None:
        out["trace_r"] = round(float(np.nanmean(trace_correlation(x, clean, rois))), 4)
    out["max_frame_mean_shift_pct"] = round(frame_mean_shift_pct(x, brightness_of), 3)
    return out


def _model(mode: str, train_seconds: float, noisy: np.ndarray, out: Path, device: str, log) -> tuple[Any, str]:
    """The shipped generalist, or one fine-tuned from it on ``noisy`` for ``train_seconds``."""
    if train_seconds <= 0:
        return load_model("generalist", mode=mode), str(pretrained_path(mode))
    from .training import FINAL_NAME, train

    log(f"fine-tuning the {mode} generalist on the sample for {train_seconds:g} s ...")
    run = out / f"finetuned-{mode}"
    den = train([noisy], TrainConfig(mode=mode, preset="fast", seconds=train_seconds, device=device),
                out_dir=run, init="generalist")
    return den, str(run / FINAL_NAME)


def _case(name: str, mode: str, noisy_name: str, clean_name: str, rois_name: str | None, out: Path,
          train_seconds: float, device: str, log) -> dict[str, Any]:
    noisy_path = samples.sample_path(noisy_name)
    noisy = np.asarray(read_stack(noisy_path))
    clean = np.asarray(read_stack(samples.sample_path(clean_name)), dtype=np.float32)
    rois = tifffile.imread(samples.sample_path(rois_name)) if rois_name else None  # a (Y, X) labels image
    log(f"{name}: {noisy_path.name} {noisy.shape} {noisy.dtype}")
    t0 = time.perf_counter()
    den, model_path = _model(mode, train_seconds, noisy, out, device, log)
    train_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    # a bidirectional scan is scored in its physical layout: the two line directions averaged
    result = denoise(noisy, den, InferConfig(device=device, mirrored_output="merged"))
    infer_s = time.perf_counter() - t1
    physical = merge_directions if mode == "mirrored" else (lambda a: np.asarray(a, dtype=np.float32))
    raw = physical(noisy)
    sigma, gauss, _ = best_gaussian(noisy, clean, y_scale=2.0 if mode == "mirrored" else 1.0)
    gauss = physical(gauss)
    report = {
        "sample": noisy_path.name, "shape": list(noisy.shape), "mode": mode, "model": model_path,
        "model_description": den.describe(),
        "fine_tune_seconds": round(train_s, 1) if train_seconds > 0 else 0.0,
        "inference_frames_per_s": round(noisy.shape[0] / infer_s, 1),
        "raw": _summary(raw, clean, rois, raw),
        "gaussian3d_best": {**_summary(gauss, clean, rois, raw), "sigma_t_y_x": [float(s) for s in sigma]},
        "unet_att": _summary(result, clean, rois, raw),
    }
    report["gain_over_raw_db"] = round(report["unet_att"]["psnr_db"] - report["raw"]["psnr_db"], 2)
    report["gain_over_gaussian_db"] = round(report["unet_att"]["psnr_db"] - report["gaussian3d_best"]["psnr_db"], 2)
    meta = {"made_by": "napari-unet-att demo", "model": model_path, "source": str(noisy_path)}
    write_stack(out / f"{name}_denoised.tif", result, dtype="float32", metadata=meta)
    write_stack(out / f"{name}_gaussian.tif", gauss, dtype="float32", metadata={**meta, "model": f"gaussian {sigma}"})
    log(f"{name}: UNet-Att {report['unet_att']['psnr_db']} dB, best Gaussian "
        f"{report['gaussian3d_best']['psnr_db']} dB ({report['gain_over_gaussian_db']:+.2f} dB)")
    return report


def run_demo(
    out_dir: str | Path = DEMO_OUT,
    train_seconds: float = 0.0,
    device: str = "auto",
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the demo and return a JSON-serialisable report.

    Parameters
    ----------
    out_dir : str or Path
        Receives ``<case>_denoised.tif``, ``<case>_gaussian.tif`` and ``metrics.json`` (and the
        fine-tuned models with ``train_seconds``).
    train_seconds : float
        0 denoises with the shipped generalists as they are (zero-shot); otherwise each is first
        fine-tuned on its sample for this many seconds (self-supervised: no ground truth used).
    device : str
        ``auto``, ``cpu`` or ``cuda``.
    log : callable
        Receives one-line progress messages.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "what": "shipped generalist UNet-Att models on simulated recordings they were never trained on, against "
                "the ground truth, beside the best 3D Gaussian filter (its sigma chosen with the ground truth); "
                "trace_r: mean correlation of the soma traces with the true ones; max_frame_mean_shift_pct: the "
                "largest change of a frame's mean brightness from the input's",
        "temporal": _case("temporal", "temporal", samples.TEMPORAL_NOISY, samples.TEMPORAL_CLEAN, samples.ROIS,
                          out, train_seconds, device, log),
        "mirrored": _case("bidirectional", "mirrored", samples.BIDIR_NOISY, samples.BIDIR_CLEAN, None, out,
                          train_seconds, device, log),
    }
    (out / "metrics.json").write_text(json.dumps(report, indent=2))
    report["outputs"] = sorted(str(p) for p in out.iterdir() if p.is_file())
    return report
