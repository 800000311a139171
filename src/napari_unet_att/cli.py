"""Command line: ``napari-unet-att {train,denoise,evaluate,info,export,demo}``.

Every subcommand builds the same config objects as the napari widgets and calls the same
engine functions. A :class:`~napari_unet_att.errors.UserError` ends the command with one line on
stderr and exit code 2 (a traceback only with ``--debug``); outputs are written atomically, so
a failed or interrupted command leaves no partial file.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import __version__
from .config import MODE_HELP, MODES, PRESETS, InferConfig, TrainConfig, run_to_end
from .errors import InputError, UserError
from .runtime.signals import Interrupted, StopSignals, signal_name

EXIT_USER_ERROR = 2
# What each command can do about running out of memory: only options it actually has.
_MEMORY_HINTS = {
    "train": "use smaller patches (--patch-t / --patch-xy) or a smaller --batch-size",
    "denoise": "use smaller tiles (--tile-t) or a smaller --memory-gb",
    "evaluate": "the stacks (and ROI image) must fit in memory together; evaluate a shorter crop of them",
}
DEMO_OUT = "napari-unet-att-demo"  # also in .gitignore: the README's first command leaves a clone clean
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 128 + 13  # what a shell reports for a program ended by SIGPIPE


def _progress_bar(total: float | None, desc: str, unit: str, percent: bool = False):
    from tqdm.auto import tqdm

    from .runtime.distributed import dist_env

    env = dist_env()
    if env.enabled:
        desc = f"[rank {env.rank}] {desc}"
    fmt = "{l_bar}{bar}| {elapsed}<{remaining}{postfix}" if percent else None
    return tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, file=sys.stderr, leave=True, bar_format=fmt)


class _LazyBar:
    """A progress bar drawn from its first use on: a run that fails validation prints only its error.

    The engine generators validate their input before their first event, so nothing (not even
    an empty ``0tile [00:00]`` bar) reaches the terminal ahead of a one-line error.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        object.__setattr__(self, "_args", (args, kwargs))
        object.__setattr__(self, "_bar", None)

    def _get(self) -> Any:
        if self._bar is None:
            args, kwargs = self._args
            object.__setattr__(self, "_bar", _progress_bar(*args, **kwargs))
        return self._bar

    def __getattr__(self, name: str) -> Any:
        return getattr(self._get(), name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._get(), name, value)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _read_inputs(paths: Sequence[str], channel: int | None, axes: str | None = None) -> list:
    from .stackio import read_stack

    return [read_stack(p, channel=channel, lazy=True, axes=axes) for p in paths]


def _expand_inputs(args: argparse.Namespace) -> None:
    """Replace folders among ``args.inputs`` by the TIFF files in them (before anything else)."""
    from .stackio import expand_inputs

    args.inputs = expand_inputs(args.inputs)


