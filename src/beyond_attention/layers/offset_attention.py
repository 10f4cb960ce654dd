"""Attention layers over point features (B, C, N): PCT's offset-attention and EA for points.

Offset-attention (Point Cloud Transformer, Guo et al., Computational Visual Media 2021,
arXiv:2012.09688, Sec. 3.3) is self-attention with two changes: the attention map is
normalised twice, a softmax over the first (query) index of the energy followed by an
L1 normalisation over the second, and the residual branch sees the *offset* between the
input and the attention output (a discrete Laplacian-like operator, the paper argues)::

    Q = W_q x,  K = W_k x                    (B, C/4, N)   no bias
    V = W_v x + b_v                          (B, C, N)
    E_ij = q_i . k_j                         (B, N, N)     no 1/sqrt(d) scaling
    A = softmax over j, then A_ij / (eps + sum_i A_ij)
    F_sa_j = sum_i V_i A_ij                  (B, C, N)
    out = x + relu(BN(W_t (x - F_sa) + b_t))

External attention on points (Guo, Liu, Mu, Hu 2021, arXiv:2105.02358, the point-cloud
experiments of Sec. 4) keeps that block and replaces the N x N self-attention map by the
two memories of EA (``S`` slots; softmax over the N points, L1 over the slots, the same
double normalisation as the image layers), so its cost and memory are linear in N::

    A = M_k x                                (B, S, N)     Conv1d(C -> S, no bias)
    A = softmax over N, then A / (eps + sum_S A)
    F_ea = M_v A                             (B, C, N)     Conv1d(S -> C, no bias)
    out = x + relu(BN(W_t (x - F_ea) + b_t))   (offset=True; else x + relu(BN(W_t F_ea)))

Both take and return channels-first point features (B, C, N).
"""

from __future__ import annotations

import torch
from torch import nn

from .external_attention import double_normalize
from .sdpa import scaled_dot_product_attention

__all__ = ["ExternalAttentionPoints", "OffsetAttention", "PointSelfAttention",
           "check_point_features"]


def check_point_features(x: torch.Tensor, channels: int, name: str = "x") -> None:
    """Require ``x`` to be channels-first point features ``(B, channels, N)``."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 3:
        raise ValueError(
            f"{name} must have shape (B, C={channels}, N) with 3 dimensions, got "
            f"{x.ndim} dimensions: {tuple(x.shape)}"
        )
    if x.shape[1] != channels:
        raise ValueError(
            f"{name} must have {channels} channels in dimension 1 (B, C={channels}, N), "
            f"got shape {tuple(x.shape)}"
        )


class _OffsetResidual(nn.Module):
    """``x + relu(BN(W_t y + b_t))``: PCT's LBR on the offset, then the residual."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.trans = nn.Conv1d(channels, channels, 1)
        self.norm = nn.BatchNorm1d(channels)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x + torch.relu(self.norm(self.trans(y)))


