"""Property tests (hypothesis) for what the module tests do not already cover:

- pair builders against an independent whole-stack slicing, for random positions in every mode;
- tiled + blended inference reproduces an integer stack *exactly* through an identity network
  (and the blending weights form a partition of unity) for random shapes / tiles / overlaps;
- normalisation round trips and streamed statistics;
- TIFF round trips of every supported dtype and byte order, through ``read_stack`` and ``write_stack``.
"""

from __future__ import annotations

import numpy as np
import tifffile
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from napari_unet_att import inference as infer
from napari_unet_att import stackio as tio
from napari_unet_att.config import POST_STEPS, InferConfig
from napari_unet_att.model.denoiser import Denoiser
from napari_unet_att.model.normalization import Normalization, pool_statistics, stack_statistics
from napari_unet_att.modes import extract_pair

FAST = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


# ----------------------------------------------------------------------------------------------
# pair builders
# ----------------------------------------------------------------------------------------------
def _reference_pair(stack, mode, t0, y0, x0, pt, p, flip):
    """Pairs written from the definitions in pairs.py's docstring, by whole-stack fancy indexing."""
    if mode == "temporal":
        frames = np.arange(t0, t0 + 2 * pt)
        cube = stack[np.ix_(frames, np.arange(y0, y0 + p), np.arange(x0, x0 + p))]
        return cube[0::2], cube[1::2]
    if mode == "mirrored":
        n = stack.shape[2]
        fwd_rows, bwd_rows = np.arange(y0, y0 + 2 * p, 2), np.arange(y0 + 1, y0 + 2 * p, 2)
        cols = np.arange(x0, x0 + p)
        frames = np.arange(t0, t0 + pt)
        inp = stack[np.ix_(frames, fwd_rows, cols)]
        tgt = stack[np.ix_(frames, bwd_rows, (n - 1 - cols) if flip else cols)]
        return inp, tgt
    # rowsplit: network frame k = [even rows of frame 2k ; even rows of frame 2k+1] (target: odd rows)
    ks = np.arange(t0 // 2, t0 // 2 + pt)
    cols = np.arange(x0, x0 + p)
    half = p // 2
    out = []
    for parity in (0, 1):
        rows = np.arange(y0 + parity, y0 + p, 2)[:half]
        a = stack[np.ix_(2 * ks, rows, cols)]
        b = stack[np.ix_(2 * ks + 1, rows, cols)]
        out.append(np.concatenate([a, b], axis=1))
    return out[0], out[1]


@st.composite
def pair_case(draw):
    mode = draw(st.sampled_from(["temporal", "mirrored", "rowsplit"]))
    pt = draw(st.integers(1, 4))
    p = draw(st.integers(1, 4)) * (2 if mode == "rowsplit" else 1)
    if mode == "mirrored":
        n = draw(st.integers(p, p + 5))
        shape = (draw(st.integers(pt, pt + 6)), 2 * n, n)
        t0 = draw(st.integers(0, shape[0] - pt))
        y0 = 2 * draw(st.integers(0, (shape[1] - 2 * p) // 2))
    else:
        rows = draw(st.integers(p, p + 6))
        rows += rows % 2 if mode == "rowsplit" else 0
        shape = (draw(st.integers(2 * pt, 2 * pt + 8)), rows, draw(st.integers(p, p + 5)))
        t0 = draw(st.integers(0, shape[0] - 2 * pt))
        y0 = draw(st.integers(0, shape[1] - p))
        if mode == "rowsplit":
            t0 -= t0 % 2
            y0 -= y0 % 2
    x0 = draw(st.integers(0, shape[2] - p))
    return mode, shape, (t0, y0, x0), pt, p, draw(st.booleans())


@FAST
@given(case=pair_case())
def test_extract_pair_matches_definition(case):
    mode, shape, (t0, y0, x0), pt, p, flip = case
    stack = np.arange(np.prod(shape), dtype=np.int32).reshape(shape)  # every voxel distinct
    inp, tgt = extract_pair(stack, mode, t0, y0, x0, pt, p, flip_backward=flip)
    ref_inp, ref_tgt = _reference_pair(stack, mode, t0, y0, x0, pt, p, flip and mode == "mirrored")
    assert inp.shape == tgt.shape == (pt, p, p)
    np.testing.assert_array_equal(inp, ref_inp)
    np.testing.assert_array_equal(tgt, ref_tgt)
    assert not set(inp.ravel().tolist()) & set(tgt.ravel().tolist())  # independent voxels


# ----------------------------------------------------------------------------------------------
# tiling + blending
# ----------------------------------------------------------------------------------------------
class _Identity(torch.nn.Module):
    def forward(self, x):
        return x.clone()


@FAST
@given(
    shape=st.tuples(st.integers(3, 30), st.integers(2, 40), st.integers(2, 40)),
    tile=st.tuples(st.integers(8, 16), st.integers(16, 24)),
    overlap=st.integers(0, 12),
    batch=st.integers(1, 3),
    seed=st.integers(0, 2**16),
)
def test_tiled_identity_reproduces_integers_exactly(shape, tile, overlap, batch, seed):
    x = np.random.default_rng(seed).integers(0, 4096, shape, dtype=np.uint16)
    den = Denoiser(_Identity(), "unet3d", 4, "custom", "temporal", Normalization(0.0, 1.0))
    # the post-steps off (this is about tiles and blending; on >= 16 noise frames the smoothing chooses a blur)
    cfg = InferConfig(device="cpu", amp=False, tile_t=tile[0], max_tile_xy=tile[1], overlap=overlap,
                      batch_size=batch, output_dtype="input", prefetch=batch > 1, **POST_STEPS)
    y = infer.denoise(x, den, cfg)
    assert y.dtype == np.uint16
    np.testing.assert_array_equal(y, x)


@FAST
@given(
    shape=st.tuples(st.integers(1, 40), st.integers(1, 30), st.integers(1, 30)),
    tile=st.tuples(st.integers(1, 16), st.integers(1, 16), st.integers(1, 16)),
    overlap=st.integers(0, 10),
)
def test_blend_weights_partition_of_unity(shape, tile, overlap):
    tiles = infer.plan_tiles(shape, tile, overlap)
    clipped = tuple(min(t, s) for t, s in zip(tile, shape, strict=True))
    ov = infer.effective_overlap(shape, clipped, overlap)
    total = np.zeros(shape, np.float64)
    for sl in tiles:
        total[sl] += infer.blend_window(clipped, sl, shape, ov)
    sums = infer.weight_sums(shape, tiles, ov)
    outer = sums[0][:, None, None] * sums[1][None, :, None] * sums[2][None, None, :]
    np.testing.assert_allclose(total, outer, rtol=1e-5)
    assert (outer > 0).all()  # dividing by it is always safe


# ----------------------------------------------------------------------------------------------
# normalisation
# ----------------------------------------------------------------------------------------------
@FAST
@given(
    offset=st.floats(-1e4, 1e4),
    scale=st.floats(1e-2, 1e4),
    seed=st.integers(0, 2**16),
)
def test_normalization_round_trip(offset, scale, seed):
    norm = Normalization(offset, scale)
    x = np.random.default_rng(seed).uniform(-5e4, 5e4, (3, 4, 5)).astype(np.float32)
    z = norm.apply(x)
    assert z.dtype == np.float32
    back = norm.invert(z)
    tol = 4 * np.finfo(np.float32).eps * (np.abs(x) + abs(offset) + scale)
    assert (np.abs(back - x) <= tol).all()
    assert Normalization.from_dict(norm.to_dict()) == Normalization(float(np.float64(offset)), float(scale))


@FAST
@given(
    shape=st.tuples(st.integers(1, 20), st.integers(1, 6), st.integers(1, 6)),
    chunk=st.integers(1, 8),
    split=st.integers(1, 19),
    loc=st.floats(-1e5, 1e5),
    seed=st.integers(0, 2**16),
)
def test_streamed_statistics_and_pooling(shape, chunk, split, loc, seed):
    x = np.random.default_rng(seed).normal(loc, 3.0, shape)
    mean, sd, n = stack_statistics(x, frames_per_chunk=chunk)
    assert n == x.size
    np.testing.assert_allclose(mean, x.mean(), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(sd, x.std(), rtol=1e-6, atol=1e-9)
    if shape[0] > 1 and x.std() > 1e-6:
        k = min(split, shape[0] - 1)
        pooled = pool_statistics([stack_statistics(x[:k]), stack_statistics(x[k:])])
        np.testing.assert_allclose(pooled.offset, x.mean(), rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(pooled.scale, x.std(), rtol=1e-6)


# ----------------------------------------------------------------------------------------------
# TIFF round trips
# ----------------------------------------------------------------------------------------------
#: dtype written -> dtype read_stack returns (values identical: every test value is exact in it)
SUPPORTED = {
    "uint8": "uint8", "uint16": "uint16", "int16": "int16", "float32": "float32",
    "int8": "int16", "int32": "float32", "uint32": "float32", "float64": "float32", "float16": "float32",
}


def _values(dtype: np.dtype, rng: np.random.Generator, shape) -> np.ndarray:
    if dtype.kind == "f":
        # multiples of 1/4 up to 2^10: exact in float16, float32 and float64
        return (rng.integers(-4096, 4096, shape) / 4).astype(dtype)
    info = np.iinfo(dtype)
    lo, hi = max(info.min, -(2**24)), min(info.max, 2**24)  # integers exact in float32
    v = rng.integers(lo, hi, shape, endpoint=True).astype(dtype)
    v.flat[0], v.flat[-1] = lo, hi  # the extremes of the range
    return v


@FAST
@given(
    name=st.sampled_from(sorted(SUPPORTED)),
    big_endian=st.booleans(),
    shape=st.tuples(st.integers(3, 7), st.integers(2, 9), st.integers(2, 9)),
    compression=st.sampled_from([None, "zlib"]),
    seed=st.integers(0, 2**16),
)
def test_read_stack_round_trip_every_dtype(tmp_path_factory, name, big_endian, shape, compression, seed):
    dtype = np.dtype(name).newbyteorder(">" if big_endian else "<")
    data = _values(np.dtype(name), np.random.default_rng(seed), shape).astype(dtype)
    path = tmp_path_factory.mktemp("rt") / "s.tif"
    tifffile.imwrite(path, data, metadata={"axes": "TYX"}, byteorder=">" if big_endian else "<",
                     compression=compression, photometric="minisblack")
    for lazy in (True, False):
        out = tio.read_stack(path, lazy=lazy)
        arr = np.asarray(out)
        assert arr.dtype == np.dtype(SUPPORTED[name]) and arr.dtype.isnative
        np.testing.assert_array_equal(arr, data.astype(np.float64))


@FAST
@given(
    name=st.sampled_from(["uint8", "uint16", "int16", "float32", "int32", "uint32", "float64"]),
    shape=st.tuples(st.integers(3, 6), st.integers(2, 8), st.integers(2, 8)),
    seed=st.integers(0, 2**16),
)
def test_write_stack_round_trip_every_dtype(tmp_path_factory, name, shape, seed):
    dtype = np.dtype(name)
    data = _values(dtype, np.random.default_rng(seed), shape)
    path = tmp_path_factory.mktemp("wr") / "o.tif"
    tio.write_stack(path, data.astype(np.float32) if dtype.kind == "f" else data, dtype="input", input_dtype=dtype,
                    metadata={"case": name})
    back = tifffile.imread(path)
    assert back.dtype == dtype and back.shape == shape
    np.testing.assert_array_equal(back, data)
    assert tio.read_metadata(path)["case"] == name
