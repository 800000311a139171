"""TIFF reading / validation / atomic writing (stackio: read, tiffarray, axes, write, atomic)."""

from __future__ import annotations

import errno
import os
import pickle
import re
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import tifffile
import torch
import zarr

from napari_unet_att import stackio as tio
from napari_unet_att.errors import InputError, ResourceError
from napari_unet_att.stackio import atomic, tiffarray
from napari_unet_att.stackio import write as stack_write


def _stack(shape=(5, 12, 10), dtype=np.uint16, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 1000, size=shape).astype(dtype)


def _leftovers(folder) -> list[str]:
    return [n for n in os.listdir(folder) if n.endswith(".tmp")]


# ----------------------------------------------------------------------------------------------
# read_stack: layouts
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16", "float32"])
def test_read_native_dtypes_lazy(tmp_path, dtype):
    a = _stack(dtype=dtype)
    p = tmp_path / "a.tif"
    tifffile.imwrite(p, a, imagej=True, metadata={"axes": "TYX"})
    out = tio.read_stack(p)
    assert isinstance(out, tio.TiffArray)  # contiguous, uncompressed: nothing read into RAM, nothing mapped
    assert out.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(np.asarray(out), a)
    eager = tio.read_stack(p, lazy=False)
    assert not isinstance(eager, np.memmap)
    np.testing.assert_array_equal(eager, a)


def test_read_imagej_hyperstack_channel_and_squeeze(tmp_path):
    a = _stack((6, 1, 3, 8, 9))  # T, Z=1, C=3
    p = tmp_path / "h.tif"
    tifffile.imwrite(p, a, imagej=True, metadata={"axes": "TZCYX"})
    with pytest.raises(InputError, match=r"3 channels.*channel = 0\.\.2") as e:
        tio.read_stack(p)
    assert "TCYX" in str(e.value) and "(6, 3, 8, 9)" in str(e.value)  # tifffile already drops Z=1
    assert e.value.axis == 1  # where the channels are: the widgets say how napari can take one from there
    back = pickle.loads(pickle.dumps(e.value))  # as a worker process hands it back
    assert (type(back), str(back), back.axis) == (type(e.value), str(e.value), 1)
    out = tio.read_stack(p, channel=2)
    assert out.shape == (6, 8, 9)
    np.testing.assert_array_equal(np.asarray(out), a[:, 0, 2])
    with pytest.raises(InputError, match="channel 3 does not exist"):
        tio.read_stack(p, channel=3)


def test_read_time_and_z_refused(tmp_path):
    p = tmp_path / "tz.tif"
    tifffile.imwrite(p, _stack((4, 2, 8, 8)), imagej=True, metadata={"axes": "TZYX"})
    with pytest.raises(InputError, match=r"more than one non-spatial axis \(T=4, Z=2\)"):
        tio.read_stack(p)


def test_read_ome_and_bigtiff(tmp_path):
    a = _stack((5, 2, 8, 8))
    p = tmp_path / "a.ome.tif"
    tifffile.imwrite(p, a, ome=True, metadata={"axes": "TCYX"})
    np.testing.assert_array_equal(np.asarray(tio.read_stack(p, channel=1)), a[:, 1])
    b = tmp_path / "big.tif"
    tifffile.imwrite(b, a[:, 0], bigtiff=True, metadata={"axes": "TYX"})
    np.testing.assert_array_equal(np.asarray(tio.read_stack(b)), a[:, 0])


def test_read_compressed_is_lazy_dask(tmp_path):
    a = _stack((7, 16, 16))
    p = tmp_path / "c.tif"
    tifffile.imwrite(p, a, compression="zlib", metadata={"axes": "TYX"})
    out = tio.read_stack(p)
    assert isinstance(out, da.Array)
    np.testing.assert_array_equal(out[2:4].compute(), a[2:4])


