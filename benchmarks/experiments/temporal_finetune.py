"""Where fine-tuning the temporal generalist helps and where it harms, beside the signal's consecutive-frame
correlation that ``training.fast_signals`` advises by (an experiment).

    python benchmarks/experiments/temporal_finetune.py --cases pkg:5:0.1:none:31 indep:none:6   # 300 s each
    python benchmarks/experiments/temporal_finetune.py --cases pkg:30:0.7:ar:31 --seconds 30 --frames 60   # smoke

A case is ``pkg:FPS:DECAY:MOTION:SEED`` (the package's simulator, a bidirectional scan line-averaged as
``mirrored_fast.py`` does; MOTION ``none`` or ``ar``, 1 px) or ``indep:MOTION:SEED`` (``independent_sim.py``'s
scene for that seed). Each 200 x 64 x 64 (``--frames``), 2 photons. The temporal generalist is fine-tuned on the
recording for ``--seconds`` (``fast``, as ``train --init generalist``), then both are scored against the truth
(PSNR) with the default inference, with the output smoothing off, and with the network alone (smoothing, give-back
and averages off). The correlation is measured on the frames as training sees them (registered where they move).
Run one process per core (the fine-tuning is timed): ``OMP_NUM_THREADS=1 taskset -c N``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the independent simulator, mirrored_fast

from mirrored_fast import bidirectional  # noqa: E402 - the same recordings

from napari_unet_att.config import InferConfig, TrainConfig  # noqa: E402
from napari_unet_att.evaluation.metrics import psnr  # noqa: E402
from napari_unet_att.inference.denoising import denoise  # noqa: E402
from napari_unet_att.model.pretrained import load_model  # noqa: E402
from napari_unet_att.modes import merge_directions  # noqa: E402
from napari_unet_att.training.fast_signals import frame_correlation  # noqa: E402
from napari_unet_att.training.start import register_stacks  # noqa: E402
from napari_unet_att.training.trainer import train  # noqa: E402

SETTINGS = {"default": {}, "smoothing off": {"smoothing": "off"},
            "network alone": {"smoothing": "off", "give_back": "off", "keep_average": "off"}}


def recording(case: str, frames: int) -> tuple[np.ndarray, np.ndarray]:
    """The noisy movie and its truth for a case (see the module's docstring)."""
    kind, *rest = case.split(":")
    if kind == "pkg":
        sim = bidirectional(int(rest[3]), rest[2], float(rest[0]), float(rest[1]), frames)
        return merge_directions(sim.noisy), sim.clean
    import independent_sim as ind

    noisy, clean, _, _ = ind.simulate_2p(T=frames, size=64, photons=2.0, motion=rest[0], seed=int(rest[1]))
    return noisy, clean


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", nargs="+", default=["pkg:5:0.1:none:31", "indep:none:6"])
    ap.add_argument("--seconds", type=float, default=300.0)
    ap.add_argument("--frames", type=int, default=200)
    a = ap.parse_args()
    for case in a.cases:
        noisy, clean = recording(case, a.frames)
        seen, _ = register_stacks([noisy], TrainConfig(mode="temporal").resolved(), [case])
        r = frame_correlation(seen[0])
        models = {"generalist": load_model("generalist", mode="temporal"),
                  "fine-tuned": train([noisy], TrainConfig(mode="temporal", preset="fast", seconds=a.seconds,
                                                           device="cpu"), init="generalist")}
        rng = float(clean.max() - clean.min())
        cells = []
        for setting, kw in SETTINGS.items():
            got = {k: float(psnr(denoise(noisy, den, InferConfig(device="cpu", **kw)), clean, data_range=rng))
                   for k, den in models.items()}
            cells.append(f"{setting}: {got['generalist']:.2f} -> {got['fine-tuned']:.2f} "
                         f"({got['fine-tuned'] - got['generalist']:+.2f})")
        corr = "not measured" if r is None else f"{r:.2f}"
        print(f"| {case} | {corr} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
