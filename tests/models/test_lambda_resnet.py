"""LambdaResNets: sizes against the paper, the lambda bottleneck against its equations."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from beyond_attention.layers.lambda_layer import LambdaLayer
from beyond_attention.models._registry import create_model, get_model_config
from beyond_attention.models.lambda_resnet import LambdaMixer, lambda_resnet
from beyond_attention.models.resnet import Bottleneck, ResNet

TINY = dict(widths=(8, 8, 16, 16), stem_width=8, stem_type="cifar")


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def randomize_bn(model: nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)


def lambda_layer_params(w: int, k: int = 16, h: int = 4, u: int = 1, r: int = 23) -> int:
    """Parameters of a lambda layer replacing a w -> w 3x3 conv (LambdaNetworks,
    arXiv:2102.08602, Sec. 3 / Fig. 3), counted by hand: W_q (w x kh), W_k (w x ku),
    W_v (w x vu, v = w/h), BN on q and v, the r x r kernel per
    (k, u) of the lambda convolution (no bias)."""
    v = w // h
    return w * k * h + w * k * u + w * v * u + 2 * k * h + 2 * v * u + k * u * r * r


def test_lambda_resnet50_params_match_paper() -> None:
    with torch.device("meta"):
        model = create_model("lambda_resnet50")
    count = n_params(model)
    assert abs(count - 14.996e6) / 14.996e6 < 0.01
    assert get_model_config("lambda_resnet50").reported_params_m == pytest.approx(15.0)
    lambdas = [m for m in model.modules() if isinstance(m, LambdaLayer)]
    assert len(lambdas) == 16 and not any(
        isinstance(b.conv2, nn.Conv2d) for s in model.stages for b in s
    )
    assert {(m.dim_k, m.heads, m.dim_u, m.r) for m in lambdas} == {(16, 4, 1, 23)}
    # Strided 3x3 convs became lambda layers followed by the 3x3 stride-2 average pool.
    assert [m.stride for m in lambdas if m.stride == 2] == [2, 2, 2]
    assert all(s[0].conv2.stride == 2 for s in model.stages[1:])


@pytest.mark.parametrize(
    "name,stages",
    [
        ("lambda_resnet50", (1, 2, 3, 4)),
        ("lambda_resnet50_c4", (3,)),
        ("lambda_resnet50_c4c5", (3, 4)),
    ],
)
def test_lambda_resnet50_counts_equal_conv_swap(name: str, stages: tuple[int, ...]) -> None:
    """Every variant = ResNet-50 minus the replaced 3x3 convs plus the lambda layers."""
    with torch.device("meta"):
        model = create_model(name)
        base = create_model("resnet50")
    expected = n_params(base)
    for stage, (blocks, w) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512), strict=True), 1):
        if stage in stages:
            expected += blocks * (lambda_layer_params(w) - 9 * w * w)
    assert n_params(model) == expected
    kinds = [
        [isinstance(b.conv2, LambdaLayer) for b in stage] for stage in model.stages
    ]
    assert [all(k) for k in kinds] == [i in stages for i in (1, 2, 3, 4)]
    assert [any(k) for k in kinds] == [i in stages for i in (1, 2, 3, 4)]


def test_lambda_resnet50_macs() -> None:
    """6.47 GMACs with the lambda convolution counted directly; the paper's 6.58 also counts
    the kernel taps that fall outside c5's 7x7 maps (r = 23 > 2 * 7 - 1), which the layer
    crops. Within 2% either way."""
    with torch.device("meta"):
        model = create_model("lambda_resnet50", position_impl="conv").eval()
        x = torch.empty(1, 3, 224, 224)
    with FlopCounterMode(display=False) as counter:
        model(x)
    gmacs = counter.get_total_flops() / 2 / 1e9
    assert abs(gmacs - 6.58) / 6.58 < 0.02


def test_block_counts() -> None:
    with torch.device("meta"):
        assert [len(s) for s in create_model("lambda_resnet26").stages] == [2, 2, 2, 2]
        assert [len(s) for s in create_model("lambda_resnet38").stages] == [2, 3, 5, 2]


def _bn(t: torch.Tensor, m: nn.BatchNorm2d, training: bool) -> torch.Tensor:
    if training:
        mean = t.mean(dim=(0, 2, 3), keepdim=True)
        var = t.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
    else:
        mean, var = m.running_mean.view(1, -1, 1, 1), m.running_var.view(1, -1, 1, 1)
    scale, shift = m.weight.view(1, -1, 1, 1), m.bias.view(1, -1, 1, 1)
    return (t - mean) / torch.sqrt(var + m.eps) * scale + shift


def _conv1x1(t: torch.Tensor, w: torch.Tensor, s: int = 1) -> torch.Tensor:
    return torch.einsum("oc,bchw->bohw", w[:, :, 0, 0], t[:, :, ::s, ::s])


def _lambda_reference(
    x: torch.Tensor, layer: LambdaLayer, training: bool
) -> torch.Tensor:
    """LambdaNetworks (Bello, ICLR 2021, arXiv:2102.08602), Sec. 3 / Fig. 3 written out:
    multi-query lambda layer, local relative positions by explicit offsets, float64, then
    the 3x3 stride-2 average pool when strided."""
    b, _, hh, ww = x.shape
    h, k, u, v, r = layer.heads, layer.dim_k, layer.dim_u, layer.dim_v, layer.r
    q = _bn(_conv1x1(x, layer.to_q.weight), layer.norm_q, training).reshape(b, h, k, hh, ww)
    keys = _conv1x1(x, layer.to_k.weight).reshape(b, u, k, hh * ww).softmax(dim=-1)
    vals = _bn(_conv1x1(x, layer.to_v.weight), layer.norm_v, training).reshape(b, u, v, hh, ww)
    lam_c = torch.einsum("bukm,buvm->bkv", keys, vals.reshape(b, u, v, hh * ww))
    kernel = layer.pos_conv.weight[:, :, 0]  # (k, u, r, r): R[offset + r // 2]
    c = r // 2
    padded = F.pad(vals, (c, c, c, c))
    lam_p = torch.zeros(b, k, v, hh, ww, dtype=x.dtype)
    for di in range(r):
        for dj in range(r):
            shifted = padded[..., di : di + hh, dj : dj + ww]  # V at n + (di - c, dj - c)
            lam_p += torch.einsum("ku,buvxy->bkvxy", kernel[:, :, di, dj], shifted)
    y = torch.einsum("bhkxy,bkv->bhvxy", q, lam_c) + torch.einsum("bhkxy,bkvxy->bhvxy", q, lam_p)
    y = y.reshape(b, h * v, hh, ww)
    return F.avg_pool2d(y, 3, 2, 1) if layer.stride == 2 else y


@pytest.mark.parametrize(
    "stride,dim_u,training", [(2, 1, True), (1, 2, False), (2, 2, False), (1, 1, True)]
)
def test_lambda_bottleneck_equals_reference(stride: int, dim_u: int, training: bool) -> None:
    torch.manual_seed(0)
    cin, width = 16, 8
    down = nn.Sequential(nn.Conv2d(cin, 4 * width, 1, stride=stride, bias=False),
                         nn.BatchNorm2d(4 * width))
    mixer = LambdaMixer(dim_k=4, heads=2, dim_u=dim_u, r=5)
    block = Bottleneck(cin, width, stride=stride, downsample=down, mixer=mixer).double()
    randomize_bn(block)
    block.train(training)
    x = torch.randn(2, cin, 7, 6, dtype=torch.float64)
    with torch.no_grad():
        out = block(x)

    hid = torch.relu(_bn(_conv1x1(x, block.conv1.weight), block.bn1, training))
    hid = torch.relu(_bn(_lambda_reference(hid, block.conv2, training), block.bn2, training))
    hid = _bn(_conv1x1(hid, block.conv3.weight), block.bn3, training)
    reference = torch.relu(hid + _bn(_conv1x1(x, down[0].weight, stride), down[1], training))
    torch.testing.assert_close(out, reference, rtol=1e-6, atol=1e-6)


def test_cifar_variant_forward_backward() -> None:
    torch.manual_seed(0)
    model = create_model("lambda_resnet26_cifar", drop_path_rate=0.1, zero_init_last=False)
    cfg = model.config
    assert cfg.input_size == (3, 32, 32) and cfg.num_classes == 10 and not cfg.fixed_input_size
    assert {m.r for m in model.modules() if isinstance(m, LambdaLayer)} == {7}
    x = torch.randn(4, 3, 32, 32)
    out = model(x)
    assert out.shape == (4, 10) and torch.isfinite(out).all()
    F.cross_entropy(out, torch.tensor([0, 1, 2, 3])).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    # The convolutional twin has the same stages, widths and stem.
    twin = create_model("resnet26_cifar")
    assert [len(s) for s in twin.stages] == [len(s) for s in model.stages]
    assert twin.num_features == model.num_features == 512
    # Any input size works with local positions.
    assert model(torch.randn(2, 3, 24, 40)).shape == (2, 10)


def test_fresh_model_is_finite_in_eval_mode() -> None:
    """The default zero-initialised last BN keeps the quadratic lambda blocks from
    overflowing before the BN statistics are calibrated."""
    torch.manual_seed(0)
    model = create_model("lambda_resnet26_cifar").eval()
    with torch.no_grad():
        assert torch.isfinite(model(torch.randn(2, 3, 32, 32))).all()


def test_global_positions_make_the_model_fixed_size() -> None:
    model = lambda_resnet((1, 1, 1, 1), num_classes=3, img_size=(16, 12), r=None, dim_k=4,
                          **TINY)
    assert model.fixed_input_size
    sizes = [b.conv2.feat_size for s in model.stages for b in s]
    assert sizes == [(16, 12), (16, 12), (8, 6), (4, 3)]  # pre-pool sizes of strided layers
    assert model(torch.randn(2, 3, 16, 12)).shape == (2, 3)

    calls = []
    model.conv1.register_forward_pre_hook(lambda *_: calls.append(1))
    with pytest.raises(ValueError, match=r"\(16, 12\)"):
        model(torch.randn(2, 3, 16, 16))
    with pytest.raises(ValueError, match=r"\(16, 12\)"):
        model.forward_intermediates(torch.randn(2, 3, 12, 16))
    assert calls == []  # rejected before any computation


def test_registered_global_variant_is_fixed_size() -> None:
    assert get_model_config("lambda_resnet26_cifar_global").fixed_input_size
    assert not get_model_config("lambda_resnet26_cifar").fixed_input_size
    with torch.device("meta"):
        model = create_model("lambda_resnet26_cifar_global")
        other = create_model("lambda_resnet26_cifar_global", img_size=48)
    layers = [m for m in model.modules() if isinstance(m, LambdaLayer)]
    assert all(m.r is None and m.rel_pos_emb is not None for m in layers)
    assert layers[0].rel_pos_emb.shape == (63, 63, 16, 1)
    assert model.fixed_input_size and other.img_size == (48, 48)
    with pytest.raises(ValueError, match=r"\(32, 32\)"):
        model(torch.empty(1, 3, 48, 48, device="meta"))


def test_grad_checkpointing_leaves_output_and_grads_unchanged() -> None:
    torch.manual_seed(0)
    model = lambda_resnet((1, 1, 1, 1), num_classes=3, img_size=16, r=5, dim_k=4,
                          drop_path_rate=0.2, **TINY)
    x = torch.randn(2, 3, 16, 16)
    state = {k: v.clone() for k, v in model.state_dict().items()}

    def run() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        model.load_state_dict(state)
        model.zero_grad()
        torch.manual_seed(1)
        out = model(x)
        out.square().sum().backward()
        return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    out_ref, grads_ref = run()
    model.set_grad_checkpointing(True)
    out_ckpt, grads_ckpt = run()
    torch.testing.assert_close(out_ckpt, out_ref, rtol=1e-5, atol=1e-6)
    for name in grads_ref:
        torch.testing.assert_close(grads_ckpt[name], grads_ref[name], rtol=1e-4, atol=1e-6)


def test_state_dict_round_trip() -> None:
    torch.manual_seed(0)
    model = create_model("lambda_resnet26_cifar")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():  # calibrate the BN statistics (part of the state to round-trip)
        model(torch.randn(8, 3, 32, 32))
    model.eval()
    torch.manual_seed(1)
    clone = create_model("lambda_resnet26_cifar").eval()
    clone.load_state_dict(model.state_dict())
    torch.testing.assert_close(clone(x), model(x), rtol=0, atol=0)


def test_mixer_keeps_lambda_initialisation() -> None:
    """The ResNet's Kaiming init must not overwrite the lambda layer's own init."""
    torch.manual_seed(0)
    model = lambda_resnet((1, 1, 1, 1), num_classes=3, **TINY)
    layer = model.layer2[0].conv2
    assert isinstance(layer, LambdaLayer)
    std = layer.to_q.weight.std().item()
    assert std == pytest.approx(layer.dim**-0.5, rel=0.3)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="dilation"):
        lambda_resnet((1, 1, 1, 1), output_stride=8, widths=(8, 8, 16, 16), stem_width=8)
    with pytest.raises(ValueError, match="lambda_stages"):
        lambda_resnet((1, 1, 1, 1), lambda_stages=(5,), **TINY)
    with pytest.raises(ValueError, match="heads"):
        lambda_resnet((1, 1, 1, 1), heads=3, **TINY)


def test_hybrid_keeps_convs_outside_lambda_stages() -> None:
    model = lambda_resnet((1, 1, 1, 1), lambda_stages=(3,), num_classes=3, **TINY)
    assert isinstance(model.layer3[0].conv2, LambdaLayer)
    assert all(isinstance(s[0].conv2, nn.Conv2d) for s in (model.layer1, model.layer2,
                                                             model.layer4))
    assert isinstance(model, ResNet)
