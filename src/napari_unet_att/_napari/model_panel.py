"""The viewer's current model: the store both docks share, and the Load / Save / Export panel.

A model trained in the training dock or loaded in either dock becomes the viewer's current
model (:data:`MODELS`); both docks and the Layers menu command read it, so a model trained
in one dock is applied in the other without saving it first.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

from psygnal import Signal
from qtpy.QtWidgets import QHBoxLayout, QLabel, QPushButton, QWidget

from ..errors import InputError, UserError
from .dialogs import ask_open_path, ask_save_path, report_error
from .layers import layer_stack
from .workers import run_function, stop_worker, worker_busy

CHECKPOINT_FILTER = "Checkpoints (*.pt *.pth *.tar);;All files (*)"
EXPORT_TIP = ("Write the model as a bioimage.io package (.zip) that deepImageJ, ilastik, QuPath and "
              "bioimageio.core can run; needs napari-unet-att[bioimageio]")


def unproxy(viewer: Any) -> Any:
    """The real viewer behind napari's PublicOnlyProxy (menu commands receive a proxy)."""
    return getattr(viewer, "__wrapped__", viewer)


class ModelStore:
    """The current model of each viewer, keyed weakly by viewer: closing a viewer frees its model."""

    changed = Signal(object)  # emits the viewer whose model changed

    def __init__(self) -> None:
        self._models: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def get(self, viewer: Any) -> tuple[Any, str] | None:
        """``(denoiser, origin)`` or None."""
        return self._models.get(unproxy(viewer))

    def set(self, viewer: Any, denoiser: Any, origin: str) -> None:
        self._models[unproxy(viewer)] = (denoiser, origin)
        self.changed.emit(unproxy(viewer))

    def forget(self, viewer: Any) -> None:
        """Drop the viewer's model (the docks keep showing the last one until a new one is set)."""
        self._models.pop(unproxy(viewer), None)


MODELS = ModelStore()


def describe(entry: tuple[Any, str]) -> str:
    """A store entry as the docks show it: where the model came from and what it is."""
    den, origin = entry
    return f"Model ({origin}): {den.describe()}"


