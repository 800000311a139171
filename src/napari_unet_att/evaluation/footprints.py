"""Where the simulated fluorescence sits: soma and neurite footprints, the neuropil background.

Part of the two-photon simulator (:mod:`.simulator`). Every component is a small local image on the simulation
*canvas* (the field of view plus a margin around it), already blurred by the Gaussian PSF, and its box
``(y0, y1, x0, x1)`` in canvas coordinates; :func:`footprint_matrix` stacks them into one sparse matrix so that a
frame is ``footprints @ activity``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage, sparse, special

__all__ = [
    "Box",
    "Cell",
    "cell_footprint",
    "footprint_matrix",
    "neurite_footprint",
    "neuropil_fields",
    "paste",
    "place_cells",
]

Box = tuple[int, int, int, int]  # (y0, y1, x0, x1) on the canvas, end exclusive


@dataclass
class Cell:
    """One soma: an ellipse on the canvas."""

    cy: float  # centre, canvas coordinates
    cx: float
    a: float  # semi-axes (px)
    b: float
    theta: float  # orientation (rad)


def place_cells(rng: np.random.Generator, n: int, region: Box, radius: tuple[float, float], existing: list[Cell],
                avoid: Box | None = None) -> list[Cell]:
    """Place ``n`` somata with centres in ``region`` = (y0, y1, x0, x1), mostly not overlapping ``existing``.

    ``avoid`` = (y0, y1, x0, x1): a rectangle centres must not fall into (used for the surround ring).
    """
    y0, y1, x0, x1 = region
    cells: list[Cell] = []
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
        cells.append(Cell(float(cy), float(cx), float(a), float(b), float(theta)))
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


def _box(pts_y, pts_x, pad) -> Box:
    """Integer box (y0, y1, x0, x1) around points plus ``pad``; not clipped (blur must see content off-canvas)."""
    y0 = int(np.floor(np.min(pts_y))) - pad
    y1 = int(np.ceil(np.max(pts_y))) + pad + 1
    x0 = int(np.floor(np.min(pts_x))) - pad
    x1 = int(np.ceil(np.max(pts_x))) + pad + 1
    return y0, y1, x0, x1


def _soma_rho(cell: Cell, yy, xx) -> np.ndarray:
    """Normalised elliptical radius (1 on the membrane) on a grid."""
    dy, dx = yy - cell.cy, xx - cell.cx
    c, s = math.cos(cell.theta), math.sin(cell.theta)
    u, v = c * dx + s * dy, -s * dx + c * dy
    return np.sqrt((u / cell.a) ** 2 + (v / cell.b) ** 2)


def cell_footprint(rng: np.random.Generator, cell: Cell, psf_sigma: float,
                   pad: int) -> tuple[np.ndarray, Box, np.ndarray]:
    """Local footprint image (soma + 1-3 tapering dendrites, PSF-blurred), its box and the soma's boolean mask.

    The soma is a soft-edged ellipse with a darker nucleus (GCaMP is cytosolic); its dendrites share its activity.
    """
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


def neurite_footprint(rng: np.random.Generator, psf_sigma: float, pad: int, region: Box,
                      avoid: Box | None = None) -> tuple[np.ndarray, Box]:
    """A thin random curve (a passing axon or dendrite) starting in ``region`` (outside ``avoid``), PSF-blurred."""
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


def neuropil_fields(rng: np.random.Generator, canvas: tuple[int, int],
                    margin: int) -> tuple[np.ndarray, np.ndarray]:
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


def footprint_matrix(feats: list[tuple[np.ndarray, Box]], canvas: tuple[int, int]) -> sparse.csr_matrix:
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


def paste(dst: np.ndarray, src: np.ndarray, box: Box, margin: int) -> None:
    """Write ``src`` (at canvas ``box``) into the field-of-view image ``dst``, clipping what falls outside."""
    y0, y1, x0, x1 = (v - margin for v in box)
    ys, xs = max(0, y0), max(0, x0)
    ye, xe = min(dst.shape[0], y1), min(dst.shape[1], x1)
    if ye > ys and xe > xs:
        dst[ys:ye, xs:xe] = src[ys - y0 : ye - y0, xs - x0 : xe - x0]
