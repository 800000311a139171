"""Denoising a whole stack: the job worked out once, then tiles in batches through the network.

The reference tools hard-crop overlapping tiles (visible seams), stretch or rescale the output (absolute
intensities lost, brightness jumps), drop trailing frames and load whole stacks as float32. Here instead:

- tiles cover the stack exactly and their overlaps are blended: no seams (:mod:`.tiles`);
- the model's normalisation is undone, so the output is in the input's intensity units (integers clipped);
- tiles are read one region at a time (``io.TiffArray``, numpy memmap, zarr and dask inputs stream; a TIFF is
  read with positioned reads, never mapped) and the weighted sums live in a rolling window of frames that is
  flushed to the output as soon as no later tile touches it (:mod:`.accumulate`): memory O(tile), not O(stack);
- a job whose estimated memory exceeds what the machine has is refused before it starts (:mod:`..runtime.resources`);
  an accelerator out-of-memory error restarts the job with a smaller batch, then smaller tiles, and says so.

The data flow: :class:`DenoiseJob` checks the inputs and works out the views the model sees, the output's shape
and dtype (once); :meth:`DenoiseJob.run` resolves the tiles, builds the :class:`~.tiles.TilePlan`, checks memory,
picks the normalisation, then reads batches of tiles (:mod:`.batches`), blends their outputs and writes finished
frames, smoothed (:mod:`.smoothing`); then each pixel's time average is kept (:mod:`.averages`). :func:`iter_denoise`
is a generator of :class:`~napari_unet_att.config.InferEvent` that ``return``s the result (napari's ``thread_worker``
and the CLI drain the same code); :func:`denoise` is the blocking wrapper. Files: :mod:`.files`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Generator
from typing import Any

import numpy as np
import torch

from ..config import InferConfig, InferEvent, in_share, run_to_end
from ..errors import InputError, ResourceError
from ..model.denoiser import Denoiser
from ..model.normalization import Normalization
from ..modes import Triple, View, split_views
from ..runtime import device as devmod
from ..runtime import resources as res
from .accumulate import BlendedSums, accumulator_frames
from .averages import expected, iter_keep_average, sums_bytes
from .batches import BatchReader, OutOfMemory, forward, make_batches, smaller_config
from .frame_means import keep_frame_means, resolve_output_dtype, said_first, to_target
from .give_back import GiveBack, iter_give_back
from .line_phase import PhaseCorrected, iter_line_phase
from .norms import check_model_norm, choose_norm
from .registration import MovedBack, PhysicalFrames, RegisteredStack, Registration, iter_registration
from .smoothing import Smoothing, TemporalSmoother, held_bytes, iter_smoothing
from .strips import iter_choose_strips, iter_strips
from .tiles import TilePlan, build_plan, resolve_tiles

# ---------------------------------------------------------------------------------------------- checks and choices


def check_inputs(stack: Any, cfg: InferConfig, out: Any) -> None:
    """Refuse what cannot be denoised: not a non-empty (T, Y, X) array, unknown options, ``out`` not sliceable."""
    shape = getattr(stack, "shape", None)
    if shape is None or len(shape) != 3:
        raise InputError(f"expected a (T, Y, X) time-lapse, got an array of shape {shape}; "
                         "pick a channel / squeeze singleton axes first")
    if min(shape) < 1:
        raise InputError(f"the stack is empty (shape {tuple(shape)})")
    for name, allowed in (("normalization", ("model", "input")), ("mirrored_output", ("interleaved", "merged"))):
        if getattr(cfg, name) not in allowed:
            raise InputError(f"{name} must be {' or '.join(map(repr, allowed))}, got {getattr(cfg, name)!r}")
    if out is not None and not hasattr(out, "__setitem__"):
        raise InputError(f"out must support slice assignment (out[t0:t1] = block), got {type(out).__name__}")


def _in_memory(out: Any) -> bool:
    """Whether the result is held in memory: a new array, a numpy array given, or a destination that says so."""
    return out is None or (isinstance(out, np.ndarray) and not isinstance(out, np.memmap)) or bool(
        getattr(out, "in_memory", False))


# ---------------------------------------------------------------------------------------------- the job


@dataclasses.dataclass(frozen=True, eq=False)
class DenoiseJob:
    """One stack through one model, worked out once: the views the model sees, how their finished
    blocks combine into the output, and the output's shape and dtype.

    Make one with :meth:`create` (which checks the inputs); :meth:`run` denoises.
    """

    stack: Any
    denoiser: Denoiser
    cfg: InferConfig
    views: tuple[View, ...]
    combine: Callable[[list[np.ndarray]], np.ndarray]
    out_shape: Triple
    dtype: np.dtype
    shifts: np.ndarray | None = None  # measured sub-pixel motion left to the network: the smoothing follows it
    averaged: bool | None = None  # whether each pixel's average is put back (:mod:`.averages`); None: as cfg says
    said: str = ""  # what ``output_dtype='auto'`` was made (:func:`.frame_means.resolve_output_dtype`)

    @classmethod
    def create(cls, stack: Any, denoiser: Denoiser, cfg: InferConfig | None = None, out: Any = None) -> DenoiseJob:
        """Check the inputs (:func:`check_inputs`, and ``out``'s shape) and work out the job (an 'auto' output type
        made one: :func:`.frame_means.resolve_output_dtype`)."""
        cfg = cfg or InferConfig()
        check_inputs(stack, cfg, out)
        cfg, said = resolve_output_dtype(stack, cfg)
        job = dataclasses.replace(cls.unchecked(stack, denoiser, cfg), said=said)
        if out is not None and tuple(out.shape) != tuple(job.out_shape):  # a destination of another shape
            raise InputError(f"out has shape {tuple(out.shape)}; this model and input give {tuple(job.out_shape)}")
        return job

    @classmethod
    def unchecked(cls, stack: Any, denoiser: Denoiser, cfg: InferConfig, scan: bool | None = None) -> DenoiseJob:
        """The job for inputs already checked; ``scan``: whether ``stack`` is a bidirectional scan's lines (a part of
        one, whatever its shape; None: a ``(T, 2N, N)`` stack is, :func:`~napari_unet_att.modes.split_views`)."""
        views, combine, shape = split_views(stack, denoiser.mode, denoiser.flip_backward, cfg.mirrored_output, scan)
        dtype = np.dtype(stack.dtype if cfg.output_dtype == "input" else np.float32)  # ('auto': made one by create)
        return cls(stack, denoiser, cfg, tuple(views), combine, shape, dtype)

    @property
    def view_shape(self) -> Triple:
        """The shape of every view (the volume the tiles cover)."""
        return self.views[0].shape

    @property
    def layout(self) -> str:
        """How the output's frames lie: 'frames' (one view) or 'interleaved' (a scan's two directions' lines)."""
        return "frames" if len(self.views) == 1 else "interleaved"

    @property
    def half_rate(self) -> bool:
        """Whether the half-rate ensemble runs (temporal models only)."""
        return self.cfg.half_rate and self.denoiser.mode == "temporal"

    def run(self, out: Any = None) -> Generator[InferEvent, None, Any]:
        """Denoise into ``out`` (already checked) or a new array; see :func:`iter_denoise`."""
        if self.cfg.registration != "off" or self.cfg.strips != "off":  # refuse before the stack is read
            _checked_plan(self, out, norm_pass=False)
        two, flip = len(self.views) == 2, self.denoiser.flip_backward  # two views: a bidirectional scan
        phase = yield from iter_line_phase(self.cfg.line_phase, self.stack, two, flip)
        if phase.active:  # the backward lines put back first: every step after sees (and keeps) lines that agree
            fixed = PhaseCorrected(self.stack, phase.offset, flip and two)
            cfg = dataclasses.replace(self.cfg, line_phase="off")  # (its memory checked again: the same plan)
            return (yield from DenoiseJob.unchecked(fixed, self.denoiser, cfg, two).run(out))
        if two and self.cfg.mirrored_output == "merged":  # the physical frames in one pass: all of each line's
            frames = PhysicalFrames(self.stack, flip)  # photons in one view (two passes of half: slower, worse)
            return (yield from DenoiseJob.unchecked(frames, self.denoiser, self.cfg, False).run(out))
        strips = yield from iter_choose_strips(self.cfg.strips, self.stack, two, flip)
        if strips.active:  # motion within frames: every strip through the whole engine, blended
            sub = self.cfg.inner(keep=("smoothing", "registration", "keep_average", "half_rate", "give_back"))
            return (yield from iter_strips(
                self.stack, strips, lambda part, dest: DenoiseJob.unchecked(part, self.denoiser, sub, two).run(dest),
                np.empty(self.out_shape, self.dtype) if out is None else out, self.cfg.keep_mean,
                self.cfg.output_dtype, in_memory=_in_memory(out), new_target=out is None))
        registration = yield from iter_registration(self.cfg.registration, self.stack, two, flip)
        slow = not registration.active and registration.shifts is not None
        job = dataclasses.replace(self, shifts=registration.shifts) if slow else self
        if out is not None and not hasattr(out, "__getitem__") and self.averaged is None:  # the averages need to
            job = dataclasses.replace(job, averaged=False)  # read the output back (a registered job's outer one can)
        result = yield from job._result(out, registration, two, flip)
        yield from iter_keep_average(self.cfg.keep_average, self.stack, result, self.cfg.output_dtype,
                                     registration.shifts, two, flip)  # averaged along the measured motion
        return result

    def _result(self, out: Any, registration: Registration, two: bool, flip: bool) -> Generator[InferEvent, None, Any]:
        """The output before :mod:`.averages`: registered, half-rate or tiled."""
        if registration.active:  # the same job on the registered frames, each result frame moved back
            target = np.empty(self.out_shape, dtype=self.dtype) if out is None else out
            back = MovedBack(target, RegisteredStack(self.stack, registration, two, flip), self.cfg, out is None)
            job = DenoiseJob.unchecked(back.canvas, self.denoiser, self.cfg.inner(("smoothing", "half_rate",
                                                                                  "give_back")), two)
            rest = None if registration.shifts is None else registration.shifts - registration.moves  # smoothed
            job = dataclasses.replace(job, shifts=rest, averaged=self.keeps_average)  # along it (still: None)
            yield from job.run(back)
            return target
        if self.half_rate:
            return (yield from _iter_half_rate(self, out))
        return (yield from _iter_tiled(self, out))

    @property
    def keeps_average(self) -> bool:
        """Whether each pixel's average will be put back (by this job or, for a registered one's inner job, its
        outer one): the smoothing is then chosen by the error that the output keeps
        (:func:`.smoothing.choose_smoothing`)."""
        if self.averaged is not None:
            return self.averaged
        return expected(self.cfg.keep_average, int(self.stack.shape[0]))

    def choose_smoothing(self) -> Generator[InferEvent, None, Smoothing]:
        """``cfg.smoothing`` worked out by :func:`.smoothing.iter_smoothing` (after the memory checks: it may work)."""
        sub, two = self.cfg.inner(), len(self.views) == 2
        return (yield from iter_smoothing(self.cfg.smoothing, self.denoiser, self.stack, lambda block: DenoiseJob
                                          .unchecked(block, self.denoiser, sub, two).run(), self.shifts, self.layout,
                                          self.keeps_average))

    def choose_give_back(self, smoothing: Smoothing) -> Generator[InferEvent, None, GiveBack]:
        """``cfg.give_back`` by :func:`.give_back.iter_give_back` for the output ``smoothing`` makes (one view only)."""
        sub = dataclasses.replace(self.cfg.inner(keep=("half_rate",)), amp=False)  # (a small perturbation: float32)
        return (yield from iter_give_back(self.cfg.give_back if len(self.views) == 1 else "off", self.stack, smoothing,
                                          lambda block: DenoiseJob.unchecked(block, self.denoiser, sub, False).run(),
                                          self.keeps_average))


