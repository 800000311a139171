"""Quality measures for denoised time-lapse stacks ``(T, Y, X)``.

Conventions
-----------
* Inputs may be numpy arrays, memory maps, zarr or dask arrays of any real dtype; they are read in chunks of frames
  and converted to float64 one chunk at a time, so a long stack never needs whole float64 copies.
* Intensities are compared in the units they are given in (no normalisation): pass the denoised stack in the same
  units as the reference (:func:`psnr_affine` forgives a scale and offset).
* ``data_range`` (R) defaults to ``ref.max() - ref.min()`` over the whole reference stack, the same R for every
  frame, as in the papers.
* Layouts: a stack with exactly twice the reference's rows (the bidirectional ``(T, 2Y, X)`` layout) is compared
  with the reference's rows repeated, and with masks' rows repeated; backward lines stored x-reversed must be
  un-mirrored first.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
from skimage.metrics import structural_similarity

from ..errors import InputError
from ..modes import layout_factor

__all__ = [
    "adjacent_frame_corr",
    "affine_fit",
    "corr_with_mean",
    "evaluate",
    "extract_traces",
    "frame_mean_shift_pct",
    "nrmse",
    "psnr",
    "psnr_affine",
    "psnr_frames",
    "reference_range",
    "snr3d",
    "ssim_frames",
    "trace_correlation",
]

FRAMES_PER_CHUNK = 32


# ----------------------------------------------------------------------------------------------------------- helpers


def check_stack(x) -> None:
    """Refuse anything but a non-empty ``(T, Y, X)`` stack: :func:`~napari_unet_att.modes.layout_factor`'s check."""
    layout_factor(np.shape(x), np.shape(x))


def _chunk(a, t0: int, t1: int) -> np.ndarray:
    return np.asarray(a[t0:t1], dtype=np.float64)


def _pairs(x, ref, chunk: int = FRAMES_PER_CHUNK) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Yield ``(t0, x_chunk, ref_chunk)`` as float64, the reference in ``x``'s layout."""
    factor = layout_factor(np.shape(x), np.shape(ref))
    for t0 in range(0, x.shape[0], chunk):
        t1 = min(x.shape[0], t0 + chunk)
        r = _chunk(ref, t0, t1)
        if factor == 2:
            r = np.repeat(r, 2, axis=1)
        yield t0, _chunk(x, t0, t1), r


def _frames(x, chunk: int = FRAMES_PER_CHUNK) -> Iterator[tuple[int, np.ndarray]]:
    check_stack(x)
    for t0 in range(0, x.shape[0], chunk):
        yield t0, _chunk(x, t0, min(x.shape[0], t0 + chunk))


def reference_range(ref, data_range: float | None) -> float:
    """``data_range`` or ``ref.max() - ref.min()``; refuses a zero range (PSNR / SSIM would be undefined)."""
    if data_range is not None:
        r = float(data_range)
    else:
        lo, hi = math.inf, -math.inf
        for _, c in _frames(ref):
            lo, hi = min(lo, float(c.min())), max(hi, float(c.max()))
        r = hi - lo
    if not (np.isfinite(r) and r > 0):
        raise InputError(f"data range must be a positive finite number, got {r} (is the reference constant?)")
    return r


def _dot(a: np.ndarray, b: np.ndarray) -> float:
    """Sum of the element-wise product (BLAS, no temporary)."""
    return float(np.dot(a.ravel(), b.ravel()))


def _db(num: float, den: float) -> float:
    """``10 log10(num / den)``, +inf when ``den`` is 0."""
    if den <= 0:
        return math.inf
    return 10.0 * math.log10(num / den)


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson r of two 1-D float64 arrays; NaN if either is constant."""
    a = a - a.mean()
    b = b - b.mean()
    den = math.sqrt(float(a @ a) * float(b @ b))
    return float(a @ b) / den if den > 0 else math.nan


def _rowwise_pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson r of each row pair of two ``(n, m)`` arrays; NaN where a row is constant."""
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    den = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (a * b).sum(axis=1) / np.where(den > 0, den, 1.0), np.nan)


