"""Ground-truth two-photon calcium-imaging movies: :func:`simulate` and its :class:`SimResult`.

A seeded, fast simulator used by the tests, the benchmarks and the sample data. This module assembles the movie;
the parts live beside it: :mod:`.footprints` (somata, neurites, neuropil), :mod:`.activity` (calcium dynamics),
:mod:`.motion` (rigid shifts) and :mod:`.microscope` (scanning, photons, noise, ADU). The model:

* **Somata**: soft-edged ellipses with a darker nucleus (GCaMP is cytosolic), each with 1-3 thin, tapering
  dendrites that share the cell's calcium trace.
* **Neurites**: thin random curves (passing axons / dendrites) with their own activity.
* **Neuropil**: a smooth positive background built from low spatial frequencies, weakly fluctuating in time.
* **Activity**: Poisson spikes convolved with a difference-of-exponentials calcium kernel, as dF/F; each component's
  fluorescence is ``baseline * (1 + dF/F)``.
* **Optics**: a Gaussian PSF (applied to the spatial footprints, which is the same as blurring every frame).
* **Motion** (optional): rigid, per frame (an AR(1) random walk or independent jitter), sub-pixel, applied to the clean
  frame before noise; optionally also continuous *within* a frame (``line_motion``), every line getting its own shift.
* **Detector**: Poisson shot noise at ``photons`` mean photons per pixel, then ``gain`` (ADU per photon), Gaussian read
  noise (ADU) and an ``offset``, rounded and clipped to uint16 (like PMT data; values clip, they never wrap).

Layouts
-------
* ordinary: ``noisy`` is ``(T, Y, X)``.
* bidirectional: ``noisy`` is ``(T, 2Y, X)``; every physical line is recorded twice with independent noise, rows
  ``0, 2, 4, ...`` forward and ``1, 3, 5, ...`` backward, same content and same motion (the two passes of a line are
  ~64 us apart). With ``backward_mirrored=True`` the backward lines are stored x-reversed, as some raw acquisitions
  store them.

``clean`` is always the physical ``(T, Y, X)`` movie in the same intensity units as ``noisy``
(expected photons * gain + offset); :meth:`SimResult.clean_for_layout` returns it in ``noisy``'s layout.

Randomness is split into independent streams (cells in the field of view, cells outside it, motion, noise), so the
same ``seed`` gives the same cells and activity whatever ``photons``, ``motion_std`` or the layout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError
from .activity import calcium_activity, smooth_noise
from .footprints import (
    Box,
    Cell,
    cell_footprint,
    footprint_matrix,
    neurite_footprint,
    neuropil_fields,
    paste,
    place_cells,
)
from .microscope import detect, scan
from .motion import MOTION_KINDS, rigid_shifts

__all__ = ["SimResult", "simulate"]

_SURROUND = 40  # px of content simulated around the field of view (soma + the longest dendrite)


@dataclass
class SimResult:
    """A simulated movie and its ground truth.

    Attributes
    ----------
    noisy : ndarray, uint16
        The recorded movie in ADU: ``(T, Y, X)``, or ``(T, 2Y, X)`` for the bidirectional layout.
    clean : ndarray, float32, ``(T, Y, X)``
        Expected value of ``noisy`` before rounding and clipping (expected photons * gain + offset), physical layout.
    traces : ndarray, float32, ``(n_cells, T)``
        Ground-truth dF/F of each soma (0 = baseline).
    masks : ndarray, bool, ``(n_cells, Y, X)``
        Soma footprints (nucleus included) at zero motion, in the physical frame.
    shifts : ndarray, float32, ``(T, 2)``
        Rigid displacement ``(dy, dx)`` in pixels of frame ``t``'s content (with ``line_motion``: of its first line).
        ``clean[t](y, x) = static(y - dy, x - dx)``; register by shifting frame ``t`` by ``-shifts[t]``.
    params : dict
        Every parameter used, plus ``gain``, ``offset``, ``read_noise`` (ADU), ``photon_scale``, ``margin`` etc.
        JSON-serialisable.
    spikes : ndarray, uint8/int, ``(n_cells, T)``
        Spike counts per frame of each soma.
    """

    noisy: np.ndarray
    clean: np.ndarray
    traces: np.ndarray
    masks: np.ndarray
    shifts: np.ndarray
    params: dict
    spikes: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.int32))

    @property
    def bidirectional(self) -> bool:
        return bool(self.params.get("bidirectional", False))

    def clean_for_layout(self) -> np.ndarray:
        """``clean`` in ``noisy``'s layout: rows repeated (and backward rows x-reversed if mirrored)."""
        if not self.bidirectional:
            return self.clean
        out = np.repeat(self.clean, 2, axis=1)
        if self.params.get("backward_mirrored", False):
            out[:, 1::2, :] = out[:, 1::2, ::-1]
        return out

    def expected_photons(self) -> np.ndarray:
        """Expected photons per pixel and frame, ``(T, Y, X)`` float32 (``(clean - offset) / gain``)."""
        g, o = self.params["gain"], self.params["offset"]
        return ((self.clean - np.float32(o)) / np.float32(g)).astype(np.float32, copy=False)

    def labels(self) -> np.ndarray:
        """The masks as one labels image ``(Y, X)`` int32, 0 = background, cell ``k`` = ``k + 1``.

        Where somata overlap the later cell wins.
        """
        lab = np.zeros(self.masks.shape[1:], np.int32)
        for k, m in enumerate(self.masks):
            lab[m] = k + 1
        return lab


