"""Offline pretraining of the generalist models on a broad family of simulated recordings.

The shipped ``generalist`` models (:mod:`napari_unet_att.model.pretrained`) are trained here, once, for as
long as it takes, by ``scripts/train_generalist.py``. Every recording is drawn from
:func:`draw_params` and :func:`make_recording`: photons 0.2-10 per pixel, read noise, offsets and
gains like real ADU data (uint16, and int16 with negative values), cell size and density, neuropil,
dendrites, slow and fast indicators at different frame rates, saturated cells, no motion / slow drift /
correlated / per-frame jitter up to 2 px. Training uses the engine's own pairs (so a user's self-supervised fine-tuning
continues the same task) with the simulator's clean twin as the target: same minimiser, no target
noise in the gradient.

Recordings come in *rounds*: round ``r`` is a pool drawn from seeds ``PRETRAIN_SEED0 + r * pool + i``,
far from the seeds the benchmarks and tests use (below 100000), so no evaluation recording is ever a
training recording. A run is resumable at any round boundary (``checkpoint-last.pt``).
"""

from __future__ import annotations

import dataclasses
import math
import multiprocessing
import os
import signal
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from ..config import TrainConfig, TrainEvent
from ..evaluation.simulator import simulate
from .saving import LAST_NAME
from .trainer import Trainer

PRETRAIN_SEED0 = 1_000_000  # benchmarks and tests use seeds below 100000
_INT16_SHIFT = 1000.0  # int16 recordings are simulated with this offset, then shifted down past zero


@dataclass(frozen=True)
class Recording:
    """One simulated recording of the family: what the model sees, its clean twin, and how it was drawn."""

    noisy: np.ndarray
    clean: np.ndarray  # same layout and units as ``noisy``, float32
    params: dict[str, Any]


def _loguniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def draw_params(rng: np.random.Generator, bidirectional: bool) -> dict[str, Any]:
    """Random simulator settings spanning real two-photon recordings (see the module docstring)."""
    motion = rng.choice(["none", "walk", "ar", "jitter"], p=[0.3, 0.25, 0.25, 0.2])
    r_lo = rng.uniform(1.5, 5.0)
    gain = _loguniform(rng, 1.0, 80.0)
    return {
        "photons": _loguniform(rng, 0.2, 10.0),
        "motion": "walk" if motion == "none" else str(motion),
        "motion_std": 0.0 if motion == "none" else float(rng.uniform(0.2, 2.0)),
        "fps": _loguniform(rng, 5.0, 60.0),
        "tau_decay": _loguniform(rng, 0.1, 2.0),
        "tau_rise": _loguniform(rng, 0.01, 0.15),
        "spike_rate": _loguniform(rng, 0.05, 3.0),
        "dff_per_spike": _loguniform(rng, 0.1, 2.0),
        "cell_radius": (r_lo, r_lo * rng.uniform(1.2, 2.2)),
        "density": _loguniform(rng, 0.3, 2.5),  # x the default number of cells
        "neurites": _loguniform(rng, 0.2, 4.0),  # x the default number of neurites
        "neuropil": rng.uniform(0.05, 0.9),
        "neuropil_fluctuation": rng.uniform(0.02, 0.4),
        "psf_sigma": rng.uniform(0.3, 2.0),
        # Some recordings reach us resampled (binned, interpolated, registered), which correlates the
        # noise of neighbouring pixels; a model that never saw that takes the correlated noise for
        # structure, or the fine structure of such data for noise.
        "noise_blur": float(rng.uniform(0.4, 0.9)) if rng.random() < 0.25 else 0.0,
        "gain": gain,
        "read_noise": gain * _loguniform(rng, 0.02, 1.5),
        "offset": rng.uniform(0.0, 2000.0),
        "int16": bool(rng.random() < 0.3),
        "saturate": bool(rng.random() < 0.15),
        "line_motion": bool(rng.random() < 0.3),
        "bidirectional": bidirectional,
    }


