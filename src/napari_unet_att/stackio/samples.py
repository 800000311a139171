"""Where the shipped sample data live (installed wheel or source checkout); no napari here."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from ..errors import InputError

# File names in sample_data/ (written by scripts/make_sample_data.py).
TEMPORAL_NOISY = "sim_temporal_noisy.tif"
TEMPORAL_CLEAN = "sim_temporal_clean.tif"
BIDIR_NOISY = "sim_bidirectional_noisy.tif"
BIDIR_CLEAN = "sim_bidirectional_clean.tif"
REAL_THUNDER = "thunder_mouse_svoboda_500x64x64.tif"
TEMPORAL_MODEL = "temporal_fast.pt"
ROIS = "sim_temporal_rois.tif"  # soma labels (Y, X) of the temporal sample


def sample_data_dir() -> Path:
    """The ``sample_data`` folder: inside the installed package, else the repository's top level."""
    pkg = Path(str(resources.files("napari_unet_att"))) / "sample_data"
    if pkg.is_dir():
        return pkg
    repo = Path(__file__).resolve().parents[3] / "sample_data"
    if repo.is_dir():
        return repo
    raise InputError("the sample data are missing from this installation (no sample_data folder found)")


def sample_path(name: str) -> Path:
    """Path of one sample file, with a clear error if it is missing."""
    path = sample_data_dir() / name
    if not path.exists():
        raise InputError(f"sample file {name!r} is missing from {path.parent}")
    return path
