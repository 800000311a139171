"""The docks' words in the engine's refusals: the controls a user can change, never CLI options.

The names are the training dock's labels and check box texts (``tests/test_plugin_widgets.py``
checks that each one is on the form).
"""

from __future__ import annotations

from ..wording import Wording

#: The load button and check box that start a new run from a checkpoint's weights.
LOAD_BUTTON = "Load model…"
FROM_LOADED = "'start from the loaded model's weights'"

#: The training dock's words for the trainer's refusals to resume a run.
TRAIN_DOCK_WORDING = Wording(
    resume="Resume",
    init=FROM_LOADED,
    start_from_weights=f"load it with {LOAD_BUTTON}, clear Resume and tick {FROM_LOADED}",
    names={
        "mode": "Mode", "preset": "Preset", "patch_t": "Patch t", "patch_xy": "Patch y/x", "batch_size": "Batch size",
        "lr": "Learning rate", "seed": "Seed", "device": "Device", "swap": "'swap input / target (p = 0.5)'",
        "augment": "'random flips / rotations'", "flip_backward": "'backward lines stored x-mirrored (mirrored mode)'",
        "val_every": "Validate every (steps)", "preview_every": "Preview every (steps)",
    },
    assign=" ",
    leave_out=("set it back to the run's value", "set them back to the run's values"),
)

__all__ = ["TRAIN_DOCK_WORDING"]
