"""Bad input through the CLI, untrusted checkpoints on every loading path, memory limits and
out-of-memory retries.

Every refusal must give exit code 2, exactly one ``napari-unet-att <cmd>: error: ...`` line that
names what was found and what is expected, no traceback, and no (partial) output file.
"""

from __future__ import annotations

import builtins
import os
import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

import _bad_inputs as bi
from napari_unet_att import stackio as tio
from napari_unet_att.cli import main
from napari_unet_att.config import InferConfig
from napari_unet_att.errors import CheckpointError, ResourceError
from napari_unet_att.inference import denoising as infer
from napari_unet_att.model import checkpoint as ck
from napari_unet_att.model.denoiser import Denoiser
from napari_unet_att.model.networks import build_network
from napari_unet_att.model.normalization import Normalization
from napari_unet_att.runtime import resources as res

FAST = list(bi.FAST)


# ----------------------------------------------------------------------------------------------
# fixtures and helpers
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """The shared corpus (tests/_bad_inputs.py): tiny good and bad inputs, bad checkpoints and
    a tiny model (f=4, one 12x16x16 tile: about a second)."""
    return bi.write_inputs(tmp_path_factory.mktemp("inputs"))


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    """Run the CLI in-process; returns (exit code, stdout, stderr)."""
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def error_line(err: str, command: str) -> str:
    """The one user-facing error line (progress-bar redraws on stderr are ignored)."""
    assert "Traceback" not in err, err
    lines = [ln for ln in err.replace("\r", "\n").splitlines() if ln.startswith("napari-unet-att ")]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"napari-unet-att {command}: error: "), lines[0]
    return lines[0]


outputs = bi.outputs


def refused(argv: list[str], capsys, command: str, *patterns: str) -> str:
    rc, out, err = run(argv, capsys)
    assert rc == 2, (rc, err)
    line = error_line(err, command)
    for pat in patterns:
        assert pat.lower() in line.lower(), (pat, line)
    return line


# ----------------------------------------------------------------------------------------------
# every case of the shared corpus through the CLI (in-process; the report runs them as processes)
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", bi.cases(cli=True), ids=lambda c: c.id)
def test_cli_case(files, tmp_path, capsys, monkeypatch, case):
    out = tmp_path / "out"
    out.mkdir()
    inputs_before = outputs(files["good"].parent)
    if case.fault:
        bi.install_fault(case.fault, monkeypatch.setattr, out)
    argv = case.cli_argv(files, out)
    if case.ok:
        rc, _, err = run(argv, capsys)
        assert rc == 0, err
        result = tifffile.imread(case.out_path(files, out))
        assert result.shape[0] >= 3 and np.isfinite(result.astype(np.float64)).all()
        return
    line = refused(argv, capsys, case.command, *case.expected)
    assert outputs(out) == [], line  # no partial output, not even an empty run folder
    assert outputs(files["good"].parent) == inputs_before  # inputs untouched, no hostile marker
    if case.widget in ("denoise", "open") and case.id != "nan":
        assert case.input_path(files, out).name in line  # names the file


def test_denoise_missing_input(files, tmp_path, capsys):
    refused(["denoise", tmp_path / "nope.tif", "--model", files["model"], "--out", tmp_path / "o.tif"], capsys,
            "denoise", "file not found", "nope.tif")
    assert outputs(tmp_path) == []


def test_channel_selects_rgb_plane(files, tmp_path, capsys):
    rc, _, err = run(["denoise", files["rgb"], "--channel", "1", "--model", files["model"], "--out",
                      tmp_path / "o.tif"], capsys)
    assert rc == 0, err
    assert tifffile.imread(tmp_path / "o.tif").shape == (4, 16, 16)
    refused(["denoise", files["rgb"], "--channel", "5", "--model", files["model"], "--out", tmp_path / "p.tif"],
            capsys, "denoise", "channel 5 does not exist", "0..2")


@pytest.mark.parametrize(
    ("name", "dtype"),
    [("int8", np.int16), ("int32", np.float32), ("float64", np.float32), ("bigendian", np.uint16),
     ("const", np.uint16)],
)
def test_supported_dtypes_and_constant_image_work(files, tmp_path, capsys, name, dtype):
    """Convertible dtypes are denoised (exact conversion; output in the converted dtype); a constant
    image is a valid (if dull) recording: the model's normalisation applies, the output is finite."""
    out = tmp_path / "o.tif"
    rc, stdout, err = run(["denoise", files[name], "--model", files["model"], "--out", out, "--dtype", "input"], capsys)
    assert rc == 0, err
    res_arr = tifffile.imread(out)
    assert res_arr.shape == (12, 16, 16) and res_arr.dtype == np.dtype(dtype)
    assert np.isfinite(res_arr.astype(np.float64)).all()
    assert outputs(tmp_path) == ["o.tif"]  # no temporary left beside it


