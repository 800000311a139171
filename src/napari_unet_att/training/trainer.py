"""Self-supervised training loop.

:class:`Trainer` runs as a generator (:meth:`Trainer.run`) that yields a
:class:`~napari_unet_att.config.TrainEvent` every ``log_every`` steps and returns the trained
:class:`~napari_unet_att.model.denoiser.Denoiser`. The CLI drains it with a progress bar, the napari
widget runs it in ``thread_worker``; both stop it with :meth:`Trainer.stop`, which ends the loop
cleanly after the current step and still saves and returns the model.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import time
from collections.abc import Callable, Generator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import __version__
from ..config import InferConfig, TrainConfig, TrainEvent, get_preset, run_to_end
from ..errors import CheckpointError, InputError, UserError
from ..model.checkpoint import CHECKPOINT_EXT, load_checkpoint, load_training_state, save_checkpoint
from ..model.denoiser import Denoiser
from ..model.networks import build_network, count_parameters
from ..model.normalization import Normalization, pool_statistics, stack_statistics
from ..model.pretrained import load_model
from ..modes import check_stack_for_mode, max_patch_for
from ..provenance import timestamp
from ..runtime.device import autocast, configure_process, grad_scaler, resolve_device, reuse_freed_memory, to_device
from ..runtime.distributed import all_max, all_mean, barrier, dist_env, init_process_group, wrap_model
from ..runtime.resources import check_training_memory
from ..stackio.outputs import OutputLock, check_train_out
from .sampler import PatchSampler

FINAL_NAME = "model" + CHECKPOINT_EXT
LAST_NAME = "checkpoint-last" + CHECKPOINT_EXT
_MIN_PATCH_T, _MIN_PATCH_XY = 4, 16


def loss_fn(pred: torch.Tensor, target: torch.Tensor, l1_weight: float) -> torch.Tensor:
    """``w * L1 + (1 - w) * MSE`` in float32 (autocast outputs are upcast first)."""
    pred = pred.float()
    return l1_weight * torch.nn.functional.l1_loss(pred, target) + (1.0 - l1_weight) * torch.nn.functional.mse_loss(
        pred, target
    )


def _fit_patch(cfg: dict[str, Any], shapes: Sequence[tuple[int, ...]], mode: str) -> list[str]:
    """Shrink the patch to the smallest stack if needed; return notices for the user."""
    notes = []
    for shape in shapes:
        mt, mxy = max_patch_for(shape, mode)
        if mt < _MIN_PATCH_T or mxy < _MIN_PATCH_XY:
            # Let the mode check produce the specific message (frames or rows missing, and how many).
            check_stack_for_mode(shape, mode, max(_MIN_PATCH_T, min(cfg["patch_t"], mt)), _MIN_PATCH_XY)
            raise InputError(
                f"stack of shape {tuple(shape)} is too small for {mode!r} training: it allows patches of at most "
                f"{mt} x {mxy} x {mxy} (t, y, x) but at least {_MIN_PATCH_T} x {_MIN_PATCH_XY} x {_MIN_PATCH_XY} "
                "are needed"
            )
        if cfg["patch_t"] > mt or cfg["patch_xy"] > mxy:
            new_t, new_xy = min(cfg["patch_t"], mt), min(cfg["patch_xy"], mxy)
            notes.append(
                f"patch {cfg['patch_t']}x{cfg['patch_xy']}x{cfg['patch_xy']} does not fit a {tuple(shape)} stack in "
                f"{mode!r} mode; using {new_t}x{new_xy}x{new_xy}"
            )
            cfg["patch_t"], cfg["patch_xy"] = new_t, new_xy
    for shape in shapes:
        check_stack_for_mode(shape, mode, cfg["patch_t"], cfg["patch_xy"])
    return notes


def _weights_finite(net: torch.nn.Module) -> bool:
    """True if every parameter and buffer (BatchNorm statistics too) is finite."""
    return all(bool(torch.isfinite(t).all()) for t in net.state_dict().values() if t.is_floating_point())


_WARMUP = 0.05  # share of the budget over which the learning rate ramps up
# Fine-tuning (--init) scales the preset's learning rate. Measured (an intermediate `fast` generalist,
# 150 steps on a held-out 300 x 96 x 96 recording at 2 photons/pixel, warm-up and cosine to zero;
# zero-shot 33.97 dB): factor 0.1 36.08 dB, 0.25 36.50, 1.0 37.03. The pretrained start does not need
# smaller steps: a few minutes of fine-tuning are short, and the schedule's warm-up and decay to zero
# already keep the first and last steps small.
FINETUNE_LR_FACTOR = 1.0
# Gradient norms of the `fast` network are ~0.3-6 in normal steps (measured); rare spikes (162 seen at
# step 5 of a 32 x 64 x 64 run, inf with 8 x 16 x 16 patches at lr 2e-3) are clipped or skipped.
GRAD_CLIP = 10.0
MAX_SKIPPED_STEPS = 20  # updates in a row with non-finite gradients before the run is called diverged


def _parent_record(init: Any, den: Denoiser) -> dict[str, Any]:
    """What a fine-tuned model records about the model it started from."""
    prov = den.provenance
    return {
        "model": str(init), "arch": den.arch, "base_channels": den.base_channels, "mode": den.mode,
        "steps": int(den.step), "source": prov.get("source"), "created": prov.get("created"),
        "trained_on": prov.get("trained_on", prov.get("sources")),
    }


def _lr_factor(fraction: float, floor: float = 0.0, warmup: float = _WARMUP) -> float:
    """Learning-rate multiplier at ``fraction`` of the budget: a linear warm-up over the first
    ``warmup`` (5%), then a cosine decay to ``floor`` (0), so any budget ends with the smallest steps.
    ``floor`` and ``warmup`` exist for the schedule experiments (benchmarks/experiments).

    The targets are as noisy as the inputs, so the last steps' gradient noise sets how far the
    weights end from a good solution; the warm-up keeps Adam's first, badly scaled steps from
    throwing the unnormalised network off. Measured (`fast`, 600 steps, 2-photon simulation,
    PSNR): cosine to 0.1 x lr 34.03 dB, to 0 34.60 dB, with the warm-up and lr 2e-3 34.86 dB.
    """
    f = min(max(fraction, 0.0), 1.0)
    warm = min(1.0, (f + 0.1 * warmup) / warmup) if warmup > 0 else 1.0  # the first step moves (0.1 x lr)
    return warm * (floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * f)))


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
        Start from the weights of a checkpoint (ours or a reference tool's); the architecture
        is the checkpoint's.
    sources : sequence of str, optional
        Names of the stacks (file paths, layer names) recorded in the provenance.
    targets : sequence of array-like, optional
        Clean twins of ``stacks`` (simulations only): targets are read from them instead of the
        noisy data (see :class:`~napari_unet_att.training.sampler.PatchSampler`); used to pretrain the
        generalist models, never for a user's recording.
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
    ) -> None:
        if not stacks:
            raise InputError("no training data given")
        if resume is not None and init is not None:
            raise InputError("use either --resume (continue a run) or --init (start from weights), not both")
        self.stacks = list(stacks)
        self.cfg = cfg
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.resume = resume
        self.init = init
        self.sources = list(sources) if sources else [f"array{i}" for i in range(len(self.stacks))]
        self.targets = list(targets) if targets is not None else None
        self.parent: dict[str, Any] | None = None
        self._skipped = 0  # consecutive updates skipped for non-finite gradients
        self._stop = threading.Event()
        self._started = time.time()
        self.denoiser: Denoiser | None = None
        self.history: dict[str, list] = {"step": [], "loss": [], "val_step": [], "val_loss": []}
        self._in_loop = False  # between the first step and the end of the final save
        self.last_saved_step: int | None = None  # step of the checkpoint-last.pt this run wrote
        self.saved: Path | None = None  # the final model written by this run, if any

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
    def _build(self) -> tuple[dict[str, Any], dict[str, Any] | None, list[str]]:
        """Model, config and optional training state, from scratch, --init or --resume."""
        rcfg = self.cfg.resolved()
        state = None
        notes: list[str] = []
        if self.resume is not None:
            den = load_checkpoint(self.resume)
            state = load_training_state(self.resume, complete=True)
            if state is None:
                raise InputError(f"{self.resume} holds no training state (it is a final model); start a new "
                                 "run from its weights instead (--init in the CLI, 'start from the loaded "
                                 "model's weights' in the widget)")
            old = dict(den.train_config)
            # Continue the same run: the stored settings win, except the budget and device just given.
            keep = ("device", "checkpoint_every", "preview_every", "preview_frames")
            if self.cfg.steps is not None or self.cfg.seconds is not None:
                keep += ("steps", "seconds")
            for k in keep:
                old[k] = rcfg[k]
            rcfg = {**rcfg, **old}
            notes.append(f"resuming from {self.resume} at step {den.step}")
        elif self.init is not None:
            den = load_model(self.init, mode=rcfg["mode"], preset=rcfg["preset"])
            self.parent = _parent_record(self.init, den)
            # The new model's history starts here; only how it normalises its input carries over.
            den.provenance = {k: v for k, v in den.provenance.items() if k == "normalization"}
            den.mode = rcfg["mode"]
            if self.cfg.lr is None:  # fine-tuning rate (FINETUNE_LR_FACTOR: measured, see there)
                rcfg["lr"] = rcfg["lr"] * FINETUNE_LR_FACTOR
            notes.append(f"starting from the weights of {self.init} ({den.arch}, f={den.base_channels}), "
                         f"learning rate {rcfg['lr']:g}")
        else:
            p = get_preset(rcfg["preset"])
            net = build_network(p.arch, p.base_channels)
            den = Denoiser(net, p.arch, p.base_channels, rcfg["preset"], rcfg["mode"], Normalization(0.0, 1.0))
        if den.mode != rcfg["mode"]:
            raise InputError(f"the checkpoint was trained in {den.mode!r} mode but {rcfg['mode']!r} was requested")
        self.denoiser = den
        return rcfg, state, notes

    def _normalizations(self) -> tuple[list[Normalization], Normalization]:
        """Per-stack normalisation for sampling, and the pooled one stored with the model."""
        stats = [stack_statistics(s) for s in self.stacks]
        per_stack = [pool_statistics([s]) for s in stats]
        return per_stack, pool_statistics(stats)

    # -- the loop -------------------------------------------------------------------------
    def run(self) -> Generator[TrainEvent, None, Denoiser]:
        """Train; yields progress events, returns the trained :class:`Denoiser`.

        The output folder is checked (a folder, writable) and locked against a second run before
        anything else, and checked for room for the checkpoints once the network's size is known.
        """
        lock, created = None, False
        if self.out_dir is not None and dist_env().is_main:  # rank 0 alone writes
            created = not self.out_dir.exists()
            check_train_out(self.out_dir)
            lock = OutputLock(self.out_dir).acquire()
        try:
            return (yield from self._run())
        finally:
            if lock is not None:
                lock.release()
            if created:  # a run that wrote nothing (refused data, interrupted set-up) leaves no empty folder
                with contextlib.suppress(OSError):
                    self.out_dir.rmdir()

    def _run(self) -> Generator[TrainEvent, None, Denoiser]:  # noqa: C901 - one linear loop reads best
        torch.manual_seed(self.cfg.seed)  # before building: the initial weights depend on it
        rcfg, state, notes = self._build()
        den = self.denoiser
        assert den is not None
        if self.out_dir is not None and dist_env().is_main:
            check_train_out(self.out_dir, count_parameters(den.net))
        mode = rcfg["mode"]
        notes += _fit_patch(rcfg, [tuple(s.shape) for s in self.stacks], mode)
        per_stack, pooled = self._normalizations()
        if self.resume is None:
            den.norm = pooled
        device = configure_process(resolve_device(rcfg["device"]))
        # Refuse a patch that clearly cannot fit before any work starts.
        check_training_memory(rcfg["patch_t"], rcfg["patch_xy"], rcfg["batch_size"], den.arch, den.base_channels,
                              device)
        env = init_process_group(device)
        net = den.net.to(device)
        net.train()
        model = wrap_model(net, device, env)  # DDP under torchrun; `net` stays the plain module we save
        opt = torch.optim.Adam(net.parameters(), lr=rcfg["lr"], betas=(0.9, 0.999))
        scaler = grad_scaler(device, rcfg["amp"])
        sampler_kw = dict(
            mode=mode, patch_t=rcfg["patch_t"], patch_xy=rcfg["patch_xy"], val_fraction=rcfg["val_fraction"],
            flip_backward=rcfg["flip_backward"], targets=self.targets,
        )
        # Each rank draws its own patch stream (the distributed sampler of random-patch training);
        # validation patches are the same on every rank.
        train_s = PatchSampler(self.stacks, per_stack, split="train", swap=rcfg["swap"], augment=rcfg["augment"],
                               seed=rcfg["seed"] + 1000 * env.rank, **sampler_kw)
        val_s = PatchSampler(self.stacks, per_stack, split="val", swap=False, augment=False, seed=rcfg["seed"] + 1,
                             **sampler_kw)
        val_batches = val_s.validation_batches(rcfg["val_patches"], rcfg["batch_size"])
        step, elapsed_before = 0, 0.0
        if state is not None:
            # load_training_state checked each field's type; these catch what only the objects can
            # (an optimiser state for other parameters, an RNG state of the wrong size).
            try:
                opt.load_state_dict(state["optimizer"])
                if state.get("scaler"):
                    scaler.load_state_dict(state["scaler"])
                train_s.set_state(state["sampler"])
                torch.set_rng_state(state["torch_rng"])
                self.history = {k: list(v) for k, v in (state.get("history") or self.history).items()}
            except (ValueError, TypeError, KeyError, RuntimeError) as exc:
                raise CheckpointError(f"{self.resume}: its training state does not fit this run "
                                      f"({type(exc).__name__}: {str(exc)[:120]}); start a new run with --init from "
                                      "it instead of --resume") from None
            step = int(state["step"])
            elapsed_before = float(state.get("elapsed_s", 0.0))
        den.train_config = rcfg
        den.flip_backward = bool(rcfg["flip_backward"])
        den.train_shape = tuple(int(n) for n in self.stacks[0].shape)
        # The budget and lr schedule: a resume without a new budget continues the interrupted run's
        # schedule exactly (same result as an uninterrupted run); a new budget starts a new segment.
        continuing = state is not None and self.cfg.steps is None and self.cfg.seconds is None
        if continuing:
            base_step, base_elapsed = int(state["schedule"][0]), float(state["schedule"][1])
            max_steps, max_seconds = state["schedule"][2], state["schedule"][3]
        else:
            base_step, base_elapsed = step, elapsed_before
            max_steps = rcfg["steps"] + step if rcfg["steps"] is not None else None
            max_seconds = rcfg["seconds"]
        start_step = step
        t0 = time.perf_counter()
        if env.is_main:
            for note in notes + list(getattr(train_s, "notices", [])):
                yield TrainEvent(step, max_steps, float("nan"), message=note, history=self.history)

        def progress(ahead_s: float = 0.0) -> tuple[float, bool]:
            """Budget fraction and stop request, agreed by all ranks (time differs between them).

            ``ahead_s`` counts that much more time as spent: with the duration of one step, a
            fraction >= 1 means the next step would end past a time budget.
            """
            fs = (step - base_step) / (max_steps - base_step) if max_steps else 0.0
            run_s = elapsed_before + time.perf_counter() - t0 - base_elapsed + ahead_s
            ft = run_s / max_seconds if max_seconds else 0.0
            frac, stop = all_max([min(1.0, max(fs, ft)), float(self._stop.is_set())], env)
            return frac, stop > 0

        # Sampling runs one batch ahead in a thread so reading patches overlaps the model's work.
        # The sampler state saved in checkpoints is the one *before* the prefetched batch, so a
        # resumed run draws exactly the batches the interrupted one would have.
        pool = ThreadPoolExecutor(1, thread_name_prefix="unet-att-sampler")
        accum = max(1, int(rcfg.get("accumulate", 1)))

        def submit():
            st = train_s.state()
            return st, pool.submit(lambda: [train_s.sample(rcfg["batch_size"]) for _ in range(accum)])

        sampler_state, pending = submit()

        def make_state() -> dict[str, Any]:
            return {
                "optimizer": opt.state_dict(), "scaler": scaler.state_dict(), "sampler": sampler_state,
                "torch_rng": torch.get_rng_state(), "step": step,
                "elapsed_s": elapsed_before + time.perf_counter() - t0, "history": self.history,
                "schedule": [base_step, base_elapsed, max_steps, max_seconds],
            }

        # Set when the weights must not be saved: after a divergence (whatever the last step left is
        # garbage) or a failed save (the disk is full: the earlier checkpoint is the one to keep).
        no_save = ""
        self._in_loop = True
        budget_spent = False  # set when the budget cannot fit another step
        step_began = time.perf_counter()
        with reuse_freed_memory(device):  # no page faults for every step's fresh activations
            try:
                while True:
                    # Checked again here (not only after the step) so a stop() made while the consumer
                    # held the last event takes effect before another step starts. A new budget makes
                    # at least one step, so even `seconds=1e-9` ends with a model.
                    frac, stop = progress()
                    if budget_spent or stop or (frac >= 1.0 and (step > start_step or continuing)):
                        break
                    for g in opt.param_groups:
                        g["lr"] = rcfg["lr"] * _lr_factor(frac)
                    batches = pending.result()
                    sampler_state, pending = submit()
                    opt.zero_grad(set_to_none=True)
                    total = 0.0
                    for inp, tgt in batches:  # gradient accumulation: `accum` batches per optimiser step
                        x, y = to_device(torch.from_numpy(inp), device), to_device(torch.from_numpy(tgt), device)
                        with autocast(device, rcfg["amp"], training=True):
                            pred = model(x)
                        loss = loss_fn(pred, y, rcfg["l1_weight"]) / accum
                        scaler.scale(loss).backward()
                        total += float(loss.item())
                    if not np.isfinite(total):
                        no_save = "diverged"
                        raise InputError(f"training diverged at step {step + 1} (loss {total}) with learning "
                                         f"rate {rcfg['lr']:g}; no model was written from it"
                                         f"{self._kept_note()}; try a lower learning rate (--lr) or check the "
                                         "data for extreme values")
                    if self._clip_or_skip(opt, scaler, net, step):
                        scaler.step(opt)
                    scaler.update()
                    step += 1
                    den.step = step
                    # A time budget ends at the last step that fits it, not one step past it (on a slow
                    # CPU a step takes seconds: `--seconds 60` ran 78 s), and then reports 100%.
                    # The first step's time includes one-off warm-up: the last step's predicts the next.
                    now = time.perf_counter()
                    step_s = now - step_began if step - start_step > 1 else 0.0
                    step_began = now
                    frac, stop = progress(ahead_s=step_s if max_seconds else 0.0)
                    budget_spent = frac >= 1.0
                    done = budget_spent or stop
                    log_now = step % rcfg["log_every"] == 0 or done
                    loss_now = all_mean(total, env) if log_now else total
                    self.history["step"].append(step)
                    self.history["loss"].append(loss_now)
                    val_loss = None
                    if step % rcfg["val_every"] == 0 or done:
                        val_loss = self._validate(net, val_batches, device, rcfg)
                        self.history["val_step"].append(step)
                        self.history["val_loss"].append(val_loss)
                    ckpt = None
                    if (env.is_main and self.out_dir is not None and rcfg["checkpoint_every"]
                            and step % rcfg["checkpoint_every"] == 0):
                        try:
                            ckpt = self._save(LAST_NAME, make_state())
                        except UserError as exc:
                            no_save = "save failed"
                            raise type(exc)(f"could not save the checkpoint of step {step}: {exc}"
                                            f"{self._kept_note()}") from None
                    preview = None
                    if env.is_main and rcfg["preview_every"] and (step % rcfg["preview_every"] == 0 or done):
                        preview = self._preview(rcfg, device)
                    if env.is_main and (log_now or ckpt or preview is not None):
                        elapsed = time.perf_counter() - t0
                        rate = (step - start_step) / max(elapsed, 1e-9)
                        eta = elapsed * (1.0 - frac) / frac if frac > 0 else None
                        yield TrainEvent(
                            step, max_steps, loss_now, val_loss, rate, elapsed_before + elapsed, eta, frac,
                            preview, str(ckpt) if ckpt else None, history=self.history,
                        )
            finally:
                pending.cancel()
                pool.shutdown(wait=True)
                net.eval()
                den.provenance = self._provenance(rcfg, elapsed_before + time.perf_counter() - t0)
                if env.is_main and self.out_dir is not None and step > start_step and not no_save:
                    # Runs on normal end, on stop(), on a signal and when the consumer closes the
                    # generator: a trained model is never lost. Rank 0 alone writes; never NaN weights.
                    if not _weights_finite(net):
                        raise InputError(f"training diverged by step {step}: the weights are no longer finite "
                                         f"(NaN / inf); no model was written{self._kept_note()}; try a lower "
                                         "learning rate (--lr)")
                    self._save(LAST_NAME, make_state())
                    self.saved = self._save(FINAL_NAME, make_state())
                self._in_loop = False
                barrier(env)
        return den

    def _kept_note(self) -> str:
        """'; <out>/checkpoint-last.pt (step N) is kept' when an earlier periodic checkpoint exists."""
        if self.last_saved_step is None or self.out_dir is None:
            return ""
        return f"; {self.out_dir / LAST_NAME} (step {self.last_saved_step}) is kept"

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

    def _validate(self, net: torch.nn.Module, batches, device: torch.device, rcfg: dict[str, Any]) -> float:
        """Mean loss on the held-out patches (eval mode, no gradients)."""
        net.eval()
        losses = []
        with torch.inference_mode():
            for inp, tgt in batches:
                x, y = to_device(torch.from_numpy(inp), device), to_device(torch.from_numpy(tgt), device)
                with autocast(device, rcfg["amp"]):
                    pred = net(x)
                losses.append(float(loss_fn(pred, y, rcfg["l1_weight"]).item()))
        net.train()
        return float(np.mean(losses))

    def _preview(self, rcfg: dict[str, Any], device: torch.device) -> np.ndarray:
        """The current model's output on the preview frames of the first stack (input units)."""
        from ..inference.denoising import denoise  # local: infer imports nothing from train, keep the graph one-way

        stack = self.stacks[0]
        f0, f1 = rcfg["preview_frames"] or (0, min(stack.shape[0], 16))
        f0, f1 = max(0, int(f0)), min(stack.shape[0], int(f1))
        if f1 - f0 < 1:
            raise InputError(f"preview frames {f0}..{f1} are outside the stack's {stack.shape[0]} frames")
        self.denoiser.net.eval()
        try:
            out = denoise(stack[f0:f1], self.denoiser, InferConfig(device=str(device), amp=rcfg["amp"]))
        finally:
            self.denoiser.net.train()
        return out

    def _provenance(self, rcfg: dict[str, Any], elapsed: float) -> dict[str, Any]:
        den = self.denoiser
        prov = dict(den.provenance) if den is not None else {}
        prov.update(
            {
                "package": f"napari-unet-att {__version__}",
                "torch": torch.__version__,
                "created": timestamp(),
                "sources": [str(s) for s in self.sources],
                "shapes": [list(map(int, s.shape)) for s in self.stacks],
                "seed": int(rcfg["seed"]),
                "train_seconds": round(float(elapsed), 2),
            }
        )
        if self.init is not None:
            prov["init"] = str(self.init)
            prov["parent"] = self.parent
        prov.setdefault("source", "napari-unet-att training")
        return prov

    def _save(self, name: str, training_state: dict[str, Any]) -> Path:
        assert self.out_dir is not None and self.denoiser is not None
        self.out_dir.mkdir(parents=True, exist_ok=True)
        # Temporary files of saves interrupted by a kill are never results: clear them.
        for stale in self.out_dir.glob(f".{name}.*.tmp"):
            if stale.stat().st_mtime < self._started:
                stale.unlink(missing_ok=True)
        path = self.out_dir / name
        save_checkpoint(path, self.denoiser, training_state=training_state)
        if name == LAST_NAME:
            self.last_saved_step = int(self.denoiser.step)
        return path


