"""The bench's LaViT adapters follow the carried-attention contract (arXiv:2406.00427)."""

from __future__ import annotations

import pytest
import torch

from beyond_attention.bench.contenders import (
    CarriedLessMixer,
    ReducedLessAttention,
    ReducedSelfAttention,
    ReducedVanillaAttention,
    make_inputs,
    mixer_entries,
    previous_attention,
    reduced_key_grid,
)
from beyond_attention.bench.settings import MixerSettings
from beyond_attention.layers.carried import CarriesAttention

GRID = (8, 8)


def test_reduced_key_grid_is_about_seven_per_side():
    assert reduced_key_grid((56, 56)) == (8, (7, 7))
    assert reduced_key_grid((14, 20)) == (2, (7, 10))
    assert reduced_key_grid((4, 4)) == (1, (4, 4))


def test_vanilla_adapter_scores_follow_the_formula():
    torch.manual_seed(0)
    layer = ReducedVanillaAttention(16, 2, (14, 14)).double()
    assert isinstance(layer, CarriesAttention)
    x = torch.randn(2, 196, 16, dtype=torch.float64)
    out, scores = layer(x, None)
    a = layer.attn
    # S = Q K^T / sqrt(d_h) on the spatially reduced keys, O = softmax(S) V W_o + b_o
    q = (x @ a.q.weight.t() + a.q.bias).view(2, 196, 2, 8).transpose(1, 2)
    xr, _ = a.reduce(x, (14, 14))
    kv = (xr @ a.kv.weight.t() + a.kv.bias).view(2, -1, 2, 2, 8)
    k, v = kv[:, :, 0].transpose(1, 2), kv[:, :, 1].transpose(1, 2)
    ref_s = torch.einsum("bhnd,bhmd->bhnm", q, k) / 8**0.5
    ref = torch.einsum("bhnm,bhmd->bnhd", ref_s.softmax(-1), v).reshape(2, 196, 16)
    ref = ref @ a.proj.weight.t() + a.proj.bias
    assert scores.shape == (2, 2, 196, 49)
    torch.testing.assert_close(scores, ref_s, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-9)
    # the baseline without scores is the same layer on the fused kernel
    sdpa = ReducedSelfAttention(16, 2, (14, 14)).double()
    sdpa.load_state_dict(layer.state_dict())
    assert not isinstance(sdpa, CarriesAttention)
    torch.testing.assert_close(sdpa(x), ref, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("cls", [ReducedLessAttention, CarriedLessMixer])
def test_less_adapters_carry_attention(cls):
    torch.manual_seed(0)
    layer = cls(16, 2, GRID)
    assert isinstance(layer, CarriesAttention)
    x = torch.randn(2, 64, 16, requires_grad=True)
    prev = previous_attention(layer, x.detach())
    out, scores = layer(x, prev)  # positional, as every caller does
    assert out.shape == x.shape and scores.shape == prev.shape
    assert scores.dtype == torch.float32
    # the scores it returns are its transform of the previous ones: other input, other scores
    _, scores2 = layer(x, prev + 1.0)
    assert not torch.allclose(scores, scores2)
    out.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    with pytest.raises(ValueError, match="prev_scores"):
        layer(x, None)


def test_make_inputs_hands_scores_only_to_carried_mixers():
    s = MixerSettings(dim=16, heads=2)
    gen = torch.Generator().manual_seed(0)
    entries = mixer_entries()
    for name, carried in (
        ("less", True),
        ("less_sr", True),
        ("vanilla_sr", False),
        ("self", False),
    ):
        module = entries[name].build(s, GRID)
        inputs = make_inputs(module, 1, GRID, s, gen)
        assert isinstance(module, CarriesAttention) is carried
        assert len(inputs) == (2 if carried else 1)
        assert inputs[0].shape == (1, 64, 16) and inputs[0].requires_grad
        if carried:
            assert inputs[1].shape[:3] == (1, 2, 64) and not inputs[1].requires_grad
