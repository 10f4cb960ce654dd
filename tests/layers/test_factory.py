"""create_mixer: every name builds a (B, N, C) -> (B, N, C) mixer; adapters match their layers."""

from __future__ import annotations

import pytest
import torch
from einops import rearrange

from beyond_attention.layers import (
    MIXER_NAMES,
    CarriesAttention,
    carries_attention,
    create_mixer,
    run_carried,
)
from beyond_attention.layers.factory import LambdaTokenMixer, LessAttentionMixer
from beyond_attention.layers.less_attention import LessAttention, VanillaAttention


def run_mixer(mixer, x, state=None):
    if isinstance(mixer, CarriesAttention):
        return mixer(x, state)[0]
    return mixer(x)


def test_mixer_names_are_the_documented_ones():
    assert set(MIXER_NAMES) == {
        "self", "external", "external_mh", "lambda", "less", "mlp_mixer", "feedforward"
    }


@pytest.mark.parametrize("name", MIXER_NAMES)
def test_every_mixer_maps_tokens_to_tokens_and_trains(name):
    torch.manual_seed(0)
    grid = (4, 5)
    x = torch.randn(2, 20, 32, requires_grad=True)
    mixer = create_mixer(name, 32, num_heads=4, num_tokens=20, grid_size=grid, layer_index=0)
    out = run_mixer(mixer, x)
    assert out.shape == x.shape and torch.isfinite(out).all()
    out.square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is not None for p in mixer.parameters() if p.requires_grad)


def test_less_mixer_is_vanilla_first_then_less_attention():
    first = create_mixer("less", 16, num_heads=2, num_tokens=9, layer_index=0)
    later = create_mixer("less", 16, num_heads=2, num_tokens=9, layer_index=1)
    wide = create_mixer("less", 16, num_heads=2, num_tokens=300, layer_index=2)
    assert isinstance(first, LessAttentionMixer) and isinstance(first, CarriesAttention)
    assert isinstance(first.attn, VanillaAttention)
    assert isinstance(later.attn, LessAttention) and later.attn.num_queries == 9
    assert wide.attn.num_queries is None  # N x N query transform only where affordable
    assert isinstance(
        create_mixer("less", 16, num_heads=2, num_tokens=9, layer_index=1, num_vanilla=2).attn,
        VanillaAttention,
    )
    x = torch.randn(2, 9, 16)
    out, scores = first(x)
    assert scores.shape == (2, 2, 9, 9)
    out2, scores2 = later(x, scores)
    torch.testing.assert_close(scores2, scores)  # fresh transforms are the identity
    with pytest.raises(ValueError, match="prev_scores"):
        later(x, None)


def test_lambda_token_mixer_is_the_lambda_layer_on_the_grid():
    torch.manual_seed(0)
    mixer = create_mixer("lambda", 16, grid_size=(3, 4), r=3).eval()
    assert isinstance(mixer, LambdaTokenMixer)
    x = torch.randn(2, 12, 16)
    image = rearrange(x, "b (h w) c -> b c h w", h=3, w=4)
    expected = rearrange(mixer.lambda_layer(image), "b c h w -> b (h w) c")
    torch.testing.assert_close(mixer(x), expected, rtol=0, atol=0)
    with pytest.raises(ValueError, match="grid_size"):
        mixer(torch.randn(2, 13, 16))


@pytest.mark.parametrize(
    "name, kwargs, match",
    [
        ("attention", {}, "unknown mixer name 'attention'"),
        ("lambda", {}, "needs grid_size"),
        ("mlp_mixer", {}, "needs num_tokens"),
        ("feedforward", {}, "needs num_tokens"),
        ("less", {}, "needs num_tokens"),
    ],
)
def test_missing_layout_is_a_clear_error(name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        create_mixer(name, 16, **kwargs)


def test_mixer_options_reach_the_layer():
    assert create_mixer("external", 16, memory_size=12).memory_size == 12
    assert create_mixer("external_mh", 16, num_heads=2).num_heads == 8  # 4x expansion
    assert create_mixer("self", 16, num_heads=2).num_heads == 2
    assert create_mixer("mlp_mixer", 16, num_tokens=5).fc1.out_features == 8


def test_run_carried_threads_the_scores_through_a_stack():
    """run_carried is the chaining a model does: each carrying mixer gets the scores of the
    one before it; a plain mixer in between leaves them as they are."""
    torch.manual_seed(0)
    stack = [create_mixer("less", 16, num_heads=2, num_tokens=9, layer_index=i) for i in range(3)]
    with torch.no_grad():
        for mixer in stack[1:]:  # move the transforms away from the identity
            for p in mixer.parameters():
                p.add_(0.05 * torch.randn_like(p))
    plain = create_mixer("external", 16, memory_size=4)
    x = torch.randn(2, 9, 16)
    out0, s0 = stack[0](x)
    out1, s1 = stack[1](out0, s0)
    mid = plain(out1)
    out2, s2 = stack[2](mid, s1)
    got, scores = run_carried([stack[0], stack[1], plain, stack[2]], x)
    torch.testing.assert_close(got, out2, rtol=0, atol=0)
    torch.testing.assert_close(scores, s2, rtol=0, atol=0)
    assert not torch.allclose(s2, s0)
    same, untouched = run_carried([plain], x, prev_scores=s0)
    assert untouched is s0
    torch.testing.assert_close(same, plain(x))
    with pytest.raises(ValueError, match="prev_scores"):
        run_carried([stack[1]], x)
    assert carries_attention(stack[0]) and not carries_attention(plain)
