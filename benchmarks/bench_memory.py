"""Peak memory of file-to-file denoising versus file size (issue: scale/speed).

Writes uint16 TIFF recordings chunk by chunk (never whole in RAM; ``tifffile.memmap``), then
denoises each with :func:`napari_unet_att.inference.files.denoise_file` in a fresh subprocess and reports
that process's memory:

- ``peak RSS``: ``VmHWM`` (= ``ru_maxrss``, what ``/usr/bin/time -v`` reports as "Maximum
  resident set size"), everything the process ever had resident, including file pages it has
  mapped (shared libraries, and any mapped part of the input / output files: the engine reads
  the input with positioned reads and drops written output frames from its mapping, so these
  should stay small);
- ``peak anon`` / ``peak file``: the largest ``RssAnon`` / ``RssFile`` seen by a 50 ms sampler
  thread: the process's own memory (arrays, tensors, the Python heap) and its mapped file pages;
- ``baseline``: RSS after imports and model creation, before denoising (interpreter + torch + model).

Networks: ``standin`` is a 3x3x3 mean filter with the :class:`~napari_unet_att.model.denoiser.Denoiser`
interface and ``arch='unet_att'`` (so the tile plan, reads, blending and rolling accumulator are
exactly those of a UNet-Att model; only the network's own activations are missing): the
machinery alone, quickly. A preset name (``fast``, ``unet3d``, ...) runs that real, untrained
network (speed and memory do not depend on the weights); ``unet3d`` on 128 x 128 frames
denoises a 2 GB file in about half an hour on 2 cores.

Example::

    python benchmarks/bench_memory.py --dir /tmp --json mem.json
    python benchmarks/bench_memory.py --runs standin:16000 standin:4000 fast:160
    python benchmarks/bench_memory.py --runs unet3d:16000:128 unet3d:64000:128   # real network, 0.5 and 2 GB
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

MiB = 1024 * 1024


def write_tiff(path: Path, frames: int, size: int, chunk: int = 500, seed: int = 0) -> int:
    """Write a ``(frames, size, size)`` uint16 TIFF in chunks of ``chunk`` frames; returns its size in bytes."""
    import tifffile

    rng = np.random.default_rng(seed)
    mm = tifffile.memmap(path, shape=(frames, size, size), dtype=np.uint16, bigtiff=True, photometric="minisblack")
    for t0 in range(0, frames, chunk):
        n = min(chunk, frames - t0)
        mm[t0 : t0 + n] = (rng.poisson(2.0, size=(n, size, size)) * 50 + 100).astype(np.uint16)
        mm.flush()
    del mm
    return path.stat().st_size


# --------------------------------------------------------------------------- child process


def _status_kib(field: str) -> int:
    """A ``kB`` field of /proc/self/status (0 where it is missing)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


