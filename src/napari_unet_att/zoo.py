"""BioImage Model Zoo (bioimage.io) model packages: export ours, import ours back.

:func:`export_bioimageio` writes a package of the current model spec (format 0.5) through the
``bioimageio.spec`` library (the optional ``bioimageio`` extra): ``pytorch_state_dict`` weights
whose architecture is this package's own ``networks.py`` (with its sha256) and traced
``torchscript`` weights; axes ``(batch, channel, time, y, x)`` with the network's size
multiple and a halo; our normalisation as pre / post-processing in the input's units; a test
input with the output our engine gives for it; a cover (raw | denoised); documentation;
citations; and this package's checkpoint metadata under ``config.napari_unet_att``.

:func:`load_package` reads such a package back without ``bioimageio.spec`` and without
unpickling (``torch.load(weights_only=True)`` of the state dict; the TorchScript file is never
loaded); :func:`is_package` tells ``checkpoint.load_any`` when to call it.

No Qt / napari here: the CLI (``export --format bioimageio``) and the widgets call these functions.
"""

from __future__ import annotations

import hashlib
import io as _pyio
import os
import shutil
import tempfile
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import __version__
from .errors import CheckpointError, InputError
from .model import networks
from .model.denoiser import Denoiser
from .model.normalization import Normalization
from .provenance import timestamp
from .stackio import atomic_file

PathLike = str | os.PathLike

#: Key of our metadata in the package's ``config``; its presence marks a package as ours.
CONFIG_KEY = "napari_unet_att"
#: Version of what we store under ``config.napari_unet_att``.
PACKAGE_FORMAT = 1
#: Default smallest tile (time, y, x) of the exported model: the whole-frame width our tiler
#: narrows to at most (``infer.MIN_TILE_XY``) and twice its shortest temporal context.
DEFAULT_MIN_SIZE = 64
_CLASS = {"unet_att": "UNetAtt", "unet3d": "UNet3D"}
_RDF_NAMES = ("rdf.yaml", "bioimageio.yaml")
_INSTALL_HINT = 'install the optional extra: pip install "napari-unet-att[bioimageio]"'

