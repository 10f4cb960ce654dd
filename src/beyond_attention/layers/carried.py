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
A stack runs as :func:`run_carried` does: the scores start as ``None`` and each carrying
mixer's output scores are the next one's ``prev_scores``; other mixers are called as
``mixer(x)`` and pass the scores on unchanged. The ViT blocks
(:class:`beyond_attention.models.vit.Block`) and LaViT's blocks follow this convention.

What is carried, and the return flags of the attention layers:

* What is carried is the *pre-softmax scores* ``S = Q K^T / sqrt(d)`` in float32: LaViT's
  transforms act on them, and each layer takes its own softmax after them.
* :class:`~beyond_attention.layers.less_attention.VanillaAttention` therefore takes
  ``return_scores`` (default True): ``forward(x, hw, attn_bias=None, return_scores=True)``
  returns ``(out, S)``. :class:`~beyond_attention.layers.less_attention.LessAttention`
  always returns its transformed scores: ``forward(x, prev_scores, hw) -> (out, S')``.
* Layers that can hand back their attention for inspection return *probabilities* (after
  the softmax, or the double normalisation of external attention), so their flag is
  ``return_attn``: :class:`~beyond_attention.layers.self_attention.SelfAttention` and
  :class:`~beyond_attention.layers.external_attention.ExternalAttention`. Probabilities
  are never carried.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

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


def run_carried(
    mixers: Iterable[nn.Module], x: torch.Tensor, prev_scores: torch.Tensor | None = None
) -> tuple[torch.Tensor, Any]:
    """Run ``mixers`` one after the other on ``x``, threading the carried scores.

    A :class:`CarriesAttention` mixer is called as ``mixer(x, prev_scores)`` and its scores
    become the next ``prev_scores``; any other mixer as ``mixer(x)``, leaving the scores as
    they are. Shapes: ``x`` (B, N, C) -> ``(out (B, N, C), scores (B, h, N, M) or the
    given prev_scores)``. (No residuals or norms: a model's blocks add those around their
    mixer and thread the scores the same way.)
    """
    scores: Any = prev_scores
    for mixer in mixers:
        if isinstance(mixer, CarriesAttention):
            x, scores = mixer(x, scores)
        else:
            x = mixer(x)
    return x, scores
