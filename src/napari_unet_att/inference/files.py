"""Denoising into files: a stack streamed through the model into a TIFF (or zarr) that appears only once
everything succeeded."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

from ..config import InferConfig, InferEvent, run_to_end
from ..errors import InputError
from ..model.denoiser import Denoiser
from ..stackio import output_stack, read_stack
from ..stackio.outputs import same_file
from . import averages, frame_means, give_back, line_phase, registration, smoothing, strips
from .denoising import DenoiseJob
from .frame_means import said_first

#: The job's choices that an output records (a file's metadata, the dock's result layer), by how their messages
#: start; keyed as the :class:`InferConfig` settings that ask for them.
STEPS = {"output_dtype": frame_means.SAID, "line_phase": line_phase.SAID, "strips": strips.SAID,
         "registration": registration.SAID, "smoothing": smoothing.SAID, "give_back": give_back.SAID,
         "keep_average": averages.SAID}


def post_step(message: str | None) -> tuple[str, str] | None:
    """``(setting, what was chosen)`` when ``message`` (an :class:`InferEvent`'s) announces one of the job's
    choices (:data:`STEPS`), else None."""
    for name, said in STEPS.items():
        if message and message.startswith(said):
            return name, message[len(said):]
    return None


def check_not_input(in_path: str | Path, out_path: str | Path) -> None:
    """Refuse an output path that is the input file itself (it would be replaced by the result)."""
    if same_file(Path(in_path), Path(out_path)):  # the same path, a link to it, or a hard link
        raise InputError(f"the output {out_path} would overwrite the input {in_path}; choose another output path")


def iter_denoise_to_file(
    stack: Any,
    out_path: str | Path,
    denoiser: Denoiser,
    cfg: InferConfig | None = None,
    source: str | Path | None = None,
) -> Generator[InferEvent, None, Path]:
    """Stream a ``(T, Y, X)`` array (in memory or lazy) through the model into a file, atomically.

    Finished frames are written to ``out_path`` as they complete and dropped from the process's
    memory (:func:`~napari_unet_att.stackio.output_stack`: a TIFF, or zarr for a ``.zarr`` path), so
    peak memory does not grow with the file; the file only appears once everything succeeded: an error
    or closing this generator leaves no (partial) output.

    Parameters
    ----------
    stack : array-like (T, Y, X)
        What :func:`~napari_unet_att.inference.denoising.iter_denoise` takes.
    out_path : str or Path
        The output file. Its shape is the result's (``(T, N, N)`` for a mirrored model's merged
        output), its dtype float32 or, with ``cfg.output_dtype == 'input'``, the input's ('auto': one of them,
        :func:`~napari_unet_att.inference.frame_means.resolve_output_dtype`).
    denoiser, cfg
        As for :func:`~napari_unet_att.inference.denoising.iter_denoise`.
    source : str or Path, optional
        The input's file, recorded in the output's metadata.

    Yields
    ------
    InferEvent
        :func:`~napari_unet_att.inference.denoising.iter_denoise`'s progress.

    Returns
    -------
    Path
        ``out_path``.
    """
    job = DenoiseJob.create(stack, denoiser, cfg)
    meta: dict[str, Any] = {"denoiser": denoiser.describe(), "settings": dataclasses.asdict(job.cfg)}
    if source is not None:
        meta["source"] = str(source)
    with output_stack(out_path, job.out_shape, job.dtype, metadata=meta) as out:
        yield from _recorded(said_first(job.run(out), job.said), meta.setdefault("steps", {}))
    return Path(out_path)


def _recorded(events: Generator[InferEvent, None, Any], steps: dict[str, str]) -> Generator[InferEvent, None, Any]:
    """``events`` passed on, the last word of each of the job's choices (:data:`STEPS`) kept in ``steps``: the
    output file's metadata then says what was done to the data (the chosen smoothing, the registration)."""
    try:
        for event in events:
            if step := post_step(event.message):
                steps[step[0]] = step[1]
            yield event
    finally:
        events.close()  # closed with this generator, at once (its worker threads stop)


def iter_denoise_file(
    in_path: str | Path,
    out_path: str | Path,
    denoiser: Denoiser,
    cfg: InferConfig | None = None,
    channel: int | None = None,
    axes: str | None = None,
    series: int | None = None,
) -> Generator[InferEvent, None, Path]:
    """Stream a TIFF through the model into another TIFF, atomically (:func:`iter_denoise_to_file`).

    The input is read lazily (positioned reads of each tile), so peak memory does not grow with the
    file. Returns ``out_path``. ``channel``, ``axes`` and ``series`` are
    :func:`~napari_unet_att.stackio.read_stack`'s.
    """
    check_not_input(in_path, out_path)
    stack = read_stack(in_path, channel=channel, lazy=True, axes=axes, series=series)
    return (yield from iter_denoise_to_file(stack, out_path, denoiser, cfg, source=in_path))


def denoise_file(
    in_path: str | Path,
    out_path: str | Path,
    denoiser: Denoiser,
    cfg: InferConfig | None = None,
    channel: int | None = None,
    progress: Callable[[InferEvent], Any] | None = None,
    axes: str | None = None,
    series: int | None = None,
) -> Path:
    """Blocking :func:`iter_denoise_file`."""
    return run_to_end(iter_denoise_file(in_path, out_path, denoiser, cfg, channel, axes, series), progress)


__all__ = ["STEPS", "check_not_input", "denoise_file", "iter_denoise_file", "iter_denoise_to_file", "post_step"]
