"""The model: the networks (UNet-Att with its attention gates, the plain 3D UNet), the Denoiser
that pairs one with its normalisation, and model files.

- :mod:`.networks`: the two networks, their blocks and :class:`~.networks.AttentionGate`;
  :func:`build_network` makes one;
- :mod:`._receptive_field` (:func:`receptive_field`): how far an output voxel sees (tile overlaps, package halos);
- :mod:`.normalization`: intensity normalisation stored with a model;
- :mod:`.denoiser`: :class:`Denoiser`, a network with everything needed to apply it;
- :mod:`.checkpoint`: our model files (save, load, resume state), :func:`load_any` for any model file;
- :mod:`.checkpoint_format`: what a checkpoint holds and the checks a loaded one must pass;
- :mod:`.safe_loading`: reading a file without running code from it, and naming what is wrong with it;
- :mod:`.reference`: the reference tools' (UNet-Att, DeepCAD-RT, DeepBID) weights as our networks;
- :mod:`.pretrained`: the shipped generalist models, and :func:`load_model` by name or path.
"""

from ._receptive_field import receptive_field
from .checkpoint import import_reference, load_any, load_checkpoint, save_checkpoint
from .denoiser import Denoiser
from .networks import ARCHS, AttentionGate, UNet3D, UNetAtt, build_network, count_parameters
from .normalization import Normalization
from .pretrained import load_model

__all__ = [
    "ARCHS",
    "AttentionGate",
    "Denoiser",
    "Normalization",
    "UNet3D",
    "UNetAtt",
    "build_network",
    "count_parameters",
    "import_reference",
    "load_any",
    "load_checkpoint",
    "load_model",
    "receptive_field",
    "save_checkpoint",
]
