"""Ground-truth two-photon calcium-imaging movies.

A seeded, fast simulator used by the tests, the benchmarks and the sample data. The model:

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
from scipy import ndimage, signal, sparse, special

from ..errors import InputError

__all__ = ["SimResult", "simulate"]

_UINT16_MAX = 65535
_FRAMES_PER_CHUNK = 32
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


@dataclass
class _Cell:
    cy: float  # centre, canvas coordinates
    cx: float
    a: float  # semi-axes (px)
    b: float
    theta: float  # orientation (rad)


# ----------------------------------------------------------------------------------------------------------- checks


def _check_args(n_frames, size, photons, motion_std, n_cells, motion, psf_sigma, gain, read_noise, fps) -> tuple:
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
    if motion not in _MOTION_RHO:
        raise InputError(f"motion must be one of {', '.join(map(repr, _MOTION_RHO))}, got {motion!r}")
    if psf_sigma < 0 or gain <= 0 or read_noise < 0 or fps <= 0:
        raise InputError(
            f"need psf_sigma >= 0, gain > 0, read_noise >= 0, fps > 0; got {psf_sigma}, {gain}, {read_noise}, {fps}"
        )
    return int(n_frames), ny, nx


# --------------------------------------------------------------------------------------------------------- geometry


def _place_cells(rng, n, region, radius, existing, avoid=None) -> list[_Cell]:
    """Place ``n`` somata with centres in ``region`` = (y0, y1, x0, x1), mostly not overlapping ``existing``.

    ``avoid`` = (y0, y1, x0, x1): a rectangle centres must not fall into (used for the surround ring).
    """
    y0, y1, x0, x1 = region
    cells: list[_Cell] = []
    py = [c.cy for c in existing]
    px = [c.cx for c in existing]
    pr = [max(c.a, c.b) for c in existing]
    for _ in range(n):
        a, b = rng.uniform(radius[0], radius[1], 2)
        theta = rng.uniform(0, np.pi)
        r = max(a, b)
        ays, axs, ars = np.asarray(py), np.asarray(px), np.asarray(pr)
        for attempt in range(200):
            cy, cx = rng.uniform(y0, y1), rng.uniform(x0, x1)
            if avoid is not None and avoid[0] <= cy < avoid[1] and avoid[2] <= cx < avoid[3]:
                continue
            # after 100 tries accept touching neighbours: dense fields must still get their n cells
            slack = 0.9 if attempt < 100 else 0.6
            if not len(ays) or np.all((ays - cy) ** 2 + (axs - cx) ** 2 >= (slack * (r + ars)) ** 2):
                break
        cells.append(_Cell(float(cy), float(cx), float(a), float(b), float(theta)))
        py.append(cy)
        px.append(cx)
        pr.append(r)
    return cells


def _random_curve(rng, y, x, angle, length, step=0.5, wiggle=0.12) -> np.ndarray:
    """Points ``(n, 2)`` of a smooth random curve (persistent random walk of the direction)."""
    n = max(2, int(length / step))
    angles = angle + np.cumsum(rng.normal(0, wiggle, n))
    ys = y + np.cumsum(step * np.sin(angles))
    xs = x + np.cumsum(step * np.cos(angles))
    return np.stack([ys, xs], axis=1)


def _splat(img, pts, weights, oy, ox) -> None:
    """Add ``weights`` at sub-pixel points (bilinear) into ``img`` whose origin is canvas (oy, ox)."""
    py, px = pts[:, 0] - oy, pts[:, 1] - ox
    iy, ix = np.floor(py).astype(int), np.floor(px).astype(int)
    fy, fx = py - iy, px - ix
    h, w = img.shape
    for dy, dx, wt in ((0, 0, (1 - fy) * (1 - fx)), (0, 1, (1 - fy) * fx), (1, 0, fy * (1 - fx)), (1, 1, fy * fx)):
        yy, xx = iy + dy, ix + dx
        ok = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
        np.add.at(img, (yy[ok], xx[ok]), (weights * wt)[ok])


def _box(pts_y, pts_x, pad) -> tuple[int, int, int, int]:
    """Integer box (y0, y1, x0, x1) around points plus ``pad``; not clipped (blur must see content off-canvas)."""
    y0 = int(np.floor(np.min(pts_y))) - pad
    y1 = int(np.ceil(np.max(pts_y))) + pad + 1
    x0 = int(np.floor(np.min(pts_x))) - pad
    x1 = int(np.ceil(np.max(pts_x))) + pad + 1
    return y0, y1, x0, x1


def _soma_rho(cell: _Cell, yy, xx) -> np.ndarray:
    """Normalised elliptical radius (1 on the membrane) on a grid."""
    dy, dx = yy - cell.cy, xx - cell.cx
    c, s = math.cos(cell.theta), math.sin(cell.theta)
    u, v = c * dx + s * dy, -s * dx + c * dy
    return np.sqrt((u / cell.a) ** 2 + (v / cell.b) ** 2)


def _cell_footprint(rng, cell: _Cell, psf_sigma, pad):
    """Local footprint image (soma + dendrites, PSF-blurred), its box and the soma's boolean mask."""
    rbar = 0.5 * (cell.a + cell.b)
    dendrites = []
    for _ in range(int(rng.integers(1, 4))):
        ang = rng.uniform(0, 2 * np.pi)
        start_y, start_x = cell.cy + 0.9 * rbar * math.sin(ang), cell.cx + 0.9 * rbar * math.cos(ang)
        pts = _random_curve(rng, start_y, start_x, ang, rng.uniform(8, 30))
        taper = np.linspace(0.6, 0.15, len(pts)) * 0.5  # brightness * step (line density per pixel)
        dendrites.append((pts, taper))
    all_y = np.concatenate([[cell.cy - rbar * 1.5, cell.cy + rbar * 1.5]] + [p[:, 0] for p, _ in dendrites])
    all_x = np.concatenate([[cell.cx - rbar * 1.5, cell.cx + rbar * 1.5]] + [p[:, 1] for p, _ in dendrites])
    y0, y1, x0, x1 = _box(all_y, all_x, pad)
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    rho = _soma_rho(cell, yy, xx)
    edge = 0.5 / rbar  # ~0.5 px soft edge
    body = special.expit((1.0 - rho) / edge)
    nucleus = special.expit((0.55 - rho) / edge)
    img = (body * (1.0 - 0.65 * nucleus)).astype(np.float32)
    for pts, w in dendrites:
        _splat(img, pts, w, y0, x0)
    if psf_sigma > 0:
        img = ndimage.gaussian_filter(img, psf_sigma, mode="constant")
    return img, (y0, y1, x0, x1), rho <= 1.0


