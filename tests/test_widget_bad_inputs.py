"""Every case of the bad-input corpus (tests/_bad_inputs.py) that a widget can meet, driven as a user would.

Inputs are opened with the plugin reader (File > Open) and, where the data can be a layer,
also added as an in-memory layer; then the dock's buttons are pressed. Each refusal must
give a notification that names the problem and what is expected, leave the viewer as it
was (no new layer, no model replaced), the buttons enabled, no worker running, and no file
(not even a temporary) in the output folder. Supported variants must add a finite result.

With ``UNET_ATT_WIDGET_REPORT=file.jsonl`` each passing case appends what the user saw to
that file (``scripts/robustness_report.py`` builds the widget column of docs/robustness.md
from it).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import _bad_inputs as bi
from napari_unet_att._napari import model_panel as C
from napari_unet_att.errors import UserError

PLUGIN = "napari-unet-att"
TRAIN, DENOISE = "Train denoiser", "Denoise and evaluate"
WAIT_MS = 60_000
REPORT_ENV = "UNET_ATT_WIDGET_REPORT"


# ----------------------------------------------------------------------------------------------
# fixtures and helpers
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    return bi.write_inputs(tmp_path_factory.mktemp("inputs"))


@pytest.fixture(scope="module")
def gui(qapp) -> tuple[Any, dict[str, Any]]:
    """One viewer with both docks for the whole module (a viewer per case would take minutes);
    :func:`_reset` returns it to a fresh state before each case."""
    import napari

    viewer = napari.Viewer(show=False)
    docks = {name: viewer.window.add_plugin_dock_widget(PLUGIN, name)[1] for name in (TRAIN, DENOISE)}
    yield viewer, docks
    for w in docks.values():
        w.shutdown()
    viewer.close()


def _reset(viewer: Any, docks: dict[str, Any]) -> None:
    """No layers, no model, empty file fields: as a user would find freshly opened docks."""
    viewer.layers.clear()
    C.MODELS.forget(viewer)
    train, den = docks[TRAIN], docks[DENOISE]
    train.denoiser, train._loaded_path = None, None
    for field_ in (train.resume, train.checkpoint_dir, den.out_path):
        field_.setText("")
    train.init_from_loaded.setChecked(False)
    train.save_btn.setEnabled(False)
    den.stream.setChecked(False)


@dataclass
class Ctx:
    """What a driver needs, and what it saw."""

    case: bi.Case
    viewer: Any
    docks: dict[str, Any]
    qtbot: Any
    files: dict[str, Path]
    out: Path
    notes: list[tuple[str, str]]
    monkeypatch: Any
    messages: list[str] = field(default_factory=list)  # what the user was told, per attempt
    kept: list[str] = field(default_factory=list)  # files in ``out`` that were there before

    def path(self, key: str) -> Path:
        return self.files[key]

    def layer_names(self) -> list[str]:
        return [layer.name for layer in self.viewer.layers]

    def dock(self, name: str) -> Any:
        return self.docks[name]

    def wait(self, widget: Any) -> None:
        self.qtbot.waitUntil(lambda: not widget.running, timeout=WAIT_MS)

    def fault(self) -> None:
        if self.case.fault:
            bi.install_fault(self.case.fault, self.monkeypatch.setattr, self.out)

    def error_shown(self, since: int) -> str:
        """The one error notification sent since ``len(notes) == since``."""
        errors = [text for level, text in self.notes[since:] if level == "error"]
        assert len(errors) == 1, self.notes[since:]
        self.messages.append(errors[0])
        return errors[0]


def _expect(message: str, case: bi.Case) -> None:
    for fragment in case.expected:
        assert fragment.lower() in message.lower(), (fragment, message)


def _click_with_file(ctx: Ctx, button: Any, path: Path, ask: str = "ask_open_path") -> None:
    """Press a button that opens a file dialog; the dialog answers ``path``."""
    ctx.monkeypatch.setattr(C, ask, lambda *a, **k: str(path))
    button.click()


def _open(ctx: Ctx, path: Path) -> Any:
    """File > Open through the plugin reader; returns the new layer."""
    [layer] = ctx.viewer.open(str(path), plugin=PLUGIN)
    return layer


#: Cases whose in-memory variant would only rerun the same worker on the same values (the
#: values, not the layer, are what is checked): tried through the reader only, to keep this fast.
FILE_ONLY = {"nan", "inf", "const_train", "const", "int8", "int32", "float64"}


def _array_layer(ctx: Ctx, stem: str) -> Any | None:
    """The same input as an in-memory layer (None when napari cannot hold it, or not needed)."""
    arrays = bi.make_arrays()
    if stem not in arrays or ctx.case.id in FILE_ONLY:
        return None
    return ctx.viewer.add_image(arrays[stem][0], name=f"{stem}_array")


def _denoise_dock(ctx: Ctx) -> Any:
    w = ctx.dock(DENOISE)
    w.device.setCurrentText("cpu")
    _click_with_file(ctx, w.load_btn, ctx.path("model"))
    assert w.denoiser is not None
    return w


# ----------------------------------------------------------------------------------------------
# drivers: one per way a widget meets a case (bi.WIDGET_PATHS)
# ----------------------------------------------------------------------------------------------
def drive_denoise(ctx: Ctx) -> None:
    """Open the input (file, then array), press Denoise."""
    w = _denoise_dock(ctx)
    src = ctx.case.input_path(ctx.files, ctx.out)
    layers = [_open(ctx, src)]
    if ctx.case.id == "rgb_channel":  # follow the refusal's hint: split the colours, take channel 1
        from napari.layers.utils.stack_utils import stack_to_images

        layers = [ctx.viewer.add_layer(stack_to_images(layers[0], axis=-1)[1])]
    elif (arr := _array_layer(ctx, src.stem)) is not None:
        layers.append(arr)
    for layer in layers:
        before, since = ctx.layer_names(), len(ctx.notes)
        w.layer.value = layer
        w.denoise_btn.click()
        ctx.wait(w)
        assert w.denoise_btn.isEnabled() and not w.cancel_btn.isEnabled()
        if ctx.case.ok:
            added = ctx.layer_names()[len(before):]
            assert added == [f"{layer.name}_denoised"], added
            result = np.asarray(ctx.viewer.layers[added[0]].data)
            assert result.shape[0] >= 3 and np.isfinite(result.astype(np.float64)).all()
            ctx.messages.append(f"(works: layer {added[0]!r} added)")
        else:
            _expect(ctx.error_shown(since), ctx.case)
            assert ctx.layer_names() == before  # no output layer


def drive_train(ctx: Ctx) -> None:
    """Open the input (file, then array), choose mode and patch, press Start."""
    w = ctx.dock(TRAIN)
    case, files, out = ctx.case, ctx.files, ctx.out
    w.mode.setCurrentText(case.option("--mode", files, out) or "temporal")
    w.patch_t.setValue(int(case.option("--patch-t", files, out)))
    w.patch_xy.setValue(int(case.option("--patch-xy", files, out)))
    w.budget.setValue(1)
    w.budget_unit.setCurrentText("steps")
    w.preview_every.setValue(1)
    w.device.setCurrentText("cpu")
    w.checkpoint_dir.setText(str(out / "run"))
    src = case.input_path(files, out)
    layers = [_open(ctx, src)]
    if (arr := _array_layer(ctx, src.stem)) is not None:
        layers.append(arr)
    for layer in layers:
        w.layer.value = layer
        shape_problem = not w.update_check()
        if shape_problem:  # shown in the dock before anything starts
            assert w.check_label.text().startswith("✗")
            _expect(w.check_label.text(), case)
        before, since = ctx.layer_names(), len(ctx.notes)
        w.start_btn.click()
        ctx.wait(w)
        _expect(ctx.error_shown(since), case)
        assert w.start_btn.isEnabled() and not w.stop_btn.isEnabled() and not w.save_btn.isEnabled()
        assert ctx.layer_names() == before  # no preview layer
        assert C.MODELS.get(ctx.viewer) is None and w.denoiser is None


def drive_open(ctx: Ctx) -> None:
    """File > Open with the plugin reader must refuse with the engine's message."""
    before = ctx.layer_names()
    with pytest.raises(UserError) as exc:
        ctx.viewer.open(str(ctx.case.input_path(ctx.files, ctx.out)), plugin=PLUGIN)
    ctx.messages.append(str(exc.value))
    _expect(str(exc.value), ctx.case)
    assert ctx.layer_names() == before


