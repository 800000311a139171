"""Recording conditions that the simulator (and so the pretraining) lacks, an experiment.

    python benchmarks/experiments/unseen_conditions.py pmt --cv 0 0.5 1        # photons of random pulse height
    python benchmarks/experiments/unseen_conditions.py bleach --fraction 0.3   # the dye bleaches over the recording
    python benchmarks/experiments/unseen_conditions.py twitch --events 1 2     # a still recording that jumps at times
    python benchmarks/experiments/unseen_conditions.py twitch --events 1 --no-jumps   # jumps not moved (as before)
    python benchmarks/experiments/unseen_conditions.py phase --offsets 0 1 2   # a resonant scanner's line phase
    python benchmarks/experiments/unseen_conditions.py phase --real            # ... on a real movie's structure
    python benchmarks/experiments/unseen_conditions.py bandwidth --pole 0.2 0.5 # the detector's low-pass along x

* ``pmt``: the simulator turns ``k`` photons into exactly ``k * gain`` ADU before the read noise; a real
  photomultiplier's single-photon pulses vary in height (GaAsP tubes: coefficient of variation ~0.5; multi-alkali
  ones up to ~1, an exponential), so the variance is ``1 + cv^2`` times the Poisson one at the same mean, and the
  counts no longer come in steps of ``gain``. Each photon's height is drawn ``Gamma(1 / cv^2, gain cv^2)`` (mean
  ``gain``; ``cv`` 0: the simulator's own noise).
* ``bleach``: the fluorescence (everything above the offset) decays exponentially, losing ``fraction`` of it by the
  last frame; noise drawn after.
* ``twitch``: a still recording (``strips.warped``) whose field of view jumps 3-8 px for 3-9 frames, ``events``
  times; scored on every frame and on the frames of the jumps alone.
* ``phase``: a bidirectional scanner whose backward lines land ``offset`` px to the right of where they belong (the
  scan phase a microscope's software never sets exactly); noise drawn after. Twice: a mirrored-scan model's
  ``(T, 2N, N)`` scan (every line recorded both ways, the mirrored generalist, merged output), and an ordinary
  ``(T, N, N)`` frame whose odd rows are backward lines (the temporal generalist). Scored against the truth in
  the forward lines' place. ``--real``: the truth is the thunder S1 movie's structure (``bench_generalist.py
  realnoise``'s: the real movie lightly smoothed, at ``--photons``, gain 10, offset 100) instead of the simulator's.
* ``bandwidth``: the detector's amplifier and digitiser low-pass the signal along each line before it is sampled, so
  the noise of neighbouring pixels along x is correlated (the SIMA CA1 movie's frame differences: 0.18 at lag 1
  along x, 0.01 along y). Modelled as a one-pole (RC) filter along x with pole ``--pole`` (lag-1 noise correlation
  ``pole``), applied to the analog signal (photons and read noise) before rounding; the truth is the clean movie
  through the same filter (a denoiser is not asked to undo the blur).

The clean movie is the benchmark's (held-out seeds 11 / 12 unless told); the shipped temporal generalist (zero-shot,
default inference) is scored against the best 3D Gaussian (its sigma chosen with the truth) in the same run: PSNR dB,
ROI trace r, frame-mean shift %.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage, signal

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_generalist import INFER, REGISTRATION, _real_clean, generalist, run_model, score  # noqa: E402
from strips import warped  # noqa: E402 - experiments folder

import napari_unet_att.inference.registration as registration  # noqa: E402
from napari_unet_att.cli_args import line_phase_arg  # noqa: E402
from napari_unet_att.evaluation.baselines import best_gaussian  # noqa: E402
from napari_unet_att.evaluation.metrics import psnr  # noqa: E402
from napari_unet_att.evaluation.simulator import simulate  # noqa: E402
from napari_unet_att.modes import merge_directions  # noqa: E402

_UINT16_MAX = 65535


def recorded(clean: np.ndarray, p: dict, cv: float, rng: np.random.Generator, pole: float = 0.0) -> np.ndarray:
    """``clean`` (expected ADU: photons x ``p['gain']`` + ``p['offset']``) recorded with Poisson photons whose pulse
    heights are ``Gamma(1 / cv^2, gain cv^2)`` (the sum of ``k``: ``Gamma(k / cv^2, gain cv^2)``; ``cv`` 0:
    exactly ``k * gain``), then Gaussian read noise and the offset, low-passed along x with ``pole``
    (:func:`low_passed`); rounded and clipped to uint16."""
    gain, offset = p["gain"], p["offset"]
    k = rng.poisson(np.clip((clean - offset) / gain, 0, None)).astype(np.float64)
    if cv > 0:
        heights = rng.gamma(k / cv**2 + (k == 0), gain * cv**2) * (k > 0)  # (shape 0 avoided: no photon, no pulse)
    else:
        heights = k * gain
    adu = low_passed(heights + offset + rng.normal(0.0, p["read_noise"], clean.shape), pole)
    return np.clip(np.rint(adu), 0, _UINT16_MAX).astype(np.uint16)


def low_passed(x: np.ndarray, pole: float) -> np.ndarray:
    """``x`` through a one-pole low-pass along its last axis (``y[i] = (1 - pole) x[i] + pole y[i - 1]``, gain 1,
    started at ``x[0]``): a detector's bandwidth along the scanned line."""
    if pole <= 0:
        return np.asarray(x, np.float64)  # (no copy where it already is)
    zi = signal.lfilter_zi([1 - pole], [1, -pole]) * x[..., :1]
    return signal.lfilter([1 - pole], [1, -pole], x.astype(np.float64), axis=-1, zi=zi)[0]


