"""Multi-head self-attention, the baseline every mixer here is measured against.

Vaswani et al. 2017, as used by ViT/DeiT:

    Q, K, V = x W_q, x W_k, x W_v                      (B, h, N, d/h) each
    A_h     = softmax(Q_h K_h^T / sqrt(d/h))           (B, h, N, N)
    out     = concat_h(A_h V_h) W_o                    (B, N, d)

The fast path calls ``torch.nn.functional.scaled_dot_product_attention`` (flash or
memory-efficient kernels on CUDA, a fused kernel on CPU, in float32 there for bfloat16 or
float16 inputs: :mod:`beyond_attention.layers.sdpa`) and never materialises ``A``;
``return_attn=True`` computes ``A`` explicitly, with the softmax in float32.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ._validate import check_divisible, check_tokens, upcast
from .sdpa import scaled_dot_product_attention


class SelfAttention(nn.Module):
    """Multi-head scaled dot-product self-attention on tokens.

    Args:
        dim: channels d of the tokens.
        num_heads: heads h; ``dim`` must be divisible by it.
        qkv_bias: bias on the fused Q/K/V projection.
        attn_drop: dropout on the attention probabilities (training only).
        proj_drop: dropout after the output projection.

    Shapes: ``x`` (B, N, d) -> (B, N, d); with ``return_attn=True`` also ``attn``
    (B, h, N, N), the softmax probabilities (before attention dropout). Under map capture
    the same probabilities are reported as ``"attn"`` (B, h, N, N); the fast path still
    computes the output, so capture does not change it.
    """

    map_hook: Callable[..., None] | None = None
    """Map capture (:func:`beyond_attention.viz.capture_maps` sets it per instance): when
    not ``None`` the forward also calls ``map_hook(name, tensor, **grids)``; off by default,
    and then nothing extra runs."""

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__()
        check_divisible(dim, num_heads, "dim", "num_heads")
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def _qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Project ``x`` (B, N, d) to Q, K, V, each (B, h, N, d/h)."""
        b, n, _ = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return qkv.unbind(0)

    def _merge_heads(self, out: torch.Tensor) -> torch.Tensor:
        """(B, h, N, d/h) -> projected (B, N, d)."""
        b, _, n, _ = out.shape
        out = out.transpose(1, 2).reshape(b, n, self.dim)
        return self.proj_drop(self.proj(out))

    def attention_scores(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """Pre-softmax scores ``Q K^T / sqrt(d/h)``, (B, h, N, N), at least float32."""
        return torch.matmul(upcast(q) * self.scale, upcast(k).transpose(-2, -1))

    def forward(
        self, x: torch.Tensor, return_attn: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        check_tokens(x, self.dim)
        q, k, v = self._qkv(x)
        if not return_attn:
            out = scaled_dot_product_attention(
                q, k, v, dropout_p=self.attn_drop.p if self.training else 0.0
            )
            if self.map_hook is not None:
                self.map_hook("attn", self.attention_scores(q, k).softmax(dim=-1))
            return self._merge_heads(out)
        attn = self.attention_scores(q, k).softmax(dim=-1)
        if self.map_hook is not None:
            self.map_hook("attn", attn)
        out = torch.matmul(self.attn_drop(attn).to(v.dtype), v)
        return self._merge_heads(out), attn.to(x.dtype)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_heads={self.num_heads}"
