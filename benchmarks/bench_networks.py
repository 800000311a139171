"""Forward-pass speed of the denoising networks on CPU (or any device).

Times ``net(x)`` under ``torch.inference_mode()`` on ``(1, 1, T, 128, 128)`` tiles for several
T, base channel counts and both architectures, and prints frames/s, parameter counts and the
achieved GFLOP/s next to the throughput of one well-shaped plain conv3d on the same machine
(an attainable ceiling for this workload, not the CPU's peak).

Multiply-adds are counted with forward hooks on every ``Conv3d`` (out voxels x C_in x kernel
volume; pooling, interpolation and element-wise ops are left out: they are < 3 % of the work).
GFLOP/s = 2 x multiply-adds / seconds.

Shared machines: next to wall-clock rates the script prints CPU-time rates
(frames / (process CPU seconds / threads)), which are what an otherwise idle machine with the
same number of cores would roughly reach; compare variants on those when the load average
is above the core count.

Usage::

    python benchmarks/bench_networks.py                      # full grid (a few minutes on 2 cores)
    python benchmarks/bench_networks.py --t 32 --f 8 16 --arch unet_att --variants fast baseline
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import torch
from torch import nn

from napari_unet_att.model import networks
from napari_unet_att.model.networks import build_network, count_parameters

VARIANTS = ("fast", "fast_ncdhw_w", "baseline")
VARIANT_HELP = {
    "fast": "package default: oneDNN called directly, channels-last activations and weights, 1x1x1 convs as matmuls",
    "fast_ncdhw_w": "as fast, but conv weights in the default NCDHW layout (reordered on every call)",
    "baseline": "plain module calls: F.conv3d's own CPU kernel choice, NCDHW",
}


def count_macs(net: nn.Module, shape: tuple[int, ...]) -> int:
    """Multiply-adds of all Conv3d layers for one forward pass on a zero tensor of ``shape``."""
    total = 0

    def hook(m: nn.Conv3d, _inp: tuple, out: torch.Tensor) -> None:
        nonlocal total
        k = m.kernel_size[0] * m.kernel_size[1] * m.kernel_size[2]
        total += out.numel() * (m.in_channels // m.groups) * k

    plain = net.without_cpu_fast_path()  # module calls, so the hooks fire
    for m in plain.modules():
        if isinstance(m, nn.Conv3d):
            m.register_forward_hook(hook)
    with torch.inference_mode():
        plain(torch.zeros(shape))
    return total


def time_call(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Best wall-clock and best process-CPU seconds of ``fn`` over ``repeats`` runs (after one warm-up)."""
    fn()
    walls, cpus = [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    return min(walls), min(cpus)


def conv_ceiling(repeats: int) -> tuple[float, float]:
    """GFLOP/s (wall, CPU-time-normalised) of a 32 -> 32, 3x3x3 conv on a (1, 32, 32, 64, 64) tensor."""
    x = torch.randn(1, 32, 32, 64, 64).contiguous(memory_format=torch.channels_last_3d)
    conv = nn.Conv3d(32, 32, 3, padding=1)
    flops = 2 * 32 * 32 * 27 * 32 * 64 * 64
    with torch.inference_mode():
        wall, cpu = time_call(lambda: networks.conv3d(x, conv), repeats)
    threads = torch.get_num_threads()
    return flops / wall / 1e9, flops / (cpu / threads) / 1e9


def run_variant(arch: str, f: int, t: int, variant: str, repeats: int) -> dict[str, float]:
    net = build_network(arch, f).eval()
    if variant in ("baseline", "fast_ncdhw_w"):
        net = net.to(memory_format=torch.contiguous_format)  # undo the networks' channels-last weights
    x = torch.randn(1, 1, t, 128, 128)
    net.set_cpu_fast_path(variant != "baseline")
    with torch.inference_mode():
        wall, cpu = time_call(lambda: net(x), repeats)
    threads = torch.get_num_threads()
    macs = count_macs(net, tuple(x.shape))
    return {
        "fps": t / wall,
        "fps_cpu": t / (cpu / threads),
        "gflops": 2 * macs / wall / 1e9,
        "gflops_cpu": 2 * macs / (cpu / threads) / 1e9,
        "kmac_per_voxel": macs / x.numel() / 1e3,
        "params": count_parameters(net),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", nargs="+", default=list(networks.ARCHS), choices=networks.ARCHS)
    ap.add_argument("--f", nargs="+", type=int, default=[4, 8, 12, 16], help="base channel counts")
    ap.add_argument("--t", nargs="+", type=int, default=[32, 64, 128], help="frames per tile")
    ap.add_argument("--variants", nargs="+", default=["fast"], choices=VARIANTS)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores of this process)")
    args = ap.parse_args(argv)

    n = args.threads or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    torch.set_num_threads(n)
    onednn = torch.backends.mkldnn.is_available()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, oneDNN {onednn}")
    print(f"load average at start: {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else "")
    for v in args.variants:
        print(f"  {v}: {VARIANT_HELP[v]}")
    ceil_wall, ceil_cpu = conv_ceiling(args.repeats)
    print(f"plain conv3d 32->32 k3 on (1,32,32,64,64): {ceil_wall:.1f} GFLOP/s wall, {ceil_cpu:.1f} CPU-time")
    head = f"{'arch':9s} {'f':>3s} {'T':>4s} {'variant':9s} {'params':>10s} {'kMAC/vox':>9s} "
    head += f"{'fps':>7s} {'fps_cpu':>8s} {'GFLOP/s':>8s} {'%ceil':>6s}"
    print(head)
    for arch in args.arch:
        for f in args.f:
            for t in args.t:
                for v in args.variants:
                    r = run_variant(arch, f, t, v, args.repeats)
                    print(
                        f"{arch:9s} {f:3d} {t:4d} {v:9s} {r['params']:10,d} {r['kmac_per_voxel']:9.1f} "
                        f"{r['fps']:7.2f} {r['fps_cpu']:8.2f} {r['gflops_cpu']:8.1f} "
                        f"{100 * r['gflops_cpu'] / ceil_cpu:5.0f}%",
                        flush=True,
                    )
    if hasattr(os, "getloadavg"):
        print(f"load average at end: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