# ------------------------------------------------------------------------------------------------ reference metrics


def psnr(x, ref, data_range: float | None = None) -> float:
    """Peak signal-to-noise ratio over the whole stack, in dB.

    ``10 log10(R^2 / MSE)`` with MSE over all voxels in the stacks' intensity units and R = ``data_range`` or the
    reference's range. Returns ``inf`` for identical stacks.
    """
    r = reference_range(ref, data_range)
    sse, n = 0.0, 0
    for _, xc, rc in _pairs(x, ref):
        d = xc - rc
        sse += (_dot(d, d))
        n += d.size
    return _db(r * r, sse / n)


def psnr_frames(x, ref, data_range: float | None = None) -> np.ndarray:
    """PSNR of every frame (dB, float64 ``(T,)``), all with the same R (``data_range`` or the reference's range)."""
    r = reference_range(ref, data_range)
    out = np.empty(x.shape[0])
    for t0, xc, rc in _pairs(x, ref):
        mse = ((xc - rc) ** 2).reshape(len(xc), -1).mean(axis=1)
        with np.errstate(divide="ignore"):
            out[t0 : t0 + len(xc)] = np.where(mse > 0, 10 * np.log10(r * r / np.where(mse > 0, mse, 1)), np.inf)
    return out


def affine_fit(x, ref) -> tuple[float, float]:
    """Least-squares ``(a, b)`` minimising ``sum((a x + b - ref)^2)`` over the stack (``a = 0`` if ``x`` is flat)."""
    n, sx, sy = 0, 0.0, 0.0
    shift_x = shift_y = None  # shifted sums keep the fit accurate for large offsets
    sxx = sxy = 0.0
    for _, xc, rc in _pairs(x, ref):
        if shift_x is None:
            shift_x, shift_y = float(xc.mean()), float(rc.mean())
        xc = xc - shift_x
        rc = rc - shift_y
        n += xc.size
        sx += float(xc.sum())
        sy += float(rc.sum())
        sxx += (_dot(xc, xc))
        sxy += (_dot(xc, rc))
    mx, my = sx / n, sy / n
    var = sxx / n - mx * mx
    a = (sxy / n - mx * my) / var if var > 1e-300 else 0.0
    b = (my + shift_y) - a * (mx + shift_x)
    return float(a), float(b)


def psnr_affine(x, ref, data_range: float | None = None) -> float:
    """PSNR (dB) of ``a x + b`` against ``ref`` after the least-squares affine fit of :func:`affine_fit`.

    Invariant to any scale (non-zero) and offset of ``x``: use it when a method's output is not in the reference's
    intensity units. R = ``data_range`` or the reference's range.
    """
    r = reference_range(ref, data_range)
    a, b = affine_fit(x, ref)
    sse, n = 0.0, 0
    for _, xc, rc in _pairs(x, ref):
        d = a * xc + b - rc
        sse += (_dot(d, d))
        n += d.size
    return _db(r * r, sse / n)


def _ssim_kwargs(shape_yx: tuple[int, int]) -> dict:
    """Wang et al. 2004 settings (11-tap Gaussian, sigma 1.5) when frames allow, else the largest odd uniform window."""
    side = min(shape_yx)
    if side >= 11:
        return {"gaussian_weights": True, "sigma": 1.5, "use_sample_covariance": False}
    win = side if side % 2 == 1 else side - 1
    if win < 3:
        raise InputError(f"frames of {shape_yx[0]} x {shape_yx[1]} px are too small for SSIM (need at least 3 x 3)")
    return {"win_size": win}