class OffsetAttention(nn.Module):
    """PCT's offset-attention layer (arXiv:2012.09688, Sec. 3.3).

    Args:
        channels: C, the feature width (PCT: 256 with neighbour embedding, 128 without).
        qk_ratio: the query/key width is ``channels // qk_ratio`` (PCT: 4).
        share_qk: one projection for queries and keys (``W_q = W_k``, as in the authors'
            implementation, whose parameter count the paper reports; the energy is then
            symmetric). ``False`` gives two independent projections.
        eps: added to the L1 denominator (the authors: 1e-9; the normalisation runs in
            float32 under mixed precision).

    Shapes: ``x`` (B, C, N) -> (B, C, N); ``return_attn=True`` also returns the map A
    (B, N, N) whose columns sum to 1 (up to eps). Memory is quadratic in N (the map).
    """

    def __init__(
        self, channels: int, qk_ratio: int = 4, share_qk: bool = True, eps: float = 1e-9
    ) -> None:
        super().__init__()
        if qk_ratio <= 0 or channels % qk_ratio != 0:
            raise ValueError(f"channels={channels} must be divisible by qk_ratio={qk_ratio}")
        self.channels = channels
        self.share_qk = share_qk
        self.eps = eps
        self.q = nn.Conv1d(channels, channels // qk_ratio, 1, bias=False)
        self.k = None if share_qk else nn.Conv1d(channels, channels // qk_ratio, 1, bias=False)
        self.v = nn.Conv1d(channels, channels, 1)
        self.offset = _OffsetResidual(channels)

    def forward(
        self, x: torch.Tensor, return_attn: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        check_point_features(x, self.channels)
        q = self.q(x)  # (B, C/4, N)
        k = q if self.k is None else self.k(x)
        energy = torch.bmm(q.transpose(1, 2), k)  # (B, N, N): E_ij = q_i . k_j
        attn = double_normalize(energy, token_dim=2, slot_dim=1, eps=self.eps).to(x.dtype)
        f_sa = torch.bmm(self.v(x), attn)  # (B, C, N): sum_i V_i A_ij
        out = self.offset(x, x - f_sa)
        return (out, attn) if return_attn else out

    def extra_repr(self) -> str:
        return f"channels={self.channels}, share_qk={self.share_qk}"


class ExternalAttentionPoints(nn.Module):
    """External attention in PCT's offset block, for point features (arXiv:2105.02358).

    Args:
        channels: C.
        memory_size: S, the memory slots (EA paper default 64).
        offset: ``True`` feeds the offset ``x - EA(x)`` to the LBR, as PCT does with its
            attention (the drop-in replacement of offset-attention); ``False`` feeds
            ``EA(x)`` itself (a plain residual EA block).
        eps: L1 denominator epsilon (1e-9, float32 under mixed precision).

    Shapes: ``x`` (B, C, N) -> (B, C, N); ``return_attn=True`` also returns A (B, S, N),
    each point's weights summing to 1 over the S slots (up to eps). Memory linear in N.
    """

    def __init__(
        self, channels: int, memory_size: int = 64, offset: bool = True, eps: float = 1e-9
    ) -> None:
        super().__init__()
        if memory_size <= 0:
            raise ValueError(f"memory_size must be positive, got {memory_size}")
        self.channels = channels
        self.memory_size = memory_size
        self.use_offset = offset
        self.eps = eps
        self.mk = nn.Conv1d(channels, memory_size, 1, bias=False)
        self.mv = nn.Conv1d(memory_size, channels, 1, bias=False)
        self.offset = _OffsetResidual(channels)

    def forward(
        self, x: torch.Tensor, return_attn: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        check_point_features(x, self.channels)
        attn = double_normalize(self.mk(x), token_dim=2, slot_dim=1, eps=self.eps).to(x.dtype)
        f_ea = self.mv(attn)  # (B, C, N)
        out = self.offset(x, x - f_ea if self.use_offset else f_ea)
        return (out, attn) if return_attn else out

    def extra_repr(self) -> str:
        return (f"channels={self.channels}, memory_size={self.memory_size}, "
                f"offset={self.use_offset}")


class PointSelfAttention(nn.Module):
    """The naive PCT's (NPCT) layer: scaled dot-product self-attention in a residual LBR.

    PCT's Sec. 3.3 baseline before offset-attention: ``F_sa = softmax(Q K^T / sqrt(d_a)) V``
    with PCT's projections (query/key width C/4, shared as in :class:`OffsetAttention`),
    then ``out = x + relu(BN(W_t F_sa + b_t))``. Runs through
    ``torch.nn.functional.scaled_dot_product_attention`` (one head; see
    :mod:`beyond_attention.layers.sdpa` for low precision on CPU).

    Shapes: ``x`` (B, C, N) -> (B, C, N).
    """

    def __init__(self, channels: int, qk_ratio: int = 4, share_qk: bool = True) -> None:
        super().__init__()
        if qk_ratio <= 0 or channels % qk_ratio != 0:
            raise ValueError(f"channels={channels} must be divisible by qk_ratio={qk_ratio}")
        self.channels = channels
        self.share_qk = share_qk
        self.q = nn.Conv1d(channels, channels // qk_ratio, 1, bias=False)
        self.k = None if share_qk else nn.Conv1d(channels, channels // qk_ratio, 1, bias=False)
        self.v = nn.Conv1d(channels, channels, 1)
        self.offset = _OffsetResidual(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_point_features(x, self.channels)
        q = self.q(x)
        k = q if self.k is None else self.k(x)
        f_sa = scaled_dot_product_attention(
            q.transpose(1, 2).unsqueeze(1), k.transpose(1, 2).unsqueeze(1),
            self.v(x).transpose(1, 2).unsqueeze(1),
        ).squeeze(1).transpose(1, 2)  # (B, C, N)
        return self.offset(x, f_sa)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, share_qk={self.share_qk}"

