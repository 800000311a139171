"""Checkpoints: round trip, atomic save, safe loading of bad / hostile files, reference import."""

from __future__ import annotations

import builtins
import errno
import os
import pickle
import random

import numpy as np
import pytest
import torch

from napari_unet_att.config import TrainConfig
from napari_unet_att.errors import CheckpointError, ResourceError
from napari_unet_att.model import checkpoint as ck
from napari_unet_att.model import networks
from napari_unet_att.model.denoiser import Denoiser
from napari_unet_att.model.normalization import Normalization


def _denoiser(arch: str = "unet_att", f: int = 4) -> Denoiser:
    torch.manual_seed(0)
    net = networks.build_network(arch, f)
    for buf in net.buffers():  # non-default BatchNorm statistics must survive too
        if buf.is_floating_point():
            buf.copy_(torch.rand_like(buf) + 0.5)
    return Denoiser(
        net=net, arch=arch, base_channels=f, preset="fast", mode="mirrored", norm=Normalization(123.5, 45.25),
        flip_backward=True, train_shape=(40, 64, 32),
        train_config=TrainConfig(mode="mirrored", steps=5, preview_frames=(0, 4)).resolved().as_dict(),
        provenance={"sources": ["a.tif"], "seed": np.int64(3)}, step=17,
    )


def _assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def _tmp_files(folder) -> list[str]:
    return [n for n in os.listdir(folder) if n.endswith(".tmp")]


# ----------------------------------------------------------------------------------------------
# round trip
# ----------------------------------------------------------------------------------------------
def test_round_trip_weights_and_metadata(tmp_path):
    den = _denoiser()
    p = ck.save_checkpoint(tmp_path / "m.pt", den)
    raw = torch.load(p, map_location="cpu", weights_only=True)  # readable without trusting the file
    assert raw["magic"] == ck.MAGIC and raw["format_version"] == ck.FORMAT_VERSION
    back = ck.load_checkpoint(p)
    _assert_same_weights(den.net, back.net)
    assert not back.net.training
    for field in ("arch", "base_channels", "preset", "mode", "norm", "flip_backward", "train_shape", "step"):
        assert getattr(back, field) == getattr(den, field), field
    assert back.train_config == den.train_config
    assert back.provenance["sources"] == ["a.tif"] and back.provenance["seed"] == 3
    assert {"package", "torch", "created"} <= back.provenance.keys()
    assert ck.load_training_state(p) is None
    _assert_same_weights(den.net, ck.load_any(p).net)


def _adam_like_state(net: torch.nn.Module) -> dict:
    """What ``torch.optim.Adam(...).state_dict()`` holds after some steps (building a real
    optimiser imports torch._dynamo: seconds of one-time set-up this test does not need)."""
    params = list(net.parameters())
    return {
        "state": {i: {"step": torch.tensor(3.0), "exp_avg": torch.full_like(p, i), "exp_avg_sq": torch.rand_like(p)}
                  for i, p in enumerate(params)},
        "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0, "amsgrad": False,
                          "foreach": None, "maximize": False, "capturable": False, "differentiable": False,
                          "fused": None, "params": list(range(len(params)))}],
    }


def test_training_state_round_trip(tmp_path):
    den = _denoiser("unet3d")
    rng = np.random.default_rng(5)
    state = {
        "optimizer": _adam_like_state(den.net),
        "scaler": {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000,
                   "_growth_tracker": 7},
        "torch_rng": torch.get_rng_state(),
        "numpy_rng": rng.bit_generator.state,  # holds 128-bit Python ints
        "python_rng": random.Random(1).getstate(),
        "step": 17,
        "elapsed": 12.5,
        "history": {"loss": [np.float32(0.5), 0.25], "val_loss": [None, 0.3]},
        "noise": np.arange(3.0),
    }
    p = ck.save_checkpoint(tmp_path / "r.pt", den, training_state=state)
    back = ck.load_training_state(p)
    assert torch.equal(back["torch_rng"], state["torch_rng"])
    assert back["numpy_rng"] == rng.bit_generator.state
    assert back["python_rng"] == random.Random(1).getstate()
    assert back["history"]["loss"] == [0.5, 0.25] and back["elapsed"] == 12.5 and back["step"] == 17
    assert back["scaler"] == state["scaler"]
    assert torch.equal(back["noise"], torch.arange(3.0, dtype=torch.float64))  # numpy arrays come back as tensors
    opt = state["optimizer"]
    assert back["optimizer"]["param_groups"] == opt["param_groups"]
    assert back["optimizer"]["state"].keys() == opt["state"].keys()
    for i, s in opt["state"].items():
        for k, v in s.items():
            assert torch.equal(back["optimizer"]["state"][i][k], v)
    assert ck.load_checkpoint(p).step == 17
    with pytest.raises(TypeError, match="cannot store"):
        ck.save_checkpoint(tmp_path / "bad.pt", den, training_state={"x": object()})
    assert not (tmp_path / "bad.pt").exists()