def ssim_frames(x, ref, data_range: float | None = None) -> np.ndarray:
    """Structural similarity of every 2-D frame (float64 ``(T,)``, 1 = identical).

    skimage's ``structural_similarity`` on each (Y, X) frame (never with X as a channel axis), with one explicit
    ``data_range`` R for all frames (default: the reference's range over the whole stack).
    """
    r = reference_range(ref, data_range)
    out = np.empty(x.shape[0])
    kw = None
    for t0, xc, rc in _pairs(x, ref):
        if kw is None:
            kw = _ssim_kwargs(xc.shape[1:])
        for i in range(len(xc)):
            out[t0 + i] = structural_similarity(xc[i], rc[i], data_range=r, **kw)
    return out


def nrmse(x, ref, normalization: str = "euclidean") -> float:
    """Normalised root-mean-square error (unitless), as skimage's ``normalized_root_mse``.

    ``normalization``: ``'euclidean'`` -> RMSE / sqrt(mean(ref^2)); ``'min-max'`` -> RMSE / (ref.max() - ref.min());
    ``'mean'`` -> RMSE / mean(ref).
    """
    if normalization not in ("euclidean", "min-max", "mean"):
        raise InputError(f"normalization must be 'euclidean', 'min-max' or 'mean', got {normalization!r}")
    sse = ss_ref = s_ref = 0.0
    n = 0
    lo, hi = math.inf, -math.inf
    for _, xc, rc in _pairs(x, ref):
        d = xc - rc
        sse += (_dot(d, d))
        ss_ref += (_dot(rc, rc))
        s_ref += float(rc.sum())
        lo, hi = min(lo, float(rc.min())), max(hi, float(rc.max()))
        n += d.size
    rmse = math.sqrt(sse / n)
    den = {"euclidean": math.sqrt(ss_ref / n), "min-max": hi - lo, "mean": s_ref / n}[normalization]
    return rmse / den if den != 0 else (0.0 if rmse == 0 else math.inf)


def snr3d(x, ref) -> float:
    """DeepBID's 3-D SNR in dB: ``20 log10(RSS(ref) / RSS(x - ref))``, RSS = root of the sum of squares.

    In absolute intensity units, so a constant offset in both stacks raises it; ``inf`` for identical stacks.
    """
    ss_ref = sse = 0.0
    for _, xc, rc in _pairs(x, ref):
        d = xc - rc
        sse += (_dot(d, d))
        ss_ref += (_dot(rc, rc))
    return _db(ss_ref, sse)  # 20 log10(sqrt(a)/sqrt(b)) = 10 log10(a/b)


# -------------------------------------------------------------------------------------------------------- traces


def _mask_matrix(masks, shape_yx: tuple[int, int]) -> np.ndarray:
    """``(n_rois, Y*X)`` float64 weights (1 / area inside each ROI) from a labels image or a boolean stack."""
    m = np.asarray(masks)
    if m.ndim == 2:
        labels = np.unique(m)
        labels = labels[labels != 0]
        stack = m[None] == labels[:, None, None]
    elif m.ndim == 3:
        stack = m.astype(bool)
    else:
        raise InputError(f"masks must be a (Y, X) labels image or an (n_rois, Y, X) boolean stack, got shape {m.shape}")
    if stack.shape[1:] != tuple(shape_yx):
        if stack.shape[1] * 2 == shape_yx[0] and stack.shape[2] == shape_yx[1]:
            stack = np.repeat(stack, 2, axis=1)  # physical masks on a bidirectional stack
        else:
            raise InputError(f"masks cover {stack.shape[1:]} pixels but the frames are {tuple(shape_yx)}")
    if len(stack) == 0:
        raise InputError("masks hold no ROI (no non-zero label / empty stack)")
    area = stack.reshape(len(stack), -1).sum(axis=1)
    if (area == 0).any():
        raise InputError(f"ROIs {np.flatnonzero(area == 0).tolist()} are empty")
    return stack.reshape(len(stack), -1) / area[:, None].astype(np.float64)


