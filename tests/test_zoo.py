"""BioImage Model Zoo packages: export validated by the zoo's own tools, import, bad inputs.

A model trained for a few steps on a tiny recording is exported once (module fixture) with the
smallest tiles the network takes (16^3), so bioimageio.core's tests stay fast.
"""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml

from napari_unet_att import zoo
from napari_unet_att.cli import main
from napari_unet_att.config import TrainConfig
from napari_unet_att.errors import CheckpointError, InputError
from napari_unet_att.model.checkpoint import load_any, save_checkpoint
from napari_unet_att.stackio import write_stack
from napari_unet_att.training.trainer import train

bioimageio_core = pytest.importorskip("bioimageio.core")
TINY = dict(patch_t=8, patch_xy=16, batch_size=2, val_every=5, val_patches=2, device="cpu")
MIN = 16


@pytest.fixture(scope="module")
def trained(tiny_sim):
    # float32: a 3-step bf16 run diverged once in a CI run (NaN at step 2, not reproduced in 12 reruns);
    # these tests are about packaging, not about training
    return train([tiny_sim.noisy], TrainConfig(mode="temporal", preset="fast", steps=3, seed=0, amp=False, **TINY))


@pytest.fixture(scope="module")
def package(trained, tiny_sim, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("zoo") / "tiny.zip"
    return zoo.export_bioimageio(trained, out, sample=tiny_sim.noisy, min_size=MIN, name="tiny test model")


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _rewrite_rdf(src: Path, dst: Path, edit) -> Path:
    """Copy a package with its rdf.yaml changed by ``edit(rdf)``."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename == "rdf.yaml":
                rdf = yaml.safe_load(data)
                edit(rdf)
                data = yaml.safe_dump(rdf).encode()
            zout.writestr(item.filename, data)
    return dst


# ----------------------------------------------------------------------------------------------
# the zoo's own checks
# ----------------------------------------------------------------------------------------------
def test_package_is_valid_spec_0_5_with_what_the_network_takes(package, trained):
    from bioimageio.spec import load_description
    from bioimageio.spec.model import v0_5

    descr = load_description(package, perform_io_checks=True)
    assert isinstance(descr, v0_5.ModelDescr), descr.validation_summary.format()
    assert descr.validation_summary.status == "valid-format"
    assert not [d for d in descr.validation_summary.details if d.errors]
    axes = descr.inputs[0].axes
    assert [a.type for a in axes] == ["batch", "channel", "time", "space", "space"]
    assert [(a.size.min, a.size.step) for a in axes[2:]] == [(MIN, 8)] * 3
    assert [a.halo for a in descr.outputs[0].axes[2:]] == [MIN // 4] * 3
    pre = {p.id: p.kwargs for p in descr.inputs[0].preprocessing}
    assert pre["fixed_zero_mean_unit_variance"].mean == pytest.approx(trained.norm.offset)
    assert pre["fixed_zero_mean_unit_variance"].std == pytest.approx(trained.norm.scale)
    post = descr.outputs[0].postprocessing[-1] if descr.outputs[0].postprocessing[-1].id == "scale_linear" else \
        next(p for p in descr.outputs[0].postprocessing if p.id == "scale_linear")
    assert (post.kwargs.gain, post.kwargs.offset) == pytest.approx((trained.norm.scale, trained.norm.offset))
    assert descr.weights.pytorch_state_dict.architecture.callable == "UNetAtt"
    assert descr.weights.pytorch_state_dict.architecture.sha256 is not None
    assert descr.weights.torchscript is not None
    assert {c.doi for c in descr.cite if c.doi} >= {"10.1038/s41592-021-01225-0"}
    assert descr.config.model_extra[zoo.CONFIG_KEY]["step"] == trained.step


@pytest.mark.parametrize("weight_format", ["pytorch_state_dict", "torchscript"])
def test_bioimageio_core_test_passes(package, weight_format):
    summary = bioimageio_core.test_model(package, weight_format=weight_format, devices=["cpu"])
    failed = [(d.name, [e.msg[:200] for e in d.errors]) for d in summary.details if d.status == "failed"]
    assert summary.status == "passed", failed
    assert any("Reproduce test outputs" in d.name for d in summary.details)


@pytest.mark.parametrize("weight_format", ["pytorch_state_dict", "torchscript"])
def test_zoo_prediction_equals_ours_on_a_recording(package, trained, tiny_sim, weight_format):
    from bioimageio.core import Sample, Tensor, create_prediction_pipeline, load_description

    rec = np.asarray(tiny_sim.noisy[:24, :32, :24])  # valid sizes (16 + n * 8), not cubic
    pp = create_prediction_pipeline(load_description(package), weight_format=weight_format, devices=["cpu"])
    sample = Sample(members={"raw": Tensor.from_numpy(rec[None, None].astype(np.float32),
                                                      dims=("batch", "channel", "time", "y", "x"))}, stat={}, id="r")
    # The network path (what `bioimageio test` compares): core's default also pads the input by the halo
    # and crops it off the output, which changes the numbers (docs/bioimageio.md).
    got = pp.predict_sample_without_blocking(sample, skip_input_padding=True, skip_output_cropping=True)
    zoo_out = got.members["denoised"].data.transpose("batch", "channel", "time", "y", "x").values[0, 0]
    ours = zoo.engine_output(trained, rec)
    assert zoo_out.shape == ours.shape == rec.shape
    assert np.abs(ours - rec).max() > 1.0  # the comparison is not between two copies of the input
    np.testing.assert_allclose(zoo_out, ours, rtol=1e-4, atol=1e-4 * trained.norm.scale)


# ----------------------------------------------------------------------------------------------
# import and CLI
# ----------------------------------------------------------------------------------------------
def test_reimported_package_denoises_identically(package, trained, tiny_sim):
    from napari_unet_att.config import InferConfig
    from napari_unet_att.inference.denoising import denoise

    back = load_any(package)
    assert (back.arch, back.base_channels, back.mode, back.step, back.norm) == \
        (trained.arch, trained.base_channels, trained.mode, trained.step, trained.norm)
    cfg = InferConfig(device="cpu", amp=False)
    np.testing.assert_array_equal(denoise(tiny_sim.noisy, back, cfg), denoise(tiny_sim.noisy, trained, cfg))


def test_cli_export_then_denoise_with_the_package(trained, tiny_sim, tmp_path, capsys):
    ckpt = save_checkpoint(tmp_path / "m.pt", trained)
    write_stack(tmp_path / "rec.tif", tiny_sim.noisy, dtype="input", input_dtype=tiny_sim.noisy.dtype)
    pkg = tmp_path / "m.zip"
    assert main(["export", str(ckpt), "--format", "bioimageio", "--out", str(pkg), "--sample",
                 str(tmp_path / "rec.tif"), "--min-tile", "16"]) == 0
    assert zipfile.is_zipfile(pkg)
    assert main(["denoise", str(tmp_path / "rec.tif"), "--model", str(pkg), "--out", str(tmp_path / "d.tif"),
                 "--float32"]) == 0
    assert (tmp_path / "d.tif").is_file()


def test_test_input_of_a_mirrored_model_is_forward_lines(tiny_denoiser):
    import dataclasses

    den = dataclasses.replace(tiny_denoiser, mode="mirrored")
    raw = np.zeros((20, 40, 20), np.float32)
    raw[:, 0::2], raw[:, 1::2] = 1.0, 2.0  # forward lines 1, backward 2
    crop = zoo.test_input(den, raw, 16)
    assert crop.shape == (16, 16, 16) and np.all(crop == 1.0)


# ----------------------------------------------------------------------------------------------
# bad inputs: one line, no partial zip
# ----------------------------------------------------------------------------------------------
def test_export_to_an_unwritable_path_is_one_line_and_leaves_nothing(trained, tmp_path, capsys):
    ckpt = save_checkpoint(tmp_path / "m.pt", trained)
    (tmp_path / "afile").write_text("x")
    before = _files(tmp_path)
    for out in (tmp_path / "missing" / "m.zip", tmp_path / "afile" / "m.zip", tmp_path / "m.pt.zip.txt"):
        assert main(["export", str(ckpt), "--out", str(out), "--min-tile", "16"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "error" in err, err
    assert _files(tmp_path) == before


def test_failed_export_leaves_no_partial_zip(trained, tmp_path, monkeypatch):
    import bioimageio.spec

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(bioimageio.spec, "save_bioimageio_package", boom)
    with pytest.raises(OSError):
        zoo.export_bioimageio(trained, tmp_path / "m.zip", min_size=MIN)
    monkeypatch.undo()
    with pytest.raises(InputError, match="test recording"):  # sample smaller than a tile
        zoo.export_bioimageio(trained, tmp_path / "m.zip", sample=np.zeros((8, 8, 8)), min_size=MIN)
    assert _files(tmp_path) == []


def test_export_refusals_are_user_errors(trained, monkeypatch, tmp_path):
    import sys

    with pytest.raises(InputError, match="multiple of 8"):
        zoo.tile_geometry("unet_att", 20)
    with pytest.raises(InputError, match="at least 16"):
        zoo.tile_geometry("unet_att", 8)
    monkeypatch.setitem(sys.modules, "bioimageio.spec", None)
    with pytest.raises(InputError, match=r"napari-unet-att\[bioimageio\]"):
        zoo.export_bioimageio(trained, tmp_path / "m.zip", min_size=MIN)
    assert _files(tmp_path) == []


def test_corrupt_package_is_refused_in_one_line(package, tmp_path, capsys):
    data = package.read_bytes()
    bad = tmp_path / "cut.zip"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_any(bad)
    assert main(["info", str(bad)]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    flipped = bytearray(data)
    with zipfile.ZipFile(package) as zf:
        info = zf.getinfo("weights.pt")
    flipped[info.header_offset + 200] ^= 0xFF  # inside the stored weights
    (tmp_path / "flip.zip").write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError):
        load_any(tmp_path / "flip.zip")


def test_package_of_another_model_is_refused_naming_it(package, tmp_path):
    def foreign(rdf):
        del rdf["config"][zoo.CONFIG_KEY]
        rdf["name"] = "SomeoneElsesUNet2D"
        rdf["weights"]["pytorch_state_dict"]["architecture"]["callable"] = "UNet2d"

    other = _rewrite_rdf(package, tmp_path / "other.zip", foreign)
    with pytest.raises(CheckpointError, match=r"SomeoneElsesUNet2D.*UNet2d.*not a napari-unet-att model"):
        load_any(other)

    def wrong_arch(rdf):
        rdf["config"][zoo.CONFIG_KEY]["arch"] = "unet3d"

    with pytest.raises(CheckpointError, match="do not match a unet3d network"):
        load_any(_rewrite_rdf(package, tmp_path / "arch.zip", wrong_arch))
    (tmp_path / "plain.zip").write_bytes(b"")
    shutil.make_archive(str(tmp_path / "notzoo"), "zip", root_dir=tmp_path, base_dir="plain.zip")
    with pytest.raises(CheckpointError, match="not a bioimage.io package"):
        load_any(tmp_path / "notzoo.zip")


def test_widget_exports_beside_save_and_loads_the_package(make_napari_viewer, trained, tmp_path, monkeypatch):
    from napari_unet_att._napari import TrainWidget

    shown = []
    monkeypatch.setattr("napari.utils.notifications.show_error", shown.append)
    w = TrainWidget(make_napari_viewer())
    assert not w.export_btn.isEnabled() and w.export_btn.parent() is w.save_btn.parent()
    assert w.export_model(tmp_path / "none.zip") is None and shown  # no model yet
    w.load_model(save_checkpoint(tmp_path / "m.pt", trained))
    assert w.export_btn.isEnabled()
    assert w.export_model(tmp_path / "missing" / "m.zip") is None and "missing" in shown[-1]
    out = w.export_model(tmp_path / "exported")
    assert out == tmp_path / "exported.zip" and out.is_file()
    assert w.load_model(out) is not None and w.denoiser.step == trained.step
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exported.zip", "m.pt"]


def test_widget_export_runs_in_a_worker_and_a_failure_leaves_nothing(make_napari_viewer, trained, tmp_path,
                                                                     monkeypatch, qtbot):
    import threading

    import bioimageio.spec

    from napari_unet_att._napari import TrainWidget

    errors, infos, threads = [], [], []
    monkeypatch.setattr("napari.utils.notifications.show_error", errors.append)
    monkeypatch.setattr("napari.utils.notifications.show_info", infos.append)
    gate, real = threading.Event(), zoo.export_bioimageio

    def held_export(den, out, sample=None, **_):
        threads.append(threading.current_thread())
        assert gate.wait(60)
        return real(den, out, sample, min_size=MIN)

    monkeypatch.setattr(zoo, "export_bioimageio", held_export)
    w = TrainWidget(make_napari_viewer())
    w.load_model(save_checkpoint(tmp_path / "m.pt", trained))
    monkeypatch.setattr("napari_unet_att._napari.model_panel.ask_save_path", lambda *a: str(tmp_path / "pkg"))
    w.export_btn.click()  # returns at once: the export waits on the gate in its worker
    assert w.models.exporting and not w.export_btn.isEnabled() and "exporting" in w.status.text()
    assert w.export_model(tmp_path / "second") is None and "already running" in errors[-1]
    gate.set()
    qtbot.waitUntil(lambda: not w.models.exporting, timeout=120_000)
    assert threads and threads[0] is not threading.main_thread()
    assert (tmp_path / "pkg.zip").is_file() and w.export_btn.isEnabled()
    assert "exported" in w.status.text() and any("pkg.zip" in str(m) for m in infos)

    def no_space(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(bioimageio.spec, "save_bioimageio_package", no_space)
    before = _files(tmp_path)
    assert w.export_model(tmp_path / "full") is None
    assert "No space left" in errors[-1] and "failed" in w.status.text()
    assert _files(tmp_path) == before and w.export_btn.isEnabled()  # no partial zip, the button is back


@pytest.fixture(scope="module")
def generalist(tiny_sim, tmp_path_factory):
    """The shipped temporal generalist (normalises every input by its own statistics) and its package."""
    from napari_unet_att.model.pretrained import load_model

    den = load_model("generalist", mode="temporal")
    assert den.provenance.get("normalization") == "input"
    out = tmp_path_factory.mktemp("zoo-gen") / "generalist.zip"
    return den, zoo.export_bioimageio(den, out, sample=tiny_sim.noisy, min_size=MIN)


def test_generalist_package_normalises_each_input_by_its_own_statistics(generalist):
    from bioimageio.spec import load_description

    den, package = generalist
    descr = load_description(package, perform_io_checks=True)
    assert descr.validation_summary.status == "valid-format", descr.validation_summary.format()
    assert descr.weights.pytorch_state_dict.architecture.callable == "UNetAttPerInput"
    assert [p.id for p in descr.inputs[0].preprocessing] == ["ensure_dtype"]  # no fixed sample statistics
    assert {p.id for p in descr.outputs[0].postprocessing} <= {"ensure_dtype"}  # the spec adds the output dtype
    back = zoo.load_package(package)  # re-imported, it still normalises by each input
    assert back.provenance.get("normalization") == "input" and back.norm == den.norm


@pytest.mark.parametrize("weight_format", ["pytorch_state_dict", "torchscript"])
def test_generalist_zoo_prediction_equals_ours_at_any_brightness(generalist, tiny_sim, weight_format):
    from bioimageio.core import Sample, Tensor, create_prediction_pipeline, load_description

    den, package = generalist
    assert bioimageio_core.test_model(package, weight_format=weight_format, devices=["cpu"]).status == "passed"
    pp = create_prediction_pipeline(load_description(package), weight_format=weight_format, devices=["cpu"])
    base = np.asarray(tiny_sim.noisy[:24, :32, :24], dtype=np.float32)
    for gain, offset in ((1.0, 0.0), (7.0, 1500.0)):  # a recording far brighter than the test sample
        rec = base * np.float32(gain) + np.float32(offset)
        sample = Sample(members={"raw": Tensor.from_numpy(rec[None, None], dims=("batch", "channel", "time", "y",
                                                                                 "x"))}, stat={}, id="r")
        got = pp.predict_sample_without_blocking(sample, skip_input_padding=True, skip_output_cropping=True)
        zoo_out = got.members["denoised"].data.transpose("batch", "channel", "time", "y", "x").values[0, 0]
        ours = zoo.engine_output(den, rec)
        assert np.abs(ours - rec).max() > 0.5 * gain  # the comparison is not between two copies of the input
        np.testing.assert_allclose(zoo_out, ours, rtol=1e-4, atol=1e-4 * float(rec.std()))


def test_citations_are_the_source_papers():
    # titles and DOIs as printed on the papers' first pages (DeepBID: PhotoniX; UNet-Att prints no DOI)
    by_doi = {c.get("doi"): c["text"] for c in zoo.CITATIONS}
    assert "Surmounting photon limits and motion artifacts" in by_doi["10.1186/s43074-023-00117-0"]
    assert "Reinforcing neuron extraction" in by_doi["10.1038/s41592-021-01225-0"]
    assert "Real-time denoising" in by_doi["10.1038/s41587-022-01450-8"]
    unet_att = next(c for c in zoo.CITATIONS if "UNet-Att" in c["text"] and "doi" not in c)
    assert "self-supervised denoising and recovery model for two-photon microscopic image" in unet_att["text"]
    assert unet_att["url"] == "https://github.com/ZjjDh/UNet-Att"