@pytest.mark.parametrize(
    ("dtype", "values", "expected"),
    [
        ("int8", [-100, 0, 100, 127], np.int16),
        ("int32", [-(2**30), 0, 2**20, 7], np.float32),
        ("uint32", [0, 1, 2**24, 5], np.float32),
        ("float64", [-1.5, 0.0, 1e5, 2.25], np.float32),
        (">u2", [0, 1, 65535, 300], np.uint16),
    ],
)
def test_read_converts_dtypes_exactly(tmp_path, dtype, values, expected):
    a = np.broadcast_to(np.array(values, dtype=dtype)[:, None, None], (4, 6, 6)).copy()
    p = tmp_path / "d.tif"
    tifffile.imwrite(p, a, metadata={"axes": "TYX"}, byteorder=">" if dtype.startswith(">") else None,
                     photometric="minisblack")  # frames, not RGB planes (tifffile's guess is deprecated)
    out = tio.read_stack(p)
    assert out.dtype == np.dtype(expected) and out.dtype.isnative
    np.testing.assert_array_equal(np.asarray(out)[:, 0, 0], values)  # same values: no wrap, no rounding


def test_read_bool_refused(tmp_path):
    p = tmp_path / "m.tif"
    tifffile.imwrite(p, np.zeros((4, 8, 8), bool), metadata={"axes": "TYX"})
    with pytest.raises(InputError, match="mask, not an intensity image"):
        tio.read_stack(p)


@pytest.mark.parametrize(
    ("data", "kw", "match"),
    [
        (np.zeros((8, 8), np.uint16), {}, "single 2D image"),
        (np.zeros((2, 8, 8), np.uint16), {"metadata": {"axes": "TYX"}}, r"only 2 frame\(s\)"),
        (np.zeros((1, 8, 8), np.uint16), {"metadata": {"axes": "TYX"}}, "single 2D image"),
        (np.zeros((8, 8, 3), np.uint8), {"photometric": "rgb"}, r"3 RGB\(A\) samples"),
    ],
)
def test_read_refusals_say_what_was_found(tmp_path, data, kw, match):
    p = tmp_path / "bad.tif"
    tifffile.imwrite(p, data, **kw)
    with pytest.raises(InputError, match=match) as e:
        tio.read_stack(p)
    assert "found shape" in str(e.value) and "expected" in str(e.value)


