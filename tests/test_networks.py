"""Tests for napari_unet_att.model.networks: sizes, shapes, gradients, reference import, receptive field."""

from __future__ import annotations

import pytest
import torch

from napari_unet_att.errors import CheckpointError, InputError
from napari_unet_att.model import networks, receptive_field
from napari_unet_att.model.networks import (
    ARCHS,
    UNet3D,
    UNetAtt,
    build_network,
    count_parameters,
    padded_size,
)
from napari_unet_att.model.reference import convert_reference_state_dict, reference_source


def _net(arch: str, f: int = 2, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_network(arch, f)


# ------------------------------------------------------------------ sizes
@pytest.mark.parametrize(("arch", "expected"), [("unet_att", 1_615_783), ("unet3d", 1_020_337)])
def test_parameter_counts_match_the_papers(arch: str, expected: int) -> None:
    net = build_network(arch, 16)
    assert count_parameters(net) == expected
    assert count_parameters(net) == sum(p.numel() for p in net.parameters())


def test_build_network_types_and_errors() -> None:
    assert isinstance(build_network("unet_att", 4), UNetAtt)
    assert isinstance(build_network("unet3d", 4), UNet3D)
    with pytest.raises(InputError, match="unknown network architecture 'unet'"):
        build_network("unet", 16)
    with pytest.raises(InputError, match="base_channels"):
        build_network("unet3d", 0)


def test_reference_layer_names_and_shapes() -> None:
    sd = build_network("unet_att", 16).state_dict()
    assert sd["encoders.0.basic_module.SingleConv1.conv.weight"].shape == (8, 1, 3, 3, 3)
    assert sd["attentionblocks.2.conv_x.weight"].shape == (128, 64, 3, 3, 3)
    assert sd["attentionblocks.0.W.1.running_var"].shape == (16,)
    assert sd["decoders.5.basic_module.SingleConv1.conv.weight"].shape == (16, 80, 3, 3, 3)
    assert sd["final_conv.weight"].shape == (1, 16, 1, 1, 1)
    sd3 = build_network("unet3d", 16).state_dict()
    assert sd3["decoders.0.basic_module.SingleConv1.conv.weight"].shape == (64, 192, 3, 3, 3)
    assert not any(k.startswith("attentionblocks") for k in sd3)


# ------------------------------------------------------------------ shapes
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("shape", [(1, 5, 7), (3, 17, 9), (9, 1, 2), (20, 13, 24)])
def test_output_has_the_input_shape(arch: str, shape: tuple[int, int, int]) -> None:
    net = _net(arch).eval()
    x = torch.rand(2, 1, *shape)
    with torch.inference_mode():
        y = net(x)
    assert y.shape == x.shape
    assert y.dtype == torch.float32
    assert torch.isfinite(y).all()


def test_padded_size() -> None:
    assert padded_size(1, "unet_att") == 16
    assert padded_size(1, "unet3d") == 8
    assert padded_size(17, "unet3d") == 24
    assert padded_size(64, "unet_att") == 64


def test_bad_input_rank_or_channels() -> None:
    net = _net("unet3d")
    with pytest.raises(InputError, match=r"\(B, 1, T, Y, X\)"):
        net(torch.zeros(1, 8, 8, 8))
    with pytest.raises(InputError, match=r"\(B, 1, T, Y, X\)"):
        net(torch.zeros(1, 2, 8, 8, 8))


# ------------------------------------------------------------------ training behaviour
@pytest.mark.parametrize("arch", ARCHS)
def test_gradients_reach_every_parameter(arch: str) -> None:
    net = _net(arch, 2).train()
    x = torch.rand(2, 1, 8, 16, 12, requires_grad=True)
    loss = (net(x) - x.detach()).square().mean()
    loss.backward()
    for name, p in net.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
    assert x.grad is not None and x.grad.abs().sum() > 0
    nonzero = sum(int(p.grad.abs().sum() > 0) for p in net.parameters())
    assert nonzero >= 0.9 * len(list(net.parameters()))


@pytest.mark.parametrize("arch", ARCHS)
def test_eval_is_deterministic_and_batch_independent(arch: str) -> None:
    net = _net(arch, 2).eval()
    x = torch.rand(2, 1, 5, 9, 10)
    with torch.inference_mode():
        a, b = net(x), net(x)
        single = net(x[1:])
    assert torch.equal(a, b)
    torch.testing.assert_close(a[1:], single, rtol=1e-5, atol=1e-6)


def _forward_backward(net: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Output and all parameter gradients of ``mean(net(x) ** 2)``."""
    y = net(x)
    y.square().mean().backward()
    return y.detach(), torch.cat([p.grad.flatten() for p in net.parameters()])


def _assert_runs_agree(a: tuple, b: tuple) -> None:
    torch.testing.assert_close(a[0], b[0], rtol=2e-3, atol=5e-5)
    torch.testing.assert_close(a[1], b[1], rtol=1e-2, atol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_cpu_fast_path_matches_plain_modules(arch: str) -> None:
    # eval: train-mode BatchNorm on one tiny sample amplifies float rounding differences
    net = _net(arch, 2).eval()
    x = torch.rand(1, 1, 8, 16, 16)
    runs = []
    for enabled in (True, False):
        net.zero_grad()
        with torch.backends.mkldnn.flags(enabled=enabled):
            runs.append(_forward_backward(net, x))
    _assert_runs_agree(*runs)


@pytest.mark.parametrize("arch", ARCHS)
def test_inference_fast_path_matches_plain_modules(arch: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Trained-looking BatchNorm statistics, so folding them into the gates' 1x1x1 convs is tested.
    net = _net(arch, 4).eval()
    gen = torch.Generator().manual_seed(1)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm3d):
            for t, lo, hi in ((m.running_mean, -0.5, 0.5), (m.running_var, 0.3, 3.0), (m.weight, 0.5, 1.5),
                              (m.bias, -0.3, 0.3)):
                t.data.copy_(torch.rand(t.shape, generator=gen) * (hi - lo) + lo)
    x = torch.rand(1, 1, 16, 24, 20, generator=gen)
    outs = []
    for fast in (True, False):
        net.set_cpu_fast_path(fast)
        with torch.inference_mode():
            outs.append(net(x))
    assert outs[0].abs().max() > 0
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("arch", ARCHS)
def test_cpu_training_path_matches_plain_modules(arch: str) -> None:
    # float32 CPU training (pointwise convs and the gates' one-channel resize as matrix products,
    # the gates' BatchNorm on contiguous tensors) against every layer as a plain module call. The
    # plain path's own float32 error (channels-last BatchNorm, ~3e-4 relative on 2 threads) sets the
    # tolerance; a wrong resize or conv would be off by ~1e-1.
    x = torch.rand(2, 1, 8, 16, 16, generator=torch.Generator().manual_seed(3))
    _assert_runs_agree(*(_forward_backward(_net(arch, 2).train().set_cpu_fast_path(fast), x) for fast in (True, False)))


def test_gate_training_path_matches_plain_modules() -> None:
    # One gate with a gating signal strong enough that alpha varies from voxel to voxel, so a resize
    # placed differently (e.g. align_corners) or a wrong pointwise conv shows.
    from napari_unet_att.model.networks import AttentionGate

    gen = torch.Generator().manual_seed(4)
    x, g = torch.randn(2, 4, 10, 14, 12, generator=gen), 3.0 * torch.randn(2, 8, 5, 7, 6, generator=gen)
    outs = []
    for fast in (True, False):
        torch.manual_seed(0)
        gate = AttentionGate(4).train()
        gate.cpu_fast_path = fast
        outs.append(gate(x.contiguous(memory_format=torch.channels_last_3d), g))
    assert outs[0].std() > 0.1
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize(("src", "dst"), [((7, 15, 15), (16, 32, 32)), ((4, 8, 8), (4, 8, 8)), ((1, 3, 2), (5, 4, 7))])
@pytest.mark.parametrize("align_corners", [False, True])
def test_separable_resize_matches_interpolate(src: tuple, dst: tuple, align_corners: bool) -> None:
    a = torch.rand(2, 1, *src, dtype=torch.float64, requires_grad=True)
    g = torch.rand(2, 1, *dst, dtype=torch.float64)
    ref = networks._resize(a, dst, align_corners)
    (ref_grad,) = torch.autograd.grad(ref, a, g)
    out = networks._resize_separable(a, dst, align_corners)
    (grad,) = torch.autograd.grad(out, a, g)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-12, atol=1e-12)


class _PlainGrad(torch.autograd.Function):
    """What autograd would do without networks._ChannelsLastGrad: pass the gradient on as is."""

    @staticmethod
    def forward(ctx, x):  # noqa: ANN001, ANN205
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):  # noqa: ANN001, ANN205
        return grad


@pytest.mark.parametrize("arch", ARCHS)
def test_channels_last_gradients_change_only_the_layout(arch: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # The training path re-lays the gradients that leave each decoder's concatenation
    # (a speed fix); the gradients themselves must be those of the plain graph.
    x = torch.rand(2, 1, 8, 16, 16)
    grads = []
    relay = networks._ChannelsLastGrad
    for cls in (relay, _PlainGrad):
        monkeypatch.setattr(networks, "_ChannelsLastGrad", cls)
        net = _net(arch, 2).train()
        net(x).square().mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in net.parameters()]))
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-7)
    t = torch.rand(1, 2, 3, 5, 6, requires_grad=True) * 1
    seen: list[torch.Tensor] = []
    t.register_hook(seen.append)  # sees the gradient as handed on (a leaf's .grad would be re-laid)
    g = torch.rand(1, 4, 3, 5, 6)[:, 1:3]  # a channel slice, as cat's backward yields: neither layout
    (y := relay.apply(t)).backward(g)
    assert torch.equal(y, t) and torch.equal(seen[0], g)
    assert seen[0].is_contiguous(memory_format=torch.channels_last_3d)


def test_unet_att_output_is_mean_of_three_heads() -> None:
    # The shared head on the mean of X01, X02, X03 equals the mean of the three heads (linear 1x1x1).
    net = _net("unet_att", 2).eval()
    feats = [torch.rand(1, 2, 4, 4, 4) for _ in range(3)]
    with torch.inference_mode():
        fused = networks.conv3d(sum(feats) / 3, net.final_conv)
        separate = sum(net.final_conv(f) for f in feats) / 3
    torch.testing.assert_close(fused, separate, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ reference checkpoints
@pytest.mark.parametrize(
    ("arch", "prefix", "source"),
    [
        ("unet_att", "Generator.", "UNet-Att"),
        ("unet3d", "Generator.", "DeepCAD-RT"),
        ("unet3d", "", "DeepBID"),
        ("unet_att", "module.Generator.", "UNet-Att"),
    ],
)
def test_convert_reference_round_trip(arch: str, prefix: str, source: str) -> None:
    src = _net(arch, 4, seed=1).eval()
    with torch.no_grad():  # non-default BatchNorm statistics must survive the trip too
        for m in src.modules():
            if isinstance(m, torch.nn.BatchNorm3d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 2.0)
    state = {prefix + k: v.clone() for k, v in src.state_dict().items()}
    assert reference_source(state) == source
    got_arch, f, converted = convert_reference_state_dict(state)
    assert (got_arch, f) == (arch, 4)
    dst = build_network(got_arch, f).eval()
    dst.load_state_dict(converted, strict=True)
    x = torch.rand(1, 1, 8, 16, 16)
    with torch.inference_mode():
        torch.testing.assert_close(dst(x), src(x), rtol=0, atol=0)


def test_convert_accepts_wrapped_and_old_batchnorm_dicts() -> None:
    sd = _net("unet_att", 2).state_dict()
    old = {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    arch, f, out = convert_reference_state_dict({"params": {"Generator." + k: v for k, v in old.items()}})
    assert (arch, f) == ("unet_att", 2)
    assert set(out) == set(sd)


def test_convert_errors_name_the_problem() -> None:
    sd = {"Generator." + k: v for k, v in _net("unet_att", 4).state_dict().items()}
    missing = dict(sd)
    del missing["Generator.attentionblocks.3.conv_x.weight"]
    with pytest.raises(CheckpointError, match=r"missing 1 key\(s\): attentionblocks\.3\.conv_x\.weight"):
        convert_reference_state_dict(missing)
    extra = dict(sd, **{"Generator.decoders.9.basic_module.SingleConv1.conv.weight": torch.zeros(1)})
    with pytest.raises(CheckpointError, match=r"unexpected 1 key\(s\): decoders\.9"):
        convert_reference_state_dict(extra)
    bad = dict(sd, **{"Generator.final_conv.weight": torch.zeros(2, 4, 1, 1, 1)})
    with pytest.raises(CheckpointError, match=r"wrong shape for final_conv\.weight \(2, 4, 1, 1, 1\)"):
        convert_reference_state_dict(bad)
    with pytest.raises(CheckpointError, match="no first-level conv"):
        convert_reference_state_dict({"conv1.weight": torch.zeros(3, 3)})
    with pytest.raises(CheckpointError, match="non-empty state dict"):
        convert_reference_state_dict({})
    with pytest.raises(CheckpointError, match="non-empty state dict"):
        convert_reference_state_dict([1, 2])  # type: ignore[arg-type]
    two_channel = dict(sd, **{"Generator.encoders.0.basic_module.SingleConv1.conv.weight": torch.zeros(2, 2, 3, 3, 3)})
    with pytest.raises(CheckpointError, match="single-channel"):
        convert_reference_state_dict(two_channel)
    not_tensor = dict(sd, **{"Generator.final_conv.bias": [0.0]})
    with pytest.raises(CheckpointError, match="not a tensor"):
        convert_reference_state_dict(not_tensor)


# ------------------------------------------------------------------ receptive field
def test_receptive_field_values() -> None:
    assert receptive_field("unet3d") == 103
    assert receptive_field("unet_att") == 145
    with pytest.raises(InputError):
        receptive_field("resnet")


@pytest.mark.parametrize("arch", ARCHS)
def test_impulse_response_fits_in_receptive_field(arch: str) -> None:
    # A long T axis (longer than the field) so the response could exceed the bound if it were wrong.
    torch.manual_seed(0)
    net = build_network(arch, 2).eval()
    with torch.no_grad():  # positive conv weights keep ReLUs alive, so the response is not cut short
        for m in net.modules():
            if isinstance(m, torch.nn.Conv3d):
                m.weight.abs_()
    n = 160
    base = torch.zeros(1, 1, n, 16, 16)
    rf = receptive_field(arch)
    widths = []
    with torch.inference_mode():
        y0 = net(base)
        for p in (77, 82):  # two pooling phases
            x = base.clone()
            x[0, 0, p, 8, 8] = 1.0
            support = torch.nonzero((net(x) - y0).abs().amax(dim=(0, 1, 3, 4)) > 0).flatten()
            widths.append(int(support.max() - support.min() + 1))
    assert max(widths) <= rf
    assert min(widths) >= rf // 2  # the bound is not vacuous