# ----------------------------------------------------------------------------------------------
# atomic save
# ----------------------------------------------------------------------------------------------
def test_crash_mid_save_keeps_old_file(monkeypatch, tmp_path):
    p = ck.save_checkpoint(tmp_path / "m.pt", _denoiser())
    before = p.read_bytes()

    def crash(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise RuntimeError("killed mid-write")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(RuntimeError, match="killed mid-write"):
        ck.save_checkpoint(p, _denoiser("unet3d"))
    assert p.read_bytes() == before
    assert ck.load_checkpoint(p).arch == "unet_att"
    assert _tmp_files(tmp_path) == []


def test_full_disk_save(monkeypatch, tmp_path):
    def full(obj, f, *args, **kwargs):
        f.write(b"PK")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(ResourceError, match="disk is full"):
        ck.save_checkpoint(tmp_path / "m.pt", _denoiser())
    assert os.listdir(tmp_path) == []


# ----------------------------------------------------------------------------------------------
# bad files
# ----------------------------------------------------------------------------------------------
def test_missing_truncated_random_text(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        ck.load_checkpoint(tmp_path / "none.pt")
    good = ck.save_checkpoint(tmp_path / "m.pt", _denoiser())
    data = good.read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupted"):
        ck.load_checkpoint(cut)
    rnd = tmp_path / "rnd.pt"
    rnd.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        ck.load_any(rnd)
    txt = tmp_path / "model.pt"
    txt.write_text("this is a README, not a model\n")
    with pytest.raises(CheckpointError, match="text file") as e:
        ck.load_checkpoint(txt)
    assert str(txt) in str(e.value)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        ck.import_reference(empty)


def test_foreign_files(tmp_path):
    plain = tmp_path / "plain.pt"
    torch.save({"a": 1}, plain)
    with pytest.raises(CheckpointError, match="not a napari-unet-att checkpoint"):
        ck.load_checkpoint(plain)
    with pytest.raises(CheckpointError, match="neither a napari-unet-att checkpoint nor"):
        ck.load_any(plain)
    pkl = tmp_path / "data.pkl"
    pkl.write_bytes(pickle.dumps({"x": [1, 2]}))
    with pytest.raises(CheckpointError, match="plain Python pickle"):
        ck.load_checkpoint(pkl)


def test_newer_version_and_arch_mismatch(tmp_path):
    p = ck.save_checkpoint(tmp_path / "m.pt", _denoiser())
    raw = torch.load(p, weights_only=True)
    raw.pop("checksum")  # edited files without one (as written before it existed): the field checks apply
    newer = dict(raw, format_version=ck.FORMAT_VERSION + 1)
    torch.save(newer, tmp_path / "newer.pt")
    with pytest.raises(CheckpointError, match="newer napari-unet-att"):
        ck.load_checkpoint(tmp_path / "newer.pt")
    torch.save(dict(raw, arch="unet3d"), tmp_path / "arch.pt")
    with pytest.raises(CheckpointError, match="do not match a unet3d network"):
        ck.load_checkpoint(tmp_path / "arch.pt")
    torch.save(dict(raw, base_channels=8), tmp_path / "f.pt")
    with pytest.raises(CheckpointError, match="base_channels=8"):
        ck.load_any(tmp_path / "f.pt")
    torch.save(dict(raw, arch="transformer"), tmp_path / "unknown.pt")
    with pytest.raises(CheckpointError, match="unknown network architecture"):
        ck.load_checkpoint(tmp_path / "unknown.pt")


# ----------------------------------------------------------------------------------------------
# hostile files
# ----------------------------------------------------------------------------------------------
class _CreatesFile:
    """Unpickling this calls ``open(marker, 'w')``: a stand-in for arbitrary code."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (builtins.open, (self.marker, "w"))


class _RunsShell:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _hostile_files(tmp_path, marker: str) -> list:
    files = []
    for payload_cls in (_CreatesFile, _RunsShell):
        payload = {"state_dict": {"w": torch.zeros(2)}, "magic": ck.MAGIC, "x": payload_cls(marker)}
        name = payload_cls.__name__
        torch.save(payload, tmp_path / f"{name}_zip.pt")
        torch.save(payload, tmp_path / f"{name}_legacy.pt", _use_new_zipfile_serialization=False)
        files += [tmp_path / f"{name}_zip.pt", tmp_path / f"{name}_legacy.pt"]
        for proto in (0, 2, 4):
            f = tmp_path / f"{name}_p{proto}.pth"
            f.write_bytes(pickle.dumps(payload_cls(marker), protocol=proto))
            files.append(f)
    return files


def test_malicious_pickle_is_refused_and_never_run(tmp_path):
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(_CreatesFile(str(control))))  # the payload is live when unpickled naively
    assert control.exists()
    marker = tmp_path / "PWNED"
    for path in _hostile_files(tmp_path, str(marker)):
        for fn in (ck.load_checkpoint, ck.import_reference, ck.load_any, ck.load_training_state):
            with pytest.raises(CheckpointError, match="NOT loaded") as e:
                fn(path)
            assert str(path) in str(e.value)
            assert not marker.exists(), (path.name, fn.__name__)


# ----------------------------------------------------------------------------------------------
# reference import
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("arch", "wrap", "tool"),
    [
        ("unet3d", lambda sd: {"Generator." + k: v for k, v in sd.items()}, "DeepCAD-RT"),
        ("unet_att", lambda sd: {"Generator." + k: v for k, v in sd.items()}, "UNet-Att"),
        ("unet3d", lambda sd: {"params": dict(sd)}, "DeepBID"),
    ],
)
def test_import_reference(tmp_path, arch, wrap, tool):
    ref = _denoiser(arch).net
    p = tmp_path / "E_10_Iter_6000.pth"
    torch.save(wrap(ref.state_dict()), p)
    for fn in (ck.import_reference, ck.load_any):
        den = fn(p)
        _assert_same_weights(ref, den.net)
        assert (den.arch, den.base_channels, den.preset, den.mode) == (arch, 4, "imported", "temporal")
        assert den.norm == Normalization(0.0, 1.0)
        assert den.provenance["normalization"] == "input"
        assert den.provenance["reference_tool"] == tool
    with pytest.raises(CheckpointError, match="not a napari-unet-att checkpoint.*import it as a reference"):
        ck.load_checkpoint(p)
    # an imported model saves and reloads as one of ours
    _assert_same_weights(ref, ck.load_checkpoint(ck.save_checkpoint(tmp_path / "ours.pt", den)).net)


def test_import_reference_para_yaml_and_bad_dict(tmp_path):
    ref = networks.build_network("unet3d", 4)
    p = tmp_path / "model.pth"
    torch.save({"Generator." + k: v for k, v in ref.state_dict().items()}, p)
    (tmp_path / "para.yaml").write_text("fmap: 4\nnormalization:\n  mean: 812.5\n  std: 40.0\n")
    den = ck.import_reference(p)
    assert den.norm == Normalization(812.5, 40.0)
    assert den.provenance["normalization"] == "model" and den.provenance["para_yaml_fmap"] == 4
    junk = tmp_path / "junk.pth"
    torch.save({"conv.weight": torch.zeros(3, 1, 3, 3)}, junk)
    with pytest.raises(CheckpointError, match="junk.pth"):
        ck.import_reference(junk)
