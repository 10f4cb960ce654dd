"""External attention (Guo, Liu, Mu, Hu 2021, arXiv 2105.02358).

Self-attention relates every token to every other token of the same sample. External
attention relates every token to ``S`` slots of two small learnable memories ``M_k, M_v``
(S x d) shared by the whole dataset, so its cost is linear in the number of tokens:

    A   = x M_k^T                         (B, N, S)      paper Alg. 1, ``mk``
    A   = softmax(A, over N)                              per memory slot
    A   = A / (eps + sum_S A)                             per token: "double normalisation"
    out = A M_v                           (B, N, d)      ``mv``

This module holds the single-head layer (the paper's Algorithm 1), the multi-head layer
of EAMLP (the paper's multi-head external attention, as in the authors' code) and the
convolutional EA block of the EANet segmentation head (the authors' code).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
from torch import nn

from ._validate import check_divisible, check_image, check_tokens, upcast
from .norms import BatchNorm2d

Norm = Literal["double", "softmax"]


class _DoubleNormalize(torch.autograd.Function):
    """Softmax over the token axis then L1 over the slot axis, with a hand-written backward.

    Forward: ``P = softmax(L, token_dim)``, ``r = eps + sum_slot P``, ``A = P / r`` (the
    division in place, so one (B, N, S) buffer is allocated instead of two).
    Backward from ``A`` and ``r`` alone (autograd would also keep ``P``)::

        dP = (dA - sum_slot(dA * A)) / r
        dL = P * (dP - sum_token(dP * P)),      P = A * r
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, token_dim: int, slot_dim: int, eps: float):
        attn = upcast(logits).softmax(dim=token_dim)
        denom = attn.sum(dim=slot_dim, keepdim=True).add_(eps)
        attn = attn.div_(denom)
        ctx.save_for_backward(attn, denom)
        ctx.token_dim, ctx.slot_dim = token_dim, slot_dim
        ctx.logits_dtype = logits.dtype
        return attn

    @staticmethod
    def backward(ctx, grad_attn: torch.Tensor):
        attn, denom = ctx.saved_tensors
        token_dim, slot_dim = ctx.token_dim, ctx.slot_dim
        grad_attn = grad_attn.to(attn.dtype)
        grad_p = (grad_attn - (grad_attn * attn).sum(dim=slot_dim, keepdim=True)).div_(denom)
        p = attn * denom
        grad_logits = p.mul_(grad_p - (grad_p * p).sum(dim=token_dim, keepdim=True))
        return grad_logits.to(ctx.logits_dtype), None, None, None


def double_normalize(
    logits: torch.Tensor, token_dim: int, slot_dim: int, eps: float
) -> torch.Tensor:
    """The paper's double normalisation of slot logits.

    ``softmax`` over the token axis ``token_dim`` (each memory slot distributes one unit of
    attention over the tokens), then L1 normalisation over the slot axis ``slot_dim``
    (each token's weights over the slots sum to 1, up to ``eps``)::

        A = P / (eps + sum_slot P),     P = softmax(logits, token_dim)

    Half-precision logits are upcast to float32 (the result stays float32); float32 and
    float64 keep their dtype. The backward is hand-written so only ``A`` and the (B, N)
    denominators are saved for it.
    """
    if torch.onnx.is_in_onnx_export() or torch.compiler.is_exporting():
        # Export traces the same formula in plain ops (no autograd.Function).
        attn = upcast(logits).softmax(dim=token_dim)
        return attn / (attn.sum(dim=slot_dim, keepdim=True) + eps)
    return _DoubleNormalize.apply(logits, token_dim, slot_dim, eps)


