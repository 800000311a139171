"""What a training run writes: its checkpoints, their training state and the model's provenance.

``checkpoint-last.pt`` (periodic, with the training state a resume needs) and ``model.pt`` (the
final model) go to the run's output folder; rank 0 alone writes.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..model.checkpoint import CHECKPOINT_EXT, save_checkpoint
from ..model.denoiser import Denoiser
from ..provenance import timestamp
from .schedule import Budget

FINAL_NAME = "model" + CHECKPOINT_EXT
LAST_NAME = "checkpoint-last" + CHECKPOINT_EXT


class CheckpointWriter:
    """Writes a run's checkpoints into ``out_dir`` and remembers the last periodic one.

    Parameters
    ----------
    out_dir : Path
        The run's output folder (created on the first save).
    """

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.started = time.time()
        self.last_saved_step: int | None = None  # step of the checkpoint-last.pt this run wrote

    def save(self, name: str, den: Denoiser, training_state: dict[str, Any]) -> Path:
        """Write ``den`` with ``training_state`` as ``out_dir / name``; return the path."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        # Temporary files of saves interrupted by a kill are never results: clear them.
        for stale in self.out_dir.glob(f".{name}.*.tmp"):
            if stale.stat().st_mtime < self.started:
                stale.unlink(missing_ok=True)
        path = self.out_dir / name
        save_checkpoint(path, den, training_state=training_state)
        if name == LAST_NAME:
            self.last_saved_step = int(den.step)
        return path

    def kept_note(self) -> str:
        """'; <out>/checkpoint-last.pt (step N) is kept' when this run wrote a periodic checkpoint."""
        if self.last_saved_step is None:
            return ""
        return f"; {self.out_dir / LAST_NAME} (step {self.last_saved_step}) is kept"


def weights_finite(net: torch.nn.Module) -> bool:
    """True if every parameter and buffer (BatchNorm statistics too) is finite."""
    return all(bool(torch.isfinite(t).all()) for t in net.state_dict().values() if t.is_floating_point())


def training_state(
    opt: torch.optim.Optimizer, scaler: Any, sampler_state: dict[str, Any], step: int, elapsed_s: float,
    history: dict[str, list], budget: Budget,
) -> dict[str, Any]:
    """Everything a resume needs besides the model: optimiser, RNG and data stream, clock, budget."""
    return {
        "optimizer": opt.state_dict(), "scaler": scaler.state_dict(), "sampler": sampler_state,
        "torch_rng": torch.get_rng_state(), "step": step, "elapsed_s": elapsed_s, "history": history,
        "schedule": budget.as_list(),
    }


def run_provenance(
    den: Denoiser, sources: Sequence[str], stacks: Sequence[Any], seed: int, elapsed_s: float,
    init: Any = None, parent: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The trained model's provenance: ``den``'s own, updated with this run's package, data and time."""
    prov = dict(den.provenance)
    prov.update(
        {
            "package": f"napari-unet-att {__version__}",
            "torch": torch.__version__,
            "created": timestamp(),
            "sources": [str(s) for s in sources],
            "shapes": [list(map(int, s.shape)) for s in stacks],
            "seed": int(seed),
            "train_seconds": round(float(elapsed_s), 2),
        }
    )
    if init is not None:
        prov["init"] = str(init)
        prov["parent"] = parent
    prov.setdefault("source", "napari-unet-att training")
    return prov
