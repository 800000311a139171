"""Scoring denoising: quality metrics, classical baselines, and the ground-truth two-photon simulator.

* :mod:`.metrics`: PSNR, SSIM, NRMSE, 3-D SNR, trace correlation, reference-free measures, :func:`evaluate`.
* :mod:`.baselines`: 3-D Gaussian and temporal moving mean, with oracle parameter searches.
* :mod:`.simulator`: :func:`simulate`, built from :mod:`.footprints` (where the fluorescence sits),
  :mod:`.activity` (calcium dynamics), :mod:`.motion` (rigid shifts) and :mod:`.microscope` (scanning,
  photons, noise, ADU).
"""

from .baselines import DEFAULT_SIGMAS, DEFAULT_WINDOWS, best_gaussian, best_moving_mean, gaussian3d, moving_mean
from .metrics import (
    adjacent_frame_corr,
    affine_fit,
    corr_with_mean,
    evaluate,
    extract_traces,
    frame_mean_shift_pct,
    nrmse,
    psnr,
    psnr_affine,
    psnr_frames,
    reference_range,
    snr3d,
    ssim_frames,
    trace_correlation,
)
from .motion import MOTION_KINDS
from .simulator import SimResult, simulate

__all__ = [
    "DEFAULT_SIGMAS",
    "DEFAULT_WINDOWS",
    "MOTION_KINDS",
    "SimResult",
    "adjacent_frame_corr",
    "affine_fit",
    "best_gaussian",
    "best_moving_mean",
    "corr_with_mean",
    "evaluate",
    "extract_traces",
    "frame_mean_shift_pct",
    "gaussian3d",
    "moving_mean",
    "nrmse",
    "psnr",
    "psnr_affine",
    "psnr_frames",
    "reference_range",
    "simulate",
    "snr3d",
    "ssim_frames",
    "trace_correlation",
]