# -- train ---------------------------------------------------------------------------------
def cmd_train(args: argparse.Namespace) -> int:
    from .runtime.distributed import dist_env, shutdown
    from .training.trainer import FINAL_NAME, Trainer

    cfg = TrainConfig(
        mode=args.mode, preset=args.preset, steps=args.steps, seconds=args.seconds, patch_t=args.patch_t,
        patch_xy=args.patch_xy, batch_size=args.batch_size, lr=args.lr, seed=args.seed, device=args.device,
        flip_backward=args.flip_backward, checkpoint_every=args.checkpoint_every, amp=not args.no_amp,
    )
    _expand_inputs(args)
    stacks = _read_inputs(args.inputs, args.channel, args.axes)
    trainer = Trainer(stacks, cfg, out_dir=args.out, resume=args.resume, init=args.init, sources=args.inputs)
    total = cfg.steps if cfg.steps is not None else (None if cfg.seconds else cfg.resolved()["steps"])
    bar = _LazyBar(total if total else 100, "train", "step" if total else "%", percent=not total)
    state = {"last": 0}

    def show(ev) -> None:
        if ev.message:
            bar.write(ev.message)
        if ev.step <= 0:
            return
        if total:
            bar.update(max(ev.step - state["last"], 0))
        else:
            bar.n = min(100, int(100 * ev.fraction))
        state["last"] = ev.step
        post = {"step": ev.step, "loss": f"{ev.loss:.4f}", "it/s": f"{ev.steps_per_s:.2f}"}
        if ev.val_loss is not None:
            post["val"] = f"{ev.val_loss:.4f}"
        bar.set_postfix(post, refresh=not total)  # percent mode moves bar.n by hand: redraw here

    gen = trainer.run()
    # The first SIGINT / SIGTERM inside the loop ends the current step and saves (the loop's own
    # stop); one before the loop, or a second one, interrupts (Interrupted, handled by main).
    args.stop_signals.cooperate(trainer.request_stop)
    try:
        den = run_to_end(gen, show)
    except KeyboardInterrupt as exc:
        # Raised inside the loop or here: closing the generator runs its final save if it is still
        # suspended; an exhausted generator has no return value to use, so report from the trainer.
        gen.close()
        signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGINT
        raise Interrupted(signum, _saved_note(trainer, args.out)) from None
    finally:
        args.stop_signals.cooperate(None)
        bar.close()
        shutdown()
    if not dist_env().is_main:
        return args.stop_signals.exit_code or 0
    final = Path(args.out) / FINAL_NAME
    if trainer.saved is None:
        if args.stop_signals.signum is not None:
            raise Interrupted(args.stop_signals.signum, _saved_note(trainer, args.out))
        raise UserError(f"trained 0 steps (the run in {args.resume} had already used its budget); no model was "
                        "written: give --steps or --seconds to train further")
    print(json.dumps({"model": str(final), "steps": den.step, "description": den.describe(),
                      "val_loss": trainer.history["val_loss"][-1] if trainer.history["val_loss"] else None}))
    if args.stop_signals.signum is not None:
        print(f"napari-unet-att train: interrupted by {signal_name(args.stop_signals.signum)}; "
              f"{_saved_note(trainer, args.out)}", file=sys.stderr)
        return args.stop_signals.exit_code
    return 0


def _saved_note(trainer: Any, out: str) -> str:
    """What an interrupted training run left behind, for the one line the user sees."""
    from .training.trainer import LAST_NAME

    if trainer.saved is not None:
        return f"the model trained so far (step {trainer.denoiser.step}) is saved in {trainer.saved}"
    if trainer.last_saved_step is not None:
        return f"{Path(out) / LAST_NAME} (step {trainer.last_saved_step}) is kept"
    return "nothing was trained yet; no model was written"


# -- denoise -------------------------------------------------------------------------------
def _output_paths(inputs: Sequence[str], out: str) -> list[Path]:
    """One output per input: ``out`` itself for one input, ``out/<stem>_denoised.tif`` for several."""
    out_p = Path(out)
    if len(inputs) == 1 and out_p.suffix.lower() in (".tif", ".tiff", ".zarr"):
        return [out_p]
    if out_p.suffix.lower() in (".tif", ".tiff"):
        raise InputError(f"{len(inputs)} inputs need a directory for --out, not the file name {out}")
    return [out_p / f"{Path(p).stem}_denoised.tif" for p in inputs]


