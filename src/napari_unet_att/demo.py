"""The main job on the shipped sample data, for the CLI's ``demo`` and the README.

Denoises the simulated temporal sample with the shipped checkpoint (or a model trained for
``train_seconds``), compares it with the raw data and the best 3D Gaussian filter against the
simulator's ground truth, and writes the results.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from . import samples
from .baselines import best_gaussian
from .checkpoint import load_any
from .config import InferConfig, TrainConfig
from .infer import denoise
from .io import read_stack, write_stack
from .metrics import psnr, ssim_frames


def _summary(x: np.ndarray, clean: np.ndarray) -> dict[str, float]:
    rng = float(clean.max() - clean.min())
    return {"psnr_db": round(float(psnr(x, clean, data_range=rng)), 2),
            "ssim": round(float(np.mean(ssim_frames(x, clean, data_range=rng))), 4)}


def run_demo(
    out_dir: str | Path = "unet-att-demo",
    train_seconds: float = 0.0,
    device: str = "auto",
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the demo and return a JSON-serialisable report.

    Parameters
    ----------
    out_dir : str or Path
        Receives ``denoised.tif``, ``gaussian.tif``, ``metrics.json`` (and ``model.pt`` if trained).
    train_seconds : float
        0 uses the shipped ``temporal_fast.pt``; otherwise trains a ``fast`` temporal model for
        this many seconds first.
    device : str
        ``auto``, ``cpu`` or ``cuda``.
    log : callable
        Receives one-line progress messages.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    noisy_path = samples.sample_path(samples.TEMPORAL_NOISY)
    noisy = np.asarray(read_stack(noisy_path))
    clean = np.asarray(read_stack(samples.sample_path(samples.TEMPORAL_CLEAN)), dtype=np.float32)
    log(f"sample: {noisy_path.name} {noisy.shape} {noisy.dtype}")
    t0 = time.perf_counter()
    if train_seconds > 0:
        from .train import FINAL_NAME, train

        log(f"training a 'fast' temporal model for {train_seconds:g} s ...")
        den = train([noisy], TrainConfig(mode="temporal", preset="fast", seconds=train_seconds, device=device),
                    out_dir=out)
        model_path = out / FINAL_NAME
    else:
        model_path = samples.sample_path(samples.TEMPORAL_MODEL)
        den = load_any(model_path)
    train_s = time.perf_counter() - t0
    log(f"model: {den.describe()}")
    t1 = time.perf_counter()
    result = denoise(noisy, den, InferConfig(device=device))
    infer_s = time.perf_counter() - t1
    log(f"denoised {noisy.shape[0]} frames in {infer_s:.1f} s")
    sigma, gauss, _ = best_gaussian(noisy, clean)
    report = {
        "sample": noisy_path.name,
        "shape": list(noisy.shape),
        "model": str(model_path),
        "train_seconds": round(train_s, 1) if train_seconds > 0 else 0.0,
        "inference_frames_per_s": round(noisy.shape[0] / infer_s, 1),
        "raw": _summary(noisy.astype(np.float32), clean),
        "gaussian3d": {**_summary(gauss, clean), "sigma": [float(s) for s in np.atleast_1d(sigma)]},
        "unet_att": _summary(result, clean),
    }
    report["gain_over_raw_db"] = round(report["unet_att"]["psnr_db"] - report["raw"]["psnr_db"], 2)
    report["gain_over_gaussian_db"] = round(report["unet_att"]["psnr_db"] - report["gaussian3d"]["psnr_db"], 2)
    meta = {"made_by": "napari-unet-att demo", "model": str(model_path), "source": str(noisy_path)}
    write_stack(out / "denoised.tif", result, dtype="float32", metadata=meta)
    write_stack(out / "gaussian.tif", gauss, dtype="float32", metadata={**meta, "model": f"gaussian {sigma}"})
    (out / "metrics.json").write_text(json.dumps(report, indent=2))
    report["outputs"] = [str(out / n) for n in ("denoised.tif", "gaussian.tif", "metrics.json")]
    return report
