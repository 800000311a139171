"""The zero-shot temporal generalist against the best 3D Gaussian on a two-photon simulator of its own (an experiment).

This simulator was written from the physics and the literature (NAOMi, the DeepCAD-RT simulations, the look of real
GCaMP movies) without reading the package's simulator or pretraining code, so the network never saw its choices.

    python benchmarks/experiments/independent_sim.py                          # seeds 1 2, 1/2/5 ph, every motion
    python benchmarks/experiments/independent_sim.py --photons 2 --motion none ar --seeds 1
    python benchmarks/experiments/independent_sim.py --frames 60 --size 64 --png /tmp/indep   # smoke run, pictures
    python benchmarks/experiments/independent_sim.py --seeds 2 --photons 2 --motion none --finetune 600 \
        --write-input /tmp/indep            # and 10 minutes of fine-tuning; the movie for DeepCAD-RT beside it
    python benchmarks/experiments/independent_sim.py --seeds 2 --photons 2 --motion none \
        --peer deepcad.tif "DeepCAD-RT 1.2.0"   # a peer's output of that movie, scored alike

What one movie models (pixel 0.8 um; the tissue is drawn on a canvas 20 px wider on each side, moved, then cropped):

* scene per seed, cycled from ``SCENES``: indicator and frame rate (seed 1: GCaMP6f at 30 Hz, seed 2: GCaMP6s at
  7.5 Hz, 3: jGCaMP8m at 15 Hz, ...); ``--indicator`` / ``--rate`` override.
* somata: ~18 per 10^4 px^2, packed densely (centres >= 0.75 x the sum of radii apart, so they overlap), sphere
  radius 4.5-8 px cut by the focal plane at a random depth (radius seen 3-8 px), elliptic and lumpy outlines, soft
  edges, cytosolic GCaMP (dim nucleus, ring-like cells), 10 % nuclear-filled (bright nucleus, high baseline, slow small
  signals), 25 % never active. Resting brightness lognormal.
* processes: dendrites leaving ~40 % of the somata (their soma's activity, attenuated), and axons crossing the field
  with boutons (their own sparse spikes).
* blood vessels: 1-2 arterioles / venules (radius 3-7 px) and 2-4 capillaries (radius 1-2 px) as dark tubes whose
  shadow is blurred (scattering); no somata inside them.
* neuropil: a textured positive field (band-passed noise, exponentiated) with 5 smooth regions of their own slow
  activity (population bursts and slow noise), dF/F ~ 10 %; autofluorescence 4 % of it; somata displace it (85 %).
  Resting somata are about as bright as the neuropil with its axons (GCaMP's dim rest): silent ones are faint rings.
* activity: Poisson bursts (lognormal rates, median 0.15 Hz; 1 + geometric spikes a burst) on a 1 ms grid, per-spike
  amplitude jitter, double-exponential calcium kernel, Hill (n = 2.7) saturating fluorescence tuned to the
  indicator's single-spike dF/F and dynamic range; each cell sampled at its own row's scan time; slow baseline drift
  per cell (+-3 %).
* optics: rotated anisotropic Gaussian PSF (sigma 0.6-0.9 x 0.9-1.4 px), a Gaussian axial profile that sets each
  cell's brightness by its depth, and (when the field moves) a small z wobble (0.25 px std, tied to the y motion).
* illumination: laser power flicker per frame (1 % std, fluorescence goes with power^2), a slow power wander,
  photobleaching (5-10 % over the movie), vignetting fixed to the detector (off-centre, ~35 % dimmer in the corners).
* a seed fixes everything but the motion (its own generator), so motion kinds differ only in the motion.
* motion (tissue moved by a sub-pixel Fourier shift before the noise): ``none``; ``jitter`` (independent 1 px std per
  axis per frame); ``drift`` (3-5 px along a random direction over the movie plus 0.1 px jitter); ``ar`` (AR(1), lag-1
  correlation 0.5, 1 px std).
* detector: Poisson photons at ``--photons`` mean per pixel (over the whole movie), PMT pulse heights Gamma with
  coefficient of variation 0.4-0.7 and mean gain 20-80 ADU, Gaussian read noise (5-15 % of the gain), offset, rounded:
  odd seeds uint16 with offset 80-250, even seeds int16 with a negative offset (-0.2 x gain), as ScanImage writes.

Returned: ``noisy`` (integer ADU), ``clean`` (expected ADU, float32), ``labels`` (the somata in their resting
place, nucleus included, each pixel to the cell brightest there, 0 elsewhere; >= 20 px in the frame) and the
scene's parameters. Each case prints the benchmark's rows (``bench_generalist``'s ``score``: raw, best 3D Gaussian
with its sigma, the shipped temporal generalist with default inference), a header with the scene and the photons
per pixel measured on the clean and the noisy movie, and a summary line; a table of every case closes the run.
Target: generalist >= Gaussian + 1.5 dB, trace r >= the Gaussian's, frame means within 1 %.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import tifffile
from scipy import ndimage, signal

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench_generalist import GIVE_BACK, _finetuned, generalist, run_model, score  # noqa: E402 - benchmarks folder

from napari_unet_att.evaluation.baselines import best_gaussian  # noqa: E402

UM_PER_PX = 0.8
PAD = 20
# name: (tau_rise s, tau_decay s, single-spike dF/F, dynamic range F_sat / F_rest)
INDICATORS = {"6f": (0.02, 0.35, 0.15, 8.0), "6s": (0.07, 1.3, 0.25, 12.0), "8m": (0.008, 0.2, 0.3, 10.0)}
SCENES = [("6f", 30.0), ("6s", 7.5), ("8m", 15.0), ("6s", 30.0), ("6f", 10.0), ("8m", 5.0)]
HILL_N = 2.7
MOTIONS = ("none", "jitter", "drift", "ar")


def _walk(rng, start, angle, n, step=0.5, turn=0.06):
    """A persistent random walk (points, (n, 2) as y, x): a vessel's or a neurite's centre line."""
    ang = angle + np.cumsum(rng.normal(0, turn, n))
    return np.asarray(start) + np.cumsum(step * np.stack([np.sin(ang), np.cos(ang)], 1), 0)


def _line_image(pts, shape):
    img = np.zeros(shape, np.float32)
    ij = np.rint(pts).astype(int)
    ok = (ij[:, 0] >= 0) & (ij[:, 0] < shape[0]) & (ij[:, 1] >= 0) & (ij[:, 1] < shape[1])
    img[ij[ok, 0], ij[ok, 1]] = 1.0
    return img


def _tube(pts, radius, shape):
    d = ndimage.distance_transform_edt(_line_image(pts, shape) == 0)
    return np.clip(radius + 0.5 - d, 0, 1).astype(np.float32)


def _thin(pts, sigma, shape):
    img = ndimage.gaussian_filter(_line_image(pts, shape), sigma)
    return img / max(img.max(), 1e-9)


def _smooth_noise(rng, n, tau_frames):
    x = ndimage.gaussian_filter1d(rng.normal(size=n), max(tau_frames, 0.5), mode="wrap")
    return x / max(x.std(), 1e-9)


def _motion(kind, rng, T):
    if kind == "none":
        return np.zeros((T, 2))
    if kind == "jitter":
        return rng.normal(0, 1.0, (T, 2))
    if kind == "drift":
        ang, total = rng.uniform(0, 2 * np.pi), rng.uniform(3, 5)
        ramp = np.linspace(-0.5, 0.5, T)[:, None] * total * np.array([np.sin(ang), np.cos(ang)])
        return ramp + rng.normal(0, 0.1, (T, 2))
    if kind == "ar":
        s = np.zeros((T, 2))
        s[0] = rng.normal(0, 1.0, 2)
        for t in range(1, T):
            s[t] = 0.5 * s[t - 1] + rng.normal(0, np.sqrt(1 - 0.25), 2)
        return s
    raise ValueError(f"unknown motion {kind!r}")


def _spikes(rng, rate, dur, burst_p=0.4):
    """Spike times (s): Poisson bursts at ``rate`` Hz, each 1 + geometric spikes ~10 ms apart."""
    t0 = np.sort(rng.uniform(0, dur, rng.poisson(rate * dur)))
    out = [t + 0.01 * np.arange(rng.geometric(burst_p)) + rng.uniform(0, 0.004) for t in t0]
    return np.concatenate(out) if out else np.zeros(0)


def _fluorescence(ca, dff1, rng_ratio):
    """dF/F of a calcium trace (units: one spike's peak) through a Hill curve; 1 spike ~ ``dff1``."""
    c0 = 1.0  # resting calcium, in the same units

    def f_of(kd, c):
        h = c**HILL_N / (c**HILL_N + kd**HILL_N)
        return 1 + (rng_ratio - 1) * h

    kds = np.geomspace(2 * c0, 200, 600)  # the branch with rest well below Kd
    one = f_of(kds, c0 + 1) / f_of(kds, c0) - 1
    kd = kds[np.argmin(np.abs(one - dff1))]
    return f_of(kd, c0 + ca) / f_of(kd, c0) - 1


def simulate_2p(T=400, size=128, photons=2.0, motion="none", seed=1, indicator=None, rate=None):
    rng = np.random.default_rng(seed)
    ind, hz = SCENES[(seed - 1) % len(SCENES)]
    ind, hz = indicator or ind, rate or hz
    tau_r, tau_d, dff1, dyn = INDICATORS[ind]
    H = W = size + 2 * PAD
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    dur, fine = T / hz, 0.001
    tf = np.arange(0, dur + 1 / hz, fine)

    # --- vessels (dark tubes), then somata outside them
    vessel = np.zeros((H, W), np.float32)
    for r, n in [(rng.uniform(3, 7), 1 + (rng.random() < 0.5))] + [(rng.uniform(1, 2), int(rng.integers(2, 5)))]:
        for _ in range(n):
            pts = _walk(rng, rng.uniform(0, H, 2), rng.uniform(0, 2 * np.pi), 4 * H, turn=0.03)
            vessel = np.maximum(vessel, _tube(pts - pts[len(pts) // 2] + rng.uniform(0, H, 2), r, (H, W)))
    transmission = 1 - 0.85 * np.clip(ndimage.gaussian_filter(vessel, 1.5) + 0.3 * vessel, 0, 1)

    rows, traces_kind, cells = [], [], []
    n_target = int(round(18 * H * W / 1e4))
    for _ in range(n_target * 30):
        if len(cells) >= n_target:
            break
        R = rng.uniform(4.5, 8.0)
        c = rng.uniform(0, H, 2)
        if vessel[int(c[0]), int(c[1])] > 0 or any(np.hypot(*(c - q["c"])) < 0.75 * (R + q["R"]) for q in cells):
            continue
        z = rng.uniform(-0.75, 0.75) * R
        cells.append({"c": c, "R": R, "r": np.sqrt(R * R - z * z), "z": z})
    silent = rng.random(len(cells)) < 0.25
    nuclear = (rng.random(len(cells)) < 0.10) & ~silent
    for i, q in enumerate(cells):
        r, th = q["r"], rng.uniform(0, np.pi)
        dy, dx = yy - q["c"][0], xx - q["c"][1]
        u, v = dx * np.cos(th) + dy * np.sin(th), -dx * np.sin(th) + dy * np.cos(th)
        ecc = rng.uniform(0.75, 1.0)
        ang = np.arctan2(v, u)
        lump = 1 + sum(0.06 * rng.normal() * np.cos(k * ang + rng.uniform(0, 6.3)) for k in (2, 3, 5))
        rr = np.hypot(u / r, v / (r * ecc)) / lump
        body = 1 / (1 + np.exp(-(1 - rr) * r / 0.6))
        nc = q["c"] + rng.normal(0, 0.12 * r, 2)
        rn = 0.6 * r
        nuc = 1 / (1 + np.exp(-(rn - np.hypot(yy - nc[0], xx - nc[1])) / 0.6))
        texture = 1 + 0.12 * ndimage.gaussian_filter(rng.normal(size=(H, W)), 1.0) * 3
        fp = body * ((1 + 1.2 * nuc) if nuclear[i] else (1 - 0.75 * nuc)) * texture
        q["fp"], q["body"] = np.clip(fp, 0, None).astype(np.float32), body.astype(np.float32)
        q["F0"] = rng.lognormal(np.log(2.0), 0.35) * (2.0 if nuclear[i] else 1.0)
        rows.append(q["fp"] * q["F0"])
        traces_kind.append(("cell", i))

    # --- dendrites from ~40 % of somata, axons with boutons
    for i, q in enumerate(cells):
        if rng.random() < 0.4:
            a = rng.uniform(0, 2 * np.pi)
            start = q["c"] + q["r"] * np.array([np.sin(a), np.cos(a)])
            pts = _walk(rng, start, a, int(rng.uniform(30, 120)), turn=0.08)
            along = np.exp(-np.arange(len(pts)) / rng.uniform(40, 120))[:, None]  # dimmer away from the soma
            wid = rng.uniform(0.7, 1.1)
            img = sum(_thin(pts[k : k + 10], wid, (H, W)) * along[k, 0] for k in range(0, len(pts), 10))
            rows.append(img * q["F0"] * rng.uniform(0.3, 0.6))
            traces_kind.append(("dendrite", i))
    axon_spk = []
    for _ in range(int(rng.integers(15, 30))):
        pts = _walk(rng, rng.uniform(0, H, 2), rng.uniform(0, 2 * np.pi), 3 * H, turn=0.04)
        img = 0.4 * _thin(pts, 0.5, (H, W))
        bout = np.zeros((H, W), np.float32)
        for p in pts[:: int(rng.integers(8, 20))]:
            ij = np.rint(p + rng.normal(0, 0.7, 2)).astype(int)
            if 0 <= ij[0] < H and 0 <= ij[1] < W:
                bout[ij[0], ij[1]] = rng.uniform(1.5, 3.0)
        img = img + ndimage.gaussian_filter(bout, 0.8) * 2 * np.pi * 0.64
        rows.append(img * rng.uniform(0.6, 1.2))
        traces_kind.append(("axon", len(axon_spk)))
        axon_spk.append(_spikes(rng, rng.lognormal(np.log(0.3), 0.8), dur))

    # --- neuropil: texture x (1 + regions' slow activity)
    tex = ndimage.gaussian_filter(rng.normal(size=(H, W)), 1.2) - ndimage.gaussian_filter(rng.normal(size=(H, W)), 6)
    neuropil = np.exp(0.5 * tex / tex.std()).astype(np.float32)
    neuropil /= neuropil.mean()
    neuropil *= 1 - 0.85 * np.max([q["body"] for q in cells], axis=0)  # somata displace the neuropil
    rows.append(neuropil * 1.04)  # + autofluorescence
    traces_kind.append(("static", 0))
    for _ in range(5):
        w = ndimage.gaussian_filter(rng.random((H, W)), 25)
        w = (w - w.min()) / (w.max() - w.min() + 1e-9)
        rows.append(neuropil * w.astype(np.float32))
        traces_kind.append(("neuropil", 0))

    # --- activity
    kern_t = np.arange(0, 8 * tau_d, fine)

    def calcium(spk, decay_scale=1.0):
        train = np.zeros(len(tf))
        np.add.at(train, np.clip((spk / fine).astype(int), 0, len(tf) - 1), rng.lognormal(0, 0.3, len(spk)))
        k = (1 - np.exp(-kern_t / tau_r)) * np.exp(-kern_t / (tau_d * decay_scale))
        return signal.fftconvolve(train, k / k.max())[: len(tf)]

    rates = rng.lognormal(np.log(0.3), 1.0, len(cells))
    cell_dff, all_spk = [], []
    for i in range(len(cells)):
        if silent[i]:
            cell_dff.append(np.zeros(len(tf)))
            continue
        spk = _spikes(rng, rates[i], dur)
        all_spk.append(spk)
        dff = _fluorescence(calcium(spk, rng.uniform(0.8, 1.25) * (3 if nuclear[i] else 1)), dff1, dyn)
        cell_dff.append(dff * (0.3 if nuclear[i] else 1.0))
    frame_t = np.arange(T) / hz
    pop = np.zeros(len(tf))
    if all_spk:
        s = np.concatenate(all_spk)
        np.add.at(pop, np.clip((s / fine).astype(int), 0, len(tf) - 1), 1.0)
    pop = ndimage.gaussian_filter1d(pop, 0.3 / fine)
    pop = np.interp(frame_t, tf, (pop - pop.mean()) / max(pop.std(), 1e-9))
    shifts = _motion(motion, np.random.default_rng([seed, 1 + MOTIONS.index(motion)]), T)  # the rest: same scene
    dz = 0.25 * shifts[:, 0] / max(shifts[:, 0].std(), 1e-9) if motion != "none" else np.zeros(T)
    sz = 2.5 / UM_PER_PX  # axial profile sigma, px
    F = np.zeros((T, len(rows)), np.float32)
    for j, (kind, i) in enumerate(traces_kind):
        if kind == "cell":
            q = cells[i]
            ts = frame_t + (np.clip(q["c"][0] - PAD, 0, size) / size) / hz  # this row's scan time
            depth = np.exp(-((q["z"] + dz) ** 2) / (2 * sz**2)) / np.exp(-(q["z"] ** 2) / (2 * sz**2))
            drift = 1 + 0.03 * _smooth_noise(rng, T, T / 4)
            F[:, j] = depth * drift * (1 + np.interp(ts, tf, cell_dff[i]))
        elif kind == "dendrite":
            F[:, j] = 1 + 0.7 * np.interp(frame_t, tf, ndimage.gaussian_filter1d(cell_dff[i], 0.05 / fine))
        elif kind == "axon":
            F[:, j] = 1 + np.interp(frame_t, tf, _fluorescence(calcium(axon_spk[i]), dff1, dyn))
        elif kind == "static":
            F[:, j] = 1
        else:
            F[:, j] = 0.1 * np.clip(0.7 * pop + 0.7 * _smooth_noise(rng, T, 2 * hz), -3, None)

    # --- frames: compose, vessels, PSF + sub-pixel shift in Fourier space, crop, illumination
    A = np.stack(rows).reshape(len(rows), -1)
    ky, kx = np.fft.fftfreq(H)[:, None], np.fft.rfftfreq(W)[None, :]
    s1, s2, th = rng.uniform(0.6, 0.9), rng.uniform(0.9, 1.4), rng.uniform(0, np.pi)
    ku, kv = kx * np.cos(th) + ky * np.sin(th), -kx * np.sin(th) + ky * np.cos(th)
    otf = np.exp(-2 * np.pi**2 * ((s1 * ku) ** 2 + (s2 * kv) ** 2))
    clean = np.empty((T, size, size), np.float32)
    for t0 in range(0, T, 50):
        blk = (F[t0 : t0 + 50] @ A).reshape(-1, H, W) * transmission
        sh = shifts[t0 : t0 + 50]
        ramp = np.exp(-2j * np.pi * (ky[None] * sh[:, 0, None, None] + kx[None] * sh[:, 1, None, None]))
        moved = np.fft.irfft2(np.fft.rfft2(blk) * otf * ramp, s=(H, W))
        clean[t0 : t0 + 50] = moved[:, PAD : PAD + size, PAD : PAD + size]
    cy, cx = size / 2 + rng.normal(0, size / 8, 2)
    illum = 1 - 0.2 * ((yy[:size, :size] - cy) ** 2 + (xx[:size, :size] - cx) ** 2) / (size * size / 2)
    power = (1 + rng.normal(0, 0.01, T)) * (1 + 0.01 * _smooth_noise(rng, T, 5 * hz))
    bleach = np.exp(-rng.uniform(0.05, 0.1) * np.arange(T) / T)
    clean *= (illum**2)[None] * (power**2 * bleach)[:, None, None].astype(np.float32)
    clean = np.clip(clean, 0, None)

    # --- detector
    lam = clean * (photons / clean.mean())
    gain, cv = rng.uniform(20, 80), rng.uniform(0.4, 0.7)
    read = rng.uniform(0.05, 0.15) * gain
    if seed % 2:
        offset, dtype, lo, hi = rng.uniform(80, 250), np.uint16, 0, 65535
    else:
        offset, dtype, lo, hi = -0.2 * gain, np.int16, -32768, 32767
    k = rng.poisson(lam).astype(np.float64)
    adu = rng.gamma(k / cv**2 + (k == 0), gain * cv**2) * (k > 0) + offset + rng.normal(0, read, lam.shape)
    noisy = np.clip(np.rint(adu), lo, hi).astype(dtype)
    clean_adu = (lam * gain + offset).astype(np.float32)

    # --- ROI labels: somata that were not moved, each pixel to the brightest cell, in the cropped frame
    crop = (slice(None), slice(PAD, PAD + size), slice(PAD, PAD + size))
    bright = np.stack([q["fp"] * q["F0"] for q in cells])[crop]
    bodies = np.stack([q["body"] for q in cells])[crop]
    best = bright.argmax(0)
    labels = np.where(np.take_along_axis(bodies, best[None], 0)[0] > 0.5, best + 1, 0)
    keep = [v for v in range(1, len(cells) + 1) if (labels == v).sum() >= 20]
    labels = np.searchsorted(keep, labels, side="left") * np.isin(labels, keep) + np.isin(labels, keep)
    params = {"indicator": ind, "rate_hz": hz, "gain": gain, "pmt_cv": cv, "read_noise": read, "offset": offset,
              "dtype": np.dtype(dtype).name, "cells": len(cells), "rois": len(keep), "silent": int(silent.sum()),
              "nuclear": int(nuclear.sum()), "photons_clean": float(((clean_adu - offset) / gain).mean()),
              "photons_noisy": float((noisy.mean(dtype=np.float64) - offset) / gain)}
    return noisy, clean_adu, labels.astype(np.int32), params


def save_png(path, noisy, clean, gauss, out, labels, t=None):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = int(np.argmax(clean.reshape(len(clean), -1).std(1))) if t is None else t
    lo, hi = np.percentile(clean, [0.5, 99.8])
    fig, ax = plt.subplots(2, 3, figsize=(12, 8))
    for a, (name, img) in zip(ax.ravel(), [("clean mean", clean.mean(0)), ("clean frame", clean[t]),
                                           ("noisy", noisy[t]), ("best 3D Gaussian", gauss[t]),
                                           ("generalist", out[t]), ("ROI labels", labels)], strict=True):
        a.imshow(img, cmap="gray" if name != "ROI labels" else "nipy_spectral",
                 **({} if name == "ROI labels" else {"vmin": lo, "vmax": hi}))
        a.set_title(f"{name}" + (f" (frame {t})" if name not in ("clean mean", "ROI labels") else ""))
        a.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--photons", type=float, nargs="+", default=[1.0, 2.0, 5.0])
    ap.add_argument("--motion", nargs="+", default=list(MOTIONS),
                    choices=MOTIONS)
    ap.add_argument("--frames", type=int, default=400)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--indicator", choices=sorted(INDICATORS), help="override the seed's indicator")
    ap.add_argument("--rate", type=float, help="override the seed's frame rate (Hz)")
    ap.add_argument("--png", help="folder: a picture of every case (clean / noisy / Gaussian / generalist)")
    ap.add_argument("--finetune", type=float, help="also the generalist fine-tuned for this many seconds on the noisy "
                    "movie (self-supervised, temporal, fast: what `train --init generalist` does)")
    ap.add_argument("--write-input", help="folder: each noisy movie as a TIFF (for a peer such as DeepCAD-RT)")
    ap.add_argument("--peer", nargs=2, metavar=("TIFF", "NAME"), help="also score a peer's output of the (one) case")
    a = ap.parse_args(argv)
    den = generalist("temporal")
    summary = []
    for photons in a.photons:
        for motion in a.motion:
            for seed in a.seeds:
                noisy, clean, labels, p = simulate_2p(a.frames, a.size, photons, motion, seed, a.indicator, a.rate)
                case = f"indep {photons:g} ph, {motion}, seed {seed}"
                print(f"\n<!-- {case}: GCaMP{p['indicator']} {p['rate_hz']:g} Hz, {p['dtype']}, gain "
                      f"{p['gain']:.1f}, PMT cv {p['pmt_cv']:.2f}, read {p['read_noise']:.1f}, offset "
                      f"{p['offset']:.1f}, {p['cells']} cells ({p['silent']} silent, {p['nuclear']} nuclear), "
                      f"{p['rois']} ROIs, ph/px clean {p['photons_clean']:.3f}, noisy {p['photons_noisy']:.3f} -->",
                      flush=True)
                raw = noisy.astype(np.float32)
                r = score(case, "raw", raw, clean, raw, labels)
                sigma, gauss, _ = best_gaussian(noisy, clean)
                g = score(case, "best 3D Gaussian", gauss, clean, raw, labels, note=f"sigma {tuple(sigma)}")
                out, secs = run_model(noisy, den)
                m = score(case, "generalist temporal (zero-shot)", out, clean, raw, labels,
                          note=f"{secs:.0f} s; give-back {GIVE_BACK[0]}")
                if a.write_input:
                    Path(a.write_input).mkdir(parents=True, exist_ok=True)
                    tifffile.imwrite(Path(a.write_input) / f"indep_{photons:g}ph_{motion}_s{seed}.tif", noisy)
                if a.finetune:
                    tuned = _finetuned(noisy, a.finetune)
                    score(case, f"generalist + {a.finetune:g} s fine-tuning", run_model(noisy, tuned)[0], clean, raw,
                          labels, note=f"{tuned.step} steps")
                if a.peer:
                    score(case, a.peer[1], tifffile.imread(a.peer[0]).astype(np.float32), clean, raw, labels)
                summary.append((case, r["psnr"], g["psnr"], sigma, m["psnr"], g["trace_r"], m["trace_r"],
                                m["mean_shift_pct"]))
                print(f"<!-- {case}: model - Gaussian = {m['psnr'] - g['psnr']:+.2f} dB -->", flush=True)
                if a.png:
                    Path(a.png).mkdir(parents=True, exist_ok=True)
                    save_png(Path(a.png) / f"{photons:g}ph_{motion}_s{seed}.png", noisy, clean, gauss, out, labels)
    print("\n| case | raw dB | Gaussian dB (sigma t,y,x) | generalist dB | gain dB | trace r G / net | "
          "mean shift % | target |")
    print("|---|---|---|---|---|---|---|---|")
    for case, r, g, s, m, tg, tm, ms in summary:
        ok = m - g >= 1.5 and tm >= tg and ms <= 1.0
        print(f"| {case} | {r:.2f} | {g:.2f} ({s[0]:g}, {s[1]:g}, {s[2]:g}) | {m:.2f} | {m - g:+.2f} | "
              f"{tg:.3f} / {tm:.3f} | {ms:.3f} | {'met' if ok else 'MISSED'} |")


if __name__ == "__main__":
    main()