class ModelPanel:
    """Load / Save / Export buttons of a dock, working on the viewer's current model.

    Parameters
    ----------
    owner : QWidget
        The dock: parent of the file dialogs; its ``load_model`` / ``save_model`` /
        ``export_model`` methods are what the buttons call.
    status : QLabel
        Where saving and exporting report.
    model : callable
        Returns the model to save or export (None when there is none).
    sample_layer : callable, optional
        Returns the layer an exported package's test input is cut from.
    files : bool
        Also Save and Export (both disabled until there is a model).
    """

    def __init__(self, owner: QWidget, status: QLabel, model: Callable[[], Any],
                 sample_layer: Callable[[], Any] | None = None, files: bool = True) -> None:
        self.owner, self.status, self.model, self.sample_layer = owner, status, model, sample_layer
        self.row = QHBoxLayout()
        self.load_btn = QPushButton("Load model…")
        self.load_btn.clicked.connect(self._ask_load)
        self.row.addWidget(self.load_btn)
        self.save_btn = self.export_btn = None
        self.export_worker: Any = None  # the export in progress, run off the GUI thread
        self._exported: Path | None = None
        if files:
            self.save_btn = QPushButton("Save model…")
            self.save_btn.clicked.connect(self._ask_save)
            self.export_btn = QPushButton("Export to BioImage Model Zoo…")
            self.export_btn.setToolTip(EXPORT_TIP)
            self.export_btn.clicked.connect(self._ask_export)
            for button in (self.save_btn, self.export_btn):
                button.setEnabled(False)
                self.row.addWidget(button)

    def enable_files(self, on: bool) -> None:
        """Enable or disable Save and Export (Export stays disabled while an export runs)."""
        if self.save_btn is not None:
            self.save_btn.setEnabled(on)
        if self.export_btn is not None:
            self.export_btn.setEnabled(on and not self.exporting)

    @property
    def exporting(self) -> bool:
        """True while an export runs in its worker."""
        return worker_busy(self.export_worker)

    def load(self, viewer: Any, path: str | Path) -> Any:
        """Load a checkpoint (ours or a reference tool's) as ``viewer``'s current model; None on failure."""
        from ..model.checkpoint import load_any

        try:
            den = load_any(path)
        except UserError as exc:
            report_error(exc, "loading the model")
            return None
        MODELS.set(viewer, den, f"loaded from {Path(path).name}")
        return den

    def save(self, path: str | Path) -> Path | None:
        """Save the model (atomic; ``.pt`` appended when missing)."""
        from ..model.checkpoint import CHECKPOINT_EXT, save_checkpoint

        den = self.model()
        if den is None:
            report_error(InputError("no model to save: train one or load a checkpoint first"), "saving")
            return None
        out = _with_suffix(path, CHECKPOINT_EXT)
        try:
            save_checkpoint(out, den)
        except (UserError, OSError) as exc:
            report_error(exc, "saving the model")
            return None
        self.status.setText(f"model saved to {out}")
        return out

    def export(self, path: str | Path, wait: bool = True, timeout_s: float = 3600.0) -> Path | None:
        """Export the model as a BioImage Model Zoo package in a worker (atomic; ``.zip`` appended when missing).

        The Export button is disabled until the worker ends; the status line and a notification
        say how it ended. The test input is cut from the sample layer when it is large enough,
        else from the shipped sample recording (see :func:`napari_unet_att.zoo.export_bioimageio`).

        Parameters
        ----------
        wait : bool
            Wait for the export (processing Qt events) and return its result; the button does
            not wait, and the GUI stays responsive.

        Returns
        -------
        Path or None
            The package, once written (``wait``); None when it failed, there is no model, an
            export is already running, or without ``wait``.
        """
        from .. import zoo

        den = self.model()
        if den is None:
            report_error(InputError("no model to export: train one or load a checkpoint first"), "exporting")
            return None
        if self.exporting:
            report_error(InputError("an export is already running; wait for it to finish"), "exporting")
            return None
        out = _with_suffix(path, ".zip")
        sample = export_sample(self.sample_layer() if self.sample_layer else None)
        self._exported = None
        if self.export_btn is not None:
            self.export_btn.setEnabled(False)
        self.status.setText(f"exporting to {out} …")
        self.export_worker = run_function(zoo.export_bioimageio, den, out, sample, returned=self._on_exported,
                                          errored=self._on_export_error, finished=self._on_export_finished)
        if not wait:
            return None
        stop_worker(self.export_worker, timeout_s)
        return self._exported

    def _on_exported(self, out: Path) -> None:
        from napari.utils.notifications import show_info

        self._exported = Path(out)
        self.status.setText(f"model exported to {out}")
        show_info(f"model exported to {out}")

    def _on_export_error(self, exc: BaseException) -> None:
        # export_bioimageio writes atomically: a failed export leaves no (partial) zip behind
        report_error(exc, "exporting the model")
        self.status.setText(f"export failed: {exc}")

    def _on_export_finished(self) -> None:
        if self.export_btn is not None:  # Export follows Save, which the dock keeps in step with its runs
            self.export_btn.setEnabled(self.save_btn is not None and self.save_btn.isEnabled())

    # The dialogs are looked up here at each click (tests answer them by patching this module).
    def _ask_load(self) -> None:
        path = ask_open_path(self.owner, "Load model", CHECKPOINT_FILTER)
        if path:
            self.owner.load_model(path)

    def _ask_save(self) -> None:
        path = ask_save_path(self.owner, "Save model", "Checkpoints (*.pt)")
        if path:
            self.owner.save_model(path)

    def _ask_export(self) -> None:
        path = ask_save_path(self.owner, "Export to BioImage Model Zoo", "bioimage.io packages (*.zip)")
        if path:
            self.owner.export_model(path, wait=False)


def _with_suffix(path: str | Path, suffix: str) -> Path:
    """``path`` with ``suffix`` appended unless it ends so already (case-insensitive for .zip)."""
    out = Path(path)
    ends = out.suffix.lower() == suffix if suffix == ".zip" else out.suffix == suffix
    return out if ends else out.with_name(out.name + suffix)


def export_sample(layer: Any) -> Any:
    """``layer``'s stack when every axis holds a smallest tile, else None (the shipped sample is used)."""
    from ..zoo import DEFAULT_MIN_SIZE

    if layer is None:
        return None
    try:
        stack = layer_stack(layer)
    except UserError:
        return None
    shape = getattr(stack, "shape", ())
    return stack if len(shape) == 3 and min(shape) >= DEFAULT_MIN_SIZE else None