class _Sampler(threading.Thread):
    """Samples RssAnon / RssFile every ``interval`` seconds and keeps the peaks."""

    def __init__(self, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.peak_anon = self.peak_file = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.peak_anon = max(self.peak_anon, _status_kib("RssAnon"))
            self.peak_file = max(self.peak_file, _status_kib("RssFile"))
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def make_net(kind: str) -> Any:
    """The :class:`Denoiser` to run: the stand-in mean filter or a real preset network."""
    import torch

    from napari_unet_att.config import PRESETS
    from napari_unet_att.model import networks
    from napari_unet_att.model.denoiser import Denoiser
    from napari_unet_att.model.normalization import Normalization

    norm = Normalization(200.0, 70.0)
    if kind == "standin":
        net = torch.nn.Conv3d(1, 1, 3, padding=1, padding_mode="replicate", bias=False)
        torch.nn.init.constant_(net.weight, 1.0 / 27)
        return Denoiser(net, "unet_att", 8, "standin", "temporal", norm)
    torch.manual_seed(0)
    p = PRESETS[kind]
    return Denoiser(networks.build_network(p.arch, p.base_channels), p.arch, p.base_channels, kind, "temporal", norm)


def child(in_path: str, out_path: str, kind: str, output_dtype: str, smoothing: str = "auto") -> None:
    """Denoise ``in_path`` to ``out_path`` and print one JSON line with the memory figures."""
    from napari_unet_att.cli_args import smoothing_arg
    from napari_unet_att.config import InferConfig
    from napari_unet_att.inference.files import denoise_file

    den = make_net(kind)
    baseline = _status_kib("VmRSS")
    sampler = _Sampler()
    sampler.start()
    t0 = time.perf_counter()
    def progress(ev: Any) -> None:  # on stderr, so a long run can be followed
        if ev.done == ev.total or ev.done % 25 == 0:
            print(f"tile {ev.done}/{ev.total}, {ev.frames_per_s:.1f} frames/s", file=sys.stderr, flush=True)

    cfg = InferConfig(device="cpu", output_dtype=output_dtype, smoothing=smoothing_arg(smoothing))
    denoise_file(in_path, out_path, den, cfg, progress=progress)
    seconds = time.perf_counter() - t0
    sampler.stop()
    print("CHILD " + json.dumps({
        "baseline_mib": baseline / 1024,
        "peak_rss_mib": _status_kib("VmHWM") / 1024,
        "ru_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_anon_mib": sampler.peak_anon / 1024,
        "peak_file_mib": sampler.peak_file / 1024,
        "seconds": seconds,
    }), flush=True)


# --------------------------------------------------------------------------- parent


def measure(kind: str, frames: int, size: int, workdir: Path, output_dtype: str, smoothing: str = "auto"
            ) -> dict[str, Any]:
    """Write the input, denoise it in a subprocess (under ``/usr/bin/time -v`` when present), delete both files."""
    src, dst = workdir / f"in_{kind}_{frames}.tif", workdir / f"out_{kind}_{frames}.tif"
    try:
        t0 = time.perf_counter()
        nbytes = write_tiff(src, frames, size)
        write_s = time.perf_counter() - t0
        cmd = [sys.executable, os.path.abspath(__file__), "--child", str(src), str(dst), kind, output_dtype, smoothing]
        timefile = workdir / "time-v.txt"
        timer = ["/usr/bin/time", "-v", "-o", str(timefile)] if os.path.exists("/usr/bin/time") else []
        # stderr is inherited: the child's progress lines show up live
        proc = subprocess.run(timer + cmd, stdout=subprocess.PIPE, text=True, check=False)
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("CHILD ")), None)
        if proc.returncode != 0 or line is None:
            raise RuntimeError(f"the denoising subprocess failed ({proc.returncode}); its errors are above")
        res = json.loads(line[6:])
        report = timefile.read_text() if timefile.exists() else ""
        timefile.unlink(missing_ok=True)
        for ln in report.splitlines():  # GNU time's own figure, as a cross-check
            if "Maximum resident set size" in ln:
                res["time_v_maxrss_mib"] = int(ln.rsplit(":", 1)[1]) / 1024
        res.update({"net": kind, "shape": [frames, size, size], "file_mib": nbytes / MiB,
                    "out_file_mib": dst.stat().st_size / MiB if dst.exists() else None, "write_s": write_s,
                    "output_dtype": output_dtype, "smoothing": smoothing})
        return res
    finally:
        for p in (src, dst):
            p.unlink(missing_ok=True)


def parse_run(spec: str, size: int) -> tuple[str, int, int]:
    """``'standin:16000'`` -> ('standin', 16000, size); ``'unet3d:64000:128'`` -> ('unet3d', 64000, 128)."""
    kind, frames, *rest = spec.split(":")
    return kind, int(frames), int(rest[0]) if rest else size


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", nargs="+", default=["standin:4000", "standin:16000", "fast:160"],
                    help="net:frames[:size] runs; net is 'standin' or a preset name, size defaults to --size")
    ap.add_argument("--size", type=int, default=256, help="frame rows = columns")
    ap.add_argument("--dir", default=tempfile.gettempdir(), help="where the temporary TIFFs go (deleted after)")
    ap.add_argument("--output-dtype", default="input", choices=["input", "float32"],
                    help="'input' keeps the output uint16 (same size as the input file)")
    ap.add_argument("--json", help="also write the results to this JSON file")
    ap.add_argument("--smoothing", default="auto",
                    help="the output smoothing (auto, off, or T,XY: e.g. 8,0.5 for the largest kernel 'auto' picks)")
    ap.add_argument("--child", nargs=5, metavar=("IN", "OUT", "NET", "DTYPE", "SMOOTHING"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(*args.child)
        return {}
    workdir = Path(tempfile.mkdtemp(prefix="unet-att-mem-", dir=args.dir))
    rows = []
    print(f"{'net':8} {'shape':>16} {'file MiB':>9} {'baseline':>9} {'peak RSS':>9} {'peak anon':>9} "
          f"{'peak file':>9} {'s':>7}")
    try:
        for spec in args.runs:
            kind, frames, size = parse_run(spec, args.size)
            r = measure(kind, frames, size, workdir, args.output_dtype, args.smoothing)
            rows.append(r)
            print(f"{kind:8} {'x'.join(map(str, r['shape'])):>16} {r['file_mib']:9.0f} {r['baseline_mib']:9.0f} "
                  f"{r['peak_rss_mib']:9.0f} {r['peak_anon_mib']:9.0f} {r['peak_file_mib']:9.0f} "
                  f"{r['seconds']:7.1f}", flush=True)
    finally:
        workdir.rmdir() if not any(workdir.iterdir()) else None
    res = {"rows": rows, "size": args.size, "output_dtype": args.output_dtype}
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res, fh, indent=1)
    return res


if __name__ == "__main__":
    main()
