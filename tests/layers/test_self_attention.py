"""The self-attention baseline against softmax(Q K^T / sqrt(d/h)) V written out per head."""

from __future__ import annotations

import math

import pytest
import torch
from mixer_checks import assert_compiles, assert_round_trips

from beyond_attention.layers import SelfAttention


def self_attention_reference(x, layer):
    b, n, d = x.shape
    h, hd = layer.num_heads, layer.head_dim
    qkv = torch.einsum("bnd,ed->bne", x, layer.qkv.weight) + layer.qkv.bias
    q, k, v = qkv.split(d, dim=-1)
    outs, attns = [], []
    for i in range(h):
        sl = slice(i * hd, (i + 1) * hd)
        scores = torch.einsum("bnc,bmc->bnm", q[..., sl], k[..., sl]) / math.sqrt(hd)
        a = torch.exp(scores - scores.amax(-1, keepdim=True))
        a = a / a.sum(-1, keepdim=True)
        attns.append(a)
        outs.append(torch.einsum("bnm,bmc->bnc", a, v[..., sl]))
    out = torch.einsum("bne,de->bnd", torch.cat(outs, -1), layer.proj.weight) + layer.proj.bias
    return out, torch.stack(attns, dim=1)


def test_self_attention_matches_equation_on_both_paths():
    layer = SelfAttention(24, num_heads=3).double()
    x = torch.randn(2, 13, 24, dtype=torch.float64)
    ref_out, ref_attn = self_attention_reference(x, layer)
    torch.testing.assert_close(layer(x), ref_out, rtol=1e-6, atol=1e-6)
    out, attn = layer(x, return_attn=True)
    assert attn.shape == (2, 3, 13, 13)
    torch.testing.assert_close(out, ref_out, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(attn, ref_attn, rtol=1e-6, atol=1e-6)


def test_self_attention_fast_path_uses_sdpa(monkeypatch):
    calls = []
    original = torch.nn.functional.scaled_dot_product_attention

    def spy(*args, **kwargs):
        calls.append(args[0].shape)
        return original(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    layer = SelfAttention(16, num_heads=4)
    layer(torch.randn(2, 5, 16))
    assert calls == [torch.Size([2, 4, 5, 4])]
    layer(torch.randn(2, 5, 16), return_attn=True)
    assert len(calls) == 1


def test_self_attention_gradcheck_and_permutation_equivariance():
    layer = SelfAttention(8, num_heads=2).double()
    x = torch.randn(2, 5, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(layer, (x,), eps=1e-6, atol=1e-5)
    perm = torch.randperm(5)
    torch.testing.assert_close(layer(x[:, perm]), layer(x)[:, perm])


def test_self_attention_round_trips_and_compiles():
    layer = SelfAttention(16, num_heads=4)
    x = torch.randn(2, 7, 16)
    assert_round_trips(layer, x)
    assert_compiles(layer, x, backend="aot_eager")


def test_self_attention_bad_input():
    layer = SelfAttention(16, num_heads=4)
    with pytest.raises(ValueError, match="x must have shape"):
        layer(torch.randn(16, 4))
    with pytest.raises(ValueError, match="16 channels"):
        layer(torch.randn(2, 4, 12))
    with pytest.raises(ValueError, match="dim=10 must be divisible by num_heads=4"):
        SelfAttention(10, num_heads=4)
