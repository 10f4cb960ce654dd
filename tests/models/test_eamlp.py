"""EAMLP against the authors' structure: parameter counts by formula, the forward against a
written-out float64 model (soft splits by loops, attention by einsum), the stem attention
against the EA layer, FLOPs against the counted figures (from the authors' code), and the
contract."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from beyond_attention import create_model, get_model_config
from beyond_attention.flops import count
from beyond_attention.layers import ExternalAttention
from beyond_attention.layers.patch_embed import sinusoid_position_table
from beyond_attention.models.eamlp import EAMLP, TokenExternalAttention

torch.manual_seed(0)


# ----------------------------------------------------------------- parameter counts
def authors_param_count(
    d: int, depth: int, heads: int, mlp_ratio: float, img: int, num_classes: int = 1000
) -> int:
    """``sum(p.numel())`` of the authors' T2T_ViT with their EA blocks, term by term.

    Stem (``Token_performer`` x2, token_dim 64, k = 128 slots): LN(in), q_linear in->64,
    linear_0 64->128 (no bias), linear_1 128->64, proj 64->64, LN(64), MLP 64->64->64;
    project 576 -> d. Block (coef 4, 64 slots, head dim d/h): LN, trans_dims d->4d,
    linear_0 d/h->64, linear_1 64->d/h, proj 4d->d, LN, MLP d->rd->d. Class token, the
    frozen sinusoid table ((N+1) x d, an nn.Parameter there), final LN, head.
    """

    def lin(i: int, o: int, bias: bool = True) -> int:
        return i * o + (o if bias else 0)

    def token_block(in_dim: int) -> int:
        return (
            2 * in_dim + lin(in_dim, 64) + lin(64, 128, False) + lin(128, 64) + lin(64, 64)
            + 2 * 64 + lin(64, 64) * 2
        )

    hd, hidden = d // heads, int(d * mlp_ratio)
    block = (
        2 * d + lin(d, 4 * d) + lin(hd, 64) + lin(64, hd) + lin(4 * d, d)
        + 2 * d + lin(d, hidden) + lin(hidden, d)
    )
    n = (img // 16) ** 2 + 1
    stem = token_block(3 * 49) + token_block(64 * 9) + lin(576, d)
    return stem + d + n * d + depth * block + 2 * d + lin(d, num_classes)


CONFIGS = {  # name: (d, depth, heads, mlp_ratio, img, counted params in M)
    "eamlp_7": (256, 7, 4, 2.0, 384, 6.24),
    "eamlp_14": (384, 14, 6, 3.0, 224, 29.88),
    "eamlp_19": (448, 19, 7, 3.0, 224, 54.56),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_parameters_plus_fixed_table_equal_the_authors_count(name):
    d, depth, heads, ratio, img, counted_m = CONFIGS[name]
    expected = authors_param_count(d, depth, heads, ratio, img)
    assert round(expected / 1e6, 2) == counted_m  # the figure counted from the authors' code
    assert get_model_config(name).reported_params_m == counted_m
    with torch.device("meta"):
        model = create_model(name)
    params = sum(p.numel() for p in model.parameters())
    assert params + model.pos_embed.numel() == expected
    assert model.pos_embed.shape == (1, (img // 16) ** 2 + 1, d)
    assert "pos_embed" not in model.state_dict()  # derived: a non-persistent buffer


@pytest.mark.parametrize("name,gmacs", [("eamlp_14", 6.45), ("eamlp_19", 11.60)])
def test_gmacs_match_the_counted_figures(name, gmacs):
    with torch.device("meta"):
        model = create_model(name)
    result = count(model)
    assert abs(result.gmacs - gmacs) / gmacs < 0.005
    assert get_model_config(name).reported_gmacs == gmacs


def test_grids():
    with torch.device("meta"):
        assert create_model("eamlp_14").tokens_to_token.grid_size == (14, 14)
        assert create_model("eamlp_7").tokens_to_token.grid_size == (24, 24)
        assert create_model("eamlp_cifar").tokens_to_token.grid_size == (8, 8)
        assert create_model("eamlp_14", img_size=(224, 160)).tokens_to_token.grid_size == (
            14,
            10,
        )


# ----------------------------------------------------------------- reference (float64)
def layer_norm(x, ln):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + ln.eps) * ln.weight + ln.bias


def linear(x, lin):
    out = torch.einsum("...i,oi->...o", x, lin.weight)
    return out if lin.bias is None else out + lin.bias


def mlp(x, m):
    h = linear(x, m.fc1)
    return linear(0.5 * h * (1.0 + torch.erf(h / math.sqrt(2.0))), m.fc2)


def softmax(a, dim):
    e = torch.exp(a - a.amax(dim=dim, keepdim=True))
    return e / e.sum(dim=dim, keepdim=True)


def soft_split(x, k, s, p):
    """T2T soft split by loops: every k x k window (zero padding p, stride s) flattened
    channel-major (c, i, j), windows in row-major order: (B, L, C k k)."""
    b, c, h, w = x.shape
    xp = torch.zeros(b, c, h + 2 * p, w + 2 * p, dtype=x.dtype)
    xp[:, :, p : p + h, p : p + w] = x
    rows = (h + 2 * p - k) // s + 1
    cols = (w + 2 * p - k) // s + 1
    out = [
        xp[:, :, i * s : i * s + k, j * s : j * s + k].reshape(b, c * k * k)
        for i in range(rows)
        for j in range(cols)
    ]
    return torch.stack(out, 1), (rows, cols)


def ref_token_block(blk, x):
    a = blk.attn
    v = linear(layer_norm(x, blk.norm1), a.proj_in)
    attn = softmax(torch.einsum("bnc,sc->bns", v, a.mk.weight), dim=1)
    attn = attn / (a.eps + attn.sum(-1, keepdim=True))
    y = v + linear(linear(attn, a.mv), a.proj)
    return y + mlp(layer_norm(y, blk.norm2), blk.mlp)


def ref_block(blk, x):
    a = blk.attn
    b, n, d = x.shape
    q = linear(layer_norm(x, blk.norm1), a.query).reshape(b, n, a.num_heads, a.head_dim)
    attn = torch.einsum("bnhc,sc->bhns", q, a.mk.weight) + a.mk.bias
    attn = softmax(attn, dim=2)
    attn = attn / (a.eps + attn.sum(-1, keepdim=True))
    o = torch.einsum("bhns,cs->bnhc", attn, a.mv.weight) + a.mv.bias
    x = x + linear(o.reshape(b, n, -1), a.proj)
    return x + mlp(layer_norm(x, blk.norm2), blk.mlp)


def reference_eamlp(model: EAMLP, img: torch.Tensor) -> torch.Tensor:
    t2t = model.tokens_to_token
    b = img.shape[0]
    splits = [
        (m.kernel_size, m.stride, m.padding)
        for m in (t2t.soft_split0, t2t.soft_split1, t2t.soft_split2)
    ]
    x, (h, w) = soft_split(img, *splits[0])
    x = ref_token_block(t2t.attention1, x)
    x, (h, w) = soft_split(x.transpose(1, 2).reshape(b, -1, h, w), *splits[1])
    x = ref_token_block(t2t.attention2, x)
    x, _ = soft_split(x.transpose(1, 2).reshape(b, -1, h, w), *splits[2])
    x = linear(x, t2t.project)
    x = torch.cat([model.cls_token.expand(b, 1, -1), x], 1)
    x = x + authors_sinusoid(x.shape[1], x.shape[2]).to(x.dtype)
    for blk in model.blocks:
        x = ref_block(blk, x)
    return linear(layer_norm(x, model.norm)[:, 0], model.head)


def authors_sinusoid(n: int, d: int) -> torch.Tensor:
    """T2T-ViT's get_sinusoid_encoding, element by element."""
    table = torch.empty(1, n, d, dtype=torch.float64)
    for pos in range(n):
        for j in range(d):
            angle = pos / 10000 ** (2 * (j // 2) / d)
            table[0, pos, j] = math.sin(angle) if j % 2 == 0 else math.cos(angle)
    return table


@pytest.mark.parametrize("img_size", [32, (48, 32)])
def test_forward_matches_written_out_eamlp_in_float64(img_size):
    model = EAMLP(img_size=img_size, num_classes=5, embed_dim=32, depth=2, num_heads=2)
    model = model.double().eval()
    with torch.no_grad():
        for p in model.parameters():  # non-trivial biases and norms
            p.add_(0.05 * torch.randn_like(p))
    hw = (img_size, img_size) if isinstance(img_size, int) else img_size
    img = torch.randn(2, 3, *hw, dtype=torch.float64)
    torch.testing.assert_close(model(img), reference_eamlp(model, img), rtol=1e-6, atol=1e-6)


def test_sinusoid_table_matches_the_authors_formula():
    torch.testing.assert_close(
        sinusoid_position_table(20, 12).double(), authors_sinusoid(20, 12), rtol=0, atol=1e-6
    )


# ----------------------------------------------------------------- the stem attention
def test_stem_attention_is_external_attention_on_the_projected_tokens():
    torch.manual_seed(1)
    tea = TokenExternalAttention(27, dim=16, memory_size=8, attn_drop=0, proj_drop=0)
    tea = tea.double().eval()
    ea = ExternalAttention(16, memory_size=8, eps=tea.eps).double()
    with torch.no_grad():
        ea.mk.weight.copy_(tea.mk.weight)
        ea.mv.weight.copy_(tea.mv.weight)
        tea.mv.bias.zero_()
    x = torch.randn(2, 30, 27, dtype=torch.float64)
    v = tea.proj_in(x)
    torch.testing.assert_close(tea(x), v + tea.proj(ea(v)), rtol=1e-9, atol=1e-9)


def test_stem_value_memory_starts_as_a_copy_of_the_key_memory_transposed():
    model = create_model("eamlp_cifar")
    for blk in (model.tokens_to_token.attention1, model.tokens_to_token.attention2):
        mk, mv = blk.attn.mk.weight, blk.attn.mv.weight
        assert mv.shape == (64, 128) and blk.attn.mk.bias is None
        torch.testing.assert_close(mv, mk.t(), rtol=0, atol=0)
        assert mv.data_ptr() != mk.data_ptr()
        with torch.no_grad():
            mk.add_(1.0)
        assert not torch.allclose(mv, mk.t())


def test_stem_dropout_is_the_authors_and_only_in_training():
    model = EAMLP(img_size=32, num_classes=3, embed_dim=32, depth=1, num_heads=2)
    assert model.tokens_to_token.attention1.attn.attn_drop.p == 0.1
    assert model.tokens_to_token.attention1.attn.proj_drop.p == 0.1
    x = torch.randn(2, 3, 32, 32)
    model.eval()
    torch.testing.assert_close(model(x), model(x), rtol=0, atol=0)


# ----------------------------------------------------------------- contract
def test_wrong_input_size_fails_before_computing():
    model = create_model("eamlp_cifar", depth=1)
    calls = []
    model.tokens_to_token.soft_split0.register_forward_pre_hook(lambda *_: calls.append(1))
    with pytest.raises(ValueError, match=r"\(32, 32\)"):
        model(torch.randn(1, 3, 48, 48))
    with pytest.raises(ValueError, match="channels"):
        model(torch.randn(1, 1, 32, 32))
    assert not calls


def test_heads_pooling_and_weight_decay():
    model = EAMLP(img_size=32, num_classes=4, embed_dim=32, depth=1, num_heads=2).eval()
    x = torch.randn(2, 3, 32, 32)
    tokens = model.forward_features(x)
    assert tokens.shape == (2, 5, 32) and model.num_features == 32
    feats = model.forward_head(tokens, pre_logits=True)
    torch.testing.assert_close(feats, tokens[:, 0])
    model.reset_classifier(0)
    assert isinstance(model.head, nn.Identity)
    torch.testing.assert_close(model(x), feats)
    model.reset_classifier(6, global_pool="avg")
    assert model(x).shape == (2, 6)
    torch.testing.assert_close(model.forward_head(tokens, pre_logits=True), tokens[:, 1:].mean(1))
    assert model.no_weight_decay() == {"cls_token"}


def test_init_follows_the_authors():
    model = create_model("eamlp_cifar")
    w = model.blocks[0].attn.query.weight
    assert 0.019 < w.std().item() < 0.021 and model.blocks[0].attn.query.bias.abs().max() == 0
    assert model.blocks[0].norm1.eps == 1e-5


def test_drop_path_is_linear_in_depth():
    model = create_model("eamlp_cifar", drop_path_rate=0.3, depth=4)
    rates = [blk.drop_path1.drop_prob for blk in model.blocks]
    assert rates == pytest.approx([0.0, 0.1, 0.2, 0.3])


def test_gradient_checkpointing_gives_the_same_gradients():
    model = EAMLP(img_size=32, num_classes=3, embed_dim=32, depth=2, num_heads=2).eval()
    x = torch.randn(2, 3, 32, 32)
    model(x).square().sum().backward()
    ref = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.set_grad_checkpointing(True)
    model(x).square().sum().backward()
    for p, g in zip(model.parameters(), ref, strict=True):
        torch.testing.assert_close(p.grad, g)


def test_bad_arguments_are_value_errors():
    with pytest.raises(ValueError, match="img_size"):
        EAMLP(img_size=2, embed_dim=32, depth=1, num_heads=2)
    with pytest.raises(ValueError, match="global_pool"):
        EAMLP(img_size=32, embed_dim=32, depth=1, num_heads=2, global_pool="max")
    with pytest.raises(ValueError, match="splits"):
        EAMLP(img_size=32, embed_dim=32, depth=1, num_heads=2, splits=((3, 1, 1),))