def _neurite_footprint(rng, psf_sigma, pad, region, avoid=None):
    y0r, y1r, x0r, x1r = region
    for _ in range(100):
        sy, sx = rng.uniform(y0r, y1r), rng.uniform(x0r, x1r)
        if avoid is None or not (avoid[0] <= sy < avoid[1] and avoid[2] <= sx < avoid[3]):
            break
    pts = _random_curve(rng, sy, sx, rng.uniform(0, 2 * np.pi), rng.uniform(20, 60), wiggle=0.08)
    line_density = 0.5 * rng.uniform(0.25, 0.5)  # brightness * step
    y0, y1, x0, x1 = _box(pts[:, 0], pts[:, 1], pad)
    img = np.zeros((y1 - y0, x1 - x0), np.float32)
    _splat(img, pts, np.full(len(pts), line_density), y0, x0)
    if psf_sigma > 0:
        img = ndimage.gaussian_filter(img, psf_sigma, mode="constant")
    return img, (y0, y1, x0, x1)


def _neuropil_fields(rng, canvas, margin) -> tuple[np.ndarray, np.ndarray]:
    """Static background (mean 1, positive) and a zero-mean modulation pattern in [-1, 1], both ``canvas``-shaped.

    Sums of random low-frequency plane waves, evaluated in field-of-view coordinates so the field does not depend
    on the margin.
    """
    yy, xx = np.mgrid[0 : canvas[0], 0 : canvas[1]].astype(np.float32) - np.float32(margin)

    def waves(n):
        f = np.zeros(canvas, np.float32)
        for _ in range(n):
            k = 2 * np.pi / rng.uniform(12, 64)
            ang, ph = rng.uniform(0, 2 * np.pi), rng.uniform(0, 2 * np.pi)
            f += np.cos(k * (np.cos(ang) * xx + np.sin(ang) * yy) + ph).astype(np.float32)
        return f / np.sqrt(n / 2.0)  # ~unit std

    static = np.clip(1.0 + 0.3 * waves(12), 0.3, None)
    pattern = np.clip(waves(8) / 3.0, -1.0, 1.0)
    return static.astype(np.float32), pattern.astype(np.float32)


# --------------------------------------------------------------------------------------------------------- activity


