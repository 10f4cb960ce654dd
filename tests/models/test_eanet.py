"""EANet: dilated backbone, the EA head against its composition, per-pixel logits."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from beyond_attention.layers.external_attention import ExternalAttentionBlock2d
from beyond_attention.models._registry import create_model, get_model_config
from beyond_attention.models.eanet import EANet


def small_eanet(**kwargs: object) -> EANet:
    """EANet with one block per stage and narrow widths (c5: 64, head 32 -> 16, S = 8)."""
    small = dict(widths=(8, 8, 16, 16), stem_width=8, head_width=32, head_out=16,
                 memory_size=8, multi_grid=None)
    small.update(kwargs)
    return EANet((1, 1, 1, 1), num_classes=small.pop("num_classes", 5), **small)


def randomize_bn(model: nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)


def test_registered_configs_and_sizes() -> None:
    cfg = get_model_config("eanet_resnet101")
    assert cfg.num_classes == 150 and cfg.input_size == (3, 512, 512)
    assert not cfg.fixed_input_size and cfg.dataset == "ade20k"
    assert cfg.extra["reported_miou"]["ade20k"] == pytest.approx(45.33)
    with torch.device("meta"):
        model = create_model("eanet_resnet101")
    assert [len(s) for s in model.backbone.stages] == [3, 4, 23, 3]
    # Authors' dilation schedule: c4 1, 2, 2, ...; c5 multi-grid (1, 2, 4) -> 2, 8, 16.
    assert [b.conv2.dilation[0] for b in model.backbone.layer3] == [1] + [2] * 22
    assert [b.conv2.dilation[0] for b in model.backbone.layer4] == [2, 8, 16]
    assert [info["reduction"] for info in model.feature_info] == [4, 8, 8, 8]
    # Deep stem: three 3x3 convolutions, 128 channels into c2.
    assert isinstance(model.backbone.conv1, nn.Sequential)
    assert model.backbone.layer1[0].conv1.in_channels == 128
    # Head widths of the EA paper's segmentation network (arXiv:2105.02358, authors' code).
    assert model.conv0.conv.weight.shape == (512, 2048, 3, 3)
    assert isinstance(model.ea, ExternalAttentionBlock2d) and model.ea.memory_size == 64
    assert model.conv1.conv.weight.shape == (256, 512, 3, 3)
    assert model.drop.p == pytest.approx(0.1)
    assert model.classifier.weight.shape == (150, 256, 1, 1)


@pytest.mark.parametrize("size", [(32, 32), (37, 45)])
def test_output_is_per_pixel_logits_at_input_size(size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    model = small_eanet().eval()
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        feats = model.forward_features(x)
        out = model(x)
    assert feats.shape[:2] == (2, 64)
    assert feats.shape[-2:] == tuple(-(-s // 8) for s in size)  # output stride 8
    assert out.shape == (2, 5, *size) and torch.isfinite(out).all()


def _bn_eval(t: torch.Tensor, m: nn.BatchNorm2d) -> torch.Tensor:
    shape = (1, -1, 1, 1)
    return (t - m.running_mean.view(shape)) / torch.sqrt(
        m.running_var.view(shape) + m.eps
    ) * m.weight.view(shape) + m.bias.view(shape)


def _conv3x3(t: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    tp = F.pad(t, (1, 1, 1, 1))
    h, wd = t.shape[-2:]
    return sum(
        torch.einsum("oc,bchw->bohw", w[:, :, i, j], tp[:, :, i : i + h, j : j + wd])
        for i in range(3)
        for j in range(3)
    )


def _bilinear_matrix(n_out: int, n_in: int) -> torch.Tensor:
    """Rows: output positions; align_corners=True sampling of n_in points."""
    a = torch.zeros(n_out, n_in, dtype=torch.float64)
    for i in range(n_out):
        src = i * (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
        i0 = min(int(src), n_in - 1)
        i1 = min(i0 + 1, n_in - 1)
        frac = src - i0
        a[i, i0] += 1 - frac
        a[i, i1] += frac
    return a


def _ea_block(x: torch.Tensor, blk: ExternalAttentionBlock2d) -> torch.Tensor:
    """The EA block of the authors' code (EA paper, arXiv:2105.02358) written out with the
    block's weights."""
    b, c, h, w = x.shape
    y = torch.einsum("oc,bcn->bon", blk.conv1.weight[:, :, 0, 0], x.reshape(b, c, h * w))
    y = y + blk.conv1.bias.view(1, -1, 1)
    attn = torch.einsum("sc,bcn->bsn", blk.mk.weight[:, :, 0], y).softmax(dim=2)  # over N
    attn = attn / (blk.eps + attn.sum(dim=1, keepdim=True))  # L1 over S
    z = torch.einsum("cs,bsn->bcn", blk.mv.weight[:, :, 0], attn).reshape(b, c, h, w)
    z = torch.einsum("oc,bchw->bohw", blk.conv2.weight[:, :, 0, 0], z)
    return torch.relu(x + _bn_eval(z, blk.norm))