def test_read_missing_text_and_truncated(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        tio.read_stack(tmp_path / "nope.tif")
    txt = tmp_path / "notes.tif"
    txt.write_text("these are my notes, not an image\n")
    with pytest.raises(InputError, match="is a text file"):
        tio.read_stack(txt)
    a = _stack((6, 32, 32))
    for name, kw in [("plain.tif", {}), ("ij.tif", {"imagej": True}), ("zip.tif", {"compression": "zlib"})]:
        full = tmp_path / name
        tifffile.imwrite(full, a, metadata={"axes": "TYX"}, **kw)
        raw = full.read_bytes()
        cut = tmp_path / f"cut_{name}"
        cut.write_bytes(raw[: len(raw) * 2 // 3])
        with pytest.raises(InputError, match="truncated or corrupted"):
            tio.read_stack(cut)
    head = tmp_path / "head.tif"
    head.write_bytes(raw[:6])
    with pytest.raises(InputError, match="truncated"):
        tio.read_stack(head)


# ----------------------------------------------------------------------------------------------
# TiffArray: positioned reads instead of a memory map
# ----------------------------------------------------------------------------------------------
_KEYS = [
    np.s_[:], np.s_[2:5], np.s_[-3:], np.s_[1], np.s_[-1, 3], np.s_[1:6, 2:9, 3:7], np.s_[::2, ::-3, 1:8:2],
    np.s_[..., 4], np.s_[4, ...], np.s_[5:2:-1, :, ::-1], np.s_[3:3], np.s_[:, 2:3, 7],
]


@pytest.mark.parametrize("byteorder", ["<", ">"])
@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16", "float32"])
def test_tiff_array_slices_equal_tifffile(tmp_path, dtype, byteorder):
    a = (_stack((7, 11, 9), dtype=np.float32) - 300).astype(dtype)
    p = tmp_path / "a.tif"
    tifffile.imwrite(p, a, metadata={"axes": "TYX"}, byteorder=byteorder)
    full = tifffile.imread(p)
    arr = tio.read_stack(p)
    assert isinstance(arr, tio.TiffArray)
    assert arr.shape == a.shape and arr.ndim == 3 and len(arr) == 7 and arr.size == a.size
    assert arr.dtype == np.dtype(dtype) and arr.dtype.isnative
    for key in _KEYS:
        got = arr[key]
        assert isinstance(got, np.ndarray) and got.dtype == arr.dtype, key
        np.testing.assert_array_equal(got, full[key], err_msg=str(key))
    np.testing.assert_array_equal(np.asarray(arr), full)
    np.testing.assert_array_equal(np.asarray(arr, dtype=np.float64), full.astype(np.float64))
    view = arr.subarray(np.s_[1:6]).transpose(2, 0, 1)  # lazy views compose like numpy's
    assert isinstance(view, tio.TiffArray) and view.shape == (9, 5, 11)
    np.testing.assert_array_equal(view[2:5, 1, ::2], full[1:6].transpose(2, 0, 1)[2:5, 1, ::2])
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(view))[:], view[:])
    with pytest.raises(IndexError, match="out of bounds"):
        arr[7]
    with pytest.raises(TypeError, match="fancy"):
        arr[[0, 2]]


def test_tiff_array_sparse_regions_read_row_by_row(tmp_path, monkeypatch):
    a = _stack((6, 40, 30))
    p = tmp_path / "a.tif"
    tifffile.imwrite(p, a, metadata={"axes": "TYX"})
    arr = tio.read_stack(p)
    reads = []
    real = tiffarray._OpenFile.read_into

    def spy(self, buf, offset):
        reads.append(len(buf))
        real(self, buf, offset)

    monkeypatch.setattr(tiffarray._OpenFile, "read_into", spy)
    monkeypatch.setattr(tiffarray, "_SPAN_BYTES", 64)  # force the split path: a tile costs about its own bytes
    tile = arr[1:5, 10:20, 3:8]
    np.testing.assert_array_equal(tile, a[1:5, 10:20, 3:8])
    assert sum(reads) <= 2 * tile.nbytes  # not the frames around it
    reads.clear()
    np.testing.assert_array_equal(arr[2:4], a[2:4])  # whole frames: one read straight into the result
    assert reads == [2 * 40 * 30 * 2]


def test_tiff_array_channels_conversion_and_dask(tmp_path):
    a = _stack((6, 3, 8, 9), dtype=np.int32)
    p = tmp_path / "h.tif"
    tifffile.imwrite(p, a, imagej=False, metadata={"axes": "TCYX"}, photometric="minisblack")
    out = tio.read_stack(p, channel=1)
    assert isinstance(out, tio.TiffArray) and out.dtype == np.float32  # channel + conversion, still lazy
    np.testing.assert_array_equal(out[2:5, 1:4], a[2:5, 1, 1:4].astype(np.float32))
    assert tio.as_timelapse(out) is out
    d = da.from_array(out, chunks=(2, 8, 9))
    np.testing.assert_array_equal(d[1:4].compute(), a[1:4, 1].astype(np.float32))


def _mapped(path) -> bool:
    """Whether this process memory-maps ``path`` (Linux: /proc/self/maps)."""
    maps = Path("/proc/self/maps")
    return maps.exists() and str(path) in maps.read_text()


def test_reading_and_denoising_a_tiff_maps_no_input_pages(tmp_path):
    from napari_unet_att import inference as infer
    from napari_unet_att.config import InferConfig
    from napari_unet_att.model.denoiser import Denoiser
    from napari_unet_att.model.normalization import Normalization

    a = _stack((24, 16, 16))
    src = tmp_path / "input_movie.tif"
    tifffile.imwrite(src, a, imagej=True, metadata={"axes": "TYX"})
    arr = tio.read_stack(src)
    arr[0:4]
    assert not _mapped(src)
    seen = []
    den = Denoiser(net=torch.nn.Identity(), arch="unet_att", base_channels=8, preset="custom", mode="temporal",
                   norm=Normalization(0.0, 1.0))
    cfg = InferConfig(device="cpu", tile_t=8, max_tile_xy=16, overlap=0, prefetch=False, output_dtype="input")
    out = infer.denoise_file(src, tmp_path / "out.tif", den, cfg, progress=lambda ev: seen.append(_mapped(src)))
    assert seen and not any(seen)
    np.testing.assert_array_equal(tifffile.imread(out), a)


def _mapped_rss_kib(name: str) -> int | None:
    """Resident KiB of this process's mappings of files whose path contains ``name`` (None off Linux)."""
    smaps = Path("/proc/self/smaps")
    if not smaps.exists():
        return None
    total, inside = 0, False
    for line in smaps.read_text().splitlines():
        first = line.split(maxsplit=1)[0]
        if "-" in first and not first.endswith(":"):  # a mapping's header line
            inside = name in line
        elif inside and first == "Rss:":
            total += int(line.split()[1])
    return total


def test_output_stack_drops_written_frames_from_memory(tmp_path):
    p = tmp_path / "released.tif"
    frame = 128 * 128 * 4
    with tio.output_stack(p, (16, 128, 128), np.float32) as out:
        for t0 in range(0, 16, 4):
            out[t0 : t0 + 4] = np.full((4, 128, 128), t0, np.float32)
            rss = _mapped_rss_kib("released.tif")
            assert rss is None or rss * 1024 <= frame // 2  # only header / boundary pages stay resident
        np.testing.assert_array_equal(np.asarray(out[4:8]), 4)  # still readable through the wrapper
        out[15, 3] = -1  # any key works
    back = tifffile.imread(p)
    np.testing.assert_array_equal(back[:, 0, 0], np.repeat(np.arange(0, 16, 4), 4))
    assert back[15, 3, 0] == -1 and back[15, 4, 0] == 12


# ----------------------------------------------------------------------------------------------
# as_timelapse
# ----------------------------------------------------------------------------------------------
def test_as_timelapse_shapes():
    a = _stack((5, 8, 8))
    assert tio.as_timelapse(a) is a  # already fine: no copy
    assert tio.as_timelapse(a[:, None]).shape == (5, 8, 8)  # singleton C squeezed
    tc = _stack((5, 2, 8, 8))
    with pytest.raises(InputError, match="2 channels"):
        tio.as_timelapse(tc)
    np.testing.assert_array_equal(tio.as_timelapse(tc, channel=1), tc[:, 1])
    cl = np.moveaxis(tc, 1, -1)  # (T, Y, X, C) with C=2: needs channel_axis
    np.testing.assert_array_equal(tio.as_timelapse(cl, channel=0, channel_axis=-1), tc[:, 0])
    with pytest.raises(InputError, match="single 2D image"):
        tio.as_timelapse(a[0])
    with pytest.raises(InputError, match="RGB"):
        tio.as_timelapse(np.zeros((16, 16, 3), np.uint8))
    with pytest.raises(InputError, match="only 2 frame"):
        tio.as_timelapse(a[:2])
    with pytest.raises(InputError, match="mask"):
        tio.as_timelapse(a > 3)


def test_as_timelapse_keeps_lazy_arrays_lazy():
    a = _stack((6, 8, 8), dtype=np.int32)
    d = da.from_array(a, chunks=(2, 8, 8))
    out = tio.as_timelapse(d)
    assert isinstance(out, da.Array) and out.dtype == np.float32
    np.testing.assert_array_equal(out.compute(), a)
    z = zarr.zeros(a.shape, chunks=(2, 8, 8), dtype=a.dtype)
    z[:] = a
    out = tio.as_timelapse(z)
    assert isinstance(out, da.Array)
    np.testing.assert_array_equal(out.compute(), a)


# ----------------------------------------------------------------------------------------------
# output dtype
# ----------------------------------------------------------------------------------------------
def test_to_output_dtype_clips_rounds_never_wraps():
    x = np.array([-5.0, 0.4, 1.6, 254.5, 300.0, np.nan, np.inf], np.float32)
    np.testing.assert_array_equal(tio.to_output_dtype(x, np.uint8), [0, 0, 2, 254, 255, 0, 255])
    y = np.array([-1e12, 3e9, -40000.7], np.float32)
    np.testing.assert_array_equal(tio.to_output_dtype(y, np.int16), [-32768, 32767, -32768])
    np.testing.assert_array_equal(tio.to_output_dtype(y, np.int32), [-(2**31), 2**31 - 1, -40001])
    assert tio.to_output_dtype(np.array([1e300]), np.float32)[0] == np.finfo(np.float32).max


# ----------------------------------------------------------------------------------------------
# write_stack / read_metadata
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("dtype", "input_dtype", "imagej"), [("float32", None, True), ("input", "uint16", True),
                                                               ("input", "int32", False)])
