"""Tiled inference: exact cover, seamless blending, intensity scale, modes, streaming, cancel."""

from __future__ import annotations

import threading
import tracemalloc

import numpy as np
import pytest
import tifffile
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from _models import Identity, make
from napari_unet_att import inference as infer
from napari_unet_att.config import POST_STEPS, InferConfig, InferEvent, run_to_end
from napari_unet_att.errors import InputError
from napari_unet_att.inference import accumulate, denoising
from napari_unet_att.inference import tiles as tiling
from napari_unet_att.model.normalization import Normalization

# --------------------------------------------------------------------------- stand-in models


class Smooth3(torch.nn.Module):
    """3x3x3 box filter with replicate padding: a model whose untiled output is easy to compute."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool3d(F.pad(x, (1, 1, 1, 1, 1, 1), mode="replicate"), 3, stride=1)


class AddConst(torch.nn.Module):
    def __init__(self, c: float) -> None:
        super().__init__()
        self.c = c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.c


class AddXRamp(torch.nn.Module):
    """Adds the x coordinate: not mirror-symmetric, so it shows whether flips are undone."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.arange(x.shape[-1], dtype=x.dtype)


class Square(torch.nn.Module):
    """Squares: a model that is not linear."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * x


class FailOnCall(torch.nn.Module):
    def __init__(self, n: int) -> None:
        super().__init__()
        self.calls = 0
        self.n = n

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls >= self.n:
            raise RuntimeError("boom")
        return x.clone()


def cfg(**kw) -> InferConfig:
    # keep_mean and the steps around the network off: these tests compare the tiling machinery
    # with the bare network's output
    base = dict(device="cpu", tile_t=8, max_tile_xy=16, overlap=4, prefetch=False, keep_mean=False, smoothing="off",
                registration="off", keep_average="off", strips="off", line_phase="off", give_back="off")
    base.update(kw)
    return InferConfig(**base)


def blob(shape: tuple[int, int, int], sigma: float = 6.0) -> np.ndarray:
    grids = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij")
    r2 = sum((g - (n - 1) / 2) ** 2 for g, n in zip(grids, shape, strict=True))
    return (100.0 * np.exp(-r2 / (2 * sigma**2)) + 0.05 * grids[0] + 10.0).astype(np.float32)


# --------------------------------------------------------------------------- plan / windows


@settings(max_examples=60, deadline=None)
@given(
    shape=st.tuples(*[st.integers(1, 50)] * 3),
    tile=st.tuples(*[st.integers(1, 24)] * 3),
    overlap=st.integers(0, 30),
)
def test_plan_tiles_cover_exactly(shape, tile, overlap):
    tiles = infer.plan_tiles(shape, tile, overlap)
    ov = infer.effective_overlap(shape, tuple(min(t, s) for t, s in zip(tile, shape, strict=True)), overlap)
    count = np.zeros(shape, dtype=np.int32)
    for sl in tiles:
        count[sl] += 1
        # same size everywhere, clipped to the volume, never outside it
        assert tuple(s.stop - s.start for s in sl) == tuple(min(t, n) for t, n in zip(tile, shape, strict=True))
        assert all(0 <= s.start and s.stop <= n for s, n in zip(sl, shape, strict=True))
    assert count.min() >= 1
    starts_t = [sl[0].start for sl in tiles]
    assert starts_t == sorted(starts_t)  # t order: blocks can be flushed
    for ax in range(3):
        starts = sorted({sl[ax].start for sl in tiles})
        if shape[ax] <= tile[ax]:
            assert starts == [0] and ov[ax] == 0  # fits: one tile, no overlap
        else:
            assert 0 <= ov[ax] <= min(overlap, tile[ax] // 2)
            steps = np.diff(starts)
            assert (steps > 0).all() and (steps <= tile[ax] - ov[ax]).all()  # overlap at least ov
            assert starts[-1] + tile[ax] == shape[ax]  # last tile shifted back, not padded


def test_auto_tiles_fit_the_budget_with_receptive_field_overlap():
    import torch

    from napari_unet_att import model as networks
    from napari_unet_att.runtime import resources

    rf = networks.receptive_field("unet_att")
    den = make(networks.build_network("unet_att", 8))
    shape = (400, 128, 128)
    # A generous budget: the whole stack is one tile, so no work is spent on overlaps.
    big = infer.resolve_tiles(shape, den, InferConfig(memory_gb=100.0), torch.device("cpu"))
    assert big.tile_t == 400 and infer.plan_tiles(shape, infer.tile_shape_for(shape, big), rf) == [
        (slice(0, 400), slice(0, 128), slice(0, 128))]
    # A tight budget: the fewest tiles that fit, neighbours overlapping by at least the receptive field.
    small = infer.resolve_tiles(shape, den, InferConfig(memory_gb=2.0), torch.device("cpu"))
    tile = infer.tile_shape_for(shape, small)
    assert tile[0] < 400 and resources.estimate_inference_memory(tile, "unet_att", 8) <= 2.0e9
    starts = [sl[0].start for sl in infer.plan_tiles(shape, tile, infer.effective_overlap(shape, tile, rf))]
    assert starts[0] == 0 and starts[-1] + tile[0] == 400
    assert all(tile[0] - d >= min(rf, tile[0] // 2) for d in np.diff(starts))


def test_default_cpu_budget_narrows_large_frames_not_time():
    import torch

    from napari_unet_att.model import networks
    from napari_unet_att.runtime import resources

    den = make(networks.build_network("unet_att", 8))
    shape = (2000, 512, 512)  # a real recording: whole frames would leave a few frames per tile
    cfg = infer.resolve_tiles(shape, den, InferConfig(), torch.device("cpu"))
    tile = infer.tile_shape_for(shape, cfg)
    assert tile[0] >= infer.MIN_CONTEXT_T and tile[1] == tile[2] < 512
    assert resources.estimate_inference_memory(tile, "unet_att", 8) <= infer.DEFAULT_CPU_BUDGET_GB * 1e9
    # Whole frames are kept when they leave enough frames per tile.
    short = infer.resolve_tiles((400, 128, 128), den, InferConfig(), torch.device("cpu"))
    assert infer.tile_shape_for((400, 128, 128), short)[1:] == (128, 128)


def test_auto_tiles_pick_the_fitting_plan_with_least_work():
    import math

    import torch

    from napari_unet_att import model as networks

    den = make(networks.build_network("unet_att", 8))
    ov = infer.wanted_overlap(InferConfig(), "unet_att")
    assert ov == min(networks.receptive_field("unet_att"), infer.DEFAULT_OVERLAP) == 32
    shape = (4000, 512, 512)
    budget = 1.0
    cfg = infer.resolve_tiles(shape, den, InferConfig(memory_gb=budget), torch.device("cpu"))
    chosen = infer.tile_shape_for(shape, cfg)

    def work(tile):  # voxels computed, overlaps included
        return len(infer.plan_tiles(shape, tile, ov)) * math.prod(tile)

    # Every other width (multiples of 8, the pooling step) with its longest fitting tile (and enough frames) does
    # at least as much work: the halves of 512 that were the only candidates once, and the widths between them.
    for xy in range(infer.MIN_TILE_XY, 513, 8):
        longest = tiling._longest_tile(shape[0], (xy, xy), budget * 1e9, den, 1)
        tile_t = tiling._fewest_tiles_length(shape[0], longest, ov)
        if tile_t >= infer.MIN_CONTEXT_T:
            assert work(chosen) <= work((tile_t, xy, xy)), (chosen, xy, tile_t)
    assert chosen[0] >= infer.MIN_CONTEXT_T
    # any overlap the user asks for gives a plan (the widths stop shrinking towards a wide overlap)
    wide = infer.resolve_tiles(shape, den, InferConfig(overlap=200), torch.device("cpu"))
    assert wide.tile_t >= 8 and 64 <= wide.max_tile_xy <= 512
    # 1000 x 256 x 256: two tiles of 144 across (overlapping by 32), not three of 128 (as the halves gave)
    assert infer.tile_shape_for((1000, 256, 256), infer.resolve_tiles((1000, 256, 256), den, InferConfig(),
                                                                      torch.device("cpu")))[1:] == (144, 144)


def test_blend_window_ramps_and_borders():
    full = (30, 20, 16)
    ov = 6
    tiles = infer.plan_tiles(full, (12, 12, 16), ov)
    for sl in tiles:
        w = infer.blend_window((12, 12, 16), sl, full, ov)
        assert w.dtype == np.float32 and w.shape == (12, 12, 16)
        assert (w > 0).all() and (w <= 1).all()
        if sl[0].start == 0:
            assert np.allclose(w[0] / w[0].max(), w[1] / w[1].max())  # no fade-in at the outer border
        else:
            assert w[0].max() < 0.05  # interior border: faded in
        assert np.allclose(w[:, :, 0], w[:, :, 8])  # x fits in one tile: constant along x
    single = infer.blend_window((5, 6, 7), (slice(0, 5), slice(0, 6), slice(0, 7)), (5, 6, 7), 4)
    assert np.array_equal(single, np.ones((5, 6, 7), np.float32))


def test_ramp_partition_of_unity_and_smooth():
    r = tiling._ramp(10)
    assert np.allclose(r + r[::-1], 1.0)
    assert (r > 0).all() and (r < 1).all() and (np.diff(r) > 0).all()
    sums = infer.weight_sums((40, 8, 8), infer.plan_tiles((40, 8, 8), (10, 8, 8), 4), 4)
    assert (sums[0] > 0.99).all()  # normalising by the weight sum is safe
    assert np.allclose(sums[0][:30], 1.0)  # regular steps: the ramps sum to exactly one


# --------------------------------------------------------------------------- exactness and scale


@settings(max_examples=25, deadline=None)
@given(
    shape=st.tuples(st.integers(1, 40), st.integers(1, 40), st.integers(1, 40)),
    tile_t=st.integers(8, 14),
    tile_xy=st.integers(16, 20),
    overlap=st.integers(0, 10),
    batch=st.integers(1, 3),
    prefetch=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_identity_reproduces_input(shape, tile_t, tile_xy, overlap, batch, prefetch, seed):
    x = np.random.default_rng(seed).normal(3.0, 2.0, shape).astype(np.float32)
    den = make(Identity(), norm=Normalization(3.0, 2.0))
    c = cfg(tile_t=tile_t, max_tile_xy=tile_xy, overlap=overlap, batch_size=batch, prefetch=prefetch)
    y = infer.denoise(x, den, c)
    assert y.shape == x.shape and y.dtype == np.float32
    np.testing.assert_allclose(y, x, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [(1, 5, 7), (8, 16, 16), (37, 19, 33), (13, 40, 17)])
def test_shape_kept_odd_sizes_and_single_tile(shape):
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    y = infer.denoise(x, make(Smooth3()), cfg(overlap=3))
    assert y.shape == x.shape and np.isfinite(y).all()


@pytest.mark.parametrize("normalization", ["model", "input"])
def test_intensity_scale_kept(normalization):
    x = np.random.default_rng(1).random((21, 18, 20), dtype=np.float32)
    raw = x * 1000 + 500
    den = make(Identity(), norm=Normalization(float(raw.mean()), float(raw.std())))
    y = infer.denoise(raw, den, cfg(normalization=normalization))
    np.testing.assert_allclose(y, raw, rtol=1e-5)  # no min-max stretch, no per-tile rescale


def test_model_normalisation_inverted():
    # a model that adds 1 in normalised units must add exactly one `scale` in input units
    raw = np.full((10, 17, 17), 500.0, np.float32)
    y = infer.denoise(raw, make(AddConst(1.0), norm=Normalization(400.0, 50.0)), cfg(keep_mean=False))
    np.testing.assert_allclose(y, 550.0, rtol=1e-6)


def test_input_normalisation_from_provenance():
    raw = np.random.default_rng(2).normal(1000.0, 10.0, (9, 16, 16)).astype(np.float32)
    den = make(AddConst(1.0), norm=Normalization(0.0, 1.0))
    den.provenance["normalization"] = "input"
    y = infer.denoise(raw, den, cfg(keep_mean=False))
    np.testing.assert_allclose(y - raw, raw.std(), rtol=1e-3)  # one input std, not one model unit


def test_output_dtype_input_clips_never_wraps():
    x = np.arange(9 * 16 * 16, dtype=np.uint16).reshape(9, 16, 16) % 100
    lo = infer.denoise(x, make(AddConst(-10.0)), cfg(output_dtype="input", keep_mean=False))
    assert lo.dtype == np.uint16
    np.testing.assert_array_equal(lo, np.clip(x.astype(np.int64) - 10, 0, None))
    hi = infer.denoise(x, make(AddConst(1e6)), cfg(output_dtype="input", keep_mean=False))
    assert (hi == 65535).all()
    # an integer destination clips even when float32 output is asked for
    out = np.zeros(x.shape, np.uint16)
    infer.denoise(x, make(AddConst(-10.0)), cfg(keep_mean=False), out=out)
    np.testing.assert_array_equal(out, lo)


def photon_counts(photons: float, gain: float, seed: int = 0) -> np.ndarray:
    """A flat recording of ``photons`` per pixel at ``gain`` counts per photon, uint16 (no offset)."""
    rng = np.random.default_rng(seed)
    return (rng.poisson(photons, (24, 24, 24)) * gain).astype(np.uint16)


def test_auto_output_type_keeps_whole_counts_only_where_rounding_costs_nothing():
    from napari_unet_att.inference.frame_means import SAID, WHOLE_COUNTS_SD, noise_sd, resolve_output_dtype

    fine = photon_counts(2.0, 100.0)  # noise SD 141 counts
    coarse = photon_counts(0.3, 1.0)  # photon counts: SD 0.55
    assert noise_sd(fine) == pytest.approx(100 * np.sqrt(2), rel=0.1)
    assert noise_sd(coarse) == pytest.approx(np.sqrt(0.3), rel=0.1)
    assert noise_sd(fine[:1]) > WHOLE_COUNTS_SD > noise_sd(coarse[:1])  # one frame: its columns' differences
    for stack, chosen in [(fine, "input"), (coarse, "float32"), (coarse.astype(np.float64), "float32")]:
        resolved, said = resolve_output_dtype(stack, cfg(output_dtype="auto"))
        assert resolved.output_dtype == chosen and said.startswith(SAID)
    assert resolve_output_dtype(coarse, cfg(output_dtype="input")) == (cfg(output_dtype="input"), "")
    with pytest.raises(InputError, match="output_dtype"):
        cfg(output_dtype="uint8")


def test_auto_output_type_keeps_dim_frames_means_where_whole_counts_would_not():
    # A model that returns each frame's mean: 0.3 counts, which whole counts round to 0 (all the brightness lost).
    class FrameMean(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.mean(dim=(-2, -1), keepdim=True).expand_as(x).clone()

    coarse = photon_counts(0.3, 1.0, seed=1)
    said: list[str] = []
    keep = {"keep_mean": True}  # (as by default: each frame's mean, tiles or not)
    auto = infer.denoise(coarse, make(FrameMean()), cfg(output_dtype="auto", **keep),
                         progress=lambda e: said.append(e.message))
    rounded = infer.denoise(coarse, make(FrameMean()), cfg(output_dtype="input", **keep))
    assert auto.dtype == np.float32 and rounded.dtype == np.uint16
    means = coarse.mean(axis=(1, 2))
    np.testing.assert_allclose(auto.mean(axis=(1, 2)), means, rtol=1e-5)
    assert np.abs(rounded.mean(axis=(1, 2)) / means - 1).max() > 0.5  # what 'input' does to such counts
    assert sum(m.startswith("output type: float32") for m in said) == 1
    fine = photon_counts(2.0, 100.0, seed=1)
    assert infer.denoise(fine, make(FrameMean()), cfg(output_dtype="auto")).dtype == np.uint16


def test_the_output_type_said_first_closes_the_job_with_it():
    from napari_unet_att.inference.frame_means import said_first

    closed = []

    def job():
        try:
            yield InferEvent(done=0, total=2)
            yield InferEvent(done=1, total=2)
            return "result"
        finally:
            closed.append(True)

    events = said_first(job(), "output type: float32")
    assert [next(events).message, next(events).message] == ["output type: float32", ""]
    events.close()  # (a cancelled run: the job's own clean-up runs now, not when it is collected)
    assert closed == [True]
    assert run_to_end(said_first(job(), "")) == "result"
    said = []
    refused = (x for x in ())  # a job with no events (refused before its first): nothing said
    assert run_to_end(said_first(refused, "output type: float32"), said.append) is None and said == []


# --------------------------------------------------------------------------- seams


def _seam_excess(tiled: np.ndarray, full: np.ndarray, tiles, axis: int) -> float:
    """Largest extra |second difference| of the tiled output at tile borders along ``axis``."""
    borders = sorted({sl[axis].start for sl in tiles} - {0} | {sl[axis].stop for sl in tiles} - {full.shape[axis]})
    d2_tiled = np.abs(np.diff(tiled.astype(np.float64), 2, axis=axis))
    d2_full = np.abs(np.diff(full.astype(np.float64), 2, axis=axis))
    idx = [b - 1 + k for b in borders for k in (-1, 0) if 0 <= b - 1 + k < d2_tiled.shape[axis]]
    return float((np.take(d2_tiled, idx, axis) - np.take(d2_full, idx, axis)).max())


def test_no_seams_smooth_model():
    x = blob((40, 40, 40))
    full = Smooth3()(torch.from_numpy(x)[None, None])[0, 0].numpy()
    c = cfg(tile_t=16, max_tile_xy=16, overlap=6)
    tiled = infer.denoise(x, make(Smooth3()), c)
    tiles = infer.plan_tiles(x.shape, (16, 16, 16), 6)
    assert len({sl[0].start for sl in tiles}) > 1 and len({sl[2].start for sl in tiles}) > 1
    scale = np.abs(np.diff(full, 2, axis=0)).max()
    assert np.abs(tiled - full).max() < 2e-3 * np.ptp(full)
    # the edge voxels of a tile are wrong (replicate padding) but weighted ~0.02: no visible seam
    for axis in range(3):
        assert _seam_excess(tiled, full, tiles, axis) < 0.08 * scale

    # control: abutting tiles without blending (a volume of whole tiles, overlap 0) show seams
    # that this test detects
    x48 = blob((48, 48, 48))
    full48 = Smooth3()(torch.from_numpy(x48)[None, None])[0, 0].numpy()
    hard = infer.denoise(x48, make(Smooth3()), cfg(tile_t=16, max_tile_xy=16, overlap=0))
    hard_tiles = infer.plan_tiles(x48.shape, (16, 16, 16), 0)
    scale48 = np.abs(np.diff(full48, 2, axis=0)).max()
    assert min(_seam_excess(hard, full48, hard_tiles, a) for a in range(3)) > 1.0 * scale48


# --------------------------------------------------------------------------- mirrored scans


def test_mirrored_interleaved_identity_and_flip():
    rng = np.random.default_rng(3)
    x = rng.random((10, 32, 16), dtype=np.float32)
    for flip in (False, True):
        y = infer.denoise(x, make(Identity(), mode="mirrored", flip=flip), cfg())
        assert y.shape == x.shape
        np.testing.assert_allclose(y, x, rtol=1e-6, atol=1e-6)
    ramp = np.arange(16, dtype=np.float32)
    y = infer.denoise(x, make(AddXRamp(), mode="mirrored", flip=True), cfg())
    np.testing.assert_allclose(y[:, 0::2], x[:, 0::2] + ramp, atol=1e-5)  # forward as stored
    np.testing.assert_allclose(y[:, 1::2], x[:, 1::2] + ramp[::-1], atol=1e-5)  # backward denoised mirrored
    y = infer.denoise(x, make(AddXRamp(), mode="mirrored", flip=False), cfg())
    np.testing.assert_allclose(y[:, 1::2], x[:, 1::2] + ramp, atol=1e-5)


def test_mirrored_merged_average_shape():
    x = np.random.default_rng(4).random((9, 40, 20), dtype=np.float32)
    y = infer.denoise(x, make(Identity(), mode="mirrored"), cfg(mirrored_output="merged"))
    assert y.shape == (9, 20, 20)
    np.testing.assert_allclose(y, 0.5 * (x[:, 0::2] + x[:, 1::2]), atol=1e-6)
    yf = infer.denoise(x, make(Identity(), mode="mirrored", flip=True), cfg(mirrored_output="merged"))
    # backward lines stored x-reversed: averaged with the forward ones in the physical orientation
    np.testing.assert_allclose(yf, 0.5 * (x[:, 0::2] + x[:, 1::2, ::-1]), atol=1e-6)


def test_mirrored_merged_output_denoises_the_physical_frames_in_one_pass():
    """Each line's two directions are averaged before the network (all its photons in one view), not after two
    passes of half of them: with a model that is not linear the two differ."""
    x = np.random.default_rng(6).random((9, 40, 20), dtype=np.float32)
    physical = np.ascontiguousarray(0.5 * (x[:, 0::2] + x[:, 1::2, ::-1]))  # backward lines stored x-reversed
    for model in (make(Smooth3(), mode="mirrored", flip=True), make(Square(), mode="mirrored", flip=True)):
        merged = infer.denoise(x, model, cfg(mirrored_output="merged"))
        np.testing.assert_allclose(merged, infer.denoise(physical, model, cfg()), atol=1e-6)
    lines = infer.denoise(x, model, cfg())  # interleaved: each direction in its own pass
    assert np.abs(merged - 0.5 * (lines[:, 0::2] + lines[:, 1::2, ::-1])).max() > 1e-3


def test_mirrored_model_other_shape_and_temporal_model_whole_stack():
    x = np.random.default_rng(5).random((9, 17, 16), dtype=np.float32)
    y = infer.denoise(x, make(AddXRamp(), mode="mirrored"), cfg())
    np.testing.assert_allclose(y, x + np.arange(16, dtype=np.float32), atol=1e-5)
    x2 = np.random.default_rng(6).random((9, 16, 8), dtype=np.float32)  # (T, 2N, N) but a temporal model
    y2 = infer.denoise(x2, make(AddXRamp(), mode="temporal"), cfg())
    np.testing.assert_allclose(y2, x2 + np.arange(8, dtype=np.float32), atol=1e-5)


# --------------------------------------------------------------------------- streaming, memory, progress


class RecordingArray:
    """Array-like that records every region read (stands in for a memmap / zarr / dask array)."""

    def __init__(self, data: np.ndarray) -> None:
        self.data, self.shape, self.dtype, self.reads = data, data.shape, data.dtype, []

    def __getitem__(self, key):
        part = self.data[key]
        self.reads.append(part.shape)
        return part


def test_reads_only_tile_regions_and_streams_to_out():
    x = np.random.default_rng(7).random((50, 20, 20), dtype=np.float32)
    src = RecordingArray(x)
    out = np.full(x.shape, np.nan, np.float32)
    res = infer.denoise(src, make(Identity()), cfg(tile_t=10, overlap=4), out=out)
    assert res is out
    np.testing.assert_allclose(out, x, atol=1e-6)
    assert src.reads and all(r[0] <= 10 and r[1] <= 16 and r[2] <= 16 for r in src.reads)


def test_zarr_and_dask_inputs():
    import dask.array as da
    import zarr

    x = np.random.default_rng(8).random((20, 18, 18), dtype=np.float32)
    z = zarr.create_array(store={}, shape=x.shape, chunks=(5, 18, 18), dtype="float32")
    z[:] = x
    for src in (z, da.from_array(x, chunks=(5, 9, 9))):
        np.testing.assert_allclose(infer.denoise(src, make(Identity()), cfg()), x, atol=1e-6)


def test_rolling_accumulator_bounded(monkeypatch):
    capacities = []

    class Spy(infer.RollingAccumulator):
        def __init__(self, capacity, frame_shape):
            capacities.append(capacity)
            super().__init__(capacity, frame_shape)

    monkeypatch.setattr(accumulate, "RollingAccumulator", Spy)
    x = np.random.default_rng(9).random((200, 16, 16), dtype=np.float32)
    y = infer.denoise(x, make(Identity()), cfg(tile_t=16, overlap=6))
    np.testing.assert_allclose(y, x, atol=1e-6)
    assert capacities == [16]  # one tile of frames, not the 200-frame stack
    assert infer.accumulator_frames(infer.plan_tiles((200, 16, 16), 16, 6), 1) == 16
    tiles = infer.plan_tiles((200, 40, 40), (16, 16, 16), 6)  # 9 tiles per frame block
    assert infer.accumulator_frames(tiles, 4) <= 16 + 6 + 10  # batches may span two blocks
    assert infer.accumulator_frames(tiles, 4) >= 16


def _peak_bytes(tmp_path, shape) -> int:
    src = np.lib.format.open_memmap(tmp_path / f"in{shape[0]}.npy", mode="w+", dtype=np.float32, shape=shape)
    src[:] = np.random.default_rng(10).random(shape, dtype=np.float32)
    dst = np.lib.format.open_memmap(tmp_path / f"out{shape[0]}.npy", mode="w+", dtype=np.float32, shape=shape)
    tracemalloc.start()
    try:
        # the time averages on (the default): their two passes over the output stay O(frame) too
        infer.denoise(src, make(Identity()), cfg(tile_t=16, max_tile_xy=32, overlap=4, keep_average="auto"), out=dst)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    np.testing.assert_allclose(dst, src, atol=1e-6)
    return peak


def test_memory_is_order_tile_not_stack(tmp_path):
    infer.denoise(np.ones((20, 32, 32), np.float32), make(Identity()), cfg())  # warm up lazy imports
    small = _peak_bytes(tmp_path, (300, 32, 32))
    large = _peak_bytes(tmp_path, (1200, 32, 32))  # 4.9 MB on disk
    assert large < 1.3 * small  # does not grow with the stack
    assert large < 1200 * 32 * 32 * 4 / 8


def test_progress_events():
    events: list[InferEvent] = []
    x = np.random.default_rng(11).random((40, 16, 16), dtype=np.float32)
    infer.denoise(x, make(Identity()), cfg(batch_size=2), progress=events.append)
    assert events and events[-1].done == events[-1].total
    assert [e.done for e in events] == sorted(e.done for e in events)
    assert all(e.frames_per_s > 0 for e in events) and events[-1].eta_s == 0


def test_cancel_stops_prefetch_thread_and_restores_mode():
    baseline = threading.active_count()
    x = np.random.default_rng(12).random((80, 16, 16), dtype=np.float32)
    net = Identity().train()
    gen = infer.iter_denoise(x, make(net), cfg(prefetch=True))
    first = next(gen)
    assert first.done < first.total
    assert threading.active_count() > baseline  # the prefetch worker is alive mid-run
    assert not net.training  # eval() during inference
    gen.close()
    assert threading.active_count() == baseline
    assert net.training  # caller's mode restored


def test_bad_inputs():
    with pytest.raises(InputError, match="T, Y, X"):
        infer.denoise(np.zeros((4, 4)), make(Identity()), cfg())
    with pytest.raises(InputError, match="out has shape"):
        infer.denoise(np.zeros((8, 8, 8), np.float32), make(Identity()), cfg(), out=np.zeros((8, 8, 9)))
    bad = np.zeros((8, 8, 8), np.float32)
    bad[3, 2, 1] = np.nan
    with pytest.raises(InputError, match="NaN"):
        infer.denoise(bad, make(Identity()), cfg())


# --------------------------------------------------------------------------- files


def _write_tiff(path, array):
    import tifffile

    tifffile.imwrite(path, array)


def test_denoise_file_roundtrip(tmp_path):
    import tifffile

    x = (np.random.default_rng(13).random((30, 20, 20)) * 1000).astype(np.uint16)
    _write_tiff(tmp_path / "in.tif", x)
    for dtype in ("float32", "input"):
        out = infer.denoise_file(tmp_path / "in.tif", tmp_path / f"out_{dtype}.tif", make(Identity()),
                                 cfg(output_dtype=dtype))
        y = tifffile.imread(out)
        assert y.shape == x.shape and y.dtype == (np.float32 if dtype == "float32" else np.uint16)
        np.testing.assert_allclose(y, x, atol=1e-3)


def test_denoise_file_atomic_on_error_and_cancel(tmp_path):
    x = np.random.default_rng(14).random((60, 16, 16), dtype=np.float32)
    _write_tiff(tmp_path / "in.tif", x)
    target = tmp_path / "out.tif"
    with pytest.raises(RuntimeError, match="boom"):
        infer.denoise_file(tmp_path / "in.tif", target, make(FailOnCall(3)), cfg())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.tif"]
    baseline = threading.active_count()
    gen = infer.iter_denoise_file(tmp_path / "in.tif", target, make(Identity()), cfg(prefetch=True))
    next(gen)
    next(gen)
    gen.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.tif"]
    assert threading.active_count() == baseline


def test_denoise_array_to_file_matches_in_memory(tmp_path):
    """An in-memory stack (a layer with no file behind it) streamed into a file: the result's shape and
    dtype (a mirrored model's merged output is (T, N, N)), the same values as in memory, atomic on cancel."""
    from napari_unet_att import stackio as tio

    rng = np.random.default_rng(15)
    x = (rng.random((20, 32, 16)) * 1000).astype(np.uint16)
    for den, c in [(make(AddXRamp()), cfg(output_dtype="input")),
                   (make(AddXRamp(), mode="mirrored", flip=True), cfg(mirrored_output="merged"))]:
        target = tmp_path / f"out_{den.mode}.tif"
        gen = infer.iter_denoise_to_file(x, target, den, c, source="movie.tif")
        events = []
        while True:
            try:
                events.append(next(gen))
            except StopIteration as stop:
                assert stop.value == target
                break
        assert events and events[-1].done == events[-1].total
        want = infer.denoise(x, den, c)
        got = tifffile.imread(target)
        assert got.shape == ((20, 16, 16) if den.mode == "mirrored" else x.shape) == want.shape
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)
        meta = tio.read_metadata(target)
        assert meta["source"] == "movie.tif" and f"mode '{den.mode}'" in meta["denoiser"]
    gen = infer.iter_denoise_to_file(x, tmp_path / "cancelled.tif", make(Identity()), cfg())
    next(gen)
    gen.close()
    assert not (tmp_path / "cancelled.tif").exists()


