"""Layers in and out of the docks: combos that follow the viewer, a layer as a stack, ROIs, result layers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from magicgui.widgets import ComboBox, Select
from qtpy.QtWidgets import QWidget

from ..errors import ChannelChoiceError, InputError, LayoutError, UserError
from .form import TEXT, Field

NONE_CHOICE = "(none)"
#: Both docks' "Axes" field (the CLI's ``--axes``): for layers whose shape misleads the guess, e.g. an
#: ImageJ file that calls its frames channels, or a stack stored time-last (Y, X, T).
AXES_FIELD = Field("axes", TEXT, "Axes", text="auto (from the shape), or e.g. CTYX, YXT", default="",
                   tip="when the layer's shape misleads: one letter per axis of the layer from T (time), Z, C, S, "
                   "Y, X, e.g. CTYX for a (1, 100, Y, X) layer whose frames are labelled channels, YXT for a "
                   "stack stored time-last; empty: guessed from the shape. Applies to every layer the dock reads.")
#: The layer events a :class:`LayerCombo` follows.
_LAYER_EVENTS = ("inserted", "removed", "reordered", "renamed")


class LayerCombo:
    """A combo box listing the viewer's layers of some types, kept in sync with the viewer.

    It follows layers being added, removed, reordered and renamed.

    Parameters
    ----------
    viewer : napari.Viewer
    layer_types : tuple of type
        Accepted layer classes (e.g. ``(napari.layers.Image,)``).
    label : str
    optional : bool
        Adds a ``(none)`` entry, whose value is ``None``.
    multiple : bool
        A list in which several layers can be selected (its value is then a list).
    exclude : callable, optional
        Layers it accepts are not offered.
    """

    def __init__(self, viewer: Any, layer_types: tuple[type, ...], label: str = "", optional: bool = False,
                 multiple: bool = False, exclude: Any = None) -> None:
        self.viewer = viewer
        self.layer_types = layer_types
        self.optional = optional
        self.multiple = multiple
        self.exclude = exclude
        if multiple:
            self.combo = Select(label=label, choices=self._choices, allow_multiple=True, value=[])
            self.combo.native.setMaximumHeight(90)  # a few rows; it scrolls beyond
        else:
            self.combo = ComboBox(label=label, choices=self._choices, nullable=False)
        events = viewer.layers.events
        self._followed = [getattr(events, name, None) for name in _LAYER_EVENTS]
        for emitter in self._followed:
            if emitter is not None:
                emitter.connect(self.refresh)

    def _choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        found = [(layer.name, layer) for layer in self.viewer.layers
                 if isinstance(layer, self.layer_types) and not (self.exclude and self.exclude(layer))]
        return [(NONE_CHOICE, None), *found] if self.optional else found

    def refresh(self, _event: Any = None) -> None:
        """List the viewer's layers again, keeping the user's choice where it still exists."""
        current = self.combo.value
        self.combo.reset_choices()
        present = [v for _, v in self._choices()]
        if self.multiple:
            self.combo.value = [v for v in current if any(v is p for p in present)]
        elif current is not None and current in present:
            self.combo.value = current

    def disconnect(self) -> None:
        """Stop following the viewer (the widget is being closed)."""
        for emitter in self._followed:
            if emitter is not None:
                emitter.disconnect(self.refresh)

    @property
    def value(self) -> Any:
        return self.combo.value

    @value.setter
    def value(self, layer: Any) -> None:
        self.refresh()
        self.combo.value = layer

    @property
    def native(self) -> QWidget:
        return self.combo.native

    @property
    def changed(self) -> Any:
        return self.combo.changed


def user_axes(text: str | None) -> str | None:
    """The Axes field's letters, or None for "auto" (empty, or the word auto)."""
    text = (text or "").strip()
    return None if text.lower() in ("", "auto") else text


def layer_stack(layer: Any, axes: str | None = None) -> Any:
    """A layer's data as a ``(T, Y, X)`` stack, validated by :func:`napari_unet_att.stackio.as_timelapse`.

    The data stay lazy (memory map / dask). The engine's message is kept; it names the layer
    instead of "array", where it asks for a channel it says how to get one in napari
    (:func:`channel_hint`), and where the guessed axes may be wrong it names the dock's Axes field.

    Parameters
    ----------
    layer : napari.layers.Image or None
    axes : str, optional
        The Axes field: one letter per axis of the layer (see :func:`napari_unet_att.stackio.check_axes`);
        empty or "auto": guessed from the shape.

    Raises
    ------
    InputError
        No layer, a multiscale layer, axes that do not fit the layer, or data that are not a
        single-channel time-lapse.
    """
    from ..stackio import as_timelapse

    if layer is None:
        raise InputError("no image layer selected: open a time-lapse first (File > Open or drag a TIFF in)")
    if getattr(layer, "multiscale", False):
        raise InputError(f"layer {layer.name!r} is multiscale; a single-resolution (T, Y, X) layer is needed")
    letters = user_axes(axes)
    try:
        return as_timelapse(layer.data, axes=letters)
    except LayoutError as exc:
        msg = f"layer {layer.name!r}: {exc.detail}"
        if isinstance(exc, ChannelChoiceError):
            msg = f"{msg}. {channel_hint(layer, exc.axis)}"
        hint = _axes_hint(layer) if letters is None else None
        if hint:
            msg = f"{msg.rstrip('.')}. {hint}"
        raise InputError(msg) from None