def test_head_equals_reference_composition() -> None:
    torch.manual_seed(0)
    # The paper's head widths (2048 -> 512 -> EA(S=64) -> 256) on a small backbone.
    model = small_eanet(num_classes=6, widths=(8, 8, 16, 512), head_width=512, head_out=256,
                        memory_size=64).double().eval()
    randomize_bn(model)
    c5 = torch.randn(2, 2048, 4, 5, dtype=torch.float64)
    with torch.no_grad():
        out = model.forward_head(c5, output_size=(13, 17))
        pre = model.forward_head(c5, pre_logits=True)

    f = torch.relu(_bn_eval(_conv3x3(c5, model.conv0.conv.weight), model.conv0.bn))
    f = _ea_block(f, model.ea)
    f = torch.relu(_bn_eval(_conv3x3(f, model.conv1.conv.weight), model.conv1.bn))
    torch.testing.assert_close(pre, f, rtol=1e-6, atol=1e-6)  # Dropout2d is off in eval
    logits = torch.einsum("kc,bchw->bkhw", model.classifier.weight[:, :, 0, 0], f)
    logits = logits + model.classifier.bias.view(1, -1, 1, 1)
    ah, aw = _bilinear_matrix(13, 4), _bilinear_matrix(17, 5)
    reference = torch.einsum("yh,bkhw,xw->bkyx", ah, logits, aw)
    torch.testing.assert_close(out, reference, rtol=1e-6, atol=1e-6)
    # Default upsampling: output stride times the feature size.
    assert model.forward_head(c5).shape[-2:] == (32, 40)


def test_forward_backward_every_param_gets_grad() -> None:
    torch.manual_seed(0)
    model = small_eanet(zero_init_last=False, drop_path_rate=0.1).train()
    x = torch.randn(2, 3, 32, 32)
    out = model(x)
    assert torch.isfinite(out).all()
    target = torch.randint(0, 5, (2, 32, 32))
    F.cross_entropy(out, target).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_grad_checkpointing_leaves_output_and_grads_unchanged() -> None:
    torch.manual_seed(0)
    model = small_eanet().eval()
    x = torch.randn(1, 3, 24, 24)
    out_ref = model(x)
    out_ref.square().mean().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model.set_grad_checkpointing(True)
    assert model.backbone.grad_checkpointing
    out = model(x)
    out.square().mean().backward()
    torch.testing.assert_close(out, out_ref, rtol=1e-5, atol=1e-6)
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, grads[name], rtol=1e-4, atol=1e-6)


def test_state_dict_round_trip() -> None:
    torch.manual_seed(0)
    model = small_eanet().eval()
    randomize_bn(model)
    torch.manual_seed(1)
    other = small_eanet().eval()
    other.load_state_dict(model.state_dict())
    x = torch.randn(1, 3, 24, 24)
    with torch.no_grad():
        torch.testing.assert_close(other(x), model(x), rtol=0, atol=0)


def test_classifier_contract() -> None:
    torch.manual_seed(0)
    model = small_eanet(num_classes=5).eval()
    x = torch.randn(1, 3, 24, 24)
    assert model.num_features == 16
    model.reset_classifier(9)
    assert model.get_classifier().weight.shape == (9, 16, 1, 1)
    with torch.no_grad():
        assert model(x).shape == (1, 9, 24, 24)
    model.reset_classifier(0)
    with torch.no_grad():
        assert model(x).shape == (1, 16, 24, 24)
    with pytest.raises(ValueError, match="num_classes"):
        model.reset_classifier(-2)
    maps = model.forward_intermediates(x, intermediates_only=True)
    assert [m.shape[1] for m in maps] == [32, 32, 64, 64]
    assert [m.shape[-1] for m in maps] == [6, 3, 3, 3]
    no_wd = model.no_weight_decay()
    assert "ea.conv1.bias" in no_wd and "conv0.bn.weight" in no_wd
    assert "ea.mk.weight" not in no_wd


def test_bad_input() -> None:
    model = small_eanet()
    with pytest.raises(ValueError, match="3 channels"):
        model(torch.randn(1, 4, 24, 24))
    with pytest.raises(ValueError, match="output_stride"):
        small_eanet(output_stride=32)