def iter_denoise(
    stack: Any, denoiser: Denoiser, cfg: InferConfig | None = None, out: Any = None
) -> Generator[InferEvent, None, Any]:
    """Denoise a ``(T, Y, X)`` stack tile by tile, yielding progress.

    Parameters
    ----------
    stack : array-like (T, Y, X)
        numpy array, ``stackio.TiffArray`` (what ``stackio.read_stack`` returns for plain TIFFs),
        ``np.memmap``, zarr or dask array; only tile regions are read.
    denoiser : Denoiser
        Model and metadata. A ``'mirrored'`` model given a ``(T, 2N, N)`` stack denoises the forward (even)
        and backward (odd) rows as two ``(T, N, N)`` stacks (backward rows x-reversed first when
        ``denoiser.flip_backward``, and reversed back) and interleaves them; with ``cfg.mirrored_output ==
        'merged'`` it denoises the physical frames (each line's two directions averaged) as one stack: the
        output is ``(T, N, N)``. Any other model or shape: the stack as is.
    cfg : InferConfig, optional
        Tiling, device, batch, output dtype, normalisation source, prefetch.
    out : array-like, optional
        Destination supporting ``out[t0:t1] = block`` (e.g. ``stackio.output_stack``); frame blocks are written
        once final. Integer destinations are always clipped.

    Yields
    ------
    InferEvent
        After each batch of tiles: tiles done / total, frames per second, ETA. After an out-of-memory retry, an
        event whose ``message`` says what was changed; ``total`` counts the new plan's tiles, ``done`` from 0.

    Returns
    -------
    numpy.ndarray or ``out``
        float32 in the input's intensity units (or the input's dtype, clipped, with
        ``cfg.output_dtype == 'input'``); ``out`` itself when given.

    Raises
    ------
    InputError
        Not a (T, Y, X) stack, NaN / Inf values, an ``out`` of the wrong shape.
    ResourceError
        The job cannot fit in memory (checked before any work), or out-of-memory errors
        persist down to the smallest batch and tiles.
    """
    job = DenoiseJob.create(stack, denoiser, cfg, out)
    return (yield from said_first(job.run(out), job.said))