def test_train_refuses_bool_as_a_mask(files, tmp_path, capsys):
    refused(["train", files["bool"], "--out", tmp_path / "run", *FAST], capsys, "train",
            "mask, not an intensity image")
    assert outputs(tmp_path) == []


# ----------------------------------------------------------------------------------------------
# output problems
# ----------------------------------------------------------------------------------------------
def test_output_under_a_file(files, tmp_path, capsys):
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    line = refused(["denoise", files["good"], "--model", files["model"], "--out", blocker / "o.tif"], capsys,
                   "denoise")
    assert "blocker" in line
    assert blocker.read_text() == "x"


def test_output_would_overwrite_input(files, tmp_path, capsys):
    src = tmp_path / "in.tif"
    src.write_bytes(files["good"].read_bytes())
    refused(["denoise", src, "--model", files["model"], "--out", src], capsys, "denoise", "would overwrite the input")
    assert src.read_bytes() == files["good"].read_bytes()


def test_disk_full_while_writing_keeps_old_output(files, tmp_path, capsys, monkeypatch):
    out = tmp_path / "o.tif"
    old = np.arange(12 * 16 * 16, dtype=np.float32).reshape(12, 16, 16)
    tifffile.imwrite(out, old)
    bi.install_fault("disk_full_midway", monkeypatch.setattr, tmp_path)
    refused(["denoise", files["good"], "--model", files["model"], "--out", out, "--overwrite"], capsys, "denoise",
            "disk is full", "nothing was written")
    np.testing.assert_array_equal(tifffile.imread(out), old)  # the previous result is intact
    assert outputs(tmp_path) == ["o.tif"]  # and no temporary is left


# ----------------------------------------------------------------------------------------------
# bad checkpoints
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["m_truncated", "m_newer", "m_arch", "m_random", "m_tiff", "m_plain"])
def test_bad_checkpoint_on_every_command(files, tmp_path, capsys, name):
    model, patterns = files[name], bi.CASES_BY_ID[name].expected
    line = refused(["denoise", files["good"], "--model", model, "--out", tmp_path / "o.tif"], capsys, "denoise",
                   *patterns)
    assert model.name in line
    assert outputs(tmp_path) == []
    refused(["info", model], capsys, "info", *patterns)
    refused(["train", files["good"], "--init", model, "--out", tmp_path / "run", *FAST], capsys, "train", *patterns)
    assert outputs(tmp_path / "run") == []


def test_resume_needs_a_training_checkpoint(files, tmp_path, capsys):
    refused(["train", files["good"], "--resume", files["model"], "--out", tmp_path / "run", *FAST], capsys, "train",
            "holds no training state", "--init")
    refused(["train", files["good"], "--resume", tmp_path / "none.pt", "--out", tmp_path / "run", *FAST], capsys,
            "train", "model file not found")


