"""The files and description of a BioImage Model Zoo (bioimage.io) package of one of our models.

:func:`build_description` writes into a folder what a package holds, through the
``bioimageio.spec`` library (the optional ``bioimageio`` extra), and returns its description
(format 0.5): ``pytorch_state_dict`` weights whose architecture is this package's own
``model/networks.py`` (copied verbatim, with its sha256) and traced ``torchscript`` weights; axes
``(batch, channel, time, y, x)`` with the network's size multiple and a halo
(:func:`tile_geometry`); our normalisation in the input's units: the model's stored statistics as
pre / post-processing, or, for models that normalise every input by its own statistics (the
generalists), inside the network (``networks.UNetAttPerInput`` / ``UNet3DPerInput``); a
test input (:func:`test_input`) with the output our engine gives for it (:func:`engine_output`);
a cover (raw | denoised); the documentation (:mod:`.readme`); citations; and our checkpoint
metadata under ``config.napari_unet_att``. Zipping and validating is :mod:`.export`.
"""

from __future__ import annotations

import hashlib
import shutil
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import InputError
from ..model import networks
from ..model._receptive_field import receptive_field
from ..model.checkpoint import checkpoint_dict
from ..model.denoiser import Denoiser
from .readme import documentation

#: Key of our metadata in the package's ``config``; its presence marks a package as ours.
CONFIG_KEY = "napari_unet_att"
#: Version of what we store under ``config.napari_unet_att``.
PACKAGE_FORMAT = 1
#: Default smallest tile (time, y, x) of the exported model: the whole-frame width our tiler
#: narrows to at most (``infer.MIN_TILE_XY``) and twice its shortest temporal context.
DEFAULT_MIN_SIZE = 64
_CLASS = {"unet_att": "UNetAtt", "unet3d": "UNet3D"}
_INSTALL_HINT = 'install the optional extra: pip install "napari-unet-att[bioimageio]"'

CITATIONS: tuple[dict[str, str], ...] = (
    # titles and authors from the papers' first pages (shared/seeds); UNet-Att's paper prints no DOI,
    # so it is cited by its code repository, the address the paper gives
    {"text": "Lu Y., Ying Y., Lin C., Wang Y., Jin J., Jiang X., Shuai J., Li X., Zhong J. UNet-Att: a "
             "self-supervised denoising and recovery model for two-photon microscopic image (2024)",
     "url": "https://github.com/ZjjDh/UNet-Att"},
    {"text": "Li X. et al. Reinforcing neuron extraction and spike inference in calcium imaging using deep "
             "self-supervised denoising (DeepCAD). Nature Methods 18, 1395-1400 (2021)",
     "doi": "10.1038/s41592-021-01225-0"},
    {"text": "Li X. et al. Real-time denoising enables high-sensitivity fluorescence time-lapse imaging beyond "
             "the shot-noise limit (DeepCAD-RT). Nature Biotechnology 41, 282-292 (2023)",
     "doi": "10.1038/s41587-022-01450-8"},
    {"text": "Shen B. et al. Surmounting photon limits and motion artifacts for biological dynamics imaging via "
             "dual-perspective self-supervised learning (DeepBID). PhotoniX (2024)",
     "doi": "10.1186/s43074-023-00117-0", "url": "https://github.com/shenblin/DeepBID"},
)


