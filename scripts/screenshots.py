"""Screenshots of the plugin for the docs (a real napari window; run under Xvfb on a server).

Usage::

    xvfb-run -a -s "-screen 0 1920x1200x24" python scripts/screenshots.py [--train-steps 30]

Opens the simulated temporal sample, docks both widgets, trains briefly (or, by default,
loads ``sample_data/temporal_fast.pt`` when it exists), denoises, evaluates against the
ground truth with the sample's ROIs, and saves whole-window PNGs to ``docs/images/``.
The docks start from their defaults: settings remembered on this machine are not read.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "images"
PLUGIN = "napari-unet-att"


def _wait(widget_busy, timeout_s: float = 900.0) -> None:
    from qtpy.QtWidgets import QApplication

    t0 = time.monotonic()
    while widget_busy() and time.monotonic() - t0 < timeout_s:
        QApplication.processEvents()
        time.sleep(0.02)


def _raise(viewer, name: str) -> None:
    """Bring a tabbed dock to the front (private napari API: screenshots only)."""
    for key, dock in viewer.window._dock_widgets.items():
        if key.startswith(name):
            dock.raise_()


def _grab(viewer, name: str) -> Path:
    from qtpy.QtWidgets import QApplication

    for _ in range(20):  # let docks lay out and the canvas paint
        QApplication.processEvents()
        time.sleep(0.02)
    path = OUT / name
    viewer.window._qt_window.grab().save(str(path))
    print(f"wrote {path.relative_to(ROOT)}")
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train-steps", type=int, default=40, help="steps of the live training shown")
    ap.add_argument("--no-checkpoint", action="store_true", help="denoise with the briefly trained model")
    args = ap.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    # the docks' defaults, not this machine's remembered settings (a stale patch size once showed)
    os.environ["NAPARI_UNET_ATT_CONFIG_DIR"] = tempfile.mkdtemp(prefix="unet-att-screenshots-")

    import napari

    from napari_unet_att._napari import model_panel as _common
    from napari_unet_att.stackio import samples

    viewer = napari.Viewer(title="napari-unet-att", show=True)
    viewer.window._qt_window.resize(1600, 1000)
    viewer.open_sample(PLUGIN, "temporal")
    raw = viewer.layers["sim_temporal_noisy"]
    _, train = viewer.window.add_plugin_dock_widget(PLUGIN, "Train denoiser")
    viewer.dims.set_current_step(0, 150)

    # 1. training, live loss and preview (the denoise dock is added afterwards, as a tab)
    train.layer.value = raw
    train.mode.setCurrentText("temporal")
    train.preset.setCurrentText("fast")
    train.budget_unit.setCurrentText("steps")
    train.budget.setValue(args.train_steps)
    train.val_every.setValue(10)
    train.preview_every.setValue(10)
    train.device.setCurrentText("auto")
    train.start()
    _wait(lambda: train.running)
    _grab(viewer, "train_widget.png")
    _, den = viewer.window.add_plugin_dock_widget(PLUGIN, "Denoise and evaluate", tabify=True)

    # 2. denoise (with the shipped model when there is one: it shows a converged result)
    ckpt = samples.sample_data_dir() / samples.TEMPORAL_MODEL
    if ckpt.exists() and not args.no_checkpoint:
        den.load_model(ckpt)
    _raise(viewer, "Denoise and evaluate")
    den.layer.value = raw
    den.denoise()
    _wait(lambda: den.running)
    out = viewer.layers["sim_temporal_noisy_denoised"]
    out.contrast_limits = raw.contrast_limits
    truth = viewer.layers["sim_temporal_ground_truth"]
    truth.visible = True
    viewer.dims.set_current_step(0, 150)
    # Grid slots follow the layer order: raw | denoised | truth, the other layers after them
    # (hidden, so the slots they wrap onto stay clean).
    for i, layer in enumerate((raw, out, truth)):
        viewer.layers.move(viewer.layers.index(layer), i)
    for layer in viewer.layers:
        layer.visible = layer in (raw, out, truth)
    viewer.grid.enabled = True
    viewer.grid.shape = (1, 3)
    viewer.reset_view()
    _grab(viewer, "denoise_grid.png")

    # 3. evaluate against the ground truth, with the sample's ROIs
    den.eval_denoised.value = out
    den.eval_raw.value = raw
    den.eval_reference.value = truth
    if "sim_temporal_rois" in viewer.layers:
        den.eval_rois.value = viewer.layers["sim_temporal_rois"]
    den.push_plots.setChecked(False)  # the default: plots in the dock, the viewer keeps the data
    den.evaluate()
    _wait(lambda: den.running)
    viewer.reset_view()
    _grab(viewer, "evaluate.png")

    # 4. the plots as layers too: placed beside the denoised data, which stays in view
    viewer.grid.enabled = False
    for layer in viewer.layers:
        layer.visible = layer is out
    den.push_plots.setChecked(True)
    den.evaluate()
    _wait(lambda: den.running)
    viewer.reset_view()
    _grab(viewer, "metrics_layer.png")
    print("model:", _common.MODELS.get(viewer)[1])
    viewer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
