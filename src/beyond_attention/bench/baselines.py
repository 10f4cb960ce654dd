"""Reference mixers the benchmark measures beside the library's own.

- :class:`NaiveSelfAttention`: self-attention written as the textbook
  ``softmax(Q K^T / sqrt(d/h)) V``, materialising the (B, h, N, N) attention matrix, the
  way most vision code written before fused kernels does it.
- :class:`BareGemms`: the two matrix products of external attention and nothing else,
  ``(x M_k^T) M_v^T``: the floor no external-attention implementation can go below.
- :class:`PeerLambdaTokens`: ``lambda_networks.LambdaLayer`` (the widely used open-source
  lambda layer, an optional extra) on tokens, for a side-by-side comparison.
"""

from __future__ import annotations

import importlib.util
import warnings

import torch
from einops import rearrange
from torch import nn

from ..layers._validate import check_tokens
from ..layers.self_attention import SelfAttention


class NaiveSelfAttention(SelfAttention):
    """Multi-head self-attention computed explicitly, without a fused kernel.

    Same parameters as :class:`~beyond_attention.layers.self_attention.SelfAttention`::

        A   = softmax(Q K^T / sqrt(d/h))     (B, h, N, N), materialised, float32 softmax
        out = concat_h(A V) W_o              (B, N, d)

    Shapes: ``x`` (B, N, d) -> (B, N, d).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        check_tokens(x, self.dim)
        q, k, v = self._qkv(x)
        attn = self.attention_scores(q, k).softmax(dim=-1)
        return self._merge_heads(torch.matmul(self.attn_drop(attn).to(v.dtype), v))


class BareGemms(nn.Module):
    """The two products of external attention without its normalisation: its floor.

    ``out = (x M_k^T) M_v^T`` with ``M_k``, ``M_v`` bias-free linear maps d -> S -> d,
    exactly the matrix products of :class:`~beyond_attention.layers.ExternalAttention`.

    Shapes: ``x`` (B, N, d) -> (B, N, d).
    """

    def __init__(self, dim: int, memory_size: int = 64) -> None:
        super().__init__()
        self.dim = dim
        self.mk = nn.Linear(dim, memory_size, bias=False)
        self.mv = nn.Linear(memory_size, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mv(self.mk(x))


def peer_lambda_available() -> bool:
    """Whether the optional ``lambda-networks`` package (extra ``peers``) is installed."""
    return importlib.util.find_spec("lambda_networks") is not None


class PeerLambdaTokens(nn.Module):
    """``lambda_networks.LambdaLayer`` on the tokens of a square grid.

    The peer takes (B, C, H, W) and supports square maps only; this wrapper does the same
    token <-> map rearrangement as the library's lambda token mixer, so the two compare
    like for like.

    Args:
        dim: channels C.
        grid_size: (H, W), H == W.
        dim_k, heads, dim_u: as in the library's lambda layer.
        r: local context size (the lambda convolution), or None for global positions
            over the whole map (the peer then gathers an (N, N, k, u) table).

    Shapes: ``x`` (B, H*W, C) -> (B, H*W, C).
    """

    def __init__(
        self,
        dim: int,
        grid_size: tuple[int, int],
        dim_k: int = 16,
        heads: int = 4,
        dim_u: int = 1,
        r: int | None = 23,
    ) -> None:
        super().__init__()
        from lambda_networks import LambdaLayer as PeerLambdaLayer

        h, w = grid_size
        if h != w:
            raise ValueError(f"grid_size must be square for lambda_networks, got {grid_size}")
        self.dim = dim
        self.grid_size = (h, w)
        kwargs = {"r": r} if r is not None else {"n": h}
        with warnings.catch_warnings():  # the peer calls torch.meshgrid without indexing=
            warnings.filterwarnings("ignore", message=".*meshgrid.*")
            self.layer = PeerLambdaLayer(dim, dim_k=dim_k, heads=heads, dim_u=dim_u, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_tokens(x, self.dim)
        h, w = self.grid_size
        y = self.layer(rearrange(x, "b (h w) c -> b c h w", h=h, w=w))
        return rearrange(y, "b c h w -> b (h w) c")