def channel_hint(layer: Any, axis: int | None) -> str:
    """How to make one channel of ``layer`` a layer of its own with what napari offers.

    The docks have no channel selector. napari's layer context menu has Split RGB for an RGB(A)
    layer (its last axis) and, for any other image, Split Stack, which always splits the first
    axis: right when the channels are there, wrong when it is time, as in (T, C, Y, X) data
    (it would give one layer per frame). For channels on another axis napari's console can take one.

    Parameters
    ----------
    layer : napari.layers.Image
    axis : int or None
        The channel (or RGB sample) axis of ``layer.data``, from
        :class:`~napari_unet_att.errors.ChannelChoiceError`; None if unknown.
    """
    last = len(layer.data.shape) - 1
    if getattr(layer, "rgb", False) and axis in (None, last):
        return "Right-click the layer, choose Split RGB, then select one of the new layers."
    if axis == 0:
        return ("Right-click the layer, choose Split Stack (it splits the first axis, here the channels), then "
                "select one of the new layers.")
    if axis is None:
        return "Make one channel a layer of its own first (napari's Split Stack splits the first axis only)."
    index = ", ".join([":"] * axis + ["0"])
    return (f"napari's Split Stack splits the first axis only, not the channels (axis {axis}): in napari's console "
            f"(the >_ button) type viewer.add_image(viewer.layers[{layer.name!r}].data[{index}]) for channel 0, then "
            "select the new layer.")


def _axes_hint(layer: Any) -> str | None:
    """How the Axes field may fix a refused layer whose longest non-image axis is not the first one
    (the guess takes the first as time): an ImageJ file that calls its frames channels or slices.

    None for layers the guess may well have read right: under 4 axes, RGB, not intensities, or
    time already on the first axis.
    """
    shape, dtype = tuple(layer.data.shape), np.dtype(layer.data.dtype)
    if len(shape) < 4 or shape[-1] <= 4 or getattr(layer, "rgb", False) or dtype.kind not in "iuf":
        return None
    lead = len(shape) - 2
    t = max(range(lead), key=lambda i: shape[i])
    if t == 0:
        return None
    others = iter("CZS")
    example = "".join("T" if i == t else next(others) for i in range(lead)) + "YX"
    return (f"If its {shape[t]} frames are labelled channels or slices, set Axes to {example!r} (one letter per "
            "axis, T for time).")


def roi_masks(layer: Any, shape_yx: tuple[int, ...]) -> np.ndarray:
    """ROIs of a Labels or Shapes layer as a ``(Y, X)`` labels image for the metrics.

    A (T, Y, X) labels layer is collapsed over time (the largest label wins where ROIs were
    drawn on different frames); shapes drawn on a (T, Y, X) image keep only their (y, x)
    outline, so one ROI applies to every frame.
    """
    import napari.layers

    shape_yx = tuple(int(n) for n in shape_yx)
    if isinstance(layer, napari.layers.Labels):
        data = np.asarray(layer.data)
        return data.max(axis=tuple(range(data.ndim - 2))) if data.ndim > 2 else data
    if isinstance(layer, napari.layers.Shapes):
        if len(layer.data) == 0:
            raise InputError(f"shapes layer {layer.name!r} holds no shape: draw ROIs around cells first")
        flat = napari.layers.Shapes([np.asarray(s)[:, -2:] for s in layer.data], shape_type=list(layer.shape_type))
        masks = flat.to_masks(mask_shape=shape_yx)
        labels = np.zeros(shape_yx, dtype=np.int32)
        for i, m in enumerate(masks, start=1):
            labels[m.astype(bool) & (labels == 0)] = i
        return labels
    raise InputError(f"layer {getattr(layer, 'name', layer)!r} is neither a Labels nor a Shapes layer")


def source_path(layer: Any) -> Path | None:
    """The TIFF file behind a layer (napari's layer source or our reader's metadata), if any."""
    path = getattr(getattr(layer, "source", None), "path", None) or layer.metadata.get("source_path")
    if path and Path(path).suffix.lower() in (".tif", ".tiff") and Path(path).is_file():
        return Path(path)
    return None


def streamable_source(layer: Any, stack: Any) -> Path | None:
    """The layer's TIFF when reading it again gives the layer's own stack, else None.

    A file whose header mislabels its axes (frames called channels or slices) is shown by our
    reader as it is stored, and the layer works as a time-lapse; the file itself would be
    refused when read again, so such a layer streams from its array instead. A stack the
    dock's Axes field reordered can have the file's shape (Y = X = T): one frame of each is compared.
    """
    from ..stackio import read_stack

    src = source_path(layer)
    if src is None:
        return None
    try:
        again = read_stack(src, lazy=True)
        same = tuple(again.shape) == tuple(stack.shape) and np.array_equal(np.asarray(again[0]), np.asarray(stack[0]))
    except UserError:
        return None
    return src if same else None


def put_image(viewer: Any, name: str, data: Any, **kwargs: Any) -> Any:
    """Give the image layer ``name`` new data in place when their shape is unchanged, else (re)add it.

    Returns the layer; ``kwargs`` go to ``add_image`` when a layer is added.
    """
    existing = viewer.layers[name] if name in viewer.layers else None
    if existing is not None and existing.data.shape == data.shape:
        existing.data = data
        return existing
    if existing is not None:
        viewer.layers.remove(existing)
    return viewer.add_image(data, name=name, **kwargs)
