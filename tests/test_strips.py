"""Motion within frames: strips of lines denoised apart and blended (inference.strips)."""

from __future__ import annotations

import tempfile

import numpy as np
import pytest
import tifffile
import torch

from _models import Identity
from _models import make as model
from napari_unet_att import inference as infer
from napari_unet_att.cli_args import build_parser
from napari_unet_att.config import InferConfig, run_to_end
from napari_unet_att.errors import InputError
from napari_unet_att.evaluation.simulator import simulate
from napari_unet_att.inference import strips as st
from napari_unet_att.stackio import read_metadata

PLAIN = {"device": "cpu", "smoothing": "off", "keep_average": "off"}


class TimeMean(torch.nn.Module):
    """Every frame of a tile replaced by the tile's mean over time (a caricature of a temporal denoiser)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=2, keepdim=True).expand_as(x).clone()


def recording(line_motion: bool, motion: str = "jitter", photons: float = 50.0, frames: int = 48, **kw):
    """A 128 x 128 recording whose frames move by about 1 px (AR or jitter), between frames only or also while
    each frame is scanned (every line its own shift)."""
    return simulate(n_frames=frames, size=128, photons=photons, motion_std=1.0, motion=motion, seed=3,
                    line_motion=line_motion, **kw)


@pytest.mark.parametrize("rows", [50, 96, 128, 131, 512])
@pytest.mark.parametrize("n", [2, 3, 4])
def test_strips_cover_every_line_and_their_weights_add_up_to_one(rows, n):
    cut = st.strip_rows(rows, n)
    assert len(cut) == n
    covered = np.zeros(rows, int)
    total = np.zeros(rows)
    for (y0, y1, centre), w in zip(cut, st.weights(cut, rows), strict=True):
        assert 0 <= y0 < centre < y1 <= rows and y1 - y0 >= st.MIN_STRIP_ROWS and len(w) == y1 - y0
        covered[y0:y1] += 1
        total[y0:y1] += w
    assert covered.min() >= 1 and covered.max() <= 3  # overlapping, never more than 3 deep
    np.testing.assert_allclose(total, 1.0)
    assert st.strip_rows(rows, 1) == ()


def test_too_many_strips_for_the_frame_are_refused():
    with pytest.raises(InputError, match="use fewer strips"):
        st.strip_rows(64, 8)  # 12 lines each


def test_a_strip_reads_any_region_like_the_stack(rng):
    stack = rng.normal(size=(12, 30, 9)).astype(np.float32)
    part = st.RowStrip(stack, 7, 19)
    want = stack[:, 7:19]
    assert part.shape == want.shape and part.dtype == stack.dtype
    for key in [(slice(None),), (slice(2, 5),), (slice(1, 8), slice(3, 10), slice(2, 7)), (4,), (slice(0, 3), 5),
                (slice(3, 9), slice(-4, None)), (slice(0, 0),), (slice(1, 2), slice(5, 50))]:
        np.testing.assert_array_equal(part[key], want[key])
    with pytest.raises(TypeError, match="contiguous"):
        part[:, ::2]
    block = st.RowStrip(stack, 7, 19, 2, 8)
    assert block.shape == (12, 12, 6)
    for key in [(slice(None),), (slice(1, 8), slice(3, 10), slice(2, 5)), (4, 3), (slice(0, 3), slice(None), -1)]:
        np.testing.assert_array_equal(block[key], stack[:, 7:19, 2:8][key])


@pytest.mark.parametrize("setting", ["x", 0, 65, 2.5, True, np.True_, "-1", float("inf"), float("nan"), b"4", None])
def test_the_strips_setting_is_checked(setting):
    with pytest.raises(InputError, match="strips"):
        InferConfig(strips=setting)


def test_a_number_of_strips_may_be_given_as_text():
    assert InferConfig(strips="4").strips == 4 and InferConfig(strips="off").strips == "off"
    assert InferConfig(strips=np.int64(3)).strips == 3 and InferConfig(strips=4.0).strips == 4
    args = ["denoise", "in.tif", "--model", "generalist", "--out", "out"]
    assert build_parser().parse_args([*args, "--strips", "6"]).strips == 6
    assert build_parser().parse_args(args).strips == "auto"


def test_strips_of_an_identity_model_give_the_input_back(rng):
    stack = (rng.poisson(40.0, (24, 64, 40)) + rng.normal(0, 5, (1, 64, 40))).astype(np.float32)
    events = []
    out = infer.denoise(stack, model(Identity()), InferConfig(strips=3, **PLAIN), progress=events.append)
    np.testing.assert_allclose(out, stack, rtol=1e-5, atol=1e-3)
    said = [e.message for e in events if e.message.startswith(st.SAID)]
    assert said == [f"{st.SAID}3 strips of 32 lines denoised apart and blended (asked for)"]
    assert any(e.message.startswith("strip 3 of 3: ") for e in events)  # each strip's own steps, named
    assert events[-1].done == events[-1].total


def test_one_strip_is_the_plain_job(rng):
    stack = rng.poisson(20.0, (20, 48, 48)).astype(np.float32)
    den = model(TimeMean())
    plain = infer.denoise(stack, den, InferConfig(strips="off", **PLAIN))
    for setting in (1, "auto"):  # 'auto': 48 lines are too few to cut
        np.testing.assert_array_equal(infer.denoise(stack, den, InferConfig(strips=setting, **PLAIN)), plain)


def test_strips_are_cut_only_where_frames_move_while_scanned():
    for motion in ("jitter", "ar"):
        for lines, want in ((False, False), (True, True)):
            sim = recording(lines, motion, photons=2.0, frames=64)
            choice = run_to_end(st.iter_choose_strips("auto", sim.noisy))
            assert choice.active == want, (motion, lines, choice.reason)
            assert ("non-rigid motion" if want else "no non-rigid motion measured") in choice.reason
            assert not choice.cols  # (the left and right columns move alike)
    still = simulate(n_frames=64, size=128, photons=2.0, seed=3)
    assert not run_to_end(st.iter_choose_strips("auto", still.noisy)).active


def test_strips_let_a_temporal_model_follow_motion_within_frames():
    sim = recording(line_motion=True, spike_rate=0.0)  # still cells: TimeMean is right where frames align
    errors = {}
    for setting in ("off", 4):
        out = infer.denoise(sim.noisy, model(TimeMean()), InferConfig(strips=setting, **PLAIN))
        errors[setting] = float(np.mean((out - sim.clean) ** 2))
        np.testing.assert_allclose(out.mean(axis=(1, 2)), sim.noisy.mean(axis=(1, 2)), rtol=1e-5)  # means kept
    assert errors[4] < 0.6 * errors["off"], errors


def test_columns_are_cut_where_the_left_and_right_of_the_frames_move_apart():
    sim = recording(line_motion=True, spike_rate=0.0)
    noisy, clean = (np.ascontiguousarray(a.transpose(0, 2, 1)) for a in (sim.noisy, sim.clean))  # shear along x
    choice = run_to_end(st.iter_choose_strips("auto", noisy))
    assert not choice.rows and len(choice.cols) == 4 and "left and right columns" in choice.reason
    events, errors = [], {}
    for setting in ("off", "auto"):
        out = infer.denoise(noisy, model(TimeMean()), InferConfig(strips=setting, **PLAIN), progress=events.append)
        errors[setting] = float(np.mean((out - clean) ** 2))
    assert any(e.message.startswith(f"{st.SAID}4 strips of 48 columns denoised") for e in events)
    assert errors["auto"] < 0.6 * errors["off"], errors


def test_frames_too_short_to_register_a_strip_are_not_cut(rng):
    stack = rng.poisson(30.0, (40, 8, 128)).astype(np.float32)
    choice = run_to_end(st.iter_choose_strips("auto", stack))
    assert not choice.active and choice.reason.startswith("frames too small to cut (8 x 128")


def test_a_turned_view_reads_like_the_swapped_array(rng):
    stack = rng.normal(size=(5, 7, 9)).astype(np.float32)
    turned = st._Turned(stack)
    assert turned.shape == (5, 9, 7)
    for key in [(slice(None),), (slice(1, 3), slice(2, 8), slice(0, 5))]:
        np.testing.assert_array_equal(turned[key], stack.transpose(0, 2, 1)[key])


def test_blocks_of_an_identity_model_give_the_input_back(rng):
    stack = rng.poisson(40.0, (20, 60, 50)).astype(np.float32)
    cut = st.Strips(st.strip_rows(60, 3), "test", 1, st.strip_rows(50, 2))
    events = []
    out = np.empty_like(stack)
    run_part = lambda part, dest: infer.DenoiseJob.unchecked(part, model(Identity()),  # noqa: E731
                                                             InferConfig(strips="off", **PLAIN)).run(dest)
    infer_out = run_to_end(st.iter_strips(stack, cut, run_part, out, True, "float32", True), events.append)
    assert infer_out is out and cut.describe().startswith(f"{st.SAID}3 strips of 30 lines by 2 strips of 38 columns")
    np.testing.assert_allclose(out, stack, rtol=1e-5, atol=1e-3)
    assert events[-1].done == events[-1].total


def test_strips_stream_to_a_file_like_in_memory_and_leave_no_temporary_files(tmp_path, monkeypatch, rng):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    stack = np.clip(rng.normal(300, 60, (20, 64, 32)), 0, None).astype(np.uint16)
    src, dst = tmp_path / "in.tif", tmp_path / "out.tif"
    tifffile.imwrite(src, stack)
    cfg = InferConfig(strips=2, output_dtype="input", tile_t=8, overlap=2, **PLAIN)
    den = model(TimeMean())
    infer.denoise_file(src, dst, den, cfg)
    want = infer.denoise(stack, den, cfg)
    np.testing.assert_array_equal(tifffile.imread(dst), want)
    assert want.dtype == np.uint16
    assert not list((tmp_path / "tmp").iterdir())
    assert read_metadata(dst)["steps"]["strips"] == "2 strips of 48 lines denoised apart and blended (asked for)"


@pytest.mark.parametrize("flip", [False, True])
def test_a_bidirectional_scan_is_cut_into_whole_lines(rng, flip):
    stack = rng.poisson(30.0, (20, 64, 32)).astype(np.float32)  # 32 lines, each scanned twice
    den = model(Identity(), "mirrored", flip=flip)
    events = []
    out = infer.denoise(stack, den, InferConfig(strips=2, **PLAIN), progress=events.append)
    np.testing.assert_allclose(out, stack, rtol=1e-5, atol=1e-3)
    assert f"{st.SAID}2 strips of 24 lines denoised apart and blended (asked for)" in [e.message for e in events]
    merged = infer.denoise(stack, den, InferConfig(strips=2, mirrored_output="merged", **PLAIN))
    back = stack[:, 1::2, ::-1] if flip else stack[:, 1::2]
    np.testing.assert_allclose(merged, 0.5 * (stack[:, 0::2] + back), rtol=1e-5, atol=1e-3)


def test_strips_follow_motion_within_the_frames_of_a_bidirectional_scan():
    sim = simulate(n_frames=48, size=96, photons=50.0, motion_std=1.0, motion="jitter", seed=3, line_motion=True,
                   bidirectional=True, spike_rate=0.0)  # (48, 192, 96): 96 lines
    den = model(TimeMean(), "mirrored")
    events, errors = [], {}
    for setting in ("off", "auto"):
        out = infer.denoise(sim.noisy, den, InferConfig(strips=setting, mirrored_output="merged", **PLAIN),
                            progress=events.append)
        errors[setting] = float(np.mean((out - sim.clean) ** 2))
    assert any(e.message.startswith(f"{st.SAID}3 strips of 48 lines") for e in events)
    assert errors["auto"] < 0.6 * errors["off"], errors


@pytest.mark.parametrize("lines", [49, 50, 99])
def test_each_strip_of_a_scan_calibrates_its_smoothing_on_whole_lines(rng, lines):
    """A strip's smoothing calibration block is whole lines of its own (it once took a whole scan's rows: a block
    that started on a backward line, or broke the merged output)."""
    from napari_unet_att.inference.smoothing import calibration_block

    for y in (2 * 17, 2 * 33, 2 * lines):
        _, rows, cols = calibration_block((40, y, lines), bidirectional=True)
        assert 0 <= rows.start < rows.stop <= y and rows.start % 2 == 0 and (rows.stop - rows.start) % 2 == 0
        assert cols.start == lines - cols.stop  # symmetric: the backward lines' columns, reversed, are the same
    stack = rng.poisson(30.0, (32, 2 * lines, lines)).astype(np.float32)
    for output in ("merged", "interleaved"):
        out = infer.denoise(stack, model(TimeMean(), "mirrored"),
                            InferConfig(device="cpu", strips=3, smoothing="auto", keep_average="off",
                                        registration="off", mirrored_output=output))
        assert out.shape == ((32, lines, lines) if output == "merged" else stack.shape)


def test_a_numpy_destination_is_filled_in_memory(rng, monkeypatch):
    monkeypatch.setattr(np.lib.format, "open_memmap", lambda *a, **k: pytest.fail("a temporary file was made"))
    stack = rng.poisson(30.0, (20, 64, 32)).astype(np.float32)
    out = np.zeros_like(stack)
    assert infer.denoise(stack, model(Identity()), InferConfig(strips=2, **PLAIN), out=out) is out
    np.testing.assert_allclose(out, stack, rtol=1e-5, atol=1e-3)


def test_cancelling_in_a_strip_leaves_no_file_and_no_thread(tmp_path, monkeypatch, rng):
    import threading

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    src, dst = tmp_path / "in.tif", tmp_path / "out.tif"
    tifffile.imwrite(src, rng.poisson(30.0, (40, 64, 32)).astype(np.uint16))
    baseline = threading.active_count()
    gen = infer.iter_denoise_file(src, dst, model(TimeMean()), InferConfig(strips=2, tile_t=8, overlap=2, **PLAIN))
    events = [next(gen) for _ in range(8)]
    assert events[-1].done < events[-1].total and list((tmp_path / "tmp").iterdir())  # mid-job, strips on disk
    gen.close()
    assert not dst.exists() and not list((tmp_path / "tmp").iterdir())
    assert threading.active_count() <= baseline
