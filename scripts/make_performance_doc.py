"""Run the performance benchmarks and write ``docs/performance.md`` (issue: scale/speed).

Each benchmark runs as its own subprocess and leaves a JSON file in ``--results``; the page is
rendered from those files, so a benchmark that already ran can be reused (``--reuse``) and the
page re-rendered without recomputing (``--only`` with nothing, i.e. ``--only none``).

Examples::

    python scripts/make_performance_doc.py                      # everything (~30 min on 2 busy cores)
    python scripts/make_performance_doc.py --only speed deepcad  # just these two, then render
    python scripts/make_performance_doc.py --only none           # re-render from the saved JSON files

DeepCAD-RT runs in its own virtual environment (``--deepcad-python``), never the project's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
DEFAULT_RESULTS = Path(os.environ.get("TMPDIR", "/tmp")) / "napari-unet-att-perf"
DEEPCAD_PY = "/work/peers/deepcad-venv/bin/python"
DDP_HEADING = "## Multi-process (DDP) training scaling"

#: name -> (command, JSON file); ``{py}``, ``{json}``, ``{tmp}`` and ``{deepcad}`` are filled in.
BENCHMARKS: dict[str, list[str]] = {
    "speed": ["{py}", str(BENCH / "bench_speed.py"), "--repeats", "2", "--sweep-preset", "fast", "--bf16", "paper",
              "fast", "--json", "{json}"],
    "profile": ["{py}", str(BENCH / "bench_speed.py"), "--profile-only", "fast", "--json", "{json}"],
    "deepcad": ["{deepcad}", str(BENCH / "peers" / "run_deepcad.py"), "--frames", "400", "--size", "128"],
    "train": ["{py}", str(BENCH / "bench_train_speed.py"), "--steps", "3", "--json", "{json}"],
    "memory": ["{py}", str(BENCH / "bench_memory.py"), "--dir", "{tmp}", "--runs", "fast:16000:128",
               "fast:64000:128", "--json", "{json}"],
}


def run_benchmark(name: str, results: Path, py: str, deepcad: str, tmp: str) -> None:
    """Run one benchmark; its JSON lands in ``results/<name>.json`` and its output in ``<name>.log``."""
    out = results / f"{name}.json"
    cmd = [a.format(py=py, json=out, tmp=tmp, deepcad=deepcad) for a in BENCHMARKS[name]]
    print("$ " + " ".join(cmd), flush=True)
    log = results / f"{name}.log"
    with open(log, "w") as fh:  # streamed, so a long run can be followed with tail -f
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, text=True, cwd=ROOT, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed ({proc.returncode}); see {log}")
    if name == "deepcad":  # the peer prints its result as one line (it cannot import our code)
        text = log.read_text().replace("\r", "\n")
        line = next(ln for ln in text.splitlines() if ln.startswith("RESULT "))
        out.write_text(line[len("RESULT "):])


def load(results: Path, name: str) -> dict[str, Any] | None:
    path = results / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


# --------------------------------------------------------------------------- rendering


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" if i else "---" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _load_note(d: dict[str, Any]) -> str:
    before, after = d.get("machine", d).get("load_avg", d.get("load_avg")), d.get("load_avg_after")
    if not before:
        return ""
    s = f"1-min load average {before[0]:.1f} at the start"
    return s + (f", {after[0]:.1f} at the end" if after else "")


def render_machine(speed: dict[str, Any] | None, train: dict[str, Any] | None) -> str:
    m = (speed or train or {}).get("machine")
    if not m:
        return "## Machine\n\nNo benchmark results found.\n"
    return (
        "## Machine\n\n"
        f"- CPU: {m['cpu']} ({m['cores']} cores available; instruction sets: {m.get('cpu_flags') or 'n/a'})\n"
        f"- torch {m['torch']}, {m['threads']} intra-op threads, Python {m['python']}\n"
        "- The 1-minute load average at the start and end of each benchmark is given with its table: a load\n"
        "  above the core count means other jobs shared the CPU and the absolute numbers are pessimistic (the\n"
        "  ratios between rows measured back to back hold better). Every time is the best of the runs made.\n"
    )


def render_speed(speed: dict[str, Any], deepcad: dict[str, Any] | None) -> str:
    lim = speed["conv_limit"]
    shape = "x".join(map(str, speed["shape"]))
    out = [
        "## Inference speed (CPU)",
        "",
        "`python benchmarks/bench_speed.py --repeats 2 --sweep-preset fast --bf16 paper fast` : "
        f"untrained networks (speed does not depend on the "
        f"weights) denoise a {shape} uint16 stack with `inference.denoise` and the default `InferConfig`, output "
        "smoothing, frame registration and time averages off (their costs: docs/benchmarks.md, tenth to twelfth "
        "sessions, `benchmarks/experiments/inference_cost.py`) "
        "(automatic tiles from the 1 GB memory budget, `inference.tiles.resolve_tiles`: whole 128 x 128 frames here, "
        "overlap = receptive field capped at half a tile on split axes). "
        f"{_load_note(speed)}.",
        "",
        f"Practical limit: one `F.conv3d` {lim['channels']} -> {lim['channels']} channels, 3x3x3, on "
        f"{'x'.join(map(str, lim['shape']))} voxels under `inference_mode`: **{lim['limit_gflops']:.1f} GFLOP/s** "
        f"(contiguous {lim['contiguous_gflops']:.1f}, channels-last {lim['channels_last_gflops']:.1f}; "
        f"bfloat16 channels-last, for reference: {lim['bf16_channels_last_gflops']:.1f})"
        "; the largest of the timings made before and after each preset, whose '% of conv3d limit' is against "
        "the larger of the two timed next to it (*limit* column): this shared machine's speed drifts by 10-20% "
        "over minutes.",
        "",
        "GFLOP/s counts convolution FLOPs (2 x multiply-adds, `torch.utils.flop_counter` on the padded tile) of "
        "every tile including overlaps; *useful* counts only the output voxels (what a tiling without overlap "
        "would compute).",
        "",
    ]
    rows = []
    for name, r in speed["presets"].items():
        rows.append([name, r.get("tile_t", ""), r["n_tiles"], f"{100 * r['overlap_share']:.0f}%",
                     f"{r['frames_per_s']:.2f}", f"{r['gflops']:.1f}", f"{r['useful_gflops']:.1f}",
                     f"{r['pct_limit']:.0f}%", f"{r['limit_gflops']:.1f}" if "limit_gflops" in r else ""])
    if deepcad:
        d = deepcad["as_shipped"]
        per_patch = speed.get("unet3d_gflop_per_patch", {}).get(str(deepcad["patch"]))
        gfs = f"{deepcad['n_patches'] * per_patch / d['seconds']:.1f}" if per_patch else ""
        pct = f"{100 * float(gfs) / lim['limit_gflops']:.0f}%" if gfs else ""
        n, t, p = deepcad["n_patches"], deepcad["frames"], deepcad["patch"]
        share = f"{100 * (1 - t * deepcad['shape'][1] * deepcad['shape'][2] / (n * p**3)):.0f}%"
        rows.append([f"DeepCAD-RT 1.2.0 ({p}^3 patches, overlap {deepcad['overlap']})", p, n, share,
                     f"{d['frames_per_s']:.2f}", gfs, "", pct, ""])
    out.append(_table(["preset", "tile_t", "tiles", "overlap share", "frames/s", "GFLOP/s", "useful GFLOP/s",
                       "% of conv3d limit", "limit GFLOP/s"], rows))
    if deepcad:
        d = deepcad["as_shipped"]["frames_per_s"]
        out += ["", f"DeepCAD-RT: `{DEEPCAD_PY} benchmarks/peers/run_deepcad.py --frames 400 --size 128` "
                f"(its own `testing_class.test()`: tiling, network, stitching and TIFF output, with autograd on as "
                f"shipped; `.cuda()` made a no-op; {_load_note(deepcad)}; overlap share = voxels computed more "
                "than once by its 64^3 tiling). Ratio to DeepCAD-RT: "
                + ", ".join(f"{n} {r['frames_per_s'] / d:.2f}x" for n, r in speed["presets"].items()) + "."]
    if speed.get("sweep"):
        sw = speed["sweep"]
        out += ["", f"### Tile length (preset `{sw['preset']}`)", "",
                "`InferConfig(tile_t=...)`; `auto` is the default (tile_t = None: the plan that fits the memory "
                "budget); `a:b` means tile_t = a with `overlap=b` instead of the receptive field.",
                ""]
        rows = []
        for r in sw["rows"]:
            spec = r.get("spec", str(r["tile_t"]))
            spec = f"auto ({r['tile_t']})" if spec == "auto" else spec
            rows.append([spec, r["n_tiles"], r["overlap"][0], f"{100 * r['overlap_share']:.0f}%",
                         f"{r['frames_per_s']:.2f}", f"{r['gflops']:.1f}", f"{r['useful_gflops']:.1f}"])
        out.append(_table(["tile_t", "tiles", "t overlap", "overlap share", "frames/s", "GFLOP/s", "useful GFLOP/s"],
                          rows))
    if speed.get("bf16"):
        out += ["", "### bfloat16 experiment", "",
                "Not what the engine does (its CPU path is float32): the same network cast to bfloat16 "
                "(`Bf16Net` in bench_speed.py), float32 in and out. The error is the RMS difference from the "
                "float32 output over its standard deviation, with *untrained* weights (a trained model must be "
                "re-checked for quality).", ""]
        rows = []
        for r in speed["bf16"]:
            fp32 = speed["presets"].get(r["preset"], {}).get("frames_per_s")
            rows.append([r["preset"], f"{fp32:.2f}" if fp32 else "", f"{r['frames_per_s']:.2f}",
                         f"{r['frames_per_s'] / fp32:.2f}x" if fp32 else "", f"{r['rel_rms_error']:.1e}"])
        out.append(_table(["preset", "float32 frames/s", "bf16 frames/s", "speed-up", "relative RMS error"], rows))
    return "\n".join(out) + "\n"


def render_profile(prof: dict[str, Any]) -> str:
    rows = [[f"`{o['op']}`", f"{100 * o['share']:.1f}%", o["calls"]] for o in prof["ops"]]
    return "\n".join([
        f"### Where a forward pass spends its time (preset `{prof['preset']}`)", "",
        f"`python benchmarks/bench_speed.py --profile-only {prof['preset']}` : one forward pass on a "
        f"{'x'.join(map(str, prof['tile']))} tile, {prof['seconds']:.1f} s ({prof['gflops']:.1f} GFLOP/s), "
        "self CPU time per op (`torch.profiler`).", "",
        _table(["op", "share of time", "calls"], rows),
    ]) + "\n"


def render_targets(
    speed: dict[str, Any], deepcad: dict[str, Any] | None, prof: dict[str, Any] | None, mem: dict[str, Any] | None
) -> str:
    """The issue's targets, checked against the numbers, and what would close the gaps."""
    pr, lim = speed["presets"], speed["conv_limit"]["limit_gflops"]
    out = ["## Targets", ""]
    rows = []
    if deepcad:
        d = deepcad["as_shipped"]["frames_per_s"]
        for name, need in (("fast", 2.0), ("paper", 1.0)):
            if name in pr:
                got = pr[name]["frames_per_s"] / d
                close = "**not met** (within noise)" if got >= 0.95 * need else "**not met**"
                verdict = "met" if got >= need else close
                rows.append([f"`{name}` frames/s >= {need:g} x DeepCAD-RT", f"{got:.3f} x", verdict])
    if "paper" in pr:
        got = pr["paper"]["pct_limit"]
        rows.append(["`paper` GFLOP/s >= 60% of the conv3d limit", f"{got:.1f}%",
                     "met" if got >= 60 else "**not met**"])
    mem_rows = (mem or {}).get("rows", [])
    for r in [r for r in mem_rows if sum(q["net"] == r["net"] for q in mem_rows) > 1]:  # nets run at 2+ sizes
        above = r["peak_rss_mib"] - r["baseline_mib"]  # baseline = interpreter + torch + model
        # Read strictly: the whole process (interpreter, torch, model, file pages) under 1.5e9 bytes.
        rows.append([f"peak RSS < 1.5 GB + model, any file size ({r['file_mib']:.0f} MiB file, `{r['net']}`)",
                     f"peak RSS {r['peak_rss_mib']:.0f} MiB = {r['peak_rss_mib'] * 2**20 / 1e9:.2f} GB: baseline "
                     f"{r['baseline_mib']:.0f} + {above:.0f} MiB ({r['peak_file_mib']:.0f} MiB of it file pages)",
                     ("met" if r["peak_rss_mib"] * 2**20 < 1.5e9 else "**not met**")
                     + ("; **peak RSS grows with the file** (mapped pages)" if r["peak_file_mib"] > r["file_mib"] / 2
                        else "")])
    out.append(_table(["target", "measured", ""], rows))
    sweep = {r.get("spec", str(r["tile_t"])): r for r in (speed.get("sweep") or {}).get("rows", [])}
    base, one, short = sweep.get("128"), sweep.get("400"), sweep.get("256:32")
    bf = {r["preset"]: r for r in speed.get("bf16") or []}
    out += ["", "## Proposals (not applied yet)", ""]
    n = 1
    auto = sweep.get("auto")
    if auto and one and base:
        line = (f"{n}. **Tile length and overlap (inference/tiles.py, runtime/resources.py).** For the "
                f"`{speed['sweep']['preset']}` preset "
                f"the automatic choice was tile_t = {auto['tile_t']} ({auto['n_tiles']} tiles, "
                f"{100 * auto['overlap_share']:.0f}% of the computed voxels are overlap): one 400-frame tile ran "
                f"{one['frames_per_s'] / auto['frames_per_s']:.2f}x faster than that")
        if short:
            line += (f", tile_t = 256 with a 32-frame overlap ({100 * short['overlap_share']:.0f}% overlap) "
                     f"{short['frames_per_s'] / auto['frames_per_s']:.2f}x")
        line += (f". Fixed tiles of 64, 128 or 256 frames all waste {100 * base['overlap_share']:.0f}%, because "
                 "the overlap is the receptive field (145 for UNet-Att, 103 for the 3D UNet) capped at half a tile. "
                 "The automatic tile is sized for the default 1 GB CPU budget (`infer.DEFAULT_CPU_BUDGET_GB`, "
                 "which keeps peak RSS bounded, see the memory section); `--memory-gb 3` lets this stack run as "
                 "one tile. Proposed: default the time overlap to the *effective* field (e.g. "
                 "`min(receptive_field, 32)` frames) instead of up to half a tile, after checking seams and PSNR "
                 "with `benchmarks/bench_quality.py`; or stream along t, keeping each layer's boundary activations "
                 "between tiles, which removes the recomputed overlap altogether.")
        out.append(line)
        n += 1
    if prof:
        share = {o["op"]: o["share"] for o in prof["ops"]}
        conv = share.get("aten::mkldnn_convolution", 0.0)
        cat = share.get("aten::cat", 0.0)
        up = share.get("aten::upsample_trilinear3d", 0.0)
        bn = share.get("aten::native_batch_norm", 0.0)
        relu = share.get("aten::clamp_min_", 0.0)
        out.append(
            f"{n}. **Non-convolution work (model/networks.py).** Convolutions take only {100 * conv:.0f}% of a `fast` "
            f"forward pass; `torch.cat` of channels-last tensors takes {100 * cat:.0f}% (an element-interleaving "
            f"copy in that layout), trilinear upsampling {100 * up:.0f}%, in-place ReLU {100 * relu:.0f}%, the "
            f"gates' BatchNorm {100 * bn:.0f}%. Decoder concatenations are no longer materialised on this path "
            "(the first conv of each node is split by input channels; measured: peak memory of a 400x128x128 "
            "`fast` tile 2.86 -> 1.88 GB and the one-tile speed 26.5 -> 36.1 frames/s). Jobs keep freed memory in "
            "the heap (`device.reuse_freed_memory`): before, every large activation page-faulted its memory back "
            "in, and a `paper` forward pass on a 64x128x128 tile took 530,000 page faults and spent 22% of its CPU "
            "time in the kernel (3.3-3.5 s per pass, 2.0-2.5 s now). Each gate's eval-mode BatchNorm is folded into "
            "its 1x1x1 conv on this path (one pass over a full-resolution tensor less per gate). Proposed next: "
            "fuse ReLU into the convolution (oneDNN post-op); a faster trilinear resize (an index-select + lerp "
            "version per axis was measured 2.5-10x *slower* than `F.interpolate` on channels-last tensors, "
            "contiguous tensors 2-3x slower).")
        n += 1
    if bf:
        items = ", ".join(f"`{k}` {v['frames_per_s'] / pr[k]['frames_per_s']:.2f}x" for k, v in bf.items() if k in pr)
        bl = speed["conv_limit"]["bf16_channels_last_gflops"]
        out.append(
            f"{n}. **bfloat16 on CPUs with AMX / AVX512-BF16 (runtime/device.py, model/networks.py).** "
            "This CPU runs a bf16 "
            f"conv3d at {bl:.0f} GFLOP/s against {lim:.0f} in float32; whole-network inference in bf16 was "
            f"{items} faster than float32. Training already uses bf16 autocast on such CPUs "
            "(`device.amp_dtype(..., training=True)`; same PSNR per step as float32, docs/benchmarks.md). "
            "Inference stays float32: the oneDNN fast path of `networks.conv3d` requires it. On the shipped "
            "*trained* `fast` model a bf16 autocast pass changed PSNR by +0.01 dB (38.43 -> 38.44 dB, relative "
            "RMS difference 0.27%), so a bf16 inference path (weights cast once, as in bench_speed's `Bf16Net`) "
            "is the next step.")
        n += 1
    big = max((mem or {}).get("rows", []), key=lambda r: r["file_mib"], default=None)
    if big and big["peak_file_mib"] > big["file_mib"] / 2:
        out.append(
            f"{n}. **Mapped file pages (stackio/, inference/).** With a {big['file_mib']:.0f} MiB input, the process's "
            f"own memory stayed at {big['peak_anon_mib']:.0f} MiB but its RSS peaked at {big['peak_rss_mib']:.0f} "
            f"MiB: {big['peak_file_mib']:.0f} MiB of pages of the memory-mapped input and output TIFFs. The kernel "
            "can drop them, but `top`, `ru_maxrss` and container memory accounting show them, and users will read "
            "that as a leak. Proposed: read tiles with positioned reads (`np.fromfile(f, count=, offset=)` per "
            "frame block) instead of `tifffile.memmap`, and after flushing finished output frames call "
            "`mmap.madvise(MADV_DONTNEED)` / `os.posix_fadvise(..., POSIX_FADV_DONTNEED)` on their byte range "
            "(after `flush`), so RSS stays flat.")
        n += 1
    out.append(
        f"{n}. **Threads.** The engine uses one intra-op thread per core (`device.configure_cpu_threads`) and the "
        "prefetch thread only reads and normalises tiles. On a 2-core machine shared with other processes, "
        "OpenMP threads of small operations wait for each other: see the optimizer column of the training table "
        "(Adam on a few hundred thousand parameters should take milliseconds).")
    return "\n".join(out) + "\n"


