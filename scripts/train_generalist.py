"""Train (or continue training) a shipped generalist model on the simulated pretraining family.

Stoppable at any time (Ctrl-C, kill) and resumable: run the same command again and it continues from
``OUT/checkpoint-last.pt`` (at most one round of steps is repeated). When the budget is used up, the
model is written with its metadata (what it was trained on, how long, this command) to ``OUT/model.pt``
and, with ``--install``, copied to the package's ``pretrained/`` folder where ``--model generalist``
finds it.

    nice -n 19 python scripts/train_generalist.py --mode temporal --preset fast --seconds 14400 \\
        --out runs/generalist-temporal-fast --install

See ``napari_unet_att.training.pretraining`` for the family of recordings, and docs/benchmarks.md for how the
shipped models were made and how they score on held-out recordings.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time

from napari_unet_att.config import PRESETS, TrainConfig
from napari_unet_att.model.checkpoint import load_checkpoint, save_checkpoint
from napari_unet_att.model.pretrained import FAMILY_DESCRIPTION, pretrained_path
from napari_unet_att.training.pretraining import pretrain, pretraining_shape

TARGET_TEXT = {
    "pair": "the simulator's clean twin of the self-supervised target view (same pairs as fine-tuning)",
    "same": "the simulator's clean twin of the input frames themselves (supervised denoising at the full frame rate)",
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=["temporal", "mirrored"], required=True)
    ap.add_argument("--preset", choices=list(PRESETS), default="fast")
    budget = ap.add_mutually_exclusive_group(required=True)
    budget.add_argument("--steps", type=int, help="total optimiser steps of the whole run")
    budget.add_argument("--seconds", type=float, help="total training seconds of the whole run (all sittings)")
    ap.add_argument("--out", required=True, help="run folder (checkpoint-last.pt, model.pt)")
    ap.add_argument("--pool", type=int, default=16, help="recordings per round")
    ap.add_argument("--round-steps", type=int, default=200, help="steps before the next round's recordings")
    ap.add_argument("--frames", type=int, default=192, help="frames of each pretraining recording")
    ap.add_argument("--size", type=int, default=96, help="rows = columns of each recording (physical)")
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--patch-t", type=int, default=None,
                    help="frames per training patch (network input; default: the preset's)")
    ap.add_argument("--batch", type=int, default=None, help="patches per step (default: the preset's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--target-view", choices=["pair", "same"], default="pair",
                    help="pair: clean twin of the self-supervised target (default); same: clean twin of the "
                         "input frames (supervised, full frame rate; temporal only)")
    ap.add_argument("--init", default=None, help="weights to start the first round from (e.g. generalist)")
    ap.add_argument("--first-round", type=int, default=0,
                    help="draw the recordings from this round on (continuing a generalist with --init: fresh "
                         "recordings, not its parent's again)")
    ap.add_argument("--workers", type=int, default=0,
                    help="processes simulating the next round's recordings while a round trains (for GPU runs, "
                         "where simulation would otherwise stall the GPU; on a CPU they compete with training's "
                         "threads; the recordings are the same)")
    ap.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    ap.add_argument("--install", action="store_true", help="copy the finished model into the package")
    a = ap.parse_args(argv)

    cfg = TrainConfig(mode=a.mode, preset=a.preset, steps=a.steps, seconds=a.seconds, lr=a.lr, seed=a.seed,
                      patch_t=a.patch_t, batch_size=a.batch, device=a.device,
                      l1_weight=0.0, val_every=1000, checkpoint_every=0)
    shape = pretraining_shape(a.mode, a.frames, a.size)
    t0 = time.time()
    last = {"t": 0.0}

    def show(ev) -> None:
        if ev.message:
            print(ev.message, flush=True)
        if time.time() - last["t"] > 60 and ev.step > 0:
            last["t"] = time.time()
            print(f"step {ev.step} loss {ev.loss:.4f} {ev.steps_per_s:.2f} steps/s "
                  f"fraction {ev.fraction:.3f} lr-phase", flush=True)

    final = pretrain(cfg, a.out, pool=a.pool, round_steps=a.round_steps, shape=shape, on_event=show,
                     target_view=a.target_view, init=a.init, first_round=a.first_round,
                     workers=a.workers)
    if not final.exists():
        print(f"stopped before the budget ended; run the same command again to continue ({a.out})")
        return 0
    den = load_checkpoint(final)
    den.train_shape = shape  # one physical recording (same-view training stores each frame twice)
    den.provenance.update({
        "source": "napari-unet-att generalist pretraining",
        "normalization": "input",  # each recording is normalised by its own statistics, as in training
        "trained_on": FAMILY_DESCRIPTION,
        "recordings": f"{den.step // a.round_steps + 1} rounds (from round {a.first_round}) of {a.pool} "
                      f"simulated {shape} recordings "
                      f"(seeds from napari_unet_att.training.pretraining.PRETRAIN_SEED0 = 1000000 up)",
        "targets": TARGET_TEXT[a.target_view],
        "command": "python scripts/train_generalist.py " + " ".join(shlex.quote(x) for x in (argv or sys.argv[1:])),
        "steps": int(den.step),
    })
    den.provenance.pop("sources", None)  # hundreds of synthetic names say less than `recordings`
    save_checkpoint(final, den)
    print(f"finished: {den.describe()} ({time.time() - t0:.0f} s in this sitting)")
    if a.install:
        dest = pretrained_path(a.mode, a.preset, must_exist=False)
        dest.parent.mkdir(parents=True, exist_ok=True)
        save_checkpoint(dest, den)
        print(f"installed as {dest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