# --------------------------------------------------------------------------------------------------------- checks


def _check_args(n_frames, size, photons, motion_std, n_cells, motion, psf_sigma, gain, read_noise,
                fps) -> tuple[int, int, int]:
    """Validate the arguments of :func:`simulate`; returns ``(n_frames, ny, nx)``."""
    if isinstance(size, (int, np.integer)):
        ny = nx = int(size)
    else:
        try:
            ny, nx = (int(s) for s in size)
        except (TypeError, ValueError) as exc:
            raise InputError(f"size must be an int or (Y, X), got {size!r}") from exc
    if int(n_frames) < 2:
        raise InputError(f"n_frames must be at least 2, got {n_frames}")
    if ny < 8 or nx < 8:
        raise InputError(f"the frame must be at least 8 x 8 pixels, got {ny} x {nx}")
    if not (np.isfinite(photons) and photons > 0):
        raise InputError(f"photons (mean photons per pixel) must be > 0, got {photons}")
    if not (np.isfinite(motion_std) and motion_std >= 0):
        raise InputError(f"motion_std must be >= 0 pixels, got {motion_std}")
    if n_cells is not None and int(n_cells) < 0:
        raise InputError(f"n_cells must be >= 0, got {n_cells}")
    if motion not in MOTION_KINDS:
        raise InputError(f"motion must be one of {', '.join(map(repr, MOTION_KINDS))}, got {motion!r}")
    if psf_sigma < 0 or gain <= 0 or read_noise < 0 or fps <= 0:
        raise InputError(
            f"need psf_sigma >= 0, gain > 0, read_noise >= 0, fps > 0; got {psf_sigma}, {gain}, {read_noise}, {fps}"
        )
    return int(n_frames), ny, nx