def test_write_round_trip_with_metadata(tmp_path, dtype, input_dtype, imagej):
    x = np.random.default_rng(1).normal(50, 30, (5, 8, 8)).astype(np.float32)
    meta = {"model": "unet_att f=8", "mode": "temporal", "gain": np.float32(1.5)}
    p = tio.write_stack(tmp_path / "o.tif", x, dtype=dtype, input_dtype=input_dtype, metadata=meta)
    with tifffile.TiffFile(p) as t:
        assert t.is_imagej == imagej
        assert t.series[0].axes == "TYX"
        back = t.series[0].asarray()
    expected = x if dtype == "float32" else tio.to_output_dtype(x, input_dtype)
    np.testing.assert_array_equal(back, expected)
    md = tio.read_metadata(p)
    assert md["model"] == "unet_att f=8" and md["mode"] == "temporal" and md["gain"] == 1.5
    assert md["software"].startswith("napari-unet-att")
    assert _leftovers(tmp_path) == []


def test_write_lazy_in_blocks_and_no_metadata_file(tmp_path):
    x = da.from_array(np.arange(6 * 8 * 8, dtype=np.float32).reshape(6, 8, 8), chunks=(2, 8, 8))
    p = tio.write_stack(tmp_path / "d.tif", x, dtype="input", input_dtype=np.uint8)
    np.testing.assert_array_equal(tifffile.imread(p), np.clip(np.arange(384), 0, 255).reshape(6, 8, 8))
    plain = tmp_path / "plain.tif"
    tifffile.imwrite(plain, np.zeros((3, 4, 4), np.uint8), metadata={"axes": "TYX"})
    assert tio.read_metadata(plain) is None


