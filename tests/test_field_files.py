"""Field hardening (issue 14), files: multi-series TIFFs, what killed runs leave, the dock's output checks.

- A TIFF holding several image series is read as series 0 with a warning naming the others
  (engine, CLI, napari reader and dock); ``series`` / ``--series`` chooses another.
- A ``SIGKILL``-ed writer leaves its hidden temporary file; the next write of the same output
  removes it (before the disk-space checks), never the file of a live process.
- The denoise dock checks its stream-to-file output as the CLI does, before any worker starts.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile

from napari_unet_att.errors import InputError, InputWarning, ResourceError
from napari_unet_att.stackio import atomic, read_stack, write_stack

RNG = np.random.default_rng(14)
FIRST = RNG.poisson(50, (12, 16, 16)).astype(np.uint16)
SECOND = RNG.poisson(80, (8, 24, 24)).astype(np.uint16)


def _two_series(path: Path, compression: str | None = None) -> Path:
    """Two image series of different shapes, as two ``TiffWriter.write`` calls make them."""
    with tifffile.TiffWriter(path) as tif:
        for data in (FIRST, SECOND):
            tif.write(data, metadata={"axes": "TYX"}, compression=compression)
    with tifffile.TiffFile(path) as tif:
        assert len(tif.series) == 2  # what the tests below rely on
    return path


def _input_warnings(record: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, InputWarning)]


def _save_model(path: Path) -> Path:
    import torch

    from napari_unet_att.model import checkpoint as ck
    from napari_unet_att.model.denoiser import Denoiser
    from napari_unet_att.model.networks import build_network
    from napari_unet_att.model.normalization import Normalization

    torch.manual_seed(0)
    den = Denoiser(build_network("unet_att", 4).eval(), "unet_att", 4, "custom", "temporal", Normalization(50.0, 7.0))
    return ck.save_checkpoint(path, den)


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return _save_model(tmp_path_factory.mktemp("model") / "m.pt")


def _cli(argv: list[object], capsys) -> tuple[int, list[str]]:
    from napari_unet_att.cli import main

    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    return code, [ln for ln in err.replace("\r", "\n").splitlines() if ln.startswith("napari-unet-att ")]


# -- 1. multi-series TIFFs -----------------------------------------------------------------
@pytest.mark.parametrize("compression", [None, "zlib"])  # positioned reads, and the dask path
def test_multi_series_tiff_reads_series_0_and_says_which(tmp_path, compression):
    path = _two_series(tmp_path / "multi.tif", compression)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        first = read_stack(path, lazy=False)
    np.testing.assert_array_equal(first, FIRST)
    [note] = _input_warnings(record)
    assert note == ("file multi.tif holds 2 image series (0: (12, 16, 16) TYX uint16, 1: (8, 24, 24) TYX uint16); "
                    "series 0 is read, not the others (choose one with series = 0..1)")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        second = read_stack(path, series=1)  # an explicit choice: nothing to warn about
    np.testing.assert_array_equal(np.asarray(second), SECOND)
    assert _input_warnings(record) == []


def test_series_choice_checked(tmp_path):
    path = _two_series(tmp_path / "multi.tif")
    with pytest.raises(InputError, match=r"file multi\.tif has no image series 2: it holds 2 \(0: \(12, 16, 16\)"):
        read_stack(path, series=2)
    with pytest.raises(InputError, match="has no image series -1"):
        read_stack(path, series=-1)
    single = tmp_path / "single.tif"
    tifffile.imwrite(single, FIRST, metadata={"axes": "TYX"})
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        np.testing.assert_array_equal(read_stack(single, series=0, lazy=False), FIRST)
        np.testing.assert_array_equal(read_stack(single, lazy=False), FIRST)
    assert _input_warnings(record) == []  # one series (an ImageJ hyperstack too): nothing to say
    with pytest.raises(InputError, match=r"has no image series 1: it holds a single one, series 0"):
        read_stack(single, series=1)


def test_alike_series_are_listed_as_runs(tmp_path):
    """Positions of one shape (an OME multi-position file) are one entry, not one per position."""
    path = tmp_path / "positions.ome.tif"
    with tifffile.TiffWriter(path, ome=True) as tif:
        for _ in range(3):
            tif.write(FIRST, metadata={"axes": "TYX"})
        tif.write(SECOND, metadata={"axes": "TYX"})
    with pytest.warns(InputWarning) as record:
        read_stack(path)
    [note] = _input_warnings(record.list)
    assert "holds 4 image series (0-2: (12, 16, 16) TYX uint16, 3: (8, 24, 24) TYX uint16)" in note
    np.testing.assert_array_equal(np.asarray(read_stack(path, series=3)), SECOND)


def test_cli_says_which_series_it_denoises(tmp_path, model, capsys):
    path = _two_series(tmp_path / "multi.tif")
    out = tmp_path / "o.tif"
    code, lines = _cli(["denoise", path, "--model", model, "--out", out], capsys)
    assert code == 0, lines
    # once, although the file is read twice (output size check, then the denoising)
    assert lines == ["napari-unet-att denoise: warning: file multi.tif holds 2 image series (0: (12, 16, 16) TYX "
                     "uint16, 1: (8, 24, 24) TYX uint16); series 0 is read, not the others (choose one with "
                     "series = 0..1)"]
    assert tifffile.imread(out).shape == FIRST.shape
    code, lines = _cli(["denoise", path, "--model", model, "--out", out, "--series", "1", "--overwrite"], capsys)
    assert code == 0 and lines == []
    assert tifffile.imread(out).shape == SECOND.shape
    code, lines = _cli(["denoise", path, "--model", model, "--out", tmp_path / "x.tif", "--series", "5"], capsys)
    assert code == 2 and lines == ["napari-unet-att denoise: error: file multi.tif has no image series 5: it holds "
                                   "2 (0: (12, 16, 16) TYX uint16, 1: (8, 24, 24) TYX uint16); choose series = 0..1"]
    assert not (tmp_path / "x.tif").exists()
    code, lines = _cli(["evaluate", path, "--series", "1"], capsys)
    assert code == 0 and lines == []


# -- 2. temporary files of killed writers --------------------------------------------------
def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # reaped: the pid belongs to nobody now
    return proc.pid


def _temp(path: Path, pid: int, host: str | None = None, size: int = 0) -> Path:
    """A temporary file named as :func:`atomic.temp_name` names those of process ``pid``."""
    tmp = path.with_name(f".{path.name}.{host or atomic.host_id()}.{pid}.0123abcd.tmp")
    with open(tmp, "wb") as fh:
        fh.truncate(size)
    return tmp


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_temp_name_names_its_writer(tmp_path):
    name = atomic.temp_name(tmp_path / "o.tif").name
    assert name.startswith(f".o.tif.{atomic.host_id()}.{os.getpid()}.") and name.endswith(".tmp")
    assert atomic.process_alive(os.getpid()) and not atomic.process_alive(_dead_pid())


def test_stale_temps_removed_live_ones_kept(tmp_path):
    out = tmp_path / "o.tif"
    dead = _dead_pid()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        stale = _temp(out, dead)
        stale_dir = out.with_name(f".o.tif.{atomic.host_id()}.{dead}.4567cdef.tmp")  # a killed zarr output
        stale_dir.mkdir()
        (stale_dir / "0.0.0").write_bytes(b"chunk")
        kept = [_temp(out, live.pid),  # another run writing this output now
                _temp(out, os.getpid()),  # this process
                _temp(out, dead, host="ffffffff" if atomic.host_id() != "ffffffff" else "eeeeeeee"),  # another host
                _temp(tmp_path / "other.tif", dead)]  # another output
        old_format = tmp_path / ".o.tif.89abcdef.tmp"  # older versions: no owner in the name
        old_format.write_bytes(b"")
        write_stack(out, FIRST, dtype="input", input_dtype=FIRST.dtype)
        np.testing.assert_array_equal(tifffile.imread(out), FIRST)
        assert not stale.exists() and not stale_dir.exists()
        assert _hidden(tmp_path) == sorted([p.name for p in kept] + [old_format.name])
    finally:
        live.kill()
        live.wait()


def test_stale_temp_does_not_make_the_next_run_refuse_for_space(tmp_path, monkeypatch):
    """A killed run's output-sized file is removed before the free space is measured."""
    out = tmp_path / "o.tif"
    stale = _temp(out, _dead_pid(), size=3 * 2**20)

    def free(folder: Path) -> int:  # a 4 MB disk holding the files in the folder
        return 4 * 2**20 - sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())

    monkeypatch.setattr(atomic, "free_bytes", free)
    from napari_unet_att.stackio.outputs import check_denoise_outputs

    assert check_denoise_outputs([tmp_path / "in.tif"], [out], nbytes=[2**20]) == [out]
    assert not stale.exists()
    stale = _temp(out, _dead_pid(), size=3 * 2**20)
    from napari_unet_att.stackio import output_stack

    with output_stack(out, (4, 256, 256), np.float32) as arr:  # 1 MB, streamed frame by frame
        arr[:] = 1.0
    assert not stale.exists() and tifffile.imread(out).shape == (4, 256, 256)
    with pytest.raises(ResourceError, match="not enough disk space for o.tif in"):  # the check is still made
        check_denoise_outputs([tmp_path / "in.tif"], [out], nbytes=[3 * 2**20])


