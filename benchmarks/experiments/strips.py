"""Motion within frames: denoising overlapping strips of lines on their own (piecewise rigid), an experiment.

    python benchmarks/experiments/strips.py --seed 21 --motion jitter --line-motion --strips 4 --height 48
    python benchmarks/experiments/strips.py --seed 21 --motion jitter --line-motion --strips 1 --height 128  # whole
    python benchmarks/experiments/strips.py --detect    # how far the top and bottom strips' shifts disagree
    python benchmarks/experiments/strips.py --periodic 0.33   # a 10 Hz motion during the scan; engine off / auto
    python benchmarks/experiments/strips.py --nonrigid 1      # top and bottom jitter apart between frames
    python benchmarks/experiments/strips.py --nonrigid 1 --sides   # left and right: strips of columns
    python benchmarks/experiments/strips.py --nonrigid 1 --corners # both axes: blocks

Under a resonant scanner the brain keeps moving while a frame is scanned, so every line has its own shift
(``simulate(line_motion=True)``). The engine registers whole frames (one shift each), which leaves the lines of
neighbouring frames misaligned; the network's temporal context then blurs. Here the frame is cut into ``--strips``
horizontal strips of ``--height`` rows (overlapping), each strip denoised by the default engine on its own (its own
registration, smoothing, time averages: its lines were scanned within a fraction of the frame's time), and the
results blended with tent weights about each strip's centre. Prints the PSNR and ROI trace correlation against the
truth (default inference, shipped temporal generalist, 2 photons, 200 x 128 x 128).

Built into the engine in the twenty-second session (``inference/strips.py``, ``InferConfig.strips``); this script is
the experiment that measured the case for it (docs/benchmarks.md, twenty-first session).
"""

from __future__ import annotations

import argparse

import numpy as np

from napari_unet_att.config import InferConfig, run_to_end
from napari_unet_att.evaluation.metrics import psnr, trace_correlation
from napari_unet_att.evaluation.simulator import simulate
from napari_unet_att.inference.denoising import denoise
from napari_unet_att.inference.registration import estimate_shifts
from napari_unet_att.inference.strips import SAID
from napari_unet_att.model.pretrained import load_model


def in_strips(noisy: np.ndarray, den, n_strips: int, height: int) -> np.ndarray:
    """``noisy`` ``(T, Y, X)`` denoised strip by strip (``n_strips`` strips of ``height`` rows, centres spread evenly,
    clipped to the frame), blended with tent weights about each strip's centre (float32)."""
    rows_total = noisy.shape[1]
    height = min(height, rows_total)
    acc = np.zeros(noisy.shape, np.float64)
    weight = np.zeros(rows_total)
    for centre in (np.arange(n_strips) + 0.5) * rows_total / n_strips:
        y0 = int(max(0, min(rows_total - height, round(centre - height / 2))))
        out = denoise(noisy[:, y0 : y0 + height], den, InferConfig(device="cpu"))
        rows = np.arange(y0, y0 + height)
        w = np.clip(1.0 - np.abs(rows - centre) / (height / 2), 0.05, None)  # (never 0: every row covered)
        acc[:, y0 : y0 + height] += np.asarray(out, np.float64) * w[None, :, None]
        weight[y0 : y0 + height] += w
    return (acc / weight[None, :, None]).astype(np.float32)


def disagreement(noisy: np.ndarray, rows: int = 48) -> tuple[float, float]:
    """The RMS difference (px) between the shifts measured on the top and the bottom ``rows`` of every frame (less
    its median), and what the two estimates' own errors alone would give: motion within frames shows as the first
    well above the second."""
    frames = np.asarray(noisy, np.float32)
    (top, top_noise), (bottom, bottom_noise) = (run_to_end(estimate_shifts(part))
                                                for part in (frames[:, :rows], frames[:, -rows:]))
    d = top - bottom
    d -= np.nanmedian(d, axis=0)
    d = d[np.isfinite(d).all(axis=1)]
    return float(np.sqrt(np.mean(np.sum(d**2, axis=1)))), float(np.hypot(top_noise, bottom_noise))


