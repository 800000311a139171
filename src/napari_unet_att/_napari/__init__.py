"""The napari dock widgets and the Layers menu command (thin views over the engine)."""

from __future__ import annotations

from typing import Any

from napari.viewer import Viewer

from .denoise_dock import DenoiseWidget
from .train_dock import TrainWidget

PLUGIN = "napari-unet-att"
DENOISE_DOCK = "Denoise and evaluate"


def denoise_selected_layer(viewer: Viewer) -> Any:
    """Layers > Filter > Denoise with UNet-Att: denoise the selected image layer with the current model.

    napari injects ``viewer`` from the type hint. Opens (or reuses) the denoise dock so
    progress, cancel and the model in use are visible, and starts denoising the active layer
    there. Returns the worker, or None.
    """
    import napari
    from napari.utils.notifications import show_error

    layer = viewer.layers.selection.active
    if not isinstance(layer, napari.layers.Image):
        show_error("select an image layer to denoise (Layers > Filter > Denoise with UNet-Att)")
        return None
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, DENOISE_DOCK)
    return widget.denoise(layer)

__all__ = ["DenoiseWidget", "TrainWidget", "denoise_selected_layer"]