def iter_train(
    stacks: Sequence[Any],
    cfg: TrainConfig,
    out_dir: str | os.PathLike | None = None,
    resume: str | os.PathLike | None = None,
    init: str | os.PathLike | None = None,
    sources: Sequence[str] | None = None,
) -> Generator[TrainEvent, None, Denoiser]:
    """Generator form of :class:`Trainer` (see there): yields events, returns the model."""
    return (yield from Trainer(stacks, cfg, out_dir, resume, init, sources).run())


def train(
    stacks: Sequence[Any],
    cfg: TrainConfig,
    out_dir: str | os.PathLike | None = None,
    resume: str | os.PathLike | None = None,
    init: str | os.PathLike | None = None,
    progress: Callable[[TrainEvent], None] | None = None,
) -> Denoiser:
    """Train to the end of the budget and return the model (blocking).

    Examples
    --------
    >>> from napari_unet_att.evaluation.simulator import simulate
    >>> from napari_unet_att.config import TrainConfig
    >>> sim = simulate(n_frames=64, size=32, seed=0)
    >>> den = train([sim.noisy], TrainConfig(steps=2, patch_t=8, patch_xy=16))  # doctest: +SKIP
    """
    return run_to_end(iter_train(stacks, cfg, out_dir, resume, init), progress)