def test_write_bigtiff_switch(monkeypatch, tmp_path):
    monkeypatch.setattr(stack_write, "BIGTIFF_BYTES", 100)  # pretend 100 bytes is "over 2 GB"
    p = tio.write_stack(tmp_path / "b.tif", np.ones((4, 8, 8), np.float32), metadata={"k": 1})
    with tifffile.TiffFile(p) as t:
        assert t.is_bigtiff and t.series[0].axes == "TYX"
    assert tio.read_metadata(p)["k"] == 1


@pytest.mark.parametrize(("dtype", "imagej"), [("uint16", True), ("int32", False)])
def test_output_stack_stores_what_was_added_to_its_metadata(tmp_path, dtype, imagej):
    """A streamed file's header is written first; what the job adds to the dict on the way is stored at the end
    (ImageJ 'Info' or the JSON description, a longer value than before), the pixels and axes untouched."""
    meta = {"k": 1}
    with tio.output_stack(tmp_path / "s.tif", (4, 8, 8), dtype, metadata=meta) as out:
        out[:] = np.arange(256).reshape(4, 8, 8)
        meta["steps"] = {"smoothing": "output smoothing: " + "x" * 5000}
    p = tmp_path / "s.tif"
    with tifffile.TiffFile(p) as t:
        assert t.is_imagej == imagej and t.series[0].axes == "TYX"
        np.testing.assert_array_equal(t.series[0].asarray(), np.arange(256).reshape(4, 8, 8))
    md = tio.read_metadata(p)
    assert md["k"] == 1 and md["steps"]["smoothing"].endswith("x" * 5000)
    assert _leftovers(tmp_path) == []