def drive_load(ctx: Ctx) -> None:
    """Load model… in both docks: refused, and the current model stays."""
    path = ctx.case.model_path(ctx.files, ctx.out)
    den_w = _denoise_dock(ctx)
    train_w = ctx.dock(TRAIN)
    model = C.MODELS.get(ctx.viewer)
    labels = (den_w.model_label.text(), train_w.model_label.text())
    for w in (den_w, train_w):
        since = len(ctx.notes)
        _click_with_file(ctx, w.load_btn, path)
        _expect(ctx.error_shown(since), ctx.case)
        assert path.name in ctx.messages[-1]
        assert w.load_btn.isEnabled()
    assert C.MODELS.get(ctx.viewer) == model  # the model in use is kept
    assert (den_w.model_label.text(), train_w.model_label.text()) == labels
    assert not bi.hostile_marker(ctx.files).exists()


def drive_resume(ctx: Ctx) -> None:
    """Training dock: Advanced > Resume from a bad checkpoint, press Start."""
    w = ctx.dock(TRAIN)
    w.budget.setValue(1)
    w.budget_unit.setCurrentText("steps")
    w.patch_t.setValue(4)
    w.patch_xy.setValue(16)
    w.device.setCurrentText("cpu")
    w.checkpoint_dir.setText(str(ctx.out / "run"))
    w.resume.setText(str(ctx.case.model_path(ctx.files, ctx.out)))
    w.layer.value = _open(ctx, ctx.path("good"))
    before, since = ctx.layer_names(), len(ctx.notes)
    w.start_btn.click()
    ctx.wait(w)
    _expect(ctx.error_shown(since), ctx.case)
    assert w.start_btn.isEnabled() and not w.stop_btn.isEnabled()
    assert ctx.layer_names() == before and C.MODELS.get(ctx.viewer) is None
    assert not bi.hostile_marker(ctx.files).exists()