def denoise(
    stack: Any,
    denoiser: Denoiser,
    cfg: InferConfig | None = None,
    out: Any = None,
    progress: Callable[[InferEvent], Any] | None = None,
) -> Any:
    """Blocking :func:`iter_denoise`; ``progress`` (optional) is called with every event."""
    return run_to_end(iter_denoise(stack, denoiser, cfg, out), progress)


# ---------------------------------------------------------------------------------------------- tiled passes


def _iter_tiled(job: DenoiseJob, out: Any) -> Generator[InferEvent, None, Any]:
    """Plan, check memory, choose the normalisation, then run; after an out-of-memory error, run again
    with the next smaller configuration (:func:`~napari_unet_att.inference.batches.smaller_config`)."""
    device, cfg, plan, norm = _checked_plan(job, out)
    smoothing = yield from job.choose_smoothing()
    give_back = yield from job.choose_give_back(smoothing)
    target = np.empty(job.out_shape, dtype=job.dtype) if out is None else out
    while True:
        try:
            return (yield from _run(job, cfg, plan, _FrameWriter(job, norm, target, smoothing, give_back), device))
        except OutOfMemory as exc:
            res.free_accelerator_cache()
            smaller, old = smaller_config(cfg, plan.tile), plan.tile
            if smaller is None:
                raise ResourceError(f"out of memory on {device} even with one {old[0]}x{old[1]}x{old[2]} tile per "
                                    "pass; use the CPU (device 'cpu') or free memory used by other programs"
                                    ) from exc.__cause__
            plan = build_plan(job.view_shape, smaller, job.denoiser.arch)
            msg = (f"out of memory on {device} with batch {cfg.batch_size} of {'x'.join(map(str, old))} tiles; "
                   f"retrying with batch {smaller.batch_size} of {'x'.join(map(str, plan.tile))} tiles")
            cfg = smaller
            yield InferEvent(done=0, total=len(plan.tiles) * len(job.views), message=msg)