def render_memory(mem: dict[str, Any]) -> str:
    runs = " ".join(f"{r['net']}:{r['shape'][0]}:{r['shape'][1]}" for r in mem["rows"])
    out = [
        "## Memory versus file size",
        "",
        f"`python benchmarks/bench_memory.py --runs {runs}` : "
        "uint16 TIFFs written chunk by chunk, denoised file-to-file with "
        f"`inference.denoise_file` (output dtype '{mem['output_dtype']}') in a fresh subprocess. *Peak RSS* is "
        "`VmHWM` (= `ru_maxrss`; `/usr/bin/time -v` agrees): everything the process ever had resident, file "
        "pages included. The input is read with positioned reads (`stackio.TiffArray`, no memory map) and written "
        "output frames are flushed and dropped from the output's memory map (`madvise(MADV_DONTNEED)`), so "
        "neither file adds to it; *peak file* (sampled every 50 ms, `RssFile`) is then mostly shared libraries. "
        "*Peak anonymous* (sampled) is the process's own memory. *Baseline* is the RSS after imports and model "
        "creation, before denoising.",
        "",
        "Networks are real and untrained (memory and speed do not depend on the weights), except `standin`, a "
        "3x3x3 mean filter with the Denoiser interface and `arch='unet_att'` (same tile plan, reads, blending and "
        "accumulator as UNet-Att, no network activations). `fast` (UNet-Att, f = 8) runs the same 128 x 128 "
        "recording at two lengths, 0.5 and 2 GB on disk: the activation memory of a tile depends on the tile, "
        "which the memory budget sets, not on the file length. Jobs keep freed memory in the heap while they "
        "run (`device.reuse_freed_memory`), so the peak includes the heap's fragmentation; the memory "
        "estimates that size the tiles (`resources.INFER_FACTOR`) are calibrated with it (a `fast` 128 x 128 "
        "tile is 104 frames under the default 1 GB budget).",
        "",
    ]
    rows = [[r["net"], "x".join(map(str, r["shape"])), f"{r['file_mib']:.0f}", f"{r['baseline_mib']:.0f}",
             f"{r['peak_rss_mib']:.0f}", f"{r['peak_rss_mib'] - r['baseline_mib']:.0f}", f"{r['peak_file_mib']:.0f}",
             f"{r['peak_anon_mib']:.0f}", f"{r['seconds']:.0f}"] for r in mem["rows"]]
    out.append(_table(["net", "shape", "file MiB", "baseline MiB", "peak RSS MiB", "peak RSS above baseline MiB",
                       "peak file MiB", "peak anonymous MiB", "seconds"], rows))
    return "\n".join(out) + "\n"


