"""The command line's arguments: one sub-parser per command of :mod:`napari_unet_att.cli`.

Defaults come from the config dataclasses (:func:`~napari_unet_att.config.field_default`), so the
command line, the widgets and the engine agree on them.
"""

from __future__ import annotations

import argparse

from . import __version__
from .config import (
    DEFAULT_STEPS,
    DEMO_OUT,
    GIVE_BACK_CHOICES,
    KEEP_AVERAGE_CHOICES,
    LINE_PHASE_CHOICES,
    MODE_HELP,
    MODES,
    PRESETS,
    REGISTRATION_CHOICES,
    SMOOTHING_CHOICES,
    STRIPS_CHOICES,
    TTA_CHOICES,
    InferConfig,
    TrainConfig,
    field_default,
)
from .wording import Wording

GENERALIST_MODES = ("temporal", "mirrored")  # modes with a shipped generalist model
AXES_HELP = ("the files' axes, one letter each, e.g. TYX, when their header is wrong (ImageJ files that call their "
             "frames channels or slices)")
SERIES_HELP = ("the image series to read from TIFFs that hold several (OME / Micro-Manager positions); default 0, "
               "with a warning naming the others")


def smoothing_arg(text: str) -> str | tuple[float, ...]:
    """``--smoothing``: 'auto', 'off', 'T,XY' (two sigmas) or 'T,XY,SPLIT,TC' (and the two-scale split); checked by
    InferConfig."""
    if text in SMOOTHING_CHOICES:
        return text
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) not in (2, 4):
        raise argparse.ArgumentTypeError(f"expected auto, off, two sigmas T,XY (e.g. 4,0) or four T,XY,SPLIT,TC "
                                         f"(e.g. 16,0.5,4,2), got {text!r}")
    return values