def test_denoise_killed_then_run_again_leaves_no_temp(tmp_path, model, capsys):
    """SIGKILL a real ``denoise`` while it streams; the next run removes its temporary file."""
    src = tmp_path / "in.tif"
    tifffile.imwrite(src, RNG.poisson(50, (192, 32, 32)).astype(np.uint16), metadata={"axes": "TYX"})
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    proc = subprocess.Popen([sys.executable, "-m", "napari_unet_att", "denoise", str(src), "--model", str(model),
                             "--out", str(out_dir / "d.tif"), "--tile-t", "8", "--tta", "8"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    end = time.monotonic() + 120
    while not [n for n in _hidden(out_dir) if n.startswith(".d.tif.")]:  # the output is being written
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert time.monotonic() < end, "timed out waiting for the output's temporary file"
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    [left] = _hidden(out_dir)
    assert left.startswith(f".d.tif.{atomic.host_id()}.{proc.pid}.") and not (out_dir / "d.tif").exists()

    code, _ = _cli(["denoise", src, "--model", model, "--out", out_dir / "d.tif", "--tile-t", "8"], capsys)
    assert code == 0
    assert _hidden(out_dir) == [] and [p.name for p in out_dir.iterdir()] == ["d.tif"]
    code, _ = _cli(["denoise", src, "--model", model, "--out", tmp_path / "clean.tif", "--tile-t", "8"], capsys)
    assert code == 0
    np.testing.assert_array_equal(tifffile.imread(out_dir / "d.tif"), tifffile.imread(tmp_path / "clean.tif"))


# -- 3. napari: the reader, the denoise dock -------------------------------------------------
PLUGIN = "napari-unet-att"


@pytest.fixture
def gui(make_napari_viewer, tiny_denoiser) -> tuple[Any, Any]:
    """A viewer with the denoise dock, the dock set to stream with a tiny current model."""
    from napari_unet_att._napari import model_panel as C
    from napari_unet_att._napari.denoise_dock import DenoiseWidget

    viewer = make_napari_viewer()
    w = DenoiseWidget(viewer)
    C.MODELS.set(viewer, tiny_denoiser, "test model")  # the dock switches to the current model
    w.device.setCurrentText("cpu")
    w.stream.setChecked(True)
    yield viewer, w
    w.shutdown()
    C.MODELS.forget(viewer)


def test_reader_and_dock_say_which_series_they_use(gui, tmp_path, qtbot, monkeypatch):
    from napari.utils.notifications import notification_manager

    viewer, dock = gui
    path = _two_series(tmp_path / "multi.tif")
    with pytest.warns(InputWarning, match="holds 2 image series"):  # napari shows warnings as notifications
        [layer] = viewer.open(str(path), plugin=PLUGIN)
    np.testing.assert_array_equal(np.asarray(layer.data), FIRST)
    relayed: list[str] = []  # what the dock's worker hands to napari's notifications
    monkeypatch.setattr(notification_manager, "receive_warning", lambda message, *a, **k: relayed.append(str(message)))
    dock.out_path.setText(str(tmp_path / "o.tif"))
    dock.layer.value = layer
    dock.denoise_btn.click()
    qtbot.waitUntil(lambda: not dock.running, timeout=60_000)
    assert any("multi.tif holds 2 image series" in m and "series 0 is read" in m for m in relayed), relayed
    assert tifffile.imread(tmp_path / "o.tif").shape == FIRST.shape


@pytest.mark.parametrize("case", ["no_room", "folder", "under_file"])
def test_dock_checks_the_stream_output_before_starting(gui, tmp_path, notes, monkeypatch, case):
    """As the CLI: refused at once, with one notification naming the file; no worker, no file."""
    viewer, dock = gui
    layer = viewer.add_image(FIRST, name="movie")
    out = tmp_path / "o.tif"
    if case == "no_room":
        monkeypatch.setattr(atomic, "free_bytes", lambda folder: 2**20)
        expected = f"not enough disk space for o.tif in {tmp_path}"
    elif case == "folder":
        out.mkdir()
        expected = f"the output {out} is a folder; expected a .tif file name"
    else:
        (tmp_path / "blocker").write_text("a file")
        out = tmp_path / "blocker" / "o.tif"
        expected = f"cannot write {out}: {tmp_path / 'blocker'} is a file, not a folder"
    before = sorted(p.name for p in tmp_path.iterdir())
    dock.out_path.setText(str(out))
    dock.layer.value = layer
    assert dock.denoise() is None  # refused before a worker was made
    assert not dock.running and dock.denoise_btn.isEnabled()
    errors = [text for level, text in notes if level == "error"]
    assert len(errors) == 1 and errors[0].startswith(expected), errors
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written, not even a temporary
    assert [lay.name for lay in viewer.layers] == ["movie"]
