"""CLI subcommands on tiny files: train, denoise, evaluate, info, demo (happy paths; bad input in test_robustness)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from napari_unet_att.cli import main
from napari_unet_att.evaluation.simulator import simulate
from napari_unet_att.stackio import read_metadata

TINY = ["--patch-t", "8", "--patch-xy", "16", "--batch-size", "1", "--device", "cpu"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    sim = simulate(n_frames=40, size=32, photons=5.0, seed=4)
    tifffile.imwrite(d / "noisy.tif", sim.noisy)
    tifffile.imwrite(d / "clean.tif", sim.clean.astype(np.float32))
    tifffile.imwrite(d / "labels.tif", sim.labels().astype(np.uint16))
    return d


@pytest.fixture(scope="module")
def model(files):
    out = files / "run"
    assert main(["train", str(files / "noisy.tif"), "--out", str(out), "--steps", "3", *TINY]) == 0
    return out / "model.pt"


def test_train_writes_model_and_prints_json(model, capsys):
    assert model.exists() and (model.parent / "checkpoint-last.pt").exists()


def test_denoise_keeps_shape_and_dtype(files, model, capsys):
    out = files / "den.tif"
    assert main(["denoise", str(files / "noisy.tif"), "--model", str(model), "--out", str(out), "--device", "cpu",
                 "--dtype", "input"]) == 0
    res = tifffile.imread(out)
    src = tifffile.imread(files / "noisy.tif")
    assert res.shape == src.shape and res.dtype == src.dtype
    meta = read_metadata(out)
    assert meta and "denoiser" in json.dumps(meta)
    out32 = files / "den32.tif"
    assert main(["denoise", str(files / "noisy.tif"), "--model", str(model), "--out", str(out32), "--float32"]) == 0
    assert tifffile.imread(out32).dtype == np.float32


def test_denoise_output_type_by_default_keeps_whole_counts_only_where_the_noise_allows(files, model, capsys):
    # 5 photons at 20 counts per photon: noise SD ~45 counts, under WHOLE_COUNTS_SD: float32, said and recorded
    out = files / "den_auto.tif"
    assert main(["denoise", str(files / "noisy.tif"), "--model", str(model), "--out", str(out), "--device", "cpu"]) == 0
    assert tifffile.imread(out).dtype == np.float32
    assert "output type: float32, not the input's uint16" in capsys.readouterr().out
    assert read_metadata(out)["steps"]["output_dtype"].startswith("float32")
    loud = files / "loud.tif"  # 2 photons at 100 counts per photon: SD ~140 counts, whole counts kept
    tifffile.imwrite(loud, simulate(n_frames=40, size=32, photons=2.0, seed=5, gain=100.0).noisy)
    out = files / "den_loud.tif"
    assert main(["denoise", str(loud), "--model", str(model), "--out", str(out), "--device", "cpu"]) == 0
    assert tifffile.imread(out).dtype == np.uint16
    assert read_metadata(out)["steps"]["output_dtype"].startswith("uint16, as the input")
    with pytest.raises(SystemExit):  # two answers to one question: refused, not one of them picked
        main(["denoise", str(loud), "--model", str(model), "--out", str(files / "x.tif"), "--float32", "--dtype",
              "input"])
    assert "not allowed with argument --float32" in capsys.readouterr().err and not (files / "x.tif").exists()


def test_denoise_smoothing_option(files, model, capsys):
    from napari_unet_att.inference.bands import combine
    from napari_unet_att.inference.smoothing import smooth

    outs = {}
    for setting in ("off", "3,0.5", "6,0.5,2,0", "auto"):
        out = files / f"smooth_{setting}.tif"
        assert main(["denoise", str(files / "noisy.tif"), "--model", str(model), "--out", str(out), "--float32",
                     "--smoothing", setting, "--give-back", "off"]) == 0  # (the smoothing alone)
        outs[setting] = tifffile.imread(out)
    want = smooth(outs["off"], 3.0, 0.5)
    want += (outs["off"].mean(axis=(1, 2)) - want.mean(axis=(1, 2)))[:, None, None]
    np.testing.assert_allclose(outs["3,0.5"], want, rtol=1e-4, atol=1e-2)
    # two scales as given: the detail coarser than 2 px not smoothed over time, the fine detail over 6 frames
    want = combine(smooth(outs["off"], 6.0, 0.5), outs["off"], 2.0)
    want += (outs["off"].mean(axis=(1, 2)) - want.mean(axis=(1, 2)))[:, None, None]
    np.testing.assert_allclose(outs["6,0.5,2,0"], want, rtol=1e-4, atol=1e-2)
    said = capsys.readouterr()
    assert "output smoothing: Gaussian sigma 3 frames, 0.5 px (as given)" in said.out + said.err
    assert "Gaussian sigma 6 frames, 0.5 px, detail coarser than 2 px over 0 frames (as given)" in said.out + said.err
    with pytest.raises(SystemExit):
        main(["denoise", str(files / "noisy.tif"), "--model", str(model), "--out", str(files / "x.tif"),
              "--smoothing", "strong"])
    assert "expected auto, off, two sigmas T,XY" in capsys.readouterr().err


def test_denoise_overlap_option(files, model, capsys):
    """--overlap reaches the tiles (a tiny overlap changes the result, the default does not); a negative one is
    refused before any file is written."""
    outs = {}
    for name, extra in (("default", []), ("ov32", ["--overlap", "32"]), ("ov2", ["--overlap", "2"])):
        out = files / f"{name}.tif"
        assert main(["denoise", str(files / "noisy.tif"), "--model", str(model), "--out", str(out), "--float32",
                     "--smoothing", "off", "--tile-t", "8", *extra]) == 0
        outs[name] = tifffile.imread(out)
    np.testing.assert_array_equal(outs["default"], outs["ov32"])
    assert not np.array_equal(outs["default"], outs["ov2"])
    bad = files / "bad.tif"
    assert main(["denoise", str(files / "noisy.tif"), "--model", str(model), "--out", str(bad), "--overlap", "-1"]) != 0
    assert "overlap must be >= 0" in capsys.readouterr().err and not bad.exists()


def test_denoise_several_files_into_directory(files, model):
    outdir = files / "many"
    args = ["denoise", str(files / "noisy.tif"), str(files / "clean.tif"), "--model", str(model), "--out", str(outdir)]
    assert main(args) == 0
    assert sorted(p.name for p in outdir.iterdir()) == ["clean_denoised.tif", "noisy_denoised.tif"]


def test_evaluate_prints_metrics(files, capsys):
    capsys.readouterr()
    args = ["evaluate", str(files / "noisy.tif"), "--reference", str(files / "clean.tif"), "--rois",
            str(files / "labels.tif")]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)
    text = json.dumps(result)
    assert "psnr" in text and "ssim" in text


def test_info_describes_model(model, capsys):
    capsys.readouterr()
    assert main(["info", str(model)]) == 0
    out = capsys.readouterr().out
    assert "unet_att" in out and "temporal" in out


def test_resume_from_cli(files, model):
    assert main(["train", str(files / "noisy.tif"), "--out", str(model.parent), "--steps", "2",
                 "--resume", str(model.parent / "checkpoint-last.pt"), *TINY]) == 0
    from napari_unet_att.model.checkpoint import load_checkpoint

    assert load_checkpoint(model).step == 5


def test_init_from_our_checkpoint(files, model, tmp_path):
    assert main(["train", str(files / "noisy.tif"), "--out", str(tmp_path), "--steps", "1", "--init", str(model),
                 *TINY]) == 0
    assert (tmp_path / "model.pt").exists()


def test_python_m_entry_point_help():
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "napari_unet_att", "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "denoise" in r.stdout and "train" in r.stdout


def test_generalist_denoises_without_training_and_keeps_brightness(files, capsys):
    out = files / "zero_shot.tif"
    assert main(["denoise", str(files / "noisy.tif"), "--model", "generalist", "--out", str(out), "--float32",
                 "--device", "cpu"]) == 0
    raw = tifffile.imread(files / "noisy.tif").astype(np.float32)
    den, clean = tifffile.imread(out), tifffile.imread(files / "clean.tif")
    np.testing.assert_allclose(den.mean(axis=(1, 2)), raw.mean(axis=(1, 2)), rtol=1e-3)  # every frame
    assert np.mean((den - clean) ** 2) < 0.5 * np.mean((raw - clean) ** 2)  # a real gain, with no training
    capsys.readouterr()
    assert main(["info", "generalist", "--mode", "mirrored"]) == 0
    info = capsys.readouterr().out
    assert "'mirrored'" in info and "trained_on" in info and "command" in info


def test_finetune_from_generalist_records_its_parent(files, capsys):
    out = files / "ft"
    assert main(["train", str(files / "noisy.tif"), "--init", "generalist", "--out", str(out), "--steps", "2",
                 *TINY]) == 0
    capsys.readouterr()
    assert main(["info", str(out / "model.pt")]) == 0
    prov = json.loads(capsys.readouterr().out.split("\n", 1)[1])["provenance"]
    assert prov["parent"]["model"] == "generalist" and prov["parent"]["mode"] == "temporal"
    assert prov["parent"]["source"] == "napari-unet-att generalist pretraining"
    assert prov["normalization"] == "input" and "command" not in prov  # its own history, not the parent's


def test_demo_scores_the_generalists_on_held_out_samples(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "demo"), "--device", "cpu"]) == 0
    report = json.loads(capsys.readouterr().out)
    for case in ("temporal", "mirrored"):
        r = report[case]
        assert "generalist" in r["model"] and r["fine_tune_seconds"] == 0.0
        assert r["gain_over_raw_db"] > 5.0  # the shipped models really denoise data they never saw
        assert r["unet_att"]["max_frame_mean_shift_pct"] < 1.0  # brightness kept frame by frame
        assert isinstance(r["gain_over_gaussian_db"], float)
    assert 0.0 < report["temporal"]["unet_att"]["trace_r"] <= 1.0
    assert (tmp_path / "demo" / "metrics.json").exists() and (tmp_path / "demo" / "temporal_denoised.tif").exists()


def _auto_and_off(noisy, model, tmp_path, capsys, option: str) -> tuple[dict, dict]:
    """``denoise --<option> auto`` and ``off`` on ``noisy``: the outputs and what each printed, by setting."""
    src = tmp_path / f"{option}.tif"
    tifffile.imwrite(src, noisy)
    outs, said = {}, {}
    for setting in ("auto", "off"):
        out = tmp_path / f"{option}_{setting}.tif"
        assert main(["denoise", str(src), "--model", str(model), "--out", str(out), "--float32", f"--{option}",
                     setting]) == 0
        printed = capsys.readouterr()
        said[setting], outs[setting] = printed.out + printed.err, tifffile.imread(out)
    with pytest.raises(SystemExit):
        main(["denoise", str(src), "--model", str(model), f"--{option}", "sometimes"])
    assert not np.allclose(outs["auto"], outs["off"])
    return outs, said


def test_denoise_registration_option(files, model, tmp_path, capsys):
    sim = simulate(n_frames=40, size=64, photons=5.0, motion_std=1.5, motion="jitter", seed=5)
    outs, said = _auto_and_off(sim.noisy, model, tmp_path, capsys, "registration")
    for setting in ("auto", "off"):
        assert ("frame registration: " in said[setting]) is (setting == "auto")
        assert ("moved back" in said[setting]) is (setting == "auto")
    assert outs["auto"].shape == outs["off"].shape == sim.noisy.shape


def test_denoise_keep_average_option(model, tmp_path, capsys):
    sim = simulate(n_frames=120, size=32, photons=2.0, seed=6)
    outs, said = _auto_and_off(sim.noisy, model, tmp_path, capsys, "keep-average")
    assert "time average: restored" in said["auto"] and "time average: " not in said["off"]
    np.testing.assert_allclose(outs["auto"].mean(axis=(1, 2)), outs["off"].mean(axis=(1, 2)), atol=1e-2)


def test_denoise_a_bidirectional_scan_into_its_physical_frames(tmp_path, capsys, monkeypatch):
    """``--mirrored-output merged``: a mirrored-scan model's two directions averaged into (T, N, N), every frame's
    mean the input's (both directions of its lines); the default keeps the raw (T, 2N, N) layout. The disk is checked
    for each layout's own size."""
    from napari_unet_att.stackio import outputs

    noisy = simulate(n_frames=24, size=32, photons=3.0, bidirectional=True, seed=4).noisy
    src = tmp_path / "scan.tif"
    tifffile.imwrite(src, noisy)
    outs, asked, check = {}, [], outputs.check_denoise_outputs
    monkeypatch.setattr(outputs, "check_denoise_outputs", lambda *a, **k: asked.append(k["nbytes"]) or check(*a, **k))
    for layout in ("merged", "interleaved"):
        out = tmp_path / f"{layout}.tif"
        assert main(["denoise", str(src), "--model", "generalist", "--mode", "mirrored", "--out", str(out),
                     "--dtype", "float32", "--device", "cpu", "--mirrored-output", layout]) == 0
        outs[layout] = tifffile.imread(out)
        assert read_metadata(out)["settings"]["mirrored_output"] == layout
    capsys.readouterr()
    assert outs["interleaved"].shape == noisy.shape and outs["merged"].shape == (24, 32, 32)
    assert asked == [[24 * 32 * 32 * 4], [24 * 64 * 32 * 4]]  # float32 frames of each layout
    physical = 0.5 * (noisy[:, 0::2].astype(np.float64) + noisy[:, 1::2])
    np.testing.assert_allclose(outs["merged"].mean(axis=(1, 2)), physical.mean(axis=(1, 2)), rtol=1e-4)
    with pytest.raises(SystemExit):
        main(["denoise", str(src), "--model", "generalist", "--out", str(tmp_path / "x.tif"), "--mirrored-output",
              "stacked"])