def _checked_plan(job: DenoiseJob, out: Any, norm_pass: bool = True) -> tuple[torch.device, InferConfig, TilePlan,
                                                                               Normalization | None]:
    """The device, tiles, plan and normalisation of ``job``, after the checks that refuse it before any work:
    host memory and (a model's stored normalisation) the input's intensity scale. ``norm_pass=False``: no
    normalisation (None) where it would take a pass over the input's statistics."""
    device = devmod.configure_process(devmod.resolve_device(job.cfg.device))
    cfg = resolve_tiles(job.view_shape, job.denoiser, job.cfg, device)
    plan = build_plan(job.view_shape, cfg, job.denoiser.arch)
    _check_host_memory(job, cfg, plan, device, in_memory=out is None or getattr(out, "in_memory", False))
    input_norm = cfg.normalization == "input" or job.denoiser.provenance.get("normalization") == "input"
    norm = choose_norm(job.stack, job.denoiser, cfg) if norm_pass or not input_norm else None
    if norm is job.denoiser.norm:
        check_model_norm(job.views[0], plan.tiles, norm)
    return device, cfg, plan, norm


def _check_host_memory(job: DenoiseJob, cfg: InferConfig, plan: TilePlan, device: torch.device,
                       in_memory: bool) -> None:
    """Refuse before any work when the tiles, accumulators and in-memory output cannot fit in RAM."""
    den, capacity = job.denoiser, accumulator_frames(plan.tiles, cfg.batch_size, len(job.views))
    out_bytes = int(np.prod(job.out_shape)) * job.dtype.itemsize if in_memory else 0
    est = res.estimate_denoise_memory(plan.shape, plan.tile, den.arch, den.base_channels, cfg.batch_size, capacity,
                                      len(job.views), out_bytes) + sums_bytes(cfg.keep_average, job.out_shape)
    est += held_bytes(cfg.smoothing, job.out_shape[1:], plan.tile[0])  # (+ the post-steps' own memory)
    if device.type != "cpu":  # the network runs on the accelerator: its out-of-memory errors are retried
        est -= res.estimate_inference_memory(plan.tile, den.arch, den.base_channels, cfg.batch_size)
    hint = "use smaller tiles (tile_t / max_tile_xy, CLI --tile-t) or a smaller batch" + (
        ", or stream the result to a file (CLI denoise / iter_denoise_file)" if in_memory else "")
    res.check_memory(est, f"denoising a {tuple(int(n) for n in job.stack.shape)} stack with tiles of "
                     f"{'x'.join(map(str, plan.tile))} (batch {cfg.batch_size})", "cpu", hint=hint)