def drive_stream(ctx: Ctx) -> None:
    """Denoise dock: stream the result to the case's output file, press Denoise."""
    w = _denoise_dock(ctx)
    w.layer.value = _open(ctx, ctx.path("good"))
    target = ctx.case.out_path(ctx.files, ctx.out)
    old = None
    if ctx.case.fault == "disk_full_midway":  # an earlier result at the target must survive
        import tifffile

        old = np.arange(12 * 16 * 16, dtype=np.float32).reshape(12, 16, 16)
        tifffile.imwrite(target, old)
        ctx.kept = [target.name]
    protected = {p: p.read_bytes() for p in (ctx.path("good"), ctx.path("blocker"))}
    w.stream.setChecked(True)
    w.out_path.setText(str(target))
    ctx.fault()
    before, since = ctx.layer_names(), len(ctx.notes)
    w.denoise_btn.click()
    ctx.wait(w)
    _expect(ctx.error_shown(since), ctx.case)
    assert w.denoise_btn.isEnabled() and not w.cancel_btn.isEnabled()
    assert ctx.layer_names() == before
    assert all(p.read_bytes() == data for p, data in protected.items())
    if old is not None:
        import tifffile

        np.testing.assert_array_equal(tifffile.imread(target), old)


def drive_save_layer(ctx: Ctx) -> None:
    """File > Save Selected Layer(s) with the plugin writer."""
    ctx.viewer.add_image(bi.make_arrays()["good"][0], name="result")
    target = ctx.out / ("missing_folder/result.tif" if ctx.case.id == "save_missing_folder" else "result.tif")
    ctx.fault()
    with pytest.raises(UserError) as exc:
        ctx.viewer.layers.save(str(target), selected=True, plugin=PLUGIN)
    ctx.messages.append(str(exc.value))
    _expect(str(exc.value), ctx.case)


def drive_save_model(ctx: Ctx) -> None:
    """Training dock: Save model… while the disk fills up."""
    w = ctx.dock(TRAIN)
    _click_with_file(ctx, w.load_btn, ctx.path("model"))
    assert w.save_btn.isEnabled()
    ctx.fault()
    since = len(ctx.notes)
    _click_with_file(ctx, w.save_btn, ctx.out / "model.pt", ask="ask_save_path")
    _expect(ctx.error_shown(since), ctx.case)
    assert w.save_btn.isEnabled() and w.load_btn.isEnabled()


DRIVERS = {"denoise": drive_denoise, "train": drive_train, "open": drive_open, "load": drive_load,
           "resume": drive_resume, "stream": drive_stream, "save_layer": drive_save_layer,
           "save_model": drive_save_model}


def _record(ctx: Ctx) -> None:
    path = os.environ.get(REPORT_ENV)
    if not path:
        return
    def short(msg: str) -> str:  # relative paths, as in the CLI rows of the report
        return msg.replace(str(ctx.files["good"].parent), "in").replace(str(ctx.out), "out")

    row = {"id": ctx.case.id, "path": ctx.case.widget, "messages": [short(m) for m in ctx.messages]}
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(row) + "\n")


# ----------------------------------------------------------------------------------------------
# the tests
# ----------------------------------------------------------------------------------------------
def test_every_widget_path_is_driven():
    assert set(DRIVERS) == set(bi.WIDGET_PATHS)
    assert {c.widget for c in bi.cases(widget=True)} == set(DRIVERS)


