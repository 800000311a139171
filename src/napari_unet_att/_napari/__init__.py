"""The napari side of the plugin: the two docks, the Layers menu command and what they share.

Everything here is Qt / napari code over the engine: the reader, writer and sample data
(``reader``, ``writer``, ``sample_data``), remembered settings (``settings``), the docks
(``train_dock``, ``denoise_dock``) built on ``dock`` (base behaviour), ``form`` (each form as
one field table), ``model_panel`` (the viewer's current model, Load / Save / Export),
``layers``, ``plots`` (one palette), ``workers``, ``layout`` and ``dialogs``.
"""

from __future__ import annotations

from typing import Any

from napari.viewer import Viewer

from .denoise_dock import DenoiseWidget
from .layers import LayerCombo, layer_stack
from .layout import MIN_DOCK_HEIGHT
from .model_panel import MODELS, ModelStore, unproxy
from .train_dock import TrainWidget
from .workers import worker_busy

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


__all__ = ["MIN_DOCK_HEIGHT", "MODELS", "DenoiseWidget", "LayerCombo", "ModelStore", "TrainWidget",
           "denoise_selected_layer", "layer_stack", "unproxy", "worker_busy"]