def cmd_denoise(args: argparse.Namespace) -> int:
    from .inference.files import iter_denoise_file
    from .model.pretrained import load_model
    from .runtime.distributed import shard
    from .stackio import read_stack
    from .stackio.outputs import check_denoise_outputs, output_nbytes

    _expand_inputs(args)
    den = load_model(args.model, mode=args.mode)
    cfg = InferConfig(device=args.device, output_dtype="float32" if args.float32 else "input",
                      tile_t=args.tile_t, memory_gb=args.memory_gb, batch_size=args.batch_size,
                      normalization="input" if args.input_norm else "model", tta=args.tta,
                      half_rate=args.half_rate)
    outs = _output_paths(args.inputs, args.out)
    # Every output checked before the first is written: none is an input, no two collide, the
    # folders are writable and the disk holds all of them.
    sizes = [output_nbytes(read_stack(p, channel=args.channel, lazy=True, axes=args.axes), args.float32)
             for p in args.inputs]
    check_denoise_outputs(args.inputs, outs, overwrite=args.overwrite, nbytes=sizes)
    # Under torchrun each rank denoises its share of the files (one GPU per rank).
    for src, dst in shard(list(zip(args.inputs, outs, strict=True))):
        bar = _LazyBar(None, Path(src).name, "tile")
        t0 = time.perf_counter()

        def show(ev, bar=bar) -> None:
            if ev.message:
                bar.write(ev.message)
            bar.total = ev.total
            bar.n = ev.done
            bar.set_postfix({"frames/s": f"{ev.frames_per_s:.1f}"}, refresh=True)

        try:
            run_to_end(iter_denoise_file(src, dst, den, cfg, channel=args.channel, axes=args.axes), show)
        finally:
            bar.close()
        print(json.dumps({"input": src, "output": str(dst), "seconds": round(time.perf_counter() - t0, 2)}))
    return 0


# -- evaluate ------------------------------------------------------------------------------
def cmd_evaluate(args: argparse.Namespace) -> int:
    import numpy as np

    from .evaluation.metrics import evaluate
    from .stackio import read_stack

    def read(path: str) -> np.ndarray:
        return np.asarray(read_stack(path, channel=args.channel, lazy=True, axes=args.axes))

    den = read(args.denoised)
    ref = read(args.reference) if args.reference else None
    raw = read(args.raw) if args.raw else None
    masks, rois_used = None, None
    if args.rois:
        from .stackio.rois import read_rois

        masks, rois_used = read_rois(args.rois, den.shape[1:])
        if ref is None:  # traces are compared with the reference's: say so rather than print nothing
            rois_used += "; trace correlation needs --reference (a clean or high-SNR stack)"
        print(f"ROIs: {rois_used}", file=sys.stderr)
    for name, arr in (("reference", ref), ("raw", raw)):
        if arr is not None and arr.shape != den.shape:
            raise InputError(f"--{name} has shape {arr.shape} but the denoised stack has {den.shape}")
    result = evaluate(den, reference=ref, raw=raw, masks=masks)
    if rois_used is not None:
        result["rois"] = rois_used
    if not args.per_frame:
        result = _scalars_only(result)
    print(json.dumps(result, indent=2))
    return 0


def _scalars_only(d: Any) -> Any:
    """Drop per-frame lists so the printed JSON stays readable."""
    if isinstance(d, dict):
        return {k: _scalars_only(v) for k, v in d.items() if not isinstance(v, list)}
    return d


# -- info ----------------------------------------------------------------------------------
def cmd_info(args: argparse.Namespace) -> int:
    from .model.pretrained import load_model

    den = load_model(args.model, mode=args.mode)
    print(den.describe())
    print(json.dumps({"norm": den.norm.to_dict(), "provenance": den.provenance}, indent=2, default=str))
    return 0


# -- export --------------------------------------------------------------------------------
def cmd_export(args: argparse.Namespace) -> int:
    from .model.pretrained import load_model
    from .zoo import export_bioimageio

    den = load_model(args.model, mode=args.mode)
    sample = None
    if args.sample:
        from .stackio import read_stack

        sample = read_stack(args.sample, channel=args.channel, lazy=True)
    out = export_bioimageio(den, args.out, sample=sample, min_size=args.min_tile, name=args.name)
    print(json.dumps({"model": args.model, "format": args.format, "package": str(out)}))
    return 0


# -- demo ----------------------------------------------------------------------------------
def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    report = run_demo(out_dir=args.out, train_seconds=args.train_seconds, device=args.device,
                      log=lambda s: print(s, file=sys.stderr))
    print(json.dumps(report, indent=2))
    return 0