# --------------------------------------------------------------------------- real network


def test_real_unet_att_small():
    from napari_unet_att.model import networks

    torch.manual_seed(0)
    den = make(networks.build_network("unet_att", 4), norm=Normalization(100.0, 10.0))
    x = np.random.default_rng(15).normal(100.0, 10.0, (24, 16, 16)).astype(np.float32)
    y = infer.denoise(x, den, cfg(tile_t=16, max_tile_xy=16, overlap=None))  # default overlap: receptive field
    assert y.shape == x.shape and np.isfinite(y).all()


#: Test-time augmentation's order of the D4 group, as (flip y, flip x, then swap y/x).
TTA_FLIPS = (
    (False, False, False), (False, True, False), (True, False, False), (True, True, False),
    (False, False, True), (False, True, True), (True, False, True), (True, True, True),
)


def _d4_reference(frames: np.ndarray, fn, n: int) -> np.ndarray:
    """Mean over the first ``n`` D4 transforms T of T^-1(fn(T(frames))), in numpy."""
    outs = []
    for fy, fx, sw in TTA_FLIPS[:n]:
        z = frames[:, ::-1] if fy else frames
        z = z[:, :, ::-1] if fx else z
        z = np.swapaxes(z, 1, 2) if sw else z
        o = fn(np.ascontiguousarray(z))
        o = np.swapaxes(o, 1, 2) if sw else o
        o = o[:, :, ::-1] if fx else o
        o = o[:, ::-1] if fy else o
        outs.append(o)
    return np.mean(outs, axis=0)


