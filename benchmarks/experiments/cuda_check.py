"""Check the CUDA code paths on a GPU machine (no test machine has one): training with mixed precision, a stop
and a resume, tiled inference against the CPU result, frame means, the CLI from file to file, and speeds.

    PYTHONPATH=src python benchmarks/experiments/cuda_check.py --json cuda_check.json
    PYTHONPATH=src python benchmarks/experiments/cuda_check.py --device cpu --small   # this script's own check

Each check prints ``PASS`` or ``FAIL`` with its figures; the exit status is 1 if any failed. The GPU results
are compared with the same model run on the CPU (float32): bf16 autocast on the GPU may differ a little, so the
check is that the PSNR against the simulator's truth agrees to 0.1 dB and the frame means are kept (1%).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import tifffile
import torch

from napari_unet_att.config import POST_STEPS, InferConfig, TrainConfig
from napari_unet_att.evaluation.metrics import frame_mean_shift_pct, psnr
from napari_unet_att.evaluation.simulator import simulate
from napari_unet_att.inference import denoise
from napari_unet_att.model.pretrained import load_model
from napari_unet_att.training.trainer import Trainer

RESULTS: dict[str, dict] = {}


def check(name: str, ok: bool, **figures) -> None:
    RESULTS[name] = {"ok": bool(ok), **figures}
    said = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in figures.items())
    print(f"{'PASS' if ok else 'FAIL'} {name}: {said}", flush=True)


def timed_denoise(stack, model, device: str, **kw) -> tuple[np.ndarray, float]:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = np.asarray(denoise(stack, model, InferConfig(device=device, **kw)), np.float32)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return out, time.perf_counter() - t0


def train_stop_resume(stack, device: str, folder: Path, steps: int, stop_at: int) -> tuple[object, dict]:
    """Train ``steps`` from the temporal generalist, stopped at ``stop_at`` and resumed to the end."""
    cfg = TrainConfig(mode="temporal", preset="fast", steps=steps, device=device, checkpoint_every=0)
    first = Trainer([stack], cfg, out_dir=folder, init="generalist")
    t0, losses = time.perf_counter(), []
    for ev in first.run():
        losses.append((ev.message, ev.loss))
        if ev.step >= stop_at:
            first.stop()
    t_first = time.perf_counter() - t0
    stopped = first.denoiser.step
    second = Trainer([stack], TrainConfig(mode="temporal", preset="fast", device=device, checkpoint_every=0),
                     out_dir=folder, resume=folder / "checkpoint-last.pt")
    for ev in second.run():
        losses.append((ev.message, ev.loss))
    den = second.denoiser
    finite = all(np.isfinite(v) for said, v in losses if not said)  # messages (set-up, resume) carry no loss
    return den, {"stopped_at": int(stopped), "final_step": int(den.step), "steps_per_s": stopped / t_first,
                 "losses_finite": finite}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--small", action="store_true", help="tiny sizes (to check this script on a CPU)")
    ap.add_argument("--json", help="write the results here")
    a = ap.parse_args(argv)
    dev = a.device
    n, size, steps, big = (48, 32, 6, (64, 48, 48)) if a.small else (400, 128, 300, (1000, 256, 256))
    print(f"torch {torch.__version__}; cuda {torch.cuda.is_available()}"
          + (f", {torch.cuda.get_device_name(0)}, bf16 {torch.cuda.is_bf16_supported()}"
             if torch.cuda.is_available() else ""), flush=True)
    sim = simulate(n_frames=n, size=size, photons=2.0, motion_std=0.0, motion="walk", seed=5)
    x = sim.noisy.astype(np.float32)
    span = float(sim.clean.max() - sim.clean.min())

    def s_train_infer() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            den, fig = train_stop_resume(sim.noisy, dev, Path(tmp), steps, steps // 3)
        check("train on device: stop and resume", fig["final_step"] == steps and fig["losses_finite"], **fig)
        out_d, s_d = timed_denoise(sim.noisy, den, dev)
        out_c, s_c = timed_denoise(sim.noisy, den, "cpu")
        p_d, p_c = psnr(out_d, sim.clean, data_range=span), psnr(out_c, sim.clean, data_range=span)
        diff = float(np.abs(out_d - out_c).max() / span)
        check("fine-tuned model: device vs CPU inference", abs(p_d - p_c) < 0.1
              and frame_mean_shift_pct(out_d, x) < 1.0, psnr_device=p_d, psnr_cpu=p_c,
              max_abs_diff_of_range=diff, frame_mean_shift_pct=frame_mean_shift_pct(out_d, x),
              device_frames_per_s=n / s_d, cpu_frames_per_s=n / s_c)

    def s_generalists() -> None:
        for mode in ("temporal", "mirrored"):
            bi = mode == "mirrored"
            s = simulate(n_frames=n // 2 if bi else n, size=size, photons=2.0, motion_std=1.0, motion="ar",
                         bidirectional=bi, seed=6)
            model = load_model("generalist", mode)
            kw = {"mirrored_output": "merged"} if bi else {}
            out_d, s_d = timed_denoise(s.noisy, model, dev, **kw)
            out_c, _ = timed_denoise(s.noisy, model, "cpu", **kw)
            r = float(s.clean.max() - s.clean.min())
            p_d, p_c = psnr(out_d, s.clean, data_range=r), psnr(out_c, s.clean, data_range=r)
            check(f"{mode} generalist (AR motion): device vs CPU", abs(p_d - p_c) < 0.1, psnr_device=p_d,
                  psnr_cpu=p_c, device_frames_per_s=len(s.noisy) / s_d)

    def s_cli() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            src, dst = Path(tmp) / "in.tif", Path(tmp) / "out.tif"
            tifffile.imwrite(src, sim.noisy)
            t0 = time.perf_counter()
            run = subprocess.run([sys.executable, "-m", "napari_unet_att", "denoise", str(src), "--model",
                                  "generalist", "--out", str(dst), "--device", dev], capture_output=True, text=True)
            took = time.perf_counter() - t0
            out = tifffile.imread(dst) if dst.exists() else None
            ok = run.returncode == 0 and out is not None and out.dtype == sim.noisy.dtype and out.shape == x.shape
            check("CLI denoise file to file on the device", ok and frame_mean_shift_pct(out, x) < 1.0,
                  rc=run.returncode, seconds=took, stderr_tail=run.stderr[-300:].strip().replace("\n", " | "))

    def s_speed() -> None:
        s = simulate(n_frames=big[0], size=big[1], photons=2.0, motion_std=0.0, motion="walk", seed=7)
        model = load_model("generalist", "temporal")
        _, s_all = timed_denoise(s.noisy, model, dev)
        _, s_off = timed_denoise(s.noisy, model, dev, **POST_STEPS)  # the network pass alone
        check(f"speed {big}: generalist on the device", True, frames_per_s_default=big[0] / s_all,
              frames_per_s_network_only=big[0] / s_off)
        cfg = TrainConfig(mode="temporal", preset="paper", seconds=20 if not a.small else 5, device=dev,
                          checkpoint_every=0)
        tr = Trainer([s.noisy], cfg)
        t0, last = time.perf_counter(), 0
        for ev in tr.run():
            last = ev.step
        check("paper preset training speed on the device", last > 0, steps=last,
              steps_per_s=last / (time.perf_counter() - t0))

    sections = [s_train_infer, s_generalists, s_cli, s_speed]
    for fn in sections:
        try:
            fn()
        except Exception:  # noqa: BLE001 - one section's failure is reported, the others still run
            RESULTS[fn.__name__] = {"ok": False, "error": traceback.format_exc()[-1500:]}
            print(f"FAIL {fn.__name__}:\n{traceback.format_exc()}", flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(RESULTS, indent=1))
    return 0 if all(r["ok"] for r in RESULTS.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
