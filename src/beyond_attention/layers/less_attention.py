"""The layers of the Less-Attention Vision Transformer (LaViT; Zhang et al., CVPR 2024).

A LaViT stage starts with L_VA *vanilla attention* layers, which compute attention from
queries and keys, and continues with *less-attention* (LA) layers, which compute no
``Q K^T`` at all: they re-use the previous layer's attention through two linear maps
(LaViT (Zhang et al., CVPR 2024, arXiv:2406.00427))::

    A^l = Psi( Theta(A^{l-1})^T )^T = W_psi^T A^{l-1} W_theta       (per head)
    Z^l = softmax(A^l) V^l,          V^l = x^l W_v                  (fresh values)

This module holds the four pieces; the paper leaves their details open, and the choices
made here are the following (each class repeats the ones that concern it).

* **Spatial-reduction attention** (PVTv2 style). Keys and values live on a reduced grid:
  the (H, W) token map is reduced by a ``sr_ratio x sr_ratio`` strided convolution plus
  LayerNorm to (H/sr, W/sr), so an attention matrix is ``(B, h, N, M)`` with N = H W
  queries and M = (H/sr)(W/sr) keys (49 at every stage of the 224-px models).
* **What is carried** from layer to layer is the *pre-softmax* score matrix (float32).
  The transforms start at the identity, so a fresh LA layer reproduces the previous
  layer's attention distribution exactly.
* **Theta** acts on the key axis (an ``M x M`` matrix, cheap because M is small);
  **Psi** acts on the query axis (``N x N``), and only where N is small: it is enabled by
  giving ``num_queries``, otherwise it is the identity. Both are shared by the heads by
  default (``per_head=True`` gives each head its own), have no bias (a bias of Psi
  would add a per-query constant that the softmax over keys removes; a bias of Theta
  would be a per-key logit offset, which the paper does not describe), and are stored as
  their deviation from the identity, ``W = I + delta`` with ``delta`` initialised to zero,
  so that weight decay pulls them towards the identity rather than towards zero.
* **Attention downsampling** across a stage boundary: average-pool the query axis onto
  the new token grid, pool the key axis onto the new key grid, mix heads linearly, and
  add the result, scaled by a learnable per-head gate, to the new stage's first scores.
* **Diagonality-preserving loss**: see :func:`diagonality_loss` for the exact formula.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ._validate import check_divisible, check_tokens, upcast
from .sdpa import scaled_dot_product_attention

__all__ = [
    "AttentionDownsample",
    "LessAttention",
    "VanillaAttention",
    "diagonality_loss",
    "key_cell_index",
]

HW = tuple[int, int]


def _no_autocast(t: torch.Tensor) -> contextlib.AbstractContextManager:
    """A region where autocast is off (softmax and the transforms in float32)."""
    dev = t.device.type
    if dev != "meta" and torch.is_autocast_enabled(dev):
        return torch.autocast(device_type=dev, enabled=False)
    return contextlib.nullcontext()


def _check_hw(hw: HW | None, n: int, name: str = "hw") -> HW:
    """Require ``hw`` to be an (H, W) pair of positive ints with H * W == n."""
    if hw is None or len(hw) != 2:
        raise ValueError(f"{name} must be the token grid (H, W) with H * W = {n}, got {hw}")
    h, w = int(hw[0]), int(hw[1])
    if h <= 0 or w <= 0 or h * w != n:
        raise ValueError(f"{name}={tuple(hw)} must satisfy H * W = {n} (the number of tokens)")
    return h, w


class _SpatialReduction(nn.Module):
    """PVTv2's key/value reduction: (B, H*W, C) -> (B, (H/r)*(W/r), C).

    ``Conv2d(C, C, kernel=r, stride=r)`` followed by LayerNorm; the identity for r = 1.
    The reduced grid is (floor(H/r), floor(W/r)).
    """

    def __init__(self, dim: int, sr_ratio: int) -> None:
        super().__init__()
        if sr_ratio < 1:
            raise ValueError(f"sr_ratio must be a positive int, got {sr_ratio}")
        self.sr_ratio = sr_ratio
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, kernel_size=sr_ratio, stride=sr_ratio)
            self.norm = nn.LayerNorm(dim)

    def reduced_hw(self, hw: HW) -> HW:
        return hw[0] // self.sr_ratio, hw[1] // self.sr_ratio

    def forward(self, x: torch.Tensor, hw: HW | None) -> tuple[torch.Tensor, HW]:
        if self.sr_ratio == 1:
            if hw is None:
                return x, (x.shape[1], 1)
            return x, _check_hw(hw, x.shape[1])
        h, w = _check_hw(hw, x.shape[1])
        if h < self.sr_ratio or w < self.sr_ratio:
            raise ValueError(
                f"hw={(h, w)} is smaller than sr_ratio={self.sr_ratio}: no key would remain"
            )
        x = rearrange(x, "b (h w) c -> b c h w", h=h, w=w)
        x = self.sr(x)
        hk, wk = x.shape[-2:]
        x = self.norm(rearrange(x, "b c h w -> b (h w) c"))
        return x, (hk, wk)


class VanillaAttention(nn.Module):
    """LaViT's vanilla-attention (VA) layer: multi-head spatial-reduction self-attention.

    PVTv2's attention, which returns its pre-softmax scores for the LA layers that follow::

        Q = x W_q,   [K, V] = SR(x) W_kv,   SR = Conv(r x r, stride r) + LayerNorm
        S_h = Q_h K_h^T / sqrt(d/h) + bias_h           (B, h, N, M), float32
        out = concat_h(softmax(S_h) V_h) W_o           (B, N, d)

    With ``sr_ratio=1`` this is exactly :class:`SelfAttention` (M = N). ``attn_bias`` is
    the residual carried from the previous stage by :class:`AttentionDownsample`.

    Args:
        dim: channels d.
        num_heads: heads h (``dim`` divisible by it).
        sr_ratio: spatial-reduction ratio r of keys and values.
        qkv_bias: bias on the query and key/value projections.
        attn_drop: dropout on the attention probabilities.
        proj_drop: dropout after the output projection.

    Shapes: ``x`` (B, N, d) with N = H*W, ``hw`` = (H, W) (needed when r > 1),
    ``attn_bias`` (B, h, N, M) or broadcastable; returns ``out`` (B, N, d) and, with
    ``return_scores=True``, the scores S (B, h, N, M) in float32. Under map capture the
    probabilities softmax(S) are reported as ``"attn"`` (B, h, N, M), on either path.
    """

    map_hook: Callable[..., None] | None = None
    """Map capture (:func:`beyond_attention.viz.capture_maps` sets it per instance): when
    not ``None`` the forward also calls ``map_hook(name, tensor, **grids)``; off by default,
    and then nothing extra runs."""

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        sr_ratio: int = 1,
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
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, dim * 2, bias=qkv_bias)
        self.reduce = _SpatialReduction(dim, sr_ratio)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    @property
    def sr_ratio(self) -> int:
        return self.reduce.sr_ratio

    def forward(
        self,
        x: torch.Tensor,
        hw: HW | None = None,
        attn_bias: torch.Tensor | None = None,
        return_scores: bool = True,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        check_tokens(x, self.dim)
        q = rearrange(self.q(x), "b n (h d) -> b h n d", h=self.num_heads)
        xr, key_hw = self.reduce(x, hw)
        k, v = rearrange(self.kv(xr), "b m (two h d) -> two b h m d", two=2, h=self.num_heads)
        if attn_bias is not None:
            expected = (x.shape[0], self.num_heads, x.shape[1], k.shape[2])
            if attn_bias.ndim != 4 or attn_bias.shape[1:] != expected[1:]:
                raise ValueError(
                    f"attn_bias must have shape (B, h, N, M) = {expected}, "
                    f"got {tuple(attn_bias.shape)}"
                )
        if not return_scores:
            mask = None if attn_bias is None else attn_bias.to(q.dtype)
            out = scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=self.attn_drop.p if self.training else 0.0
            )
            if self.map_hook is not None:
                with _no_autocast(x):
                    s = torch.matmul(upcast(q) * self.scale, upcast(k).transpose(-2, -1))
                    s = s if attn_bias is None else s + upcast(attn_bias)
                self.map_hook("attn", s.softmax(dim=-1), query_hw=hw, key_hw=key_hw)
            return self._merge(out)
        with _no_autocast(x):
            scores = torch.matmul(upcast(q) * self.scale, upcast(k).transpose(-2, -1))
            if attn_bias is not None:
                scores = scores + upcast(attn_bias)
            attn = scores.softmax(dim=-1)
        if self.map_hook is not None:
            self.map_hook("attn", attn, query_hw=hw, key_hw=key_hw)
        out = torch.matmul(self.attn_drop(attn).to(v.dtype), v)
        return self._merge(out), scores

    def _merge(self, out: torch.Tensor) -> torch.Tensor:
        out = rearrange(out, "b h n d -> b n (h d)")
        return self.proj_drop(self.proj(out))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_heads={self.num_heads}, sr_ratio={self.sr_ratio}"


class LessAttention(nn.Module):
    """The less-attention (LA) layer: attention inherited from the previous layer.

    It computes no ``Q K^T``. Given the previous layer's pre-softmax scores S^{l-1}
    (B, h, N, M) it forms, per head (LaViT, arXiv:2406.00427)::

        S^l = Psi( Theta(S^{l-1})^T )^T = W_psi^T S^{l-1} W_theta     (B, h, N, M)
        V^l = SR(x) W_v                                              (B, h, M, d/h)
        out = concat_h(softmax(S^l) V^l) W_o                         (B, N, d)

    Choices (the paper leaves them open):

    * The transforms act on **pre-softmax scores** and the layer returns S^l for the next
      LA layer. ``W_theta = I + theta_delta`` and ``W_psi = I + psi_delta`` with the
      deltas initialised to zero, so a fresh LA layer has ``softmax(S^l) =
      softmax(S^{l-1})``: it reproduces the previous attention distribution exactly.
    * **Theta** mixes the key axis: ``W_theta`` is ``M x M`` with M = ``num_keys``, the
      reduced key count (49 at every stage of the 224-px models), so it costs
      ``h N M^2`` multiply-adds. **Psi** mixes the query axis: ``W_psi`` is ``N x N``
      with N = ``num_queries``; it costs ``N^2`` parameters and ``h N^2 M`` multiply-adds,
      so it is only enabled when ``num_queries`` is given (the models give it where
      N <= 196); with ``num_queries=None`` Psi is the identity and the layer accepts
      any N.
    * Shared by all heads (``per_head=False``, as the paper writes a single N x N map) or
      one pair per head (``per_head=True``). No biases: a bias of Psi only adds a
      per-query constant, which the softmax over keys removes.
    * Values are fresh: V^l = SR(x) W_v with the same kind of spatial reduction as the
      vanilla layer (``sr_ratio``), so key cell j of the inherited attention and value j
      come from the same grid cell. The transforms and the softmax run in float32
      (float64 stays float64).

    Args:
        dim: channels d.
        num_heads: heads h (``dim`` divisible by it).
        num_keys: M, the number of keys of the incoming attention (after reduction).
        num_queries: N for the query-axis transform Psi, or ``None`` for no Psi.
        sr_ratio: spatial-reduction ratio r for the values.
        per_head: one Theta/Psi per head instead of one shared pair.
        v_bias: bias on the value projection.
        attn_drop: dropout on the attention probabilities.
        proj_drop: dropout after the output projection.

    Shapes: ``x`` (B, N, d), ``prev_scores`` (B, h, N, M), ``hw`` = (H, W) with N = H*W
    (needed when r > 1); returns ``(out, scores)``: (B, N, d) and (B, h, N, M) float32.
    Under map capture the probabilities softmax(S^l) are reported as ``"attn"``
    (B, h, N, M).
    """

    map_hook: Callable[..., None] | None = None
    """Map capture (:func:`beyond_attention.viz.capture_maps` sets it per instance): when
    not ``None`` the forward also calls ``map_hook(name, tensor, **grids)``; off by default,
    and then nothing extra runs."""

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        num_keys: int = 49,
        num_queries: int | None = None,
        sr_ratio: int = 1,
        per_head: bool = False,
        v_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__()
        check_divisible(dim, num_heads, "dim", "num_heads")
        if num_keys < 1:
            raise ValueError(f"num_keys must be a positive int, got {num_keys}")
        if num_queries is not None and num_queries < 1:
            raise ValueError(f"num_queries must be a positive int or None, got {num_queries}")
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.num_keys = num_keys
        self.num_queries = num_queries
        self.per_head = per_head
        t = num_heads if per_head else 1
        self.theta_delta = nn.Parameter(torch.zeros(t, num_keys, num_keys))
        self.register_buffer("eye_keys", torch.eye(num_keys), persistent=False)
        if num_queries is not None:
            self.psi_delta = nn.Parameter(torch.zeros(t, num_queries, num_queries))
            self.register_buffer("eye_queries", torch.eye(num_queries), persistent=False)
        else:
            self.register_parameter("psi_delta", None)
            self.eye_queries = None
        self.v = nn.Linear(dim, dim, bias=v_bias)
        self.reduce = _SpatialReduction(dim, sr_ratio)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    @property
    def sr_ratio(self) -> int:
        return self.reduce.sr_ratio

    def w_theta(self) -> torch.Tensor:
        """The key-axis map ``W_theta = I + theta_delta``, (1 or h, M, M), float32."""
        return self.eye_keys + upcast(self.theta_delta)

    def w_psi(self) -> torch.Tensor | None:
        """The query-axis map ``W_psi = I + psi_delta``, (1 or h, N, N), or ``None``."""
        if self.psi_delta is None:
            return None
        return self.eye_queries + upcast(self.psi_delta)

    def transform(self, prev_scores: torch.Tensor) -> torch.Tensor:
        """``W_psi^T S W_theta`` per head: (B, h, N, M) -> (B, h, N, M), float32."""
        with _no_autocast(prev_scores):
            s = torch.matmul(upcast(prev_scores), self.w_theta())
            w_psi = self.w_psi()
            if w_psi is not None:
                s = torch.matmul(w_psi.transpose(-2, -1), s)
        return s

    def forward(
        self, x: torch.Tensor, prev_scores: torch.Tensor, hw: HW | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        check_tokens(x, self.dim)
        b, n, _ = x.shape
        if prev_scores.ndim != 4 or prev_scores.shape[1:] != (self.num_heads, n, self.num_keys):
            raise ValueError(
                f"prev_scores must have shape (B, h={self.num_heads}, N={n}, "
                f"M={self.num_keys}), got {tuple(prev_scores.shape)}"
            )
        if prev_scores.shape[0] != b:
            raise ValueError(
                f"prev_scores has batch {prev_scores.shape[0]}, x has batch {b}"
            )
        if self.num_queries is not None and n != self.num_queries:
            raise ValueError(
                f"x has N={n} tokens but this layer's query transform Psi was built for "
                f"num_queries={self.num_queries}"
            )
        xr, key_hw = self.reduce(x, hw)
        if xr.shape[1] != self.num_keys:
            raise ValueError(
                f"x of grid hw={hw} reduces (sr_ratio={self.sr_ratio}) to {xr.shape[1]} "
                f"value tokens, but the layer was built for num_keys={self.num_keys}"
            )
        v = rearrange(self.v(xr), "b m (h d) -> b h m d", h=self.num_heads)
        scores = self.transform(prev_scores)
        with _no_autocast(x):
            attn = scores.softmax(dim=-1)
        if self.map_hook is not None:
            self.map_hook("attn", attn, query_hw=hw, key_hw=key_hw)
        out = torch.matmul(self.attn_drop(attn).to(v.dtype), v)
        out = rearrange(out, "b h n d -> b n (h d)")
        return self.proj_drop(self.proj(out)), scores

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, num_heads={self.num_heads}, num_keys={self.num_keys}, "
            f"num_queries={self.num_queries}, sr_ratio={self.sr_ratio}, "
            f"per_head={self.per_head}"
        )


def _pool_axis(x: torch.Tensor, src_hw: HW, dst_hw: HW) -> torch.Tensor:
    """Adaptive average pooling of the last axis of ``x`` (..., Hs*Ws) onto (Hd, Wd)."""
    if tuple(src_hw) == tuple(dst_hw):
        return x
    lead = x.shape[:-1]
    y = x.reshape(-1, 1, src_hw[0], src_hw[1])
    y = F.adaptive_avg_pool2d(y, dst_hw)
    return y.reshape(*lead, dst_hw[0] * dst_hw[1])


class AttentionDownsample(nn.Module):
    """Residual-based attention downsampling across a stage boundary (LaViT).

    The previous stage's last scores S_prev (B, h_in, N_prev, M_prev) are brought onto the
    new stage's grid and added to the new stage's first scores S (B, h_out, N, M)::

        P   = pool_k( pool_q(S_prev) )                  (B, h_in, N, M)
        D_o = sum_i W_mix[o, i] P_i                     (B, h_out, N, M)
        out = S + alpha_o * D_o

    * ``pool_q``: adaptive average pooling of the query axis, viewed as the previous token
      grid ``prev_query_hw``, onto the new grid ``query_hw`` (a 2 x 2 average for the
      stride-2 patch embeddings of the models). ``pool_k``: the same on the key axis from
      ``prev_key_hw`` to ``key_hw`` (the identity when they agree, as in the models,
      where every stage has a 7 x 7 key grid). Pooling is over pre-softmax scores.
    * ``W_mix`` (h_out, h_in) mixes heads, initialised to the average over the previous
      heads; ``alpha`` (h_out,) is a learnable gate per new head, initialised to
      ``alpha_init``.

    Args:
        in_heads: heads h_in of the previous stage.
        out_heads: heads h_out of the new stage.
        alpha_init: initial gate value.

    Shapes: ``scores`` (B, h_out, N, M), ``prev_scores`` (B, h_in, N_prev, M_prev);
    returns (B, h_out, N, M) float32.
    """

    def __init__(self, in_heads: int, out_heads: int, alpha_init: float = 0.1) -> None:
        super().__init__()
        if in_heads < 1 or out_heads < 1:
            raise ValueError(
                f"in_heads and out_heads must be positive, got {in_heads} and {out_heads}"
            )
        self.in_heads = in_heads
        self.out_heads = out_heads
        self.head_mix = nn.Parameter(torch.full((out_heads, in_heads), 1.0 / in_heads))
        self.alpha = nn.Parameter(torch.full((out_heads,), float(alpha_init)))

    def residual(
        self,
        prev_scores: torch.Tensor,
        prev_query_hw: HW,
        query_hw: HW,
        prev_key_hw: HW,
        key_hw: HW,
    ) -> torch.Tensor:
        """``alpha_o * D_o``: the term added to the new scores, (B, h_out, N, M) float32."""
        if prev_scores.ndim != 4 or prev_scores.shape[1] != self.in_heads:
            raise ValueError(
                f"prev_scores must have shape (B, h_in={self.in_heads}, N_prev, M_prev), "
                f"got {tuple(prev_scores.shape)}"
            )
        prev_query_hw = _check_hw(prev_query_hw, prev_scores.shape[2], "prev_query_hw")
        prev_key_hw = _check_hw(prev_key_hw, prev_scores.shape[3], "prev_key_hw")
        with _no_autocast(prev_scores):
            p = upcast(prev_scores)
            p = _pool_axis(p, prev_key_hw, key_hw)  # key axis (last)
            p = _pool_axis(p.transpose(-2, -1), prev_query_hw, query_hw).transpose(-2, -1)
            d = torch.einsum("oi,binm->bonm", upcast(self.head_mix), p)
            return d * upcast(self.alpha).view(1, -1, 1, 1)

    def forward(
        self,
        scores: torch.Tensor,
        prev_scores: torch.Tensor,
        prev_query_hw: HW,
        query_hw: HW,
        prev_key_hw: HW,
        key_hw: HW,
    ) -> torch.Tensor:
        expected = (self.out_heads, query_hw[0] * query_hw[1], key_hw[0] * key_hw[1])
        if scores.ndim != 4 or tuple(scores.shape[1:]) != expected:
            raise ValueError(
                f"scores must have shape (B, h_out, N, M) = (B, {', '.join(map(str, expected))})"
                f", got {tuple(scores.shape)}"
            )
        return upcast(scores) + self.residual(
            prev_scores, prev_query_hw, query_hw, prev_key_hw, key_hw
        )

    def extra_repr(self) -> str:
        return f"in_heads={self.in_heads}, out_heads={self.out_heads}"


def key_cell_index(query_hw: HW, key_hw: HW, device: torch.device | None = None) -> torch.Tensor:
    """For each query of an (H, W) grid, the index of its own cell in an (Hk, Wk) key grid.

    Query (y, x) owns key cell ``(floor(y Hk / H), floor(x Wk / W))``, flattened row-major:
    the reduced-grid cell that contains it (for the strided reduction of the models) and
    the query itself when the grids agree. Returns a long tensor of shape (H*W,).
    """
    h, w = query_hw
    hk, wk = key_hw
    ys = torch.arange(h, device=device) * hk // h
    xs = torch.arange(w, device=device) * wk // w
    return (ys[:, None] * wk + xs[None, :]).reshape(-1)


def _infer_square(n: int, name: str) -> HW:
    r = math.isqrt(n)
    if r * r != n:
        raise ValueError(
            f"{name} is needed: {n} tokens do not form a square grid, give the grid (H, W)"
        )
    return r, r


def diagonality_loss(
    attn: torch.Tensor,
    query_hw: HW | None = None,
    key_hw: HW | None = None,
    symmetry_weight: float = 1.0,
    dominance_weight: float = 1.0,
) -> torch.Tensor:
    """The diagonality-preserving loss of LaViT (the paper's formula is not given; this is ours).

    ``attn`` holds attention *probabilities* A (B, h, N, M) (rows sum to 1). Each query i
    of the (H, W) grid owns one key cell d(i) of the (Hk, Wk) key grid
    (:func:`key_cell_index`; d(i) = i when N = M on the same grid). Let G be the N x M
    assignment with G[i, d(i)] = 1 and c_k = sum_i G[i, k] the queries per cell; the
    key-grid square matrix is P = diag(c)^-1 G^T A (M x M: row k is the mean attention of
    the queries in cell k; P = A when N = M). Then::

        L_sym = mean_{b,h} ||P - P^T||_F^2 / M
        L_dom = mean_{b,h,i} sum_{j != d(i)} relu(A[i, j] - A[i, d(i)])
        L     = symmetry_weight * L_sym + dominance_weight * L_dom

    L_sym pushes the attention towards a symmetric matrix, L_dom penalises every key that
    receives more attention than the query's own cell (each token attends most to itself).
    Both are 0 for the identity (and for any symmetric attention whose diagonal is the row
    maximum) and at most about 2 and M - 1. Differentiable (relu is piecewise linear).
    Computed in float32 (float64 stays float64). Grids not given are taken as square when
    the counts allow.
    Returns a scalar tensor.
    """
    if attn.ndim != 4:
        raise ValueError(f"attn must have shape (B, h, N, M), got {tuple(attn.shape)}")
    b, h, n, m = attn.shape
    if query_hw is None and key_hw is None and n == m:
        own = torch.arange(n, device=attn.device)
    else:
        query_hw = _check_hw(query_hw, n, "query_hw") if query_hw else _infer_square(n, "query_hw")
        key_hw = _check_hw(key_hw, m, "key_hw") if key_hw else _infer_square(m, "key_hw")
        if key_hw[0] > query_hw[0] or key_hw[1] > query_hw[1]:
            raise ValueError(
                f"key_hw={key_hw} is finer than query_hw={query_hw}: some key cells own no query"
            )
        own = key_cell_index(query_hw, key_hw, attn.device)
    with _no_autocast(attn):
        a = upcast(attn)
        ones = torch.ones(n, device=a.device, dtype=a.dtype)
        counts = torch.zeros(m, device=a.device, dtype=a.dtype).index_add_(0, own, ones)
        p = torch.zeros(b, h, m, m, device=a.device, dtype=a.dtype).index_add_(2, own, a)
        p = p / counts.view(1, 1, m, 1)
        sym = (p - p.transpose(-2, -1)).pow(2).sum(dim=(-2, -1)).mean() / m
        diag = a.gather(-1, own.view(1, 1, n, 1).expand(b, h, n, 1))
        excess = F.relu(a - diag)  # zero at j = d(i)
        dom = excess.sum(dim=-1).mean()
        return symmetry_weight * sym + dominance_weight * dom