def twitching(seed: int, photons: float, events: int, frames: int = 400, length: int | None = None,
              amplitude: float | None = None):
    """:func:`strips.warped` by rigid jumps of ``amplitude`` px (3-8 when None) lasting ``length`` frames (3-9),
    ``events`` of them (at most one per 20 frames). Returns ``(noisy, clean, labels, jumped)``, ``jumped`` the
    frames that are away."""
    rng = np.random.default_rng(seed + 100)
    shifts = np.zeros((frames, 2))
    for t in rng.choice(np.arange(10, frames - 20, 20), events, replace=False):
        px, angle = amplitude or rng.uniform(3, 8), rng.uniform(0, 2 * np.pi)
        shifts[t : t + (length or rng.integers(3, 10))] = px * np.cos(angle), px * np.sin(angle)
    noisy, clean, labels = warped(seed, photons, lambda t, y, x: (shifts[t, 0] + 0 * y, shifts[t, 1] + 0 * x), 10,
                                  frames)
    return noisy, clean, labels, np.any(shifts != 0, axis=1)


def phased(clean: np.ndarray, p: dict, offset: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``clean`` ``(T, N, N)`` recorded by a bidirectional scanner whose backward lines sit ``offset`` px to the
    right: ``(scan, frames)``, the ``(T, 2N, N)`` scan of every line recorded both ways, and the ``(T, N, N)``
    frames whose odd rows are backward lines (each with its own noise, :func:`recorded`)."""
    backward = ndimage.shift(clean, (0, 0, offset), order=1, mode="nearest")
    scan = np.empty((clean.shape[0], 2 * clean.shape[1], clean.shape[2]), np.uint16)
    scan[:, 0::2], scan[:, 1::2] = recorded(clean, p, 0.0, rng), recorded(backward, p, 0.0, rng)
    combed = clean.copy()
    combed[:, 1::2] = backward[:, 1::2]
    return scan, recorded(combed, p, 0.0, rng)


def side_by_side(case: str, noisy: np.ndarray, clean: np.ndarray, labels: np.ndarray, den,
                 jumped: np.ndarray | None = None) -> None:
    """Best Gaussian and the generalist on one recording (and their PSNR on the ``jumped`` frames alone); a
    ``(T, 2N, N)`` scan is scored merged (both directions averaged), the Gaussian's on its merged raw frames."""
    scan = noisy.shape[1] == 2 * noisy.shape[2]
    raw, rng = (merge_directions(noisy) if scan else noisy.astype(np.float32)), float(clean.max() - clean.min())
    sigma, gauss, _ = best_gaussian(raw, clean)
    out, s = run_model(noisy, den, mirrored_output="merged")
    rows = []
    for method, x, note in (("best 3D Gaussian", gauss, f"sigma {tuple(sigma)}"),
                            (f"generalist {den.mode} (zero-shot)", out, f"{noisy.shape[0] / s:.1f} frames/s; "
                                                                     f"registration {REGISTRATION[0]}")):
        if jumped is not None:
            note += f"; on the {jumped.sum()} jumped frames {psnr(x[jumped], clean[jumped], data_range=rng):.3f} dB"
        rows.append(score(case, method, x, clean, raw, labels, note=note))
    print(f"<!-- {case}: model - Gaussian = {rows[1]['psnr'] - rows[0]['psnr']:+.2f} dB -->", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("kind", choices=("pmt", "bleach", "twitch", "phase", "bandwidth"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[11, 12])
    ap.add_argument("--photons", type=float, nargs="+", default=[1.0, 2.0, 5.0])
    ap.add_argument("--cv", type=float, nargs="+", default=[0.0, 0.5, 1.0], help="pmt: pulse heights' variation")
    ap.add_argument("--fraction", type=float, nargs="+", default=[0.3], help="bleach: lost by the last frame")
    ap.add_argument("--events", type=int, nargs="+", default=[1, 2], help="twitch: how many jumps")
    ap.add_argument("--no-jumps", action="store_true", help="twitch: a slow recording's jumps not moved (as before)")
    ap.add_argument("--length", type=int, help="twitch: frames each jump lasts (default 3-9)")
    ap.add_argument("--amplitude", type=float, help="twitch: px each jump goes (default 3-8)")
    ap.add_argument("--offsets", type=float, nargs="+", default=[0.0, 1.0, 2.0], help="phase: backward lines' px")
    ap.add_argument("--pole", type=float, nargs="+", default=[0.0, 0.2, 0.5],
                    help="bandwidth: the low-pass's pole along x (lag-1 noise correlation)")
    ap.add_argument("--real", action="store_true", help="phase: on the thunder movie's structure")
    ap.add_argument("--line-phase", type=line_phase_arg, default="auto", help="the engine's setting (before: off)")
    ap.add_argument("--noise-seed", type=int, default=3)
    a = ap.parse_args()
    INFER["line_phase"] = a.line_phase
    den, mirrored = generalist("temporal"), generalist("mirrored")
    if a.no_jumps:  # the engine before the twenty-third session: a recording too slow to register moved nothing
        registration._jumps = lambda centred, matched: np.zeros(centred.shape, int)
    if a.kind == "phase" and a.real:
        for photons in a.photons:
            _, clean = _real_clean("thunder_mouse_svoboda_500x64x64.tif", photons, a.noise_seed)
            for offset in a.offsets:
                scan, frames = phased(clean, {"gain": 10.0, "offset": 100.0, "read_noise": 0.0}, offset,
                                      np.random.default_rng(a.noise_seed))
                for noisy, model in ((scan, mirrored), (frames, den)):
                    side_by_side(f"thunder S1 structure, {photons:g} ph, backward lines {offset:+g} px", noisy,
                                 clean, None, model)
        return
    for seed in a.seeds:
        for photons in a.photons:
            if a.kind == "twitch":
                for events in a.events:
                    noisy, clean, labels, jumped = twitching(seed, photons, events, length=a.length,
                                                             amplitude=a.amplitude)
                    side_by_side(f"{photons:g} ph, seed {seed}, {events} twitch(es)", noisy, clean, labels, den, jumped)
                continue
            sim = simulate(n_frames=400, size=128, photons=photons, seed=seed)
            p, clean = sim.params, sim.clean
            if a.kind == "phase":
                for offset in a.offsets:
                    scan, frames = phased(clean, p, offset, np.random.default_rng(a.noise_seed))
                    for noisy, model in ((scan, mirrored), (frames, den)):
                        side_by_side(f"{photons:g} ph, seed {seed}, backward lines {offset:+g} px",
                                     noisy, clean, sim.labels(), model)
                continue
            if a.kind == "bandwidth":
                for pole in a.pole:
                    noisy = recorded(clean, p, 0.0, np.random.default_rng(a.noise_seed), pole)
                    truth = low_passed(clean, pole).astype(np.float32)
                    side_by_side(f"{photons:g} ph, seed {seed}, low-pass pole {pole:g} along x", noisy, truth,
                                 sim.labels(), den)
                continue
            for level in a.cv if a.kind == "pmt" else a.fraction:
                if a.kind == "bleach":
                    t = np.arange(clean.shape[0], dtype=np.float32)[:, None, None] / (clean.shape[0] - 1)
                    clean = p["offset"] + (sim.clean - p["offset"]) * (1 - level) ** t
                noisy = recorded(clean, p, level if a.kind == "pmt" else 0.0, np.random.default_rng(a.noise_seed))
                what = f"pulse-height cv {level:g}" if a.kind == "pmt" else f"bleaching {level:.0%}"
                side_by_side(f"{photons:g} ph, seed {seed}, {what}", noisy, clean, sim.labels(), den)


if __name__ == "__main__":
    main()
