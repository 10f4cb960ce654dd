"""The contenders of the mixer benchmark: the library's mixers, the baselines and the peers.

:func:`mixer_entries` is the catalogue (name, label, role, what is measured, how it is
built). The LaViT layers (Zhang et al., arXiv:2406.00427, Sec. 3.2) are adapted to the
benchmark's token interface here: :class:`ReducedVanillaAttention` and
:class:`ReducedLessAttention` (keys reduced to 7 x 7 as in the LaViT models) and
:class:`CarriedLessMixer` (the factory's ``less`` mixer). Those that carry attention follow
the contract of :mod:`beyond_attention.layers.carried`; :func:`make_inputs` hands them the
scores of a vanilla layer, made by :func:`previous_attention`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..layers.carried import CarriesAttention
from ..layers.factory import create_mixer
from .baselines import BareGemms, NaiveSelfAttention, PeerLambdaTokens, peer_lambda_available
from .settings import Grid, MixerSettings


@dataclass(frozen=True)
class MixerEntry:
    """One contender of the sweep.

    Attributes:
        name: key in the results.
        label: legend label.
        role: ``"mixer"`` (the library's), ``"baseline"`` (a reference) or ``"peer"``.
        description: what exactly is measured.
        build: ``(settings, grid) -> module`` mapping (B, N, d) -> (B, N, d).
        vs_self: time it interleaved against SDPA self-attention (a crossover candidate).
        available: whether it can run here (peers are optional).
    """

    name: str
    label: str
    role: str
    description: str
    build: Callable[[MixerSettings, Grid], nn.Module]
    vs_self: bool = False
    available: Callable[[], bool] = lambda: True


def lambda_kwargs(s: MixerSettings) -> dict[str, Any]:
    """The lambda layer's k, h and u of the settings, as keyword arguments."""
    return {"dim_k": s.lambda_k, "heads": s.lambda_heads, "dim_u": s.lambda_u}


def mixer_entries() -> dict[str, MixerEntry]:
    """Every contender the sweep knows, by name, in report order."""
    entries = [
        MixerEntry(
            "self",
            "SDPA self-attention",
            "baseline",
            "SelfAttention on F.scaled_dot_product_attention (fused kernel)",
            lambda s, g: create_mixer("self", s.dim, num_heads=s.heads),
        ),
        MixerEntry(
            "naive",
            "naive self-attention",
            "baseline",
            "softmax(QK^T/sqrt(d/h))V with the (B, h, N, N) matrix materialised",
            lambda s, g: NaiveSelfAttention(s.dim, num_heads=s.heads),
        ),
        MixerEntry(
            "ea_gemms",
            "EA bare GEMMs (floor)",
            "baseline",
            "x @ M_k^T @ M_v^T: the two products of EA without normalisation",
            lambda s, g: BareGemms(s.dim, s.memory_size),
        ),
        MixerEntry(
            "external",
            "external attention",
            "mixer",
            "ExternalAttention, double normalisation",
            lambda s, g: create_mixer("external", s.dim, memory_size=s.memory_size),
            vs_self=True,
        ),
        MixerEntry(
            "external_mh",
            "multi-head EA",
            "mixer",
            "MultiHeadExternalAttention, 4x expansion, shared memories",
            lambda s, g: create_mixer(
                "external_mh", s.dim, num_heads=s.heads, memory_size=s.memory_size
            ),
            vs_self=True,
        ),
        MixerEntry(
            "lambda",
            "lambda (local r)",
            "mixer",
            "LambdaLayer with the lambda convolution (local context r x r)",
            lambda s, g: create_mixer(
                "lambda", s.dim, grid_size=g, r=s.lambda_r, **lambda_kwargs(s)
            ),
            vs_self=True,
        ),
        MixerEntry(
            "lambda_global",
            "lambda (global)",
            "mixer",
            "LambdaLayer with global relative positions over the whole map",
            lambda s, g: create_mixer(
                "lambda", s.dim, grid_size=g, feat_size=g, **lambda_kwargs(s)
            ),
            vs_self=True,
        ),
        MixerEntry(
            "lambda_peer",
            "lambda-networks (local r)",
            "peer",
            "lambda_networks.LambdaLayer(r=r), the open-source peer",
            lambda s, g: PeerLambdaTokens(s.dim, g, r=s.lambda_r, **lambda_kwargs(s)),
            available=peer_lambda_available,
        ),
        MixerEntry(
            "lambda_global_peer",
            "lambda-networks (global)",
            "peer",
            "lambda_networks.LambdaLayer(n=H): gathers an (N, N, k, u) table",
            lambda s, g: PeerLambdaTokens(s.dim, g, r=None, **lambda_kwargs(s)),
            available=peer_lambda_available,
        ),
        MixerEntry(
            "less",
            "less-attention (LA, N keys)",
            "mixer",
            "LaViT LA layer on all N keys (create_mixer('less', layer_index=1)): "
            "W_theta (N x N) transforms the previous scores, Psi only for N <= 256",
            lambda s, g: CarriedLessMixer(s.dim, s.heads, g),
            vs_self=True,
        ),
        MixerEntry(
            "vanilla_sr",
            "vanilla SR attention (7x7 keys)",
            "baseline",
            "LaViT/PVTv2 vanilla layer: keys and values reduced to a 7x7 grid",
            lambda s, g: ReducedSelfAttention(s.dim, s.heads, g),
        ),
        MixerEntry(
            "less_sr",
            "less-attention (LA, 7x7 keys)",
            "mixer",
            "LaViT LA layer as in the LaViT models: keys/values reduced to a 7x7 grid",
            lambda s, g: ReducedLessAttention(s.dim, s.heads, g),
            vs_self=True,
        ),
        MixerEntry(
            "mlp_mixer",
            "MLP-Mixer token MLP",
            "baseline",
            "TokenMixingMLP, hidden d/2 (weights tied to N)",
            lambda s, g: create_mixer("mlp_mixer", s.dim, num_tokens=g[0] * g[1]),
        ),
        MixerEntry(
            "feedforward",
            "feed-forward over tokens",
            "baseline",
            "FeedForwardMixer, hidden 4N (weights tied to N)",
            lambda s, g: create_mixer("feedforward", s.dim, num_tokens=g[0] * g[1]),
        ),
    ]
    return {e.name: e for e in entries}


DEFAULT_MIXERS: tuple[str, ...] = tuple(mixer_entries())


# ---------------------------------------------------------------------------------------------
# the LaViT adapters and the attention state they carry


def reduced_key_grid(grid: Grid, keys_side: int = 7) -> tuple[int, Grid]:
    """Spatial-reduction ratio giving about ``keys_side`` keys per side, and the key grid.

    LaViT's models (like PVTv2) reduce keys and values to a 7 x 7 grid at every stage at
    224 px: the ratio is ``max(1, min(H, W) // 7)``.
    """
    sr = max(1, min(grid) // keys_side)
    return sr, (grid[0] // sr, grid[1] // sr)


class ReducedVanillaAttention(CarriesAttention):
    """LaViT's vanilla layer with keys and values reduced to a 7 x 7 grid (PVTv2-style).

    :class:`~beyond_attention.layers.less_attention.VanillaAttention` with ``sr_ratio``
    from :func:`reduced_key_grid` (arXiv:2406.00427, Sec. 3.1). It computes its own
    attention: ``forward(x, prev_scores=None) -> (out, scores)`` ignores ``prev_scores``;
    x and out (B, H*W, d), scores (B, h, H*W, M) pre-softmax with M the reduced key count.
    """

    def __init__(self, dim: int, num_heads: int, grid: Grid) -> None:
        super().__init__()
        from ..layers.less_attention import VanillaAttention

        self.grid = tuple(grid)
        sr, _ = reduced_key_grid(self.grid)
        self.attn = VanillaAttention(dim, num_heads=num_heads, sr_ratio=sr)

    def forward(
        self, x: torch.Tensor, prev_scores: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.attn(x, hw=self.grid, return_scores=True)


class ReducedSelfAttention(nn.Module):
    """The same vanilla layer when no layer inherits its scores: output only, on the fused
    ``F.scaled_dot_product_attention`` kernel. Shapes: (B, H*W, d) -> (B, H*W, d).
    """

    def __init__(self, dim: int, num_heads: int, grid: Grid) -> None:
        super().__init__()
        from ..layers.less_attention import VanillaAttention

        self.grid = tuple(grid)
        sr, _ = reduced_key_grid(self.grid)
        self.attn = VanillaAttention(dim, num_heads=num_heads, sr_ratio=sr)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(x, hw=self.grid, return_scores=False)


class InheritsAttention(CarriesAttention):
    """A carried-attention mixer that transforms the previous layer's scores.

    :meth:`previous_layer` builds the vanilla layer that precedes it in a LaViT stage; the
    benchmark runs it (untimed) to make the scores it hands in.
    """

    def previous_layer(self) -> CarriesAttention:
        raise NotImplementedError


class ReducedLessAttention(InheritsAttention):
    """LaViT's less-attention layer on a 7 x 7 key grid, as in the LaViT models.

    :class:`~beyond_attention.layers.less_attention.LessAttention` with ``num_keys`` the
    reduced key count and values reduced the same way; no query transform Psi (N is large).
    The scores are the previous layer's, transformed (arXiv:2406.00427, Sec. 3.2):
    ``forward(x, prev_scores) -> (out, scores)``; shapes (B, H*W, d) and (B, h, N, M).
    """

    def __init__(self, dim: int, num_heads: int, grid: Grid) -> None:
        super().__init__()
        from ..layers.less_attention import LessAttention

        self.dim = dim
        self.num_heads = num_heads
        self.grid = tuple(grid)
        sr, kg = reduced_key_grid(self.grid)
        self.attn = LessAttention(dim, num_heads=num_heads, num_keys=kg[0] * kg[1], sr_ratio=sr)

    def forward(
        self, x: torch.Tensor, prev_scores: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if prev_scores is None:
            raise ValueError("ReducedLessAttention: prev_scores (B, h, N, M) is required")
        return self.attn(x, prev_scores, hw=self.grid)

    def previous_layer(self) -> CarriesAttention:
        """The vanilla layer that precedes this one in a LaViT stage."""
        return ReducedVanillaAttention(self.dim, self.num_heads, self.grid)


class CarriedLessMixer(InheritsAttention):
    """The factory's ``less`` mixer on all N keys, as a less-attention layer (layer_index=1).

    ``create_mixer('less', layer_index=1)``: W_theta (N x N) transforms the previous scores
    (arXiv:2406.00427, Eq. 4-5). ``forward(x, prev_scores) -> (out, scores)``, x and out
    (B, N, d), scores (B, h, N, N). The wrapped mixer is called positionally, so any
    spelling of its carried-state argument works.
    """

    def __init__(self, dim: int, num_heads: int, grid: Grid) -> None:
        super().__init__()
        self.dim = dim
        self.num_heads = num_heads
        self.grid = tuple(grid)
        self.mixer = self._factory(layer_index=1)

    def _factory(self, layer_index: int) -> nn.Module:
        n = self.grid[0] * self.grid[1]
        return create_mixer(
            "less", self.dim, num_heads=self.num_heads, num_tokens=n, layer_index=layer_index
        )

    def forward(
        self, x: torch.Tensor, prev_scores: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if prev_scores is None:
            raise ValueError("CarriedLessMixer: prev_scores (B, h, N, N) is required")
        return self.mixer(x, prev_scores)

    def previous_layer(self) -> CarriesAttention:
        """The vanilla layer before it: the factory's ``less`` mixer with layer_index=0."""
        return _Vanilla(self._factory(layer_index=0))


class _Vanilla(CarriesAttention):
    """A factory ``less`` mixer with layer_index=0 (computes its own scores)."""

    def __init__(self, mixer: nn.Module) -> None:
        super().__init__()
        self.mixer = mixer

    def forward(
        self, x: torch.Tensor, prev_scores: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.mixer(x, prev_scores)


def previous_attention(module: CarriesAttention, x: torch.Tensor) -> torch.Tensor | None:
    """A realistic incoming attention state for a mixer that carries attention.

    A less-attention layer transforms the previous layer's attention instead of computing
    its own; in a network that state comes from a vanilla attention layer. The benchmark
    makes it the same way, untimed: one vanilla layer of the same configuration (fresh
    weights, ``module.previous_layer()``) runs on the same input and its pre-softmax scores
    (B, h, N, M) are handed to the mixer. A mixer that computes its own attention gets None.
    """
    if not isinstance(module, InheritsAttention):
        return None
    vanilla = module.previous_layer().to(x.device, x.dtype)
    with torch.no_grad():
        return vanilla(x, None)[1].detach()


def make_inputs(
    module: nn.Module, batch: int, grid: Grid, settings: MixerSettings, generator: torch.Generator
) -> tuple[Any, ...]:
    """The positional inputs of one call: ``(x,)`` or ``(x, prev_scores)``.

    ``x`` is (B, H*W, d), standard normal, requiring grad (a mixer inside a network
    back-propagates to its input); a :class:`CarriesAttention` mixer also gets the scores
    of a vanilla layer (:func:`previous_attention`).
    """
    n = grid[0] * grid[1]
    x = torch.randn(batch, n, settings.dim, generator=generator)
    x = x.to(settings.device, settings.torch_dtype).requires_grad_(True)
    if isinstance(module, CarriesAttention):
        return (x, previous_attention(module, x.detach()))
    return (x,)


def build_contender(entry: MixerEntry, settings: MixerSettings, grid: Grid) -> nn.Module:
    """``entry``'s module at ``grid``, seeded with ``settings.seed``, on the settings' device."""
    torch.manual_seed(settings.seed)
    module = entry.build(settings, grid)
    return module.to(settings.device, settings.torch_dtype)
