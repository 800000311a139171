"""How a front end names, in the engine's refusals, the settings and actions the user can change.

The engine says what is wrong; where to act depends on who shows the message. The command line
names its options (``--patch-t``), the training dock its controls (Patch t), the Python API its
arguments (``patch_t=``). Each front end hands its :class:`Wording` to the code that may refuse a
request in those terms (resuming a training run: :class:`~napari_unet_att.training.Trainer`), so
no front end shows the others' spelling. Nothing here imports torch: the docks use it too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


def _same(name: str) -> str:
    return name


@dataclass(frozen=True)
class Wording:
    """One front end's words for the settings and the ways to start training from a checkpoint.

    Parameters
    ----------
    resume : str
        What continues a run from its checkpoint (``--resume``).
    init : str
        What starts a new run from a checkpoint's weights (``--init``).
    start_from_weights : str
        The instruction to start a new run from a checkpoint's weights; the messages go on with
        " instead" (e.g. "start a new run from its weights with --init").
    names : mapping of str to str
        How settings (:class:`~napari_unet_att.config.TrainConfig` fields) are named, where
        ``name_style`` would name them wrongly.
    name_style : callable
        Names every other setting (``patch_t`` -> ``--patch-t``).
    assign : str
        Between a setting's name and its value (``--mode 'temporal'``, ``mode='temporal'``).
    leave_out : (str, str)
        How to stop asking for one setting, and for several, that a resumed run fixes otherwise.
    """

    resume: str
    init: str
    start_from_weights: str
    names: Mapping[str, str] = field(default_factory=dict)
    name_style: Callable[[str], str] = _same
    assign: str = "="
    leave_out: tuple[str, str] = ("leave this setting out", "leave these settings out")

    def setting(self, name: str) -> str:
        """How this front end names the setting ``name`` (a TrainConfig field)."""
        return self.names.get(name) or self.name_style(name)

    def request(self, name: str, value: Any) -> str:
        """A setting as asked for: ``--patch-xy 16``, ``patch_xy=16``, ``Patch y/x 16``."""
        return f"{self.setting(name)}{self.assign}{value!r}"


#: The engine's own words: the Python API's argument names (the default where no front end says).
PYTHON_WORDING = Wording(resume="resume", init="init",
                         start_from_weights="pass it as init to start a new run from its weights")

__all__ = ["PYTHON_WORDING", "Wording"]
