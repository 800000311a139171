"""CPU inference speed of each preset, against the machine's conv3d throughput (issue: scale/speed).

For each preset (``config.PRESETS``) an untrained network denoises a 400 x 128 x 128 uint16
stack (Poisson noise around a smooth background; speed does not depend on the content, nor
on the weights) with :func:`napari_unet_att.inference.denoising.denoise`, and the script prints:

- frames/s (best of ``--repeats`` full runs, after a short warm-up);
- achieved GFLOP/s: the network's convolution FLOPs (2 x multiply-adds, counted by
  ``torch.utils.flop_counter`` on a meta-device copy, so on the padded tile the network really
  computes) times the number of tiles, including the overlap, divided by the time;
- "useful" GFLOP/s: the same FLOPs per voxel times the *output* voxels only (what a tiling
  without overlap would need);
- the practical limit: a large, well-shaped ``F.conv3d`` (32 -> 32 channels, 3x3x3, on a
  64 x 128 x 128 volume, inference mode), timed the same way;
- for ``--sweep-preset``, frames/s for several ``InferConfig.tile_t`` values with the tile
  plan's overlap share (voxels computed more than once / voxels computed).

Example::

    python benchmarks/bench_speed.py                       # all presets, tile_t sweep on 'paper'
    python benchmarks/bench_speed.py --presets fast --no-sweep --json speed.json
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import os
import platform
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from napari_unet_att.config import POST_STEPS, PRESETS, InferConfig
from napari_unet_att.inference import build_plan, denoise, resolve_tiles
from napari_unet_att.model import networks
from napari_unet_att.model.denoiser import Denoiser
from napari_unet_att.model.normalization import Normalization
from napari_unet_att.runtime.device import reuse_freed_memory


def make_stack(shape: Sequence[int] = (400, 128, 128), photons: float = 2.0, seed: int = 0) -> np.ndarray:
    """A uint16 ``(T, Y, X)`` stack: Poisson counts around a smooth pattern, plus a camera offset."""
    rng = np.random.default_rng(seed)
    t, y, x = shape
    yy, xx = np.mgrid[0:y, 0:x]
    pattern = 1.0 + 0.5 * np.sin(yy / 9.0) * np.cos(xx / 13.0)
    lam = photons * pattern[None] * (1.0 + 0.2 * np.sin(np.arange(t) / 20.0))[:, None, None]
    return (rng.poisson(lam) * 50 + 100).astype(np.uint16)


def machine_info() -> dict[str, Any]:
    """CPU model, cores, torch version and threads (for the report)."""
    model = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as fh:
            names = [ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")]
        model = names[0] if names else model
    except OSError:
        pass
    flags = ""
    try:
        with open("/proc/cpuinfo") as fh:
            line = next((ln for ln in fh if ln.startswith("flags")), "")
        flags = " ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_tile") if f in line.split())
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": model,
        "cpu_flags": flags,
        "cores": cores,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "load_avg": os.getloadavg(),
    }


def best_time(fn: Callable[[], Any], repeats: int) -> tuple[float, list[float]]:
    """Run ``fn`` ``repeats`` times; best wall time (the least disturbed by other processes) and all."""
    times = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times), times


def conv_limit(channels: int = 32, shape: Sequence[int] = (64, 128, 128), repeats: int = 3) -> dict[str, Any]:
    """GFLOP/s of one large 3x3x3 ``F.conv3d`` (the practical ceiling for these networks on this CPU).

    Both memory layouts are timed (contiguous and channels-last) and the faster one is the limit.
    Measured, like the engine's jobs, with freed memory kept in the heap
    (:func:`~napari_unet_att.runtime.device.reuse_freed_memory`): each call's output then does not
    page-fault, which would understate the limit.
    """
    with reuse_freed_memory(torch.device("cpu")):
        return _conv_limit(channels, shape, repeats)


def _conv_limit(channels: int, shape: Sequence[int], repeats: int) -> dict[str, Any]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, channels, *shape, generator=g)
    w = torch.randn(channels, channels, 3, 3, 3, generator=g) * 0.05
    b = torch.zeros(channels)
    flops = 2.0 * channels * channels * 27 * math.prod(shape)
    out: dict[str, Any] = {"channels": channels, "shape": list(shape), "gflop": flops / 1e9}
    for name, xi in (("contiguous", x), ("channels_last", x.contiguous(memory_format=torch.channels_last_3d))):
        with torch.inference_mode():
            F.conv3d(xi, w, b, padding=1)  # warm-up: oneDNN primitive creation
            best, _ = best_time(lambda xi=xi: F.conv3d(xi, w, b, padding=1), repeats)
        out[f"{name}_gflops"] = flops / best / 1e9
    out["limit_gflops"] = max(out["contiguous_gflops"], out["channels_last_gflops"])
    # Not the fp32 limit (the engine runs fp32 on CPU): what bf16 would allow on CPUs with AMX / AVX512-BF16.
    xb, wb = x.to(torch.bfloat16).contiguous(memory_format=torch.channels_last_3d), w.to(torch.bfloat16)
    with torch.inference_mode():
        F.conv3d(xb, wb, None, padding=1)
        best, _ = best_time(lambda: F.conv3d(xb, wb, None, padding=1), repeats)
    out["bf16_channels_last_gflops"] = flops / best / 1e9
    return out


class Bf16Net(torch.nn.Module):
    """Experiment only: runs a network in bfloat16 (weights and activations), float32 in and out.

    The engine's CPU path is float32 (``device.amp_dtype`` returns None on CPU, and the oneDNN
    fast path in ``networks.conv3d`` requires float32); this measures what bf16 would give.
    """

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = copy.deepcopy(net).to(torch.bfloat16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.to(torch.bfloat16)).float()


def bf16_experiment(stack: np.ndarray, preset: str, cfg: InferConfig, repeats: int) -> dict[str, Any]:
    """Frames/s of ``preset`` run in bf16, and its deviation from the float32 output.

    The deviation (on the first 64 frames) is the RMS difference divided by the standard
    deviation of the float32 output: a relative error of the denoised signal. With untrained
    weights this only indicates the size of bf16 rounding; a trained model must be re-checked.
    """
    den = make_denoiser(preset)
    den_bf = dataclasses.replace(den, net=Bf16Net(den.net))
    denoise(stack[:16], den_bf, cfg)
    best, times = best_time(lambda: denoise(stack, den_bf, cfg), repeats)
    part = stack[:64]  # the error on a part is enough, and cheap
    ref, out = denoise(part, den, cfg), denoise(part, den_bf, cfg)
    rel = float(np.sqrt(np.mean((out - ref) ** 2)) / max(np.std(ref), 1e-12))
    return {"preset": preset, "seconds": best, "all_seconds": times, "frames_per_s": stack.shape[0] / best,
            "rel_rms_error": rel}


def conv_flops(net: torch.nn.Module, tile: Sequence[int]) -> float:
    """Convolution FLOPs (2 x MACs) of one forward pass on a ``(1, 1, *tile)`` input.

    Counted on a meta-device copy (no compute, no memory): the network's own padding applies,
    so this is the work it really does on that tile. On the meta device the networks take the
    plain ``nn.Conv3d`` path, which the counter sees as ``aten.convolution``.
    """
    meta = copy.deepcopy(net).to("meta").eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        meta(torch.empty((1, 1, *tile), device="meta"))
    total = counter.get_flop_counts().get("Global", {})
    return float(sum(v for k, v in total.items() if "convolution" in str(k)))


def plan_stats(shape: Sequence[int], denoiser: Denoiser, cfg: InferConfig) -> dict[str, Any]:
    """Tile plan of :func:`infer.denoise` for ``shape``: tile, overlap, count, overlap share.

    An automatic ``tile_t`` (None) is resolved exactly as ``iter_denoise`` does.
    """
    cfg = resolve_tiles(shape, denoiser, cfg, torch.device("cpu"))
    plan = build_plan(shape, cfg, denoiser.arch)  # the tiles and overlaps the job uses
    tile, overlap, tiles = plan.tile, plan.overlap, plan.tiles
    computed = len(tiles) * math.prod(tile)
    return {
        "tile_t": cfg.tile_t,
        "tile": list(tile),
        "overlap": list(overlap),
        "n_tiles": len(tiles),
        "overlap_share": 1.0 - math.prod(shape) / computed,
    }


def profile_forward(preset: str, tile: Sequence[int] = (128, 128, 128), top: int = 10) -> dict[str, Any]:
    """Where one forward pass on a default tile spends its time: self CPU time per aten op (torch.profiler)."""
    net = make_denoiser(preset).net.eval()
    x = torch.randn(1, 1, *tile)
    with torch.inference_mode():
        net(x[:, :, :16])  # warm-up
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            t0 = time.perf_counter()
            net(x)
            seconds = time.perf_counter() - t0
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    ops = [{"op": e.key, "share": e.self_cpu_time_total / total, "calls": e.count} for e in events[:top]]
    return {"preset": preset, "tile": list(tile), "seconds": seconds,
            "gflops": conv_flops(net, tile) / seconds / 1e9, "ops": ops}


def parse_tile_spec(spec: str | int) -> tuple[int | None, int | None]:
    """``'256'`` -> (256, None) (default overlap); ``'256:32'`` -> (256, 32); ``'auto'`` -> (None, None)."""
    parts = str(spec).split(":")
    tile = None if parts[0] == "auto" else int(parts[0])
    return tile, (int(parts[1]) if len(parts) > 1 else None)


def make_denoiser(preset: str, seed: int = 0) -> Denoiser:
    """An untrained network of ``preset`` wrapped as a Denoiser (speed does not depend on weights)."""
    torch.manual_seed(seed)
    p = PRESETS[preset]
    net = networks.build_network(p.arch, p.base_channels)
    return Denoiser(net, p.arch, p.base_channels, preset, "temporal", Normalization(200.0, 70.0))


def time_denoise(stack: np.ndarray, den: Denoiser, cfg: InferConfig, repeats: int) -> dict[str, Any]:
    """Frames/s and GFLOP/s of ``infer.denoise`` on ``stack`` with ``cfg``."""
    plan = plan_stats(stack.shape, den, cfg)
    tile = plan["tile"]
    per_tile = conv_flops(den.net, tile)
    padded = math.prod(networks.padded_size(n, den.arch) for n in tile)
    # A short warm-up (thread pool, allocator, oneDNN start-up); a full-size one would double the
    # cost of single-tile plans, and per-shape primitive creation is milliseconds against minutes.
    denoise(stack[:16], den, cfg)
    best, times = best_time(lambda: denoise(stack, den, cfg), repeats)
    total = per_tile * plan["n_tiles"]
    useful = per_tile / padded * math.prod(stack.shape)
    return {
        **plan,
        "seconds": best,
        "all_seconds": times,
        "frames_per_s": stack.shape[0] / best,
        "gflop_per_tile": per_tile / 1e9,
        "gflop_total": total / 1e9,
        "gflops": total / best / 1e9,
        "useful_gflops": useful / best / 1e9,
    }


def run(
    presets: Sequence[str],
    shape: Sequence[int],
    repeats: int,
    sweep_preset: str | None,
    sweep_tiles: Sequence[str],
    limit_repeats: int = 3,
    bf16_presets: Sequence[str] = (),
) -> dict[str, Any]:
    """The whole benchmark; returns a JSON-ready dict (also printed as tables)."""
    torch.set_num_threads(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
    info = machine_info()
    print(f"machine: {info['cpu']} ({info['cpu_flags']}), {info['cores']} cores, torch {info['torch']}, "
          f"{info['threads']} threads, load {info['load_avg'][0]:.1f}")
    limit = conv_limit(repeats=limit_repeats)
    print(f"conv3d limit ({limit['channels']}->{limit['channels']}, 3x3x3, {'x'.join(map(str, limit['shape']))}): "
          f"{limit['contiguous_gflops']:.1f} GFLOP/s contiguous, {limit['channels_last_gflops']:.1f} channels-last "
          f"(bf16 channels-last: {limit['bf16_channels_last_gflops']:.1f})")
    stack = make_stack(shape)
    # DeepCAD-RT's network is this project's 'unet3d' (f = 16): its FLOPs per test patch, for the report.
    unet3d = make_denoiser("unet3d").net
    result: dict[str, Any] = {"machine": info, "shape": list(shape), "repeats": repeats, "conv_limit": limit,
                              "presets": {}, "sweep": None,
                              "unet3d_gflop_per_patch": {str(n): conv_flops(unet3d, (n, n, n)) / 1e9 for n in (64,)}}
    # the tiled network pass alone: the costs of the output smoothing (calibration, filter), the frame
    # registration (estimation), the time averages (two passes over the output), the strips and the line phase are
    # measured on their own by benchmarks/experiments/inference_cost.py, and on an untrained network the smoothing's
    # choice would mean nothing
    cfg = InferConfig(device="cpu", **POST_STEPS)  # (every step around the network pass off)
    print(f"\nstack {'x'.join(map(str, shape))} uint16, InferConfig defaults, every step around the network pass off "
          f"(tile_t={cfg.tile_t}), "
          f"best of {repeats}")
    print(f"{'preset':8} {'tile_t':>6} {'tiles':>5} {'overlap%':>8} {'frames/s':>9} {'GFLOP/s':>8} {'useful':>7} "
          f"{'% limit':>7}")
    # This machine's speed drifts by 10-20% over minutes (a shared host), so each preset is held
    # against the limit timed just before and just after it, the larger of the two: '% limit'
    # then errs low rather than high. The limit reported is the largest of all.
    before = limit["limit_gflops"]
    for name in presets:
        r = time_denoise(stack, make_denoiser(name), cfg, repeats)
        after = conv_limit(repeats=limit_repeats)["limit_gflops"]
        r["limit_gflops"] = max(before, after)
        r["pct_limit"] = 100.0 * r["gflops"] / r["limit_gflops"]
        limit["limit_gflops"] = max(limit["limit_gflops"], after)
        before = after
        result["presets"][name] = r
        print(f"{name:8} {r['tile_t']:6d} {r['n_tiles']:5d} {100 * r['overlap_share']:8.1f} {r['frames_per_s']:9.2f} "
              f"{r['gflops']:8.1f} {r['useful_gflops']:7.1f} {r['pct_limit']:7.1f}  (limit {r['limit_gflops']:.1f})")
    if sweep_preset:
        den = make_denoiser(sweep_preset)
        rows = []
        print(f"\ntile_t sweep, preset {sweep_preset}")
        print(f"{'tile_t':>6} {'tiles':>5} {'overlap':>7} {'overlap%':>8} {'frames/s':>9} {'GFLOP/s':>8} {'useful':>7}")
        for spec in sweep_tiles:
            tt, ov = parse_tile_spec(spec)
            done = result["presets"].get(sweep_preset)
            if done is not None and ov is None and tt in (None, done["tile_t"]):
                r = dict(result["presets"][sweep_preset])  # already timed above with the same settings
            else:
                r = time_denoise(stack, den, dataclasses.replace(cfg, tile_t=tt, overlap=ov), repeats)
            r["spec"], r["requested_overlap"] = str(spec), ov
            rows.append(r)
            print(f"{spec:>6} {r['n_tiles']:5d} {r['overlap'][0]:7d} {100 * r['overlap_share']:8.1f} "
                  f"{r['frames_per_s']:9.2f} {r['gflops']:8.1f} {r['useful_gflops']:7.1f}")
        result["sweep"] = {"preset": sweep_preset, "rows": rows}
    result["bf16"] = []
    for name in bf16_presets:
        r = bf16_experiment(stack, name, cfg, repeats)
        result["bf16"].append(r)
        print(f"bf16 experiment, {name}: {r['frames_per_s']:.2f} frames/s, relative RMS error vs float32 "
              f"{r['rel_rms_error']:.2e}")
    result["load_avg_after"] = os.getloadavg()
    return result


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--presets", nargs="+", default=list(PRESETS), choices=list(PRESETS))
    ap.add_argument("--shape", nargs=3, type=int, default=[400, 128, 128], metavar=("T", "Y", "X"))
    ap.add_argument("--repeats", type=int, default=1, help="full timed runs per setting; the best is kept")
    ap.add_argument("--sweep-preset", default="paper", choices=list(PRESETS))
    ap.add_argument("--sweep-tiles", nargs="+", default=["auto", "64", "128", "256", "400", "256:32"],
                    help="tile_t values ('auto': the memory-budget choice), or tile_t:overlap to override the "
                    "receptive-field overlap")
    ap.add_argument("--no-sweep", action="store_true")
    ap.add_argument("--bf16", nargs="*", default=[], choices=list(PRESETS),
                    help="also time these presets with the network in bfloat16 (an experiment, not the engine)")
    ap.add_argument("--profile-only", metavar="PRESET", choices=list(PRESETS),
                    help="only profile one forward pass of PRESET on a 128^3 tile (op time shares)")
    ap.add_argument("--json", help="also write the results to this JSON file")
    args = ap.parse_args(argv)
    if args.profile_only:
        res = profile_forward(args.profile_only)
        print(f"{args.profile_only}: forward on {res['tile']} in {res['seconds']:.2f} s, {res['gflops']:.1f} GFLOP/s")
        for o in res["ops"]:
            print(f"  {o['op']:32} {100 * o['share']:5.1f}%  ({o['calls']} calls)")
        if args.json:
            with open(args.json, "w") as fh:
                json.dump(res, fh, indent=1)
        return res
    res = run(args.presets, args.shape, args.repeats, None if args.no_sweep else args.sweep_preset, args.sweep_tiles,
              bf16_presets=args.bf16)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res, fh, indent=1)
    return res


if __name__ == "__main__":
    main()