@pytest.mark.parametrize("case", bi.cases(widget=True), ids=lambda c: c.id)
def test_widget_case(case, files, tmp_path, gui, qtbot, notes, monkeypatch):
    viewer, docks = gui
    _reset(viewer, docks)
    out = tmp_path / "out"
    out.mkdir()
    ctx = Ctx(case, viewer, docks, qtbot, files, out, notes, monkeypatch)
    inputs_before = bi.outputs(files["good"].parent)
    DRIVERS[case.widget](ctx)
    assert ctx.messages, "the driver saw nothing"
    assert bi.outputs(out) == ctx.kept  # no partial output, no temporary, no empty run folder
    assert bi.outputs(files["good"].parent) == inputs_before
    assert not any(w.running for w in docks.values())  # no worker left behind
    _record(ctx)


def test_layer_messages_name_the_layer_and_say_how_to_split(gui):
    """The engine's message is kept, with the layer's name and napari's way to pick a channel."""
    viewer, docks = gui
    _reset(viewer, docks)
    rgb = viewer.add_image(bi.make_arrays()["rgb"][0], name="colour movie", rgb=True)
    with pytest.raises(UserError) as exc:
        C.layer_stack(rgb)
    msg = str(exc.value)
    assert msg.startswith("layer 'colour movie': found shape (4, 16, 16, 3)") and "Split RGB" in msg
    assert "Split Stack" not in msg  # napari shows Split Stack only for layers that are not RGB
    with pytest.raises(UserError, match="no image layer selected"):
        C.layer_stack(None)
    assert C.layer_stack(viewer.add_image(bi.make_arrays()["int8"][0])).dtype == np.int16  # exact, as the CLI


def test_the_channel_hint_names_what_napari_can_split(gui):
    """napari's Split Stack splits the first axis: offered only where the channels are; elsewhere (time first,
    as in (T, C, Y, X)) it would give one layer per frame, so the hint takes the channel in the console, and
    what it says to type gives a layer the dock accepts."""
    viewer, docks = gui
    _reset(viewer, docks)
    tcyx = np.arange(6 * 2 * 16 * 16, dtype=np.uint16).reshape(6, 2, 16, 16)
    movie = viewer.add_image(tcyx, name="two colours")
    with pytest.raises(UserError) as exc:
        C.layer_stack(movie)
    msg = str(exc.value)
    assert "2 channels" in msg and "Split Stack splits the first axis only" in msg and "axis 1" in msg
    typed = "viewer.add_image(viewer.layers['two colours'].data[:, 0])"
    assert typed in msg
    added = eval(typed, {"viewer": viewer})  # what the user is told to type in napari's console
    np.testing.assert_array_equal(np.asarray(C.layer_stack(added)), tcyx[:, 0])

    ctyx = viewer.add_image(np.moveaxis(tcyx, 1, 0), name="channels first")
    with pytest.raises(UserError) as exc:
        C.layer_stack(ctyx, "CTYX")
    assert "choose Split Stack (it splits the first axis, here the channels)" in str(exc.value)


def test_reader_keeps_viewable_tiffs_and_notes_why(files, gui):
    """A TIFF refused only for its layout (2D, channels, bool) still opens, for viewing."""
    viewer, docks = gui
    _reset(viewer, docks)
    for key in ("image2d", "channels2", "bool"):
        [layer] = viewer.open(str(files[key]), plugin=PLUGIN)
        assert layer.metadata["unet_att_note"].startswith(f"file {files[key].name}: found shape")


def test_runtime_errors_reach_the_user_and_free_the_dock(gui, qtbot, notes, monkeypatch, tiny_denoiser):
    """napari's generator worker swallows RuntimeErrors (ResourceError, torch errors) without
    finishing: the docks must still report them and become usable again."""
    from napari_unet_att.inference import denoising as infer

    viewer, docks = gui
    _reset(viewer, docks)
    w = docks[DENOISE]
    C.MODELS.set(viewer, tiny_denoiser, "test model")

    def boom(*a, **k):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")
        yield  # a generator, like the engine's

    monkeypatch.setattr(infer, "iter_denoise", boom)
    w.layer.value = viewer.add_image(bi.make_arrays()["good"][0], name="movie")
    w.denoise_btn.click()
    qtbot.waitUntil(lambda: not w.running, timeout=WAIT_MS)
    assert [t for lvl, t in notes if lvl == "error"] == [
        "denoising failed: RuntimeError: CUDA error: an illegal memory access was encountered"]
    assert w.denoise_btn.isEnabled() and [layer.name for layer in viewer.layers] == ["movie"]