@pytest.mark.parametrize("n", [2, 4, 8])
def test_tta_averages_the_inverted_flips(rng, n):
    x = rng.normal(100.0, 5.0, (12, 10, 14)).astype(np.float32)  # y != x: the swap must be undone too
    out = infer.denoise(x, make(AddXRamp()), InferConfig(tta=n, keep_mean=False))
    ramp = lambda z: z + np.arange(z.shape[-1], dtype=np.float32)  # noqa: E731
    np.testing.assert_allclose(out, _d4_reference(x, ramp, n), rtol=0, atol=1e-3)
    assert not np.allclose(out, ramp(x), atol=1e-2)  # really averaged, not the plain output
    # An equivariant network gives the same result with or without it.
    np.testing.assert_allclose(infer.denoise(x, make(Smooth3()), InferConfig(tta=n)),
                               infer.denoise(x, make(Smooth3()), InferConfig()), atol=1e-3)


def test_tta_value_is_checked():
    with pytest.raises(InputError, match="tta must be 1, 2, 4 or 8"):
        InferConfig(tta=3)


class DarkenAndBlur(torch.nn.Module):
    """A biased "denoiser": smooths in space, then darkens by a frame-dependent amount."""

    def forward(self, x):
        smooth = torch.nn.functional.avg_pool3d(x, (1, 3, 3), stride=1, padding=(0, 1, 1), count_include_pad=False)
        return smooth - 0.3 - 0.05 * torch.arange(x.shape[2], dtype=x.dtype).view(1, 1, -1, 1, 1)


