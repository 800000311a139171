"""Regenerate the shipped sample data (simulated recordings, real recording copy, small model).

Usage::

    python scripts/make_sample_data.py                     # simulated TIFFs + real recording copy
    python scripts/make_sample_data.py --checkpoint        # ... and train sample_data/temporal_fast.pt
    python scripts/make_sample_data.py --checkpoint --seconds 600

Everything is deterministic (fixed seeds). The simulated ground truth is float32 and stored
zlib-compressed with the floating-point predictor to keep ``sample_data/`` small; the engine's
reader opens compressed TIFFs lazily through dask.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import tifffile

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from napari_unet_att.evaluation.simulator import simulate  # noqa: E402
from napari_unet_att.stackio import samples  # noqa: E402

OUT = ROOT / "sample_data"
REAL_SRC = Path("/work/shared/real-data/thunder_mouse_svoboda_500x64x64.tif")
ROIS_NAME = "sim_temporal_rois.tif"


def _write(path: Path, data: np.ndarray, description: str) -> None:
    """Compressed TIFF, written beside the target then moved (never a half-written sample)."""
    # Horizontal differencing helps integers; the floating-point predictor would need
    # imagecodecs, so float data are quantised instead (see _quantise).
    predictor = 2 if data.dtype.kind in "iu" else None
    tmp = path.with_name(path.name + ".tmp")
    tifffile.imwrite(tmp, data, compression="zlib", predictor=predictor, description=description,
                     metadata=None)
    tmp.replace(path)
    print(f"{path.relative_to(ROOT)}: {data.shape} {data.dtype}, {path.stat().st_size / 1e6:.2f} MB")


def _quantise(clean: np.ndarray, step: float = 1 / 8) -> np.ndarray:
    """Round the float ground truth to 1/8 ADU (rms error 0.04 ADU; the noise is ~30 ADU).

    The zeroed low mantissa bits let zlib compress the float32 file several-fold.
    """
    return (np.round(clean.astype(np.float64) / step) * step).astype(np.float32)


def make_temporal(frames: int, size: int, photons: float, seed: int) -> None:
    sim = simulate(n_frames=frames, size=size, photons=photons, seed=seed)
    note = f"napari-unet-att simulate(n_frames={frames}, size={size}, photons={photons}, seed={seed})"
    _write(OUT / samples.TEMPORAL_NOISY, sim.noisy, note + ": noisy recording (ADU)")
    _write(OUT / samples.TEMPORAL_CLEAN, _quantise(sim.clean), note + ": noise-free ground truth (ADU)")
    labels = np.zeros(sim.masks.shape[1:], dtype=np.uint16)
    for i, m in enumerate(sim.masks, start=1):
        labels[m & (labels == 0)] = i
    _write(OUT / ROIS_NAME, labels, note + ": soma footprints as labels")


def make_bidirectional(frames: int, size: int, photons: float, motion_std: float, seed: int) -> None:
    sim = simulate(n_frames=frames, size=size, photons=photons, motion_std=motion_std, bidirectional=True,
                   seed=seed)
    note = (f"napari-unet-att simulate(n_frames={frames}, size={size}, photons={photons}, "
            f"motion_std={motion_std}, bidirectional=True, seed={seed})")
    _write(OUT / samples.BIDIR_NOISY, sim.noisy, note + ": raw (T, 2N, N) bidirectional recording (ADU)")
    _write(OUT / samples.BIDIR_CLEAN, _quantise(sim.clean), note + ": noise-free (T, N, N) ground truth")


def copy_real() -> None:
    dst = OUT / samples.REAL_THUNDER
    if REAL_SRC.exists():
        shutil.copyfile(REAL_SRC, dst)
        print(f"{dst.relative_to(ROOT)}: copied from {REAL_SRC}")
    elif not dst.exists():
        print(f"warning: {REAL_SRC} not found and {dst} missing", file=sys.stderr)


def make_checkpoint(seconds: float, steps: int | None, seed: int) -> None:
    """Train the small pretrained 'fast' model for the temporal sample."""
    from napari_unet_att.config import TrainConfig
    from napari_unet_att.model.checkpoint import save_checkpoint
    from napari_unet_att.stackio import read_stack
    from napari_unet_att.training.trainer import train

    stack = read_stack(OUT / samples.TEMPORAL_NOISY, lazy=False)
    cfg = TrainConfig(mode="temporal", preset="fast", seconds=None if steps else seconds, steps=steps, seed=seed)
    t0 = time.perf_counter()
    last = [0.0]

    def show(ev) -> None:
        if time.perf_counter() - last[0] > 10:
            last[0] = time.perf_counter()
            print(f"  step {ev.step}, loss {ev.loss:.4f}, {ev.steps_per_s:.2f} steps/s", flush=True)

    den = train([stack], cfg, progress=show)
    den.provenance["sources"] = [f"sample_data/{samples.TEMPORAL_NOISY}"]
    path = OUT / samples.TEMPORAL_MODEL
    save_checkpoint(path, den)
    print(f"{path.relative_to(ROOT)}: {den.describe()} ({time.perf_counter() - t0:.0f} s, "
          f"{path.stat().st_size / 1e6:.2f} MB)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--size", type=int, default=96, help="temporal sample frame size (N x N)")
    ap.add_argument("--bidir-size", type=int, default=64, help="bidirectional sample: N of the (T, 2N, N) stack")
    ap.add_argument("--photons", type=float, default=2.0)
    ap.add_argument("--motion-std", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--checkpoint", action="store_true", help="also train sample_data/temporal_fast.pt")
    ap.add_argument("--seconds", type=float, default=300.0, help="training budget of the checkpoint")
    ap.add_argument("--steps", type=int, default=None, help="step budget instead of --seconds")
    ap.add_argument("--skip-data", action="store_true", help="only (re)train the checkpoint")
    args = ap.parse_args(argv)
    OUT.mkdir(exist_ok=True)
    if not args.skip_data:
        make_temporal(args.frames, args.size, args.photons, args.seed)
        make_bidirectional(args.frames, args.bidir_size, args.photons, args.motion_std, args.seed + 1)
        copy_real()
    if args.checkpoint:
        make_checkpoint(args.seconds, args.steps, args.seed)
    total = sum(p.stat().st_size for p in OUT.iterdir() if p.is_file())
    print(f"sample_data/: {total / 1e6:.1f} MB in total")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