def _run(
    job: DenoiseJob, cfg: InferConfig, plan: TilePlan, write: _FrameWriter, device: torch.device
) -> Generator[InferEvent, None, Any]:
    """One pass of the whole plan: batches through the network, blended, finished frames written to
    ``target`` (raises :class:`~napari_unet_att.inference.batches.OutOfMemory`)."""
    views = job.views
    batches = make_batches(plan.tiles, len(views), cfg.batch_size)
    # A batch's outputs are added, then the frames before the next batch's first tile are final.
    flush_at = [b[0][0][0].start for b in batches[1:]] + [plan.shape[0]]
    sums = BlendedSums(plan, cfg.batch_size, len(views))
    n_tasks = len(plan.tiles) * len(views)
    net = job.denoiser.net.to(device)  # in place: the model stays on the device for the next call
    was_training = net.training
    net.eval()  # attention-gate BatchNorm must use its running statistics
    t_start, done = time.perf_counter(), 0
    with devmod.reuse_freed_memory(device):
        try:  # the finally also runs when the consumer closes the generator (cancel)
            with BatchReader(views, batches, write.norm, cfg.prefetch) as reader:
                for batch, x, stop in zip(batches, reader, flush_at, strict=True):
                    y = forward(net, x, device, cfg.amp, cfg.tta)
                    for (sl, v), y_tile in zip(batch, y[:, 0], strict=True):
                        sums.add(sl, v, y_tile)
                    start = sums.base
                    if stop > start:
                        write(start, stop, sums.pop(stop))
                    done += len(batch)
                    elapsed = max(time.perf_counter() - t_start, 1e-9)
                    yield InferEvent(done=done, total=n_tasks, frames_per_s=done / n_tasks * job.out_shape[0] / elapsed,
                                     eta_s=elapsed * (n_tasks - done) / done)
        finally:
            net.train(was_training)
    return write.target  # (the smoother let out its last frames with the last block)


class _FrameWriter:
    """Finished frames of every view, from normalised model units to the output: each frame's mean kept
    (``cfg.keep_mean``), normalisation undone, views restored and combined, smoothed (frames held back until
    the kernel's reach has arrived), part of what was taken given back, dtype converted, written."""

    def __init__(self, job: DenoiseJob, norm: Normalization, target: Any, smoothing: Smoothing, give_back: GiveBack
                 ) -> None:
        self.job, self.norm, self.target, self.give_back = job, norm, target, give_back
        self.target_dtype = np.dtype(getattr(target, "dtype", job.dtype))
        self.inputs = job.stack  # (a blend, a give-back)
        self.smoother = TemporalSmoother(smoothing, job.out_shape[0], self.inputs) if smoothing.active else None

    def __call__(self, start: int, stop: int, blocks: list[np.ndarray]) -> None:
        job, norm = self.job, self.norm
        _, y, x = job.view_shape
        done = []
        for view, z in zip(job.views, blocks, strict=True):
            if job.cfg.keep_mean:
                z = keep_frame_means(z, norm.apply(view.read((slice(start, stop), slice(0, y), slice(0, x)))))
            done.append(view.restore(norm.invert(z)))
        block = job.combine(done)
        for first, final in [(start, block)] if self.smoother is None else self.smoother.push(start, block):
            self._write(first, final)

    def _write(self, start: int, block: np.ndarray) -> None:
        if self.give_back.active:
            block = self.give_back.apply(block, self.inputs[start : start + len(block)])
        block = to_target(block, self.job.cfg.output_dtype, np.dtype(self.job.stack.dtype), self.target_dtype)
        self.target[start : start + len(block)] = block


