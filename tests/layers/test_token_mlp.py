"""MLP-Mixer's token MLP and the feed-forward-only ViT's token MLP against their equations."""

from __future__ import annotations

import pytest
import torch
from mixer_checks import assert_compiles, assert_round_trips

from beyond_attention.layers import FeedForwardMixer, TokenMixingMLP


def gelu(x):
    return 0.5 * x * (1 + torch.erf(x / 2**0.5))


def token_mlp_reference(x, fc1, fc2, norm=None):
    y = x.transpose(1, 2)  # (B, C, N): the MLP acts along the tokens of each channel
    if norm is not None:
        mu = y.mean(-1, keepdim=True)
        var = y.var(-1, unbiased=False, keepdim=True)
        y = (y - mu) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias
    hidden = gelu(torch.einsum("bcn,hn->bch", y, fc1.weight) + fc1.bias)
    return (torch.einsum("bch,nh->bcn", hidden, fc2.weight) + fc2.bias).transpose(1, 2)


def test_token_mixing_mlp_matches_equation():
    layer = TokenMixingMLP(num_tokens=9, dim=6, hidden=5).double()
    x = torch.randn(2, 9, 6, dtype=torch.float64)
    torch.testing.assert_close(layer(x), token_mlp_reference(x, layer.fc1, layer.fc2))
    assert layer.fc1.weight.shape == (5, 9)


def test_feedforward_mixer_matches_equation():
    layer = FeedForwardMixer(num_tokens=9, dim=6, mlp_ratio=2.0).double()
    with torch.no_grad():
        layer.norm.weight.uniform_(0.5, 1.5)
        layer.norm.bias.uniform_(-0.5, 0.5)
    x = torch.randn(2, 9, 6, dtype=torch.float64)
    ref = token_mlp_reference(x, layer.fc1, layer.fc2, norm=layer.norm)
    torch.testing.assert_close(layer(x), ref)
    assert layer.fc1.weight.shape == (18, 9)


@pytest.mark.parametrize(
    "make", [lambda: TokenMixingMLP(7, 4, 6), lambda: FeedForwardMixer(7, 4)], ids=["mlp", "ff"]
)
def test_token_mlps_mix_tokens_gradcheck_and_round_trip(make):
    layer = make().double()
    x = torch.randn(2, 7, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(layer, (x,), eps=1e-6, atol=1e-5)
    perm = torch.tensor([1, 0, 2, 3, 4, 5, 6])
    assert not torch.allclose(layer(x[:, perm]), layer(x)[:, perm])  # positions matter
    assert_round_trips(make(), torch.randn(2, 7, 4))
    assert_compiles(make(), torch.randn(2, 7, 4), backend="aot_eager")


@pytest.mark.parametrize("cls", [TokenMixingMLP, FeedForwardMixer])
def test_token_mlps_reject_other_token_counts(cls):
    layer = cls(7, 4, 6) if cls is TokenMixingMLP else cls(7, 4)
    with pytest.raises(ValueError, match="num_tokens=7"):
        layer(torch.randn(2, 8, 4))
    with pytest.raises(ValueError, match="4 channels"):
        layer(torch.randn(2, 7, 5))
