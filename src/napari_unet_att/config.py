"""Configuration objects shared by the CLI, the widgets and the tests.

One dataclass per job (:class:`TrainConfig`, :class:`InferConfig`) and a table of model
presets. The UI layers only fill these in; the engine only reads them.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, Literal

from .errors import InputError

Mode = Literal["temporal", "mirrored", "rowsplit"]
MODES: tuple[str, ...] = ("temporal", "mirrored", "rowsplit")
MODE_HELP: dict[str, str] = {
    "temporal": "input = even frames, target = odd frames (DeepCAD / UNet-Att); any (T, Y, X) stack",
    "mirrored": "bidirectional scan stored as (T, 2N, N): forward lines (even rows) -> backward lines (odd rows); "
    "all frames kept, robust to motion (DeepBID MP-SSL)",
    "rowsplit": "ordinary scan: even rows -> odd rows of the same frames (DeepBID 'line' mode)",
}


@dataclass(frozen=True)
class Preset:
    """A named model size and the training defaults that suit it.

    Attributes
    ----------
    arch : {'unet_att', 'unet3d'}
        Network family (see :mod:`napari_unet_att.model.networks`).
    base_channels : int
        Channels of the first level (``f`` in METHODS.md); levels have f, 2f, 4f, 8f.
    patch_t, patch_xy : int
        Default training patch (frames, and rows = columns) in *network input* voxels.
    batch_size : int
        Patches per optimiser step.
    lr : float
        Adam learning rate.
    description : str
        One line for the UI.
    """

    arch: str
    base_channels: int
    patch_t: int
    patch_xy: int
    batch_size: int
    lr: float
    description: str


PRESETS: dict[str, Preset] = {
    "fast": Preset("unet_att", 8, 32, 64, 2, 2e-3,
                   "UNet-Att, f=8, for CPUs: ~1.6 steps/s with native bfloat16, ~0.55 without (2 cores)"),
    "paper": Preset("unet_att", 16, 64, 64, 1, 5e-4, "UNet-Att as published (f=16, 1.6 M parameters); GPU advised"),
    "unet3d": Preset("unet3d", 16, 32, 64, 2, 5e-4, "plain 3D UNet of DeepCAD-RT / DeepBID (f=16), lighter"),
}


def get_preset(name: str) -> Preset:
    """Look up a preset by name, with an error that lists the valid names."""
    try:
        return PRESETS[name]
    except KeyError:
        raise InputError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}") from None


def check_mode(mode: str) -> str:
    """Validate a self-supervision mode name."""
    if mode not in MODES:
        raise InputError(f"unknown mode {mode!r}; choose one of: {', '.join(MODES)}")
    return mode


# Seeds feed torch and numpy, and each distributed rank adds 1000 x its rank to it.
MAX_SEED = 2**32 - 1 - 2**20
DEFAULT_STEPS = 2000  # the step budget of a run given neither steps nor seconds
DEFAULT_CHECKPOINT_EVERY = 200  # steps between periodic checkpoints
WIDGET_PREVIEW_EVERY = 25  # the train widget's first-use preview interval (the engine's default is none)
TTA_CHOICES: tuple[int, ...] = (1, 2, 4, 8)  # test-time augmentation: how many D4 flips of (y, x) to average
REGISTRATION_CHOICES = ("auto", "off")  # InferConfig.registration's settings
KEEP_AVERAGE_CHOICES = ("auto", "off")  # InferConfig.keep_average's settings
# InferConfig's steps around the network pass, and how an inner job turns each off (InferConfig.inner)
POST_STEPS: dict[str, Any] = {"smoothing": "off", "registration": "off", "keep_average": "off", "half_rate": False,
                              "strips": "off", "line_phase": "off", "give_back": "off"}
GIVE_BACK_CHOICES = ("auto", "off")  # InferConfig.give_back's settings
LINE_PHASE_CHOICES = ("auto", "off")  # InferConfig.line_phase's named settings; else an offset in pixels
STRIPS_CHOICES = ("auto", "off")  # InferConfig.strips's named settings; else a number of strips
SMOOTHING_CHOICES = ("auto", "off")  # InferConfig.smoothing's named settings; else (sigma_t, sigma_xy)
DEMO_OUT = "napari-unet-att-demo"  # also in .gitignore: the README's first command leaves a clone clean


def field_default(cls: type, name: str) -> Any:
    """The default of dataclass ``cls``'s field ``name``: the CLI and the widgets read their defaults here.

    Examples
    --------
    >>> field_default(TrainConfig, "seed")
    0
    """
    for f in dataclasses.fields(cls):
        if f.name == name:
            if f.default is not dataclasses.MISSING:
                return f.default
            if f.default_factory is not dataclasses.MISSING:
                return f.default_factory()
            raise KeyError(f"{cls.__name__}.{name} has no default")
    raise KeyError(f"{cls.__name__} has no field {name!r}")


@dataclass
class TrainConfig:
    """Everything a training run needs besides the data.

    ``None`` for patch / batch / lr means "the preset's default". A run stops at
    whichever of ``steps`` / ``seconds`` comes first; with neither, :data:`DEFAULT_STEPS`.
    """

    mode: str = "temporal"
    preset: str = "fast"
    steps: int | None = None
    seconds: float | None = None
    patch_t: int | None = None
    patch_xy: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    accumulate: int = 1  # batches per optimiser step (gradient accumulation for small GPUs)
    # loss = w * L1 + (1 - w) * MSE. The papers use L1 + L2 (w = 0.5), but L1 estimates the median,
    # which lies below the mean for skewed few-photon noise: it darkens the output and cost 0.44 dB
    # at 2 photons/pixel (docs/benchmarks.md). MSE estimates the mean, which is what the target's
    # expectation (the clean signal) is.
    l1_weight: float = 0.0
    val_fraction: float = 0.1  # last part of each stack (in time) held out for validation
    val_every: int = 50  # steps between validation passes
    val_patches: int = 4
    swap: bool = True  # swap input / target with p = 0.5
    augment: bool = True  # random D4 transform of the (y, x) plane
    flip_backward: bool = False  # mirrored: backward lines stored x-mirrored by the acquisition software
    # 'auto': a moving recording is registered by whole pixels first (inference.registration), so that the
    # frames of a temporal pair show the same tissue, and a bidirectional scanner's backward lines are put back in
    # place where they sit beside the forward ones (inference.line_phase); 'off': train on the frames as they are
    registration: str = "auto"
    checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY  # steps between periodic checkpoints (0: only the final one)
    preview_every: int = 0  # steps between previews (0: none)
    preview_frames: tuple[int, int] | None = None  # (start, stop) frames of the first stack for the preview
    log_every: int = 1

    def __post_init__(self) -> None:
        check_mode(self.mode)
        get_preset(self.preset)
        if self.steps is not None and self.steps < 1:
            raise InputError(f"steps must be >= 1, got {self.steps}")
        if self.seconds is not None and not (math.isfinite(self.seconds) and self.seconds > 0):
            raise InputError(f"seconds must be a finite number > 0, got {self.seconds}")
        if self.lr is not None and not (math.isfinite(self.lr) and 0 < self.lr <= 10):
            raise InputError(f"lr (learning rate) must be a finite number in (0, 10], got {self.lr} (the presets use "
                             "about 1e-3)")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed <= MAX_SEED:
            raise InputError(f"seed must be an integer from 0 to {MAX_SEED}, got {self.seed!r}")
        for name in ("patch_t", "patch_xy", "batch_size"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise InputError(f"{name} must be an integer >= 1, got {value!r}")
        if self.checkpoint_every < 0 or self.accumulate < 1:
            raise InputError(f"checkpoint_every must be >= 0 and accumulate >= 1, got {self.checkpoint_every} and "
                             f"{self.accumulate}")
        if not 0.0 <= self.l1_weight <= 1.0:
            raise InputError(f"l1_weight must be within [0, 1], got {self.l1_weight}")
        if not 0.0 <= self.val_fraction < 0.5:
            raise InputError(f"val_fraction must be within [0, 0.5), got {self.val_fraction}")
        if self.registration not in REGISTRATION_CHOICES:
            raise InputError(f"registration must be 'auto' or 'off', got {self.registration!r}")

    def resolved(self) -> ResolvedTrainConfig:
        """The config with preset defaults and the default budget filled in (what checkpoints store)."""
        p = get_preset(self.preset)
        d = dataclasses.asdict(self)
        for k in ("patch_t", "patch_xy", "batch_size", "lr"):
            if d[k] is None:
                d[k] = getattr(p, k)
        if d["steps"] is None and d["seconds"] is None:
            d["steps"] = DEFAULT_STEPS
        return ResolvedTrainConfig(**d)


@dataclass(frozen=True)
class ResolvedTrainConfig:
    """A :class:`TrainConfig` with the preset's patch, batch and learning rate filled in.

    What the trainer reads, and (as :meth:`as_dict`) what checkpoints store as ``train_config``.
    The fields are :class:`TrainConfig`'s, in the same order; ``steps`` is only ``None`` when
    ``seconds`` is set. It has no defaults: it is only made by :meth:`TrainConfig.resolved` (and
    changed with :func:`dataclasses.replace`).
    """

    mode: str
    preset: str
    steps: int | None
    seconds: float | None
    patch_t: int
    patch_xy: int
    batch_size: int
    lr: float
    seed: int
    device: str
    amp: bool
    accumulate: int
    l1_weight: float
    val_fraction: float
    val_every: int
    val_patches: int
    swap: bool
    augment: bool
    flip_backward: bool
    registration: str
    checkpoint_every: int
    preview_every: int
    preview_frames: tuple[int, int] | None
    log_every: int

    def as_dict(self) -> dict[str, Any]:
        """The plain dict stored in checkpoints (``train_config``) and provenance."""
        return dataclasses.asdict(self)

    def merged(self, stored: dict[str, Any]) -> ResolvedTrainConfig:
        """This config with the values of ``stored`` (a checkpoint's ``train_config``) on top.

        Keys this version does not know (a newer file) are ignored; keys an older file lacks keep
        this config's values.
        """
        names = {f.name for f in dataclasses.fields(self)}
        return dataclasses.replace(self, **{k: v for k, v in stored.items() if k in names})


@dataclass
class InferConfig:
    """Tiled inference settings.

    ``tile_t=None`` (the default) picks the tile automatically: the width (whole frames up to
    ``max_tile_xy``, halves of it, or the fewest tiles across a frame) and length whose plan fits ``memory_gb``
    and computes the fewest voxels, overlaps included (``inference.tiles.resolve_tiles``; default budget: 1 GB of host
    memory on CPU, which bounds the process near 1.3 GB for any file; on a GPU the smaller of
    8 GB and half its free memory), so short stacks run as one tile with no overlap work at all.
    The overlap defaults to the network's receptive field up to 32 voxels (``inference.tiles.DEFAULT_OVERLAP``: a
    trained network's effective field) on every axis that is actually split into tiles (an axis covered by one tile
    needs none).
    """

    device: str = "auto"
    amp: bool = True
    tile_t: int | None = None
    max_tile_xy: int = 512
    overlap: int | None = None
    memory_gb: float | None = None
    batch_size: int = 1
    output_dtype: Literal["float32", "input", "auto"] = "float32"  # auto: inference.frame_means.resolve_output_dtype
    normalization: Literal["model", "input"] = "model"  # stats stored in the model, or the input's own
    mirrored_output: Literal["interleaved", "merged"] = "interleaved"  # mirrored models on (T, 2N, N) input
    prefetch: bool = True
    tta: int = 1  # test-time augmentation: average over this many D4 flips of (y, x): one of TTA_CHOICES
    keep_mean: bool = True  # shift each output frame to the input frame's mean (inference.frame_means.keep_frame_means)
    half_rate: bool = False  # temporal models: average with even / odd frames denoised apart (2x the work)
    # Gaussian smoothing of the output: 'auto' (chosen on the recording, along the measured motion, none when
    # it moves otherwise; inference.smoothing), 'off', (sigma_t frames, sigma_xy pixels), or those and (split_px,
    # sigma_t_coarse): the detail coarser than a Gaussian of split_px pixels over its own window (inference.bands)
    smoothing: str | tuple[float, ...] = "auto"
    # rigid registration of fast-moving frames before denoising, each result frame moved back: 'auto' (where
    # the frames move; inference.registration) or 'off'
    registration: str = "auto"
    # each pixel's time average: 'auto' (>= 100 frames, results on the input's grid or its physical frames: still
    # detail the output lost, put back where it exceeds the noise; inference.averages) or 'off'
    keep_average: str = "auto"
    # motion within frames: 'auto' (strips of lines denoised apart and blended where the top and bottom lines' shifts
    # disagree beyond their error; inference.strips), 'off', or a number of strips
    strips: str | int = "auto"
    # a bidirectional scanner's line phase: 'auto' (where the backward (odd) lines sit beside the forward ones,
    # measurably, they are moved back before denoising; inference.line_phase), 'off', or the offset in pixels
    line_phase: str | float = "auto"
    # part of what the denoising took from each frame, at a cell's scale, given back: 'auto' (as much as Stein's
    # estimate says helps, on a block of the recording; inference.give_back) or 'off'
    give_back: str = "auto"

    def __post_init__(self) -> None:
        if self.tta not in TTA_CHOICES:
            raise InputError(f"tta must be 1, 2, 4 or 8 (flips of the frame averaged), got {self.tta!r}")
        if (self.tile_t is not None and self.tile_t < 8) or self.max_tile_xy < 16:
            raise InputError(f"tiles too small: tile_t={self.tile_t} (>= 8), max_tile_xy={self.max_tile_xy} (>= 16)")
        if self.overlap is not None and self.overlap < 0:
            raise InputError(f"overlap must be >= 0 voxels, got {self.overlap}")
        if self.output_dtype not in ("float32", "input", "auto"):
            raise InputError(f"output_dtype must be 'float32', 'input' or 'auto', got {self.output_dtype!r}")
        if self.batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.memory_gb is not None and not (math.isfinite(self.memory_gb) and self.memory_gb > 0):
            raise InputError(f"memory_gb must be a finite number > 0, got {self.memory_gb}")
        self._check_smoothing()
        if self.registration not in REGISTRATION_CHOICES:
            raise InputError(f"registration must be 'auto' or 'off', got {self.registration!r}")
        if self.keep_average not in KEEP_AVERAGE_CHOICES:
            raise InputError(f"keep_average must be 'auto' or 'off', got {self.keep_average!r}")
        if self.give_back not in GIVE_BACK_CHOICES:
            raise InputError(f"give_back must be 'auto' or 'off', got {self.give_back!r}")
        self._check_strips()
        self._check_line_phase()

    def _check_line_phase(self) -> None:
        p = self.line_phase
        if isinstance(p, str) and p in LINE_PHASE_CHOICES:
            return
        px = math.nan  # a number of pixels, or its digits (a CLI argument, a settings file); never a truth value
        if isinstance(p, str):
            try:
                px = float(p)
            except ValueError:
                pass
        elif isinstance(p, numbers.Real) and not isinstance(p, bool):  # (numpy's bool_ is not Real)
            px = float(p)
        if not (math.isfinite(px) and abs(px) <= 64):
            raise InputError(f"line_phase must be 'auto', 'off' or an offset in pixels (-64 to 64), got {p!r}")
        self.line_phase = px

    def _check_strips(self) -> None:
        s = self.strips
        if isinstance(s, str) and s in STRIPS_CHOICES:
            self.strips = str(s)
            return
        n = None  # a whole number, or its digits (a CLI argument, a settings file); never a truth value
        if isinstance(s, str) and s.strip().isascii() and s.strip().isdigit():
            n = int(s)
        elif isinstance(s, numbers.Integral) and not isinstance(s, bool):  # (numpy's bool_ is not Integral)
            n = int(s)
        elif isinstance(s, float) and s.is_integer():
            n = int(s)
        if n is None or not 1 <= n <= 64:
            raise InputError(f"strips must be 'auto', 'off' or a number of strips from 1 to 64, got {s!r}")
        self.strips = n

    def inner(self, keep: tuple[str, ...] = ()) -> InferConfig:
        """The settings of a job inside a denoising job (a part of the stack, the smoothing's calibration).

        Float32 out, and every step that the outer job applies to the whole result off (each of
        :data:`POST_STEPS`), except those named in ``keep``: one list, so a new post-step is turned off
        at every inner job at once.
        """
        off = {k: v for k, v in POST_STEPS.items() if k not in keep}
        return dataclasses.replace(self, output_dtype="float32", **off)

    def _check_smoothing(self) -> None:
        s = self.smoothing
        if isinstance(s, str):
            if s not in SMOOTHING_CHOICES:
                raise InputError(f"smoothing must be 'auto', 'off' or (sigma_t, sigma_xy[, split_px, sigma_t_coarse]), "
                                 f"got {s!r}")
            return
        try:
            values = tuple(float(v) for v in s)
        except (TypeError, ValueError):
            values = ()
        if len(values) not in (2, 4) or not all(math.isfinite(v) and 0 <= v <= 64 for v in values):
            raise InputError("smoothing sigmas must be two numbers from 0 to 64 (frames, pixels), or four (and the "
                             f"split in pixels, the coarse detail's frames), got {s!r}")
        if len(values) == 4 and values[2] == 0 and values[3] > 0:
            raise InputError(f"smoothing: a coarse detail's window needs the split's width (pixels) above 0, got {s!r}")
        self.smoothing = values


@dataclass
class TrainEvent:
    """Progress report yielded by the training loop after every ``log_every`` steps.

    ``preview`` is a small float32 array (denoised frames in input intensity units) when a
    preview was computed at this step; ``checkpoint`` is the path written at this step.
    """

    step: int
    total_steps: int | None
    loss: float
    val_loss: float | None = None
    steps_per_s: float = 0.0
    elapsed_s: float = 0.0
    eta_s: float | None = None
    fraction: float = 0.0
    preview: Any = None
    checkpoint: str | None = None
    message: str = ""
    history: dict[str, list] = field(default_factory=dict)


@dataclass
class InferEvent:
    """Progress report yielded by tiled inference after each batch of tiles."""

    done: int
    total: int
    frames_per_s: float = 0.0
    eta_s: float | None = None
    message: str = ""


def run_to_end(gen: Generator[Any, None, Any], progress: Callable[[Any], Any] | None = None) -> Any:
    """Drain an engine generator (``iter_train``, ``iter_denoise``...) and return its value.

    ``progress`` is called with every event; the blocking wrappers and the CLI use this, the
    widgets hand the generator to napari's ``thread_worker`` instead.
    """
    while True:
        try:
            event = next(gen)
        except StopIteration as stop:
            return stop.value
        if progress is not None:
            progress(event)


def in_share(gen: Generator[InferEvent, None, Any], before: float, share: float, units: int = 1000,
             prefix: str = "") -> Generator[InferEvent, None, Any]:
    """``gen``'s events as a part of a larger job's progress: ``done`` mapped onto ``units * (before + share *
    done / total)`` of ``units`` (no ETA: it would be the part's), messages prefixed with ``prefix``; returns
    ``gen``'s value, and closes ``gen`` at once when this generator is closed (its worker threads stop)."""
    try:
        while True:
            try:
                ev = next(gen)
            except StopIteration as stop:
                return stop.value
            yield dataclasses.replace(ev, done=round(units * (before + share * ev.done / max(ev.total, 1))),
                                      total=units, eta_s=None, message=prefix + ev.message if ev.message else "")
    finally:
        gen.close()


def announced(gen: Generator[InferEvent, None, Any], message: str) -> Generator[InferEvent, None, Any]:
    """``gen``'s events, the first one carrying ``message`` (unless it has one); returns ``gen``'s value."""
    first = True
    while True:
        try:
            ev = next(gen)
        except StopIteration as stop:
            return stop.value
        if first:
            ev, first = dataclasses.replace(ev, message=ev.message or message), False
        yield ev