# ---------------------------------------------------------------------------------------------- half-rate ensemble


class _EveryOther:
    """Frames ``parity, parity + 2, ...`` of a stack, read lazily (contiguous raw reads, then every other)."""

    def __init__(self, stack: Any, parity: int) -> None:
        self.stack, self.parity = stack, int(parity)
        t = int(stack.shape[0])
        self.shape = ((t - self.parity + 1) // 2, *(int(n) for n in stack.shape[1:]))
        self.dtype, self.ndim = np.dtype(stack.dtype), 3

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        t, rest = key[0], key[1:]
        start, stop, step = t.indices(self.shape[0]) if isinstance(t, slice) else (0, 0, 0)
        if step != 1:  # the engine reads frame ranges only
            raise TypeError(f"index time with a contiguous slice, got {t!r}")
        first = 2 * start + self.parity
        last = first + max(2 * (stop - start) - 1, 0)  # an empty range reads nothing
        return np.asarray(self.stack[(slice(first, last), *rest)])[::2]


def _iter_half_rate(job: DenoiseJob, out: Any) -> Generator[InferEvent, None, Any]:
    """Temporal models: the mean of the full-rate result and of even and odd frames denoised apart.

    A temporal model is trained on frames two apart (even -> odd), so the full-rate stack shows it
    signals that change half as fast as in training; the even and odd frames on their own are what it
    was trained on but hold half the photons. Their mean beats either (docs/benchmarks.md), at twice
    the work; the result is assembled in memory.
    """
    stack = job.stack
    t = int(stack.shape[0])
    if t < 6:
        raise InputError(f"the half-rate ensemble needs at least 6 frames (3 per half), found {t}; turn it off")
    res.check_memory(2 * t * int(np.prod(stack.shape[1:])) * 4, f"the half-rate ensemble of a {tuple(stack.shape)} "
                     "stack (two float32 copies in memory)", "cpu", hint="turn the half-rate ensemble off")
    smoothing = yield from job.choose_smoothing()
    give_back = yield from job.choose_give_back(smoothing)
    sub = job.cfg.inner()
    shares, units = ((0.5, 0.0), (0.25, 0.5), (0.25, 0.75)), 1000  # (share of the work, progress before the pass)
    results = []
    for (share, before), part in zip(shares, (stack, _EveryOther(stack, 0), _EveryOther(stack, 1)), strict=True):
        results.append((yield from in_share(DenoiseJob.unchecked(part, job.denoiser, sub).run(), before, share, units)))
    full = results[0]
    full[0::2] += results[1]
    full[1::2] += results[2]
    full *= 0.5
    if smoothing.active:  # in blocks, as streamed (the smoother's copies and the input's frames stay small)
        smoother = TemporalSmoother(smoothing, t, stack)
        full = np.concatenate([p for t0 in range(0, t, 64) for _, p in smoother.push(t0, full[t0 : t0 + 64])])
    for t0 in range(0, t, 64) if give_back.active else ():
        full[t0 : t0 + 64] = give_back.apply(full[t0 : t0 + 64], stack[t0 : t0 + 64])
    in_dtype = np.dtype(stack.dtype)
    if out is None:
        return to_target(full, job.cfg.output_dtype, in_dtype, full.dtype)
    out_dtype = np.dtype(getattr(out, "dtype", job.dtype))
    for t0 in range(0, t, 64):
        out[t0 : t0 + 64] = to_target(full[t0 : t0 + 64], job.cfg.output_dtype, in_dtype, out_dtype)
    return out


__all__ = ["DenoiseJob", "check_inputs", "check_model_norm", "choose_norm", "denoise", "iter_denoise",
           "keep_frame_means"]
