"""Setting up a training run from its resolved config: the model, the patch, the optimiser and the samplers.

A run starts from a new network, or from the weights of a checkpoint (``init``); resuming an
interrupted run is :mod:`napari_unet_att.training.resume`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import torch

from ..config import ResolvedTrainConfig, get_preset, run_to_end
from ..errors import InputError
from ..inference.line_phase import PhaseCorrected, iter_line_phase
from ..inference.registration import RegisteredStack, iter_registration
from ..model.denoiser import Denoiser
from ..model.networks import build_network
from ..model.normalization import Normalization, pool_statistics, stack_statistics
from ..model.pretrained import load_model
from ..modes import check_stack_for_mode, max_patch_for
from .sampler import PatchSampler
from .schedule import FINETUNE_LR_FACTOR

MIN_PATCH_T, MIN_PATCH_XY = 4, 16  # the smallest patch an automatic shrink goes to


def new_denoiser(rcfg: ResolvedTrainConfig) -> Denoiser:
    """An untrained model of the preset's architecture (its normalisation is set from the data later)."""
    p = get_preset(rcfg.preset)
    net = build_network(p.arch, p.base_channels)
    return Denoiser(net, p.arch, p.base_channels, rcfg.preset, rcfg.mode, Normalization(0.0, 1.0))


def parent_record(init: Any, den: Denoiser) -> dict[str, Any]:
    """What a fine-tuned model records about the model it started from."""
    prov = den.provenance
    return {
        "model": str(init), "arch": den.arch, "base_channels": den.base_channels, "mode": den.mode,
        "steps": int(den.step), "source": prov.get("source"), "created": prov.get("created"),
        "trained_on": prov.get("trained_on", prov.get("sources")),
    }


def denoiser_from_weights(
    init: str | os.PathLike, rcfg: ResolvedTrainConfig, lr_given: bool
) -> tuple[Denoiser, ResolvedTrainConfig, dict[str, Any], str]:
    """The model to fine-tune from ``init`` (ours, a reference tool's, or ``'generalist'``).

    Parameters
    ----------
    init : str or PathLike
        The checkpoint; its architecture is kept.
    rcfg : ResolvedTrainConfig
        The run's settings.
    lr_given : bool
        The user chose the learning rate; otherwise the preset's is scaled by
        :data:`~napari_unet_att.training.schedule.FINETUNE_LR_FACTOR`.

    Returns
    -------
    tuple
        The model (its history cleared: only how it normalises its input carries over), the
        settings, the parent record for the provenance and a notice for the user.
    """
    den = load_model(init, mode=rcfg.mode, preset=rcfg.preset)
    parent = parent_record(init, den)
    den.provenance = {k: v for k, v in den.provenance.items() if k == "normalization"}
    den.mode = rcfg.mode
    if not lr_given:
        rcfg = dataclasses.replace(rcfg, lr=rcfg.lr * FINETUNE_LR_FACTOR)
    note = f"starting from the weights of {init} ({den.arch}, f={den.base_channels}), learning rate {rcfg.lr:g}"
    return den, rcfg, parent, note


def fit_patch(rcfg: ResolvedTrainConfig, shapes: Sequence[tuple[int, ...]]) -> tuple[ResolvedTrainConfig, list[str]]:
    """Shrink the patch to the smallest stack if needed; return the settings and notices for the user."""
    mode, notes = rcfg.mode, []
    for shape in shapes:
        mt, mxy = max_patch_for(shape, mode)
        # Only a patch that must shrink is held to the minimum: one that fits is used as given, so the
        # advice below (a patch of at most mt x mxy) works when followed.
        if (rcfg.patch_t > mt and mt < MIN_PATCH_T) or (rcfg.patch_xy > mxy and mxy < MIN_PATCH_XY):
            # Let the mode check produce the specific message (frames or rows missing, and how many).
            # (What fits is passed as given, what does not as the minimum: the message is about the latter.)
            check_stack_for_mode(shape, mode, rcfg.patch_t if rcfg.patch_t <= mt else max(MIN_PATCH_T, mt),
                                 rcfg.patch_xy if rcfg.patch_xy <= mxy else max(MIN_PATCH_XY, mxy))
            raise InputError(
                f"stack of shape {tuple(shape)} is too small for {mode!r} training: it allows patches of at most "
                f"{mt} x {mxy} x {mxy} (t, y, x) but at least {MIN_PATCH_T} x {MIN_PATCH_XY} x {MIN_PATCH_XY} "
                "are needed"
            )
        if rcfg.patch_t > mt or rcfg.patch_xy > mxy:
            new_t, new_xy = min(rcfg.patch_t, mt), min(rcfg.patch_xy, mxy)
            notes.append(
                f"patch {rcfg.patch_t}x{rcfg.patch_xy}x{rcfg.patch_xy} does not fit a {tuple(shape)} stack in "
                f"{mode!r} mode; using {new_t}x{new_xy}x{new_xy}"
            )
            rcfg = dataclasses.replace(rcfg, patch_t=new_t, patch_xy=new_xy)
    for shape in shapes:
        check_stack_for_mode(shape, mode, rcfg.patch_t, rcfg.patch_xy)
    return rcfg, notes


