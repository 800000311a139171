"""Self-supervised pairs: exact voxels per mode, splits, augmentation, determinism, checks, lazy reads."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from napari_unet_att.augment import d4_inverse, d4_transform
from napari_unet_att.errors import CheckpointError, InputError
from napari_unet_att.model.normalization import Normalization
from napari_unet_att.modes import check_stack_for_mode, extract_pair, max_patch_for, network_input_shape
from napari_unet_att.training.sampler import PatchSampler, Position

IDENT = Normalization(0.0, 1.0)


def digits(t: int, y: int, x: int) -> np.ndarray:
    """value = 100 t + 10 y + x, so every voxel says where it came from (y, x < 10)."""
    tt, yy, xx = np.meshgrid(np.arange(t), np.arange(y), np.arange(x), indexing="ij")
    return (100 * tt + 10 * yy + xx).astype(np.int32)


# ------------------------------------------------------------------------------------------------ exact voxels


def test_temporal_pair_exact():
    stack = digits(6, 4, 5)
    inp, tgt = extract_pair(stack, "temporal", 1, 1, 2, 2, 2)
    np.testing.assert_array_equal(inp, [[[112, 113], [122, 123]], [[312, 313], [322, 323]]])
    np.testing.assert_array_equal(tgt, [[[212, 213], [222, 223]], [[412, 413], [422, 423]]])


def test_mirrored_pair_exact():
    stack = digits(3, 8, 4)  # (T, 2N, N) with N = 4
    inp, tgt = extract_pair(stack, "mirrored", 1, 2, 1, 2, 2)
    np.testing.assert_array_equal(inp, [[[121, 122], [141, 142]], [[221, 222], [241, 242]]])
    np.testing.assert_array_equal(tgt, [[[131, 132], [151, 152]], [[231, 232], [251, 252]]])


def test_mirrored_flip_backward_exact():
    stack = digits(2, 8, 4)
    # spatial columns 1, 2 of a backward line are stored at columns 4-1-1 = 2 and 4-1-2 = 1
    inp, tgt = extract_pair(stack, "mirrored", 0, 0, 1, 1, 2, flip_backward=True)
    np.testing.assert_array_equal(inp, [[[1, 2], [21, 22]]])
    np.testing.assert_array_equal(tgt, [[[12, 11], [32, 31]]])
    # at the left edge the backward window is the right edge, reversed
    _, tgt0 = extract_pair(stack, "mirrored", 0, 0, 0, 1, 2, flip_backward=True)
    np.testing.assert_array_equal(tgt0, [[[13, 12], [33, 32]]])


def test_rowsplit_pair_exact():
    stack = digits(4, 6, 5)
    inp, tgt = extract_pair(stack, "rowsplit", 0, 2, 1, 2, 4)
    # input: even rows (2, 4) of frame 0 above even rows of frame 1; then frames 2 / 3
    np.testing.assert_array_equal(
        inp,
        [
            [[21, 22, 23, 24], [41, 42, 43, 44], [121, 122, 123, 124], [141, 142, 143, 144]],
            [[221, 222, 223, 224], [241, 242, 243, 244], [321, 322, 323, 324], [341, 342, 343, 344]],
        ],
    )
    np.testing.assert_array_equal(
        tgt,
        [
            [[31, 32, 33, 34], [51, 52, 53, 54], [131, 132, 133, 134], [151, 152, 153, 154]],
            [[231, 232, 233, 234], [251, 252, 253, 254], [331, 332, 333, 334], [351, 352, 353, 354]],
        ],
    )


def test_extract_pair_refuses_out_of_range():
    with pytest.raises(ValueError, match="outside"):
        extract_pair(digits(4, 4, 4), "temporal", 1, 0, 0, 2, 2)


@pytest.mark.parametrize(
    ("mode", "shape", "expect_inp", "expect_tgt"),
    [
        ("temporal", (4, 2, 2), [[[0, 1], [10, 11]], [[200, 201], [210, 211]]],
         [[[100, 101], [110, 111]], [[300, 301], [310, 311]]]),
        ("mirrored", (1, 4, 2), [[[0, 1], [20, 21]]], [[[10, 11], [30, 31]]]),
        ("rowsplit", (2, 2, 2), [[[0, 1], [100, 101]]], [[[10, 11], [110, 111]]]),
    ],
)
def test_sampler_single_position_exact(mode, shape, expect_inp, expect_tgt):
    # the patch covers the whole stack: one position, so the batch is known exactly
    t = len(expect_inp)
    s = PatchSampler(digits(*shape), Normalization(5.0, 2.0), mode, t, 2, val_fraction=0.0, swap=False,
                     augment=False)
    inp, tgt = s.sample(3)
    assert inp.dtype == tgt.dtype == np.float32 and inp.shape == (3, 1, t, 2, 2)
    np.testing.assert_allclose(inp, np.broadcast_to((np.array(expect_inp) - 5.0) / 2.0, inp.shape))
    np.testing.assert_allclose(tgt, np.broadcast_to((np.array(expect_tgt) - 5.0) / 2.0, tgt.shape))


# ------------------------------------------------------------------------------------------------ shapes, checks


def test_network_input_shape():
    assert network_input_shape((11, 6, 7), "temporal") == (5, 6, 7)
    assert network_input_shape((11, 8, 4), "mirrored") == (11, 4, 4)
    assert network_input_shape((11, 6, 7), "rowsplit") == (5, 6, 7)


@pytest.mark.parametrize(
    ("shape", "mode", "pt", "pxy", "pattern"),
    [
        ((10, 8), "temporal", 2, 4, r"3D time-lapse.*2D array of shape \(10, 8\)"),
        ((3, 8, 8), "temporal", 2, 4, r"at least 4 frames for patch_t=2.*3 frames.*patch_t <= 1"),
        ((1, 8, 8), "temporal", 1, 4, r"at least 2 frames.*1 frames"),
        ((5, 8, 8), "mirrored", 2, 4, r"mirrored-scan expects a raw bidirectional stack of shape \(T, 2N, N\).*"
                                      r"found \(T, Y, X\) = \(5, 8, 8\).*temporal"),
        ((5, 9, 4), "mirrored", 2, 4, r"\(T, 2N, N\).*found \(T, Y, X\) = \(5, 9, 4\)"),
        ((5, 8, 5), "mirrored", 2, 4, r"\(T, 2N, N\).*found \(T, Y, X\) = \(5, 8, 5\)"),
        ((3, 8, 4), "mirrored", 4, 2, r"at least 4 frames.*patch_t <= 3"),
        ((8, 9, 8), "rowsplit", 2, 4, r"even number of rows.*\(8, 9, 8\)"),
        ((8, 8, 8), "rowsplit", 2, 3, r"even patch_xy.*got 3; use 2"),
        ((6, 8, 8), "rowsplit", 4, 4, r"at least 8 frames.*patch_t <= 3"),
        ((8, 8, 6), "temporal", 2, 8, r"8x8 patch does not fit the 8x6.*patch_xy <= 6"),
        ((8, 16, 8), "mirrored", 2, 10, r"10x10 patch does not fit the 8x8.*patch_xy <= 8"),
        ((8, 8, 7), "rowsplit", 2, 8, r"8x8 patch does not fit the 8x7.*patch_xy <= 6"),
        ((8, 8, 8), "temporal", 0, 4, r"patch_t must be a positive integer"),
        ((8, 8, 8), "diagonal", 2, 4, r"unknown mode 'diagonal'"),
    ],
)
def test_check_stack_for_mode_messages(shape, mode, pt, pxy, pattern):
    with pytest.raises(InputError, match=pattern):
        check_stack_for_mode(shape, mode, pt, pxy)


def test_check_stack_for_mode_accepts_valid():
    check_stack_for_mode((4, 8, 8), "temporal", 2, 8)
    check_stack_for_mode((2, 16, 8), "mirrored", 2, 8)
    check_stack_for_mode((5, 8, 8), "rowsplit", 2, 8)  # unpaired last frame ignored


def test_max_patch_for():
    assert max_patch_for((41, 30, 50), "temporal") == (20, 30)
    assert max_patch_for((41, 30, 50), "temporal", multiple=8) == (16, 24)
    assert max_patch_for((7, 40, 20), "mirrored") == (7, 20)
    assert max_patch_for((9, 30, 31), "rowsplit") == (4, 30)
    assert max_patch_for((9, 30, 27), "rowsplit") == (4, 26)
    for shape, mode in [((41, 30, 50), "temporal"), ((7, 40, 20), "mirrored"), ((9, 30, 27), "rowsplit")]:
        check_stack_for_mode(shape, mode, *max_patch_for(shape, mode))
    with pytest.raises(InputError, match="at least 2 frames"):
        max_patch_for((1, 8, 8), "temporal")
    with pytest.raises(InputError, match="multiples of 8"):
        max_patch_for((10, 8, 8), "temporal", multiple=8)


def test_sampler_argument_errors():
    stack = digits(8, 4, 4)
    with pytest.raises(InputError, match="stack 1: .*at least 8 frames"):
        PatchSampler([stack, stack[:3]], [IDENT, IDENT], "temporal", 4, 4)
    with pytest.raises(InputError, match="2 normalisations for 1 stacks"):
        PatchSampler([stack], [IDENT, IDENT], "temporal", 2, 4)
    with pytest.raises(InputError, match="split must be"):
        PatchSampler(stack, IDENT, "temporal", 2, 4, split="test")
    with pytest.raises(InputError, match="no validation data"):
        PatchSampler(stack, IDENT, "temporal", 2, 4, split="val", val_fraction=0.0)
    with pytest.raises(InputError, match="val_fraction"):
        PatchSampler(stack, IDENT, "temporal", 2, 4, val_fraction=0.5)
    s = PatchSampler(stack, IDENT, "temporal", 2, 4)
    with pytest.raises(CheckpointError, match="sampler state"):
        s.set_state({"nope": 1})


# ------------------------------------------------------------------------------------------------ D4


def test_d4_group_distinct_and_inverse():
    a = np.arange(2 * 3 * 3).reshape(2, 3, 3)
    outs = [d4_transform(a, k) for k in range(8)]
    assert len({o.tobytes() for o in outs}) == 8  # 8 different elements
    np.testing.assert_array_equal(outs[0], a)
    np.testing.assert_array_equal(outs[1], np.rot90(a, 1, axes=(1, 2)))
    np.testing.assert_array_equal(outs[4], a[..., ::-1])
    for k in range(8):
        np.testing.assert_array_equal(d4_inverse(outs[k], k), a)
    with pytest.raises(ValueError, match="0..7"):
        d4_transform(a, 8)


def test_d4_torch_matches_numpy():
    import torch

    a = np.arange(2 * 4 * 4, dtype=np.float32).reshape(1, 2, 4, 4)
    for k in range(8):
        out = d4_transform(torch.from_numpy(a), k)
        np.testing.assert_array_equal(out.numpy(), d4_transform(a, k))
        np.testing.assert_array_equal(d4_inverse(out, k).numpy(), a)


@settings(max_examples=40, deadline=None)
@given(
    shape=st.tuples(st.integers(1, 3), st.integers(1, 5), st.integers(1, 5)),
    k=st.integers(0, 7),
    square=st.booleans(),
)
def test_d4_round_trip_property(shape, k, square):
    if square:
        shape = (shape[0], shape[1], shape[1])
    a = np.random.default_rng(0).standard_normal(shape)
    np.testing.assert_array_equal(d4_inverse(d4_transform(a, k), k), a)


# ------------------------------------------------------------------------------------------------ split, swap, D4


def test_swap_and_augment_only_in_train():
    stack = np.random.default_rng(1).integers(0, 1000, (40, 12, 12)).astype(np.uint16)
    norm = Normalization(500.0, 300.0)
    tr = PatchSampler(stack, norm, "temporal", 2, 6, split="train", seed=3)
    va = PatchSampler(stack, norm, "temporal", 2, 6, split="val", seed=3)
    seen_swap, seen_k = set(), set()
    for _ in range(20):
        tr.sample(4)
        seen_swap |= {p.swapped for p in tr.last_positions}
        seen_k |= {p.k for p in tr.last_positions}
        inp, tgt = va.sample(4)
        assert all(not p.swapped and p.k == 0 for p in va.last_positions)
        for b, p in enumerate(va.last_positions):  # val: the plain pair
            ri, rt = extract_pair(stack, "temporal", p.t0, p.y0, p.x0, 2, 6)
            np.testing.assert_allclose(inp[b, 0], norm.apply(ri))
            np.testing.assert_allclose(tgt[b, 0], norm.apply(rt))
    assert seen_swap == {False, True}
    assert len(seen_k) >= 6
    off = PatchSampler(stack, norm, "temporal", 2, 6, swap=False, augment=False, seed=3)
    for _ in range(10):
        off.sample(4)
        assert all(not p.swapped and p.k == 0 for p in off.last_positions)


def test_train_batch_is_swapped_and_transformed_pair():
    stack = np.random.default_rng(2).integers(0, 1000, (30, 10, 10)).astype(np.uint16)
    norm = Normalization(10.0, 7.0)
    s = PatchSampler(stack, norm, "temporal", 3, 4, seed=5)
    for _ in range(5):
        inp, tgt = s.sample(3)
        for b, p in enumerate(s.last_positions):
            ri, rt = extract_pair(stack, "temporal", p.t0, p.y0, p.x0, 3, 4)
            if p.swapped:
                ri, rt = rt, ri
            np.testing.assert_allclose(inp[b, 0], d4_transform(norm.apply(ri), p.k))
            np.testing.assert_allclose(tgt[b, 0], d4_transform(norm.apply(rt), p.k))
        assert inp.flags.c_contiguous and tgt.flags.c_contiguous


def test_determinism_and_state_round_trip():
    stack = np.random.default_rng(3).integers(0, 1000, (50, 16, 16)).astype(np.uint16)
    a = PatchSampler(stack, IDENT, "temporal", 2, 8, seed=7)
    b = PatchSampler(stack, IDENT, "temporal", 2, 8, seed=7)
    c = PatchSampler(stack, IDENT, "temporal", 2, 8, seed=8)
    xa, xb, xc = a.sample(4), b.sample(4), c.sample(4)
    np.testing.assert_array_equal(xa[0], xb[0])
    np.testing.assert_array_equal(xa[1], xb[1])
    assert not np.array_equal(xa[0], xc[0])
    state = a.state()
    nxt = a.sample(4)
    a.sample(4)
    a.set_state(state)
    np.testing.assert_array_equal(a.sample(4)[0], nxt[0])
    # a fresh sampler resumes the stream from a stored state
    d = PatchSampler(stack, IDENT, "temporal", 2, 8, seed=0)
    d.set_state(state)
    np.testing.assert_array_equal(d.sample(4)[1], nxt[1])


def test_validation_fixed_and_disjoint_from_training_frames():
    stacks = [np.random.default_rng(i).integers(0, 100, (t, 8, 8)).astype(np.uint16) for i, t in enumerate((60, 41))]
    tr = PatchSampler(stacks, [IDENT, IDENT], "temporal", 3, 4, val_fraction=0.2, seed=1)
    assert tr.boundaries == [48, 32] and not tr.notices
    v1 = tr.validation_batches(3, 2)
    tr.sample(5)
    v2 = tr.validation_batches(3, 2)
    for (i1, t1), (i2, t2) in zip(v1, v2, strict=True):
        np.testing.assert_array_equal(i1, i2)
        np.testing.assert_array_equal(t1, t2)
    assert tr.validation_positions(2, 2) == tr.validation_positions(3, 2)[:2]  # prefix-stable
    val_pos = [p for batch in tr.validation_positions(20, 4) for p in batch]
    train_pos = []
    for _ in range(50):
        tr.sample(4)
        train_pos += tr.last_positions
    for p in val_pos:
        assert p.t0 >= tr.boundaries[p.stack]
    for p in train_pos:
        assert p.t0 + 6 <= tr.boundaries[p.stack]  # 2 * patch_t raw frames, all before the boundary
    assert {p.stack for p in train_pos} == {0, 1} and {p.stack for p in val_pos} == {0, 1}


def test_rowsplit_boundary_on_frame_pairs():
    s = PatchSampler(digits(21, 4, 4), IDENT, "rowsplit", 2, 4, val_fraction=0.15)
    # 20 paired frames, 15 % -> 3 frames, rounded up to a pair and to one patch (4 raw frames)
    assert s.boundaries == [16]
    for _ in range(20):
        s.sample(2)
        assert all(p.t0 % 2 == 0 and p.t0 + 4 <= 16 for p in s.last_positions)


def test_stack_choice_proportional_to_positions():
    big = np.zeros((40, 12, 12), np.uint16)  # 37 * 9 * 9 train starts (no validation)
    small = np.zeros((8, 4, 4), np.uint16)  # 5 * 1 * 1
    s = PatchSampler([big, small], [IDENT, IDENT], "temporal", 2, 4, val_fraction=0.0, seed=0)
    counts = np.zeros(2)
    for _ in range(200):
        s.sample(10)
        counts += np.bincount([p.stack for p in s.last_positions], minlength=2)
    expected = 5 / (37 * 81 + 5)
    assert abs(counts[1] / counts.sum() - expected) < 0.004
    assert s.n_positions() == 37 * 81 + 5


def test_short_stack_falls_back_to_held_out_positions():
    stack = digits(6, 6, 6)  # temporal patch_t=2 needs 4 frames: train + val in time would need 8
    tr = PatchSampler(stack, IDENT, "temporal", 2, 3, val_fraction=0.25, seed=0)
    va = PatchSampler(stack, IDENT, "temporal", 2, 3, split="val", val_fraction=0.25, seed=9)
    assert tr.boundaries == [None] and "too short" in tr.notices[0] and "optimistic" in tr.notices[0]
    plan = tr.plans[0]
    n_all = 3 * 4 * 4
    assert tr.n_positions("val") == round(0.25 * n_all) and tr.n_positions("train") == n_all - round(0.25 * n_all)
    for _ in range(30):
        tr.sample(4)
        assert not any(plan.is_val_flat(plan.flat_index(p.t0, p.y0, p.x0)) for p in tr.last_positions)
        va.sample(4)  # a val sampler with another seed holds out the same positions
        assert all(plan.is_val_flat(plan.flat_index(p.t0, p.y0, p.x0)) for p in va.last_positions)


def test_fallback_large_grid_uses_hash_split():
    stack = np.zeros((4, 700, 700), np.uint8)  # 1 * 699 * 699 positions > the explicit-enumeration limit
    tr = PatchSampler(stack, IDENT, "temporal", 2, 2, val_fraction=0.1, seed=0)
    plan = tr.plans[0]
    assert plan.fallback and plan.val_idx is None
    for _ in range(10):
        tr.sample(8)
        assert not any(plan.is_val_flat(plan.flat_index(p.t0, p.y0, p.x0)) for p in tr.last_positions)
    val = [p for b in tr.validation_positions(4, 8) for p in b]
    assert all(plan.is_val_flat(plan.flat_index(p.t0, p.y0, p.x0)) for p in val)


def test_single_position_stack_still_validates():
    s = PatchSampler(digits(4, 2, 2), IDENT, "temporal", 2, 2, val_fraction=0.1)
    assert "single patch position" in s.notices[0]
    (inp, tgt), = s.validation_batches(1, 1)
    np.testing.assert_array_equal(inp[0, 0, :, 0, 0], [0, 200])


def test_flip_backward_ignored_outside_mirrored():
    s = PatchSampler(digits(8, 4, 4), IDENT, "temporal", 2, 4, flip_backward=True)
    assert s.flip_backward is False
    m = PatchSampler(digits(2, 8, 4), IDENT, "mirrored", 1, 4, val_fraction=0.0, swap=False, augment=False,
                     flip_backward=True)
    for _ in range(4):
        _, tgt = m.sample(1)
        t0 = m.last_positions[0].t0  # one position per frame: the patch is the whole (8, 4) frame
        np.testing.assert_array_equal(tgt[0, 0, 0, 0], np.array([13, 12, 11, 10]) + 100 * t0)


# ------------------------------------------------------------------------------------------------ lazy stacks


class RecordingStack:
    """Array stand-in that records every region read and refuses whole-stack conversion."""

    def __init__(self, data: np.ndarray):
        self.data, self.shape, self.dtype, self.reads = data, data.shape, data.dtype, []

    def __getitem__(self, key):
        out = self.data[key]
        self.reads.append(out.shape)
        return out

    def __array__(self, *args, **kwargs):
        raise AssertionError("the whole stack was converted to an array")


@pytest.mark.parametrize(("mode", "shape", "flip"), [("temporal", (40, 32, 32), False),
                                                     ("mirrored", (20, 64, 32), True),
                                                     ("rowsplit", (40, 32, 32), False)])
def test_reads_only_patch_regions(mode, shape, flip):
    rec = RecordingStack(np.random.default_rng(0).integers(0, 100, shape).astype(np.uint16))
    s = PatchSampler(rec, IDENT, mode, 4, 8, flip_backward=flip)
    s.sample(3)
    s.validation_batches(1, 2)
    raw_t = 4 if mode == "mirrored" else 8
    raw_y = 16 if mode == "mirrored" else 8
    assert rec.reads and all(r == (raw_t, raw_y, 8) for r in rec.reads)


def test_memmap_zarr_dask_stacks(tmp_path):
    import dask.array as da
    import tifffile
    import zarr

    data = np.random.default_rng(0).integers(0, 4000, (24, 16, 16)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "s.tif", data)
    mm = tifffile.memmap(tmp_path / "s.tif")
    lazy = da.from_array(data, chunks=(4, 8, 8))
    ref = PatchSampler(data, IDENT, "temporal", 2, 8, seed=4).sample(3)
    assert isinstance(mm, np.memmap)
    z = zarr.array(data, chunks=(4, 8, 8))
    for stack in (mm, lazy, z):
        out = PatchSampler(stack, IDENT, "temporal", 2, 8, seed=4).sample(3)
        np.testing.assert_array_equal(out[0], ref[0])
        np.testing.assert_array_equal(out[1], ref[1])


# ------------------------------------------------------------------------------------------------ properties


@st.composite
def sampler_case(draw):
    mode = draw(st.sampled_from(["temporal", "mirrored", "rowsplit"]))
    pt = draw(st.integers(1, 3))
    pxy = draw(st.integers(1, 3)) * (2 if mode == "rowsplit" else 1)
    if mode == "mirrored":
        n = draw(st.integers(pxy, pxy + 4))
        shape = (draw(st.integers(pt, pt + 12)), 2 * n, n)
    else:
        rows = draw(st.integers(pxy, pxy + 4))
        rows += rows % 2 if mode == "rowsplit" else 0  # rowsplit needs an even row count
        shape = (draw(st.integers(2 * pt, 2 * pt + 20)), rows, draw(st.integers(pxy, pxy + 4)))
    return mode, pt, pxy, shape, draw(st.sampled_from([0.0, 0.1, 0.25, 0.4])), draw(st.booleans()), \
        draw(st.integers(0, 2**16))


@settings(max_examples=50, deadline=None)
@given(case=sampler_case())
def test_sampler_property(case):
    mode, pt, pxy, shape, vf, flip, seed = case
    rng = np.random.default_rng(seed)
    stack = rng.permutation(np.prod(shape)).reshape(shape).astype(np.uint16) + 3  # distinct values
    norm = Normalization(float(stack.mean()), float(stack.std()) + 1.0)
    values = set(stack.ravel().tolist())
    for split in ("train", "val") if vf > 0 else ("train",):
        s = PatchSampler(stack, norm, mode, pt, pxy, split=split, val_fraction=vf, flip_backward=flip, seed=seed)
        inp, tgt = s.sample(3)
        assert inp.shape == tgt.shape == (3, 1, pt, pxy, pxy) and inp.dtype == np.float32
        for arr in (inp, tgt):
            back = norm.invert(arr)
            assert np.abs(back - np.rint(back)).max() < 0.05
            assert set(np.rint(back).astype(int).ravel().tolist()) <= values
        for b in range(3):  # input and target never share a voxel (they are independent noisy samples)
            ib, tb = (set(np.rint(norm.invert(a[b])).astype(int).ravel().tolist()) for a in (inp, tgt))
            assert not ib & tb
        raw_t = pt if mode == "mirrored" else 2 * pt
        b, plan = s.boundaries[0], s.plans[0]
        for p in s.last_positions:
            assert isinstance(p, Position)
            if b is not None:  # never crosses the train / val boundary
                assert (p.t0 + raw_t <= b) if split == "train" else (p.t0 >= b)
            elif vf > 0 and plan.t_all.count * plan.y.count * plan.x.count > 1:  # held-out positions
                assert plan.is_val_flat(plan.flat_index(p.t0, p.y0, p.x0)) == (split == "val")
