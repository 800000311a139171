"""Run bad inputs and fault injection through the real command line; write docs/robustness.md.

Usage::

    python scripts/robustness_report.py                 # bad inputs + 20 training kills + 5 denoise kills
    python scripts/robustness_report.py --kills 40 --calibrate

Every case is a separate ``python -m napari_unet_att`` process. The table lists, for each input,
the exit code and the one line the user sees. Fault injection: training runs with
``--checkpoint-every 1`` are ``SIGKILL``-ed at random moments (every other kill the moment a
checkpoint save has begun), each followed by a check that ``checkpoint-last.pt`` loads and by a
``--resume`` run; ``denoise`` runs are killed while writing, and the previous output is checked.
``--calibrate`` re-measures the memory factors of :mod:`napari_unet_att.resources`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import tifffile
import torch

from napari_unet_att import checkpoint as ck
from napari_unet_att.denoiser import Denoiser
from napari_unet_att.networks import build_network
from napari_unet_att.normalization import Normalization

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
FAST = ["--steps", "1", "--patch-t", "4", "--patch-xy", "16"]
LAST = "checkpoint-last.pt"


def cli(*args: object, timeout: float = 300) -> tuple[int, str]:
    p = subprocess.run([sys.executable, "-m", "napari_unet_att", *map(str, args)], capture_output=True, text=True,
                       env=ENV, timeout=timeout)
    return p.returncode, p.stderr


def user_line(stderr: str) -> str:
    lines = [ln for ln in stderr.replace("\r", "\n").splitlines() if ln.startswith("napari-unet-att ")]
    if "Traceback" in stderr:
        return "TRACEBACK: " + stderr.strip().splitlines()[-1]
    return lines[-1] if lines else ""


# ----------------------------------------------------------------------------------------------
# inputs
# ----------------------------------------------------------------------------------------------
def make_inputs(d: Path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    good = rng.poisson(100, (12, 16, 16)).astype(np.uint16)
    f: dict[str, Path] = {}

    def tif(name: str, data: np.ndarray, **kw) -> None:
        f[name] = d / f"{name}.tif"
        kw.setdefault("metadata", {"axes": "TYX"} if data.ndim == 3 else None)
        tifffile.imwrite(f[name], data, **kw)

    tif("good", good)
    tif("image2d", good[0])
    tif("rgb", rng.integers(0, 255, (4, 16, 16, 3), dtype=np.uint8), photometric="rgb", metadata=None)
    tif("frames1", good[:1])
    tif("frames2", good[:2])
    tif("frames6", good[:6])
    tif("rows8", good[:, :8, :8])
    nan = good.astype(np.float32)
    nan[3, 4, 5] = np.nan
    tif("nan", nan)
    inf = good.astype(np.float32)
    inf[7, 1, 2] = np.inf
    tif("inf", inf)
    tif("const", np.full((12, 16, 16), 7, np.uint16))
    tif("bool", good > 100)
    tif("int8", (good % 100).astype(np.int8))
    tif("int32", good.astype(np.int32) * 1000)
    tif("float64", good.astype(np.float64) / 3)
    tif("bigendian", good.astype(">u2"), byteorder=">")
    tif("complex", good.astype(np.complex64))
    tif("odd_rows", rng.poisson(100, (12, 33, 16)).astype(np.uint16))
    f["text"] = d / "notes.tif"
    f["text"].write_text("these are my notes, not an image\n")
    raw = f["good"].read_bytes()
    f["truncated"] = d / "truncated.tif"
    f["truncated"].write_bytes(raw[: len(raw) // 2])
    torch.manual_seed(0)
    den = Denoiser(build_network("unet_att", 4).eval(), "unet_att", 4, "fast", "temporal",
                   Normalization(100.0, 10.0), train_shape=(12, 16, 16))
    f["model"] = ck.save_checkpoint(d / "model.pt", den)
    data = f["model"].read_bytes()
    f["m_truncated"] = d / "m_truncated.pt"
    f["m_truncated"].write_bytes(data[: len(data) // 2])
    raw_ck = torch.load(f["model"], weights_only=True)
    f["m_newer"] = d / "m_newer.pt"
    torch.save(dict(raw_ck, format_version=ck.FORMAT_VERSION + 1), f["m_newer"])
    f["m_arch"] = d / "m_arch.pt"
    torch.save(dict(raw_ck, state_dict=build_network("unet3d", 4).state_dict()), f["m_arch"])
    f["m_tiff"] = d / "m_image.pt"
    f["m_tiff"].write_bytes(raw)
    f["m_plain"] = d / "m_plain.pt"
    torch.save({"weights": [1, 2, 3]}, f["m_plain"])
    f["m_hostile"] = d / "m_hostile.pth"
    f["m_hostile"].write_bytes(_hostile_pickle(str(d / "PWNED")))
    f["blocker"] = d / "blocker"
    f["blocker"].write_text("a file, not a folder")
    return f


def _hostile_pickle(marker: str) -> bytes:
    """A protocol-0 pickle that runs ``os.system('touch MARKER')`` when loaded naively."""
    return f"cos\nsystem\n(V touch {marker}\ntR.".encode().replace(b"(V ", b"(V")


def cases(f: dict[str, Path], out: Path) -> list[tuple[str, list, bool]]:
    """(description, argv, should succeed)."""
    m = f["model"]

    def den(name: str, *extra) -> list:
        return ["denoise", f[name], "--model", m, "--out", out / f"{name}.tif", *extra]

    def train(name: str, *extra) -> list:
        return ["train", f[name], "--out", out / f"run_{name}", *FAST, *extra]

    return [
        ("2D image", den("image2d"), False),
        ("RGB image without --channel", den("rgb"), False),
        ("RGB image with --channel 1", den("rgb", "--channel", "1"), True),
        ("stack of 1 frame", den("frames1"), False),
        ("stack of 2 frames", den("frames2"), False),
        ("6 frames for patch_t=4 (train)", train("frames6"), False),
        ("8x8 frames for patch_xy=16 (train)", train("rows8"), False),
        ("mirrored mode, rows != 2 x columns", train("good", "--mode", "mirrored"), False),
        ("mirrored mode, odd row count", train("odd_rows", "--mode", "mirrored"), False),
        ("rowsplit mode, odd row count", train("odd_rows", "--mode", "rowsplit"), False),
        ("NaN values (denoise)", den("nan"), False),
        ("Inf values (train)", train("inf"), False),
        ("constant image (train)", train("const"), False),
        ("constant image (denoise)", den("const"), True),
        ("bool data", den("bool"), False),
        ("complex data", den("complex"), False),
        ("int8 data", den("int8"), True),
        ("int32 data", den("int32"), True),
        ("float64 data", den("float64"), True),
        ("big-endian uint16", den("bigendian"), True),
        (".tif that is a text file", den("text"), False),
        ("truncated TIFF", den("truncated"), False),
        ("input path does not exist", ["denoise", out / "nope.tif", "--model", m, "--out", out / "x.tif"], False),
        ("output folder under a file", ["denoise", f["good"], "--model", m, "--out", f["blocker"] / "o.tif"], False),
        ("output = input", ["denoise", f["good"], "--model", m, "--out", f["good"]], False),
        ("truncated checkpoint", ["denoise", f["good"], "--model", f["m_truncated"], "--out", out / "a.tif"], False),
        ("checkpoint of another architecture", ["info", f["m_arch"]], False),
        ("checkpoint from a newer format", ["train", f["good"], "--init", f["m_newer"], "--out", out / "r1", *FAST],
         False),
        ("a TIFF given as the model", ["denoise", f["good"], "--model", f["m_tiff"], "--out", out / "b.tif"], False),
        ("a torch file that is not a model", ["info", f["m_plain"]], False),
        ("final model given to --resume", ["train", f["good"], "--resume", m, "--out", out / "r2", *FAST], False),
        ("pickle that runs a shell command (info)", ["info", f["m_hostile"]], False),
        ("pickle that runs a shell command (--model)",
         ["denoise", f["good"], "--model", f["m_hostile"], "--out", out / "c.tif"], False),
        ("pickle that runs a shell command (--init)",
         ["train", f["good"], "--init", f["m_hostile"], "--out", out / "r3", *FAST], False),
        ("pickle that runs a shell command (--resume)",
         ["train", f["good"], "--resume", f["m_hostile"], "--out", out / "r4", *FAST], False),
    ]


def run_cases(f: dict[str, Path], out: Path, workers: int) -> list[dict]:
    todo = cases(f, out)
    work = str(out.parent) + os.sep  # shown as relative paths in the report

    def one(case):
        desc, argv, ok = case
        rc, err = cli(*argv)
        line = user_line(err).replace(work, "")
        fine = (rc == 0) if ok else (rc == 2 and line.count("error:") == 1 and "TRACEBACK" not in line)
        return {"input": desc, "command": argv[0], "rc": rc, "message": line if rc else "(works)", "as_expected": fine}

    with ThreadPoolExecutor(workers) as pool:
        rows = list(pool.map(one, todo))
    hostile_ran = (f["m_hostile"].parent / "PWNED").exists()
    leftovers = sorted(p.name for p in out.rglob("*") if p.is_file() and not p.name.endswith(tuple(
        f"{name}.tif" for name in ("rgb", "const", "int8", "int32", "float64", "bigendian"))))
    return rows + [{"hostile_code_ran": hostile_ran, "leftover_files": leftovers}]


# ----------------------------------------------------------------------------------------------
# fault injection
# ----------------------------------------------------------------------------------------------
def _start(*args: object) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "napari_unet_att", *map(str, args)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=ENV)


def _temps(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp")}


def _wait(cond, proc: subprocess.Popen, timeout: float = 180.0) -> bool:
    end = time.monotonic() + timeout
    while not cond():
        if proc.poll() is not None or time.monotonic() > end:
            return False
        time.sleep(0.002)
    return True


def training_kills(work: Path, n: int, seed: int) -> dict:
    rnd = random.Random(seed)
    stack = work / "stack.tif"
    tifffile.imwrite(stack, np.random.default_rng(seed).poisson(50, (24, 16, 16)).astype(np.uint16),
                     metadata={"axes": "TYX"})
    out = work / "run"
    last = out / LAST
    common = ["--checkpoint-every", "1", "--patch-t", "4", "--patch-xy", "16", "--seed", "0"]
    kills = mid_save = loadable = resumed = 0
    steps: list[int] = []
    problems: list[str] = []
    for i in range(n):
        fresh = not last.exists()
        args = ["train", stack, "--out", out, *common] + (["--steps", "100000"] if fresh else ["--resume", last])
        before_mtime = last.stat().st_mtime_ns if last.exists() else None
        before_tmp = _temps(out) if out.exists() else set()
        proc = _start(*args)
        if i % 2:  # kill the moment a checkpoint save has begun
            started = _wait(lambda b=before_tmp: out.exists() and bool(_temps(out) - b), proc)
            time.sleep(rnd.uniform(0.0, 0.02))
        else:  # at a random moment after a new checkpoint
            started = _wait(lambda m=before_mtime: last.exists() and last.stat().st_mtime_ns != m, proc)
            time.sleep(rnd.uniform(0.0, 1.5))
        if not started:
            problems.append(f"kill {i}: the run ended or stalled before the kill (rc {proc.poll()})")
            proc.kill()
            proc.wait()
            continue
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        mid_save += bool(_temps(out) - before_tmp)
        visible = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
        if visible != [LAST]:
            problems.append(f"kill {i}: unexpected files {visible}")
        try:
            den = ck.load_checkpoint(last)
            state = ck.load_training_state(last)
            assert state is not None and int(state["step"]) == den.step
            loadable += 1
            if steps and den.step > steps[-1]:
                resumed += 1  # the previous kill's checkpoint was resumed and made progress
            steps.append(den.step)
        except Exception as exc:  # noqa: BLE001 - any failure is a finding for the report
            problems.append(f"kill {i}: checkpoint-last.pt does not load: {exc}")
    rc, err = cli("train", stack, "--out", out, "--resume", last, "--steps", "1", *common[:2])
    final_ok = rc == 0 and ck.load_checkpoint(out / "model.pt").step == (steps[-1] + 1 if steps else 1)
    if not final_ok:
        problems.append(f"final resume failed: rc {rc}: {user_line(err)}")
    return {"kills": kills, "killed_mid_save": mid_save, "checkpoint_loadable": loadable,
            "resumed_with_progress": resumed, "steps_at_kills": steps, "final_resume_ok": final_ok,
            "hidden_temporaries_left": len(_temps(out)), "problems": problems}


def denoise_kills(work: Path, n: int, seed: int) -> dict:
    rnd = random.Random(seed)
    src = work / "in.tif"
    tifffile.imwrite(src, np.random.default_rng(seed).poisson(50, (256, 32, 32)).astype(np.uint16),
                     metadata={"axes": "TYX"})
    torch.manual_seed(0)
    model = ck.save_checkpoint(work / "m.pt", Denoiser(build_network("unet_att", 4).eval(), "unet_att", 4, "fast",
                                                       "temporal", Normalization(50.0, 7.0)))
    out = work / "out.tif"
    previous = np.full((256, 32, 32), 7, np.uint16)
    tifffile.imwrite(out, previous, metadata={"axes": "TYX"})
    intact = kills = 0
    for _ in range(n):
        before = _temps(work)
        proc = _start("denoise", src, "--model", model, "--out", out, "--tile-t", "8")
        if not _wait(lambda b=before: bool(_temps(work) - b), proc):
            proc.kill()
            proc.wait()
            continue
        time.sleep(rnd.uniform(0.0, 0.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        intact += bool(np.array_equal(tifffile.imread(out), previous))
    return {"kills": kills, "previous_output_intact": intact}


# ----------------------------------------------------------------------------------------------
# memory calibration
# ----------------------------------------------------------------------------------------------
_CALIBRATE = r"""
import json, resource, sys
import torch
from napari_unet_att import resources
from napari_unet_att.networks import build_network
from napari_unet_att.resources import _padded
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * resource.getpagesize()
kind, arch, f, t, y, x, b = sys.argv[1], sys.argv[2], int(sys.argv[3]), *map(int, sys.argv[4:8])
torch.set_num_threads(1)
net = build_network(arch, f)
with torch.inference_mode():
    net.eval()(torch.zeros(1, 1, 16, 16, 16))
