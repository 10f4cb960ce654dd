"""The lambda layer of LambdaNetworks (Bello, ICLR 2021, arXiv 2102.08602).

A lambda layer summarises its context into a small linear function, the *lambda*, and applies
it to every query, instead of building an (N, M) attention map. With queries from the input
and keys/values from the same feature map (n = m = H*W positions):

    Q = BN(X W_q)              (b, h, k, n)      h heads of depth k
    K = softmax_m(X W_k)       (b, u, k, m)      keys normalised over the context positions m
    V = BN(X W_v)              (b, u, v, m)      v = d_out / h, intra-depth u
    content lambda     L_c    = sum_{m,u} K[u,k,m] V[u,v,m]               (b, k, v)
    position lambdas   L_p[n] = sum_{m,u} E[n,m,k,u] V[u,v,m]             (b, k, v, n)
    output             y[h,v,n] = sum_k Q[h,k,n] (L_c[k,v] + L_p[k,v,n])  heads concatenated

Multi-query: the h heads share one lambda. The position embeddings are relative,
``E[n, m] = R[m - n]``, with ``R`` indexed by the offset of the context position m from
the query position n (row offset first), so the position lambdas are a 2-D correlation of
V with the kernel R::

    L_p[b,k,v,n] = sum_{t,u} R[k,u,t] V[b,u,v,n+t]        (V = 0 outside the map)

- local, the paper's *lambda convolution* (``r``): R is an r x r kernel, ``pos_conv`` =
  Conv3d(u -> k, kernel (1, r, r), padding (0, r//2, r//2)) over V laid out (b, u, v, H, W);
- global (``feat_size=(H, W)``): R is a learnable table of (2H-1, 2W-1, k, u) covering every
  offset inside the map; it is the same correlation with a (2H-1) x (2W-1) kernel and
  padding (H-1, W-1). The (N, N, k, u) table ``E[n, m]`` is never gathered: the correlation
  runs as a direct convolution or through the FFT (faster for large maps and kernels), both
  O(b n k v) in memory.

Striding: ``stride=2`` follows the layer by a 3x3 average pool with stride 2, the paper's
replacement for a strided convolution.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torch.utils._python_dispatch import is_in_torch_dispatch_mode

from ._validate import LOW_PRECISION, check_divisible, check_image, upcast
from .norms import BatchNorm2d

PositionImpl = Literal["auto", "conv", "fft"]

# ``position_impl="auto"``: single-thread CPU timings of the position lambdas (B=8, v=64, k=16,
# u=1; H=W in 14, 28, 56; kernels 3..111) put the chunked FFT ahead of the direct correlation
# for forward+backward once the map has >= 400 positions and the kernel >= 7x7, and for the
# forward alone once the map has >= 1024 positions and the kernel >= 20x20.
_AUTO_FFT_TRAIN = (400, 49)  # (min map positions, min kernel area) when gradients are needed
_AUTO_FFT_INFER = (1024, 400)  # the same for inference
# Complex elements per FFT chunk (4 MB in complex64).
_FFT_CHUNK_ELEMENTS = 2**19


def _fft_len(n: int) -> int:
    """Smallest 7-smooth integer (only prime factors 2, 3, 5, 7) that is >= n: a fast FFT size."""
    while True:
        m = n
        for p in (2, 3, 5, 7):
            while m % p == 0:
                m //= p
        if m == 1:
            return n
        n += 1


class _RelativeCorrelation(torch.autograd.Function):
    """``out[B,k,n] = sum_{u,t} R[k,u,t] V[B,u,n+t]``, zero padding, as ``conv2d`` with a
    backward made of forward convolutions.

    The autograd backward of a large-kernel ``conv2d`` on CPU falls onto slow paths (its
    weight gradient at 28x28 with a 55x55 kernel takes ~50x the forward). The gradients here
    are the same correlations with the roles of the operands swapped, which run as fast
    forward convolutions:

        dR[k,u,t] = sum_{B,n} G[B,k,n] V[B,u,n+t]    conv2d(pad(V)^T, G^T)
        dV[B,u,m] = sum_{k,n} G[B,k,n] R[k,u,m-n]    conv2d(pad(R)^T, flip(G)) (kernel ~ map)
                                                     or conv_transpose2d(G, R)  (small kernel)
    The backward is built from differentiable ops, so double backward works too.
    """

    @staticmethod
    def forward(ctx, values: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
        ph, pw = kernel.shape[-2] // 2, kernel.shape[-1] // 2
        out = F.conv2d(values, kernel, padding=(ph, pw))
        # Save what the convolution used (autocast may have lowered it): the backward runs
        # outside autocast and needs one dtype; autograd casts the gradients back.
        ctx.save_for_backward(values.to(out.dtype), kernel.to(out.dtype))
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        values, kernel = ctx.saved_tensors
        grad = grad.to(values.dtype)
        hh, ww = values.shape[-2:]
        ph, pw = kernel.shape[-2] // 2, kernel.shape[-1] // 2
        grad_values = grad_kernel = None
        if ctx.needs_input_grad[0]:
            if (2 * ph + 1) * (2 * pw + 1) * 2 >= hh * ww:
                # Batch u, channels k, kernel = the flipped output gradient (H x W).
                padded = F.pad(kernel.transpose(0, 1), (ww - 1 - pw,) * 2 + (hh - 1 - ph,) * 2)
                grad_values = F.conv2d(padded, grad.flip(-2, -1)).transpose(0, 1)
            else:
                grad_values = F.conv_transpose2d(grad, kernel, padding=(ph, pw))
        if ctx.needs_input_grad[1]:
            grad_kernel = _correlation_kernel_grad(values, grad, ph, pw)
        return grad_values, grad_kernel


def _correlation_kernel_grad(
    values: torch.Tensor, grad: torch.Tensor, ph: int, pw: int
) -> torch.Tensor:
    """``dR[k,u,t] = sum_{B,n} G[B,k,n] V[B,u,n+t]`` for |t| <= (ph, pw), as one forward
    ``conv2d``: batch u, channels B, kernel = the output gradient (H x W)."""
    padded = F.pad(values, (pw, pw, ph, ph)).transpose(0, 1)
    return F.conv2d(padded, grad.transpose(0, 1)).transpose(0, 1)


class _FFTCorrelation(torch.autograd.Function):
    """The correlation of :class:`_RelativeCorrelation` evaluated through FFTs.

    Only the real operands are saved for the backward (autograd through the FFTs would keep
    their complex spectra, several times the size of the values). With ``R_f`` the spectrum
    of the kernel placed at offsets ``t mod L`` (the forward multiplies by ``conj(R_f)``),
    the backward transforms V and G once per chunk of B and computes::

        dV_f      = sum_k G_f[k] R_f[k, u]                      (a convolution)
        dR[k,u,t] = irfft(sum_B conj(G_f[k]) V_f[u])[t],  |t| <= p

    Transform lengths L >= H + p make both exact (wrapped indices land on zero padding).
    Both are built from differentiable ops, so double backward works too.
    """

    @staticmethod
    def forward(ctx, values: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(values, kernel)
        return _correlate_fft(values, kernel)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        values, kernel = ctx.saved_tensors
        values_dtype = values.dtype
        big, u, hh, ww = values.shape
        k = kernel.shape[0]
        ph, pw = kernel.shape[-2] // 2, kernel.shape[-1] // 2
        lh, lw = _fft_len(hh + ph), _fft_len(ww + pw)
        want_values, want_kernel = ctx.needs_input_grad[:2]
        with torch.autocast(values.device.type, enabled=False):
            dtype = torch.promote_types(upcast(values).dtype, upcast(grad).dtype)
            values, grad = values.to(dtype), grad.to(dtype)
            kernel_f = torch.fft.rfft2(_wrapped_kernel(kernel.to(dtype), lh, lw))  # (k,u,L,.)
            chunk = max(1, _FFT_CHUNK_ELEMENTS // (k * u * lh * (lw // 2 + 1)))
            grad_values, spectrum = [], 0
            for start in range(0, big, chunk):
                g_f = torch.fft.rfft2(grad[start : start + chunk], s=(lh, lw))  # (B',k,L,.)
                if want_values:
                    dv_f = sum(g_f[:, i, None] * kernel_f[None, i] for i in range(k))
                    grad_values.append(torch.fft.irfft2(dv_f, s=(lh, lw))[..., :hh, :ww])
                if want_kernel:
                    v_f = torch.fft.rfft2(values[start : start + chunk], s=(lh, lw))
                    spectrum = spectrum + (g_f.conj()[:, :, None] * v_f[:, None]).sum(0)
        d_values = d_kernel = None
        if want_values:
            d_values = torch.cat(grad_values).to(values_dtype)
        if want_kernel:
            corr = torch.roll(torch.fft.irfft2(spectrum, s=(lh, lw)), (ph, pw), dims=(-2, -1))
            d_kernel = corr[..., : 2 * ph + 1, : 2 * pw + 1].to(kernel.dtype)
        return d_values, d_kernel


def _wrapped_kernel(kernel: torch.Tensor, lh: int, lw: int) -> torch.Tensor:
    """Zero-pad a (k, u, 2p+1, 2q+1) kernel to (lh, lw) with offset t at index t mod L."""
    ph, pw = kernel.shape[-2] // 2, kernel.shape[-1] // 2
    w = F.pad(kernel, (0, lw - 2 * pw - 1, 0, lh - 2 * ph - 1))
    return torch.roll(w, shifts=(-ph, -pw), dims=(-2, -1))  # w[t mod L] = R[t + p]


def relative_position_lambdas(
    values: torch.Tensor, kernel: torch.Tensor, impl: PositionImpl = "auto"
) -> torch.Tensor:
    """Position lambdas ``L_p[b,k,v,n] = sum_{t,u} R[k,u,t] V[b,u,v,n+t]`` (zero padding).

    Args:
        values: V laid out (b, u, v, H, W).
        kernel: the relative embeddings R as (k, u, KH, KW) with KH, KW odd; the centre
            ``(KH // 2, KW // 2)`` is the offset (0, 0) and index ``(i, j)`` the offset
            ``(i - KH // 2, j - KW // 2)`` of the context position from the query.
        impl: ``"conv"`` (direct correlation: the paper's Conv3d over (b, u, v, H, W) with a
            (1, KH, KW) kernel, run as a ``conv2d`` with v folded into the batch),
            ``"fft"`` (circular correlation of zero-padded maps, exact), or ``"auto"``.

    Returns:
        (b, k, v, H, W). Offsets beyond the map (|i| >= H) never meet a value, so the kernel is
        first cropped to at most (2H-1) x (2W-1). Memory O(b k v H W); no (N, N) table.
    """
    b, u, v, hh, ww = values.shape
    kh, kw = kernel.shape[-2:]
    ph, pw = min(kh // 2, hh - 1), min(kw // 2, ww - 1)
    kernel = kernel[..., kh // 2 - ph : kh // 2 + ph + 1, kw // 2 - pw : kw // 2 + pw + 1]
    if impl == "auto":
        needs_grad = torch.is_grad_enabled() and (values.requires_grad or kernel.requires_grad)
        impl = _auto_impl(hh, ww, ph, pw, needs_grad)
    folded = rearrange(values, "b u v x y -> (b v) u x y")  # v joins the batch: conv2d
    if torch.onnx.is_in_onnx_export() or torch.compiler.is_exporting():
        # Export traces the plain correlation (the same sum; no autograd.Function, no FFT).
        out = F.conv2d(folded, kernel.to(values.dtype), padding=(ph, pw))
    elif impl == "conv":
        out = _RelativeCorrelation.apply(folded, kernel.to(values.dtype))
    elif impl == "fft":
        out = _FFTCorrelation.apply(folded, kernel)
    else:
        raise ValueError(f"impl must be 'auto', 'conv' or 'fft', got {impl!r}")
    return rearrange(out, "(b v) k x y -> b k v x y", b=b)


def _auto_impl(hh: int, ww: int, ph: int, pw: int, needs_grad: bool) -> Literal["conv", "fft"]:
    """Direct correlation for small maps or kernels, FFT for large ones (see _AUTO_FFT_*)."""
    min_positions, min_area = _AUTO_FFT_TRAIN if needs_grad else _AUTO_FFT_INFER
    large = hh * ww >= min_positions and (2 * ph + 1) * (2 * pw + 1) >= min_area
    return "fft" if large else "conv"


def _correlate_fft(values: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """``out[B,k,n] = sum_{u,t} R[k,u,t] V[B,u,n+t]`` (zero padding) through the FFT.

    values (B, u, H, W), kernel (k, u, 2p+1, 2q+1) with p < H, q < W -> (B, k, H, W).
    A circular correlation over L >= H + p rows (and L' >= W + q columns) equals the
    zero-padded one: offsets the kernel does not cover (p < |d| < H) land on zeros of the
    wrapped kernel. Runs in float32 for half inputs, over chunks of B so that the complex
    intermediates stay a few MB (several times faster on CPU than one large batch).
    """
    out_dtype = values.dtype
    big, u, hh, ww = values.shape
    k = kernel.shape[0]
    ph, pw = kernel.shape[-2] // 2, kernel.shape[-1] // 2
    lh, lw = _fft_len(hh + ph), _fft_len(ww + pw)
    with torch.autocast(values.device.type, enabled=False):
        values = upcast(values)
        w_f = torch.fft.rfft2(_wrapped_kernel(kernel.to(values.dtype), lh, lw)).conj()
        chunk = max(1, _FFT_CHUNK_ELEMENTS // (k * lh * (lw // 2 + 1)))
        outs = []
        for start in range(0, big, chunk):
            v_f = torch.fft.rfft2(values[start : start + chunk], s=(lh, lw))  # (B', u, L, .)
            out_f = sum(v_f[:, None, i] * w_f[None, :, i] for i in range(u))  # sum over u
            outs.append(torch.fft.irfft2(out_f, s=(lh, lw))[..., :hh, :ww])
        out = torch.cat(outs) if len(outs) > 1 else outs[0]
    return out.to(out_dtype)


# On CPU, maps with at least this many positions apply the lambdas with
# :class:`_ApplyLambdas` (products along the contiguous positions); smaller ones with
# einsums. Single thread, batch 128, h=4, k=16, forward+backward of the position product
# alone: 3.3x faster than the einsum at 32x32 (v=4), 1.4x at 16x16 (v=16), 1.9x at 8x8
# (v=32), slower at 4x4; the whole layer 1.1-1.3x (the correlation and projections stay).
_APPLY_LOOP_MIN_POSITIONS = 64


class _ApplyLambdas(torch.autograd.Function):
    """``y[b,h,v,n] = sum_k q[b,h,k,n] (L_c[b,k,v] + L_p[b,k,v,n])``, contiguous (b, h, v, n).

    ``torch.einsum`` runs the position part as a batched matrix product over (b, n) of
    (h, k) x (k, v) matrices, tiny for the small maps of CIFAR-size networks (4 x 16 x 4 at
    32x32), after copying both operands into (b, n)-major layouts. Here the content part is
    one matrix product per (image, head) (``L_c^T q``, q read in place) and the position part
    k multiply-accumulates along the contiguous positions, into the same output; the
    backward is two matrix products and v + h multiply-accumulates. Same sums, another order
    of additions. ``lam_p`` may be any strided view (the correlation returns (b, v, k, n)
    memory). The backward is built from differentiable ops, so double backward works too.
    """

    @staticmethod
    def forward(ctx, q: torch.Tensor, lam_c: torch.Tensor, lam_p: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(q, lam_c, lam_p)
        return _apply_lambdas(q, lam_c, lam_p, inplace=True)

    @staticmethod
    def backward(
        ctx, grad: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        q, lam_c, lam_p = ctx.saved_tensors
        grad = grad.contiguous()
        h, v = q.shape[1], lam_p.shape[2]
        grad_q = grad_c = grad_p = None
        # in place unless a double backward records this backward (create_graph)
        acc = _accumulate if torch.is_grad_enabled() else _accumulate_
        if ctx.needs_input_grad[0]:  # dq[b,h,k,n] = sum_v G[b,h,v,n] L[b,k,v,n]
            grad_q = torch.matmul(lam_c.unsqueeze(1), grad)
            for j in range(v):
                grad_q = acc(grad_q, grad[:, :, None, j], lam_p[:, None, :, j])
        if ctx.needs_input_grad[1]:  # dL_c[b,k,v] = sum_{h,n} q[b,h,k,n] G[b,h,v,n]
            grad_c = torch.matmul(q, grad.transpose(-1, -2)).sum(1)
        if ctx.needs_input_grad[2]:  # dL_p[b,k,v,n] = sum_h q[b,h,k,n] G[b,h,v,n]
            grad_p = q[:, 0, :, None] * grad[:, 0, None]
            for j in range(1, h):
                grad_p = acc(grad_p, q[:, j, :, None], grad[:, j, None])
        return grad_q, grad_c, grad_p


def _accumulate(total: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.addcmul(total, a, b)


def _accumulate_(total: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return total.addcmul_(a, b)


def _apply_lambdas(
    q: torch.Tensor, lam_c: torch.Tensor, lam_p: torch.Tensor, inplace: bool
) -> torch.Tensor:
    """Forward of :class:`_ApplyLambdas`: ``L_c^T q`` then k multiply-accumulates of L_p."""
    acc = _accumulate_ if inplace else _accumulate
    y = torch.matmul(lam_c.transpose(1, 2).unsqueeze(1), q)  # (b, h, v, n), contiguous
    for i in range(q.shape[2]):
        y = acc(y, q[:, :, i, None], lam_p[:, None, i])
    return y


def apply_lambdas(q: torch.Tensor, lam_c: torch.Tensor, lam_p: torch.Tensor) -> torch.Tensor:
    """``y[b,h,v,n] = sum_k q[b,h,k,n] (L_c[b,k,v] + L_p[b,k,v,n])``: LambdaNetworks Eq. (1)'s
    ``y_n = lambda_n^T q_n`` with a lambda per position, contiguous (b, h, v, n).

    q (b, h, k, n), lam_c (b, k, v), lam_p (b, k, v, n). On CPU, maps of at least
    ``_APPLY_LOOP_MIN_POSITIONS`` positions run through :class:`_ApplyLambdas` (measured
    there); smaller maps, other devices, export and tensor-dispatch modes (FLOP counters,
    fake and meta tensors, which should see the contraction itself) run the einsums. Both
    compute the same sums.
    """
    if (
        q.shape[-1] < _APPLY_LOOP_MIN_POSITIONS
        or q.device.type != "cpu"
        or is_in_torch_dispatch_mode()
        or torch.onnx.is_in_onnx_export()
        or torch.compiler.is_exporting()
    ):
        lam = lam_c.unsqueeze(-1) + lam_p  # one lambda per query position n
        return torch.einsum("bhkn,bkvn->bhvn", q, lam).contiguous()
    if torch.is_autocast_enabled("cpu"):  # the dtype the einsums would compute in
        dtype = torch.get_autocast_dtype("cpu")
    else:
        dtype = torch.promote_types(torch.promote_types(q.dtype, lam_c.dtype), lam_p.dtype)
    q, lam_c, lam_p = q.to(dtype), lam_c.to(dtype), lam_p.to(dtype)
    if torch.is_grad_enabled() and any(t.requires_grad for t in (q, lam_c, lam_p)):
        return _ApplyLambdas.apply(q, lam_c, lam_p)
    return _apply_lambdas(q, lam_c, lam_p, inplace=True)


class LambdaLayer(nn.Module):
    """Multi-query lambda layer with content and (optionally) relative position lambdas.

    Implements LambdaNetworks (Bello, ICLR 2021, arXiv:2102.08602) Sec. 3 and its pseudo-code:
    ``y_n = (L_c + L_p[n])^T q_n`` per head, with
    ``L_c = sum_m softmax_m(K)_m V_m^T`` and ``L_p[n] = sum_m E[n,m] V_m^T`` (see module
    docstring for the index form and the relative-offset convention ``E[n, m] = R[m - n]``).

    Args:
        dim: input channels d.
        dim_out: output channels (default ``dim``); must be divisible by ``heads``.
        dim_k: query/key depth k (paper default 16).
        heads: query heads h (default 4); the value depth is ``v = dim_out // heads``.
        dim_u: intra-depth u (default 1).
        r: odd size of the local context of the lambda convolution (paper: 23).
        feat_size: ``(H, W)`` (or ``H`` for a square map) of the global relative position
            table (2H-1, 2W-1, k, u); the input must then be exactly (H, W).
            Exactly one of ``r`` / ``feat_size`` gives position lambdas; neither gives the
            content lambda only.
        stride: 1, or 2 to append ``AvgPool2d(3, 2, padding=1)``.
        position_impl: how the position correlation runs: ``"conv"`` (direct), ``"fft"`` or
            ``"auto"`` (FFT for large maps with large kernels, thresholds measured on CPU,
            see ``_AUTO_FFT_*``). All give the same result up to rounding; only speed and
            memory differ. No choice gathers the (N, N, k, u) table.

    Attributes:
        to_q, to_k, to_v: 1x1 convolutions without bias, d -> k*h, d -> k*u, d -> v*u.
            Channel layouts: q ``(h k)``, keys ``(u k)``, values ``(u v)``.
        norm_q, norm_v: BatchNorm2d on queries and values (not on keys), as in the paper
            (:class:`~beyond_attention.layers.norms.BatchNorm2d`: exact gradients at batch 1).
        pos_conv: (local form) ``Conv3d(u, k, (1, r, r), padding=(0, r//2, r//2), bias=False)``;
            ``pos_conv(V)`` on V laid out (b, u, v, H, W) is exactly the position lambdas; the
            forward uses its weight through :func:`relative_position_lambdas` (same result,
            faster backward, FFT for large maps).
        rel_pos_emb: (global form) parameter (2H-1, 2W-1, k, u); ``rel_pos_emb[i, j]`` is the
            embedding of the offset ``(i - (H-1), j - (W-1))`` of the context position from
            the query (the convention of the ``lambda-networks`` package).

    Initialisation (the paper gives none in the text): projections ~ N(0, 1/d) (fan-in
    normal, as in its pseudo-code's initializer); position embeddings ~ N(0, 1/(k u m)) with
    m the number of context positions a query sees (r^2 local, H W global), so that with
    unit-variance (batch-normalised) queries and values the position output starts with
    unit variance whatever r or the map size. The paper's lambda convolution has no bias.

    Shapes: ``x`` (B, dim, H, W) -> (B, dim_out, H, W), or (B, dim_out, ceil(H/2), ceil(W/2))
    with ``stride=2``. Softmax over keys and the batch norms run in float32 under autocast.

    Map capture reports ``"keys"`` (B, u, k, H*W), the keys normalised over positions;
    ``"content_lambda"`` (B, k, v); and ``"position_kernel"`` (k, u, KH, KW), R as in
    :meth:`position_kernel` (when the layer has position lambdas).
    """

    map_hook: Callable[..., None] | None = None
    """Map capture (:func:`beyond_attention.viz.capture_maps` sets it per instance): when
    not ``None`` the forward also calls ``map_hook(name, tensor, **grids)``; off by default,
    and then nothing extra runs."""

    def __init__(
        self,
        dim: int,
        dim_out: int | None = None,
        dim_k: int = 16,
        heads: int = 4,
        dim_u: int = 1,
        r: int | None = None,
        feat_size: int | tuple[int, int] | None = None,
        stride: int = 1,
        *,
        position_impl: PositionImpl = "auto",
    ) -> None:
        super().__init__()
        dim_out = dim if dim_out is None else dim_out
        for name, value in (("dim", dim), ("dim_out", dim_out), ("dim_k", dim_k),
                            ("heads", heads), ("dim_u", dim_u)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        check_divisible(dim_out, heads, "dim_out", "heads")
        if r is not None and feat_size is not None:
            raise ValueError(
                f"give at most one of r (local lambda convolution) and feat_size (global "
                f"relative positions), got r={r!r} and feat_size={feat_size!r}"
            )
        if r is not None and (not isinstance(r, int) or r < 1 or r % 2 == 0):
            raise ValueError(f"r must be a positive odd integer, got r={r!r}")
        if feat_size is not None:
            feat_size = (feat_size, feat_size) if isinstance(feat_size, int) else feat_size
            if (
                not isinstance(feat_size, (tuple, list))
                or len(feat_size) != 2
                or not all(isinstance(s, int) and s >= 1 for s in feat_size)
            ):
                raise ValueError(
                    f"feat_size must be a positive int or a pair (H, W) of them, "
                    f"got feat_size={feat_size!r}"
                )
            feat_size = (int(feat_size[0]), int(feat_size[1]))
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got stride={stride!r}")
        if position_impl not in ("auto", "conv", "fft"):
            raise ValueError(
                f"position_impl must be 'auto', 'conv' or 'fft', got {position_impl!r}"
            )

        self.dim = dim
        self.dim_out = dim_out
        self.dim_k = dim_k
        self.heads = heads
        self.dim_u = dim_u
        self.dim_v = dim_out // heads
        self.r = r
        self.feat_size: tuple[int, int] | None = feat_size
        self.stride = stride
        self.position_impl = position_impl

        self.to_q = nn.Conv2d(dim, dim_k * heads, 1, bias=False)
        self.to_k = nn.Conv2d(dim, dim_k * dim_u, 1, bias=False)
        self.to_v = nn.Conv2d(dim, self.dim_v * dim_u, 1, bias=False)
        # BatchNorm2d of .norms: the rearranges after these norms hand them strided
        # gradients, which torch's CPU backward gets wrong at batch size 1.
        self.norm_q = BatchNorm2d(dim_k * heads)
        self.norm_v = BatchNorm2d(self.dim_v * dim_u)

        self.pos_conv: nn.Conv3d | None = None
        self.rel_pos_emb: nn.Parameter | None = None
        if r is not None:
            self.pos_conv = nn.Conv3d(
                dim_u, dim_k, (1, r, r), padding=(0, r // 2, r // 2), bias=False
            )
        elif feat_size is not None:
            h, w = feat_size
            self.rel_pos_emb = nn.Parameter(torch.empty(2 * h - 1, 2 * w - 1, dim_k, dim_u))

        self.pool = nn.AvgPool2d(3, 2, padding=1) if stride == 2 else nn.Identity()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Projections ~ N(0, 1/d); position embeddings ~ N(0, 1/(k u m)) (see class doc)."""
        for conv in (self.to_q, self.to_k, self.to_v):
            nn.init.normal_(conv.weight, std=self.dim**-0.5)
        for norm in (self.norm_q, self.norm_v):
            norm.reset_parameters()
        if self.pos_conv is not None:
            context = self.r * self.r
            nn.init.normal_(self.pos_conv.weight, std=(self.dim_k * self.dim_u * context) ** -0.5)
        if self.rel_pos_emb is not None:
            context = self.feat_size[0] * self.feat_size[1]
            nn.init.normal_(self.rel_pos_emb, std=(self.dim_k * self.dim_u * context) ** -0.5)

    def position_kernel(self) -> torch.Tensor | None:
        """The relative embeddings R as a correlation kernel (k, u, KH, KW), or None.

        Local: ``pos_conv.weight[:, :, 0]`` (r x r). Global: ``rel_pos_emb`` permuted to
        (k, u, 2H-1, 2W-1). Index ``(i, j)`` is the offset ``(i - KH//2, j - KW//2)``.
        """
        if self.pos_conv is not None:
            return self.pos_conv.weight[:, :, 0]
        if self.rel_pos_emb is not None:
            return self.rel_pos_emb.permute(2, 3, 0, 1)
        return None

    def _check_input(self, x: torch.Tensor) -> None:
        check_image(x, self.dim)
        if self.feat_size is not None and tuple(x.shape[-2:]) != self.feat_size:
            raise ValueError(
                f"x must have spatial size (H, W) equal to feat_size={self.feat_size} for the "
                f"global relative position table, got shape {tuple(x.shape)}"
            )

    @staticmethod
    def _norm(norm: nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
        # Batch norm in float32 when activations are half precision (autocast).
        if x.dtype in LOW_PRECISION and norm.weight.dtype == torch.float32:
            x = x.float()
        return norm(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, dim, H, W) -> (B, dim_out, H, W) (halved by the pool when ``stride=2``)."""
        self._check_input(x)
        hh = x.shape[-2]
        q = self._norm(self.norm_q, self.to_q(x))
        k = self.to_k(x)
        v = self._norm(self.norm_v, self.to_v(x))

        q = rearrange(q, "b (h k) x y -> b h k (x y)", h=self.heads)
        k = rearrange(k, "b (u k) x y -> b u k (x y)", u=self.dim_u)
        v = rearrange(v, "b (u v) x y -> b u v (x y)", u=self.dim_u)
        k = upcast(k).softmax(dim=-1).to(v.dtype)  # normalised over context positions m

        lam_c = torch.einsum("bukm,buvm->bkv", k, v)  # content lambda (b, k, v)
        kernel = self.position_kernel()
        if self.map_hook is not None:
            grid = tuple(x.shape[-2:])
            self.map_hook("keys", k, query_hw=grid)
            self.map_hook("content_lambda", lam_c)
            if kernel is not None:
                self.map_hook("position_kernel", kernel)
        if kernel is None:
            y = torch.einsum("bhkn,bkv->bhvn", q, lam_c)
        else:
            v_map = rearrange(v, "b u v (x y) -> b u v x y", x=hh)
            lam_p = relative_position_lambdas(v_map, kernel, self.position_impl)  # (b,k,v,x,y)
            y = apply_lambdas(q, lam_c, lam_p.flatten(3))  # (L_c + L_p[n])^T q_n
        out = rearrange(y, "b h v (x y) -> b (h v) x y", x=hh)
        # contiguous: a strided output would hand the following BatchNorm a strided
        # gradient (wrong at batch 1 on CPU) and defeat channels-last
        return self.pool(out).contiguous()

    def extra_repr(self) -> str:
        pos = (
            f"r={self.r}" if self.r is not None
            else f"feat_size={self.feat_size}" if self.feat_size is not None
            else "content only"
        )
        return (
            f"dim={self.dim}, dim_out={self.dim_out}, dim_k={self.dim_k}, heads={self.heads}, "
            f"dim_u={self.dim_u}, {pos}, stride={self.stride}"
        )
