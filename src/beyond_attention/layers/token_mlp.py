"""Mixers without attention that the papers compare with: MLPs over the token axis.

Both map (B, N, C) -> (B, N, C) with weights over a fixed number of tokens N, so a model
using them is tied to one input size.
"""

from __future__ import annotations

import torch
from torch import nn

from ._validate import check_tokens


def _check_token_count(x: torch.Tensor, num_tokens: int) -> None:
    if x.shape[1] != num_tokens:
        raise ValueError(
            f"x must have num_tokens={num_tokens} tokens in dimension 1 (B, N, C), "
            f"got shape {tuple(x.shape)}; this mixer's weights are tied to the token count"
        )


class TokenMixingMLP(nn.Module):
    """The token-mixing MLP of MLP-Mixer (Tolstikhin et al. 2021, arXiv 2105.01601).

    The same two-layer MLP is applied to every channel, across the tokens::

        out[:, :, c] = W_2 GELU(W_1 x[:, :, c] + b_1) + b_2      W_1: (hidden, N)

    Args:
        num_tokens: N, the fixed token count.
        dim: C, checked on the input.
        hidden: D_S, the hidden width (MLP-Mixer uses C / 2 in all its configurations).
        drop: dropout after the activation and after the output.

    Shapes: ``x`` (B, N, C) -> (B, N, C).
    """

    def __init__(self, num_tokens: int, dim: int, hidden: int, drop: float = 0.0) -> None:
        super().__init__()
        self.num_tokens = num_tokens
        self.dim = dim
        self.fc1 = nn.Linear(num_tokens, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, num_tokens)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_tokens(x, self.dim)
        _check_token_count(x, self.num_tokens)
        y = x.transpose(1, 2)  # (B, C, N)
        y = self.drop(self.fc2(self.drop(self.act(self.fc1(y)))))
        return y.transpose(1, 2)

    def extra_repr(self) -> str:
        return f"num_tokens={self.num_tokens}, dim={self.dim}"


class FeedForwardMixer(nn.Module):
    """The token MLP of the feed-forward-only ViT (Melas-Kyriazi 2021, arXiv 2105.02723,
    "Do You Even Need Attention?").

    The attention layer of a ViT block is replaced by a feed-forward layer over the patch
    axis, with its LayerNorm taken over the tokens as in the author's code::

        out[:, :, c] = W_2 GELU(W_1 LN_N(x[:, :, c]) + b_1) + b_2     W_1: (ratio * N, N)

    Args:
        num_tokens: N, the fixed token count.
        dim: C, checked on the input.
        mlp_ratio: hidden width as a multiple of N (author: 4).
        norm_tokens: apply the LayerNorm over the token axis (author's code: yes).
        drop: dropout after the activation and after the output.

    Shapes: ``x`` (B, N, C) -> (B, N, C).
    """

    def __init__(
        self,
        num_tokens: int,
        dim: int,
        mlp_ratio: float = 4.0,
        norm_tokens: bool = True,
        drop: float = 0.0,
    ) -> None:
        super().__init__()
        self.num_tokens = num_tokens
        self.dim = dim
        hidden = int(num_tokens * mlp_ratio)
        self.norm = nn.LayerNorm(num_tokens) if norm_tokens else nn.Identity()
        self.fc1 = nn.Linear(num_tokens, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, num_tokens)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_tokens(x, self.dim)
        _check_token_count(x, self.num_tokens)
        y = self.norm(x.transpose(1, 2))  # (B, C, N)
        y = self.drop(self.fc2(self.drop(self.act(self.fc1(y)))))
        return y.transpose(1, 2)

    def extra_repr(self) -> str:
        return f"num_tokens={self.num_tokens}, dim={self.dim}"