# ----------------------------------------------------------------------------------------------
# sizes
# ----------------------------------------------------------------------------------------------
def tile_geometry(arch: str, min_size: int = DEFAULT_MIN_SIZE) -> tuple[int, int, int]:
    """Valid axis sizes ``min_size + n * step`` and the halo of an exported model.

    The step is the network's size multiple (three 2x2x2 poolings); ``min_size`` must be a
    multiple of it and at least the architecture's minimum. The halo is the network's
    one-sided receptive field, capped as our tiler caps overlaps (at most half a tile, i.e. a
    quarter of the smallest tile per side).

    Returns
    -------
    (min_size, step, halo) : tuple of int

    Raises
    ------
    InputError
        For an unknown architecture or an invalid ``min_size``.
    """
    step = networks.SIZE_MULTIPLE
    if arch not in networks.MIN_SIZE:
        raise InputError(f"unknown network architecture {arch!r}; expected one of: {', '.join(networks.ARCHS)}")
    lowest = networks.MIN_SIZE[arch]
    if isinstance(min_size, bool) or not isinstance(min_size, int) or min_size < lowest or min_size % step:
        raise InputError(f"the smallest exported tile must be a multiple of {step} and at least {lowest} for "
                         f"{arch}; got {min_size!r}")
    halo = max(1, min(receptive_field(arch) // 2, min_size // 4))
    return min_size, step, halo


# ----------------------------------------------------------------------------------------------
# the package's files
# ----------------------------------------------------------------------------------------------
def bioimageio_spec() -> tuple[Any, Any]:
    """``(bioimageio.spec, bioimageio.spec.model.v0_5)``, or an :class:`InputError` saying how to get them."""
    try:
        import bioimageio.spec as spec
        from bioimageio.spec.model import v0_5
    except ImportError:
        raise InputError(f"exporting to the BioImage Model Zoo needs bioimageio.spec; {_INSTALL_HINT}") from None
    return spec, v0_5


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _metadata(den: Denoiser) -> dict[str, Any]:
    """Our checkpoint metadata (everything but the weights), as plain YAML values."""
    meta = {k: v for k, v in checkpoint_dict(den).items() if k not in ("state_dict", "magic")}
    meta["package_format"] = PACKAGE_FORMAT
    return _yaml_safe(meta)


def _yaml_safe(obj: Any) -> Any:
    """Tensors / tuples / numbers as plain lists, numbers, strings (what YAML and pydantic keep)."""
    if isinstance(obj, Mapping):
        return {str(k): _yaml_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_yaml_safe(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    return str(obj)


def default_sample(den: Denoiser) -> Any:
    """The shipped simulated recording of the model's mode, for the test input (read lazily)."""
    from ..stackio import read_stack, samples

    name = samples.BIDIR_NOISY if den.mode == "mirrored" else samples.TEMPORAL_NOISY
    return read_stack(samples.sample_path(name), lazy=True)


def test_input(den: Denoiser, recording: Any, size: int) -> np.ndarray:
    """The package's test input: a centred ``size``-cube of what the network sees, float32.

    Mirrored-scan models given a raw ``(T, 2N, N)`` scan see its forward (even) lines. Only
    the cropped region is read.

    Raises
    ------
    InputError
        Not (T, Y, X), smaller than ``size`` on an axis, or NaN / Inf values in the crop.
    """
    shape = tuple(int(n) for n in getattr(recording, "shape", ()))
    rows = 2 if den.mode == "mirrored" and len(shape) == 3 and shape[1] == 2 * shape[2] else 1
    want = (size, rows * size, size)
    if len(shape) != 3 or any(n < w for n, w in zip(shape, want, strict=True)):
        raise InputError(f"the test recording must be (T, Y, X) with axes >= {want}; got shape {shape}")
    starts = [(n - w) // 2 for n, w in zip(shape, want, strict=True)]
    starts[1] -= starts[1] % rows  # an even first row: the forward lines of a bidirectional scan
    sl = tuple(slice(s0, s0 + w) for s0, w in zip(starts, want, strict=True))
    crop = np.asarray(recording[sl])[:, ::rows]
    if not np.isfinite(crop).all():
        raise InputError("the test recording holds NaN or Inf values in its centre; use another sample")
    return np.ascontiguousarray(crop, dtype=np.float32)


def engine_output(den: Denoiser, stack: np.ndarray) -> np.ndarray:
    """What our engine gives for ``stack`` as one tile, float32, without extra post-processing.

    Float32 on the CPU, no test-time augmentation, the model's normalisation, and any optional
    post-processing step of the engine switched off: the network path that zoo tools reproduce.
    """
    from ..config import POST_STEPS, InferConfig
    from ..inference.denoising import denoise

    # keep_mean and every step around the network pass (POST_STEPS) off: the engine's per-frame mean-keeping,
    # smoothing, registration, time averages, strips, line phase... are ours alone (zoo tools apply none of them)
    cfg = InferConfig(device="cpu", amp=False, tta=1, normalization="model", keep_mean=False, **POST_STEPS,
                      tile_t=max(8, stack.shape[0]), max_tile_xy=max(16, *stack.shape[1:]))
    return np.asarray(denoise(stack, den, cfg), dtype=np.float32)


def per_input(den: Denoiser) -> bool:
    """Whether ``den`` normalises every input by its own statistics (generalists; inference's ``choose_norm``)."""
    return den.provenance.get("normalization") == "input"


def _callable(den: Denoiser) -> str:
    """The package's architecture class in ``networks.py``: the plain network, or its per-input variant."""
    return _CLASS[den.arch] + ("PerInput" if per_input(den) else "")


def _trace(den: Denoiser, example: torch.Tensor) -> torch.jit.ScriptModule:
    """TorchScript of the package's network, traced on the portable path (plain convs, any device)."""
    net = den.net.without_cpu_fast_path().to("cpu").eval()  # oneDNN calls would tie the trace to the CPU
    if per_input(den):
        wrapped = getattr(networks, _callable(den))(base_channels=den.base_channels, cpu_fast_path=False)
        wrapped.load_state_dict(net.state_dict())
        net = wrapped.eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.jit.trace(net, example, check_trace=False)


def _cover(raw: np.ndarray, denoised: np.ndarray, path: Path) -> None:
    """PNG of the middle frame: raw | denoised, on one intensity scale."""
    import matplotlib.image as mpimg

    mid = raw.shape[0] // 2
    pair = np.concatenate([raw[mid], np.full((raw.shape[1], 2), np.nan), denoised[mid]], axis=1)
    lo, hi = np.nanpercentile(pair, [0.5, 99.5])
    img = np.clip((np.nan_to_num(pair, nan=hi) - lo) / max(hi - lo, 1e-9), 0, 1)
    rep = max(1, 256 // img.shape[0])  # zoo covers should not be thumbnails
    mpimg.imsave(path, np.kron(img, np.ones((rep, rep))), cmap="gray", vmin=0, vmax=1)


def _intensity_steps(v: Any, den: Denoiser, test_in: np.ndarray) -> tuple[list[Any], list[Any], float]:
    """Pre- and post-processing of the package and the intensity unit of its tolerance.

    Stored statistics: ``fixed_zero_mean_unit_variance`` and its inverse ``scale_linear``. Each
    input's own statistics: the network standardises and maps back itself (``*PerInput``), so
    float32 is all the pre-processing (the spec's per-sample ``zero_mean_unit_variance`` has no
    post-processing that undoes it with the input's statistics: see ``networks._StandardizedPerInput``).
    """
    as_float = v.EnsureDtypeDescr(kwargs=v.EnsureDtypeKwargs(dtype="float32"))
    if per_input(den):
        return [as_float], [], float(np.std(test_in, dtype=np.float64)) or 1.0
    off, scale = float(den.norm.offset), float(den.norm.scale)
    pre = v.FixedZeroMeanUnitVarianceDescr(kwargs=v.FixedZeroMeanUnitVarianceKwargs(mean=off, std=scale))
    return [as_float, pre], [v.ScaleLinearDescr(kwargs=v.ScaleLinearKwargs(gain=scale, offset=off))], scale


def build_description(den: Denoiser, folder: Path, sample: Any = None,
                      min_size: int = DEFAULT_MIN_SIZE, name: str | None = None) -> Any:
    """Write a package's files into ``folder`` and return its ``bioimageio.spec`` ModelDescr (not yet zipped).

    A model that normalises every input by its own statistics (the generalists) is packaged with
    the network that does so itself (:func:`_callable`) and no intensity pre / post-processing;
    any other model with its stored statistics as ``fixed_zero_mean_unit_variance`` and its inverse.

    Raises
    ------
    InputError
        ``bioimageio.spec`` missing, an invalid ``min_size`` or sample.
    """
    _, v = bioimageio_spec()
    sample = default_sample(den) if sample is None else sample
    geometry = tile_geometry(den.arch, min_size)
    size, step, halo = geometry
    name = name or f"napari-unet-att {den.preset} {den.mode}"
    test_in = test_input(den, sample, size)
    test_out = engine_output(den, test_in)
    np.save(folder / "test_input.npy", test_in[None, None])
    np.save(folder / "test_output.npy", test_out[None, None])
    _cover(test_in, test_out, folder / "cover.png")
    (folder / "README.md").write_text(documentation(den, geometry, name), encoding="utf-8")
    shutil.copyfile(networks.__file__, folder / "networks.py")
    state = {k: t.detach().to("cpu").contiguous() for k, t in den.net.state_dict().items()}
    torch.save(state, folder / "weights.pt")
    _trace(den, torch.from_numpy(test_in[None, None])).save(str(folder / "weights_torchscript.pt"))

    tid_in, tid_out = v.TensorId("raw"), v.TensorId("denoised")
    what = ("one line set (forward or backward lines) of a bidirectional scan, see README"
            if den.mode == "mirrored" else "frames of the time-lapse")

    def in_axes() -> list[Any]:
        ps = v.ParameterizedSize(min=size, step=step)
        return [v.BatchAxis(), v.ChannelAxis(channel_names=[v.Identifier("intensity")]),
                v.TimeInputAxis(id=v.AxisId("time"), size=ps, description=what),
                v.SpaceInputAxis(id=v.AxisId("y"), size=ps), v.SpaceInputAxis(id=v.AxisId("x"), size=ps)]

    def out_axes() -> list[Any]:
        def ref(a: str) -> Any:
            return v.SizeReference(tensor_id=tid_in, axis_id=v.AxisId(a))

        return [v.BatchAxis(), v.ChannelAxis(channel_names=[v.Identifier("intensity")]),
                v.TimeOutputAxisWithHalo(id=v.AxisId("time"), size=ref("time"), halo=halo),
                v.SpaceOutputAxisWithHalo(id=v.AxisId("y"), size=ref("y"), halo=halo),
                v.SpaceOutputAxisWithHalo(id=v.AxisId("x"), size=ref("x"), halo=halo)]

    pre, post, scale = _intensity_steps(v, den, test_in)
    inputs = [v.InputTensorDescr(
        id=tid_in, axes=in_axes(), description="noisy recording, in its own intensity units",
        test_tensor=v.FileDescr(source=folder / "test_input.npy"),
        data=v.IntervalOrRatioDataDescr(type="float32"), preprocessing=pre,
    )]
    outputs = [v.OutputTensorDescr(
        id=tid_out, axes=out_axes(), description="denoised recording, in the input's intensity units",
        test_tensor=v.FileDescr(source=folder / "test_output.npy"),
        data=v.IntervalOrRatioDataDescr(type="float32"), postprocessing=post,
    )]
    torch_version = v.Version(torch.__version__.split("+")[0])
    weights = v.WeightsDescr(
        pytorch_state_dict=v.PytorchStateDictWeightsDescr(
            source=folder / "weights.pt", sha256=v.Sha256(_sha256(folder / "weights.pt")),
            architecture=v.ArchitectureFromFileDescr(
                source=folder / "networks.py", sha256=v.Sha256(_sha256(folder / "networks.py")),
                callable=v.Identifier(_callable(den)), kwargs={"base_channels": int(den.base_channels)}),
            pytorch_version=torch_version),
        torchscript=v.TorchscriptWeightsDescr(
            source=folder / "weights_torchscript.pt", sha256=v.Sha256(_sha256(folder / "weights_torchscript.pt")),
            pytorch_version=torch_version, parent="pytorch_state_dict",
            comment="traced from the pytorch_state_dict network (plain convolutions, any device)"),
    )
    tolerance = v.ReproducibilityTolerance(relative_tolerance=1e-4, absolute_tolerance=1e-3 * scale)
    return v.ModelDescr(
        name=name,
        description=(f"Self-supervised {den.arch} denoiser ({den.mode} mode) for two-photon calcium-imaging "
                     "time-lapses, trained with napari-unet-att"),
        authors=[v.Author(name="napari-unet-att developers")],
        cite=[v.CiteEntry(**c) for c in CITATIONS],
        license=v.LicenseId("BSD-3-Clause"),
        documentation=v.FileDescr(source=folder / "README.md"),
        covers=[v.FileDescr(source=folder / "cover.png")],
        tags=["denoising", "self-supervised", "two-photon", "calcium-imaging", "3d", "time-lapse", "pytorch",
              "napari-unet-att", den.arch.replace("_", "-"), den.mode],
        inputs=inputs,
        outputs=outputs,
        weights=weights,
        attachments=[],
        config=v.Config(bioimageio=v.BioimageioConfig(reproducibility_tolerance=[tolerance]),
                        **{CONFIG_KEY: _metadata(den)}),
    )


__all__ = [
    "CITATIONS",
    "CONFIG_KEY",
    "DEFAULT_MIN_SIZE",
    "PACKAGE_FORMAT",
    "bioimageio_spec",
    "build_description",
    "default_sample",
    "engine_output",
    "per_input",
    "test_input",
    "tile_geometry",
]