def warped(seed: int, photons: float, shift, pad: int, frames: int = 200, size: int = 128):
    """A still simulated recording (``simulate``, no motion) warped pixel by pixel: the pixel at ``(y, x)`` of frame
    ``t`` sits shifted by ``shift(t, y / size, x / size)`` = ``(dy, dx)`` px (arrays of the frame's shape), then photon
    and read noise
    drawn as the simulator does (motion models the simulator does not have). Returns ``(noisy, clean, labels)``."""
    from scipy import ndimage

    sim = simulate(n_frames=frames, size=size + 2 * pad, photons=photons, seed=seed)
    p = sim.params
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float64)
    clean = np.empty((frames, size, size), np.float32)
    for t in range(frames):
        dy, dx = shift(t, rows / size, cols / size)
        clean[t] = ndimage.map_coordinates(sim.clean[t].astype(np.float64), [rows + pad + dy, cols + pad + dx],
                                           order=1)
    rng = np.random.default_rng(seed + 7)
    noisy = rng.poisson(np.clip((clean - p["offset"]) / p["gain"], 0, None)) * p["gain"] + p["offset"]
    noisy = np.clip(noisy + rng.normal(0, p["read_noise"], noisy.shape), 0, 65535).astype(np.uint16)
    labels = sim.labels()[pad:-pad, pad:-pad]  # (the cells, where the still recording holds them)
    return noisy, clean, labels


def periodic(seed: int, photons: float, cycles: float, amplitude: float):
    """:func:`warped` by a periodic motion going on during the scan (a heartbeat or breathing at ``cycles`` per
    frame): ``amplitude * (sin(2 pi cycles tau), sin(2 pi cycles tau + 1))`` px at ``tau = t + y / size`` frames."""
    def shift(t, y, _x):
        phase = 2 * np.pi * cycles * (t + y)
        return amplitude * np.sin(phase), amplitude * np.sin(phase + 1.0)

    return warped(seed, photons, shift, int(np.ceil(amplitude)) + 2)


def corners(seed: int, photons: float, std: float, size: int = 256):
    """:func:`warped` by a non-rigid jitter along both axes: the four corners of each frame jitter independently
    (``std`` px each axis), bilinear between (200 frames of ``size`` px)."""
    jitter = np.random.default_rng(31).normal(0.0, std, (4, 10_000, 2))

    def shift(t, y, x):
        w = ((1 - y) * (1 - x), (1 - y) * x, y * (1 - x), y * x)  # top-left, top-right, bottom-left, bottom-right
        return tuple(sum(wk * jitter[k, t, axis] for k, wk in enumerate(w)) for axis in (0, 1))

    return warped(seed, photons, shift, int(np.ceil(4 * std)) + 2, size=size)


def nonrigid(seed: int, photons: float, std: float, sides: bool = False):
    """:func:`warped` by a non-rigid jitter between frames, none during the scan: the top and the bottom lines of
    each frame (``sides``: the left and the right columns) jitter independently (``std`` px each axis), the lines
    (columns) between by linear interpolation (tissue that stretches and shears from frame to frame, as
    piecewise-rigid registrations such as suite2p's assume)."""
    jitter = np.random.default_rng(seed + 11).normal(0.0, std, (2, 10_000, 2))

    def shift(t, y, x):
        u = x if sides else y
        top, bottom = jitter[0, t], jitter[1, t]
        return top[0] * (1 - u) + bottom[0] * u, top[1] * (1 - u) + bottom[1] * u

    return warped(seed, photons, shift, int(np.ceil(4 * std)) + 2)