def _calcium(rng, n, n_frames, fps, rate, tau_decay, tau_rise, dff) -> tuple[np.ndarray, np.ndarray]:
    """Spike counts ``(n, T)`` and dF/F ``(n, T)`` for ``n`` components (burn-in avoids a quiet start)."""
    if n == 0:
        return np.zeros((0, n_frames), np.int32), np.zeros((0, n_frames), np.float32)
    burn = int(math.ceil(5 * tau_decay * fps))
    rates = rate * rng.lognormal(0.0, 0.7, n)  # some cells are much more active than others
    spikes = rng.poisson((rates / fps)[:, None], (n, n_frames + burn))
    g_d = math.exp(-1.0 / (tau_decay * fps))
    g_r = math.exp(-1.0 / (max(tau_rise, 1e-6) * fps))
    kern_peak = _kernel_peak(g_d, g_r)
    c = signal.lfilter([1.0], [1.0, -g_d], spikes, axis=1) - signal.lfilter([1.0], [1.0, -g_r], spikes, axis=1)
    amp = dff * rng.lognormal(0.0, 0.3, n) / kern_peak
    return spikes[:, burn:].astype(np.int32), (amp[:, None] * c[:, burn:]).astype(np.float32)


def _kernel_peak(g_d: float, g_r: float) -> float:
    k = np.arange(200)
    return float(np.max(g_d**k - g_r**k)) or 1.0


def _smooth_noise(rng, n, n_frames, fps, timescale=1.0) -> np.ndarray:
    """``(n, T)`` zero-mean, unit-std noise low-passed at ``timescale`` seconds."""
    z = rng.normal(0, 1, (n, n_frames))
    z = ndimage.gaussian_filter1d(z, timescale * fps, axis=1, mode="reflect")
    z -= z.mean(axis=1, keepdims=True)
    return (z / np.maximum(z.std(axis=1, keepdims=True), 1e-12)).astype(np.float32)


# Frame-to-frame correlation of each motion kind's AR(1) shifts. 'walk': a mean-reverting drift (~1 s
# correlation at 30 Hz) that moves like real brain motion but stays put; 'ar': correlated motion between
# drift and jitter (consecutive frames ~1 px apart at std 1 px); 'jitter': independent per-frame shifts.
_MOTION_RHO = {"walk": 0.97, "ar": 0.5, "jitter": 0.0}


def _motion(rng, n, std, kind, limit) -> np.ndarray:
    """``(n, 2)`` rigid shifts with empirical std ``std`` per axis (zero mean), clipped to ``+-limit``."""
    if std == 0:
        return np.zeros((n, 2), np.float32)
    e = rng.normal(0, 1, (n, 2))
    rho = _MOTION_RHO[kind]
    if rho > 0:
        s = np.empty_like(e)
        s[0] = e[0]
        for t in range(1, n):
            s[t] = rho * s[t - 1] + math.sqrt(1 - rho * rho) * e[t]
    else:
        s = e
    s -= s.mean(axis=0)
    s *= std / np.maximum(s.std(axis=0), 1e-12)
    return np.clip(s, -limit, limit).astype(np.float32)


# ------------------------------------------------------------------------------------------------------- rendering


def _shift_frame(frame, shift, row_shifts, margin, ny, nx) -> np.ndarray:
    """Move a canvas frame's content by ``shift`` (or per-row ``row_shifts``) and crop the field of view."""
    if row_shifts is None:
        moved = ndimage.shift(frame, (float(shift[0]), float(shift[1])), order=3, mode="nearest")
        return moved[margin : margin + ny, margin : margin + nx]
    yy, xx = np.mgrid[0:ny, 0:nx].astype(np.float32)
    cy = yy + margin - row_shifts[:, 0:1]
    cx = xx + margin - row_shifts[:, 1:2]
    return ndimage.map_coordinates(frame, [cy, cx], order=3, mode="nearest")


def _render(footprints, activity, np_static, np_pattern, np_gain, shifts, line_motion, margin, ny, nx, canvas):
    """Clean movie in arbitrary units, ``(T, Y, X)`` float32, built chunk by chunk."""
    n_frames = activity.shape[1]
    out = np.empty((n_frames, ny, nx), np.float32)
    for t0 in range(0, n_frames, _FRAMES_PER_CHUNK):
        t1 = min(n_frames, t0 + _FRAMES_PER_CHUNK)
        frames = np.asarray(footprints @ activity[:, t0:t1]).T  # (pixels, t) -> (t, pixels)
        frames = frames + np.outer(np_gain[0, t0:t1], np_static) + np.outer(np_gain[1, t0:t1], np_pattern)
        frames = frames.reshape(t1 - t0, *canvas).astype(np.float32, copy=False)
        if margin == 0:
            out[t0:t1] = frames
            continue
        for i, t in enumerate(range(t0, t1)):
            rows = None
            if line_motion:  # continuous motion during the scan: line y is at s_t + y/Y (s_{t+1} - s_t)
                frac = (np.arange(ny, dtype=np.float32) / ny)[:, None]
                rows = shifts[t][None, :] + frac * (shifts[t + 1] - shifts[t])[None, :]
            out[t] = _shift_frame(frames[i], shifts[t], rows, margin, ny, nx)
    return out


