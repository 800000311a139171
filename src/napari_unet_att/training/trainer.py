"""Self-supervised training loop.

:class:`Trainer` runs as a generator (:meth:`Trainer.run`) that yields a :class:`~napari_unet_att.config.TrainEvent`
every ``log_every`` steps and returns the trained :class:`~napari_unet_att.model.denoiser.Denoiser`. The CLI drains it
with a progress bar, the napari widget runs it in ``thread_worker``; both stop it with :meth:`Trainer.stop`, which
ends the loop cleanly after the current step and still saves and returns the model.

A run is set up (``_setup``: modules ``start``, ``resume`` and ``fast_signals``), then loops over optimiser steps
(``_step``: ``loss``, ``schedule``), validating, checkpointing (``saving``) and previewing after each.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Collection, Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import ResolvedTrainConfig, TrainConfig, TrainEvent, run_to_end
from ..errors import InputError, UserError
from ..model.checkpoint import load_checkpoint
from ..model.denoiser import Denoiser
from ..model.networks import count_parameters
from ..runtime.device import autocast, configure_process, grad_scaler, resolve_device, reuse_freed_memory, to_device
from ..runtime.distributed import DistEnv, all_max, all_mean, barrier, dist_env, init_process_group, wrap_model
from ..runtime.resources import check_training_memory
from ..stackio.outputs import OutputLock, check_train_out
from ..wording import PYTHON_WORDING, Wording
from . import fast_signals, start
from .loss import loss_fn
from .monitor import preview_output, validation_loss
from .resume import check_one_start, load_resume, restore_state
from .sampler import PatchSampler, Prefetcher
from .saving import FINAL_NAME, LAST_NAME, CheckpointWriter, run_provenance, training_state, weights_finite
from .schedule import Budget, lr_factor
from .start import denoiser_from_weights, fit_patch, make_optimizer, make_samplers, new_denoiser, normalizations

__all__ = ["FINAL_NAME", "LAST_NAME", "Trainer", "iter_train", "train"]

# Gradient norms above this are clipped (docs/performance.md, "Training schedule", has the measured range).
GRAD_CLIP = 10.0
MAX_SKIPPED_STEPS = 20  # updates in a row with non-finite gradients before the run is called diverged


@dataclass
class _Run:
    """What :meth:`Trainer._setup` builds and the loop works with."""

    rcfg: ResolvedTrainConfig
    den: Denoiser
    net: torch.nn.Module  # the plain module that is saved
    model: torch.nn.Module  # ``net``, wrapped by DistributedDataParallel under torchrun
    opt: torch.optim.Optimizer
    scaler: Any
    device: torch.device
    env: DistEnv
    train_sampler: PatchSampler
    val_batches: list[tuple[np.ndarray, np.ndarray]]
    budget: Budget
    continuing: bool  # a resume without a new budget: the stored schedule goes on
    step: int
    elapsed_before: float  # training seconds of the run before this process took it over
    notes: list[str] = field(default_factory=list)
    start_step: int = 0
    t0: float = 0.0
    prefetch: Prefetcher | None = None
    save_s: float = 0.0  # how long the last checkpoint save took (the end of a time budget saves twice)
    # Set when the weights must not be saved: after a divergence (whatever the last step left is garbage) or a
    # failed save (the disk is full: the earlier checkpoint is the one to keep).
    no_save: str = ""

    def elapsed(self, ahead_s: float = 0.0) -> float:
        """Training seconds of the whole run so far, plus ``ahead_s``."""
        return self.elapsed_before + time.perf_counter() - self.t0 + ahead_s


class Trainer:
    """One training run over one or several stacks.

    Parameters
    ----------
    stacks : sequence of array-like
        ``(T, Y, X)`` stacks (numpy arrays, memory maps, zarr or dask arrays: patches are read
        on demand, stacks are never converted to float32 as a whole).
    cfg : TrainConfig
        The run's settings.
    out_dir : str or Path, optional
        Where ``model.pt`` (final) and ``checkpoint-last.pt`` (periodic, for resume) go.
    resume : str or Path, optional
        A checkpoint of ours with training state: continues that run (same model, optimiser,
        data stream); the budget of ``cfg`` counts from the resumed step / time.
    init : str or Path, optional
        Start from the weights of a checkpoint (ours or a reference tool's), keeping its architecture.
    sources : sequence of str, optional
        Names of the stacks (file paths, layer names) recorded in the provenance.
    targets : sequence of array-like, optional
        Clean twins of ``stacks`` (simulations only): targets are read from them instead of the
        noisy data (see :class:`~napari_unet_att.training.sampler.PatchSampler`); used to pretrain the
        generalist models, never for a user's recording.
    target_view : {'pair', 'same'}
        With ``targets``: which view's clean twin is the target (see ``PatchSampler``).
    given : collection of str, optional
        With ``resume``: the settings of ``cfg`` the user chose, which must agree with the run's
        (default: those that differ from :class:`TrainConfig`'s defaults).
    wording : Wording
        The words of the front end that shows a refusal to resume (:mod:`napari_unet_att.wording`).
    """

    def __init__(
        self,
        stacks: Sequence[Any],
        cfg: TrainConfig,
        out_dir: str | os.PathLike | None = None,
        resume: str | os.PathLike | None = None,
        init: str | os.PathLike | None = None,
        sources: Sequence[str] | None = None,
        targets: Sequence[Any] | None = None,
        given: Collection[str] | None = None,
        target_view: str = "pair",
        wording: Wording = PYTHON_WORDING,
    ) -> None:
        if not stacks:
            raise InputError("no training data given")
        check_one_start(resume, init, wording)
        self.stacks, self.cfg = list(stacks), cfg
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.resume, self.init = resume, init
        self.sources = list(sources) if sources else [f"array{i}" for i in range(len(self.stacks))]
        self.targets = list(targets) if targets is not None else None
        self.target_view = target_view
        self.given, self.wording = given, wording
        self.parent: dict[str, Any] | None = None
        self._skipped = 0  # consecutive updates skipped for non-finite gradients
        self._stop = threading.Event()
        self._writer = CheckpointWriter(self.out_dir) if self.out_dir is not None else None
        self.denoiser: Denoiser | None = None
        self.history: dict[str, list] = {"step": [], "loss": [], "val_step": [], "val_loss": []}
        self._in_loop = False  # between the first step and the end of the final save
        self.saved: Path | None = None  # the final model written by this run, if any

    @property
    def last_saved_step(self) -> int | None:
        """Step of the ``checkpoint-last.pt`` this run wrote (None: none yet)."""
        return self._writer.last_saved_step if self._writer is not None else None

    def stop(self) -> None:
        """Ask the loop to end after the current step; the model is still saved and returned."""
        self._stop.set()

    def request_stop(self) -> bool:
        """Stop from a signal handler: True if the loop will stop at the next step and save.

        Before the loop (reading statistics, loading a checkpoint) nothing is trained yet and a
        stop flag would only be seen after that set-up: the caller should interrupt instead.
        """
        self._stop.set()
        return self._in_loop

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    # -- set-up ---------------------------------------------------------------------------
    def _build(self) -> tuple[ResolvedTrainConfig, dict[str, Any] | None, list[str]]:
        """The data registered where it moves, the model, config and optional training state (from scratch,
        --init or --resume)."""
        rcfg, state = self.cfg.resolved(), None
        # a resumed run's model is read once: its registration setting decides how the stacks are registered
        resumed = load_checkpoint(self.resume) if self.resume is not None else None
        self.stacks, notes = start.register_stacks(self.stacks, rcfg, self.sources, self.targets, resumed)
        if self.resume is not None:
            shapes = [tuple(s.shape) for s in self.stacks]
            den, rcfg, state, note = load_resume(self.resume, self.cfg, self.given, shapes, self.wording, resumed)
            notes.append(note)
        elif self.init is not None:
            den, rcfg, self.parent, note = denoiser_from_weights(self.init, rcfg, lr_given=self.cfg.lr is not None)
            notes.append(note)
        else:
            den = new_denoiser(rcfg)
        if den.mode != rcfg.mode:
            raise InputError(f"the checkpoint was trained in {den.mode!r} mode but {rcfg.mode!r} was requested")
        if self.resume is None and self.targets is None:  # (a resumed run was advised when it began)
            notes += fast_signals.temporal_advice(self.stacks, self.sources, rcfg.mode)
        self.denoiser = den
        return rcfg, state, notes

    def _setup(self, origin: float) -> _Run:
        """Register moving recordings, build the model, check the data and the memory, and restore a resumed
        run's state. A new time budget counts from ``origin`` (a ``time.perf_counter()``): what the set-up took
        is taken off the training time.
        """
        torch.manual_seed(self.cfg.seed)  # before building: the initial weights depend on it
        rcfg, state, notes = self._build()
        den = self.denoiser
        assert den is not None
        if self.out_dir is not None and dist_env().is_main:
            check_train_out(self.out_dir, count_parameters(den.net))
        rcfg, fitted = fit_patch(rcfg, [tuple(s.shape) for s in self.stacks])
        per_stack, pooled = normalizations(self.stacks)
        if self.resume is None:
            den.norm = pooled
        device = configure_process(resolve_device(rcfg.device))
        # Refuse a patch that clearly cannot fit before any work starts.
        check_training_memory(rcfg.patch_t, rcfg.patch_xy, rcfg.batch_size, den.arch, den.base_channels, device)
        env = init_process_group(device)
        net = den.net.to(device)
        net.train()
        model = wrap_model(net, device, env)
        opt = make_optimizer(net, rcfg)
        scaler = grad_scaler(device, rcfg.amp)
        train_s, val_s = make_samplers(self.stacks, per_stack, rcfg, self.targets, env.rank, self.target_view)
        val_batches = val_s.validation_batches(rcfg.val_patches, rcfg.batch_size)
        step, elapsed_before = 0, 0.0
        if state is not None:
            step, elapsed_before, self.history = restore_state(self.resume, state, opt, scaler, train_s, self.history,
                                                               self.wording)
        den.train_config = rcfg.as_dict()
        den.flip_backward = bool(rcfg.flip_backward)
        den.train_shape = tuple(int(n) for n in self.stacks[0].shape)
        # A resume without a new budget continues the stored schedule; anything else starts a new one.
        continuing = state is not None and self.cfg.steps is None and self.cfg.seconds is None
        budget = Budget.plan(rcfg, state["schedule"] if continuing else None, step, elapsed_before,
                             setup_s=time.perf_counter() - origin)
        return _Run(rcfg, den, net, model, opt, scaler, device, env, train_s, val_batches, budget, continuing,
                    step, elapsed_before, notes + fitted + list(getattr(train_s, "notices", [])), start_step=step)

    # -- the loop -------------------------------------------------------------------------
    def run(self, started: float | None = None) -> Generator[TrainEvent, None, Denoiser]:
        """Train; yields progress events, returns the trained :class:`Denoiser`.

        The output folder is checked (a folder, writable) and locked against a second run before
        anything else, and checked for room for the checkpoints once the network's size is known.
        A time budget bounds the whole run from ``started`` (a ``time.perf_counter()``, e.g. when a
        command began; default: now), set-up and final save included.
        """
        origin = time.perf_counter() if started is None else started
        lock, created = None, False
        if self.out_dir is not None and dist_env().is_main:  # rank 0 alone writes
            created = not self.out_dir.exists()
            check_train_out(self.out_dir)
            lock = OutputLock(self.out_dir).acquire()
        try:
            return (yield from self._run(origin))
        finally:
            if lock is not None:
                lock.release()
            if created:  # a run that wrote nothing (refused data, interrupted set-up) leaves no empty folder
                with contextlib.suppress(OSError):
                    self.out_dir.rmdir()

    def _run(self, origin: float) -> Generator[TrainEvent, None, Denoiser]:
        run = self._setup(origin)
        run.t0 = time.perf_counter()
        if run.env.is_main:
            for note in run.notes:
                yield TrainEvent(run.step, run.budget.max_steps, float("nan"), message=note, history=self.history)
        # Sampling runs one batch ahead in a thread so reading patches overlaps the model's work.
        run.prefetch = Prefetcher(run.train_sampler, run.rcfg.batch_size, max(1, int(run.rcfg.accumulate)))
        self._in_loop = True
        with reuse_freed_memory(run.device):  # no page faults for every step's fresh activations
            try:
                yield from self._loop(run)
            finally:
                self._finish(run)
        return run.den

    def _loop(self, run: _Run) -> Generator[TrainEvent, None, None]:
        budget_spent = False  # set when the budget cannot fit another step
        step_began = time.perf_counter()
        while True:
            # Checked again here (not only after the step) so a stop() made while the consumer
            # held the last event takes effect before another step starts. A new budget makes
            # at least one step, so even `seconds=1e-9` ends with a model.
            frac, stop = self._progress(run)
            if budget_spent or stop or (frac >= 1.0 and (run.step > run.start_step or run.continuing)):
                return
            loss = self._step(run, frac)
            # A time budget ends at the last step that fits it, not one step past it (on a slow
            # CPU a step takes seconds: `--seconds 60` ran 78 s), and then reports 100%.
            # The first step's time includes one-off warm-up: the last step's predicts the next.
            now = time.perf_counter()
            step_s = now - step_began if run.step - run.start_step > 1 else 0.0
            step_began = now
            frac, stop = self._progress(run, ahead_s=self._end_s(run, step_s) if run.budget.max_seconds else 0.0)
            budget_spent = frac >= 1.0
            event = self._after_step(run, loss, frac, done=budget_spent or stop)
            if event is not None:
                yield event

    @staticmethod
    def _end_s(run: _Run, step_s: float) -> float:
        """Seconds another step and the end of the run would take: that step, the final validation (its
        forward passes, about a third of a step's work each) and the two final saves."""
        val_s = step_s * len(run.val_batches) / (3 * max(1, int(run.rcfg.accumulate)))
        return step_s + val_s + 2 * run.save_s

    def _progress(self, run: _Run, ahead_s: float = 0.0) -> tuple[float, bool]:
        """Budget fraction and stop request, agreed by all ranks (time differs between them).

        ``ahead_s`` counts that much more time as spent: with the duration of one step, a fraction >= 1 means the next
        step would end past a time budget."""
        frac = run.budget.fraction(run.step, run.elapsed(ahead_s))
        frac, stop = all_max([frac, float(self._stop.is_set())], run.env)
        return frac, stop > 0

    def _step(self, run: _Run, frac: float) -> float:
        """One optimiser step at ``frac`` of the budget; returns its (local) training loss."""
        rcfg, opt = run.rcfg, run.opt
        for g in opt.param_groups:
            g["lr"] = rcfg.lr * lr_factor(frac)
        batches = run.prefetch.next()
        accum = len(batches)
        opt.zero_grad(set_to_none=True)
        total = 0.0
        for inp, tgt in batches:  # gradient accumulation: `accum` batches per optimiser step
            x, y = to_device(torch.from_numpy(inp), run.device), to_device(torch.from_numpy(tgt), run.device)
            with autocast(run.device, rcfg.amp, training=True):
                pred = run.model(x)
            loss = loss_fn(pred, y, rcfg.l1_weight) / accum
            run.scaler.scale(loss).backward()
            total += float(loss.item())
        if not np.isfinite(total):
            run.no_save = "diverged"
            raise InputError(f"training diverged at step {run.step + 1} (loss {total}) with learning rate "
                             f"{rcfg.lr:g}; no model was written from it{self._kept_note()}; try a lower learning "
                             "rate (--lr) or check the data for extreme values")
        if self._clip_or_skip(opt, run.scaler, run.net, run.step):
            run.scaler.step(opt)
        run.scaler.update()
        run.step += 1
        run.den.step = run.step
        return total

    def _after_step(self, run: _Run, loss: float, frac: float, done: bool) -> TrainEvent | None:
        """Log, validate, checkpoint and preview after a step; the event to yield, if any."""
        rcfg, step, env = run.rcfg, run.step, run.env
        log_now = step % rcfg.log_every == 0 or done
        loss_now = all_mean(loss, env) if log_now else loss
        self.history["step"].append(step)
        self.history["loss"].append(loss_now)
        val_loss = None
        if step % rcfg.val_every == 0 or done:
            val_loss = validation_loss(run.net, run.val_batches, run.device, rcfg)
            self.history["val_step"].append(step)
            self.history["val_loss"].append(val_loss)
        ckpt = self._checkpoint(run)
        preview = None
        if env.is_main and rcfg.preview_every and (step % rcfg.preview_every == 0 or done):
            preview = preview_output(self.stacks[0], run.den, rcfg, run.device)
        if not (env.is_main and (log_now or ckpt or preview is not None)):
            return None
        elapsed = time.perf_counter() - run.t0
        rate = (step - run.start_step) / max(elapsed, 1e-9)
        eta = elapsed * (1.0 - frac) / frac if frac > 0 else None
        return TrainEvent(step, run.budget.max_steps, loss_now, val_loss, rate, run.elapsed_before + elapsed, eta,
                          frac, preview, str(ckpt) if ckpt else None, history=self.history)

    def _kept_note(self) -> str:
        """'; <out>/checkpoint-last.pt (step N) is kept' when an earlier periodic checkpoint exists."""
        return self._writer.kept_note() if self._writer is not None else ""

    def _clip_or_skip(self, opt: torch.optim.Optimizer, scaler: Any, net: torch.nn.Module, step: int) -> bool:
        """Clip the gradient norm to :data:`GRAD_CLIP`; False (skip this update) if it is not finite.

        Reduced-precision backward passes can overflow on a rare batch (bfloat16 on CPU has no loss
        scaler to catch it): one such update, or one huge one, turns every weight into NaN. Under DDP
        the gradients are already all-reduced here, so every rank takes the same decision.
        """
        scaler.unscale_(opt)  # a no-op unless a (CUDA float16) scaler is active
        norm = torch.nn.utils.clip_grad_norm_(net.parameters(), GRAD_CLIP)
        if bool(torch.isfinite(norm)):
            self._skipped = 0
            return True
        self._skipped += 1
        if self._skipped > MAX_SKIPPED_STEPS:
            raise InputError(f"training diverged at step {step + 1}: {self._skipped} updates in a row had non-finite "
                             f"gradients{self._kept_note()}; try a lower learning rate (--lr) or --no-amp")
        opt.zero_grad(set_to_none=True)
        return False

    # -- saving ---------------------------------------------------------------------------
    def _training_state(self, run: _Run) -> dict[str, Any]:
        return training_state(run.opt, run.scaler, run.prefetch.state, run.step, run.elapsed(), self.history,
                              run.budget)

    def _save(self, run: _Run, name: str) -> Path:
        """Write ``name`` (rank 0), timed: a time budget keeps room for the final saves."""
        t = time.perf_counter()
        path = self._writer.save(name, run.den, self._training_state(run))
        run.save_s = time.perf_counter() - t
        return path

    def _checkpoint(self, run: _Run) -> Path | None:
        """Write ``checkpoint-last.pt`` every ``checkpoint_every`` steps (rank 0); its path when written."""
        every = run.rcfg.checkpoint_every
        if not (run.env.is_main and self._writer is not None and every and run.step % every == 0):
            return None
        try:
            return self._save(run, LAST_NAME)
        except UserError as exc:
            run.no_save = "save failed"
            raise type(exc)(f"could not save the checkpoint of step {run.step}: {exc}{self._kept_note()}") from None

    def _finish(self, run: _Run) -> None:
        """End the run: stop the sampling thread, record the provenance and save the final model.

        Runs on normal end, on stop(), on a signal and when the consumer closes the generator: a
        trained model is never lost. Rank 0 alone writes; never NaN weights.
        """
        run.prefetch.close()
        run.net.eval()
        run.den.provenance = run_provenance(run.den, self.sources, self.stacks, run.rcfg.seed, run.elapsed(),
                                            self.init, self.parent)
        if run.env.is_main and self._writer is not None and run.step > run.start_step and not run.no_save:
            if not weights_finite(run.net):
                raise InputError(f"training diverged by step {run.step}: the weights are no longer finite (NaN / "
                                 f"inf); no model was written{self._kept_note()}; try a lower learning rate (--lr)")
            self._save(run, LAST_NAME)
            self.saved = self._save(run, FINAL_NAME)
        self._in_loop = False
        barrier(run.env)


def iter_train(stacks: Sequence[Any], cfg: TrainConfig, out_dir: str | os.PathLike | None = None,
               resume: str | os.PathLike | None = None, init: str | os.PathLike | None = None,
               sources: Sequence[str] | None = None) -> Generator[TrainEvent, None, Denoiser]:
    """Generator form of :class:`Trainer` (see there): yields events, returns the model."""
    return (yield from Trainer(stacks, cfg, out_dir, resume, init, sources).run())


def train(stacks: Sequence[Any], cfg: TrainConfig, out_dir: str | os.PathLike | None = None,
          resume: str | os.PathLike | None = None, init: str | os.PathLike | None = None,
          progress: Callable[[TrainEvent], None] | None = None) -> Denoiser:
    """Train to the end of the budget and return the model (blocking).

    Examples
    --------
    >>> from napari_unet_att.evaluation.simulator import simulate
    >>> from napari_unet_att.config import TrainConfig
    >>> sim = simulate(n_frames=64, size=32, seed=0)
    >>> den = train([sim.noisy], TrainConfig(steps=2, patch_t=8, patch_xy=16))  # doctest: +SKIP
    """
    return run_to_end(iter_train(stacks, cfg, out_dir, resume, init), progress)
