"""Run bad inputs through the command line and the napari widgets, and fault injection; write docs/robustness.md.

Usage::

    python scripts/robustness_report.py                 # bad inputs + 20 training kills + 5 denoise kills
    python scripts/robustness_report.py --kills 40 --calibrate

The inputs and what each must produce come from the shared corpus ``tests/_bad_inputs.py``
(also used by ``tests/test_robustness.py`` and ``tests/test_widget_bad_inputs.py``). Every CLI
case is a separate ``python -m napari_unet_att`` process (cases with a simulated fault, e.g. a
full disk, run the same ``main`` in a process that installs the fault first). The widget
column comes from running ``tests/test_widget_bad_inputs.py`` (pytest, Xvfb), which drives
the docks, reader and writer as a user would and records what the user was notified of.
The table lists, for each input, the exit code and the one line the user sees. Fault injection: training runs with
``--checkpoint-every 1`` are ``SIGKILL``-ed at random moments (every other kill the moment a
checkpoint save has begun), each followed by a check that ``checkpoint-last.pt`` loads and by a
``--resume`` run; ``denoise`` runs are killed while writing, and the previous output is checked.
``--calibrate`` re-measures the memory factors of :mod:`napari_unet_att.runtime.resources`.
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

from napari_unet_att.model import checkpoint as ck
from napari_unet_att.model.denoiser import Denoiser
from napari_unet_att.model.networks import build_network
from napari_unet_att.model.normalization import Normalization

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
sys.path.insert(0, str(TESTS))  # the shared bad-input corpus is test data, not part of the package

import _bad_inputs as bi  # noqa: E402

ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
LAST = "checkpoint-last.pt"
#: Everything after this line in an existing docs/robustness.md is written by hand and kept as it is.
HAND_WRITTEN_MARKER = "<!-- hand-written below: kept by robustness_report.py -->"


def cli(*args: object, timeout: float = 300, fault: str | None = None, folder: Path | None = None) -> tuple[int, str]:
    cmd = [sys.executable, "-m", "napari_unet_att"]
    if fault:  # the real main(), in a process whose disk / permissions misbehave
        cmd = [sys.executable, "-c", _FAULT_RUNNER, str(TESTS), fault, str(folder)]
    p = subprocess.run([*cmd, *map(str, args)], capture_output=True, text=True, env=ENV, timeout=timeout)
    return p.returncode, p.stderr


_FAULT_RUNNER = (
    "import sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]); import _bad_inputs as bi; "
    "from napari_unet_att.cli import main; bi.install_fault(sys.argv[2], setattr, Path(sys.argv[3])); "
    "sys.exit(main(sys.argv[4:]))"
)


def user_line(stderr: str) -> str:
    lines = [ln for ln in stderr.replace("\r", "\n").splitlines() if ln.startswith("napari-unet-att ")]
    if "Traceback" in stderr:
        return "TRACEBACK: " + stderr.strip().splitlines()[-1]
    return lines[-1] if lines else ""


# ----------------------------------------------------------------------------------------------
# bad inputs: CLI processes and the widget tests
# ----------------------------------------------------------------------------------------------
def run_cases(f: dict[str, Path], out: Path, workers: int) -> list[dict]:
    """Every case of the corpus through the CLI (one process each); widget-only cases get a row too."""
    work = str(out.parent) + os.sep  # shown as relative paths in the report

    def one(case: bi.Case) -> dict:
        row = {"id": case.id, "input": case.description, "command": case.command or "(GUI only)"}
        if not case.argv:
            return {**row, "rc": None, "message": "n/a", "cli_ok": True}
        rc, err = cli(*case.cli_argv(f, out), fault=case.fault, folder=out)
        line = user_line(err).replace(work, "")
        if case.ok:
            fine = rc == 0
        else:
            fine = rc == 2 and line.count("error:") == 1 and "TRACEBACK" not in line and all(
                p.lower() in line.lower() for p in case.expected)
        return {**row, "rc": rc, "message": line if rc else "(works)", "cli_ok": fine}

    with ThreadPoolExecutor(workers) as pool:
        rows = list(pool.map(one, bi.CASES))
    made = {p.name for c in bi.CASES if c.ok and c.argv and (p := c.out_path(f, out)) is not None}
    leftovers = [name for name in bi.outputs(out) if name not in made]
    return rows + [{"hostile_code_ran": bi.hostile_marker(f).exists(), "leftover_files": leftovers}]


def run_widget_cases(work: Path) -> tuple[dict[str, dict], str]:
    """Run tests/test_widget_bad_inputs.py; returns (what each passing case showed, pytest's summary)."""
    record = work / "widget_cases.jsonl"
    env = dict(ENV, UNET_ATT_WIDGET_REPORT=str(record))
    p = subprocess.run([sys.executable, "-m", "pytest", str(TESTS / "test_widget_bad_inputs.py"), "-q",
                        "-p", "no:cacheprovider", "-k", "test_widget_case", "-W", "ignore::DeprecationWarning"],
                       capture_output=True, text=True, env=env, cwd=ROOT, timeout=1800)
    seen = {}
    if record.exists():
        for ln in record.read_text().splitlines():
            row = json.loads(ln)
            seen[row["id"]] = row
    summary = [ln for ln in p.stdout.splitlines() if " passed" in ln or " failed" in ln]
    return seen, (summary[-1].strip("= ") if summary else f"pytest exit code {p.returncode}")


def widget_cell(case: bi.Case, seen: dict[str, dict]) -> tuple[str, bool]:
    """The widget column: what the user was notified of (or that it worked), and whether as specified."""
    if case.widget is None:
        return "n/a (no widget takes this input)", True
    row = seen.get(case.id)
    if row is None:
        return f"**FAILED** ({bi.WIDGET_PATHS[case.widget]}): see pytest {TESTS.name}/test_widget_bad_inputs.py", False
    msgs = row["messages"]
    first = msgs[0]
    if len(msgs) > 1:
        first += f" [{len(msgs)} attempts: {_ATTEMPTS.get(case.widget, 'each')}, all alike]"
    return f"{first} — *{bi.WIDGET_PATHS[case.widget]}*", True


_ATTEMPTS = {"denoise": "file opened by the reader, then the in-memory array",
             "train": "file opened by the reader, then the in-memory array", "load": "both docks"}


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
        proc = _start("denoise", src, "--model", model, "--out", out, "--tile-t", "8", "--overwrite")
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
from napari_unet_att.runtime import resources
from napari_unet_att.model.networks import build_network
from napari_unet_att.runtime.resources import padded_shape
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
for n in padded_shape((t, y, x), arch):
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


def write_report(path: Path, rows: list[dict], widget_summary: str, tk: dict, dk: dict, cal: list[dict] | None,
                 seconds: float) -> None:
    table, extra = rows[:-1], rows[-1]
    ok = sum(r["as_expected"] for r in table)
    refused = sum(r["rc"] not in (0, None) for r in table)
    cli_rows = sum(r["rc"] is not None for r in table)
    lines = [
        "# Robustness report",
        "",
        f"Generated by `python scripts/robustness_report.py` in {seconds:.0f} s "
        f"(each CLI case a separate `python -m napari_unet_att` process; the widget cases through pytest + Xvfb).",
        "",
        f"**Headline:** {ok}/{len(table)} inputs behaved as specified in the CLI and the widgets ({refused} of "
        f"{cli_rows} CLI cases refused with exit code 2 and one error line, no traceback, "
        f"{cli_rows - refused} supported variants worked); hostile pickles executed: "
        f"{'YES' if extra['hostile_code_ran'] else 'no'}; partial outputs left: {len(extra['leftover_files'])}. "
        f"Training killed {tk['kills']} times ({tk['killed_mid_save']} during a checkpoint write): "
        f"checkpoint-last.pt loaded after {tk['checkpoint_loadable']}/{tk['kills']} kills, "
        f"each of the {max(tk['kills'] - 1, 0)} later runs resumed from it ({tk['resumed_with_progress']} completed a "
        f"newer checkpoint before their kill, the others were killed during that save and the older one stayed "
        f"valid); final resume "
        f"{'succeeded' if tk['final_resume_ok'] else 'FAILED'}. Denoising killed {dk['kills']} times while "
        f"writing: previous output intact {dk['previous_output_intact']}/{dk['kills']}.",
        "",
        "## Bad input through the CLI and the napari widgets",
        "",
        f"Widget column: `tests/test_widget_bad_inputs.py` ({widget_summary}); a refusal there means one napari "
        "error notification with this text (or, for File > Open / Save, the error napari shows), the layer list "
        "unchanged (no output layer), buttons enabled again, no worker left running and no file in the output "
        "folder.",
        "",
        "| input | command | exit code | what the user sees (stderr) | napari widget path: what the user is "
        "notified of | as specified |",
        "|---|---|---|---|---|---|",
    ]
    for r in table:
        rc = "n/a" if r["rc"] is None else r["rc"]
        lines.append(f"| {_md(r['input'])} | {r['command']} | {rc} | {_md(r['message'])} | {_md(r['widget'])} | "
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
    # Sections after the marker are written by hand (what a human checked): kept verbatim.
    old = path.read_text() if path.exists() else ""
    if HAND_WRITTEN_MARKER in old:
        lines += [HAND_WRITTEN_MARKER + old.split(HAND_WRITTEN_MARKER, 1)[1].rstrip(), ""]
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
        files = bi.write_inputs(work / "in")
        rows = run_cases(files, work / "out", args.workers)
        seen, widget_summary = run_widget_cases(work)
        for r in rows[:-1]:
            r["widget"], widget_ok = widget_cell(bi.CASES_BY_ID[r["id"]], seen)
            r["as_expected"] = r["cli_ok"] and widget_ok
        print(f"bad inputs: {sum(r['as_expected'] for r in rows[:-1])}/{len(rows) - 1} as specified "
              f"(widgets: {widget_summary})", flush=True)
        (work / "tk").mkdir()
        tk = training_kills(work / "tk", args.kills, args.seed)
        print(json.dumps({k: v for k, v in tk.items() if k != "steps_at_kills"}), flush=True)
        (work / "dk").mkdir()
        dk = denoise_kills(work / "dk", args.denoise_kills, args.seed)
        print(json.dumps(dk), flush=True)
    cal = calibrate() if args.calibrate else None
    write_report(Path(args.out), rows, widget_summary, tk, dk, cal, time.perf_counter() - t0)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
