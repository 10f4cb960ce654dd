"""Collect the maps every token mixer of a model computes, without changing its output.

Inside ``with capture_maps(model) as maps:`` every supported layer of ``model`` reports the
maps of its forward pass; outside it the layers run exactly as before (a ``map_hook``
attribute that is ``None``, checked in their forward). Each report is a
:class:`CapturedMap`; attention-like maps of every family share one name and one layout::

    "attn"  (B, h, N_q, N_k)   queries x keys, per head
        self      softmax(Q K^T / sqrt(d/h))                 rows sum to 1 over the N keys
        vanilla   LaViT VA: softmax(Q K^T / sqrt(d/h) + bias) over the M reduced keys,
                  rows sum to 1
        less      LaViT LA: softmax(W_psi^T S^{l-1} W_theta), the transformed attention,
                  rows sum to 1 (Zhang et al., arXiv:2406.00427, Sec. 3.2)
        external  EA: keys are the S memory slots; with the paper's double normalisation
                  each column was a softmax over the N tokens, then each row (token) is
                  L1-normalised over the slots, so rows sum to 1 up to eps
                  (Guo et al., arXiv:2105.02358, Sec. 3.2, Alg. 1); h = 1 for the
                  single-head layer and the EANet block, e*h for multi-head EA
    "keys"            (B, u, k, N)   lambda layer: softmax of the keys over the N positions
    "content_lambda"  (B, k, v)      lambda layer: sum_m softmax(K)_m V_m^T
    "position_kernel" (k, u, KH, KW) lambda layer: relative position embeddings R, index
                                     (i, j) = offset (i - KH//2, j - KW//2)
                                     (Bello, arXiv:2102.08602, Sec. 3.2 and 4)

Maps are detached and copied to ``device`` (CPU by default) as float32; the
self-attention and VA fast paths (SDPA) still compute the layer's output, the
probabilities are computed beside it only while capturing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

from ..layers.external_attention import (
    ExternalAttention,
    ExternalAttentionBlock2d,
    MultiHeadExternalAttention,
)
from ..layers.lambda_layer import LambdaLayer
from ..layers.less_attention import LessAttention, VanillaAttention
from ..layers.self_attention import SelfAttention

__all__ = ["FAMILIES", "CapturedMap", "MapCapture", "capture_maps", "mixer_layers"]

HW = tuple[int, int]

# layer class -> family name (checked in order: the first match wins)
FAMILIES: tuple[tuple[type[nn.Module], str], ...] = (
    (SelfAttention, "self"),
    (VanillaAttention, "vanilla"),
    (LessAttention, "less"),
    (ExternalAttention, "external"),
    (MultiHeadExternalAttention, "external"),
    (ExternalAttentionBlock2d, "external"),
    (LambdaLayer, "lambda"),
)


def family_of(module: nn.Module) -> str | None:
    """The family name of a capturing layer, or ``None`` for any other module."""
    for cls, name in FAMILIES:
        if isinstance(module, cls):
            return name
    return None


def mixer_layers(model: nn.Module) -> list[tuple[str, nn.Module, str]]:
    """``(qualified name, module, family)`` of every capturing layer, in module order.

    Module order is the order of definition, which for every model here is the order of
    the forward pass (blocks in sequence).
    """
    if family_of(model) is not None:
        return [("", model, family_of(model))]  # type: ignore[list-item]
    return [(n, m, f) for n, m in model.named_modules() if (f := family_of(m)) is not None]


@dataclass
class CapturedMap:
    """One map reported by one layer in one forward call.

    Attributes:
        layer: the layer's qualified module name (``blocks.3.attn``).
        index: the layer's position among the model's capturing layers (0-based).
        family: ``self``, ``vanilla``, ``less``, ``external`` or ``lambda``.
        name: ``attn``, ``keys``, ``content_lambda`` or ``position_kernel``.
        tensor: the map (see the module docstring for its layout), float32.
        query_hw: the query (token) grid (H, W) when the layer knows it, else ``None``.
        key_hw: the key grid when it differs from the query grid (LaViT's reduced keys).
        call: how many forward calls of this layer came before this one.
    """

    layer: str
    index: int
    family: str
    name: str
    tensor: torch.Tensor
    query_hw: HW | None = None
    key_hw: HW | None = None
    call: int = 0


@dataclass
class MapCapture:
    """The maps captured so far, in the order the layers reported them."""

    layers: list[tuple[str, str]] = field(default_factory=list)  # (name, family) by index
    maps: list[CapturedMap] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.maps)

    def __iter__(self) -> Iterator[CapturedMap]:
        return iter(self.maps)

    def select(self, name: str = "attn", family: str | None = None) -> list[CapturedMap]:
        """The maps called ``name`` (of ``family`` if given), in report order."""
        return [m for m in self.maps if m.name == name and (family is None or m.family == family)]

    def per_layer(self, name: str = "attn", family: str | None = None) -> list[CapturedMap]:
        """One map per layer: the maps of all calls joined along the batch axis.

        ``position_kernel`` (a parameter, the same at every call) keeps its first report.
        Layers are in the order of their first report (the forward order).
        """
        order: dict[int, list[CapturedMap]] = {}
        for m in self.select(name, family):
            order.setdefault(m.index, []).append(m)
        out = []
        for group in order.values():
            first = group[0]
            if name == "position_kernel" or len(group) == 1:
                out.append(first)
            else:
                joined = torch.cat([g.tensor for g in group], dim=0)
                out.append(CapturedMap(first.layer, first.index, first.family, name, joined,
                                       first.query_hw, first.key_hw, 0))
        return out

    def clear(self) -> None:
        """Forget the maps captured so far (the layers keep reporting)."""
        self.maps.clear()


def _as_hw(hw: object) -> HW | None:
    if hw is None:
        return None
    h, w = hw  # type: ignore[misc]
    return int(h), int(w)


@contextlib.contextmanager
def capture_maps(
    model: nn.Module,
    *,
    names: tuple[str, ...] | None = None,
    device: str | torch.device = "cpu",
) -> Iterator[MapCapture]:
    """Capture the maps of every mixer of ``model`` while the block runs.

    Args:
        model: any module; every :data:`FAMILIES` layer inside it (or itself) reports.
        names: keep only maps of these names (default: all, see the module docstring).
        device: where captured maps are stored (default CPU).

    Yields a :class:`MapCapture` that fills during the forward passes run inside the
    block. The model's outputs are bitwise those of an uncaptured run.

    Raises:
        ValueError: ``model`` has no layer that can report maps, or is already being
            captured.
    """
    layers = mixer_layers(model)
    if not layers:
        kinds = ", ".join(sorted({cls.__name__ for cls, _ in FAMILIES}))
        raise ValueError(
            f"model {type(model).__name__} has no layer whose maps can be captured "
            f"(expected one of {kinds})"
        )
    busy = [n or type(m).__name__ for n, m, _ in layers if "map_hook" in vars(m)]
    if busy:
        raise ValueError(f"layers {busy[:3]} are already being captured (nested capture_maps)")
    record = MapCapture(layers=[(n, f) for n, _, f in layers])
    calls: dict[tuple[int, str], int] = {}

    def make_hook(index: int, layer: str, family: str):
        def hook(name: str, tensor: torch.Tensor, query_hw=None, key_hw=None) -> None:
            if names is not None and name not in names:
                return
            call = calls.get((index, name), 0)
            calls[(index, name)] = call + 1
            t = tensor.detach().to(device=device, dtype=torch.float32, copy=True)
            qhw = _as_hw(query_hw)
            khw = _as_hw(key_hw) if qhw is not None else None
            record.maps.append(CapturedMap(layer, index, family, name, t, qhw, khw, call))

        return hook

    try:
        for i, (name, module, family) in enumerate(layers):
            module.map_hook = make_hook(i, name, family)
        yield record
    finally:
        for _, module, _ in layers:
            vars(module).pop("map_hook", None)