class ExternalAttention(nn.Module):
    """Single-head external attention on tokens (Guo et al., arXiv:2105.02358, Algorithm 1).

    Args:
        dim: channels d of the tokens.
        memory_size: number of memory slots S (paper default 64).
        norm: ``"double"`` (the paper's softmax over tokens then L1 over slots) or
            ``"softmax"`` (the documented variant: one softmax over the slots per token,
            which the authors report costs 0.1-0.3 points).
        eps: added to the L1 denominator of the double normalisation.

    Attributes:
        mk: ``Linear(dim, memory_size, bias=False)``, the key memory M_k (S x d).
        mv: ``Linear(memory_size, dim, bias=False)``, the value memory M_v (S x d).

    Shapes: ``x`` (B, N, d) -> (B, N, d); with ``return_attn=True`` also ``attn`` (B, N, S).
    With ``norm="double"`` each token's attention sums to 1 over S (up to eps), and a token's
    output depends on every token of its sample through the softmax over N. Under map
    capture ``attn`` is reported as ``"attn"`` (B, 1, N, S): one head, tokens as queries,
    slots as keys.
    """

    map_hook: Callable[..., None] | None = None
    """Map capture (:func:`beyond_attention.viz.capture_maps` sets it per instance): when
    not ``None`` the forward also calls ``map_hook(name, tensor, **grids)``; off by default,
    and then nothing extra runs."""

    def __init__(
        self, dim: int, memory_size: int = 64, norm: Norm = "double", eps: float = 1e-6
    ) -> None:
        super().__init__()
        if norm not in ("double", "softmax"):
            raise ValueError(f"norm must be 'double' or 'softmax', got {norm!r}")
        if memory_size <= 0:
            raise ValueError(f"memory_size must be positive, got {memory_size}")
        self.dim = dim
        self.memory_size = memory_size
        self.norm = norm
        self.eps = eps
        self.mk = nn.Linear(dim, memory_size, bias=False)
        self.mv = nn.Linear(memory_size, dim, bias=False)

    def forward(
        self, x: torch.Tensor, return_attn: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        check_tokens(x, self.dim)
        logits = self.mk(x)  # (B, N, S)
        if self.norm == "double":
            attn = double_normalize(logits, token_dim=1, slot_dim=2, eps=self.eps)
        else:
            attn = upcast(logits).softmax(dim=-1)
        attn = attn.to(x.dtype)
        if self.map_hook is not None:
            self.map_hook("attn", attn.unsqueeze(1))
        out = self.mv(attn)
        return (out, attn) if return_attn else out

    def extra_repr(self) -> str:
        return f"dim={self.dim}, memory_size={self.memory_size}, norm={self.norm!r}"


class MultiHeadExternalAttention(nn.Module):
    """Multi-head external attention as used in EAMLP (Guo et al., arXiv:2105.02358;
    the authors' code).

    The input is expanded ``expansion`` times and split into ``expansion * num_heads`` heads
    of ``dim // num_heads`` channels; one pair of memories is shared by all heads::

        q    = x W_q + b_q                          (B, N, e*d) -> (B, e*h, N, d/h)
        A    = q M_k^T + b_k                        (B, e*h, N, S)
        A    = softmax(A, over N); A = A / (eps + sum_S A)
        out  = merge_heads(dropout(A) M_v + b_v) W_o + b_o     (B, N, d)

    Args:
        dim: channels d; divisible by ``num_heads``.
        num_heads: h (the model's head count; the layer runs ``expansion * h`` heads).
        memory_size: S, slots of the shared memories (authors: 64).
        expansion: e, the width expansion of the query projection (authors: 4).
        qkv_bias: bias on the query projection.
        attn_drop: dropout on the normalised attention.
        proj_drop: dropout after the output projection.
        eps: L1 denominator epsilon (authors: 1e-9; the normalisation runs in float32).

    Shapes: ``x`` (B, N, d) -> (B, N, d); with ``return_attn=True`` also ``attn``
    (B, e*h, N, S), also reported as ``"attn"`` under map capture.
    """

    map_hook: Callable[..., None] | None = None
    """Map capture (:func:`beyond_attention.viz.capture_maps` sets it per instance): when
    not ``None`` the forward also calls ``map_hook(name, tensor, **grids)``; off by default,
    and then nothing extra runs."""

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        memory_size: int = 64,
        expansion: int = 4,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        eps: float = 1e-9,
    ) -> None:
        super().__init__()
        check_divisible(dim, num_heads, "dim", "num_heads")
        if expansion <= 0 or memory_size <= 0:
            raise ValueError(
                f"expansion and memory_size must be positive, got {expansion}, {memory_size}"
            )
        self.dim = dim
        self.num_heads = num_heads * expansion
        self.head_dim = dim // num_heads
        self.memory_size = memory_size
        self.eps = eps
        self.query = nn.Linear(dim, dim * expansion, bias=qkv_bias)
        self.mk = nn.Linear(self.head_dim, memory_size)
        self.mv = nn.Linear(memory_size, self.head_dim)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim * expansion, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(
        self, x: torch.Tensor, return_attn: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        check_tokens(x, self.dim)
        b, n, _ = x.shape
        q = self.query(x).view(b, n, self.num_heads, self.head_dim).transpose(1, 2)
        attn = double_normalize(self.mk(q), token_dim=2, slot_dim=3, eps=self.eps).to(x.dtype)
        if self.map_hook is not None:
            self.map_hook("attn", attn)
        out = self.mv(self.attn_drop(attn))  # (B, e*h, N, d/h)
        out = out.transpose(1, 2).reshape(b, n, self.num_heads * self.head_dim)
        out = self.proj_drop(self.proj(out))
        return (out, attn) if return_attn else out

    def extra_repr(self) -> str:
        return f"dim={self.dim}, heads={self.num_heads}, memory_size={self.memory_size}"


class ExternalAttentionBlock2d(nn.Module):
    """The external-attention block of the EANet segmentation head (Guo et al.,
    arXiv:2105.02358; the authors' code).

    On a feature map, following the authors' code::

        y = conv1x1(x) + b                        (B, C, H, W) -> (B, C, N)
        A = M_k y                                 (B, S, N)   Conv1d(C -> S, no bias)
        A = softmax(A, over N); A = A / (eps + sum_S A)
        z = M_v A                                 (B, C, N)   Conv1d(S -> C, no bias)
        out = relu(x + BN(conv1x1(z)))            (B, C, H, W)

    Initialisation follows the authors: convolution weights ~ N(0, 2 / fan_out) (biases keep
    PyTorch's default), BN weight 1 and bias 0, and M_v starts as the transpose of M_k. The
    authors tie the two by aliasing ``.data`` (tied on CPU, untied after ``.cuda()``); here
    M_v is a copy of the values, so the two are always independent parameters.

    Args:
        channels: C.
        memory_size: S (authors: 64).
        eps: L1 denominator epsilon (authors: 1e-9, float32).
        norm_layer: the normalisation after the output convolution (default
            :class:`~beyond_attention.layers.norms.BatchNorm2d`, exact gradients at batch 1).

    Shapes: ``x`` (B, C, H, W) -> (B, C, H, W). Under map capture the normalised
    attention is reported as ``"attn"`` (B, 1, H*W, S), pixels row-major as queries.
    """

    map_hook: Callable[..., None] | None = None
    """Map capture (:func:`beyond_attention.viz.capture_maps` sets it per instance): when
    not ``None`` the forward also calls ``map_hook(name, tensor, **grids)``; off by default,
    and then nothing extra runs."""

    def __init__(
        self,
        channels: int,
        memory_size: int = 64,
        eps: float = 1e-9,
        norm_layer: type[nn.Module] = BatchNorm2d,
    ) -> None:
        super().__init__()
        self.channels = channels
        self.memory_size = memory_size
        self.eps = eps
        self.conv1 = nn.Conv2d(channels, channels, 1)
        self.mk = nn.Conv1d(channels, memory_size, 1, bias=False)
        self.mv = nn.Conv1d(memory_size, channels, 1, bias=False)
        self.conv2 = nn.Conv2d(channels, channels, 1, bias=False)
        self.norm = norm_layer(channels)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """The authors' initialisation, with M_v a copy (not an alias) of M_k^T."""
        for conv in (self.conv1, self.conv2, self.mk):
            fan_out = math.prod(conv.kernel_size) * conv.out_channels
            conv.weight.normal_(0.0, math.sqrt(2.0 / fan_out))
        self.mv.weight.copy_(self.mk.weight.permute(1, 0, 2))
        if isinstance(self.norm, nn.modules.batchnorm._BatchNorm):
            nn.init.ones_(self.norm.weight)
            nn.init.zeros_(self.norm.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image(x, self.channels)
        b, c, h, w = x.shape
        y = self.conv1(x).flatten(2)  # (B, C, N)
        attn = double_normalize(self.mk(y), token_dim=2, slot_dim=1, eps=self.eps)
        if self.map_hook is not None:
            self.map_hook("attn", attn.transpose(1, 2).unsqueeze(1), query_hw=(h, w))
        z = self.mv(attn.to(y.dtype)).view(b, c, h, w)
        return torch.relu(x + self.norm(self.conv2(z)))

    def extra_repr(self) -> str:
        return f"channels={self.channels}, memory_size={self.memory_size}"
