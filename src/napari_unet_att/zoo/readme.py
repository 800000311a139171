"""The documentation (README.md) of an exported bioimage.io package: what the model is and how to use it."""

from __future__ import annotations

from .. import __version__
from ..model.denoiser import Denoiser


def _ground_truth_note(prov: dict) -> str:
    if prov.get("targets"):  # the pretrained generalists: simulations with their clean twins
        return f"; targets: {prov['targets']}"
    return "; no clean ground truth was used"


def _normalisation_notes(den: Denoiser) -> tuple[str, str]:
    """The Training section's normalisation line and the Inputs section's sentence on intensities."""
    if den.provenance.get("normalization") == "input":  # the generalists (package.per_input)
        return ("- normalisation: every input by its own mean and standard deviation (as napari-unet-att "
                "runs this model), done inside the network (`UNetAttPerInput` / `UNet3DPerInput` in "
                "networks.py: standardise, denoise, map back), so the package has no intensity pre- or "
                "post-processing and fits recordings of any brightness",
                "the network standardises each input by its own mean and standard deviation and maps its output "
                "back with them, so the output has the units of the input (tiling tools compute these statistics "
                "per tile)")
    return (f"- normalisation stored with the model: offset {den.norm.offset:.6g}, scale {den.norm.scale:.6g} "
            "(input units)",
            "the preprocessing subtracts the offset and divides by the scale, the postprocessing multiplies back "
            "and adds the offset, so the output has the units of the input")


def documentation(den: Denoiser, geometry: tuple[int, int, int], name: str) -> str:
    """The README.md of ``den``'s package; ``geometry`` is ``(min_size, step, halo)`` (``package.tile_geometry``)."""
    min_size, step, halo = geometry
    prov = den.provenance
    norm_line, units = _normalisation_notes(den)
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
{norm_line}

## Inputs and outputs

Input `raw` and output `denoised` are (batch, channel, time, y, x) float32 in the recording's own
intensity units (photon counts / detector units): {units}.
Each of time, y and x must be {min_size} + n x {step} voxels (the network pools three
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


__all__ = ["documentation"]
