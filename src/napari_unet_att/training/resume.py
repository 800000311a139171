"""Continuing an interrupted run from its ``checkpoint-last.pt``: the model, settings and training state."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Collection, Sequence
from typing import Any

import torch

from ..config import ResolvedTrainConfig, TrainConfig, field_default
from ..errors import CheckpointError, InputError
from ..model.checkpoint import load_checkpoint, load_training_state
from ..model.denoiser import Denoiser
from .sampler import PatchSampler
from .start import fit_patch

# A resumed run keeps its stored settings except these, which the new request sets (and the
# budget, when a new one is given).
RESUME_OVERRIDES = ("device", "checkpoint_every", "preview_every", "preview_frames")
# Settings a resumed run takes from the request when the user gave them: they change how the rest of
# the run is computed or reported, not what it is (the budget, a new learning rate, mixed precision).
RESUME_CHANGEABLE = ("steps", "seconds", "lr", "amp", "val_every", "val_patches", "log_every")
# How the CLI spells a setting, for the one-line refusal of a conflicting one.
_OPTION = {"patch_t": "--patch-t", "patch_xy": "--patch-xy", "batch_size": "--batch-size", "amp": "--no-amp",
           "flip_backward": "--flip-backward"}


def given_settings(cfg: TrainConfig, always: Collection[str] = ()) -> set[str]:
    """The settings of ``cfg`` a caller chose: those that differ from :class:`TrainConfig`'s defaults,
    and the names in ``always`` (what a form shows as chosen, e.g. the mode)."""
    return {f.name for f in dataclasses.fields(cfg)
            if getattr(cfg, f.name) != field_default(TrainConfig, f.name)} | set(always)


def check_resume_request(
    path: str | os.PathLike, stored: ResolvedTrainConfig, cfg: TrainConfig, given: Collection[str],
    shapes: Sequence[tuple[int, ...]],
) -> None:
    """Refuse settings the user gave that the resumed run fixes otherwise (its mode, preset, patch...).

    A patch the user gave is compared as the run would use it: shrunk to the stacks, as the
    original run's was (so the command that started the run resumes it unchanged).
    """
    fixed = [f.name for f in dataclasses.fields(cfg)
             if f.name in given and f.name not in RESUME_OVERRIDES + RESUME_CHANGEABLE]
    asked = {k: getattr(cfg, k) for k in fixed}
    if "patch_t" in asked or "patch_xy" in asked:
        want = dataclasses.replace(stored, **{k: v for k, v in asked.items() if k in ("patch_t", "patch_xy")})
        fitted, _ = fit_patch(want, shapes)
        asked.update({k: getattr(fitted, k) for k in ("patch_t", "patch_xy") if k in asked})
    clash = [k for k, v in asked.items() if v != getattr(stored, k)]
    if clash:
        pairs = ", ".join(f"{_OPTION.get(k, '--' + k.replace('_', '-'))} {getattr(cfg, k)!r} (the run has "
                          f"{getattr(stored, k)!r})" for k in clash)
        one = len(clash) == 1
        raise InputError(f"{path} continues a run whose settings are fixed, but {pairs} {'was' if one else 'were'} "
                         f"asked for; leave {'this option' if one else 'these options'} out to resume it, or start a "
                         "new run from its weights (--init in the CLI, 'start from the loaded model's weights' in the "
                         "widget)")


def load_resume(
    path: str | os.PathLike, cfg: TrainConfig, given: Collection[str] | None = None,
    shapes: Sequence[tuple[int, ...]] = (),
) -> tuple[Denoiser, ResolvedTrainConfig, dict[str, Any], str]:
    """The model, settings and training state of the run saved in ``path``.

    Parameters
    ----------
    path : str or PathLike
        A checkpoint with training state (``checkpoint-last.pt`` or a ``model.pt`` of ours).
    cfg : TrainConfig
        The new request.
    given : collection of str, optional
        The settings of ``cfg`` the user chose (default: :func:`given_settings`). Those the run
        fixes must agree with it (:func:`check_resume_request`); those of :data:`RESUME_CHANGEABLE`
        replace the stored ones.
    shapes : sequence of tuple
        The shapes of the stacks to train on (to compare a given patch as the run would use it).

    Returns
    -------
    tuple
        The model, the run's settings (stored ones, with :data:`RESUME_OVERRIDES` and the given
        :data:`RESUME_CHANGEABLE` ones from ``cfg``), the training state and a notice for the user.
    """
    given = given_settings(cfg) if given is None else set(given)
    den = load_checkpoint(path)
    state = load_training_state(path, complete=True)
    if state is None:
        raise InputError(f"{path} holds no training state (it is a final model); start a new run from its weights "
                         "instead (--init in the CLI, 'start from the loaded model's weights' in the widget)")
    rcfg = cfg.resolved()
    stored = rcfg.merged(dict(den.train_config))
    check_resume_request(path, stored, cfg, given, shapes)
    keep = RESUME_OVERRIDES + tuple(k for k in RESUME_CHANGEABLE if k in given and getattr(cfg, k) is not None)
    if cfg.steps is not None or cfg.seconds is not None:  # a new budget replaces the stored one whole
        keep += ("steps", "seconds")
    new = rcfg.as_dict()
    return den, stored.merged({k: new[k] for k in keep}), state, f"resuming from {path} at step {den.step}"


def restore_state(
    path: str | os.PathLike, state: dict[str, Any], opt: torch.optim.Optimizer, scaler: Any, sampler: PatchSampler,
    history: dict[str, list],
) -> tuple[int, float, dict[str, list]]:
    """Load ``state`` into the optimiser, scaler, sampler and torch RNG; return step, seconds and history.

    ``load_training_state`` checked each field's type; this catches what only the objects can (an
    optimiser state for other parameters, an RNG state of the wrong size).
    """
    try:
        opt.load_state_dict(state["optimizer"])
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        sampler.set_state(state["sampler"])
        torch.set_rng_state(state["torch_rng"])
        history = {k: list(v) for k, v in (state.get("history") or history).items()}
    except (ValueError, TypeError, KeyError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: its training state does not fit this run ({type(exc).__name__}: "
                              f"{str(exc)[:120]}); start a new run with --init from it instead of --resume") from None
    return int(state["step"]), float(state.get("elapsed_s", 0.0)), history
