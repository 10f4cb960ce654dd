"""Every layer and small model refuses integer input and empty batches with a clear error."""

from __future__ import annotations

import pytest
import torch

from beyond_attention import create_model, get_model_config, list_models
from beyond_attention.layers import (
    ExternalAttention,
    ExternalAttentionBlock2d,
    FeedForwardMixer,
    LambdaLayer,
    LambdaTokenMixer,
    MultiHeadExternalAttention,
    SelfAttention,
    TokenMixingMLP,
    VanillaAttention,
)
from beyond_attention.layers.patch_embed import PatchEmbed

TOKENS = (9, 16)
LAYERS = {
    "external_attention": (lambda: ExternalAttention(16, memory_size=8), TOKENS),
    "mhea": (lambda: MultiHeadExternalAttention(16, num_heads=2, memory_size=8), TOKENS),
    "ea_block2d": (lambda: ExternalAttentionBlock2d(8, memory_size=8), (8, 5, 5)),
    "lambda_local": (lambda: LambdaLayer(16, dim_k=4, heads=2, r=3), (16, 5, 5)),
    "lambda_global": (lambda: LambdaLayer(16, dim_k=4, heads=2, feat_size=5), (16, 5, 5)),
    "lambda_tokens": (lambda: LambdaTokenMixer(16, (3, 3), dim_k=4, heads=2, r=3), TOKENS),
    "self_attention": (lambda: SelfAttention(16, num_heads=2), TOKENS),
    "token_mlp": (lambda: TokenMixingMLP(9, 16, hidden=8), TOKENS),
    "feedforward": (lambda: FeedForwardMixer(9, 16), TOKENS),
    "vanilla_attention": (lambda: VanillaAttention(16, num_heads=2), TOKENS),
    "patch_embed": (lambda: PatchEmbed(8, 4, in_chans=3, embed_dim=16), (3, 8, 8)),
}
POINT_TASKS = ("pointcloud_classification", "pointcloud_part_segmentation")
POINT_SMALL = {"pct": {"samples": (32, 16), "k": 8}, "pct_ea": {"samples": (32, 16), "k": 8}}
SMALL_MODELS = [
    n for n in list_models()
    if get_model_config(n).task in POINT_TASKS or max(get_model_config(n).input_size[1:]) <= 32
]


def _small_model(name: str) -> tuple[torch.nn.Module, tuple[int, ...]]:
    """A small model and its per-sample input shape: (C, H, W) images, (3, 48) clouds."""
    config = get_model_config(name)
    if config.task in POINT_TASKS:
        model = create_model(name, num_classes=5, **POINT_SMALL.get(name, {}))
        return model.eval(), (config.input_size[0], 48)
    return create_model(name, num_classes=5).eval(), tuple(config.input_size)


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("name", sorted(LAYERS))
def test_layer_refuses_empty_batch(name: str, train: bool) -> None:
    build, shape = LAYERS[name]
    layer = build().train(train)
    layer(torch.randn(1, *shape))  # one sample is fine
    with pytest.raises(ValueError, match=r"x must hold at least one sample.*empty batch"):
        layer(torch.randn(0, *shape))


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int64, torch.bool])
@pytest.mark.parametrize("name", sorted(LAYERS))
def test_layer_refuses_integer_input(name: str, dtype: torch.dtype) -> None:
    build, shape = LAYERS[name]
    x = torch.randint(0, 2, (2, *shape)).to(dtype)
    with pytest.raises(TypeError, match=rf"x must be a floating-point tensor.*{dtype}"):
        build()(x)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_layer_accepts_other_floats(dtype: torch.dtype) -> None:
    layer = SelfAttention(16, num_heads=2).to(dtype)
    assert layer(torch.randn(2, *TOKENS, dtype=dtype)).dtype == dtype


@pytest.mark.parametrize("name", SMALL_MODELS)
def test_model_refuses_uint8(name: str) -> None:
    model, shape = _small_model(name)
    with pytest.raises(TypeError, match=r"floating-point tensor.*torch.uint8"):
        model(torch.zeros(2, *shape, dtype=torch.uint8))


@pytest.mark.parametrize("name", SMALL_MODELS)
def test_model_refuses_empty_batch(name: str) -> None:
    model, shape = _small_model(name)
    with pytest.raises(ValueError, match=r"at least one sample"):
        model(torch.zeros(0, *shape))
