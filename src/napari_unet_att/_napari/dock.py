"""What both docks share: viewer, form and settings, the run controls, one worker run at a time, closing."""

from __future__ import annotations

import threading
from typing import Any

from qtpy.QtWidgets import QHBoxLayout, QProgressBar, QPushButton, QVBoxLayout, QWidget

from . import settings as _settings
from .dialogs import warn_unless_closing
from .form import Form
from .layers import LayerCombo
from .layout import DockTabsMixin, wrap_label
from .model_panel import MODELS, unproxy
from .workers import TaskProgress, run_generator, stop_worker, worker_busy


def device_choices() -> list[str]:
    """The device combo's entries: "auto", then the devices torch sees."""
    from ..runtime.device import available_devices

    return ["auto", *available_devices()]


class BaseDock(DockTabsMixin, QWidget):
    """A dock of ours: a :class:`~.form.Form`, remembered settings, one engine run in a worker.

    Subclasses set ``SETTINGS_KEY`` and ``REMOVED_NOTE``, make their layer combos, build their
    form and controls, then call :meth:`_follow_viewer`.

    Parameters
    ----------
    napari_viewer : napari.Viewer
    """

    SETTINGS_KEY = ""
    #: What the dock's run does when its input layer is removed, for the warning.
    REMOVED_NOTE = ""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.worker: Any = None
        self.form = Form(self)
        self._cancel = threading.Event()
        self._run_layer: Any = None  # the layer the current run reads
        self._pbar = TaskProgress()

    def _follow_viewer(self) -> None:
        """Restore the settings and follow the viewer (its layers, its current model, our closing)."""
        self.form.restore(_settings.load_settings(self.SETTINGS_KEY))
        self.viewer.layers.events.removed.connect(self._on_layer_removed)
        MODELS.changed.connect(self._on_models_changed)
        holder = self  # the lambda runs when Qt has deleted the widget; only Python state is touched
        self.destroyed.connect(lambda *_: holder._on_destroyed())

    def layer_combos(self) -> list[LayerCombo]:
        """The dock's layer choices (refreshed when napari asks)."""
        return [v for v in vars(self).values() if isinstance(v, LayerCombo)]

    # -- controls ------------------------------------------------------------------------
    def _add_run_controls(self, lay: QVBoxLayout, go: tuple[str, str], stop: tuple[str, str]) -> None:
        """Start and stop buttons (``(attribute, text)`` each), a progress bar and a status line."""
        buttons = QHBoxLayout()
        for (name, text), enabled in ((go, True), (stop, False)):
            button = QPushButton(text)
            button.setEnabled(enabled)
            setattr(self, name, button)
            buttons.addWidget(button)
        lay.addLayout(buttons)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setTextVisible(False)
        self.status = wrap_label()
        lay.addWidget(self.progress)
        lay.addWidget(self.status)

    def settings(self) -> dict[str, Any]:
        """The dock's current choices (what is remembered between sessions)."""
        return self.form.values()

    def _save_settings(self) -> None:
        _settings.save_settings(self.SETTINGS_KEY, self.settings())

    # -- one run -------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return worker_busy(self.worker)

    def _launch(self, gen: Any, layer: Any, total: int, desc: str) -> Any:
        """Drain the engine generator ``gen`` reading ``layer`` in a worker, with a napari progress bar."""
        self._save_settings()
        self._run_layer = layer
        self._cancel = threading.Event()
        self._set_running(True)
        self._pbar.open(total, desc)
        self.worker = run_generator(gen, self._cancel, self._on_event, self._on_returned, self._on_error,
                                    self._on_finished)
        return self.worker

    def _set_running(self, running: bool) -> None:
        raise NotImplementedError

    def _on_event(self, ev: Any) -> None:
        raise NotImplementedError

    def _on_returned(self, result: Any) -> None:
        raise NotImplementedError

    def _on_error(self, exc: BaseException) -> None:
        raise NotImplementedError

    def _on_finished(self) -> None:
        self._pbar.close()
        self._set_running(False)
        self._run_layer = None

    def _end_run(self) -> None:
        """Ask the engine to end the run (the dock's Stop or Cancel)."""
        raise NotImplementedError

    def _on_destroyed(self) -> None:
        """The Qt side is gone (the dock was closed): end the run touching Python state only."""
        self._cancel.set()

    def _workers(self) -> tuple[Any, ...]:
        return (self.worker,)

    def shutdown(self, timeout_s: float = 30.0) -> bool:
        """End any run and wait for the workers (dock or viewer closing). Returns True when all stopped."""
        self._end_run()
        ok = all([stop_worker(w, timeout_s) for w in self._workers() if worker_busy(w)])
        self._pbar.close()
        return ok

    def _on_layer_removed(self, event: Any) -> None:
        if worker_busy(self.worker) and event.value is self._run_layer:
            self._end_run()
            warn_unless_closing(self.viewer, f"layer {event.value.name!r} was removed: {self.REMOVED_NOTE}")

    def _on_models_changed(self, viewer: Any) -> None:
        if viewer is unproxy(self.viewer):
            self._on_model_changed(MODELS.get(viewer))

    def _on_model_changed(self, entry: tuple[Any, str] | None) -> None:
        raise NotImplementedError

    # -- napari hooks --------------------------------------------------------------------
    def reset_choices(self, *_: Any) -> None:
        """Called by napari when layers change (our combos also follow the viewer by themselves)."""
        for combo in self.layer_combos():
            combo.refresh()

    def closeEvent(self, event: Any) -> None:  # noqa: N802 - Qt naming
        self._save_settings()
        self.shutdown()
        super().closeEvent(event)
