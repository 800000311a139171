"""Continuing an interrupted run from its ``checkpoint-last.pt``: the model, settings and training state."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Collection, Sequence
from typing import Any

import torch

from ..config import ResolvedTrainConfig, TrainConfig, field_default
from ..errors import InputError, TrainingStateError
from ..model.checkpoint import load_checkpoint, load_training_state
from ..model.denoiser import Denoiser
from ..wording import PYTHON_WORDING, Wording
from .sampler import PatchSampler
from .start import fit_patch

# A resumed run keeps its stored settings except these, which the new request sets (and the
# budget, when a new one is given).
RESUME_OVERRIDES = ("device", "checkpoint_every", "preview_every", "preview_frames")
# Settings a resumed run takes from the request when the user gave them: they change how the rest of
# the run is computed or reported, not what it is (the budget, a new learning rate, mixed precision).
RESUME_CHANGEABLE = ("steps", "seconds", "lr", "amp", "val_every", "val_patches", "log_every")


def given_settings(cfg: TrainConfig, always: Collection[str] = ()) -> set[str]:
    """The settings of ``cfg`` a caller chose: those that differ from :class:`TrainConfig`'s defaults,
    and the names in ``always`` (what a form shows as chosen, e.g. the mode)."""
    return {f.name for f in dataclasses.fields(cfg)
            if getattr(cfg, f.name) != field_default(TrainConfig, f.name)} | set(always)


def check_one_start(resume: object, init: object, wording: Wording = PYTHON_WORDING) -> None:
    """Refuse a run asked both to continue a checkpoint (``resume``) and to start from weights (``init``)."""
    if resume is not None and init is not None:
        raise InputError(f"{wording.resume} continues a run and {wording.init} starts a new one from weights: use "
                         "one, not both")


def check_resume_request(
    path: str | os.PathLike, stored: ResolvedTrainConfig, cfg: TrainConfig, given: Collection[str],
    shapes: Sequence[tuple[int, ...]], wording: Wording = PYTHON_WORDING,
) -> None:
    """Refuse settings the user gave that the resumed run fixes otherwise (its mode, preset, patch...).

    A patch the user gave is compared as the run would use it: shrunk to the stacks, as the
    original run's was (so the command that started the run resumes it unchanged). The refusal
    names the settings and what to do in ``wording``, the words of the front end that shows it.
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
        pairs = ", ".join(f"{wording.request(k, getattr(cfg, k))} (the run has {getattr(stored, k)!r})" for k in clash)
        one = len(clash) == 1
        raise InputError(f"{path} continues a run whose settings are fixed, but {pairs} {'was' if one else 'were'} "
                         f"asked for; {wording.leave_out[0 if one else 1]} to resume it, or "
                         f"{wording.start_from_weights} instead")


def load_resume(
    path: str | os.PathLike, cfg: TrainConfig, given: Collection[str] | None = None,
    shapes: Sequence[tuple[int, ...]] = (), wording: Wording = PYTHON_WORDING, den: Denoiser | None = None,
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
    wording : Wording
        The words of the front end that shows a refusal (its settings, how to start from weights).
    den : Denoiser, optional
        The model in ``path`` if the caller loaded it already (it is not read twice).

    Returns
    -------
    tuple
        The model, the run's settings (stored ones, with :data:`RESUME_OVERRIDES` and the given
        :data:`RESUME_CHANGEABLE` ones from ``cfg``), the training state and a notice for the user.
    """
    given = given_settings(cfg) if given is None else set(given)
    den = load_checkpoint(path) if den is None else den
    try:
        state = load_training_state(path, complete=True)
    except TrainingStateError as exc:  # the weights loaded above: a new run can still start from them
        raise TrainingStateError(f"{exc}, so the run cannot be resumed; {wording.start_from_weights} "
                                 "instead") from None
    if state is None:
        raise InputError(f"{path} holds no training state (it is a final model); {wording.start_from_weights} "
                         "instead")
    rcfg = cfg.resolved()
    stored = rcfg.merged(dict(den.train_config))
    check_resume_request(path, stored, cfg, given, shapes, wording)
    keep = RESUME_OVERRIDES + tuple(k for k in RESUME_CHANGEABLE if k in given and getattr(cfg, k) is not None)
    if cfg.steps is not None or cfg.seconds is not None:  # a new budget replaces the stored one whole
        keep += ("steps", "seconds")
    new = rcfg.as_dict()
    return den, stored.merged({k: new[k] for k in keep}), state, f"resuming from {path} at step {den.step}"


def restore_state(
    path: str | os.PathLike, state: dict[str, Any], opt: torch.optim.Optimizer, scaler: Any, sampler: PatchSampler,
    history: dict[str, list], wording: Wording = PYTHON_WORDING,
) -> tuple[int, float, dict[str, list]]:
    """Load ``state`` into the optimiser, scaler, sampler and torch RNG; return step, seconds and history.

    ``load_training_state`` checked each field's type; this catches what only the objects can (an
    optimiser state for other parameters, an RNG state of the wrong size). A refusal says what to
    do in ``wording``.
    """
    try:
        opt.load_state_dict(state["optimizer"])
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        sampler.set_state(state["sampler"])
        torch.set_rng_state(state["torch_rng"])
        history = {k: list(v) for k, v in (state.get("history") or history).items()}
    except (ValueError, TypeError, KeyError, RuntimeError) as exc:
        raise TrainingStateError(f"{path}: its training state does not fit this run ({type(exc).__name__}: "
                                 f"{str(exc)[:120]}); {wording.start_from_weights} instead") from None
    return int(state["step"]), float(state.get("elapsed_s", 0.0)), history
