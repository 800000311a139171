"""napari sample data: two simulated recordings with ground truth and one real recording.

All files ship in ``sample_data/`` (inside the wheel, or at the repository's top level for
an editable install; :mod:`napari_unet_att.stackio.samples` finds them). They are small, so they are
read into memory: opening a sample takes well under a second.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..stackio import samples

LayerData = tuple[Any, dict[str, Any], str]
ROIS_NAME = "sim_temporal_rois.tif"  # soma labels of the temporal sample (optional file)


def _read(name: str) -> tuple[np.ndarray, Path]:
    import tifffile

    path = samples.sample_path(name)
    return tifffile.imread(path), path


def _limits(arr: np.ndarray) -> list[float]:
    """Contrast limits from robust percentiles (a few hot pixels must not make it all dark)."""
    lo, hi = np.percentile(arr[:: max(1, arr.shape[0] // 32)], [0.5, 99.8])
    return [float(lo), float(hi) if hi > lo else float(lo) + 1.0]


def _layer(name: str, layer_name: str, note: str, limits_from: np.ndarray | None = None) -> LayerData:
    data, path = _read(name)
    limits = _limits(data if limits_from is None else limits_from)
    meta = {"source_path": str(path), "sample": note}
    return data, {"name": layer_name, "metadata": meta, "contrast_limits": limits, "colormap": "gray"}, "image"


def _with_truth(noisy_name: str, clean_name: str, stem: str, note: str) -> list[LayerData]:
    noisy = _layer(noisy_name, f"{stem}_noisy", note)
    # Ground truth shown with the noisy layer's limits: the two then compare by eye.
    truth = _layer(clean_name, f"{stem}_ground_truth", note + " (noise-free ground truth)", limits_from=noisy[0])
    truth[1]["visible"] = False
    rows_noisy, rows_truth = noisy[0].shape[1], truth[0].shape[1]
    if rows_noisy == 2 * rows_truth:
        # Bidirectional: the truth has one row per scan line pair; stretch it over the raw rows.
        truth[1]["scale"] = [1.0, 2.0, 1.0]
    return [noisy, truth]


def temporal_sample() -> list[LayerData]:
    """Simulated two-photon recording (T, Y, X) with its noise-free ground truth."""
    layers = _with_truth(samples.TEMPORAL_NOISY, samples.TEMPORAL_CLEAN, "sim_temporal",
                         "simulated two-photon recording (napari_unet_att.evaluation.simulator)")
    rois = samples.sample_data_dir() / ROIS_NAME
    if rois.exists():
        import tifffile

        layers.append((tifffile.imread(rois), {"name": "sim_temporal_rois", "opacity": 0.3, "visible": False},
                       "labels"))
    return layers


def bidirectional_sample() -> list[LayerData]:
    """Simulated bidirectional-scan recording stored as (T, 2N, N), with motion, and its ground truth."""
    return _with_truth(samples.BIDIR_NOISY, samples.BIDIR_CLEAN, "sim_bidirectional",
                       "simulated bidirectional scan (T, 2N, N) with motion; train it in 'mirrored' mode")


def real_sample() -> list[LayerData]:
    """Real recording of mouse vibrissal S1 (Svoboda lab, thunder-project example data, Apache-2.0)."""
    data, kwargs, kind = _layer(samples.REAL_THUNDER, "thunder_mouse_s1",
                                "real two-photon recording, Svoboda lab via thunder-project (Apache-2.0); "
                                "see sample_data/README.md")
    return [(data, kwargs, kind)]
