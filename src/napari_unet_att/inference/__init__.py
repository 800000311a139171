"""Tiled, blended denoising of whole stacks, in memory or streamed to a file.

The data flow, one module per step: :mod:`.tiles` (the tile plan and its blending windows),
:mod:`.batches` (tiles read in batches, the forward pass, out-of-memory fallbacks), :mod:`.accumulate`
(weighted sums in a rolling window of frames), :mod:`.denoising` (the job: checks, normalisation,
the loop, the half-rate ensemble) and :mod:`.files` (streaming into an output file).
"""

from .accumulate import RollingAccumulator, accumulator_frames
from .denoising import DenoiseJob, denoise, iter_denoise, keep_frame_means
from .files import check_not_input, denoise_file, iter_denoise_file, iter_denoise_to_file
from .tiles import (
    DEFAULT_CPU_BUDGET_GB,
    DEFAULT_OVERLAP,
    MIN_CONTEXT_T,
    MIN_TILE_XY,
    TilePlan,
    blend_window,
    build_plan,
    effective_overlap,
    plan_tiles,
    resolve_tiles,
    tile_shape_for,
    wanted_overlap,
    weight_sums,
)

__all__ = [
    "DEFAULT_CPU_BUDGET_GB",
    "DEFAULT_OVERLAP",
    "MIN_CONTEXT_T",
    "MIN_TILE_XY",
    "DenoiseJob",
    "RollingAccumulator",
    "TilePlan",
    "accumulator_frames",
    "blend_window",
    "build_plan",
    "check_not_input",
    "denoise",
    "denoise_file",
    "effective_overlap",
    "iter_denoise",
    "iter_denoise_file",
    "iter_denoise_to_file",
    "keep_frame_means",
    "plan_tiles",
    "resolve_tiles",
    "tile_shape_for",
    "wanted_overlap",
    "weight_sums",
]