if kind == "train":
    net.train(); opt = torch.optim.Adam(net.parameters())
    net(torch.randn(1, 1, 16, 16, 16)).square().mean().backward(); opt.step(); opt.zero_grad(set_to_none=True)
elem = resources.activation_elements(arch, f)
base = rss()
xt = torch.randn(b, 1, t, y, x)
if kind == "infer":
    with torch.inference_mode():
        net(xt)
    est = resources.estimate_inference_memory((t, y, x), arch, f, b)
else:
    net(xt).square().mean().backward(); opt.step()
    est = resources.estimate_training_memory(t, y, arch, f, b)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
vox = b
for n in _padded((t, y, x), arch):
    vox *= n
print(json.dumps({"job": kind, "arch": arch, "f": f, "shape": [t, y, x], "batch": b, "peak": peak,
                  "ratio": peak / (4 * elem * vox), "estimate": est}))
"""

CALIBRATION_RUNS = [
    ("infer", "unet_att", 16, 64, 128, 128, 1), ("infer", "unet_att", 8, 128, 128, 128, 1),
    ("infer", "unet_att", 16, 32, 64, 64, 1), ("infer", "unet3d", 16, 64, 128, 128, 1),
    ("train", "unet_att", 16, 64, 64, 64, 1), ("train", "unet_att", 8, 32, 64, 64, 2),
    ("train", "unet3d", 16, 32, 64, 64, 2),
]


def calibrate() -> list[dict]:
    rows = []
    for run in CALIBRATION_RUNS:
        p = subprocess.run([sys.executable, "-c", _CALIBRATE, *map(str, run)], capture_output=True, text=True, env=ENV)
        rows.append(json.loads(p.stdout.strip().splitlines()[-1]) if p.returncode == 0 else {"error": p.stderr[-300:]})
    return rows


# ----------------------------------------------------------------------------------------------
# report
# ----------------------------------------------------------------------------------------------
def _md(s: object) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def write_report(path: Path, rows: list[dict], tk: dict, dk: dict, cal: list[dict] | None, seconds: float) -> None:
    table, extra = rows[:-1], rows[-1]
    ok = sum(r["as_expected"] for r in table)
    refused = sum(r["rc"] != 0 for r in table)
    lines = [
        "# Robustness report",
        "",
        f"Generated by `python scripts/robustness_report.py` in {seconds:.0f} s "
        f"(each case a separate `python -m napari_unet_att` process).",
        "",
        f"**Headline:** {ok}/{len(table)} inputs behaved as specified ({refused} refused with exit code 2 and one "
        f"error line, no traceback, {len(table) - refused} supported variants worked); hostile pickles executed: "
        f"{'YES' if extra['hostile_code_ran'] else 'no'}; partial outputs left: {len(extra['leftover_files'])}. "
        f"Training killed {tk['kills']} times ({tk['killed_mid_save']} during a checkpoint write): "
        f"checkpoint-last.pt loaded after {tk['checkpoint_loadable']}/{tk['kills']} kills, "
        f"each of the {max(tk['kills'] - 1, 0)} later runs resumed from it ({tk['resumed_with_progress']} completed a "
        f"newer checkpoint before their kill, the others were killed during that save and the older one stayed "
        f"valid); final resume "
        f"{'succeeded' if tk['final_resume_ok'] else 'FAILED'}. Denoising killed {dk['kills']} times while "
        f"writing: previous output intact {dk['previous_output_intact']}/{dk['kills']}.",
        "",
        "## Bad input through the CLI",
        "",
        "| input | command | exit code | what the user sees (stderr) | as specified |",
        "|---|---|---|---|---|",
    ]
    for r in table:
        lines.append(f"| {_md(r['input'])} | {r['command']} | {r['rc']} | {_md(r['message'])} | "
                     f"{'yes' if r['as_expected'] else '**NO**'} |")
    lines += ["", f"Files left in the output folder by failed commands: {extra['leftover_files'] or 'none'}.", "",
              "## Fault injection (SIGKILL)", "",
              "| run | kills | during a checkpoint write | last checkpoint loads "
              "| resumed, newer checkpoint written | notes |",
              "|---|---|---|---|---|---|",
              f"| train --checkpoint-every 1 | {tk['kills']} | {tk['killed_mid_save']} | {tk['checkpoint_loadable']} | "
              f"{max(tk['kills'] - 1, 0)}, {tk['resumed_with_progress']} | final `--resume --steps 1`: "
              f"{'ok' if tk['final_resume_ok'] else 'FAILED'}; hidden `.checkpoint-last.pt.*.tmp` left by killed "
              f"saves: {tk['hidden_temporaries_left']} |",
              f"| denoise (256 x 32 x 32, 8-frame tiles) | {dk['kills']} | all (killed while the output was "
              f"being written) | n/a | n/a | previous output intact: {dk['previous_output_intact']}/{dk['kills']} |",
              "", f"Steps at the kills: {tk['steps_at_kills']}.", ""]
    if tk["problems"]:
        lines += ["Problems:", ""] + [f"- {_md(p)}" for p in tk["problems"]] + [""]
    if cal:
        lines += ["## Memory calibration (CPU, peak RSS over the RSS before the pass)", "",
                  "| job | arch | f | tile / patch | batch | peak | estimate | peak / layer outputs |",
                  "|---|---|---|---|---|---|---|---|"]
        for c in cal:
            if "error" in c:
                lines.append(f"| error | {_md(c['error'])} | | | | | | |")
                continue
            lines.append(f"| {c['job']} | {c['arch']} | {c['f']} | {'x'.join(map(str, c['shape']))} | {c['batch']} | "
                         f"{c['peak'] / 1e6:.0f} MB | {c['estimate'] / 1e6:.0f} MB | {c['ratio']:.2f} |")
        lines.append("")
    path.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=20, help="training kills")
    ap.add_argument("--denoise-kills", type=int, default=5)
    ap.add_argument("--workers", type=int, default=2, help="bad-input cases run side by side")
    ap.add_argument("--calibrate", action="store_true", help="also measure the memory factors")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "docs" / "robustness.md"))
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="unet-att-robustness-") as tmp:
        work = Path(tmp)
        (work / "in").mkdir()
        (work / "out").mkdir()
        files = make_inputs(work / "in")
        rows = run_cases(files, work / "out", args.workers)
        print(f"bad inputs: {sum(r['as_expected'] for r in rows[:-1])}/{len(rows) - 1} as specified", flush=True)
        (work / "tk").mkdir()
        tk = training_kills(work / "tk", args.kills, args.seed)
        print(json.dumps({k: v for k, v in tk.items() if k != "steps_at_kills"}), flush=True)
        (work / "dk").mkdir()
        dk = denoise_kills(work / "dk", args.denoise_kills, args.seed)
        print(json.dumps(dk), flush=True)
    cal = calibrate() if args.calibrate else None
    write_report(Path(args.out), rows, tk, dk, cal, time.perf_counter() - t0)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
