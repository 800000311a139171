"""What the choices made on the recording cost: denoising time with the output smoothing ('auto',
inference/smoothing.py), the frame registration ('auto', inference/registration.py), the time averages ('auto',
inference/averages.py), the strips of lines ('auto', inference/strips.py), the line phase ('auto',
inference/line_phase.py) and the give-back ('auto', inference/give_back.py) off, and on.

The shipped temporal generalist denoises a still and a moving simulated recording (400 x 128 x 128, 2 photons), the
settings alternated in one process so that the machine's drift hits them alike; the best of ``--repeats`` runs
is kept. Run it alone (e.g. under ``flock``): on a shared 2-core machine its figures mean little otherwise.

    python benchmarks/experiments/inference_cost.py --repeats 5
    python benchmarks/experiments/inference_cost.py --repeats 1 --frames 1000 --size 256 --only "all off" default
    python benchmarks/experiments/inference_cost.py --repeats 1 --frames 1000 --size 256 --device cuda   # a GPU
    python benchmarks/experiments/inference_cost.py --repeats 3 --line-motion --only without default  # + jitter
                                                                                # within frames (strips cut)
    python benchmarks/experiments/inference_cost.py --repeats 3 --only no default  # the give-back's share
"""

from __future__ import annotations

import argparse
import time

from napari_unet_att.config import POST_STEPS, InferConfig
from napari_unet_att.evaluation.simulator import simulate
from napari_unet_att.inference.denoising import denoise
from napari_unet_att.model.pretrained import load_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--frames", type=int, default=400)
    ap.add_argument("--size", type=int, default=128, help="frame height and width")
    ap.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    ap.add_argument("--only", nargs="+", metavar="LABEL", help="these settings only (the first word of each label)")
    ap.add_argument("--line-motion", action="store_true", help="also a recording moving within frames (jitter)")
    a = ap.parse_args()
    den = load_model("generalist", mode="temporal")
    stacks = {"still": simulate(n_frames=a.frames, size=a.size, photons=2.0, seed=0).noisy,
              "moving (jitter, 1 px)": simulate(n_frames=a.frames, size=a.size, photons=2.0, seed=0, motion="jitter",
                                                motion_std=1.0).noisy}
    if a.line_motion:
        stacks["moving within frames (jitter, 1 px)"] = simulate(n_frames=a.frames, size=a.size, photons=2.0, seed=0,
                                                                 motion="jitter", motion_std=1.0,
                                                                 line_motion=True).noisy
    denoise(stacks["still"][:64], den, InferConfig(device=a.device))  # warm-up: first-call allocations
    off = dict(POST_STEPS)  # every step around the network pass off (half-rate: off by default too)
    settings = {"all off": off,
                "smoothing auto": {**off, "smoothing": "auto"},
                "registration auto": {**off, "registration": "auto"},
                "time averages auto": {**off, "keep_average": "auto"},
                "strips auto": {**off, "strips": "auto"},
                "line phase auto": {**off, "line_phase": "auto"},
                "give-back auto": {**off, "give_back": "auto"},
                "no give-back (all else auto)": {"give_back": "off"},
                "without strips (all else auto)": dict(smoothing="auto", registration="auto", keep_average="auto",
                                                       strips="off"),
                "default (all auto)": {}}
    if a.only:
        settings = {k: v for k, v in settings.items() if k.split()[0] in a.only or k == "all off"}
    best: dict[tuple[str, str], float] = {}
    for _ in range(a.repeats):
        for name, x in stacks.items():
            for label, kw in settings.items():
                t0 = time.perf_counter()
                denoise(x, den, InferConfig(device=a.device, **kw))
                dt = time.perf_counter() - t0
                best[name, label] = min(dt, best.get((name, label), dt))
    for name in stacks:
        off = best[name, "all off"]
        print(f"{name}: all off {off:.2f} s ({a.frames / off:.1f} frames/s)" + "".join(
            f"; {label} {best[name, label]:.2f} s ({100 * (best[name, label] / off - 1):+.1f}%)"
            for label in list(settings)[1:]), flush=True)


if __name__ == "__main__":
    main()
