"""Scaled dot-product attention on the fused kernels, in float32 for low precision on CPU.

``softmax(Q K^T / sqrt(d) + mask) V`` (Vaswani et al. 2017, eq. 1) through
``torch.nn.functional.scaled_dot_product_attention``. One exception to calling it as is:
on CPU, the fused kernel's bfloat16 and float16 paths are slower than its float32 path,
above all in the backward (torch 2.13, fused kernel, batch 128, 3 heads of 64 channels,
forward and backward: 85 ms in bfloat16 against 29 ms in float32 at 65 tokens, 329 against
241 ms at 257 tokens). So low-precision CPU inputs (as under ``torch.autocast("cpu")``) are
attended in float32 and the output is cast back: the attention is then both faster and
more precise. Other devices and float32 inputs call the kernel unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._validate import LOW_PRECISION


def scaled_dot_product_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """Attention of ``q`` (B, h, N, c) over ``k`` (B, h, M, c) and ``v`` (B, h, M, c').

    ``attn_mask`` (broadcastable to (B, h, N, M)) is added to the scores when it is a float
    tensor and keeps the positions where it is ``True`` when boolean, as in
    ``F.scaled_dot_product_attention``. Returns (B, h, N, c') in ``q``'s dtype.
    """
    if q.device.type != "cpu" or q.dtype not in LOW_PRECISION:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p)
    if attn_mask is not None and attn_mask.is_floating_point():
        attn_mask = attn_mask.float()
    with torch.autocast("cpu", enabled=False):
        out = F.scaled_dot_product_attention(
            q.float(), k.float(), v.float(), attn_mask=attn_mask, dropout_p=dropout_p
        )
    return out.to(q.dtype)
