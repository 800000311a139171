"""Command line: ``napari-unet-att {train,denoise,evaluate,info,export,demo}``.

The arguments are :mod:`napari_unet_att.cli_args`; this module runs the commands.

Every subcommand builds the same config objects as the napari widgets and calls the same
engine functions. A :class:`~napari_unet_att.errors.UserError` ends the command with one line on
stderr and exit code 2 (a traceback only with ``--debug``); outputs are written atomically, so
a failed or interrupted command leaves no partial file.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import time
import traceback
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from .cli_args import TRAIN_WORDING, build_parser
from .config import InferConfig, TrainConfig, run_to_end
from .errors import InputError, InputWarning, UserError
from .runtime.signals import Interrupted, StopSignals, signal_name

EXIT_USER_ERROR = 2
# What each command can do about running out of memory: only options it actually has.
_MEMORY_HINTS = {
    "train": "use smaller patches (--patch-t / --patch-xy) or a smaller --batch-size",
    "denoise": "use smaller tiles (--tile-t) or a smaller --memory-gb",
    "evaluate": "the stacks (and ROI image) must fit in memory together; evaluate a shorter crop of them",
}
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


def _read_inputs(paths: Sequence[str], channel: int | None, axes: str | None = None, series: int | None = None) -> list:
    from .stackio import read_stack

    return [read_stack(p, channel=channel, lazy=True, axes=axes, series=series) for p in paths]


def _expand_inputs(args: argparse.Namespace) -> None:
    """Replace folders among ``args.inputs`` by the TIFF files in them (before anything else)."""
    from .stackio import expand_inputs

    args.inputs = expand_inputs(args.inputs)


# -- train ---------------------------------------------------------------------------------
# TrainConfig field -> the train option that sets it (None: not given) and the field's value then.
_TRAIN_OPTIONS = {
    "mode": ("mode", None), "preset": ("preset", None), "seed": ("seed", None), "steps": ("steps", None),
    "seconds": ("seconds", None), "patch_t": ("patch_t", None), "patch_xy": ("patch_xy", None),
    "batch_size": ("batch_size", None), "lr": ("lr", None), "flip_backward": ("flip_backward", False),
    "amp": ("no_amp", False),
}


def train_config(args: argparse.Namespace) -> tuple[TrainConfig, set[str]]:
    """The run's :class:`TrainConfig` from the train options, and the settings the user gave."""
    given = {name for name, (dest, unset) in _TRAIN_OPTIONS.items() if getattr(args, dest) != unset}
    d = TrainConfig()
    cfg = TrainConfig(
        mode=args.mode or d.mode, preset=args.preset or d.preset, steps=args.steps, seconds=args.seconds,
        patch_t=args.patch_t, patch_xy=args.patch_xy, batch_size=args.batch_size, lr=args.lr,
        seed=d.seed if args.seed is None else args.seed, device=args.device, flip_backward=args.flip_backward,
        checkpoint_every=args.checkpoint_every, amp=not args.no_amp, registration=args.registration,
    )
    return cfg, given


def cmd_train(args: argparse.Namespace) -> int:
    from .runtime.distributed import dist_env, shutdown
    from .training import FINAL_NAME, Trainer

    cfg, given = train_config(args)
    _expand_inputs(args)
    stacks = _read_inputs(args.inputs, args.channel, args.axes, args.series)
    trainer = Trainer(stacks, cfg, out_dir=args.out, resume=args.resume, init=args.init, sources=args.inputs,
                      given=given, wording=TRAIN_WORDING)
    total = cfg.steps if cfg.steps is not None else (None if cfg.seconds else cfg.resolved().steps)
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

    gen = trainer.run(started=args.started)  # a --seconds budget bounds the whole command
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
    from .training import LAST_NAME

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
    from .inference.frame_means import resolve_output_dtype
    from .model.pretrained import load_model
    from .modes import split_views
    from .runtime.distributed import shard
    from .stackio import read_stack
    from .stackio.outputs import check_denoise_outputs, output_nbytes

    _expand_inputs(args)
    den = load_model(args.model, mode=args.mode)
    cfg = InferConfig(device=args.device, output_dtype="float32" if args.float32 else args.dtype,
                      tile_t=args.tile_t, overlap=args.overlap, memory_gb=args.memory_gb,
                      batch_size=args.batch_size, normalization="input" if args.input_norm else "model", tta=args.tta,
                      half_rate=args.half_rate, smoothing=args.smoothing,
                      registration=args.registration, keep_average=args.keep_average, strips=args.strips,
                      line_phase=args.line_phase, give_back=args.give_back, mirrored_output=args.mirrored_output)
    outs = _output_paths(args.inputs, args.out)
    # Every output checked before the first is written: none is an input, no two collide, the
    # folders are writable and the disk holds all of them.
    def size(path: str) -> int:  # (each stack let go at once: no file held open per input)
        stack = read_stack(path, channel=args.channel, lazy=True, axes=args.axes, series=args.series)
        shape = split_views(stack, den.mode, den.flip_backward, cfg.mirrored_output)[2]  # (merged: half the rows)
        return output_nbytes(stack, resolve_output_dtype(stack, cfg)[0].output_dtype == "float32", shape)

    sizes = [size(p) for p in args.inputs]
    check_denoise_outputs(args.inputs, outs, overwrite=args.overwrite, nbytes=sizes)
    # Under torchrun each rank denoises its share of the files (one GPU per rank).
    for src, dst in shard(list(zip(args.inputs, outs, strict=True))):
        # One bar for every phase (motion measured in frames, the network in tiles, the time averages in passes
        # over the frames): a percentage, not a count of mixed units; the phases are named above it.
        bar = _LazyBar(None, Path(src).name, "step", percent=True)
        t0 = time.perf_counter()

        def show(ev, bar=bar) -> None:
            if ev.message:
                bar.write(ev.message)
            bar.total = ev.total
            bar.n = ev.done
            if ev.frames_per_s > 0:  # the network's speed (the other phases report none)
                bar.set_postfix({"frames/s": f"{ev.frames_per_s:.1f}"}, refresh=False)
            bar.refresh()

        try:
            run_to_end(iter_denoise_file(src, dst, den, cfg, channel=args.channel, axes=args.axes,
                                         series=args.series), show)
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
        return np.asarray(read_stack(path, channel=args.channel, lazy=True, axes=args.axes, series=args.series))

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


COMMANDS = {"train": cmd_train, "denoise": cmd_denoise, "evaluate": cmd_evaluate, "info": cmd_info,
            "export": cmd_export, "demo": cmd_demo}


@contextlib.contextmanager
def _warnings_as_lines(command: str) -> Iterator[None]:
    """Print the engine's :class:`InputWarning` as one line (``napari-unet-att CMD: warning: ...``).

    Each message once (a file read twice in a run is reported once), whatever ``PYTHONWARNINGS``
    says: it tells the user what was done with their data, like an error does.
    """
    with warnings.catch_warnings():
        other = warnings.showwarning

        def show(message: Any, category: type[Warning], *rest: Any) -> None:
            if issubclass(category, InputWarning):
                print(f"napari-unet-att {command}: warning: {message}", file=sys.stderr)
            else:
                other(message, category, *rest)

        warnings.showwarning = show
        warnings.simplefilter("default", InputWarning)
        yield


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    started = time.perf_counter()
    args = build_parser().parse_args(argv)
    args.started = started
    try:
        with StopSignals() as args.stop_signals, _warnings_as_lines(args.command):
            code = int(COMMANDS[args.command](args) or 0)
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