def _named_or_number(text: str, names: tuple[str, ...], number: type, what: str) -> str | int | float:
    """One of ``names``, or ``text`` read as a ``number`` (``what`` it is, for the error); checked by InferConfig."""
    if text in names:
        return text
    try:
        return number(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {', '.join(names)} or {what}, got {text!r}") from None


def strips_arg(text: str) -> str | int:
    """``--strips``: 'auto', 'off' or a number of strips (checked by InferConfig)."""
    return _named_or_number(text, STRIPS_CHOICES, int, "a number of strips")


def line_phase_arg(text: str) -> str | float:
    """``--line-phase``: 'auto', 'off' or an offset in pixels (checked by InferConfig)."""
    return _named_or_number(text, LINE_PHASE_CHOICES, float, "an offset in pixels")


def option_name(setting: str) -> str:
    """The ``train`` option that sets a TrainConfig field: ``patch_t`` -> ``--patch-t``."""
    return "--" + setting.replace("_", "-")


#: The command line's words in the trainer's refusals to resume a run: its options.
TRAIN_WORDING = Wording(resume="--resume", init="--init", start_from_weights="start a new run from its weights with "
                        "--init", names={"amp": "--no-amp"}, name_style=option_name, assign=" ",
                        leave_out=("leave this option out", "leave these options out"))


def _train_args(t: argparse.ArgumentParser) -> None:
    t.add_argument("inputs", nargs="+", metavar="INPUT", help="TIFF stacks (T, Y, X), or folders of them")
    # mode, preset and seed default to None here (TrainConfig's default is filled in by the command),
    # so a resumed run can tell an option the user gave from one left out (cli.train_config).
    t.add_argument("--mode", choices=MODES,
                   help=f"(default {field_default(TrainConfig, 'mode')}) "
                        + "; ".join(f"{k}: {v}" for k, v in MODE_HELP.items()))
    t.add_argument("--preset", choices=list(PRESETS),
                   help=f"(default {field_default(TrainConfig, 'preset')}) "
                        + "; ".join(f"{k}: {v.description}" for k, v in PRESETS.items()))
    t.add_argument("--out", required=True, help="output directory (model.pt and checkpoint-last.pt)")
    budget = t.add_mutually_exclusive_group()
    budget.add_argument("--seconds", type=float, help="training time budget")
    budget.add_argument("--steps", type=int, help=f"training step budget (default {DEFAULT_STEPS})")
    t.add_argument("--seed", type=int, help=f"random seed (default {field_default(TrainConfig, 'seed')})")
    t.add_argument("--device", default=field_default(TrainConfig, "device"), help="auto, cpu, cuda or cuda:N")
    t.add_argument("--no-amp", action="store_true",
                   help="train in float32 (default: mixed precision on CUDA and on CPUs with native bfloat16)")
    t.add_argument("--resume", help="continue a run from its checkpoint-last.pt / model.pt (with its own mode, "
                                    "preset, patch, batch and seed; a new --steps / --seconds / --lr may be given)")
    t.add_argument("--init", help="start from weights of a checkpoint (ours, DeepCAD-RT, DeepBID or UNet-Att .pth), "
                                  "or 'generalist': fine-tune the shipped pretrained model for --mode")
    t.add_argument("--patch-t", type=int, help="patch frames (network input)")
    t.add_argument("--patch-xy", type=int, help="patch rows = columns (network input)")
    t.add_argument("--batch-size", type=int)
    t.add_argument("--lr", type=float)
    t.add_argument("--channel", type=int, help="channel index for multichannel stacks")
    t.add_argument("--axes", help=AXES_HELP)
    t.add_argument("--series", type=int, help=SERIES_HELP)
    t.add_argument("--flip-backward", action="store_true",
                   help="mirrored mode: backward lines are stored x-reversed in the file")
    t.add_argument("--registration", choices=REGISTRATION_CHOICES, default=field_default(TrainConfig, "registration"),
                   help="'auto': where frames move, train on them registered by whole pixels (as denoise does by "
                        "default), so that a temporal pair shows the same tissue, and a bidirectional scanner's "
                        "backward lines put back in place where they sit beside the forward ones (as denoise "
                        "--line-phase auto); 'off': train on them as they are")
    t.add_argument("--checkpoint-every", type=int, default=field_default(TrainConfig, "checkpoint_every"),
                   help="steps between periodic checkpoints")


def _denoise_args(d: argparse.ArgumentParser) -> None:
    d.add_argument("inputs", nargs="+", metavar="INPUT", help="TIFF stacks, or folders of them")
    d.add_argument("--model", required=True,
                   help="checkpoint (ours, or a reference tool's .pth), or 'generalist': the shipped pretrained "
                        "model for --mode, no training needed")
    d.add_argument("--mode", choices=GENERALIST_MODES, default=GENERALIST_MODES[0],
                   help="with --model generalist: which shipped model (mirrored: a raw (T, 2N, N) bidirectional "
                        "scan); a checkpoint file brings its own mode")
    d.add_argument("--out", required=True, help="output TIFF (one input) or directory (several)")
    d.add_argument("--device", default=field_default(InferConfig, "device"))
    dtype = d.add_mutually_exclusive_group()
    dtype.add_argument("--dtype", choices=("auto", "float32", "input"), default="auto",
                       help="the output's type: the input's (integers clipped and rounded), float32, or auto "
                            "(default): the input's integer type where its noise SD is at least 50 counts, so that "
                            "whole counts lose nothing measurable, float32 otherwise (photon counts, low gain)")
    dtype.add_argument("--float32", action="store_true", help="the same as --dtype float32")
    d.add_argument("--overwrite", action="store_true",
                   help="replace outputs that exist already (default: refuse, as the napari dock does)")
    d.add_argument("--mirrored-output", choices=("interleaved", "merged"),
                   default=field_default(InferConfig, "mirrored_output"),
                   help="a mirrored-scan model on a raw (T, 2N, N) scan: its forward and backward lines denoised "
                        "apart and written back in place (interleaved, the default), or the physical frames "
                        "(T, N, N), each line's two directions averaged, denoised in one pass (merged: faster)")
    d.add_argument("--input-norm", action="store_true",
                   help="normalise with the input's own statistics instead of the model's")
    d.add_argument("--tile-t", type=int, help="frames per tile (default: as many as fit --memory-gb)")
    d.add_argument("--overlap", type=int,
                   help="voxels by which neighbouring tiles overlap and are blended (default: 32, or the network's "
                        "receptive field where that is smaller)")
    d.add_argument("--tta", type=int, default=field_default(InferConfig, "tta"), choices=TTA_CHOICES,
                   help="average over this many flips / rotations of each frame (N times slower; 8: ~+0.3 dB)")
    d.add_argument("--half-rate", action="store_true",
                   help="temporal models: also denoise even and odd frames apart (the rate they were trained at) "
                        "and average (2x slower, ~+0.3-0.5 dB; the result is assembled in memory)")
    d.add_argument("--smoothing", type=smoothing_arg, default=field_default(InferConfig, "smoothing"),
                   help="Gaussian smoothing of the output: 'auto' (the amount under which the model's result on "
                        "the even frames best predicts the odd ones, along the motion that registration measured; "
                        "on still recordings blended with a Gaussian of the input where that predicts them clearly "
                        "better; fine and coarse detail over windows of their own where that predicts better; none "
                        "when the field of view moves otherwise), 'off', 'T,XY' (sigma in frames, pixels: the same "
                        "on every file) or 'T,XY,SPLIT,TC' (and the detail coarser than SPLIT px over TC frames, as "
                        "'auto' prints it). It lowers the transients' height somewhat (fast indicators, small "
                        "structures): 'off' where dF/F amplitudes matter more than the noise")
    d.add_argument("--registration", choices=REGISTRATION_CHOICES, default=field_default(InferConfig, "registration"),
                   help="'auto': where frames move fast, register them by whole pixels before denoising and move "
                        "every result frame back (rigid, one shift per frame); 'off': denoise as is")
    d.add_argument("--strips", type=strips_arg, default=field_default(InferConfig, "strips"),
                   help="non-rigid motion (the brain moving while a frame is scanned, or the tissue shearing from "
                        "frame to frame): 'auto' cuts each frame "
                        "into overlapping strips of 48 lines, denoised apart (each registered on its own) and "
                        "blended, where the shifts of the frames' top and bottom lines disagree beyond their error "
                        "(+2 to +5 dB under fast motion within frames, 1.5-2x the time; a bidirectional scan in whole "
                        "lines); 'off'; or a number of strips")
    d.add_argument("--line-phase", type=line_phase_arg, default=field_default(InferConfig, "line_phase"),
                   help="a bidirectional scanner's backward (odd) lines sitting beside the forward ones (its scan "
                        "phase): 'auto' measures the offset and, where it is over 0.2 px and 5x its error, moves "
                        "those lines back before denoising (the output keeps them there); 'off'; or the offset in "
                        "pixels (positive: the backward lines sit to the right)")
    d.add_argument("--keep-average", choices=KEEP_AVERAGE_CHOICES, default=field_default(InferConfig, "keep_average"),
                   help="'auto' (100+ frames): where the output's average over time (per pixel, "
                        "~500-frame chunks) misses the input's, put the difference back, smoothed and scaled as its "
                        "measured noise says (still fine detail a pretrained model blurs); 'off': the model's output "
                        "as is")
    d.add_argument("--give-back", choices=GIVE_BACK_CHOICES, default=field_default(InferConfig, "give_back"),
                   help="'auto': give back part of what the denoising took from each frame, at a cell's scale (3 px), "
                        "as much as Stein's unbiased risk estimate on a block of the recording says lowers the error "
                        "(fast transients under motion; two more network passes of a 40-frame block); 'off'")
    d.add_argument("--memory-gb", type=float,
                   help="memory budget of one forward pass in GB (default: 1 on CPU; min(8, half free) on a GPU)")
    d.add_argument("--batch-size", type=int, default=field_default(InferConfig, "batch_size"),
                   help="tiles per forward pass (GPU)")
    d.add_argument("--channel", type=int)
    d.add_argument("--axes", help=AXES_HELP)
    d.add_argument("--series", type=int, help=SERIES_HELP)


def _evaluate_args(e: argparse.ArgumentParser) -> None:
    e.add_argument("denoised")
    e.add_argument("--reference", help="clean or high-SNR reference stack (same shape)")
    e.add_argument("--raw", help="the raw stack, to report its metrics beside the denoised ones")
    e.add_argument("--rois", help="ROIs for trace correlations: a 2D integer label image (Y, X) (.tif, .npy; 0 = "
                                  "background) or a napari Shapes export (.csv)")
    e.add_argument("--per-frame", action="store_true", help="include per-frame lists")
    e.add_argument("--channel", type=int)
    e.add_argument("--axes", help=AXES_HELP)
    e.add_argument("--series", type=int, help=SERIES_HELP)


def _info_args(i: argparse.ArgumentParser) -> None:
    i.add_argument("model", help="checkpoint, or 'generalist'")
    i.add_argument("--mode", choices=GENERALIST_MODES, default=GENERALIST_MODES[0],
                   help="with 'generalist': which shipped model")


def _export_args(x: argparse.ArgumentParser) -> None:
    x.add_argument("model", help="checkpoint (ours, or a reference tool's .pth with stored statistics), or "
                                 "'generalist'")
    x.add_argument("--mode", choices=GENERALIST_MODES, default=GENERALIST_MODES[0],
                   help="with 'generalist': which shipped model")
    x.add_argument("--format", choices=("bioimageio",), default="bioimageio", help="package format")
    x.add_argument("--out", required=True, help="output package, NAME.zip")
    x.add_argument("--sample", help="TIFF to cut the package's test input from (default: the shipped sample)")
    x.add_argument("--channel", type=int, help="channel of --sample")
    x.add_argument("--min-tile", type=int, default=64,
                   help="smallest valid tile per axis (t, y, x) in the package; a multiple of 8")
    x.add_argument("--name", help="model name in the package")


def _demo_args(m: argparse.ArgumentParser) -> None:
    m.add_argument("--out", default=DEMO_OUT, help=f"output directory (default: ./{DEMO_OUT})")
    m.add_argument("--train-seconds", type=float, default=0.0,
                   help="fine-tune each generalist on its sample for this long first (default: zero-shot)")
    m.add_argument("--device", default="auto")


# command: (help, its arguments); the handlers are :data:`napari_unet_att.cli.COMMANDS`
SUBCOMMANDS = {
    "train": ("train a model on one or more noisy stacks (no clean data needed)", _train_args),
    "denoise": ("apply a model to one or more stacks", _denoise_args),
    "evaluate": ("print JSON metrics of a denoised stack against a reference", _evaluate_args),
    "info": ("describe a checkpoint", _info_args),
    "export": ("write a model as a BioImage Model Zoo package (bioimage.io, .zip)", _export_args),
    "demo": ("the main job on the shipped sample data: the pretrained generalists against the best 3D Gaussian, "
             "scored with the ground truth", _demo_args),
}


def build_parser() -> argparse.ArgumentParser:
    """The ``napari-unet-att`` parser; ``args.command`` names the sub-command chosen."""
    p = argparse.ArgumentParser(
        prog="napari-unet-att",
        description="Self-supervised UNet-Att denoising of two-photon calcium-imaging time-lapses.",
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = p.add_subparsers(dest="command", required=True)
    for name, (help_text, add_args) in SUBCOMMANDS.items():
        add_args(sub.add_parser(name, help=help_text))
    return p