def simulate(
    n_frames: int = 400,
    size: int | tuple[int, int] = 128,
    photons: float = 2.0,
    motion_std: float = 0.0,
    bidirectional: bool = False,
    seed: int = 0,
    n_cells: int | None = None,
    *,
    shape: tuple[int, int, int] | None = None,
    motion: str = "walk",
    line_motion: bool = False,
    backward_mirrored: bool = False,
    fps: float = 30.0,
    spike_rate: float = 0.5,
    tau_decay: float = 0.7,
    tau_rise: float = 0.05,
    dff_per_spike: float = 0.5,
    cell_radius: tuple[float, float] = (4.0, 7.0),
    n_neurites: int | None = None,
    neuropil: float = 0.35,
    neuropil_fluctuation: float = 0.1,
    psf_sigma: float = 1.0,
    gain: float = 20.0,
    offset: float = 100.0,
    read_noise: float = 4.0,
) -> SimResult:
    """Simulate a two-photon calcium movie with ground truth.

    Parameters
    ----------
    n_frames, size : int
        Number of frames T and frame size (an int N for N x N, or (Y, X)). ``shape=(T, Y, X)`` overrides both.
    photons : float
        Mean expected photons per pixel over the whole movie (the noise level: ~1-10 is typical two-photon data).
    motion_std : float
        Std (pixels, per axis) of the rigid per-frame shifts; 0 = no motion.
    bidirectional : bool
        Record every line twice (forward, backward): ``noisy`` becomes ``(T, 2Y, X)``.
    seed : int
        Seeds everything; the same seed gives the same cells and activity for any photons / motion / layout.
    n_cells : int, optional
        Somata with centres in the field of view (default ``Y * X / 400``). More cells and neurites are simulated
        in a ring around it (their processes and blur reach in, and motion brings them in); those are not
        reported in ``traces`` / ``masks``.
    motion : {'walk', 'ar', 'jitter'}
        AR(1) shifts with frame-to-frame correlation 0.97 (a slow drift, ~1 s correlation at 30 Hz), 0.5
        (correlated motion between drift and jitter), or independent per-frame jitter.
    line_motion : bool
        Motion continues during the scan: every line gets its own shift (linear between frames). Both passes of a
        bidirectional line share it.
    backward_mirrored : bool
        Store backward lines x-reversed (bidirectional layout only).
    fps, spike_rate, tau_decay, tau_rise, dff_per_spike
        Frame rate (Hz), mean spike rate (Hz, log-normally spread over cells), calcium kernel time constants (s) and
        mean dF/F per spike.
    cell_radius : (float, float)
        Range of soma semi-axes (px).
    n_neurites : int, optional
        Independent thin neurites (default ``n_cells // 2 + 1``).
    neuropil, neuropil_fluctuation : float
        Background brightness relative to a soma's baseline, and the relative std of its slow fluctuations.
    psf_sigma : float
        Gaussian PSF std (px).
    gain, offset, read_noise : float
        ADU per photon, ADU offset and Gaussian read-noise std (ADU).

    Returns
    -------
    SimResult
    """
    if shape is not None:
        if len(shape) != 3:
            raise InputError(f"shape must be (T, Y, X), got {shape!r}")
        n_frames, size = shape[0], (shape[1], shape[2])
    n_frames, ny, nx = _check_args(n_frames, size, photons, motion_std, n_cells, motion, psf_sigma, gain,
                                   read_noise, fps)
    if n_cells is None:
        n_cells = max(1, round(ny * nx / 400))
    n_cells = int(n_cells)
    if n_neurites is None:
        n_neurites = n_cells // 2 + 1
    rng_fov, rng_act, rng_ring, rng_extra, rng_motion, rng_noise = (
        np.random.default_rng(s) for s in np.random.SeedSequence(int(seed)).spawn(6)
    )
    kinetics = (fps, spike_rate, tau_decay, tau_rise, dff_per_spike)

    limit = math.ceil(4 * motion_std)
    margin = limit + 4 if motion_std > 0 else 0  # room for shifted content and the spline's edge
    canvas = (ny + 2 * margin, nx + 2 * margin)
    pad = int(math.ceil(4 * psf_sigma)) + 1

    # field-of-view content first, from its own streams, so it does not depend on the margin
    fov_region = (margin, margin + ny, margin, margin + nx)
    cells = place_cells(rng_fov, n_cells, fov_region, cell_radius, [])
    feats = [cell_footprint(rng_fov, c, psf_sigma, pad) for c in cells]
    neurites = [neurite_footprint(rng_fov, psf_sigma, pad, fov_region) for _ in range(n_neurites)]
    np_static, np_pattern = neuropil_fields(rng_fov, canvas, margin)
    spikes, dff = calcium_activity(rng_act, n_cells, n_frames, *kinetics)
    _, dff_neurites = calcium_activity(rng_act, n_neurites, n_frames, *kinetics)
    brightness = rng_act.uniform(0.6, 1.4, n_cells + n_neurites).astype(np.float32)
    np_gain = np.vstack([1.0 + neuropil_fluctuation * smooth_noise(rng_act, 1, n_frames, fps, 1.0),
                         neuropil_fluctuation * smooth_noise(rng_act, 1, n_frames, fps, 2.0)])

    # a fixed ring from its own stream (so the field of view looks the same with or without motion), plus more
    # from another stream only where motion needs a wider canvas
    rings = [(rng_ring, _SURROUND, 0)] + ([(rng_extra, margin, _SURROUND)] if margin > _SURROUND else [])
    around = _Surround(cells)
    for rng, outer, inner in rings:
        around.add_ring(rng, outer, inner, margin, (ny, nx), (n_cells, n_neurites), n_frames, cell_radius,
                        psf_sigma, pad, kinetics)

    footprints = footprint_matrix([f[:2] for f in feats] + neurites + around.feats, canvas)
    brightness = np.concatenate([brightness, *around.brightness])
    activity = brightness[:, None] * (1.0 + np.vstack([dff, dff_neurites, *around.dff]))

    shifts_ext = rigid_shifts(rng_motion, n_frames + 1, motion_std, motion, limit)  # one more: end of the last frame
    clean = scan(footprints, activity.astype(np.float32),
                 (neuropil * np_static.ravel(), neuropil * np_pattern.ravel() * np_static.ravel()),
                 np_gain.astype(np.float32), shifts_ext, line_motion, margin, canvas, (ny, nx))

    mean_au = float(np.mean(clean, dtype=np.float64))
    scale = float(photons) / mean_au
    clean, noisy = detect(clean, scale, gain, offset, read_noise, bidirectional, backward_mirrored, rng_noise)

    masks = np.zeros((n_cells, ny, nx), bool)
    for k, (_, box, soma) in enumerate(feats):
        paste(masks[k], soma, box, margin)

    params = {
        "n_frames": n_frames, "size": [ny, nx], "photons": float(photons), "motion_std": float(motion_std),
        "bidirectional": bool(bidirectional), "seed": int(seed), "n_cells": n_cells, "motion": motion,
        "line_motion": bool(line_motion), "backward_mirrored": bool(backward_mirrored), "fps": float(fps),
        "spike_rate": float(spike_rate), "tau_decay": float(tau_decay), "tau_rise": float(tau_rise),
        "dff_per_spike": float(dff_per_spike), "cell_radius": [float(r) for r in cell_radius],
        "n_neurites": int(n_neurites), "neuropil": float(neuropil),
        "neuropil_fluctuation": float(neuropil_fluctuation), "psf_sigma": float(psf_sigma), "gain": float(gain),
        "offset": float(offset), "read_noise": float(read_noise), "photon_scale": scale, "margin": margin,
        "n_surround_components": int(around.count),
        "layout": "bidirectional (T, 2Y, X): even rows forward, odd rows backward" if bidirectional else "(T, Y, X)",
        "units": "ADU = photons * gain + offset",
    }
    return SimResult(noisy=noisy, clean=clean, traces=dff, masks=masks, shifts=shifts_ext[:n_frames].copy(),
                     params=params, spikes=spikes)