def render_train(train: dict[str, Any]) -> str:
    out = [
        "## Training speed (CPU)",
        "",
        "`python benchmarks/bench_train_speed.py --steps 3` : the training step of `train.py` (PatchSampler.sample, "
        "to_device, forward under the engine's autocast, loss, backward, Adam) with each preset's default patch and "
        "batch, in the precision the engine trains in on this machine (column *precision*), timed part by part "
        f"(after one warm-up step); {_load_note(train)}. *Outside* is sampling + host-to-device copy as a share of "
        "the step; GFLOP/s is estimated as 3 x the forward convolution FLOPs.",
        "",
    ]
    rows = []
    for r in train["rows"]:
        q = r["parts_s_per_step"]
        rows.append([r["preset"], r.get("precision", "float32"), "x".join(map(str, r["patch"])), r["batch_size"],
                     f"{r['steps_per_s']:.3f}",
                     f"{r['seconds_per_step']:.2f}", f"{1e3 * (q['sample'] + q['to_device']):.1f}",
                     f"{q['forward']:.2f}", f"{q['backward']:.2f}", f"{1e3 * q['optimizer']:.0f}",
                     f"{100 * r['outside_share']:.2f}%", f"{r['train_gflops_est']:.1f}"])
    out.append(_table(["preset", "precision", "patch", "batch", "steps/s", "s/step", "sampling ms", "forward s",
                       "backward s", "optimizer ms", "outside", "GFLOP/s (est.)"], rows))
    return "\n".join(out) + "\n"