def _detect(clean_au, scale, gain, offset, read_noise, bidirectional, mirrored, rng) -> tuple[np.ndarray, np.ndarray]:
    """Turn arbitrary units into expected ADU (in place) and draw the recorded uint16 movie."""
    n_frames, ny, nx = clean_au.shape
    noisy = np.empty((n_frames, 2 * ny if bidirectional else ny, nx), np.uint16)
    for t0 in range(0, n_frames, _FRAMES_PER_CHUNK):
        t1 = min(n_frames, t0 + _FRAMES_PER_CHUNK)
        lam = np.clip(clean_au[t0:t1] * np.float32(scale), 0, None)
        clean_au[t0:t1] = lam * np.float32(gain) + np.float32(offset)  # clean output, same units as noisy
        if bidirectional:
            lam = np.repeat(lam, 2, axis=1)  # each physical line recorded twice, independent noise
        adu = rng.poisson(lam).astype(np.float32) * np.float32(gain) + np.float32(offset)
        if read_noise > 0:
            adu += rng.normal(0.0, read_noise, adu.shape).astype(np.float32)
        noisy[t0:t1] = np.clip(np.rint(adu), 0, _UINT16_MAX).astype(np.uint16)
    if bidirectional and mirrored:
        noisy[:, 1::2, :] = noisy[:, 1::2, ::-1]
    return clean_au, noisy


