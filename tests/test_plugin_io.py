"""Plugin manifest, reader, writer, sample data and settings."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import tifffile

from napari_unet_att._napari import sample_data as _sample_data
from napari_unet_att._napari import settings as _settings
from napari_unet_att._napari.reader import napari_get_reader
from napari_unet_att._napari.writer import write_tiff
from napari_unet_att.stackio import TiffArray

ROOT = Path(__file__).resolve().parents[1]


def test_manifest_is_valid_and_contributes_everything():
    from npe2 import PluginManifest

    pm = PluginManifest.from_file(ROOT / "napari.yaml")
    c = pm.contributions
    assert {w.display_name for w in c.widgets} == {"Train denoiser", "Denoise and evaluate"}
    assert {s.key for s in c.sample_data} == {"temporal", "bidirectional", "thunder_mouse"}
    assert [m.command for m in c.menus["napari/layers/filter"]] == ["napari-unet-att.denoise_selected"]
    # every command's python_name resolves
    for cmd in c.commands:
        mod, _, attr = cmd.python_name.partition(":")
        assert callable(getattr(__import__(mod, fromlist=[attr]), attr)), cmd.python_name
    # the package-level manifest is the same file (symlink for editable installs)
    assert (ROOT / "src/napari_unet_att/napari.yaml").resolve() == (ROOT / "napari.yaml").resolve()


def test_reader_opens_tiff_lazily(tmp_path, tiny_sim):
    path = tmp_path / "movie.tif"
    tifffile.imwrite(path, tiny_sim.noisy)
    reader = napari_get_reader(str(path))
    assert reader is not None
    assert napari_get_reader(str(tmp_path / "movie.png")) is None
    [(data, kwargs, kind)] = reader(str(path))
    assert kind == "image" and kwargs["name"] == "movie"
    assert isinstance(data, TiffArray) or type(data).__module__.startswith("dask")  # not read into RAM
    np.testing.assert_array_equal(np.asarray(data), tiny_sim.noisy)
    assert kwargs["metadata"]["source_path"] == str(path)


def test_reader_shows_unsupported_tiff_as_is(tmp_path, rng):
    path = tmp_path / "two_channels.tif"
    tifffile.imwrite(path, rng.integers(0, 100, (5, 2, 16, 16), dtype=np.uint16))
    [(data, kwargs, _)] = napari_get_reader(str(path))(str(path))
    assert data.shape == (5, 2, 16, 16)
    assert "channel" in kwargs["metadata"]["unet_att_note"]


def test_writer_round_trip_keeps_dtype_and_metadata(tmp_path, tiny_sim):
    out = write_tiff(str(tmp_path / "out"), tiny_sim.noisy, {"metadata": {"how": "test", "bad": object()}})
    assert out == [str(tmp_path / "out.tif")]
    back = tifffile.imread(out[0])
    assert back.dtype == tiny_sim.noisy.dtype
    np.testing.assert_array_equal(back, tiny_sim.noisy)
    assert not list(tmp_path.glob("*.tmp*"))  # atomic: no leftovers


def test_samples_open_with_ground_truth():
    temporal = _sample_data.temporal_sample()
    names = [kw["name"] for _, kw, _ in temporal]
    assert names[:2] == ["sim_temporal_noisy", "sim_temporal_ground_truth"]
    assert temporal[0][0].shape == temporal[1][0].shape == (300, 96, 96)
    bidir = _sample_data.bidirectional_sample()
    assert bidir[0][0].shape == (300, 128, 64)
    assert bidir[1][0].shape == (300, 64, 64) and bidir[1][1]["scale"] == [1.0, 2.0, 1.0]
    [(real, kw, kind)] = _sample_data.real_sample()
    assert real.shape == (500, 64, 64) and kind == "image" and "Apache" in kw["metadata"]["sample"]


def test_sample_data_is_small_and_attributed():
    folder = ROOT / "sample_data"
    total = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
    assert total < 21e6
    readme = (folder / "README.md").read_text()
    assert "Apache-2.0" in readme and "thunder-project/thunder" in readme


def test_settings_round_trip_and_corrupt_file():
    _settings.save_settings("train", {"mode": "mirrored", "budget": 7})
    _settings.save_settings("denoise", {"tile_t": 64})
    assert _settings.load_settings("train") == {"mode": "mirrored", "budget": 7}
    assert _settings.load_settings("denoise") == {"tile_t": 64}
    assert _settings.load_settings("nothing") == {}
    _settings.settings_path().write_text("{not json")
    assert _settings.load_settings("train") == {}
    assert json.loads(json.dumps(_settings.load_settings("train"))) == {}
