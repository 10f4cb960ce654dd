"""ResNet baseline: sizes against the paper, the block against its equation, the contract."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from beyond_attention.layers.drop_path import DropPath
from beyond_attention.models._registry import create_model, get_model_config
from beyond_attention.models.resnet import Bottleneck, ResNet, conv3x3_mixer

TINY = dict(widths=(4, 8, 8, 16), stem_width=8)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def randomize_bn(model: nn.Module, seed: int = 0) -> None:
    """Non-trivial BN affine parameters and running statistics."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)


def test_resnet50_params_match_paper() -> None:
    with torch.device("meta"):
        model = create_model("resnet50")
    count = n_params(model)
    assert abs(count / 1e6 - 25.557) / 25.557 < 0.01
    # torchvision's ResNet-50 v1.5 has exactly this many parameters and these names.
    assert count == 25_557_032
    names = dict(model.named_parameters())
    assert names["layer2.0.conv2.weight"].shape == (128, 128, 3, 3)  # stride on the 3x3
    assert model.layer2[0].conv2.stride == (2, 2) and model.layer2[0].conv1.stride == (1, 1)
    assert names["layer4.0.downsample.0.weight"].shape == (2048, 1024, 1, 1)
    assert names["fc.weight"].shape == (1000, 2048)
    assert get_model_config("resnet50").reported_params_m == pytest.approx(25.557)


def test_resnet50_state_dict_keys_follow_torchvision() -> None:
    """torchvision's ResNet-50 key layout, written out, so its checkpoints load as they are."""
    with torch.device("meta"):
        model = create_model("resnet50")
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    expected = {"conv1.weight", "fc.weight", "fc.bias"} | {f"bn1.{k}" for k in bn}
    for i, n in enumerate((3, 4, 6, 3), 1):
        for j in range(n):
            pre = f"layer{i}.{j}"
            for c in (1, 2, 3):
                expected |= {f"{pre}.conv{c}.weight"} | {f"{pre}.bn{c}.{k}" for k in bn}
            if j == 0:
                expected |= {f"{pre}.downsample.0.weight"}
                expected |= {f"{pre}.downsample.1.{k}" for k in bn}
    assert set(model.state_dict()) == expected


def test_resnet50_macs_match_paper() -> None:
    with torch.device("meta"):
        model = create_model("resnet50").eval()
        x = torch.empty(1, 3, 224, 224)
    with FlopCounterMode(display=False) as counter:
        model(x)
    gmacs = counter.get_total_flops() / 2 / 1e9
    assert abs(gmacs - 4.09) / 4.09 < 0.02


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("stride", [1, 2])
def test_bottleneck_equals_reference(stride: int, training: bool) -> None:
    torch.manual_seed(0)
    cin, width = 12, 6
    down = nn.Sequential(nn.Conv2d(cin, 4 * width, 1, stride=stride, bias=False),
                         nn.BatchNorm2d(4 * width))
    block = Bottleneck(cin, width, stride=stride, downsample=down).double()
    randomize_bn(block)
    block.train(training)
    x = torch.randn(2, cin, 9, 7, dtype=torch.float64)

    def bn(t: torch.Tensor, m: nn.BatchNorm2d) -> torch.Tensor:
        if training:
            mean = t.mean(dim=(0, 2, 3), keepdim=True)
            var = t.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
        else:
            mean = m.running_mean.view(1, -1, 1, 1)
            var = m.running_var.view(1, -1, 1, 1)
        return (t - mean) / torch.sqrt(var + m.eps) * m.weight.view(1, -1, 1, 1) + m.bias.view(
            1, -1, 1, 1
        )

    def conv1x1(t: torch.Tensor, w: torch.Tensor, s: int = 1) -> torch.Tensor:
        return torch.einsum("oc,bchw->bohw", w[:, :, 0, 0], t[:, :, ::s, ::s])

    def conv3x3(t: torch.Tensor, w: torch.Tensor, s: int) -> torch.Tensor:
        tp = F.pad(t, (1, 1, 1, 1))
        h, wd = t.shape[-2:]
        out = sum(
            torch.einsum("oc,bchw->bohw", w[:, :, i, j], tp[:, :, i : i + h, j : j + wd])
            for i in range(3)
            for j in range(3)
        )
        return out[:, :, ::s, ::s]

    with torch.no_grad():
        expected_out = block(x)
    h = torch.relu(bn(conv1x1(x, block.conv1.weight), block.bn1))
    h = torch.relu(bn(conv3x3(h, block.conv2.weight, stride), block.bn2))
    h = bn(conv1x1(h, block.conv3.weight), block.bn3)
    shortcut = bn(conv1x1(x, down[0].weight, stride), down[1])
    reference = torch.relu(h + shortcut)
    torch.testing.assert_close(expected_out, reference, rtol=1e-6, atol=1e-6)