# ----------------------------------------------------------------------------------------------
# untrusted checkpoints: nothing in them ever runs
# ----------------------------------------------------------------------------------------------
class _Touch:
    """Unpickling this calls ``open(marker, 'w')``: a stand-in for arbitrary code."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (builtins.open, (self.marker, "w"))


class _Eval:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (builtins.eval, (f"open({self.marker!r}, 'w')",))


class _Popen:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (subprocess.Popen, (["touch", self.marker],))


def _planted(folder: Path, marker: Path) -> list[Path]:
    """Hostile files the tests in test_checkpoint.py do not plant: payloads hidden deep inside an
    otherwise valid checkpoint, reference-style ``.pth`` dicts, numpy object arrays, eval/Popen."""
    m = str(marker)
    state = build_network("unet_att", 4).state_dict()
    files = []
    deep = {"magic": ck.MAGIC, "format_version": 1, "state_dict": state, "arch": "unet_att", "base_channels": 4,
            "mode": "temporal", "normalization": {"offset": 0.0, "scale": 1.0},
            "provenance": {"notes": [1, {"x": _Touch(m)}]}}
    torch.save(deep, folder / "deep.pt")
    files.append(folder / "deep.pt")
    ref = {"Generator." + k: v for k, v in state.items()}
    ref["Generator.extra"] = _Eval(m)
    torch.save(ref, folder / "E_10_Iter_6000.pth")
    files.append(folder / "E_10_Iter_6000.pth")
    torch.save({"params": {"w": torch.zeros(2)}, "meta": np.array([_Popen(m)], dtype=object)}, folder / "bid.pth")
    files.append(folder / "bid.pth")
    torch.save({"magic": ck.MAGIC, "x": _Popen(m)}, folder / "legacy.pt", _use_new_zipfile_serialization=False)
    files.append(folder / "legacy.pt")
    (folder / "proto0.pth").write_bytes(pickle.dumps(_Eval(m), protocol=0))
    files.append(folder / "proto0.pth")
    return files


def test_planted_payloads_are_live(tmp_path):
    """Control: with plain torch.load the payloads do run (so the refusals below mean something)."""
    marker = tmp_path / "control"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.load(_planted(tmp_path, marker)[0], weights_only=False)
    assert marker.exists()


def test_untrusted_checkpoints_refused_on_every_python_path(tmp_path):
    marker = tmp_path / "PWNED"
    for path in _planted(tmp_path, marker):
        for fn in (ck.load_checkpoint, ck.load_any, ck.import_reference, ck.load_training_state):
            with pytest.raises(CheckpointError, match="NOT loaded") as e:
                fn(path)
            assert path.name in str(e.value)
            assert not marker.exists(), (path.name, fn.__name__)


def test_untrusted_checkpoints_refused_by_trainer(files, tmp_path):
    from napari_unet_att.config import TrainConfig
    from napari_unet_att.training.trainer import train

    marker = tmp_path / "PWNED"
    stack = tio.read_stack(files["good"])
    cfg = TrainConfig(steps=1, patch_t=4, patch_xy=16)
    for path in _planted(tmp_path, marker)[:3]:
        for kw in ({"init": path}, {"resume": path}):
            with pytest.raises(CheckpointError, match="NOT loaded"):
                train([stack], cfg, out_dir=tmp_path / "run", **kw)
            assert not marker.exists()
    assert outputs(tmp_path / "run") == []


def test_untrusted_checkpoints_refused_by_cli(files, tmp_path, capsys):
    marker = tmp_path / "PWNED"
    planted = _planted(tmp_path, marker)
    for path in planted:
        for argv, cmd in (
            (["denoise", files["good"], "--model", path, "--out", tmp_path / "o.tif"], "denoise"),
            (["train", files["good"], "--init", path, "--out", tmp_path / "run", *FAST], "train"),
            (["train", files["good"], "--resume", path, "--out", tmp_path / "run", *FAST], "train"),
            (["info", path], "info"),
        ):
            refused(argv, capsys, cmd, "NOT loaded", path.name)
            assert not marker.exists(), (path.name, cmd)
    assert not (tmp_path / "o.tif").exists() and outputs(tmp_path / "run") == []


# ----------------------------------------------------------------------------------------------
# the real command line, in separate processes (run side by side: each start imports torch)
# ----------------------------------------------------------------------------------------------
def test_cli_subprocess_refusals(files, tmp_path):
    marker = tmp_path / "PWNED"
    hostile = _planted(tmp_path, marker)[0]
    out = tmp_path / "out"
    cases = {
        "image2d": (["denoise", files["image2d"], "--model", files["model"], "--out", out / "a.tif"],
                    "single 2D image"),
        "truncated_model": (["info", files["m_truncated"]], "truncated or corrupted PyTorch file"),
        "hostile_init": (["train", files["good"], "--init", hostile, "--out", out / "run", *FAST], "NOT loaded"),
    }
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    procs = {k: subprocess.Popen([sys.executable, "-m", "napari_unet_att", *map(str, argv)], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, env=env)
             for k, (argv, _) in cases.items()}
    for k, p in procs.items():
        _, err = p.communicate(timeout=120)
        assert p.returncode == 2, (k, err)
        command = cases[k][0][0]
        assert cases[k][1].lower() in error_line(err, command).lower(), (k, err)
    assert outputs(out) == [] and not marker.exists()


def test_debug_shows_traceback(files, tmp_path, capsys):
    rc, _, err = run(["--debug", "denoise", files["text"], "--model", files["model"], "--out", tmp_path / "o.tif"],
                     capsys)
    assert rc == 2 and "Traceback" in err and "is a text file" in err


# ----------------------------------------------------------------------------------------------
# memory: estimates, checks before work, out-of-memory retries
# ----------------------------------------------------------------------------------------------
def test_estimates_scale_and_match_calibration():
    small = res.estimate_inference_memory((16, 32, 32), "unet_att", 16)
    big = res.estimate_inference_memory((64, 128, 128), "unet_att", 16)
    assert big > 20 * (small - res.FIXED_OVERHEAD)  # activations grow with the voxels
    # measured peak on CPU: 0.68 GB (resources docstring); the estimate covers it without gross excess
    assert 0.68e9 <= big <= 1.2e9
    train = res.estimate_training_memory(64, 64, "unet_att", 16, batch=1)
    assert 0.86e9 <= train <= 1.6e9
    assert res.estimate_training_memory(32, 64, "unet3d", 16, batch=2) >= 0.30e9
    assert res.estimate_inference_memory((16, 32, 32), "unet_att", 8, batch=2) > res.estimate_inference_memory(
        (16, 32, 32), "unet_att", 8, batch=1)


def test_available_memory_sources(monkeypatch, tmp_path):
    avail = res.available_memory()
    assert avail is None or avail > 0
    info = tmp_path / "meminfo"
    info.write_text("MemTotal:       16000000 kB\nMemFree:         1000000 kB\nMemAvailable:    8000000 kB\n")
    assert res._meminfo_available(str(info)) == 8000000 * 1024
    info.write_text("MemTotal: 100 kB\nMemFree: 10 kB\nCached: 5 kB\nBuffers: 1 kB\n")
    assert res._meminfo_available(str(info)) == 16 * 1024
    assert res._meminfo_available(str(tmp_path / "none")) is None
    monkeypatch.setitem(sys.modules, "psutil", None)  # psutil not installed: /proc/meminfo (Linux)
    monkeypatch.setattr(res, "_cgroup_limit", lambda: None)
    if Path("/proc/meminfo").exists():
        assert res.available_memory("cpu") == res._meminfo_available()


def test_check_memory_message():
    res.check_memory(10**9, "x", available=2 * 10**9)
    with pytest.raises(ResourceError) as e:
        res.check_memory(3 * 10**9, "denoising a big stack", available=2 * 10**9)
    msg = str(e.value)
    assert "needs about 3.00 GB" in msg and "2.00 GB are available" in msg and "smaller tiles" in msg
    with pytest.raises(ResourceError, match="smaller patches"):
        res.check_training_memory(4096, 4096, 8, "unet_att", 16)


class _FailOnCall(torch.nn.Module):
    def forward(self, x):
        raise AssertionError("the network must not run")


def test_denoise_refused_before_work_when_memory_is_short(monkeypatch):
    monkeypatch.setattr(res, "available_memory", lambda device="cpu": 50 * 2**20)
    den = Denoiser(_FailOnCall(), "unet_att", 16, "paper", "temporal", Normalization(0.0, 1.0))
    stack = np.zeros((256, 512, 512), np.uint16)  # never read: the check comes first
    with pytest.raises(ResourceError, match=r"denoising a \(256, 512, 512\) stack .* are available; use smaller tiles"):
        next(infer.iter_denoise(stack, den, InferConfig(device="cpu")))


class _OOMOnBigTiles(torch.nn.Module):
    """Identity that raises CUDA's out-of-memory error above ``limit`` voxels per forward pass."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit, self.calls = limit, []

    def forward(self, x):
        self.calls.append(tuple(x.shape))
        if x.numel() > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return x.clone()