# -- parser --------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="napari-unet-att",
        description="Self-supervised UNet-Att denoising of two-photon calcium-imaging time-lapses.",
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a model on one or more noisy stacks (no clean data needed)")
    t.add_argument("inputs", nargs="+", metavar="INPUT", help="TIFF stacks (T, Y, X), or folders of them")
    t.add_argument("--mode", choices=MODES, default="temporal",
                   help="; ".join(f"{k}: {v}" for k, v in MODE_HELP.items()))
    t.add_argument("--preset", choices=list(PRESETS), default="fast",
                   help="; ".join(f"{k}: {v.description}" for k, v in PRESETS.items()))
    t.add_argument("--out", required=True, help="output directory (model.pt and checkpoint-last.pt)")
    budget = t.add_mutually_exclusive_group()
    budget.add_argument("--seconds", type=float, help="training time budget")
    budget.add_argument("--steps", type=int, help="training step budget (default 2000)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    t.add_argument("--no-amp", action="store_true",
                   help="train in float32 (default: mixed precision on CUDA and on CPUs with native bfloat16)")
    t.add_argument("--resume", help="continue a run from its checkpoint-last.pt / model.pt")
    t.add_argument("--init", help="start from weights of a checkpoint (ours, DeepCAD-RT, DeepBID or UNet-Att .pth), "
                                  "or 'generalist': fine-tune the shipped pretrained model for --mode")
    t.add_argument("--patch-t", type=int, help="patch frames (network input)")
    t.add_argument("--patch-xy", type=int, help="patch rows = columns (network input)")
    t.add_argument("--batch-size", type=int)
    t.add_argument("--lr", type=float)
    t.add_argument("--channel", type=int, help="channel index for multichannel stacks")
    t.add_argument("--axes", help="the files' axes, one letter each, e.g. TYX, when their header is wrong (ImageJ "
                                   "files that call their frames channels or slices)")
    t.add_argument("--flip-backward", action="store_true",
                   help="mirrored mode: backward lines are stored x-reversed in the file")
    t.add_argument("--checkpoint-every", type=int, default=200, help="steps between periodic checkpoints")
    t.set_defaults(func=cmd_train)

    d = sub.add_parser("denoise", help="apply a model to one or more stacks")
    d.add_argument("inputs", nargs="+", metavar="INPUT", help="TIFF stacks, or folders of them")
    d.add_argument("--model", required=True,
                   help="checkpoint (ours, or a reference tool's .pth), or 'generalist': the shipped pretrained "
                        "model for --mode, no training needed")
    d.add_argument("--mode", choices=("temporal", "mirrored"), default="temporal",
                   help="with --model generalist: which shipped model (mirrored: a raw (T, 2N, N) bidirectional "
                        "scan); a checkpoint file brings its own mode")
    d.add_argument("--out", required=True, help="output TIFF (one input) or directory (several)")
    d.add_argument("--device", default="auto")
    d.add_argument("--float32", action="store_true", help="write float32 (default: the input's dtype, clipped)")
    d.add_argument("--overwrite", action="store_true",
                   help="replace outputs that exist already (default: refuse, as the napari dock does)")
    d.add_argument("--input-norm", action="store_true",
                   help="normalise with the input's own statistics instead of the model's")
    d.add_argument("--tile-t", type=int, help="frames per tile (default: as many as fit --memory-gb)")
    d.add_argument("--tta", type=int, default=1, choices=(1, 2, 4, 8),
                   help="average over this many flips / rotations of each frame (N times slower; 8: ~+0.3 dB)")
    d.add_argument("--half-rate", action="store_true",
                   help="temporal models: also denoise even and odd frames apart (the rate they were trained at) "
                        "and average (2x slower, ~+0.3-0.5 dB; the result is assembled in memory)")
    d.add_argument("--memory-gb", type=float,
                   help="memory budget of one forward pass in GB (default: 1 on CPU; min(8, half free) on a GPU)")
    d.add_argument("--batch-size", type=int, default=1, help="tiles per forward pass (GPU)")
    d.add_argument("--channel", type=int)
    d.add_argument("--axes", help="the files' axes, one letter each, e.g. TYX, when their header is wrong (ImageJ "
                                   "files that call their frames channels or slices)")
    d.set_defaults(func=cmd_denoise)

    e = sub.add_parser("evaluate", help="print JSON metrics of a denoised stack against a reference")
    e.add_argument("denoised")
    e.add_argument("--reference", help="clean or high-SNR reference stack (same shape)")
    e.add_argument("--raw", help="the raw stack, to report its metrics beside the denoised ones")
    e.add_argument("--rois", help="ROIs for trace correlations: a 2D integer label image (Y, X) (.tif, .npy; 0 = "
                                  "background) or a napari Shapes export (.csv)")
    e.add_argument("--per-frame", action="store_true", help="include per-frame lists")
    e.add_argument("--channel", type=int)
    e.add_argument("--axes", help="the files' axes, one letter each, e.g. TYX, when their header is wrong (ImageJ "
                                   "files that call their frames channels or slices)")
    e.set_defaults(func=cmd_evaluate)

    i = sub.add_parser("info", help="describe a checkpoint")
    i.add_argument("model", help="checkpoint, or 'generalist'")
    i.add_argument("--mode", choices=("temporal", "mirrored"), default="temporal",
                   help="with 'generalist': which shipped model")
    i.set_defaults(func=cmd_info)

    x = sub.add_parser("export", help="write a model as a BioImage Model Zoo package (bioimage.io, .zip)")
    x.add_argument("model", help="checkpoint (ours, or a reference tool's .pth with stored statistics), or "
                                 "'generalist'")
    x.add_argument("--mode", choices=("temporal", "mirrored"), default="temporal",
                   help="with 'generalist': which shipped model")
    x.add_argument("--format", choices=("bioimageio",), default="bioimageio", help="package format")
    x.add_argument("--out", required=True, help="output package, NAME.zip")
    x.add_argument("--sample", help="TIFF to cut the package's test input from (default: the shipped sample)")
    x.add_argument("--channel", type=int, help="channel of --sample")
    x.add_argument("--min-tile", type=int, default=64,
                   help="smallest valid tile per axis (t, y, x) in the package; a multiple of 8")
    x.add_argument("--name", help="model name in the package")
    x.set_defaults(func=cmd_export)

    m = sub.add_parser("demo", help="the main job on the shipped sample data: the pretrained generalists against "
                                     "the best 3D Gaussian, scored with the ground truth")
    m.add_argument("--out", default=DEMO_OUT, help=f"output directory (default: ./{DEMO_OUT})")
    m.add_argument("--train-seconds", type=float, default=0.0,
                   help="fine-tune each generalist on its sample for this long first (default: zero-shot)")
    m.add_argument("--device", default="auto")
    m.set_defaults(func=cmd_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with StopSignals() as args.stop_signals:
            code = int(args.func(args) or 0)
        sys.stdout.flush()  # a piped stdout is block-buffered: a closed pipe shows up here, not at exit
        return code
    except UserError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"napari-unet-att {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt as exc:
        if not isinstance(exc, Interrupted):  # a Ctrl-C outside our handler (not the main thread)
            exc = Interrupted(signal.SIGINT)
        print(f"napari-unet-att {args.command}: {exc}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:
        # The reader went away (`info model.pt | head -1`): stop quietly, as a killed-by-SIGPIPE
        # program would (exit 141), and keep Python's final flush from failing on the closed pipe.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except MemoryError:
        if args.debug:
            traceback.print_exc()
        print(f"napari-unet-att {args.command}: error: out of memory; {_MEMORY_HINTS.get(args.command, '')}"
              .rstrip("; "), file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as exc:
        # File-system problems (permissions, missing directories) are the user's to fix.
        if args.debug:
            traceback.print_exc()
        print(f"napari-unet-att {args.command}: error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "),
              file=sys.stderr)
        return EXIT_USER_ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