# ------------------------------------------------------------------------------------------------------------ API


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

    limit = math.ceil(4 * motion_std)
    margin = limit + 4 if motion_std > 0 else 0  # room for shifted content and the spline's edge
    canvas = (ny + 2 * margin, nx + 2 * margin)
    pad = int(math.ceil(4 * psf_sigma)) + 1

    # field-of-view content first, from its own streams, so it does not depend on the margin
    fov_region = (margin, margin + ny, margin, margin + nx)
    cells = _place_cells(rng_fov, n_cells, fov_region, cell_radius, [])
    feats = [_cell_footprint(rng_fov, c, psf_sigma, pad) for c in cells]
    neurites = [_neurite_footprint(rng_fov, psf_sigma, pad, fov_region) for _ in range(n_neurites)]
    np_static, np_pattern = _neuropil_fields(rng_fov, canvas, margin)
    spikes, dff = _calcium(rng_act, n_cells, n_frames, fps, spike_rate, tau_decay, tau_rise, dff_per_spike)
    _, dff_neurites = _calcium(rng_act, n_neurites, n_frames, fps, spike_rate, tau_decay, tau_rise, dff_per_spike)
    brightness = rng_act.uniform(0.6, 1.4, n_cells + n_neurites).astype(np.float32)
    np_gain = np.vstack([1.0 + neuropil_fluctuation * _smooth_noise(rng_act, 1, n_frames, fps, 1.0),
                         neuropil_fluctuation * _smooth_noise(rng_act, 1, n_frames, fps, 2.0)])

    # content around the field of view: cells and neurites whose processes, blur or motion reach into it. A fixed
    # ring from its own stream (so the field of view looks the same with or without motion), plus more from
    # another stream only where motion needs a wider canvas
    surround = [(rng_ring, _SURROUND, 0)]
    if margin > _SURROUND:
        surround.append((rng_extra, margin, _SURROUND))
    around_feats, around_dff = [], []
    n_around = 0
    for rng, outer, inner in surround:
        region = (margin - outer, margin + ny + outer, margin - outer, margin + nx + outer)
        hole = (margin - inner, margin + ny + inner, margin - inner, margin + nx + inner)
        frac = ((ny + 2 * outer) * (nx + 2 * outer) - (ny + 2 * inner) * (nx + 2 * inner)) / (ny * nx)
        n_c, n_n = round(n_cells * frac), round(n_neurites * frac)
        ring_cells = _place_cells(rng, n_c, region, cell_radius, cells, avoid=hole)
        around_feats += [_cell_footprint(rng, c, psf_sigma, pad)[:2] for c in ring_cells]
        around_feats += [_neurite_footprint(rng, psf_sigma, pad, region, avoid=hole) for _ in range(n_n)]
        around_dff.append(_calcium(rng, n_c + n_n, n_frames, fps, spike_rate, tau_decay, tau_rise, dff_per_spike)[1])
        brightness = np.concatenate([brightness, rng.uniform(0.6, 1.4, n_c + n_n).astype(np.float32)])
        cells = cells + ring_cells
        n_around += n_c + n_n

    all_feats = [f[:2] for f in feats] + neurites + around_feats
    footprints = _footprint_matrix(all_feats, canvas)
    activity = brightness[:, None] * (1.0 + np.vstack([dff, dff_neurites, *around_dff]))

    shifts_ext = _motion(rng_motion, n_frames + 1, motion_std, motion, limit)  # one more: end of the last frame
    clean = _render(footprints, activity.astype(np.float32), neuropil * np_static.ravel(),
                    neuropil * np_pattern.ravel() * np_static.ravel(), np_gain.astype(np.float32), shifts_ext,
                    line_motion, margin, ny, nx, canvas)

    mean_au = float(np.mean(clean, dtype=np.float64))
    scale = float(photons) / mean_au
    clean, noisy = _detect(clean, scale, gain, offset, read_noise, bidirectional, backward_mirrored, rng_noise)

    masks = np.zeros((n_cells, ny, nx), bool)
    for k, (_, box, soma) in enumerate(feats):
        _paste(masks[k], soma, box, margin)

    params = {
        "n_frames": n_frames, "size": [ny, nx], "photons": float(photons), "motion_std": float(motion_std),
        "bidirectional": bool(bidirectional), "seed": int(seed), "n_cells": n_cells, "motion": motion,
        "line_motion": bool(line_motion), "backward_mirrored": bool(backward_mirrored), "fps": float(fps),
        "spike_rate": float(spike_rate), "tau_decay": float(tau_decay), "tau_rise": float(tau_rise),
        "dff_per_spike": float(dff_per_spike), "cell_radius": [float(r) for r in cell_radius],
        "n_neurites": int(n_neurites), "neuropil": float(neuropil),
        "neuropil_fluctuation": float(neuropil_fluctuation), "psf_sigma": float(psf_sigma), "gain": float(gain),
        "offset": float(offset), "read_noise": float(read_noise), "photon_scale": scale, "margin": margin,
        "n_surround_components": int(n_around),
        "layout": "bidirectional (T, 2Y, X): even rows forward, odd rows backward" if bidirectional else "(T, Y, X)",
        "units": "ADU = photons * gain + offset",
    }
    return SimResult(noisy=noisy, clean=clean, traces=dff, masks=masks, shifts=shifts_ext[:n_frames].copy(),
                     params=params, spikes=spikes)


def _paste(dst: np.ndarray, src: np.ndarray, box, margin: int) -> None:
    """Write ``src`` (at canvas ``box``) into the field-of-view image ``dst``, clipping what falls outside."""
    y0, y1, x0, x1 = (v - margin for v in box)
    ys, xs = max(0, y0), max(0, x0)
    ye, xe = min(dst.shape[0], y1), min(dst.shape[1], x1)
    if ye > ys and xe > xs:
        dst[ys:ye, xs:xe] = src[ys - y0 : ye - y0, xs - x0 : xe - x0]


def _footprint_matrix(feats, canvas) -> sparse.csr_matrix:
    """Sparse ``(pixels, components)`` matrix from local footprint images and their boxes."""
    rows, cols, vals = [], [], []
    for k, (img, (y0, _, x0, _)) in enumerate(feats):
        yy, xx = np.nonzero(img > 1e-4 * max(float(img.max()), 1e-12))
        v = img[yy, xx]
        yy, xx = yy + y0, xx + x0
        inside = (yy >= 0) & (yy < canvas[0]) & (xx >= 0) & (xx < canvas[1])  # rendered whole, clipped here
        rows.append(yy[inside] * canvas[1] + xx[inside])
        cols.append(np.full(int(inside.sum()), k))
        vals.append(v[inside])
    n = len(feats)
    if n == 0:
        return sparse.csr_matrix((canvas[0] * canvas[1], 0), dtype=np.float32)
    return sparse.csr_matrix(
        (np.concatenate(vals).astype(np.float32), (np.concatenate(rows), np.concatenate(cols))),
        shape=(canvas[0] * canvas[1], n),
    )