CITATIONS: tuple[dict[str, str], ...] = (
    {"text": "UNet-Att: a 3D UNet++ with attention gates for self-supervised denoising of two-photon "
             "calcium imaging (reference implementation)", "url": "https://github.com/ZjjDh/UNet-Att"},
    {"text": "Li X. et al. Reinforcing neuron extraction and spike inference in calcium imaging using deep "
             "self-supervised denoising (DeepCAD). Nature Methods 18, 1395-1400 (2021)",
     "doi": "10.1038/s41592-021-01225-0"},
    {"text": "Li X. et al. Real-time denoising enables high-sensitivity fluorescence time-lapse imaging beyond "
             "the shot-noise limit (DeepCAD-RT). Nature Biotechnology 41, 282-292 (2023)",
     "doi": "10.1038/s41587-022-01450-8"},
    {"text": "DeepBID: self-supervised denoising of bidirectional-scan two-photon recordings "
             "(mirrored-scan pairs; reference implementation)", "url": "https://github.com/shenblin/DeepBID"},
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
    halo = max(1, min(networks.receptive_field(arch) // 2, min_size // 4))
    return min_size, step, halo


# ----------------------------------------------------------------------------------------------
# export
# ----------------------------------------------------------------------------------------------
def _spec():
    """The ``bioimageio.spec`` modules used here, or an :class:`InputError` saying how to get them."""
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
    from .model.checkpoint import _to_dict  # the one place that says what a checkpoint stores

    meta = {k: v for k, v in _to_dict(den).items() if k not in ("state_dict", "magic")}
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
    from .stackio import read_stack, samples

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
    from .config import InferConfig
    from .inference.denoising import denoise

    # keep_mean=False: the engine's per-frame mean-keeping step is ours alone (zoo tools do not apply it)
    cfg = InferConfig(device="cpu", amp=False, tta=1, normalization="model", keep_mean=False,
                      tile_t=max(8, stack.shape[0]), max_tile_xy=max(16, *stack.shape[1:]))
    return np.asarray(denoise(stack, den, cfg), dtype=np.float32)


def _trace(den: Denoiser, example: torch.Tensor) -> torch.jit.ScriptModule:
    """TorchScript of the network, traced on the portable path (plain convs, any device)."""
    import warnings

    net = den.net.to("cpu").eval()
    old = networks.CPU_FAST_PATH
    networks.CPU_FAST_PATH = False  # oneDNN calls would tie the trace to the CPU
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.jit.trace(net, example, check_trace=False)
    finally:
        networks.CPU_FAST_PATH = old


def _cover(raw: np.ndarray, denoised: np.ndarray, path: Path) -> None:
    """PNG of the middle frame: raw | denoised, on one intensity scale."""
    import matplotlib.image as mpimg

    mid = raw.shape[0] // 2
    pair = np.concatenate([raw[mid], np.full((raw.shape[1], 2), np.nan), denoised[mid]], axis=1)
    lo, hi = np.nanpercentile(pair, [0.5, 99.5])
    img = np.clip((np.nan_to_num(pair, nan=hi) - lo) / max(hi - lo, 1e-9), 0, 1)
    rep = max(1, 256 // img.shape[0])  # zoo covers should not be thumbnails
    mpimg.imsave(path, np.kron(img, np.ones((rep, rep))), cmap="gray", vmin=0, vmax=1)


def _ground_truth_note(prov: dict) -> str:
    if prov.get("targets"):  # the pretrained generalists: simulations with their clean twins
        return f"; targets: {prov['targets']}"
    return "; no clean ground truth was used"


def _documentation(den: Denoiser, geometry: tuple[int, int, int], name: str) -> str:
    min_size, step, halo = geometry
    prov = den.provenance
    sources = ", ".join(map(str, prov.get("sources", []))) or prov.get("source", "unknown")
    shape = "x".join(map(str, den.train_shape)) if den.train_shape else "unknown"
    mirrored = ""
    if den.mode == "mirrored":
        mirrored = (
            "\n## Mirrored-scan model: what the input is\n\n"
            "This model was trained on a raw bidirectional-scan recording of shape (T, 2N, N): even rows are "
            "the forward lines, odd rows the backward lines. The network itself denoises ONE of those line "
            "sets, a (T, N, N) stack. Zoo tools run the network only: give them the forward lines "
            "`raw[:, 0::2]` and, separately, the backward lines `raw[:, 1::2]`"
            + (" mirrored in x (`[..., ::-1]`, and mirror the result back)" if den.flip_backward else "")
            + ", then interleave the two results into rows 0::2 and 1::2. napari-unet-att does this split "
            "and interleave itself when given the (T, 2N, N) recording; that step is ours alone.\n"
        )
    return f"""# {name}

Self-supervised denoiser for two-photon calcium-imaging time-lapses, exported by napari-unet-att
{__version__} from a `{den.arch}` network (f = {den.base_channels}, preset `{den.preset}`,
self-supervision mode `{den.mode}`).

## Training

- data: {prov.get('trained_on', sources)} (first stack {shape}){_ground_truth_note(prov)}
- steps: {den.step}; created {prov.get('created', 'unknown')}; torch {prov.get('torch', 'unknown')}
- normalisation stored with the model: offset {den.norm.offset:.6g}, scale {den.norm.scale:.6g}
  (input units){chr(10) + '- ' + prov['zoo_normalization'] if 'zoo_normalization' in prov else ''}

## Inputs and outputs

Input `raw` and output `denoised` are (batch, channel, time, y, x) float32 in the recording's own
intensity units (photon counts / detector units): the preprocessing subtracts the offset and divides
by the scale, the postprocessing multiplies back and adds the offset, so the output has the units
of the input. Each of time, y and x must be {min_size} + n x {step} voxels (the network pools three
times by 2); the halo of {halo} voxels per side is the network's receptive field (one side), capped
at a quarter of the smallest tile as napari-unet-att caps tile overlaps.

Differences from napari-unet-att's own inference: it blends overlapping tiles with a smooth window
(zoo tools crop the halo instead), pads ragged sizes by reflection at the far end, and may apply
optional post-processing steps of its own (e.g. per-frame mean keeping, test-time flips) that zoo
tools do not apply. On a single tile without those options the two give the same numbers within
float tolerance.
{mirrored}
## Fine-tuning with napari-unet-att

```bash
pip install "napari-unet-att[bioimageio]"
napari-unet-att train my_recording.tif --init {name}.zip --steps 500 --out runs/finetuned
napari-unet-att denoise my_recording.tif --model {name}.zip --out denoised.tif
```

Presets: `fast` (UNet-Att f = 8, laptop CPU), `paper` (UNet-Att f = 16, as published), `unet3d`
(plain 3D UNet of DeepCAD-RT / DeepBID, f = 16).

## Validation

The package's test input is a {min_size}^3 crop of a recording and its test output is what
napari-unet-att computes for it (float32, CPU); `bioimageio test` reruns it. To check the model on
your own data without ground truth, compare raw and denoised traces of ROIs and the correlation of
adjacent frames (`napari-unet-att evaluate denoised.tif --raw raw.tif`); with a high-SNR reference,
PSNR / SSIM (`--reference`).
"""


def _fixed_to(den: Denoiser, sample: Any) -> Denoiser:
    """A model that normalises each input by its own statistics, fixed to ``sample``'s for the package.

    The zoo's pre-processing can standardise per input, but its post-processing cannot map the
    output back with the *input's* statistics the way our engine does, so the package carries
    fixed ones: those of the sample (the recording the package is made for; ``--sample``).
    """
    import dataclasses

    from .model.normalization import stack_statistics

    mean, sd, _ = stack_statistics(sample)
    prov = {k: val for k, val in den.provenance.items() if k != "normalization"}
    prov["zoo_normalization"] = (f"napari-unet-att normalises every recording by its own mean and std; this "
                                 f"package fixes them to its sample's (mean {mean:.6g}, std {sd:.6g}): export "
                                 "again with --sample for recordings of another brightness")
    return dataclasses.replace(den, norm=Normalization(mean, sd if sd > 0 else 1.0), provenance=prov)


def build_description(den: Denoiser, folder: Path, sample: Any = None,
                      min_size: int = DEFAULT_MIN_SIZE, name: str | None = None) -> Any:
    """Write a package's files into ``folder`` and return its ``bioimageio.spec`` ModelDescr (not yet zipped).

    Raises
    ------
    InputError
        ``bioimageio.spec`` missing, a model normalised with each input's own statistics (not
        expressible as the zoo's pre / post-processing), an invalid ``min_size`` or sample.
    """
    spec, v = _spec()
    sample = default_sample(den) if sample is None else sample
    if den.provenance.get("normalization") == "input":
        den = _fixed_to(den, sample)
    geometry = tile_geometry(den.arch, min_size)
    size, step, halo = geometry
    name = name or f"napari-unet-att {den.preset} {den.mode}"
    test_in = test_input(den, sample, size)
    test_out = engine_output(den, test_in)
    np.save(folder / "test_input.npy", test_in[None, None])
    np.save(folder / "test_output.npy", test_out[None, None])
    _cover(test_in, test_out, folder / "cover.png")
    (folder / "README.md").write_text(_documentation(den, geometry, name), encoding="utf-8")
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

    off, scale = float(den.norm.offset), float(den.norm.scale)
    inputs = [v.InputTensorDescr(
        id=tid_in, axes=in_axes(), description="noisy recording, in its own intensity units",
        test_tensor=v.FileDescr(source=folder / "test_input.npy"),
        data=v.IntervalOrRatioDataDescr(type="float32"),
        preprocessing=[
            v.EnsureDtypeDescr(kwargs=v.EnsureDtypeKwargs(dtype="float32")),
            v.FixedZeroMeanUnitVarianceDescr(kwargs=v.FixedZeroMeanUnitVarianceKwargs(mean=off, std=scale)),
        ],
    )]
    outputs = [v.OutputTensorDescr(
        id=tid_out, axes=out_axes(), description="denoised recording, in the input's intensity units",
        test_tensor=v.FileDescr(source=folder / "test_output.npy"),
        data=v.IntervalOrRatioDataDescr(type="float32"),
        postprocessing=[v.ScaleLinearDescr(kwargs=v.ScaleLinearKwargs(gain=scale, offset=off))],
    )]
    torch_version = v.Version(torch.__version__.split("+")[0])
    weights = v.WeightsDescr(
        pytorch_state_dict=v.PytorchStateDictWeightsDescr(
            source=folder / "weights.pt", sha256=v.Sha256(_sha256(folder / "weights.pt")),
            architecture=v.ArchitectureFromFileDescr(
                source=folder / "networks.py", sha256=v.Sha256(_sha256(folder / "networks.py")),
                callable=v.Identifier(_CLASS[den.arch]), kwargs={"base_channels": int(den.base_channels)}),
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


def export_bioimageio(den: Denoiser, out: PathLike, sample: Any = None,
                      min_size: int = DEFAULT_MIN_SIZE, name: str | None = None) -> Path:
    """Write ``den`` as a BioImage Model Zoo package (``.zip``, format 0.5), atomically.

    Parameters
    ----------
    den : Denoiser
        Model to export (normalisation stored in the model).
    out : str or path-like
        Destination ``.zip``; replaced only when the whole package was written and validated.
    sample : array-like (T, Y, X), optional
        Recording to cut the test input from (a centred ``min_size`` cube; a mirrored-scan model's
        raw ``(T, 2N, N)`` scan gives its forward lines); default: the shipped simulated
        recording of the model's mode.
    min_size : int
        Smallest valid tile per axis (see :func:`tile_geometry`).
    name : str, optional
        Model name in the package.

    Returns
    -------
    Path
        ``out``.

    Raises
    ------
    InputError, ResourceError
        Missing ``bioimageio.spec``, a model the zoo's processing cannot express, an invalid
        size / sample / destination (a failed export leaves no file).
    """
    out = Path(out)
    if out.suffix.lower() != ".zip":
        raise InputError(f"a bioimage.io package is a .zip file; got --out {out}")
    spec, _ = _spec()
    with tempfile.TemporaryDirectory(prefix="unet-att-zoo-") as tmp:
        folder = Path(tmp) / "files"
        folder.mkdir()
        try:
            descr = build_description(den, folder, sample, min_size, name)
        except ValueError as exc:  # pydantic's ValidationError, e.g. a --name the spec refuses
            if isinstance(exc, InputError):
                raise
            lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip() and "errors.pydantic" not in ln]
            raise InputError("bioimageio.spec refused the package: " + "; ".join(lines[1:4])) from None
        summary = descr.validation_summary
        if summary.status not in ("passed", "valid-format"):
            raise InputError(f"bioimageio.spec refused the package: {summary.format()[:600]}")
        staged = Path(tmp) / "package.zip"
        spec.save_bioimageio_package(descr, output_path=staged)
        with atomic_file(out) as dest:
            shutil.copyfile(staged, dest)
    return out


# ----------------------------------------------------------------------------------------------
# import
# ----------------------------------------------------------------------------------------------
def is_package(path: PathLike) -> bool:
    """True for a path that should be read as a bioimage.io package (a ``.zip`` or a zip with an RDF)."""
    path = Path(path)
    if path.suffix.lower() == ".zip":
        return True
    try:
        with zipfile.ZipFile(path) as zf:
            return any(n in _RDF_NAMES for n in zf.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def _read_rdf(zf: zipfile.ZipFile, path: Path) -> dict[str, Any]:
    import yaml

    name = next((n for n in _RDF_NAMES if n in zf.namelist()), None)
    if name is None:
        raise CheckpointError(f"{path} is a zip file but not a bioimage.io package (no rdf.yaml / bioimageio.yaml)")
    try:
        rdf = yaml.safe_load(zf.read(name).decode("utf-8"))
    except Exception as exc:
        raise CheckpointError(f"{path}: the package's {name} is unreadable ({type(exc).__name__}); the file is "
                              "damaged") from None
    if not isinstance(rdf, dict):
        raise CheckpointError(f"{path}: the package's {name} is not a description (a {type(rdf).__name__})")
    return rdf


def _what_it_is(rdf: Mapping[str, Any]) -> str:
    """A short description of a foreign package: name, type, weight formats, architecture."""
    weights = rdf.get("weights") if isinstance(rdf.get("weights"), Mapping) else {}
    arch = ""
    psd = weights.get("pytorch_state_dict") if isinstance(weights, Mapping) else None
    if isinstance(psd, Mapping) and isinstance(psd.get("architecture"), Mapping):
        arch = f", architecture {psd['architecture'].get('callable', '?')}"
    formats = ", ".join(sorted(map(str, weights))) or "none"
    return (f"the {rdf.get('type', 'unknown')} '{rdf.get('name', '?')}' (format {rdf.get('format_version', '?')}, "
            f"weights: {formats}{arch})")


def load_package(path: PathLike, device: Any = "cpu") -> Denoiser:
    """Load a bioimage.io package exported by napari-unet-att (no code run, nothing unpickled).

    Raises
    ------
    CheckpointError
        Missing / corrupt zip, not a bioimage.io package, a package of another model (named),
        weights that fail their sha256 or do not match the stored architecture.
    """
    from .model.checkpoint import _build, _device

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"model package not found: {path}")
    try:
        with zipfile.ZipFile(path) as zf:
            rdf = _read_rdf(zf, path)
            meta = (rdf.get("config") or {}).get(CONFIG_KEY) if isinstance(rdf.get("config"), Mapping) else None
            if not isinstance(meta, Mapping):
                raise CheckpointError(f"{path} is {_what_it_is(rdf)}, not a napari-unet-att model; only packages "
                                      "exported by napari-unet-att can be loaded")
            entry = (rdf.get("weights") or {}).get("pytorch_state_dict") or {}
            data = zf.read(str(entry.get("source", "")))
    except (zipfile.BadZipFile, EOFError, KeyError, OSError, zipfile.LargeZipFile, zlib.error) as exc:
        # zlib.error: a damaged byte inside a compressed member fails while inflating, before any checksum
        raise CheckpointError(f"{path} is a corrupt or truncated bioimage.io package ({type(exc).__name__}: "
                              f"{str(exc)[:120]})") from None
    if entry.get("sha256") and hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise CheckpointError(f"{path}: the weights do not match their sha256 in the package; the file is damaged")
    return _denoiser(meta, data, path, _device(device), _build)


def _denoiser(meta: Mapping[str, Any], data: bytes, path: Path, device: torch.device, build: Any) -> Denoiser:
    version = meta.get("package_format")
    if not isinstance(version, int) or version > PACKAGE_FORMAT:
        raise CheckpointError(f"{path} was exported by a newer napari-unet-att (package format {version!r}); "
                              "update napari-unet-att")
    try:
        state = torch.load(_pyio.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: the package's weights are unreadable or unsafe ({type(exc).__name__}); "
                              "they were not loaded") from None
    try:
        norm = Normalization.from_dict(meta["normalization"])
        arch, f, mode = str(meta["arch"]), int(meta["base_channels"]), str(meta["mode"])
    except (KeyError, TypeError, ValueError):
        raise CheckpointError(f"{path}: incomplete napari-unet-att metadata in the package") from None
    net = build(arch, f, state, path)
    shape = meta.get("train_shape")
    prov = dict(meta.get("provenance") or {})
    prov["imported_from"] = str(path)
    prov.setdefault("created", timestamp())
    return Denoiser(net=net.to(device).eval(), arch=arch, base_channels=f, preset=str(meta.get("preset", "custom")),
                    mode=mode, norm=norm, flip_backward=bool(meta.get("flip_backward", False)),
                    train_shape=None if shape is None else tuple(int(n) for n in shape),
                    train_config=dict(meta.get("train_config") or {}), provenance=prov,
                    step=int(meta.get("step", 0)))


__all__ = [
    "CITATIONS",
    "CONFIG_KEY",
    "DEFAULT_MIN_SIZE",
    "PACKAGE_FORMAT",
    "build_description",
    "default_sample",
    "engine_output",
    "export_bioimageio",
    "is_package",
    "load_package",
    "test_input",
    "tile_geometry",
]