class _Surround:
    """Content around the field of view: cells and neurites whose processes, blur or motion reach into it.

    Filled ring by ring, each ring from its own random stream; somata avoid every soma placed before them, those
    of the field of view included. Not reported in ``traces`` / ``masks``.
    """

    def __init__(self, fov_cells: list[Cell]) -> None:
        self.cells = list(fov_cells)
        self.feats: list[tuple[np.ndarray, Box]] = []
        self.dff: list[np.ndarray] = []
        self.brightness: list[np.ndarray] = []
        self.count = 0

    def add_ring(self, rng: np.random.Generator, outer: int, inner: int, margin: int, fov: tuple[int, int],
                 fov_counts: tuple[int, int], n_frames: int, cell_radius: tuple[float, float], psf_sigma: float,
                 pad: int, kinetics: tuple[float, float, float, float, float]) -> None:
        """Fill the ring from ``inner`` to ``outer`` pixels around the field of view at the field of view's
        density (``fov_counts`` = its somata and neurites)."""
        ny, nx = fov
        region = (margin - outer, margin + ny + outer, margin - outer, margin + nx + outer)
        hole = (margin - inner, margin + ny + inner, margin - inner, margin + nx + inner)
        frac = ((ny + 2 * outer) * (nx + 2 * outer) - (ny + 2 * inner) * (nx + 2 * inner)) / (ny * nx)
        n_c, n_n = round(fov_counts[0] * frac), round(fov_counts[1] * frac)
        ring_cells = place_cells(rng, n_c, region, cell_radius, self.cells, avoid=hole)
        self.feats += [cell_footprint(rng, c, psf_sigma, pad)[:2] for c in ring_cells]
        self.feats += [neurite_footprint(rng, psf_sigma, pad, region, avoid=hole) for _ in range(n_n)]
        self.dff.append(calcium_activity(rng, n_c + n_n, n_frames, *kinetics)[1])
        self.brightness.append(rng.uniform(0.6, 1.4, n_c + n_n).astype(np.float32))
        self.cells += ring_cells
        self.count += n_c + n_n
