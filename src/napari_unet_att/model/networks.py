"""The two denoising networks: UNet-Att (3D UNet++ with attention gates) and the plain 3D UNet.

Read in this order: the CPU convolution kernels (:func:`conv3d`), the building blocks, the
attention gate (:class:`AttentionGate`), padding and cropping, the networks (:class:`UNetAtt`,
:class:`UNet3D`) and their factory (:func:`build_network`). Their receptive field is traced in
:func:`~napari_unet_att.model.receptive_field`; the reference tools' weights are converted in
:mod:`~napari_unet_att.model.reference`.

Both map ``(B, 1, T, Y, X)`` float32 to the same shape, for any T, Y, X: the input is padded
at the far end of each axis (reflect where the axis is long enough, else replicate) to a
multiple of 8 and to the minimum size the network needs, and the output is cropped back.
Upsampled tensors are resized to their skip connection's exact size, never by a bare
``scale_factor``.

Module and parameter names are those of the reference code (``UNet2_attention`` of
ZjjDh/UNet-Att, ``UNet3D`` of cabooster/DeepCAD-RT, ``UNet_3D`` of shenblin/DeepBID), so their
state dicts load after stripping the ``Generator.`` prefix (see
:func:`~napari_unet_att.model.reference.convert_reference_state_dict`).
Interpolation modes also match the references (trilinear with ``align_corners=True`` in the
UNet-Att decoder, ``align_corners=False`` inside the gates, nearest in the plain UNet), so
imported weights compute what they computed in the reference code.

On CPU inference the networks call oneDNN directly instead of the modules (:func:`conv3d`):
the same math, several times faster; a float32 CPU training step takes a few shortcuts of its own
(:func:`_cpu_train_path`). Each network holds the switch for both, ``cpu_fast_path``
(:meth:`~_PaddedNet.set_cpu_fast_path`, :meth:`~_PaddedNet.without_cpu_fast_path`): off, every
layer runs as a plain module call, which forward hooks see and TorchScript traces portably.

Why one file of over 450 lines: :mod:`napari_unet_att.zoo` copies this file verbatim into
every bioimage.io package as the architecture source, which zoo tools import on their own
(without this package), so everything a network needs to run must live here; the fallbacks
below for ``errors`` and ``runtime.resources`` exist for that standalone use.
"""

from __future__ import annotations

import copy
import functools
import math
import operator
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

try:
    from ..errors import InputError
except ImportError:  # run as a standalone file: the architecture source of a bioimage.io package (zoo)

    class InputError(ValueError):  # type: ignore[no-redef]
        """The input is not what the network needs."""

ARCHS: tuple[str, ...] = ("unet_att", "unet3d")

#: Every padded axis is a multiple of this (three 2x2x2 max-pools).
SIZE_MULTIPLE = 8
#: Smallest padded axis per architecture. UNet-Att's deepest gate runs an unpadded stride-2
#: 3x3x3 conv on level 2 (n / 4 voxels), which needs >= 3 voxels, so n >= 12 -> 16.
MIN_SIZE: dict[str, int] = {"unet_att": 16, "unet3d": 8}


# ----------------------------------------------------------------------------------------------
# CPU kernels
# ----------------------------------------------------------------------------------------------
def _cpu_fast_path(enabled: bool, x: torch.Tensor) -> bool:
    """Whether to call oneDNN directly: switch ``enabled``, CPU float32 inference, oneDNN available and on."""
    # Inference only: with autograd the layout conversions' backward costs more than oneDNN saves.
    return (
        enabled
        and not torch.is_grad_enabled()
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and torch.backends.mkldnn.is_available()
        and bool(torch.backends.mkldnn.enabled)
    )


