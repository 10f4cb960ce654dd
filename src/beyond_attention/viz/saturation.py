"""Attention saturation: how much each layer's attention differs from the previous one.

LaViT (Zhang et al., arXiv:2406.00427, Sec. 1 and 3) starts from the observation that in
deep ViTs the attention matrices of successive layers become very similar ("attention
saturation"), so recomputing them is waste. Measured here:

* **Layer-to-layer similarity** (any model whose consecutive layers have attention of the
  same shape): for layer l >= 1 and head h, the cosine similarity of the flattened maps
  ``cos(vec A_l[b, h], vec A_{l-1}[b, h])``, per image b; averaged over heads per image,
  then mean and standard deviation over the images.
* **LaViT, less-attention vs vanilla.** An LA layer has no Q and K of its own. We define
  *what vanilla attention would have computed at that layer* as the attention of the
  stage's VA layer (the last vanilla layer before it, with that layer's own Q/K
  projections and spatial reduction) applied to the LA layer's input tokens, without the
  residual carried from the previous stage: ``A_va(x_l) = softmax(Q(x_l) K(SR(x_l))^T /
  sqrt(d/h))``. Reported: ``cos(A_la, A_va(x_l))`` per head (mean over heads, spread over
  images), and ``cos(A_la, A_{l-1})``, the similarity to the attention it transforms.
* **A floor for the similarity.** Attention weights are non-negative, so the cosine of
  two maps is high whenever both are near uniform; ``cos(A_l, U)`` with U the uniform
  map (1/M everywhere) is reported beside it, per layer, as the reference.
* **Diagonality.** ``own``: the mean attention a query gives its own key cell
  (:func:`~beyond_attention.layers.less_attention.key_cell_index`), reported as a
  multiple of the uniform value 1/M; and the library's diagonality loss of the map.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..layers.less_attention import (
    LessAttention,
    VanillaAttention,
    diagonality_loss,
    key_cell_index,
)
from .capture import capture_maps, mixer_layers

__all__ = ["LayerStat", "head_cosine", "own_cell_mass", "saturation"]


def head_cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of two (B, h, N, M) maps per image and head -> (B, h)."""
    if a.shape != b.shape:
        raise ValueError(
            f"maps must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    return F.cosine_similarity(a.flatten(2).double(), b.flatten(2).double(), dim=-1)


def own_cell_mass(attn: torch.Tensor, query_hw, key_hw) -> torch.Tensor:
    """Per image, the mean over heads and queries of the attention on the query's own
    key cell, times M (1 = uniform attention): (B,)."""
    b, h, n, m = attn.shape
    own = torch.arange(n) if query_hw is None else key_cell_index(query_hw, key_hw or query_hw)
    picked = attn.gather(-1, own.view(1, 1, n, 1).expand(b, h, n, 1))
    return picked.mean(dim=(1, 2, 3)) * m


@dataclass
class LayerStat:
    """Statistics of one layer over the images (mean, std over images)."""

    layer: str
    family: str
    prev_sim_mean: float | None = None
    prev_sim_std: float | None = None
    prev_sim_heads: list[float] = field(default_factory=list)
    vanilla_sim_mean: float | None = None
    vanilla_sim_std: float | None = None
    uniform_sim_mean: float | None = None
    own_mass: float | None = None
    vanilla_own_mass: float | None = None
    diag_loss: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _stats(values: list[torch.Tensor]) -> tuple[float, float]:
    v = torch.cat(values).double()
    return float(v.mean()), float(v.std(unbiased=False))


@torch.no_grad()
def saturation(model: nn.Module, batches: Iterable[torch.Tensor]) -> list[LayerStat]:
    """Layer-to-layer similarity (and, for LaViT, the LA-vs-VA comparison) over batches
    of normalised images (B, C, H, W). Returns one :class:`LayerStat` per attention layer,
    in forward order."""
    model.eval()
    layers = mixer_layers(model)
    la_inputs: dict[str, list[tuple[torch.Tensor, Any]]] = {}
    handles = []
    for name, module, _ in layers:
        if isinstance(module, LessAttention):
            def pre(mod, args, kwargs, name=name):
                hw = args[2] if len(args) > 2 else kwargs.get("hw")
                la_inputs.setdefault(name, []).append((args[0].detach(), hw))
            handles.append(module.register_forward_pre_hook(pre, with_kwargs=True))
    # the stage's vanilla layer of each LA layer: the last VA before it
    va_of: dict[str, VanillaAttention] = {}
    last_va = None
    for name, module, _ in layers:
        if isinstance(module, VanillaAttention):
            last_va = module
        elif isinstance(module, LessAttention) and last_va is not None:
            va_of[name] = last_va

    prev_sims: dict[int, list[torch.Tensor]] = {}
    uniform_sims: dict[int, list[torch.Tensor]] = {}
    va_sims: dict[int, list[torch.Tensor]] = {}
    own: dict[int, list[torch.Tensor]] = {}
    va_own: dict[int, list[torch.Tensor]] = {}
    diag: dict[int, list[float]] = {}
    order: list[tuple[str, str, int]] = []
    try:
        for x in batches:
            la_inputs.clear()
            with capture_maps(model, names=("attn",)) as record:
                model(x)
            maps = record.per_layer("attn")
            if not maps:
                raise ValueError(f"{type(model).__name__} reports no attention maps to compare")
            if not order:
                order = [(m.layer, m.family, m.index) for m in maps]
            for i, m in enumerate(maps):
                flat = torch.full_like(m.tensor, 1.0 / m.tensor.shape[-1])
                uniform_sims.setdefault(i, []).append(head_cosine(m.tensor, flat).mean(dim=1))
                if i > 0 and maps[i - 1].tensor.shape == m.tensor.shape:
                    prev_sims.setdefault(i, []).append(head_cosine(m.tensor, maps[i - 1].tensor))
                if m.family in ("vanilla", "less"):
                    own.setdefault(i, []).append(own_cell_mass(m.tensor, m.query_hw, m.key_hw))
                if m.family == "less" and m.layer in va_of:
                    (xin, hw), = la_inputs[m.layer]
                    _, scores = va_of[m.layer](xin, hw, return_scores=True)
                    cf = scores.float().softmax(dim=-1).cpu()
                    va_sims.setdefault(i, []).append(head_cosine(m.tensor, cf))
                    va_own.setdefault(i, []).append(own_cell_mass(cf, m.query_hw, m.key_hw))
                    diag.setdefault(i, []).append(
                        float(diagonality_loss(m.tensor, m.query_hw, m.key_hw)) * len(cf))
    finally:
        for h in handles:
            h.remove()
    out = []
    for i, (layer, family, _) in enumerate(order):
        st = LayerStat(layer, family)
        if i in prev_sims:
            per_image = [s.mean(dim=1) for s in prev_sims[i]]
            st.prev_sim_mean, st.prev_sim_std = _stats(per_image)
            st.prev_sim_heads = [float(v) for v in torch.cat(prev_sims[i]).mean(dim=0)]
        if i in va_sims:
            st.vanilla_sim_mean, st.vanilla_sim_std = _stats([s.mean(dim=1) for s in va_sims[i]])
            st.vanilla_own_mass = _stats(va_own[i])[0]
            n_images = sum(len(s) for s in va_sims[i])
            st.diag_loss = float(np.sum(diag[i]) / n_images)
        st.uniform_sim_mean = _stats(uniform_sims[i])[0]
        if i in own:
            st.own_mass = _stats(own[i])[0]
        out.append(st)
    return out