def normalizations(stacks: Sequence[Any]) -> tuple[list[Normalization], Normalization]:
    """Per-stack normalisation for sampling, and the pooled one stored with the model."""
    stats = [stack_statistics(s) for s in stacks]
    return [pool_statistics([s]) for s in stats], pool_statistics(stats)


def make_optimizer(net: torch.nn.Module, rcfg: ResolvedTrainConfig) -> torch.optim.Optimizer:
    """Adam at the run's learning rate (the schedule scales it every step)."""
    return torch.optim.Adam(net.parameters(), lr=rcfg.lr, betas=(0.9, 0.999))


def make_samplers(
    stacks: Sequence[Any], per_stack: Sequence[Normalization], rcfg: ResolvedTrainConfig,
    targets: Sequence[Any] | None, rank: int, target_view: str = "pair",
) -> tuple[PatchSampler, PatchSampler]:
    """The training and validation patch samplers.

    Each distributed rank draws its own training stream (the distributed sampler of random-patch
    training); the validation patches are the same on every rank.
    """
    kw = dict(mode=rcfg.mode, patch_t=rcfg.patch_t, patch_xy=rcfg.patch_xy, val_fraction=rcfg.val_fraction,
              flip_backward=rcfg.flip_backward, targets=targets, target_view=target_view)
    train_s = PatchSampler(stacks, per_stack, split="train", swap=rcfg.swap, augment=rcfg.augment,
                           seed=rcfg.seed + 1000 * rank, **kw)
    val_s = PatchSampler(stacks, per_stack, split="val", swap=False, augment=False, seed=rcfg.seed + 1, **kw)
    return train_s, val_s


def register_stacks(stacks: Sequence[Any], rcfg: ResolvedTrainConfig, sources: Sequence[str],
                    targets: Sequence[Any] | None = None, resumed: Denoiser | None = None
                    ) -> tuple[list[Any], list[str]]:
    """Each stack registered by whole pixels where its field of view moves (``rcfg.registration`` 'auto'; the
    same choice as at inference, :mod:`~napari_unet_att.inference.registration`), with a note per stack moved;
    before that, a bidirectional scanner's backward lines put back in place where they measurably sit beside the
    forward ones (:mod:`~napari_unet_att.inference.line_phase`: a pair of combed frames teaches combing).
    Not with clean ``targets`` (pretraining): they would have to move alike. A run resumed from the model
    ``resumed`` keeps the setting it was started with (runs from before the setting existed trained
    unregistered).

    The frames of a temporal pair are two frames apart: when the brain moves between them the target shows
    other tissue and the network learns to blur. Registered, the pair shows the same tissue to within half a
    pixel, and the trained model meets registered frames again at inference (where registration is on by
    default).
    """
    setting = rcfg.registration if resumed is None else resumed.train_config.get("registration", "off")
    if setting == "off" or targets is not None:
        return list(stacks), []
    out, notes = [], []
    for stack, source in zip(stacks, sources, strict=True):
        if isinstance(stack, (RegisteredStack, PhaseCorrected)):  # set up by an earlier set-up of the same run
            out.append(stack)
            continue
        two = rcfg.mode == "mirrored" and stack.shape[1] == 2 * stack.shape[2]  # a bidirectional scan
        phase = run_to_end(iter_line_phase("auto", stack, two, rcfg.flip_backward))
        if phase.active:  # backward lines put back first, as at inference
            stack = PhaseCorrected(stack, phase.offset, two and rcfg.flip_backward)
            notes.append(f"{source}: {phase.describe()}")
        reg = run_to_end(iter_registration("auto", stack, two, rcfg.flip_backward))
        out.append(RegisteredStack(stack, reg, two, rcfg.flip_backward) if reg.active else stack)
        if reg.active:
            notes.append(f"{source}: {reg.describe(then='to train on')}")
    return out, notes