def test_write_full_disk_leaves_old_file_and_no_temp(monkeypatch, tmp_path):
    p = tmp_path / "o.tif"
    tio.write_stack(p, np.ones((4, 8, 8), np.float32))
    before = p.read_bytes()

    def full_disk(path, *args, **kwargs):
        with open(path, "wb") as fh:
            fh.write(b"II*\x00partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(stack_write.tifffile, "imwrite", full_disk)
    with pytest.raises(ResourceError, match="disk is full"):
        tio.write_stack(p, np.zeros((4, 8, 8), np.float32))
    assert p.read_bytes() == before
    assert _leftovers(tmp_path) == []


def _space_message(what: str, folder: Path, has: str) -> str:
    """The one wording of a refusal for lack of room (a regex): what, where, needed, free, what to do."""
    return (rf"^not enough disk space for {re.escape(what)} in {re.escape(str(folder))}: it needs about "
            rf"[0-9.]+ [MG]B and {has}; free some space there or choose another folder$")


def test_write_refuses_early_when_space_is_short(monkeypatch, tmp_path):
    monkeypatch.setattr(atomic, "free_bytes", lambda d: 10)
    with pytest.raises(ResourceError, match=_space_message("o.tif", tmp_path, r"0\.0 MB is free")):
        tio.write_stack(tmp_path / "o.tif", np.ones((4, 8, 8), np.float32))
    assert os.listdir(tmp_path) == []


def test_every_space_check_words_its_refusal_alike(monkeypatch, tmp_path):
    """The check before one file is written and the checks of a run's outputs (before any work) say the same."""
    from napari_unet_att.stackio.outputs import check_denoise_outputs, check_train_out

    monkeypatch.setattr(atomic, "free_bytes", lambda d: 2**20)
    free = r"1\.0 MB is free"
    with pytest.raises(ResourceError, match=_space_message("o.tif", tmp_path, free)):
        check_denoise_outputs([tmp_path / "in.tif"], [tmp_path / "o.tif"], nbytes=[2**20])
    with pytest.raises(ResourceError, match=_space_message("the model and its checkpoints", tmp_path / "run", free)):
        check_train_out(tmp_path / "run", n_parameters=10**6)
    with pytest.raises(ResourceError, match=_space_message("o.tif", tmp_path, free)):
        tio.write_stack(tmp_path / "o.tif", np.ones((4, 8, 8), np.float32))


def test_write_unwritable_or_missing_folder(monkeypatch, tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        tio.write_stack(tmp_path / "nope" / "o.tif", np.ones((4, 8, 8), np.float32))
    ro = tmp_path / "ro"
    ro.mkdir()
    real_open = os.open

    def deny(path, flags, *args, **kwargs):  # what the OS answers in a read-only folder (root ignores chmod)
        if str(path).startswith(str(ro)) and flags & os.O_CREAT:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(atomic.os, "open", deny)
    with pytest.raises(InputError, match="not writable"):
        tio.write_stack(ro / "o.tif", np.ones((4, 8, 8), np.float32))
    assert os.listdir(ro) == []


# ----------------------------------------------------------------------------------------------
# output_stack
# ----------------------------------------------------------------------------------------------
def test_output_stack_tiff_progressive_and_atomic(tmp_path):
    p = tmp_path / "out.tif"
    with tio.output_stack(p, (6, 8, 8), np.uint16, metadata={"model": "m"}) as out:
        assert not p.exists()  # appears only on success
        out[0:3] = 7
        out[3:6] = 9
    back = tio.read_stack(p)
    assert isinstance(back, tio.TiffArray)
    np.testing.assert_array_equal(np.asarray(back)[:, 0, 0], [7, 7, 7, 9, 9, 9])
    assert tio.read_metadata(p)["model"] == "m"
    before = p.read_bytes()
    with pytest.raises(RuntimeError, match="boom"):
        with tio.output_stack(p, (6, 8, 8), np.uint16) as out:
            out[:] = 1
            raise RuntimeError("boom")
    assert p.read_bytes() == before
    assert _leftovers(tmp_path) == []


def test_output_stack_zarr(tmp_path):
    p = tmp_path / "out.zarr"
    with tio.output_stack(p, (5, 8, 8), np.float32, metadata={"mode": "temporal"}) as out:
        out[0:5] = np.arange(5, dtype=np.float32)[:, None, None]
    assert tio.read_metadata(p)["mode"] == "temporal"
    np.testing.assert_array_equal(np.asarray(tio.read_stack(p))[:, 0, 0], np.arange(5))
    with pytest.raises(ValueError, match="boom"):
        with tio.output_stack(p, (5, 8, 8), np.float32) as out:
            out[:] = -1
            raise ValueError("boom")
    np.testing.assert_array_equal(np.asarray(tio.read_stack(p))[:, 0, 0], np.arange(5))  # old result kept
    assert sorted(os.listdir(tmp_path)) == ["out.zarr"]


def test_output_stack_full_disk_on_reserve(monkeypatch, tmp_path):
    def no_space(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "posix_fallocate", no_space, raising=False)
    with pytest.raises(ResourceError, match=_space_message("o.tif", tmp_path, r"the file system refused to reserve "
                                                                              r"it \(full, or over quota\)")):
        with tio.output_stack(tmp_path / "o.tif", (4, 8, 8), np.float32):
            pass
    assert os.listdir(tmp_path) == []
