#!/usr/bin/env bash
# Speed and memory of two revisions, measured alternately on this machine (old, new, old, new), so that
# drift of a shared machine hits both sides alike. Usage (from the repository root, with the dev venv):
#   benchmarks/compare_revisions.sh OLD_REV NEW_REV [RESULTS_DIR]
# Each revision is checked out in a temporary worktree and run from its own source tree (PYTHONPATH), with its own
# benchmark scripts. Results: RESULTS_DIR/{speed,train}_{old,new}_{1,2}.json and mem_{old,new}.json.
set -euo pipefail
OLD_REV=$1; NEW_REV=$2; R=$(realpath -m "${3:-/tmp/compare-revisions}")
PY=${PY:-$(pwd)/.venv/bin/python}
mkdir -p "$R"
WT=$(mktemp -d)
trap 'git worktree remove --force "$WT/old"; git worktree remove --force "$WT/new"; rm -rf "$WT"' EXIT
git worktree add -q --detach "$WT/old" "$OLD_REV"
git worktree add -q --detach "$WT/new" "$NEW_REV"
run() {  # side, round
  local d="$WT/$1"
  echo "== $1 round $2 $(date +%T) load $(cut -d' ' -f1 /proc/loadavg)"
  (cd "$d" && PYTHONPATH="$d/src" "$PY" benchmarks/bench_speed.py --presets fast paper unet3d --no-sweep --repeats 2 \
      --json "$R/speed_$1_$2.json" > "$R/speed_$1_$2.log" 2>&1)
  (cd "$d" && PYTHONPATH="$d/src" "$PY" benchmarks/bench_train_speed.py --steps 3 --json "$R/train_$1_$2.json" \
      > "$R/train_$1_$2.log" 2>&1)
}
for round in 1 2; do run old $round; run new $round; done
for side in old new; do
  echo "== $side memory $(date +%T)"
  (cd "$WT/$side" && PYTHONPATH="$WT/$side/src" "$PY" benchmarks/bench_memory.py --runs fast:4000:128 --dir "$R" \
      --json "$R/mem_$side.json" > "$R/mem_$side.log" 2>&1)
done
"$PY" - "$R" <<'PYEOF'
import json, sys
from pathlib import Path
r = Path(sys.argv[1])
for n in (1, 2):
    for side in ("old", "new"):
        speed = json.loads((r / f"speed_{side}_{n}.json").read_text())["presets"]
        train = json.loads((r / f"train_{side}_{n}.json").read_text())["rows"]
        print(f"round {n} {side}: inference frames/s " + ", ".join(f"{p} {v['frames_per_s']:.1f}" for p, v in speed.items())
              + "; training steps/s " + ", ".join(f"{t['preset']} {t['steps_per_s']:.2f}" for t in train))
for side in ("old", "new"):
    m = json.loads((r / f"mem_{side}.json").read_text())["rows"][0]
    print(f"memory {side}: peak RSS {m['peak_rss_mib']:.0f} MiB, {m['seconds']:.1f} s")
PYEOF
