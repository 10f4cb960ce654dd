"""The ViT/DeiT baseline: the forward against a written-out float64 transformer, the mixer
swap, the carried-attention protocol, sizes and FLOPs against DeiT, and the contract."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from beyond_attention import create_model, get_model_config
from beyond_attention.flops import count
from beyond_attention.layers import MIXER_NAMES, CarriesAttention, create_mixer
from beyond_attention.models import vit as vit_module
from beyond_attention.models.vit import Block, VisionTransformer

torch.manual_seed(0)


def small_vit(**kwargs) -> VisionTransformer:
    args = dict(img_size=16, patch_size=4, num_classes=5, embed_dim=24, depth=2, num_heads=3)
    args.update(kwargs)
    return VisionTransformer(**args)


# ----------------------------------------------------------------- reference (float64)
def layer_norm(x: torch.Tensor, ln: nn.LayerNorm) -> torch.Tensor:
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + ln.eps) * ln.weight + ln.bias


def linear(x: torch.Tensor, lin: nn.Linear) -> torch.Tensor:
    return torch.einsum("...i,oi->...o", x, lin.weight) + lin.bias


def gelu(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def softmax(a: torch.Tensor, dim: int) -> torch.Tensor:
    e = torch.exp(a - a.amax(dim=dim, keepdim=True))
    return e / e.sum(dim=dim, keepdim=True)


def reference_vit(model: VisionTransformer, img: torch.Tensor) -> torch.Tensor:
    """ViT eq. 1-4 written out: patches by loops, attention by einsum."""
    b, c, hh, ww = img.shape
    p = model.patch_embed.patch_size[0]
    d = model.embed_dim
    patches = torch.stack(
        [
            img[:, :, i : i + p, j : j + p].reshape(b, c * p * p)
            for i in range(0, hh, p)
            for j in range(0, ww, p)
        ],
        dim=1,
    )
    w_e = model.patch_embed.proj.weight.reshape(d, c * p * p)
    x = patches @ w_e.T + model.patch_embed.proj.bias
    if isinstance(model.patch_embed.norm, nn.LayerNorm):
        x = layer_norm(x, model.patch_embed.norm)
    x = torch.cat([model.cls_token.expand(b, 1, d), x], dim=1) + model.pos_embed
    for blk in model.blocks:
        attn = blk.attn
        h, dh = attn.num_heads, d // attn.num_heads
        qkv = linear(layer_norm(x, blk.norm1), attn.qkv).reshape(b, -1, 3, h, dh)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        a = softmax(torch.einsum("bnhd,bmhd->bhnm", q, k) / math.sqrt(dh), dim=-1)
        o = torch.einsum("bhnm,bmhd->bnhd", a, v).reshape(b, -1, d)
        x = x + linear(o, attn.proj)
        y = layer_norm(x, blk.norm2)
        x = x + linear(gelu(linear(y, blk.mlp.fc1)), blk.mlp.fc2)
    x = layer_norm(x, model.norm)
    return linear(x[:, 0], model.head)


@pytest.mark.parametrize("embed_norm", [False, True])
def test_forward_matches_written_out_vit_in_float64(embed_norm):
    model = small_vit(embed_norm=embed_norm).double().eval()
    if embed_norm:  # a norm that is not the identity, so that the test sees it
        nn.init.normal_(model.patch_embed.norm.weight, 1.0, 0.3)
        nn.init.normal_(model.patch_embed.norm.bias, 0.0, 0.3)
    img = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    torch.testing.assert_close(model(img), reference_vit(model, img), rtol=1e-6, atol=1e-6)
    img.requires_grad_(True)
    ref_grad = torch.autograd.grad(reference_vit(model, img).sum(), img)[0]
    got_grad = torch.autograd.grad(model(img).sum(), img)[0]
    torch.testing.assert_close(got_grad, ref_grad, rtol=1e-6, atol=1e-8)


def test_patch_norm_normalises_every_embedded_patch():
    model = small_vit(embed_norm=True)
    tokens = model.patch_embed(torch.randn(3, 3, 16, 16) * 5 + 2)
    assert tokens.shape == (3, 16, 24)
    torch.testing.assert_close(tokens.mean(-1), torch.zeros(3, 16), atol=1e-5, rtol=0)
    torch.testing.assert_close(tokens.var(-1, unbiased=False), torch.ones(3, 16), atol=1e-3,
                               rtol=0)
    assert "patch_embed.norm.weight" in model.state_dict()
    assert "patch_embed.norm.weight" not in small_vit().state_dict()


# ----------------------------------------------------------------- sizes and FLOPs
@pytest.mark.parametrize(
    "name,params", [("vit_tiny", 5_717_416), ("vit_small", 22_050_664)]
)
def test_deit_parameter_counts(name, params):
    with torch.device("meta"):
        model = create_model(name)
    assert sum(p.numel() for p in model.parameters()) == params  # DeiT-Ti / DeiT-S exactly
    reported = get_model_config(name).reported_params_m * 1e6
    assert abs(params - reported) / reported < 0.01


def deit_macs(d: int, depth: int, num_classes: int = 1000, img: int = 224, p: int = 16) -> int:
    """Multiply-accumulates of a DeiT: patch projection, 12 blocks, head."""
    n_patch = (img // p) ** 2
    n = n_patch + 1
    block = n * d * 3 * d + 2 * n * n * d + n * d * d + 2 * n * d * 4 * d
    return n_patch * d * 3 * p * p + depth * block + d * num_classes


@pytest.mark.parametrize("name,d", [("vit_tiny", 192), ("vit_small", 384)])
def test_flops_match_the_deit_formula(name, d):
    with torch.device("meta"):
        model = create_model(name)
    result = count(model, (3, 224, 224))
    assert result.macs == deit_macs(d, 12)
    reported = get_model_config(name).reported_gmacs
    assert abs(result.gmacs - reported) / reported < 0.05  # the papers round to 0.1G


# ----------------------------------------------------------------- mixer swap
@pytest.mark.parametrize("mixer", MIXER_NAMES)
def test_mixer_swap_changes_only_the_mixer(mixer):
    torch.manual_seed(0)
    base = create_model("vit_tiny_cifar", depth=2)
    model = create_model("vit_tiny_cifar", depth=2, mixer=mixer)
    ref = create_mixer(
        mixer, 192, num_heads=3, num_tokens=model.pos_embed.shape[1], grid_size=(8, 8)
    )
    assert all(type(blk.attn) is type(ref) for blk in model.blocks)

    def outside_mixer(m: nn.Module) -> dict[str, tuple[int, ...]]:
        skip = ("cls_token", "pos_embed")
        return {
            k: tuple(v.shape)
            for k, v in m.state_dict().items()
            if ".attn." not in k and k not in skip
        }

    assert outside_mixer(model) == outside_mixer(base)
    x = torch.randn(2, 3, 32, 32)
    out = model(x)
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    out.square().mean().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_grid_mixer_drops_the_class_token_and_averages():
    model = create_model("vit_tiny_cifar", depth=1, mixer="lambda")
    assert model.cls_token is None and model.global_pool == "avg"
    assert model.pos_embed.shape == (1, 64, 192)
    assert "cls_token" not in model.no_weight_decay()
    tokens = model.forward_features(torch.randn(2, 3, 32, 32))
    assert tokens.shape == (2, 64, 192)
    torch.testing.assert_close(model.forward_head(tokens, pre_logits=True), tokens.mean(1))


def test_external_mixer_keeps_the_class_token():
    model = create_model(
        "vit_tiny_cifar", depth=1, mixer="external", mixer_kwargs={"memory_size": 16}
    )
    assert model.cls_token is not None and model.global_pool == "token"
    assert model.blocks[0].attn.memory_size == 16


def test_bad_arguments_are_value_errors():
    with pytest.raises(ValueError, match="global_pool"):
        small_vit(class_token=False, global_pool="token")
    with pytest.raises(ValueError, match="class_token"):
        small_vit(mixer="lambda", class_token=True)
    with pytest.raises(ValueError, match="global_pool"):
        small_vit(global_pool="max")
    with pytest.raises(ValueError, match="mixer"):
        small_vit(mixer="nonexistent")
    with pytest.raises(ValueError, match="patch_size"):
        small_vit(img_size=18)
    with pytest.raises(ValueError, match="weight_init"):
        small_vit(weight_init="xavier")
    with pytest.raises(ValueError, match="embed_norm"):
        small_vit(embed_norm=True, embed_layer=lambda **kw: nn.Identity())


# ----------------------------------------------------------------- carried attention
class Carrier(CarriesAttention):
    """A mixer that carries a state: records what it gets, passes on a counter."""

    def __init__(self, dim: int, log: list) -> None:
        super().__init__()
        self.lin = nn.Linear(dim, dim)
        self.log = log

    def forward(self, x: torch.Tensor, prev_scores=None):
        self.log.append(None if prev_scores is None else int(prev_scores))
        new = torch.zeros(()) if prev_scores is None else prev_scores + 1
        return self.lin(x) * (1 + new), new


@pytest.mark.parametrize("checkpointing", [False, True])
def test_blocks_thread_the_carried_attention_in_order(monkeypatch, checkpointing):
    log: list = []
    monkeypatch.setattr(
        vit_module, "create_mixer", lambda name, dim, **kw: Carrier(dim, log)
    )
    model = small_vit(depth=4, mixer="less")
    assert all(blk.carries_attention for blk in model.blocks)
    model.set_grad_checkpointing(checkpointing)
    model(torch.randn(2, 3, 16, 16)).sum().backward()
    assert log[:4] == [None, 0, 1, 2]  # (with checkpointing the recompute logs again)


def test_only_carries_attention_subclasses_are_threaded():
    """A mixer that merely has a ``carries_attention`` attribute is called as ``mixer(x)``."""

    class Duck(nn.Module):
        carries_attention = True

        def forward(self, x):
            return 2 * x

    blk = Block(8, Duck())
    x = torch.randn(2, 3, 8)
    out, state = blk(x, "state")
    assert not blk.carries_attention and state == "state" and out.shape == x.shape


def test_block_passes_state_through_a_plain_mixer():
    blk = Block(8, nn.Identity())
    x = torch.randn(2, 3, 8)
    out, state = blk(x, "state")
    assert state == "state" and out.shape == x.shape


# ----------------------------------------------------------------- contract
def test_wrong_input_size_fails_before_computing():
    model = create_model("vit_tiny_cifar", depth=1)
    calls = []
    model.patch_embed.proj.register_forward_pre_hook(lambda *_: calls.append(1))
    with pytest.raises(ValueError, match=r"\(32, 32\)"):
        model(torch.randn(1, 3, 40, 40))
    with pytest.raises(ValueError, match="channels"):
        model(torch.randn(1, 1, 32, 32))
    assert not calls


def test_fashion_mnist_size_and_channels():
    model = create_model("vit_tiny_cifar", depth=1, in_chans=1, img_size=28)
    assert model.patch_embed.grid_size == (7, 7)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_heads_and_pooling():
    model = small_vit().eval()
    x = torch.randn(2, 3, 16, 16)
    tokens = model.forward_features(x)
    assert tokens.shape == (2, 17, 24) and model.num_features == 24
    feats = model.forward_head(tokens, pre_logits=True)
    torch.testing.assert_close(feats, tokens[:, 0])
    torch.testing.assert_close(model(x), model.head(feats))
    model.reset_classifier(0)
    torch.testing.assert_close(model(x), feats)
    model.reset_classifier(3, global_pool="avg")
    assert model(x).shape == (2, 3)
    torch.testing.assert_close(model.forward_head(tokens, pre_logits=True), tokens[:, 1:].mean(1))
    headless = small_vit(num_classes=0)
    assert isinstance(headless.head, nn.Identity)


def test_no_weight_decay_and_deit_init():
    model = small_vit(embed_dim=192, num_heads=3)
    names = dict(model.named_parameters())
    assert model.no_weight_decay() == {"pos_embed", "cls_token"} <= set(names)
    for linear_layer in (model.blocks[0].attn.qkv, model.blocks[1].mlp.fc2, model.head):
        std = linear_layer.weight.std().item()
        assert 0.018 < std < 0.022  # DeiT: truncated normal, std 0.02
        assert linear_layer.bias.abs().max() == 0
    assert 0.018 < model.pos_embed.std().item() < 0.022


def test_pytorch_init_keeps_the_default_linear_init():
    model = small_vit(embed_dim=192, num_heads=3, mlp_ratio=2.0, weight_init="pytorch")
    for linear_layer in (model.blocks[0].attn.qkv, model.blocks[1].mlp.fc1,
                         model.blocks[1].mlp.fc2, model.head):
        bound = linear_layer.in_features ** -0.5  # U(-1/sqrt(fan_in), 1/sqrt(fan_in))
        assert linear_layer.weight.abs().max().item() <= bound
        assert 0.9 < linear_layer.weight.std().item() / (bound / math.sqrt(3)) < 1.1
        assert 0 < linear_layer.bias.abs().max().item() <= bound
    assert 0.018 < model.pos_embed.std().item() < 0.022  # still truncated normal, std 0.02
    model.reset_classifier(7)
    bound = model.embed_dim ** -0.5
    assert model.head.bias.abs().max() > 0 and model.head.weight.abs().max() <= bound
    deit = small_vit(embed_dim=192, num_heads=3)
    deit.reset_classifier(7)
    assert deit.head.bias.abs().max() == 0


def test_the_cifar_vit_is_the_vit_lite_shape_with_patch_norm():
    model = create_model("vit_tiny_cifar")
    assert isinstance(model.patch_embed.norm, nn.LayerNorm)
    assert model.blocks[0].mlp.fc1.out_features == 384  # MLP ratio 2
    assert sum(p.numel() for p in model.parameters()) == 1_806_922
    assert model.blocks[0].attn.qkv.bias.abs().max() > 0  # PyTorch's init, not DeiT's


def test_drop_path_is_linear_in_depth():
    model = small_vit(depth=5, drop_path_rate=0.2)
    rates = [blk.drop_path1.drop_prob for blk in model.blocks]
    assert rates == pytest.approx([0.0, 0.05, 0.1, 0.15, 0.2])


def test_gradient_checkpointing_gives_the_same_gradients():
    model = small_vit().eval()
    x = torch.randn(2, 3, 16, 16)
    model(x).square().sum().backward()
    ref = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.set_grad_checkpointing(True)
    model(x).square().sum().backward()
    for p, g in zip(model.parameters(), ref, strict=True):
        torch.testing.assert_close(p.grad, g)
