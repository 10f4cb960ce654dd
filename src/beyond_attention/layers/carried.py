"""The carried-attention contract: mixers that hand their attention scores to the next layer.

LaViT's less-attention layers (Zhang et al., "You Only Need Less Attention at Each Stage in
Vision Transformers", CVPR 2024, arXiv:2406.00427, Sec. 3.2) compute no ``Q K^T`` of their
own: each transforms the attention scores of the layer before it. A model that stacks such
mixers threads the scores from block to block. Every mixer that takes part subclasses
:class:`CarriesAttention`, and a model asks ``isinstance(mixer, CarriesAttention)``; there
is one name for the carried state, ``prev_scores``, and one return convention::

    out, scores = mixer(x, prev_scores)     x (B, N, C) -> out (B, N, C)
                                            prev_scores, scores (B, h, N, M), float32,
                                            pre-softmax

A layer that computes its own attention (a vanilla layer) accepts ``prev_scores=None``;
a layer that transforms the previous scores requires them and says so in a clear error.
"""

from __future__ import annotations

import torch
from torch import nn


class CarriesAttention(nn.Module):
    """Base class of token mixers that take the previous layer's scores and return theirs.

    Shapes: ``forward(x, prev_scores)`` with ``x`` (B, N, C) and ``prev_scores``
    (B, h, N, M) or ``None`` returns ``(out, scores)``: ``out`` (B, N, C) and ``scores``
    (B, h, N, M), the pre-softmax attention scores in float32 for the next layer.
    """

    def forward(
        self, x: torch.Tensor, prev_scores: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError


def carries_attention(module: nn.Module) -> bool:
    """Whether ``module`` takes part in the carried-attention contract."""
    return isinstance(module, CarriesAttention)