@pytest.mark.parametrize("tiles", [dict(), dict(tile_t=None, max_tile_xy=512)])
def test_output_keeps_input_mean_frame_by_frame(tiles):
    rng = np.random.default_rng(5)
    raw = rng.poisson(rng.uniform(0.2, 3.0, (20, 1, 1)) * np.ones((20, 24, 24))).astype(np.float32)
    den = make(DarkenAndBlur(), norm=Normalization(1.0, 1.0))
    kept = infer.denoise(raw, den, cfg(keep_mean=True, **tiles))
    np.testing.assert_allclose(kept.mean(axis=(1, 2)), raw.mean(axis=(1, 2)), rtol=1e-5, atol=1e-5)
    biased = infer.denoise(raw, den, cfg(keep_mean=False, **tiles))
    assert np.abs(biased.mean(axis=(1, 2)) - raw.mean(axis=(1, 2))).max() > 0.3  # the bias it removed
    # only a per-frame offset changed: the spatial structure is the network's
    np.testing.assert_allclose(kept - kept.mean(axis=(1, 2), keepdims=True),
                               biased - biased.mean(axis=(1, 2), keepdims=True), atol=1e-4)


def test_mirrored_views_keep_their_own_means():
    rng = np.random.default_rng(6)
    raw = rng.poisson(2.0, (12, 32, 16)).astype(np.float32)
    raw[:, 1::2] += 5.0  # backward lines brighter (e.g. a different detector path)
    den = make(DarkenAndBlur(), norm=Normalization(0.0, 1.0))
    den.mode = "mirrored"
    out = infer.denoise(raw, den, cfg(max_tile_xy=16, keep_mean=True))
    for parity in (0, 1):
        np.testing.assert_allclose(out[:, parity::2].mean(axis=(1, 2)), raw[:, parity::2].mean(axis=(1, 2)),
                                   rtol=1e-5)