def extract_traces(x, masks) -> np.ndarray:
    """Mean intensity inside every ROI in every frame: float64 ``(n_rois, T)`` in ``x``'s units.

    ``masks``: a labels image ``(Y, X)`` (0 = background, ROIs in increasing label order) or a boolean stack
    ``(n_rois, Y, X)``.
    """
    check_stack(x)
    w = _mask_matrix(masks, tuple(x.shape[1:]))
    out = np.empty((len(w), x.shape[0]))
    for t0, c in _frames(x):
        out[:, t0 : t0 + len(c)] = w @ c.reshape(len(c), -1).T
    return out


def frame_mean_shift_pct(x, inp) -> float:
    """Largest change of a frame's mean from the input frame's mean, in % of the latter (no fitting)."""
    m_in = np.asarray(inp).mean(axis=(1, 2), dtype=np.float64)
    m_out = np.asarray(x).mean(axis=(1, 2), dtype=np.float64)
    return float(100.0 * np.max(np.abs(m_out - m_in) / np.maximum(np.abs(m_in), 1e-9)))


def trace_correlation(x, ref, masks) -> np.ndarray:
    """Pearson r between the ROI traces of ``x`` and ``ref`` (float64 ``(n_rois,)``, NaN for a constant trace).

    ``ref`` may be a ``(T, Y, X)`` stack or ready-made traces ``(n_rois, T)``.
    """
    tx = extract_traces(x, masks)
    ref_arr = np.asarray(ref) if getattr(ref, "ndim", 0) == 2 else None
    tr = ref_arr.astype(np.float64) if ref_arr is not None else extract_traces(ref, masks)
    if tr.shape != tx.shape:
        raise InputError(f"reference traces have shape {tr.shape}, expected {tx.shape}")
    return _rowwise_pearson(tx, tr)


# ---------------------------------------------------------------------------------------------- reference-free


def _temporal_mean(x) -> np.ndarray:
    total = None
    for _, c in _frames(x):
        s = c.sum(axis=0)
        total = s if total is None else total + s
    return total / x.shape[0]


def corr_with_mean(x) -> np.ndarray:
    """Pearson r of every frame with the temporal mean image (float64 ``(T,)``; reference-free, unitless).

    Denoising raises it (noise is uncorrelated with the mean); so does over-smoothing in time, so read it together
    with :func:`adjacent_frame_corr` or a reference metric.
    """
    m = _temporal_mean(x).ravel()
    m = m - m.mean()
    out = np.empty(x.shape[0])
    for t0, c in _frames(x):
        out[t0 : t0 + len(c)] = _rowwise_pearson(c.reshape(len(c), -1), np.broadcast_to(m, (len(c), m.size)))
    return out


def adjacent_frame_corr(x) -> np.ndarray:
    """Pearson r of every frame with the next one (float64 ``(T - 1,)``; reference-free, unitless)."""
    check_stack(x)
    out = np.empty(max(0, x.shape[0] - 1))
    prev = None
    for t0, c in _frames(x):
        flat = c.reshape(len(c), -1)
        seq = flat if prev is None else np.concatenate([prev[None], flat])
        start = t0 if prev is None else t0 - 1
        if len(seq) > 1:
            out[start : start + len(seq) - 1] = _rowwise_pearson(seq[:-1], seq[1:])
        prev = flat[-1]
    return out


# ------------------------------------------------------------------------------------------------------ evaluate


def _finite_or_none(v: float) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else None


def _list(a: np.ndarray) -> list:
    return [_finite_or_none(v) for v in np.asarray(a, dtype=np.float64).ravel()]


def _nanmean(a: np.ndarray) -> float:
    a = np.asarray(a, dtype=np.float64)
    a = a[np.isfinite(a)] if a.size else a
    return float(a.mean()) if a.size else math.nan


