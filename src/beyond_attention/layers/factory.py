"""Create any token mixer by name, so a model swaps its mixer with one argument.

Every mixer returned here maps tokens (B, N, C) -> (B, N, C). Mixers that need the token
layout say so: ``lambda`` needs the grid (H, W) with N == H * W (no class token), the
token-axis MLPs need the token count N. ``less`` carries the previous layer's attention:
it is a :class:`~beyond_attention.layers.carried.CarriesAttention`,
``forward(x, prev_scores) -> (out, scores)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from einops import rearrange
from torch import nn

from ._validate import check_tokens
from .carried import CarriesAttention
from .external_attention import ExternalAttention, MultiHeadExternalAttention
from .self_attention import SelfAttention
from .token_mlp import FeedForwardMixer, TokenMixingMLP


class LambdaTokenMixer(nn.Module):
    """A :class:`~beyond_attention.layers.lambda_layer.LambdaLayer` on tokens of a grid.

    Shapes: ``x`` (B, H*W, C) -> (B, H*W, C); tokens are in row-major order of the grid.
    """

    def __init__(self, dim: int, grid_size: tuple[int, int], **kwargs: Any) -> None:
        super().__init__()
        from .lambda_layer import LambdaLayer

        self.dim = dim
        self.grid_size = tuple(grid_size)
        self.lambda_layer = LambdaLayer(dim, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_tokens(x, self.dim)
        h, w = self.grid_size
        if x.shape[1] != h * w:
            raise ValueError(
                f"x must have grid_size={self.grid_size} -> {h * w} tokens (B, H*W, C), "
                f"got shape {tuple(x.shape)}"
            )
        y = self.lambda_layer(rearrange(x, "b (h w) c -> b c h w", h=h, w=w))
        return rearrange(y, "b c h w -> b (h w) c")


class LessAttentionMixer(CarriesAttention):
    """LaViT's attention on plain tokens, for models that stack identical blocks (a ViT).

    LaViT (Zhang et al., CVPR 2024, arXiv:2406.00427), Sec. 3.2, on a single-scale token
    stack.

    The first ``num_vanilla`` layers of the stack are vanilla attention
    (:class:`~beyond_attention.layers.less_attention.VanillaAttention`, full self-attention
    that also returns its pre-softmax scores); every later layer is a
    :class:`~beyond_attention.layers.less_attention.LessAttention` layer that transforms the
    scores of the layer before it instead of computing ``Q K^T``. The mixer carries the
    scores from block to block (it is a
    :class:`~beyond_attention.layers.carried.CarriesAttention`)::

        forward(x, prev_scores) -> (out, scores)     x (B, N, C), scores (B, h, N, N)

    A vanilla layer ignores ``prev_scores`` (it may be ``None``); a less-attention layer
    requires the previous layer's scores. The query transform Psi (N x N) is used when
    ``query_transform`` is true (default: when N <= 256, where it is affordable).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        num_tokens: int,
        vanilla: bool,
        query_transform: bool | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        from .less_attention import LessAttention, VanillaAttention

        self.dim = dim
        self.vanilla = vanilla
        if vanilla:
            self.attn = VanillaAttention(dim, num_heads=num_heads, **kwargs)
        else:
            if query_transform is None:
                query_transform = num_tokens <= 256
            self.attn = LessAttention(
                dim,
                num_heads=num_heads,
                num_keys=num_tokens,
                num_queries=num_tokens if query_transform else None,
                **kwargs,
            )

    def forward(
        self, x: torch.Tensor, prev_scores: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.vanilla:
            return self.attn(x)
        if prev_scores is None:
            raise ValueError(
                "prev_scores must hold the previous layer's scores (B, h, N, N): a "
                "less-attention layer has no Q K^T of its own; put a vanilla layer first"
            )
        return self.attn(x, prev_scores)

    def extra_repr(self) -> str:
        return f"vanilla={self.vanilla}"


def _require(value: Any, arg: str, mixer: str) -> Any:
    if value is None:
        raise ValueError(f"mixer {mixer!r} needs {arg}=...")
    return value


def _self(dim, num_heads, num_tokens, grid_size, **kw):
    return SelfAttention(dim, num_heads=num_heads or 8, **kw)


def _external(dim, num_heads, num_tokens, grid_size, **kw):
    return ExternalAttention(dim, **kw)


def _external_mh(dim, num_heads, num_tokens, grid_size, **kw):
    return MultiHeadExternalAttention(dim, num_heads=num_heads or 8, **kw)


def _lambda(dim, num_heads, num_tokens, grid_size, **kw):
    grid = _require(grid_size, "grid_size", "lambda")
    if num_heads is not None:
        kw.setdefault("heads", num_heads)
    if "r" not in kw and "feat_size" not in kw:
        kw["r"] = 23
    return LambdaTokenMixer(dim, grid, **kw)


def _less(dim, num_heads, num_tokens, grid_size, layer_index=0, num_vanilla=1, **kw):
    n = _require(num_tokens, "num_tokens", "less")
    vanilla = layer_index < num_vanilla
    return LessAttentionMixer(dim, num_heads or 8, n, vanilla=vanilla, **kw)


def _mlp_mixer(dim, num_heads, num_tokens, grid_size, **kw):
    n = _require(num_tokens, "num_tokens", "mlp_mixer")
    kw.setdefault("hidden", dim // 2)
    return TokenMixingMLP(n, dim, **kw)


def _feedforward(dim, num_heads, num_tokens, grid_size, **kw):
    return FeedForwardMixer(_require(num_tokens, "num_tokens", "feedforward"), dim, **kw)


_MIXERS: dict[str, Callable[..., nn.Module]] = {
    "self": _self,
    "external": _external,
    "external_mh": _external_mh,
    "lambda": _lambda,
    "less": _less,
    "mlp_mixer": _mlp_mixer,
    "feedforward": _feedforward,
}

MIXER_NAMES: tuple[str, ...] = tuple(_MIXERS)


def create_mixer(
    name: str,
    dim: int,
    *,
    num_heads: int | None = None,
    num_tokens: int | None = None,
    grid_size: tuple[int, int] | None = None,
    layer_index: int = 0,
    **kwargs: Any,
) -> nn.Module:
    """Build the token mixer ``name`` for width ``dim``.

    Args:
        name: one of :data:`MIXER_NAMES`.
        dim: channels C of the tokens.
        num_heads: heads for the mixers that have them (``None``: each mixer's paper default:
            8 for self-attention and multi-head EA, 4 for the lambda layer).
        num_tokens: N, needed by the token-axis MLPs (``mlp_mixer``, ``feedforward``).
        grid_size: (H, W) of the token grid, needed by ``lambda`` (N must equal H * W).
        layer_index: the block's position in its stack; only ``less`` uses it: blocks before
            ``num_vanilla`` (a ``less`` keyword, default 1) are vanilla attention, later ones
            less-attention layers (see :class:`LessAttentionMixer`). Others ignore it.
        **kwargs: passed to the mixer's constructor (``memory_size``, ``r``, ...).

    Returns a module mapping (B, N, C) -> (B, N, C).
    """
    if name not in _MIXERS:
        raise ValueError(f"unknown mixer name {name!r}; expected one of {', '.join(_MIXERS)}")
    if name == "less":
        kwargs["layer_index"] = layer_index
    return _MIXERS[name](dim, num_heads, num_tokens, grid_size, **kwargs)
