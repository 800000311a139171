"""Mirrored-scan against temporal self-supervision where the signal changes between frames (a fast indicator at a
low frame rate), zero-shot and fine-tuned on the recording.

    python benchmarks/experiments/mirrored_fast.py --seeds 31 32 --motion none ar                 # zero-shot
    python benchmarks/experiments/mirrored_fast.py --seeds 31 --motion none ar --seconds 300      # + fine-tuned
    python benchmarks/experiments/mirrored_fast.py --seeds 31 32 --two-passes   # and each direction in its own pass

A bidirectional scan records every line twice, forward and backward, microseconds apart: a mirrored-scan pair shows
the same signal, a temporal pair (even and odd frames) does not where transients last a frame or two. The simulator's
bidirectional recordings (200 x 2*64 x 64, 2 photons, ``--fps`` and ``--tau`` the indicator's decay in seconds, AR(1)
motion of 1 px or none); the temporal generalist sees the line-averaged movie, the mirrored one the raw scan (merged
output: the physical frames, each line's two directions averaged, in one pass), with the default settings;
``--seconds``: each generalist also fine-tuned on the recording for that long (``fast``, its own mode, as ``train
--init generalist``). Scored against the truth with the best 3D Gaussian (sigma chosen with the truth) beside them
(``bench_generalist.score``). ``--two-passes``: each mirrored model's interleaved output (each direction's lines
denoised in their own pass, half the photons each) is also scored, its two directions averaged after (what a merged
output was before the thirty-third session). Run it alone or one thread per process: the fine-tuning is timed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench_generalist's scoring

import bench_generalist as bg  # noqa: E402

from napari_unet_att.config import TrainConfig  # noqa: E402
from napari_unet_att.evaluation.simulator import simulate  # noqa: E402
from napari_unet_att.modes import merge_directions  # noqa: E402
from napari_unet_att.training.trainer import train  # noqa: E402


def bidirectional(seed: int, motion: str, fps: float, tau: float, frames: int = 200):
    """The package simulator's bidirectional recording of these cases: ``frames`` x 2*64 x 64, 2 photons, an indicator
    decaying over ``tau`` seconds at ``fps``, AR(1) motion of 1 px or none (``motion`` 'none')."""
    kind, std = (motion, 1.0) if motion != "none" else ("walk", 0.0)
    return simulate(n_frames=frames, size=64, photons=2.0, motion_std=std, motion=kind, bidirectional=True,
                    seed=seed, fps=fps, tau_decay=tau, tau_rise=0.02 if tau < 0.5 else 0.05)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[31])
    ap.add_argument("--motion", nargs="+", default=["none", "ar"], choices=["none", "ar", "jitter", "walk"])
    ap.add_argument("--fps", type=float, default=5.0)
    ap.add_argument("--tau", type=float, default=0.1, help="the indicator's decay time, seconds")
    ap.add_argument("--seconds", type=float, default=0.0, help="fine-tuning per model (0: zero-shot only)")
    ap.add_argument("--two-passes", action="store_true", help="mirrored models' two passes averaged after, too")
    a = ap.parse_args()
    for seed in a.seeds:
        for motion in a.motion:
            sim = bidirectional(seed, motion, a.fps, a.tau)
            case = f"{a.fps:g} Hz, decay {a.tau:g} s, {motion}, seed {seed}"
            raw = merge_directions(sim.noisy)
            _, gauss, _ = bg.best_gaussian(sim.noisy, sim.clean, y_scale=2.0)
            rows = {"best 3D Gaussian": bg.score(case, "best 3D Gaussian", merge_directions(gauss), sim.clean, raw,
                                                 sim.labels())}
            for mode, data, kw in (("temporal", raw, {}), ("mirrored", sim.noisy, {"mirrored_output": "merged"})):
                models = {"zero-shot": bg.generalist(mode)}
                if a.seconds > 0:
                    models[f"fine-tuned {a.seconds:g} s"] = train(
                        [data], TrainConfig(mode=mode, preset="fast", seconds=a.seconds, device="cpu"),
                        init="generalist")
                for how, den in models.items():
                    out, _ = bg.run_model(data, den, **kw)
                    rows[f"{mode} {how}"] = bg.score(case, f"{mode} {how}", out, sim.clean, raw, sim.labels())
                    if mode == "mirrored" and a.two_passes:
                        out, _ = bg.run_model(data, den, mirrored_output="interleaved")
                        rows[f"{mode} {how}, two passes"] = bg.score(case, f"{mode} {how}, two passes averaged",
                                                                      merge_directions(out), sim.clean, raw,
                                                                      sim.labels())
            cells = " | ".join(f"{k} {r['psnr']:.2f} (r {r['trace_r']:.3f})" for k, r in rows.items())
            print(f"<!-- {case}: {cells} -->", flush=True)


if __name__ == "__main__":
    main()