def test_half_rate_ensemble_is_the_mean_of_full_and_half_rate_passes(tmp_path):
    rng = np.random.default_rng(8)
    raw = rng.poisson(3.0, (21, 16, 16)).astype(np.uint16)  # odd length: the halves differ by a frame
    den = make(DarkenAndBlur(), norm=Normalization(3.0, 1.7))
    plain = cfg(keep_mean=True)
    full = infer.denoise(raw, den, plain)
    even, odd = infer.denoise(raw[0::2], den, plain), infer.denoise(raw[1::2], den, plain)
    want = full.copy()
    want[0::2] = 0.5 * (full[0::2] + even)
    want[1::2] = 0.5 * (full[1::2] + odd)
    got = infer.denoise(raw, den, cfg(keep_mean=True, half_rate=True))
    np.testing.assert_allclose(got, want, atol=1e-5)
    np.testing.assert_allclose(got.mean(axis=(1, 2)), raw.mean(axis=(1, 2)), rtol=1e-5)
    # streamed to a file (lazily read halves) and to the input's dtype: the same numbers, rounded
    path = tmp_path / "in.tif"
    tifffile.imwrite(path, raw)
    outp = infer.denoise_file(path, tmp_path / "out.tif", den, cfg(keep_mean=True, half_rate=True,
                                                                   output_dtype="input"))
    np.testing.assert_allclose(tifffile.imread(outp), np.clip(np.rint(want), 0, None), atol=1)
    with pytest.raises(InputError, match="at least 6 frames"):
        infer.denoise(raw[:5], den, cfg(half_rate=True))