def make_recording(params: dict[str, Any], shape: tuple[int, int, int], seed: int) -> Recording:
    """Simulate one recording of the family with ``params`` from :func:`draw_params`.

    ``shape`` is the physical ``(T, Y, X)``; a bidirectional recording is ``(T, 2Y, X)``.
    """
    t, y, x = shape
    n_cells = max(1, round(y * x / 400 * params["density"]))
    offset = params["offset"] + (_INT16_SHIFT if params["int16"] else 0.0)
    sim = simulate(
        shape=shape, photons=params["photons"], motion_std=params["motion_std"], motion=params["motion"],
        bidirectional=params["bidirectional"], seed=seed, n_cells=n_cells,
        n_neurites=max(1, round((n_cells // 2 + 1) * params["neurites"])), line_motion=params["line_motion"],
        fps=params["fps"], spike_rate=params["spike_rate"], tau_decay=params["tau_decay"],
        tau_rise=params["tau_rise"], dff_per_spike=params["dff_per_spike"], cell_radius=params["cell_radius"],
        neuropil=params["neuropil"], neuropil_fluctuation=params["neuropil_fluctuation"],
        psf_sigma=params["psf_sigma"], gain=params["gain"], offset=offset, read_noise=params["read_noise"],
    )
    noisy = sim.noisy.astype(np.float32)
    clean = sim.clean_for_layout().astype(np.float32)
    if params.get("noise_blur", 0.0) > 0:  # resampled data: the same spatial filter on both
        sigma = (0.0, params["noise_blur"], params["noise_blur"])
        noisy, clean = ndimage.gaussian_filter(noisy, sigma), ndimage.gaussian_filter(clean, sigma)
    if params["saturate"]:  # a detector that saturates on the brightest cells
        level = float(np.quantile(clean, 0.995))
        noisy, clean = np.minimum(noisy, level), np.minimum(clean, level)
    if params["int16"]:  # signed data with the dark level near zero, negative values included
        noisy -= _INT16_SHIFT + params["offset"]
        clean -= _INT16_SHIFT + params["offset"]
        return Recording(np.clip(np.rint(noisy), -32768, 32767).astype(np.int16), clean, params)
    return Recording(np.rint(noisy).astype(np.uint16), clean, params)


def pretraining_shape(mode: str, frames: int = 192, size: int = 96) -> tuple[int, int, int]:
    """Physical ``(T, Y, X)`` of the pretraining recordings: temporal pairs halve T, mirrored pairs keep it."""
    return (frames, size, size) if mode == "temporal" else (frames // 2, size, size)


def round_seeds(mode: str, round_index: int, pool: int) -> list[int]:
    """Simulator seeds of the ``pool`` recordings of round ``round_index`` (mirrored ones in a range of their own)."""
    first = PRETRAIN_SEED0 + (1 << 20) * (mode != "temporal") + round_index * pool
    return list(range(first, first + pool))


def make_member(mode: str, seed: int, shape: tuple[int, int, int]) -> Recording:
    """One recording of the family, drawn and simulated from ``seed`` alone (so any process can make it)."""
    params = draw_params(np.random.default_rng([seed, 7]), bidirectional=mode == "mirrored")
    return make_recording(params, shape, seed)


def make_pool(mode: str, round_index: int, pool: int, shape: tuple[int, int, int]) -> list[Recording]:
    """The ``pool`` recordings of one round (deterministic in ``mode``, ``round_index`` and ``pool``)."""
    return [make_member(mode, seed, shape) for seed in round_seeds(mode, round_index, pool)]


def _ignore_interrupts() -> None:
    """Worker processes leave Ctrl-C to the run that started them (which stops, saves and closes the pool)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class PoolSource:
    """The rounds' pools, the next one simulated by worker processes while the current one trains.

    Simulation is CPU work that a GPU run would otherwise wait for between rounds (a pool of 24 takes
    ~8 s on one core). ``workers=0``: each pool is simulated when asked for, in this process.
    """

    def __init__(self, mode: str, pool: int, shape: tuple[int, int, int], workers: int = 0) -> None:
        self.mode, self.pool, self.shape = mode, pool, shape
        # spawn, not fork: a forked copy of a process with torch's threads running can deadlock
        self._ex = (ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                        initializer=_ignore_interrupts) if workers > 0 else None)
        self._pending: tuple[int, list[Future]] | None = None

    def _submit(self, round_index: int) -> tuple[int, list[Future]]:
        assert self._ex is not None
        return round_index, [self._ex.submit(make_member, self.mode, s, self.shape)
                             for s in round_seeds(self.mode, round_index, self.pool)]

    def get(self, round_index: int) -> list[Recording]:
        """The pool of ``round_index``; starts simulating the one after it."""
        if self._ex is None:
            return make_pool(self.mode, round_index, self.pool, self.shape)
        if self._pending is None or self._pending[0] != round_index:
            self._cancel()
            self._pending = self._submit(round_index)
        recs = [f.result() for f in self._pending[1]]
        self._pending = self._submit(round_index + 1)
        return recs

    def _cancel(self) -> None:
        if self._pending is not None:
            for f in self._pending[1]:
                f.cancel()
            self._pending = None

    def close(self, wait: bool = True) -> None:
        """Stop the workers (a pool being simulated for a round that will not come is dropped); ``wait``: until
        the simulations under way end."""
        self._cancel()
        if self._ex is not None:
            self._ex.shutdown(wait=wait, cancel_futures=True)

    def __enter__(self) -> PoolSource:
        return self

    def __exit__(self, kind: type | None, *exc: object) -> None:
        self.close(wait=kind is None)  # leaving on an error or Ctrl-C: do not wait for simulations


def pretrain(
    cfg: TrainConfig,
    out_dir: str | os.PathLike,
    pool: int = 16,
    round_steps: int = 200,
    shape: tuple[int, int, int] | None = None,
    log: Callable[[str], None] = print,
    on_event: Callable[[TrainEvent], None] | None = None,
    target_view: str = "pair",
    init: str | os.PathLike | None = None,
    first_round: int = 0,
    workers: int = 0,
) -> Path:
    """Train a generalist in rounds of fresh simulated recordings; resumes from ``out_dir`` if it holds a run.

    Parameters
    ----------
    cfg : TrainConfig
        Mode, preset and the *whole* budget (``steps`` or ``seconds``); the schedule spans it across rounds.
    out_dir : path
        Receives ``checkpoint-last.pt`` after every round and ``model.pt`` at the end.
    pool, round_steps : int
        Recordings per round, and optimiser steps before the next round's pool replaces them.
    shape : (T, Y, X), optional
        Physical size of each recording (default :func:`pretraining_shape`).
    target_view : {'pair', 'same'}
        ``'pair'``: the clean twin of the self-supervised target view (the task fine-tuning continues).
        ``'same'``: the clean twin of the very frames the network sees (supervised denoising; temporal
        mode only): the network may use the current frame, which matters under fast motion, and sees
        frames at the full rate, as at inference, instead of every other one.
    init : path, optional
        Start the first round from these weights (e.g. a generalist trained with the other target view).
    first_round : int
        Draw the recordings from round ``first_round`` on: a run continuing a generalist (``init``) then
        sees recordings its parent never saw instead of the parent's first rounds again.
    workers : int
        Processes that simulate the next round's recordings while a round trains (0: none, each pool is
        simulated between rounds in this process). The recordings are the same either way. For GPU runs: on a
        CPU the workers compete with the training's own threads.

    Returns
    -------
    Path
        The final ``model.pt``.
    """
    if target_view == "same" and cfg.mode != "temporal":
        raise ValueError("target_view='same' is for temporal models")
    out = Path(out_dir)
    shape = shape or pretraining_shape(cfg.mode)
    last = out / LAST_NAME
    with PoolSource(cfg.mode, pool, shape, workers) as pools:
        while True:
            resume = last if last.exists() else None
            state = _training_state(resume)
            if _finished(state):
                break
            r = int(state.get("step", 0)) // round_steps
            recs = pools.get(first_round + r)
            log(f"round {first_round + r}: {pool} recordings {recs[0].noisy.shape} from step {state.get('step', 0)}")
            # a resumed run continues the stored schedule: no new budget
            run_cfg = cfg if resume is None else dataclasses.replace(cfg, steps=None, seconds=None)
            noisy, clean = [rec.noisy for rec in recs], [rec.clean for rec in recs]
            if target_view == "same":  # every frame twice: the temporal pair's input view is the full-rate movie
                noisy, clean = [np.repeat(a, 2, axis=0) for a in noisy], [np.repeat(a, 2, axis=0) for a in clean]
            trainer = Trainer(noisy, run_cfg, out_dir=out, resume=resume, init=init if resume is None else None,
                              sources=[f"pretraining round {first_round + r} recording {i}" for i in range(pool)],
                              targets=clean, target_view=target_view)
            for ev in trainer.run():
                if on_event is not None:
                    on_event(ev)
                if ev.step >= (r + 1) * round_steps:
                    trainer.stop()
            if trainer.denoiser is None or trainer.denoiser.step < (r + 1) * round_steps:
                break  # the budget ended inside this round
    return out / "model.pt"


def _training_state(path: Path | None) -> dict[str, Any]:
    """The training state saved in ``path`` (empty for a new run)."""
    if path is None:
        return {}
    from ..model.checkpoint import load_training_state

    return load_training_state(path) or {}


def _finished(state: dict[str, Any]) -> bool:
    """Whether the run whose training ``state`` this is has used its whole budget."""
    if not state:
        return False
    _, base_elapsed, max_steps, max_seconds = state.get("schedule", [0, 0.0, None, None])
    if max_steps and int(state.get("step", 0)) >= int(max_steps):
        return True
    return bool(max_seconds) and float(state.get("elapsed_s", 0.0)) - float(base_elapsed) >= float(max_seconds)