def _measure(x, reference, masks, data_range, with_ssim: bool) -> dict:
    per_frame = {"corr_with_mean": corr_with_mean(x), "adjacent_frame_corr": adjacent_frame_corr(x)}
    scalars: dict[str, float] = {}
    per_roi: dict[str, np.ndarray] = {}
    if reference is not None:
        per_frame["psnr"] = psnr_frames(x, reference, data_range)
        scalars["psnr"] = psnr(x, reference, data_range)
        scalars["psnr_affine"] = psnr_affine(x, reference, data_range)
        scalars["nrmse"] = nrmse(x, reference)
        scalars["snr3d"] = snr3d(x, reference)
        if with_ssim:
            per_frame["ssim"] = ssim_frames(x, reference, data_range)
        if masks is not None:
            per_roi["trace_correlation"] = trace_correlation(x, reference, masks)
    for k, v in per_frame.items():
        if k != "psnr":  # the mean of per-frame PSNR is not the stack PSNR; the stack value is reported
            scalars[k] = _nanmean(v)
    for k, v in per_roi.items():
        scalars[k] = _nanmean(v)
    out: dict = {k: _finite_or_none(v) for k, v in scalars.items()}
    out["per_frame"] = {k: _list(v) for k, v in per_frame.items()}
    out["per_roi"] = {k: _list(v) for k, v in per_roi.items()}
    return out


def evaluate(denoised, reference=None, raw=None, masks=None, *, rois=None, data_range: float | None = None,
             ssim: bool = True) -> dict:
    """All applicable metrics for a denoised stack (and the raw one), as a JSON-serialisable dict.

    Parameters
    ----------
    denoised : (T, Y, X) array
        The stack to judge.
    reference : (T, Y, X) array, optional
        Ground truth in the same units; enables PSNR (dB), affine PSNR (dB), SSIM, NRMSE, 3-D SNR (dB) and, with
        ``masks``, trace correlation.
    raw : array, optional
        The noisy input, measured the same way so a UI can plot raw against denoised.
    masks, rois : optional
        ROIs as a labels image ``(Y, X)`` or a boolean stack ``(n, Y, X)`` (``rois`` is an alias).
    data_range : float, optional
        R for PSNR / SSIM (default: the reference's range).
    ssim : bool
        Compute per-frame SSIM (the slowest metric on long stacks).

    Returns
    -------
    dict
        ``{"shape", "data_range", "denoised": {...}, "raw": {...}, "improvement": {...}}``. Each of ``denoised`` /
        ``raw`` holds scalar means (``psnr``, ``psnr_affine``, ``ssim``, ``nrmse``, ``snr3d``,
        ``trace_correlation``, ``corr_with_mean``, ``adjacent_frame_corr`` as applicable), ``per_frame`` lists
        (``psnr``, ``ssim``, ``corr_with_mean``, ``adjacent_frame_corr`` of length T - 1) and ``per_roi`` lists.
        ``improvement`` = denoised minus raw for each shared scalar. Non-finite values (identical stacks,
        constant traces) are ``None``, so ``json.dumps(..., allow_nan=False)`` works.
    """
    if masks is None:
        masks = rois
    check_stack(denoised)
    if reference is not None:
        layout_factor(np.shape(denoised), np.shape(reference))
        data_range = reference_range(reference, data_range)
    result: dict = {"shape": [int(s) for s in denoised.shape],
                    "data_range": None if data_range is None else float(data_range)}
    result["denoised"] = _measure(denoised, reference, masks, data_range, ssim)
    if raw is not None:
        check_stack(raw)
        if raw.shape[0] != denoised.shape[0]:
            raise InputError(f"raw has {raw.shape[0]} frames but the denoised stack has {denoised.shape[0]}")
        result["raw"] = _measure(raw, reference, masks, data_range, ssim)
        result["improvement"] = {
            k: (v - result["raw"][k] if v is not None and result["raw"].get(k) is not None else None)
            for k, v in result["denoised"].items()
            if k not in ("per_frame", "per_roi") and k in result["raw"]
        }
    return result