def _cpu_train_path(enabled: bool, x: torch.Tensor) -> bool:
    """Whether to take the float32 CPU *training* shortcuts: switch ``enabled``, autograd on, float32, no autocast.

    The shortcuts (1x1x1 convs as matrix products, the gates' one-channel resize as three; see
    :class:`AttentionGate`) keep the math and make a float32 training step faster, and its
    result independent of the thread count. Autocast (bf16, CUDA) and oneDNN disabled keep the
    plain modules.
    """
    return (
        enabled
        and torch.is_grad_enabled()
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and not _autocast_on(x.device.type)
        and torch.backends.mkldnn.is_available()
        and bool(torch.backends.mkldnn.enabled)
    )


def _autocast_on(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4: no device argument
        return torch.is_autocast_cpu_enabled() if device_type == "cpu" else torch.is_autocast_enabled()


def _is_pointwise(conv: nn.Conv3d) -> bool:
    return conv.kernel_size == (1, 1, 1) and conv.stride == (1, 1, 1) and conv.groups == 1


def conv3d(x: torch.Tensor, conv: nn.Conv3d, fast_path: bool = True) -> torch.Tensor:
    """Apply ``conv`` to ``x``: same math as ``conv(x)``, faster on CPU (unless ``fast_path`` is False).

    On CPU, ``F.conv3d`` picks ATen's slow im2col kernel for batch 1 whenever
    ``C * T * Y <= 20480`` (a heuristic written for 2D images), which covers most of a 128 x 128
    tile's layers and runs several times slower than oneDNN (figures in docs/performance.md,
    "Measurements behind the code"); so 3x3x3 convs call oneDNN directly.
    1x1x1 convs become one matrix product over channels-last voxels, which beats both conv
    kernels. Both paths support autograd. In a float32 CPU training step (:func:`_cpu_train_path`)
    1x1x1 convs are that matrix product too: ``conv(x)`` would pick ATen's slow kernel on one
    thread (and a contiguous output that costs a copy per decoder node), oneDNN on more.
    Elsewhere (CUDA, other dtypes, autocast in training, oneDNN disabled with
    ``torch.backends.mkldnn.flags(enabled=False)``) this is plain ``conv(x)``.
    """
    if _is_pointwise(conv) and (_cpu_fast_path(fast_path, x) or _cpu_train_path(fast_path, x)):
        y = F.linear(x.permute(0, 2, 3, 4, 1), conv.weight.flatten(1), conv.bias)
        return y.permute(0, 4, 1, 2, 3)  # a channels-last view, no copy
    if not _cpu_fast_path(fast_path, x):
        return conv(x)
    # channels-last weights are markedly faster in oneDNN; a no-op when already so
    w = conv.weight.contiguous(memory_format=torch.channels_last_3d)
    return torch.mkldnn_convolution(x, w, conv.bias, conv.padding, conv.stride, conv.dilation, conv.groups)


# ----------------------------------------------------------------------------------------------
# building blocks (names follow the reference code so state-dict keys match)
# ----------------------------------------------------------------------------------------------
class _ConvUnit(nn.Sequential):
    """Conv3d 3x3x3 (padding 1, bias) + ReLU; the reference's ``SingleConv`` with order 'cr'."""

    cpu_fast_path = True  # set per network by _PaddedNet.set_cpu_fast_path

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.add_module("conv", nn.Conv3d(c_in, c_out, kernel_size=3, padding=1, bias=True))
        self.add_module("ReLU", nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # In place: a fresh conv output, and saves an activation-sized allocation per conv.
        return torch.relu_(conv3d(x, self.conv, self.cpu_fast_path))


class _DoubleConv(nn.Sequential):
    """Two conv units (``SingleConv1``, ``SingleConv2``).

    Encoder blocks go ``c_in -> max(c_out // 2, c_in) -> c_out``; decoder blocks ``c_in -> c_out -> c_out``.
    """

    def __init__(self, c_in: int, c_out: int, encoder: bool) -> None:
        super().__init__()
        mid = max(c_out // 2, c_in) if encoder else c_out
        self.add_module("SingleConv1", _ConvUnit(c_in, mid))
        self.add_module("SingleConv2", _ConvUnit(mid, c_out))


class _Encoder(nn.Module):
    """Optional MaxPool3d(2) then a double conv (reference ``Encoder``)."""

    def __init__(self, c_in: int, c_out: int, pool: bool) -> None:
        super().__init__()
        self.pooling = nn.MaxPool3d(kernel_size=2) if pool else None
        self.basic_module = _DoubleConv(c_in, c_out, encoder=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pooling is not None:
            x = self.pooling(x)
        return self.basic_module(x)


class _Decoder(nn.Module):
    """A decoder node's double conv; the joining (upsample + concat) is done by the network."""

    cpu_fast_path = True

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.basic_module = _DoubleConv(c_in, c_out, encoder=False)

    def forward(self, parts: Sequence[torch.Tensor]) -> torch.Tensor:
        """Double conv over the channel concatenation of ``parts``.

        On the CPU inference path the first conv is a sum of convs over the parts (the weights
        split by input channel): the same result without materialising the concatenation,
        which is the largest tensor of a node (its memory sets the tile size that fits).
        """
        first, second = self.basic_module.SingleConv1, self.basic_module.SingleConv2
        if len(parts) > 1 and _cpu_fast_path(self.cpu_fast_path, parts[0]):
            x = torch.relu_(_conv3d_split(parts, first.conv))
        elif len(parts) > 1:
            if torch.is_grad_enabled() and parts[0].device.type == "cpu":
                parts = [_ChannelsLastGrad.apply(p) for p in parts]
            x = first(torch.cat(tuple(parts), 1))
        else:
            x = first(parts[0])
        return second(x)


class _ChannelsLastGrad(torch.autograd.Function):
    """Identity whose backward hands on the gradient as a channels-last contiguous tensor.

    The backward of ``cat`` yields channel slices of the (channels-last) gradient of the
    conv that reads it; such slices are in neither memory format, and the CPU backward of the
    trilinear resize and of batch norm then take slow generic kernels. One copy into
    channels-last order puts them back on their vectorised kernels, which makes a CPU training
    step markedly faster (figures in docs/performance.md, "Measurements behind the code").
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad.contiguous(memory_format=torch.channels_last_3d)


def _conv3d_split(parts: Sequence[torch.Tensor], conv: nn.Conv3d) -> torch.Tensor:
    """``conv(cat(parts, 1))`` as a sum of oneDNN convs, one per part (inference only)."""
    w = conv.weight
    out: torch.Tensor | None = None
    start = 0
    for part in parts:
        n = part.shape[1]
        wp = w[:, start:start + n].contiguous(memory_format=torch.channels_last_3d)
        y = torch.mkldnn_convolution(part, wp, None, conv.padding, conv.stride, conv.dilation, conv.groups)
        out = y if out is None else out.add_(y)
        start += n
    assert out is not None and start == w.shape[1]
    if conv.bias is not None:
        out.add_(conv.bias.view(1, -1, 1, 1, 1))
    return out


# ----------------------------------------------------------------------------------------------
# the attention gate
# ----------------------------------------------------------------------------------------------
class AttentionGate(nn.Module):
    """Additive attention gate A(x | g) of UNet-Att (reference ``AttentionBlock``, 'concat_attention').

    A skip connection ``x`` (C channels) is weighted voxel by voxel by ``alpha`` in [0, 1],
    computed from ``x`` and the gating signal ``g``, the next level's features, which say
    where structure is: ``theta = conv_x(x)`` (C -> 2C, 3x3x3, stride 2, no padding, no bias);
    ``g`` (2C channels, one level down) is resized trilinearly to theta's size with no learned
    projection; ``alpha = sigmoid(sig_conv(relu(theta + g)))`` is resized back to x's size;
    the output is ``W(alpha * x)`` with ``W`` = Conv3d(C -> C, 1x1x1) + BatchNorm3d.
    :class:`UNetAtt` gates every skip it reads.

    Parameters
    ----------
    channels : int
        Channels C of ``x``; ``g`` has 2C.
    """

    cpu_fast_path = True

    def __init__(self, channels: int) -> None:
        super().__init__()
        c = channels
        self.W = nn.Sequential(nn.Conv3d(c, c, kernel_size=1), nn.BatchNorm3d(c))
        self.conv_x = nn.Conv3d(c, 2 * c, kernel_size=3, stride=2, padding=0, bias=False)
        self.sig_conv = nn.Conv3d(2 * c, 1, kernel_size=1, bias=True)

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        fast = self.cpu_fast_path
        theta = conv3d(x, self.conv_x, fast)
        # align_corners=False: what the reference's F.upsample(..., mode='trilinear') defaults to.
        g = _resize(g, theta.shape[2:], align_corners=False)
        f = theta.add_(g).relu_()  # theta is a fresh conv output: in place is safe
        alpha = torch.sigmoid_(conv3d(f, self.sig_conv, fast))
        conv, bn = self.W
        if _cpu_train_path(fast, x):
            # A float32 CPU training step: the one-channel resize as three small matrix products,
            # whose backward is far faster than the resize's; the 1x1x1 conv as one too, into a
            # contiguous tensor, on which BatchNorm's batch statistics are ~100x more precise than
            # on a channels-last one (whose CPU kernel sums in plain float32); the output goes back
            # to channels-last, the layout of the decoder that reads it.
            alpha = _resize_separable(alpha, x.shape[2:], align_corners=False)
            y = bn(_pointwise_contiguous(alpha * x, conv))
            return y.contiguous(memory_format=torch.channels_last_3d)
        alpha = _resize(alpha, x.shape[2:], align_corners=False)
        if not self.training and bn.running_mean is not None and _cpu_fast_path(fast, x):
            # Eval-mode BatchNorm is a per-channel affine map: folded into the 1x1x1 conv it
            # saves a pass over (and an allocation of) a full-resolution C-channel tensor.
            w, b = _fold_batch_norm(conv, bn)
            y = F.linear((alpha * x).permute(0, 2, 3, 4, 1), w, b)
            return y.permute(0, 4, 1, 2, 3)  # a channels-last view, no copy
        return bn(conv3d(alpha * x, conv, fast))


def _fold_batch_norm(conv: nn.Conv3d, bn: nn.BatchNorm3d) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights ``(C_out, C_in)`` and bias of the 1x1x1 ``conv`` followed by eval-mode ``bn``."""
    assert bn.running_mean is not None and bn.running_var is not None
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -bn.running_mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    w = conv.weight.flatten(1) * scale[:, None]
    b = shift if conv.bias is None else conv.bias * scale + shift
    return w, b


def _resize(x: torch.Tensor, size: Sequence[int], align_corners: bool) -> torch.Tensor:
    """Trilinear resize of ``x`` to spatial ``size``."""
    return F.interpolate(x, size=tuple(size), mode="trilinear", align_corners=align_corners)


def _pointwise_contiguous(x: torch.Tensor, conv: nn.Conv3d) -> torch.Tensor:
    """The 1x1x1 ``conv(x)`` of a channels-last ``x`` as one batched matrix product, output contiguous."""
    b, c = x.shape[:2]
    voxels = x.permute(0, 2, 3, 4, 1).reshape(b, -1, c).transpose(1, 2)  # (B, C, voxels), no copy
    w = conv.weight.flatten(1).expand(b, -1, -1)
    y = torch.bmm(w, voxels) if conv.bias is None else torch.baddbmm(conv.bias.view(1, -1, 1), w, voxels)
    return y.view(b, -1, *x.shape[2:])


@functools.lru_cache(maxsize=64)
def _interp_matrix(n_in: int, n_out: int, align_corners: bool, dtype: torch.dtype) -> torch.Tensor:
    """``(n_out, n_in)`` weights of 1D linear interpolation to ``n_out`` points, as ``F.interpolate`` places them."""
    dst = torch.arange(n_out, dtype=torch.float64)
    if align_corners:
        src = dst * ((n_in - 1) / (n_out - 1) if n_out > 1 else 0.0)
    else:
        src = ((dst + 0.5) * (n_in / n_out) - 0.5).clamp_min(0.0)
    i0 = src.floor().long().clamp_max(n_in - 1)
    i1 = (i0 + 1).clamp_max(n_in - 1)
    frac = src - i0
    rows = torch.arange(n_out)
    m = torch.zeros(n_out, n_in, dtype=torch.float64)
    m.index_put_((rows, i0), 1.0 - frac, accumulate=True)
    m.index_put_((rows, i1), frac, accumulate=True)
    return m.to(dtype)


def _resize_separable(x: torch.Tensor, size: Sequence[int], align_corners: bool) -> torch.Tensor:
    """:func:`_resize` of a one-channel ``x`` as one matrix product per axis (same weights, float rounding aside)."""
    b, _, t, y, w = x.shape
    nt, ny, nw = (int(n) for n in size)
    mt, my, mw = (_interp_matrix(i, o, align_corners, x.dtype) for i, o in zip((t, y, w), (nt, ny, nw), strict=True))
    v = x.reshape(b * t * y, w) @ mw.t()
    v = my @ v.view(b * t, y, nw)
    v = mt @ v.view(b, t, ny * nw)
    return v.view(b, 1, nt, ny, nw)


def _up(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """UNet-Att decoder upsampling: trilinear, align_corners=True, to the skip's exact size.

    With the skip exactly twice as large this equals the reference's ``scale_factor=2``.
    """
    return _resize(x, like.shape[2:], align_corners=True)


# ----------------------------------------------------------------------------------------------
# padding to a valid size and cropping back
# ----------------------------------------------------------------------------------------------
def padded_size(n: int, arch: str) -> int:
    """Size an axis of length ``n`` is padded to before the network runs."""
    return max(math.ceil(n / SIZE_MULTIPLE) * SIZE_MULTIPLE, MIN_SIZE[arch])


def _pad_end(x: torch.Tensor, sizes: Sequence[int]) -> torch.Tensor:
    """Pad the last three axes of ``x`` at their far end up to ``sizes``.

    Reflect padding (no artificial flat region) needs the pad to be shorter than the axis;
    where it is not (tiny inputs), replicate. Padding only the far end keeps the max-pool
    grid anchored at voxel 0, so a voxel's result does not depend on the tile's length.
    """
    for axis, target in zip((2, 3, 4), sizes, strict=True):
        n = x.shape[axis]
        extra = target - n
        if extra <= 0:
            continue
        pad = [0] * 6
        pad[(4 - axis) * 2 + 1] = extra  # F.pad lists the last axis first
        x = F.pad(x, pad, mode="reflect" if extra < n else "replicate")
    return x


def _check_input(x: torch.Tensor) -> None:
    if x.ndim != 5 or x.shape[1] != 1:
        raise InputError(f"network input must have shape (B, 1, T, Y, X); got {tuple(x.shape)}")
    if min(x.shape[2:]) < 1:
        raise InputError(f"network input has an empty axis: {tuple(x.shape)}")


class _PaddedNet(nn.Module):
    """Pads the input to a size the network can take, runs :meth:`_forward_valid`, crops back."""

    arch: str = ""
    cpu_fast_path = True

    def set_cpu_fast_path(self, enabled: bool) -> _PaddedNet:
        """Switch the CPU fast paths (:func:`conv3d`, :func:`_cpu_train_path`) of every layer; returns self.

        Off, every layer is a plain module call: what forward hooks see and what a TorchScript
        trace can run on any device. Results are the same either way (to float rounding).
        """
        for m in self.modules():
            if hasattr(type(m), "cpu_fast_path"):
                m.cpu_fast_path = bool(enabled)
        return self

    def without_cpu_fast_path(self) -> _PaddedNet:
        """A copy of this network with the CPU fast path off (this one, possibly in use elsewhere, is untouched)."""
        return copy.deepcopy(self).set_cpu_fast_path(False)

    def _channels_last_weights(self) -> None:
        """Store conv weights channels-last (what oneDNN runs fastest; values and names unchanged)."""
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                m.weight.data = m.weight.data.contiguous(memory_format=torch.channels_last_3d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x)
        t, y, w = x.shape[2:]
        sizes = [padded_size(n, self.arch) for n in (t, y, w)]
        x = _pad_end(x, sizes)
        if x.device.type == "cpu":
            # oneDNN, pooling, trilinear resizing and the 1x1x1 matmuls are all fastest on
            # channels-last tensors (forward and backward); every layer keeps the layout, so
            # convert once. (CUDA keeps the default layout: cuDNN picks its own.)
            x = x.contiguous(memory_format=torch.channels_last_3d)
        out = self._forward_valid(x)
        if list(out.shape[2:]) != [t, y, w]:
            out = out[:, :, :t, :y, :w]
        return out.contiguous()

    def _forward_valid(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


def _make_encoders(base_channels: int) -> nn.ModuleList:
    f = base_channels
    return nn.ModuleList(
        [
            _Encoder(1, f, pool=False),
            _Encoder(f, 2 * f, pool=True),
            _Encoder(2 * f, 4 * f, pool=True),
            _Encoder(4 * f, 8 * f, pool=True),
        ]
    )


def _check_base_channels(base_channels: int) -> int:
    if isinstance(base_channels, bool) or not isinstance(base_channels, int | np.integer) or base_channels < 1:
        raise InputError(f"base_channels must be a positive integer; got {base_channels!r}")
    return int(base_channels)


# ----------------------------------------------------------------------------------------------
# the networks
# ----------------------------------------------------------------------------------------------
class UNetAtt(_PaddedNet):
    """UNet-Att: 3D UNet++ (nested decoder X01, X11, X21, X02, X12, X03) with six attention gates.

    Encoder X00 (1 -> f/2 -> f), X10 (f -> f -> 2f), X20 (2f -> 2f -> 4f), X30 (4f -> 4f -> 8f),
    MaxPool3d(2) between levels. Node X(i, j) = double conv over the concatenation of the gated
    skips ``A(X(i, 0..j-1))`` and the upsampled ``X(i+1, j-1)``. A shared 1x1x1 conv (f -> 1)
    reads X01, X02 and X03; the three outputs are averaged. No final activation.
    1,615,783 parameters at ``base_channels=16``.

    ``decoders`` are ordered X01, X11, X21, X02, X12, X03 and ``attentionblocks`` are the gates
    (X00|X10), (X10|X20), (X20|X30), (X01|X11), (X11|X21), (X02|X12), as in the reference.
    """

    arch = "unet_att"

    def __init__(self, base_channels: int = 16, cpu_fast_path: bool = True) -> None:
        super().__init__()
        f = self.base_channels = _check_base_channels(base_channels)
        self.encoders = _make_encoders(f)
        self.decoders = nn.ModuleList(
            [
                _Decoder(f + 2 * f, f),  # X01 = [A(X00), up X10]
                _Decoder(2 * f + 4 * f, 2 * f),  # X11 = [A(X10), up X20]
                _Decoder(4 * f + 8 * f, 4 * f),  # X21 = [A(X20), up X30]
                _Decoder(2 * f + 2 * f, f),  # X02 = [A(X00), A(X01), up X11]
                _Decoder(4 * f + 4 * f, 2 * f),  # X12 = [A(X10), A(X11), up X21]
                _Decoder(2 * f + 3 * f, f),  # X03 = [A(X00), A(X01), A(X02), up X12]
            ]
        )
        self.attentionblocks = nn.ModuleList([AttentionGate(c) for c in (f, 2 * f, 4 * f, f, 2 * f, f)])
        self.final_conv = nn.Conv3d(f, 1, kernel_size=1)
        self._channels_last_weights()
        self.set_cpu_fast_path(cpu_fast_path)

    def _forward_valid(self, x: torch.Tensor) -> torch.Tensor:
        # Locals are dropped as soon as the last node that reads them is built: under inference
        # the peak memory of a tile is what is alive at once (autograd keeps what it needs anyway).
        enc, dec, att = self.encoders, self.decoders, self.attentionblocks
        x00 = enc[0](x)
        x10 = enc[1](x00)
        x20 = enc[2](x10)
        x30 = enc[3](x20)
        # Each gated skip is computed once and reused by every later node of its level.
        a00 = att[0](x00, x10)
        del x00
        x01 = dec[0](_join(a00, x10))
        a10 = att[1](x10, x20)
        x11 = dec[1](_join(a10, x20))
        del x10
        a20 = att[2](x20, x30)
        x21 = dec[2](_join(a20, x30))
        del x20, x30, a20
        a01 = att[3](x01, x11)
        x02 = dec[3](_join(a00, a01, x11))
        # mean(conv(X0j)) == conv(mean(X0j)) for a linear 1x1x1 conv: one conv instead of three;
        # the running sum replaces x01 so that it need not stay alive.
        total = x01 + x02
        del x01
        a11 = att[4](x11, x21)
        x12 = dec[4](_join(a10, a11, x21))
        del x11, x21, a10, a11
        a02 = att[5](x02, x12)
        del x02
        x03 = dec[5](_join(a00, a01, a02, x12))
        del a00, a01, a02, x12
        total.add_(x03)  # in place is safe under autograd too: an addition saves no tensors
        del x03
        return conv3d(total.div_(3), self.final_conv, self.cpu_fast_path)


def _join(*parts: torch.Tensor) -> list[torch.Tensor]:
    """A UNet-Att node's inputs: the gated skips and the deeper node, upsampled to their size."""
    *skips, deeper = parts
    return [*skips, _up(deeper, skips[0])]


class UNet3D(_PaddedNet):
    """The plain 3D UNet of DeepCAD-RT / DeepBID (4 levels, nearest-neighbour upsampling).

    Encoders as in :class:`UNetAtt`; decoders (8f+4f -> 4f), (4f+2f -> 2f), (2f+f -> f), each over
    ``[skip, nearest-upsampled deeper output]``; final 1x1x1 conv f -> 1, no activation.
    1,020,337 parameters at ``base_channels=16``.
    """

    arch = "unet3d"

    def __init__(self, base_channels: int = 16, cpu_fast_path: bool = True) -> None:
        super().__init__()
        f = self.base_channels = _check_base_channels(base_channels)
        self.encoders = _make_encoders(f)
        self.decoders = nn.ModuleList([_Decoder(12 * f, 4 * f), _Decoder(6 * f, 2 * f), _Decoder(3 * f, f)])
        self.final_conv = nn.Conv3d(f, 1, kernel_size=1)
        self._channels_last_weights()
        self.set_cpu_fast_path(cpu_fast_path)

    def _forward_valid(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for encoder in self.encoders:
            x = encoder(x)
            skips.append(x)
        for decoder, skip in zip(self.decoders, reversed(skips[:-1]), strict=True):
            x = decoder([skip, F.interpolate(x, size=skip.shape[2:], mode="nearest")])
        return conv3d(x, self.final_conv, self.cpu_fast_path)



class _StandardizedPerInput:
    """Mixin: the network between a standardisation by each input's own statistics and its inverse.

    napari-unet-att runs models that normalise every recording by its own mean and standard
    deviation (the pretrained generalists) as ``net((x - mean) / sd) * sd + mean``. bioimage.io's
    processing steps can standardise per input but cannot map the output back with the *input's*
    statistics (``scale_mean_variance`` would force the output's own std to the noisy input's),
    so the packages of such models run these classes instead of the plain networks: same state
    dict, same numbers as napari-unet-att on one tile. Statistics per batch item over
    (C, T, Y, X) in float64, population std, scale 1 for a constant input (as
    ``inference.norms.choose_norm``).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = tuple(range(1, x.dim()))
        x64 = x.double()
        mean = x64.mean(dim=dims, keepdim=True)
        sd = x64.std(dim=dims, keepdim=True, correction=0)
        sd = torch.where(sd > 0, sd, torch.ones_like(sd))
        mean, sd = mean.to(x.dtype), sd.to(x.dtype)
        return super().forward((x - mean) / sd) * sd + mean  # type: ignore[misc]


class UNetAttPerInput(_StandardizedPerInput, UNetAtt):
    """:class:`UNetAtt` that standardises each input by its own mean and std and maps the output back."""


class UNet3DPerInput(_StandardizedPerInput, UNet3D):
    """:class:`UNet3D` that standardises each input by its own mean and std and maps the output back."""


_BUILDERS: dict[str, Callable[..., _PaddedNet]] = {"unet_att": UNetAtt, "unet3d": UNet3D}


def build_network(arch: str, base_channels: int, cpu_fast_path: bool = True) -> _PaddedNet:
    """Build an untrained network.

    Parameters
    ----------
    arch : {'unet_att', 'unet3d'}
        Network family.
    base_channels : int
        First-level channel count ``f`` (levels have f, 2f, 4f, 8f).
    cpu_fast_path : bool
        Call oneDNN directly on CPU inference (see :meth:`_PaddedNet.set_cpu_fast_path`).

    Raises
    ------
    InputError
        For an unknown ``arch`` or a non-positive ``base_channels``.
    """
    try:
        builder = _BUILDERS[arch]
    except (KeyError, TypeError):
        raise InputError(f"unknown network architecture {arch!r}; expected one of: {', '.join(ARCHS)}") from None
    return builder(check_width(arch, base_channels), cpu_fast_path=cpu_fast_path)


MAX_BASE_CHANNELS = 512  # the presets use 8 and 16; the reference tools 16 to 64
_PARAMS_PER_F2 = 6400  # parameters / f**2, an upper bound (UNet-Att: 404,407 at f=8, 1,615,783 at f=16)


def check_width(arch: str, base_channels: Any) -> int:
    """``base_channels`` as an int, refused before allocating when it is absurd or would not fit in memory.

    A 2 KB file can declare any width: the parameter memory (~ 6400 f^2 float32) is estimated
    and compared with the limit and the available memory first.

    Raises
    ------
    InputError
        Not a positive integer.
    ResourceError
        Above ``MAX_BASE_CHANNELS`` or more weight memory than is available.
    """
    try:
        from ..errors import ResourceError
        from ..runtime.resources import check_memory
    except ImportError:  # standalone file (bioimage.io package): the width limit alone
        ResourceError, check_memory = InputError, None  # noqa: N806
    try:
        f = operator.index(base_channels)
    except TypeError:
        raise InputError(f"base_channels must be an integer, got {base_channels!r}") from None
    if f < 1 or isinstance(base_channels, bool):
        raise InputError(f"base_channels must be >= 1, got {base_channels!r}")
    need = 4 * _PARAMS_PER_F2 * f * f
    if f > MAX_BASE_CHANNELS:
        raise ResourceError(f"a {arch} network with base_channels={f} would need about {need / 1e9:.1f} GB for its "
                            f"weights alone; widths above {MAX_BASE_CHANNELS} are refused (the presets use 8 and 16)")
    if check_memory is not None:
        check_memory(need, f"a {arch} network with base_channels={f}", "cpu", hint="use a smaller base_channels")
    return f


def count_parameters(net: nn.Module) -> int:
    """Number of learnable parameters (BatchNorm affine weights included, running stats not)."""
    return sum(p.numel() for p in net.parameters())
