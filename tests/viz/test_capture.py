"""Map capture: documented shapes and normalisation, maps equal to the papers' formulas
written out here, outputs bitwise unchanged, and nothing left behind."""

from __future__ import annotations

import pytest
import torch
from einops import rearrange

from beyond_attention.layers.external_attention import (
    ExternalAttention,
    ExternalAttentionBlock2d,
    MultiHeadExternalAttention,
)
from beyond_attention.layers.lambda_layer import LambdaLayer
from beyond_attention.layers.less_attention import LessAttention, VanillaAttention
from beyond_attention.layers.self_attention import SelfAttention
from beyond_attention.models import create_model
from beyond_attention.viz import capture_maps


def _run(module, *args, **kwargs):
    with torch.no_grad():
        ref = module(*args, **kwargs)
        with capture_maps(module) as rec:
            got = module(*args, **kwargs)
    return ref, got, rec


def _same(a, b):
    a = a if isinstance(a, tuple) else (a,)
    b = b if isinstance(b, tuple) else (b,)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_self_attention_probabilities_match_formula_and_output_unchanged():
    torch.manual_seed(0)
    sa = SelfAttention(16, num_heads=4).eval()
    x = torch.randn(2, 10, 16)
    ref, got, rec = _run(sa, x)
    _same(ref, got)
    (m,) = rec.select("attn")
    assert m.family == "self" and m.tensor.shape == (2, 4, 10, 10)
    q, k, _ = rearrange(sa.qkv(x), "b n (t h d) -> t b h n d", t=3, h=4)
    expected = torch.einsum("bhnd,bhmd->bhnm", q, k).div(4**0.5).softmax(-1)
    torch.testing.assert_close(m.tensor, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(m.tensor.sum(-1), torch.ones(2, 4, 10))
    # the explicit path reports the same probabilities it returns
    with torch.no_grad(), capture_maps(sa) as rec2:
        _, attn = sa(x, return_attn=True)
    torch.testing.assert_close(rec2.select("attn")[0].tensor, attn, rtol=0, atol=0)


def test_external_attention_slots_double_normalised():
    torch.manual_seed(0)
    ea = ExternalAttention(8, memory_size=5).eval()
    x = torch.randn(3, 12, 8)
    ref, got, rec = _run(ea, x)
    _same(ref, got)
    (m,) = rec.select("attn")
    assert m.family == "external" and m.tensor.shape == (3, 1, 12, 5)
    logits = torch.einsum("bnd,sd->bns", x, ea.mk.weight)
    p = logits.softmax(dim=1)
    expected = p / (ea.eps + p.sum(dim=2, keepdim=True))
    torch.testing.assert_close(m.tensor[:, 0], expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(m.tensor.sum(-1), torch.ones(3, 1, 12), atol=1e-5, rtol=0)


def test_multihead_and_block_layouts():
    torch.manual_seed(0)
    mh = MultiHeadExternalAttention(16, num_heads=2, memory_size=6, expansion=2).eval()
    ref, got, rec = _run(mh, torch.randn(2, 9, 16))
    _same(ref, got)
    assert rec.select("attn")[0].tensor.shape == (2, 4, 9, 6)
    blk = ExternalAttentionBlock2d(8, memory_size=4).eval()
    ref, got, rec = _run(blk, torch.randn(2, 8, 3, 5))
    _same(ref, got)
    (m,) = rec.select("attn")
    assert m.tensor.shape == (2, 1, 15, 4) and m.query_hw == (3, 5)
    torch.testing.assert_close(m.tensor.sum(-1), torch.ones(2, 1, 15), atol=1e-5, rtol=0)


def test_lambda_layer_keys_content_lambda_and_kernels():
    torch.manual_seed(0)
    lam = LambdaLayer(8, dim_k=4, heads=2, r=3).eval()
    x = torch.randn(2, 8, 5, 6)
    ref, got, rec = _run(lam, x)
    _same(ref, got)
    keys = rec.select("keys")[0]
    assert keys.tensor.shape == (2, 1, 4, 30) and keys.query_hw == (5, 6)
    torch.testing.assert_close(keys.tensor.sum(-1), torch.ones(2, 1, 4))
    k = torch.einsum("bdxy,ed->bexy", x, lam.to_k.weight[:, :, 0, 0]).flatten(2).softmax(-1)
    torch.testing.assert_close(keys.tensor[:, 0], k, rtol=1e-5, atol=1e-6)
    v = lam.norm_v(lam.to_v(x)).flatten(2)  # (b, v, m), u = 1
    lc = rec.select("content_lambda")[0].tensor
    torch.testing.assert_close(lc, torch.einsum("bkm,bvm->bkv", k, v), rtol=1e-5, atol=1e-6)
    kern = rec.select("position_kernel")[0].tensor
    torch.testing.assert_close(kern, lam.pos_conv.weight[:, :, 0], rtol=0, atol=0)


@pytest.mark.parametrize("return_scores", [True, False])
def test_lavit_vanilla_and_less_attention(return_scores):
    torch.manual_seed(0)
    va = VanillaAttention(16, num_heads=2, sr_ratio=2).eval()
    la = LessAttention(16, num_heads=2, num_keys=4, num_queries=16, sr_ratio=2).eval()
    with torch.no_grad():
        la.theta_delta.normal_(0, 0.1)
        la.psi_delta.normal_(0, 0.1)
    x = torch.randn(2, 16, 16)
    bias = torch.randn(2, 2, 16, 4)
    ref, got, rec = _run(va, x, (4, 4), attn_bias=bias, return_scores=return_scores)
    _same(ref, got)
    (m,) = rec.select("attn")
    assert m.family == "vanilla" and m.tensor.shape == (2, 2, 16, 4)
    assert m.query_hw == (4, 4) and m.key_hw == (2, 2)
    _, scores = va(x, (4, 4), attn_bias=bias, return_scores=True)
    torch.testing.assert_close(m.tensor, scores.softmax(-1), rtol=1e-5, atol=1e-6)
    ref, got, rec = _run(la, x, scores, (4, 4))
    _same(ref, got)
    (m,) = rec.select("attn")
    s = torch.einsum("tnq,bhnm,tmk->bhqk", la.eye_queries + la.psi_delta, scores,
                     la.eye_keys + la.theta_delta)
    torch.testing.assert_close(m.tensor, s.softmax(-1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["vit_tiny_cifar", "lavit_tiny_cifar", "eamlp_cifar",
                                  "lambda_resnet26_cifar"])
def test_models_bitwise_unchanged_and_hooks_removed(name):
    torch.manual_seed(0)
    model = create_model(name).eval()
    x = torch.randn(2, 3, 32, 32)
    ref, got, rec = _run(model, x)
    assert torch.equal(ref, got)
    assert rec.select("attn") or rec.select("keys")
    assert all("map_hook" not in vars(m) for m in model.modules())
    with torch.no_grad():
        assert torch.equal(model(x), ref)


def test_capture_without_mixers_or_nested_is_refused():
    linear = torch.nn.Linear(2, 2)
    with pytest.raises(ValueError, match="no layer whose maps"), capture_maps(linear):
        pass
    sa = SelfAttention(8, num_heads=2)
    with capture_maps(sa), pytest.raises(ValueError, match="already being captured"), \
            capture_maps(sa):
        pass


def test_compile_without_capture_has_no_graph_break():
    torch.manual_seed(0)
    sa = SelfAttention(16, num_heads=2).eval()
    x = torch.randn(2, 5, 16)
    compiled = torch.compile(sa, backend="eager", fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), sa(x), rtol=0, atol=0)