def test_conv3x3_mixer_shapes() -> None:
    conv = conv3x3_mixer(8, 16, stride=2, dilation=1)
    assert conv(torch.randn(1, 8, 7, 7)).shape == (1, 16, 4, 4)
    conv = conv3x3_mixer(8, 8, stride=1, dilation=4)
    assert conv(torch.randn(1, 8, 9, 9)).shape == (1, 8, 9, 9)


@pytest.mark.parametrize("output_stride", [8, 16, 32])
def test_dilated_output_stride(output_stride: int) -> None:
    model = ResNet((1, 1, 2, 2), num_classes=0, img_size=64, output_stride=output_stride, **TINY)
    x = torch.randn(1, 3, 64, 64)
    feats = model.forward_features(x)
    assert feats.shape == (1, 64, 64 // output_stride, 64 // output_stride)
    reductions = [info["reduction"] for info in model.feature_info]
    assert reductions[-1] == output_stride
    maps = model.forward_intermediates(x, intermediates_only=True)
    assert [m.shape[-1] for m in maps] == [64 // r for r in reductions]
    if output_stride == 8:
        # torchvision / EANet convention: first block of a dilated stage keeps the previous
        # dilation; shortcut convolutions are no longer strided.
        assert [b.conv2.dilation[0] for b in model.layer3] == [1, 2]
        assert [b.conv2.dilation[0] for b in model.layer4] == [2, 4]
        assert model.layer4[0].downsample[0].stride == (1, 1)


def test_multi_grid_follows_eanet_authors() -> None:
    model = ResNet((1, 1, 1, 3), num_classes=0, output_stride=8, multi_grid=(1, 2, 4), **TINY)
    assert [b.conv2.dilation[0] for b in model.layer4] == [2, 8, 16]
    assert [b.conv2.padding[0] for b in model.layer4] == [2, 8, 16]
    with pytest.raises(ValueError, match="multi_grid"):
        ResNet((1, 1, 1, 3), output_stride=8, multi_grid=(1, 2), **TINY)


def test_cifar_forward_backward_every_param_gets_grad() -> None:
    torch.manual_seed(0)
    # zero_init_last=False: with the default zero-initialised last BN the branches get
    # exactly zero gradients at the first step (by design), which would hide a broken path.
    model = create_model("resnet26_cifar", drop_path_rate=0.1, zero_init_last=False)
    assert model.config.input_size == (3, 32, 32) and model.config.num_classes == 10
    x = torch.randn(4, 3, 32, 32)
    out = model(x)
    assert out.shape == (4, 10) and torch.isfinite(out).all()
    F.cross_entropy(out, torch.tensor([0, 1, 2, 3])).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_drop_path_linear_schedule() -> None:
    model = ResNet((2, 2, 2, 2), num_classes=3, drop_path_rate=0.3, **TINY)
    rates = [
        b.drop_path.drop_prob if isinstance(b.drop_path, DropPath) else 0.0
        for stage in model.stages
        for b in stage
    ]
    assert rates == pytest.approx([0.3 * i / 7 for i in range(8)])


def test_grad_checkpointing_leaves_output_and_grads_unchanged() -> None:
    torch.manual_seed(0)
    model = ResNet((2, 1, 1, 1), num_classes=5, img_size=32, stem_type="cifar",
                   drop_path_rate=0.2, **TINY)
    x = torch.randn(3, 3, 32, 32)
    state = {k: v.clone() for k, v in model.state_dict().items()}

    def run() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        model.load_state_dict(state)
        model.zero_grad()
        torch.manual_seed(1)  # same stochastic-depth draws in both runs
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
    model = create_model("resnet26_cifar").eval()
    randomize_bn(model)
    x = torch.randn(2, 3, 32, 32)
    torch.manual_seed(1)
    clone = create_model("resnet26_cifar").eval()
    clone.load_state_dict(model.state_dict())
    torch.testing.assert_close(clone(x), model(x), rtol=0, atol=0)


def test_head_contract() -> None:
    model = ResNet((1, 1, 1, 1), num_classes=7, img_size=32, **TINY).eval()
    x = torch.randn(2, 3, 32, 32)
    assert model.num_features == 64
    feats = model.forward_features(x)
    pooled = model.forward_head(feats, pre_logits=True)
    torch.testing.assert_close(pooled, feats.mean(dim=(2, 3)))
    torch.testing.assert_close(model.forward_head(feats), model.fc(pooled))
    model.reset_classifier(0)
    torch.testing.assert_close(model(x), pooled)
    model.reset_classifier(11)
    assert model(x).shape == (2, 11)
    headless = ResNet((1, 1, 1, 1), num_classes=0, **TINY)
    assert isinstance(headless.fc, nn.Identity)


def test_forward_intermediates() -> None:
    model = ResNet((1, 1, 1, 1), num_classes=4, img_size=64, **TINY).eval()
    x = torch.randn(1, 3, 64, 64)
    final, maps = model.forward_intermediates(x)
    torch.testing.assert_close(final, model.forward_features(x))
    assert [m.shape[1:] for m in maps] == [(16, 16, 16), (32, 8, 8), (32, 4, 4), (64, 2, 2)]
    last2 = model.forward_intermediates(x, indices=2, intermediates_only=True)
    torch.testing.assert_close(last2[1], maps[3])
    early = model.forward_intermediates(x, indices=[1], intermediates_only=True, stop_early=True)
    torch.testing.assert_close(early[0], maps[1])
    with pytest.raises(ValueError, match="indices"):
        model.forward_intermediates(x, indices=[4])


def test_no_weight_decay_is_norms_and_biases() -> None:
    model = ResNet((1, 1, 1, 1), num_classes=4, **TINY)
    skip = model.no_weight_decay()
    assert "bn1.weight" in skip and "layer1.0.bn3.bias" in skip and "fc.bias" in skip
    assert "fc.weight" not in skip and "layer1.0.conv2.weight" not in skip


def test_zero_init_last_starts_blocks_as_identity() -> None:
    model = ResNet((1, 1, 1, 1), num_classes=4, zero_init_last=True, **TINY)
    assert all((b.bn3.weight == 0).all() for stage in model.stages for b in stage)
    block = model.layer1[0]
    block.eval()
    x = torch.randn(1, 8, 5, 5)
    torch.testing.assert_close(block(x), torch.relu(block.downsample(x)))


def test_bad_inputs_raise_value_errors() -> None:
    model = ResNet((1, 1, 1, 1), num_classes=4, **TINY)
    with pytest.raises(ValueError, match="3 channels"):
        model(torch.randn(1, 1, 32, 32))
    with pytest.raises(ValueError, match="4 dimensions"):
        model(torch.randn(3, 32, 32))
    with pytest.raises(ValueError, match="output_stride"):
        ResNet((1, 1, 1, 1), output_stride=4, **TINY)
    with pytest.raises(ValueError, match="output_stride"):
        ResNet((1, 1, 1, 1), stem_type="cifar", output_stride=8, **TINY)
    with pytest.raises(ValueError, match="stem_type"):
        ResNet((1, 1, 1, 1), stem_type="patchify", **TINY)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="layers"):
        ResNet((1, 1, 1), **TINY)
    with pytest.raises(ValueError, match="num_classes"):
        model.reset_classifier(-1)