def test_every_other_frame_view_reads_like_a_strided_slice():
    x = np.arange(11 * 2 * 3).reshape(11, 2, 3)
    for parity in (0, 1):
        view, ref = denoising._EveryOther(x, parity), x[parity::2]
        assert view.shape == ref.shape
        for a, b in [(0, 0), (0, None), (1, 3), (2, 2), (3, 100), (4, 1)]:
            np.testing.assert_array_equal(view[a:b], ref[a:b])
            np.testing.assert_array_equal(view[a:b, 0:1, 1:3], ref[a:b, 0:1, 1:3])


def test_inner_job_settings_turn_every_post_step_off() -> None:
    cfg = InferConfig(output_dtype="input", smoothing=(1.0, 0.5), half_rate=True, tile_t=32)
    inner = cfg.inner()
    assert inner.output_dtype == "float32" and inner.tile_t == 32  # the pass itself as asked
    assert all(getattr(inner, k) == v for k, v in POST_STEPS.items())
    assert all(getattr(cfg, k) != v for k, v in POST_STEPS.items())  # (so the test shows each one turned off)
    canvas = cfg.inner(keep=("smoothing", "half_rate"))
    assert canvas.smoothing == (1.0, 0.5) and canvas.half_rate and canvas.registration == "off"



@pytest.mark.parametrize("name", ["out.tif", "out.zarr", "float.tif"])
def test_output_file_records_settings_and_the_choices_made_on_the_way(tmp_path, name):
    """The file's header is written before the job chooses its smoothing and registration: it is brought up to
    date at the end (the pixels untouched)."""
    from napari_unet_att import stackio as tio

    x = np.random.default_rng(0).poisson(5.0, (24, 16, 16)).astype(np.uint16)
    den = make(Identity())
    cfg = InferConfig(device="cpu", smoothing=(2.0, 0.0), output_dtype="float32" if "float" in name else "input")
    target = infer.iter_denoise_to_file(x, tmp_path / name, den, cfg, source="movie.tif")
    list(target)
    meta = tio.read_metadata(tmp_path / name)
    assert meta["source"] == "movie.tif" and meta["settings"]["smoothing"] == [2.0, 0.0]
    assert meta["steps"]["smoothing"].startswith("Gaussian sigma 2 frames")
    assert meta["steps"]["registration"].startswith("none (")  # (24 frames of noise: too few to register)
    assert meta["steps"]["keep_average"].startswith("not kept (too few frames")
    assert meta["steps"]["give_back"].startswith("none (")  # (an identity network takes nothing)
    got = tio.read_stack(tmp_path / name)
    np.testing.assert_array_equal(np.asarray(got), infer.denoise(x, den, cfg))
