"""Continuing an interrupted run from its ``checkpoint-last.pt``: the model, settings and training state."""

from __future__ import annotations

import os
from typing import Any

import torch

from ..config import ResolvedTrainConfig
from ..errors import CheckpointError, InputError
from ..model.checkpoint import load_checkpoint, load_training_state
from ..model.denoiser import Denoiser
from .sampler import PatchSampler

# A resumed run keeps its stored settings except these, which the new request sets (and the
# budget, when a new one is given).
RESUME_OVERRIDES = ("device", "checkpoint_every", "preview_every", "preview_frames")


def load_resume(
    path: str | os.PathLike, rcfg: ResolvedTrainConfig, new_budget: bool
) -> tuple[Denoiser, ResolvedTrainConfig, dict[str, Any], str]:
    """The model, settings and training state of the run saved in ``path``.

    Parameters
    ----------
    path : str or PathLike
        A checkpoint with training state (``checkpoint-last.pt`` or a ``model.pt`` of ours).
    rcfg : ResolvedTrainConfig
        The settings of the new request.
    new_budget : bool
        The request gives steps or seconds: they replace the stored budget.

    Returns
    -------
    tuple
        The model, the run's settings (stored ones, with :data:`RESUME_OVERRIDES` and a new
        budget from ``rcfg``), the training state and a notice for the user.
    """
    den = load_checkpoint(path)
    state = load_training_state(path, complete=True)
    if state is None:
        raise InputError(f"{path} holds no training state (it is a final model); start a new run from its weights "
                         "instead (--init in the CLI, 'start from the loaded model's weights' in the widget)")
    stored = dict(den.train_config)
    keep = RESUME_OVERRIDES + (("steps", "seconds") if new_budget else ())
    new = rcfg.as_dict()
    stored.update({k: new[k] for k in keep})
    return den, rcfg.merged(stored), state, f"resuming from {path} at step {den.step}"


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