def _messages(gen) -> tuple[list[str], object]:
    msgs = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        while True:
            try:
                ev = next(gen)
            except StopIteration as stop:
                result = stop.value
                break
            if getattr(ev, "message", ""):
                msgs.append(ev.message)
    msgs += [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    return msgs, result


def test_out_of_memory_retries_with_smaller_batch_then_tiles():
    x = np.random.default_rng(0).normal(5.0, 2.0, (40, 40, 40)).astype(np.float32)
    net = _OOMOnBigTiles(limit=16 * 20 * 20)
    den = Denoiser(net, "unet3d", 4, "custom", "temporal", Normalization(5.0, 2.0))
    cfg = InferConfig(device="cpu", tile_t=32, max_tile_xy=40, batch_size=2, overlap=4, smoothing="off",
                      registration="off", keep_average="off", strips="off", line_phase="off", give_back="off")
    msgs, y = _messages(infer.iter_denoise(x, den, cfg))
    np.testing.assert_allclose(y, x, rtol=1e-5, atol=1e-5)  # the final plan still covers every voxel
    assert len(msgs) >= 3, msgs
    assert "retrying with batch 1" in msgs[0]
    assert all("out of memory on cpu" in m for m in msgs)
    assert max(np.prod(s) for s in net.calls[-3:]) <= 16 * 20 * 20  # the last passes used small tiles


def test_out_of_memory_gives_up_at_smallest_tile():
    den = Denoiser(_OOMOnBigTiles(limit=10), "unet3d", 4, "custom", "temporal", Normalization(0.0, 1.0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ResourceError, match="out of memory .* even with one 8x16x16 tile"):
            infer.denoise(np.zeros((20, 20, 20), np.float32), den, InferConfig(device="cpu"))


def test_other_runtime_errors_are_not_retried():
    class Broken(torch.nn.Module):
        def forward(self, x):
            raise RuntimeError("shape mismatch somewhere")

    den = Denoiser(Broken(), "unet3d", 4, "custom", "temporal", Normalization(0.0, 1.0))
    with pytest.raises(RuntimeError, match="shape mismatch"):
        infer.denoise(np.zeros((8, 16, 16), np.float32), den, InferConfig(device="cpu"))
