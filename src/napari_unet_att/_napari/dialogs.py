"""What the docks tell and ask the user: file dialogs, error and warning notifications."""

from __future__ import annotations

import logging
import traceback
from typing import Any

from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QFileDialog, QWidget

from ..errors import UserError
from .workers import WorkerFailure

log = logging.getLogger("napari_unet_att")


def ask_save_path(parent: QWidget, title: str, filt: str) -> str:
    """A file name to write ("" when the user cancels)."""
    path, _ = QFileDialog.getSaveFileName(parent, title, "", filt)
    return path


def ask_open_path(parent: QWidget, title: str, filt: str) -> str:
    """An existing file to read ("" when the user cancels)."""
    path, _ = QFileDialog.getOpenFileName(parent, title, "", filt)
    return path


def ask_dir(parent: QWidget, title: str) -> str:
    """A folder ("" when the user cancels)."""
    return QFileDialog.getExistingDirectory(parent, title)


def report_error(exc: BaseException, what: str) -> None:
    """Show an error in napari: a :class:`UserError` message as is, anything else with its type.

    Unexpected errors are also logged with their traceback (they are bugs).
    """
    from napari.utils.notifications import show_error

    if isinstance(exc, WorkerFailure):
        exc = exc.original
    if isinstance(exc, UserError):
        show_error(str(exc))
    else:
        log.error("%s failed:\n%s", what, "".join(traceback.format_exception(exc)))
        show_error(f"{what} failed: {type(exc).__name__}: {exc}")


def warn_unless_closing(viewer: Any, message: str) -> None:
    """Show a warning after the current event, unless the viewer was closed meanwhile.

    ``Viewer.close()`` removes every layer before closing its window: a "layer removed"
    warning then describes the close, not something the user did. napari has no public
    "closing" signal; its window drops ``_qt_window`` when closed, which is checked here.
    """
    from napari.utils.notifications import show_warning

    def show() -> None:
        if hasattr(getattr(viewer, "window", None), "_qt_window"):
            show_warning(message)

    QTimer.singleShot(0, show)