def existing_ddp_section(doc: Path) -> str | None:
    """The DDP section of an existing page (the lead maintains it), kept verbatim."""
    if not doc.exists():
        return None
    text = doc.read_text()
    if DDP_HEADING not in text:
        return None
    rest = text.split(DDP_HEADING, 1)[1]
    nxt = rest.find("\n## ")
    return DDP_HEADING + (rest if nxt < 0 else rest[:nxt]).rstrip() + "\n"


#: Everything after this line in an existing page is written by hand and kept as it is.
HAND_WRITTEN_MARKER = "<!-- hand-written below: kept by make_performance_doc.py -->"


def existing_hand_written(doc: Path) -> str | None:
    """The hand-written end of an existing page (from :data:`HAND_WRITTEN_MARKER` on), kept verbatim."""
    if not doc.exists():
        return None
    text = doc.read_text()
    if HAND_WRITTEN_MARKER not in text:
        return None
    return HAND_WRITTEN_MARKER + text.split(HAND_WRITTEN_MARKER, 1)[1].rstrip() + "\n"


def render(results: Path, doc: Path, notes: str | None) -> str:
    speed, deepcad, mem, train, prof = (load(results, n) for n in ("speed", "deepcad", "memory", "train", "profile"))
    parts = [
        "# Performance",
        "",
        "Generated by `python scripts/make_performance_doc.py` from the benchmarks in `benchmarks/` "
        f"(results kept in `{results}`). Regenerate after changing the engine.",
        "",
        render_machine(speed, train),
    ]
    if speed:
        parts.append(render_speed(speed, deepcad))
    if prof:
        parts.append(render_profile(prof))
    if mem:
        parts.append(render_memory(mem))
    if train:
        parts.append(render_train(train))
    parts.append(existing_ddp_section(doc) or f"{DDP_HEADING}\n\nNot measured yet.\n")
    if speed:
        parts.append(render_targets(speed, deepcad, prof, mem))
    if notes:
        parts.append(Path(notes).read_text().rstrip() + "\n")
    hand_written = existing_hand_written(doc)
    if hand_written:
        parts.append(hand_written)
    return "\n".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="+", default=list(BENCHMARKS), choices=[*BENCHMARKS, "none"],
                    help="benchmarks to run ('none': only re-render)")
    ap.add_argument("--reuse", action="store_true", help="skip benchmarks whose JSON already exists")
    ap.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    ap.add_argument("--doc", type=Path, default=ROOT / "docs" / "performance.md")
    ap.add_argument("--python", default=sys.executable, help="interpreter with napari_unet_att installed")
    ap.add_argument("--deepcad-python", default=DEEPCAD_PY)
    ap.add_argument("--tmp", default="/tmp", help="folder for bench_memory's temporary TIFFs (~4.5 GB)")
    ap.add_argument("--notes", help="a Markdown file appended at the end (analysis, proposals)")
    args = ap.parse_args()
    args.results.mkdir(parents=True, exist_ok=True)
    for name in args.only:
        if name == "none" or (args.reuse and (args.results / f"{name}.json").exists()):
            continue
        run_benchmark(name, args.results, args.python, args.deepcad_python, args.tmp)
    args.doc.write_text(render(args.results, args.doc, args.notes))
    print(f"wrote {args.doc} ({platform.node()})")


if __name__ == "__main__":
    main()