def detect() -> None:
    """The strips' disagreement on validation recordings with rigid motion and with motion within frames."""
    for seed in (21, 22):
        for motion, lines in (("none", False), ("walk", False), ("jitter", False), ("ar", False),
                              ("walk", True), ("jitter", True), ("ar", True)):
            for photons in (1.0, 2.0):
                kind, std = (motion, 1.0) if motion != "none" else ("walk", 0.0)
                sim = simulate(n_frames=200, size=128, photons=photons, motion_std=std, motion=kind, seed=seed,
                               line_motion=lines)
                rms, noise = disagreement(sim.noisy)
                print(f"seed {seed}, {photons:g} ph, {motion}{' within frames' if lines else ''}: top - bottom "
                      f"{rms:.3f} px RMS, estimates' error {noise:.3f}, ratio {rms / noise:.2f}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=21)
    ap.add_argument("--motion", default="jitter", choices=("none", "walk", "ar", "jitter"))
    ap.add_argument("--line-motion", action="store_true", help="the motion goes on during each frame's scan")
    ap.add_argument("--photons", type=float, default=2.0)
    ap.add_argument("--strips", type=int, default=4)
    ap.add_argument("--height", type=int, default=48, help="rows per strip")
    ap.add_argument("--detect", action="store_true", help="only measure the strips' disagreement (many recordings)")
    ap.add_argument("--periodic", type=float, metavar="CYCLES",
                    help="a periodic motion within frames of CYCLES per frame instead (the engine's strips 'auto' "
                         "against 'off', on the shipped temporal generalist)")
    ap.add_argument("--amplitude", type=float, default=1.5, help="--periodic: the motion's amplitude (px)")
    ap.add_argument("--nonrigid", type=float, metavar="STD",
                    help="a non-rigid jitter between frames instead (top and bottom lines independent, STD px)")
    ap.add_argument("--sides", action="store_true", help="--nonrigid: the left and right columns independent instead")
    ap.add_argument("--corners", action="store_true",
                    help="--nonrigid: the four corners independent (both axes; 256 x 256 frames)")
    a = ap.parse_args()
    if a.detect:
        detect()
        return
    if a.periodic is not None or a.nonrigid is not None:
        if a.corners:
            noisy, clean, labels = corners(a.seed, a.photons, a.nonrigid)
            what = f"non-rigid jitter {a.nonrigid:g} px (four corners, 256 px)"
        elif a.periodic is not None:
            noisy, clean, labels = periodic(a.seed, a.photons, a.periodic, a.amplitude)
            what = f"periodic {a.periodic:g} cycles / frame, {a.amplitude:g} px"
        else:
            noisy, clean, labels = nonrigid(a.seed, a.photons, a.nonrigid, a.sides)
            what = f"non-rigid jitter {a.nonrigid:g} px{' (left / right)' if a.sides else ''}"
        rng = float(clean.max() - clean.min())
        for setting in ("off", "auto"):
            said = []
            out = denoise(noisy, load_model("generalist", mode="temporal"), InferConfig(device="cpu", strips=setting),
                          progress=lambda e, said=said: said.append(e.message))
            r = float(np.nanmean(trace_correlation(out, clean, labels)))
            cut = next((m for m in said if m.startswith(SAID)), "")
            print(f"seed {a.seed}, {what}, {a.photons:g} ph, strips {setting}: PSNR "
                  f"{psnr(out, clean, data_range=rng):.3f} dB, trace r {r:.4f}; {cut}",
                  flush=True)
        return
    kind, std = (a.motion, 1.0) if a.motion != "none" else ("walk", 0.0)
    sim = simulate(n_frames=200, size=128, photons=a.photons, motion_std=std, motion=kind, seed=a.seed,
                   line_motion=a.line_motion)
    out = in_strips(sim.noisy, load_model("generalist", mode="temporal"), a.strips, a.height)
    rng = float(sim.clean.max() - sim.clean.min())
    r = float(np.nanmean(trace_correlation(out, sim.clean, sim.labels())))
    print(f"seed {a.seed}, {a.motion}{' within frames' if a.line_motion else ''}, {a.photons:g} ph, "
          f"{a.strips} strips of {a.height} rows: PSNR {psnr(out, sim.clean, data_range=rng):.3f} dB, trace r {r:.4f}")


if __name__ == "__main__":
    main()
