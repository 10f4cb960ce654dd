"""The ViT / DeiT baseline with a swappable token mixer.

A plain Vision Transformer (Dosovitskiy et al., arXiv:2010.11929) in the DeiT configurations
(DeiT, Touvron et al., arXiv:2012.12877), where the token mixer of every block is built by
:func:`beyond_attention.layers.create_mixer`, so that one argument swaps self-attention for
external attention, a lambda layer, a token-mixing MLP, ... in an otherwise identical
network::

    x_0 = [x_cls; PatchEmbed(img)] + E_pos                          (B, 1 + N, D)
    x'  = x_{l-1} + DropPath(Mixer(LN(x_{l-1})))                    pre-norm blocks
    x_l = x'      + DropPath(MLP(LN(x')))                           MLP: D -> rD -> D, GELU
    y   = Head(pool(LN(x_L)))                                       class token or mean

Configurations (DeiT, Table 1): ``vit_tiny`` D=192, 3 heads; ``vit_small`` D=384, 6 heads;
both depth 12, MLP ratio 4, patch 16, 224 px, class token, learned position embedding,
LayerNorm eps 1e-6, bias on the QKV projection: 5.717M and 22.051M parameters with
self-attention (DeiT-Ti / DeiT-S: 5.7M / 22.1M).

Choices made here:

* **Mixer.** ``mixer=`` takes any :data:`~beyond_attention.layers.MIXER_NAMES` name;
  ``mixer_kwargs=`` is passed to that mixer's constructor. The model passes the block's
  ``num_heads``, the token count (``num_tokens``, class token included), the patch grid
  (``grid_size``) and the block's index (``layer_index``; LaViT's ``less`` mixer makes the
  first ``num_vanilla`` blocks vanilla attention and the rest less-attention layers).
  The mixer sits in ``blocks[i].attn`` whatever it is; with the default ``"self"`` the
  state-dict keys are those of timm's DeiT.
* **Class token and pooling.** Mixers in :data:`GRID_MIXERS` (the lambda layer) work on
  an exact (H, W) token grid, so with them the model has no class token and pools by the
  mean over tokens (``global_pool="avg"``). Otherwise the default is DeiT's: a class token
  and ``global_pool="token"``. Both can be set explicitly (``class_token=False`` requires
  ``global_pool="avg"``).
* **Carried attention.** A mixer that is a
  :class:`~beyond_attention.layers.carried.CarriesAttention` (LaViT's less-attention
  adapter) has ``forward(x, prev_scores) -> (out, scores)``; the model threads the scores
  through its blocks in order, starting from ``None``.
* **Stem and positions.** ``embed_layer=`` swaps the patch embedding for another stem
  (EAMLP's Tokens-to-Token stem, :mod:`.eamlp`), and ``pos_embed="sinusoid"`` replaces
  the learned position embedding by the fixed sinusoidal table (a non-persistent buffer),
  so that EAMLP is a configuration of this one class.
* **Fixed input size.** The learned position embedding has one entry per token of the
  grid it was built for, and the token-axis mixers have parameters per token, so a built
  model accepts only its ``img_size`` (``fixed_input_size`` is True; a ValueError naming
  that size otherwise, raised before any computation); ``create_model(name, img_size=S)``
  builds one for size S. No position-embedding interpolation is done.
* **Initialisation.** ``weight_init="deit"`` (the default; DeiT / timm): truncated normal
  (std 0.02) for the position embedding, the class token and every Linear of the patch
  MLPs, the head and self-attention, zero biases, LayerNorm (1, 0); the patch embedding
  keeps PyTorch's default convolution init. ``weight_init="pytorch"``: those Linears keep
  PyTorch's default init (uniform in +-1/sqrt(fan_in), weights and biases), as
  vit-pytorch's ViT has them. Other mixers keep the initialisation their layer defines
  (for example LaViT's identity transforms), so that swapping the mixer does not silently
  change what it starts from.

Small-image variants (32x32 CIFAR-10, 10 classes, patch 4 -> an 8x8 grid, CIFAR-10 mean/std):
``vit_tiny_cifar`` keeps DeiT-Ti's width (192, 3 heads of 64) at depth 6 with an MLP ratio
of 2 (as the ViT-Lite models of Hassani et al., arXiv:2104.05704, Table 1), a LayerNorm on
the embedded patches and PyTorch's default init: the shape and the choices of a plain
vit-pytorch ViT for CIFAR-10, which learn faster per image in short runs than DeiT's init
without the patch norm (``benchmarks/cifar10.md``). ``img_size=28, in_chans=1`` gives the
Fashion-MNIST model (a 7x7 grid).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal, get_args

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..layers.carried import CarriesAttention
from ..layers.drop_path import DropPath
from ..layers.factory import create_mixer
from ..layers.mlp import Mlp
from ..layers.patch_embed import PatchEmbed, sinusoid_position_table
from ..layers.self_attention import SelfAttention
from ._contract import (
    ClassifierMixin,
    check_input_size,
    check_num_classes,
    feature_take_indices,
    to_2tuple,
)
from ._registry import CIFAR10_MEAN, CIFAR10_STD, DEIT, register

__all__ = ["GRID_MIXERS", "Block", "VisionTransformer"]

GRID_MIXERS: frozenset[str] = frozenset({"lambda"})
"""Mixers that need the tokens to be exactly an (H, W) grid (no class token)."""

GlobalPool = Literal["token", "avg"]
PosEmbed = Literal["learned", "sinusoid"]
WeightInit = Literal["deit", "pytorch"]
WEIGHT_INITS: tuple[str, ...] = get_args(WeightInit)


class Block(nn.Module):
    """Pre-norm transformer block with any token mixer.

    ``x = x + DropPath(mixer(LN(x)))``; ``x = x + DropPath(MLP(LN(x)))``.

    Args:
        dim: channels D.
        mixer: a module mapping (B, N, D) -> (B, N, D); if it is a
            :class:`~beyond_attention.layers.carried.CarriesAttention` its forward is
            ``(x, prev_scores) -> (out, scores)``.
        mlp_ratio: hidden width of the MLP over D.
        drop: dropout inside the MLP.
        drop_path: stochastic-depth rate of both residual branches.
        norm_eps: LayerNorm epsilon.

    Shapes: ``forward(x, prev_scores=None)`` with ``x`` (B, N, D) returns
    ``(x (B, N, D), scores)``; ``prev_scores`` passes through unchanged unless the mixer
    carries attention.
    """

    def __init__(
        self,
        dim: int,
        mixer: nn.Module,
        mlp_ratio: float = 4.0,
        drop: float = 0.0,
        drop_path: float = 0.0,
        norm_eps: float = 1e-6,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = mixer
        self.drop_path1 = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)
        self.drop_path2 = DropPath(drop_path)

    @property
    def carries_attention(self) -> bool:
        """Whether the mixer takes and returns the carried attention scores."""
        return isinstance(self.attn, CarriesAttention)

    def forward(self, x: torch.Tensor, prev_scores: Any = None) -> tuple[torch.Tensor, Any]:
        if isinstance(self.attn, CarriesAttention):
            y, prev_scores = self.attn(self.norm1(x), prev_scores)
        else:
            y = self.attn(self.norm1(x))
        x = x + self.drop_path1(y)
        x = x + self.drop_path2(self.mlp(self.norm2(x)))
        return x, prev_scores


def init_linear(module: nn.Module) -> None:
    """DeiT / timm init for a Linear: truncated normal std 0.02, zero bias."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def reset_linear(module: nn.Module) -> None:
    """PyTorch's default init for a Linear: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for the
    weight (Kaiming-uniform, a = sqrt(5)) and the bias."""
    if isinstance(module, nn.Linear):
        module.reset_parameters()


class VisionTransformer(ClassifierMixin, nn.Module):
    """ViT/DeiT classifier whose token mixer (and stem) is chosen by argument.

    Args:
        img_size: input (H, W) the model is built for (int for square).
        patch_size: patch size P of the default stem; ``img_size`` must be divisible by it.
        in_chans: image channels.
        num_classes: classifier outputs; 0 gives an identity head (features out).
        embed_dim: token channels D.
        depth: number of blocks.
        num_heads: heads passed to the mixer (``dim`` divisible by it for multi-head ones).
        mlp_ratio: MLP hidden width / D.
        mixer: a :func:`~beyond_attention.layers.create_mixer` name.
        mixer_kwargs: extra constructor arguments for the mixer.
        class_token: prepend a learned class token; ``None``: yes unless the mixer is in
            :data:`GRID_MIXERS`.
        global_pool: ``"token"`` (the class token) or ``"avg"`` (mean over the patch
            tokens); ``None``: ``"token"`` with a class token, else ``"avg"``.
        embed_layer: ``None`` for the ViT patch embedding (:class:`PatchEmbed`), or a
            callable ``embed_layer(img_size=, in_chans=, embed_dim=, **embed_kwargs)``
            returning a stem (B, C, H, W) -> (B, N, D) with ``img_size``, ``grid_size``,
            ``num_patches`` attributes (EAMLP's Tokens-to-Token stem).
        embed_kwargs: extra arguments of ``embed_layer``.
        embed_name: the attribute (and state-dict prefix) of the stem.
        embed_norm: a LayerNorm over every embedded patch (``patch_embed.norm``, before the
            position embedding is added), as vit-pytorch's ViT has; only with the default
            stem.
        pos_embed: ``"learned"`` (a parameter, DeiT) or ``"sinusoid"`` (the fixed table of
            Vaswani et al., a non-persistent buffer, T2T-ViT / EAMLP).
        drop_rate: dropout after the position embedding and inside MLPs.
        head_drop_rate: dropout before the head; ``None`` takes ``drop_rate``.
        drop_path_rate: stochastic depth of the last block (linear from 0 over depth).
        norm_eps: LayerNorm epsilon (DeiT: 1e-6).
        weight_init: ``"deit"`` (or ``None``) for the DeiT init (:meth:`init_weights`),
            ``"pytorch"`` for PyTorch's default init of every layer (the position embedding
            and class token still truncated normal, std 0.02), or a function called with
            the model that initialises it.

    Shapes: ``forward`` (B, in_chans, H, W) -> (B, num_classes);
    ``forward_features`` -> (B, T, D) normalised tokens, T = N (+1 with a class token);
    ``forward_head(tokens, pre_logits=True)`` -> (B, D).
    """

    classifier_attr = "head"

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        num_classes: int = 1000,
        embed_dim: int = 192,
        depth: int = 12,
        num_heads: int = 3,
        mlp_ratio: float = 4.0,
        mixer: str = "self",
        mixer_kwargs: dict[str, Any] | None = None,
        class_token: bool | None = None,
        global_pool: GlobalPool | None = None,
        embed_layer: Callable[..., nn.Module] | None = None,
        embed_kwargs: dict[str, Any] | None = None,
        embed_name: str = "patch_embed",
        embed_norm: bool = False,
        pos_embed: PosEmbed = "learned",
        drop_rate: float = 0.0,
        head_drop_rate: float | None = None,
        drop_path_rate: float = 0.0,
        norm_eps: float = 1e-6,
        weight_init: WeightInit | Callable[[VisionTransformer], None] | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(mixer, str):
            raise ValueError(f"mixer must be a create_mixer name (str), got {mixer!r}")
        if depth <= 0 or embed_dim <= 0:
            raise ValueError(f"depth and embed_dim must be positive, got {depth}, {embed_dim}")
        num_classes = check_num_classes(num_classes)
        if not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {drop_path_rate}")
        if isinstance(weight_init, str) and weight_init not in WEIGHT_INITS:
            raise ValueError(
                f"weight_init must be one of {WEIGHT_INITS} or a function, got {weight_init!r}"
            )
        if embed_norm and embed_layer is not None:
            raise ValueError("embed_norm applies to the default patch embedding only; "
                             "give the stem passed as embed_layer its own norm")
        if pos_embed not in ("learned", "sinusoid"):
            raise ValueError(f"pos_embed must be 'learned' or 'sinusoid', got {pos_embed!r}")
        if class_token is None:
            class_token = mixer not in GRID_MIXERS
        if global_pool is None:
            global_pool = "token" if class_token else "avg"
        self._check_pool(global_pool, class_token)
        if class_token and mixer in GRID_MIXERS:
            raise ValueError(
                f"mixer {mixer!r} needs the tokens to form an exact grid: use class_token=False"
            )

        self.img_size = to_2tuple(img_size, "img_size")
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.num_features = self.embed_dim = embed_dim
        self.global_pool = global_pool
        self.mixer_name = mixer
        self.grad_checkpointing = False
        self.num_prefix_tokens = 1 if class_token else 0
        self.embed_name = embed_name

        if embed_layer is None:
            stem = PatchEmbed(self.img_size, patch_size, in_chans, embed_dim,
                              norm_eps=norm_eps if embed_norm else None)
            self.patch_size: tuple[int, int] = stem.patch_size
        else:
            stem = embed_layer(
                img_size=self.img_size, in_chans=in_chans, embed_dim=embed_dim,
                **(embed_kwargs or {}),
            )
            self.patch_size = (1, 1)
        self.add_module(embed_name, stem)
        grid = tuple(stem.grid_size)
        num_tokens = stem.num_patches + self.num_prefix_tokens
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if class_token else None
        self.pos_embed_type = pos_embed
        if pos_embed == "learned":
            self.pos_embed = nn.Parameter(torch.zeros(1, num_tokens, embed_dim))
        else:
            self.register_buffer(
                "pos_embed", sinusoid_position_table(num_tokens, embed_dim), persistent=False
            )
        self.pos_drop = nn.Dropout(drop_rate)

        dpr = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        mixer_kwargs = dict(mixer_kwargs or {})
        self.blocks = nn.ModuleList(
            Block(
                embed_dim,
                create_mixer(
                    mixer,
                    embed_dim,
                    num_heads=num_heads,
                    num_tokens=num_tokens,
                    grid_size=grid,
                    layer_index=i,
                    **mixer_kwargs,
                ),
                mlp_ratio=mlp_ratio,
                drop=drop_rate,
                drop_path=dpr[i],
                norm_eps=norm_eps,
            )
            for i in range(depth)
        )
        self.norm = nn.LayerNorm(embed_dim, eps=norm_eps)
        self.head_drop = nn.Dropout(drop_rate if head_drop_rate is None else head_drop_rate)
        # initialised below, with the rest of the model
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self._weight_init = "deit" if weight_init is None else weight_init
        if isinstance(self._weight_init, str):
            self.init_weights()
        else:
            with torch.no_grad():
                weight_init(self)

    @property
    def stem(self) -> nn.Module:
        """The patch embedding (or the stem given as ``embed_layer``)."""
        return getattr(self, self.embed_name)

    @property
    def fixed_input_size(self) -> bool:
        """Always True: the position embedding has one entry per token of the built grid."""
        return True

    @staticmethod
    def _check_pool(global_pool: str, class_token: bool) -> None:
        if global_pool not in ("token", "avg"):
            raise ValueError(f"global_pool must be 'token' or 'avg', got {global_pool!r}")
        if global_pool == "token" and not class_token:
            raise ValueError("global_pool='token' needs class_token=True; use global_pool='avg'")

    def _make_classifier(self, num_classes: int) -> nn.Module:
        if num_classes == 0:
            return nn.Identity()
        head = nn.Linear(self.embed_dim, num_classes)
        (reset_linear if self._weight_init == "pytorch" else init_linear)(head)
        return head

    @torch.no_grad()
    def init_weights(self) -> None:
        """The position embedding and class token: truncated normal (std 0.02). Then, with
        ``weight_init="deit"``, DeiT's init for the model's own layers and self-attention
        (other mixers keep theirs); with ``"pytorch"`` the same layers get PyTorch's
        default init (:func:`reset_linear`)."""
        if isinstance(self.pos_embed, nn.Parameter):
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if self.cls_token is not None:
            nn.init.trunc_normal_(self.cls_token, std=0.02)
        init = reset_linear if self._weight_init == "pytorch" else init_linear
        for block in self.blocks:
            block.mlp.apply(init)
            if isinstance(block.attn, SelfAttention):
                block.attn.apply(init)
        self.head.apply(init)

    def no_weight_decay(self) -> set[str]:
        """Parameter names that take no weight decay (position embedding, class token)."""
        names = {"cls_token"} if self.cls_token is not None else set()
        if isinstance(self.pos_embed, nn.Parameter):
            names.add("pos_embed")
        return names

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block in the backward pass instead of storing its activations."""
        self.grad_checkpointing = bool(enable)

    def reset_classifier(self, num_classes: int, global_pool: GlobalPool | None = None) -> None:
        """Replace the head with a fresh one for ``num_classes`` (0: identity), on the
        model's device and dtype; ``global_pool`` optionally changes the pooling."""
        check_num_classes(num_classes)
        if global_pool is not None:
            if global_pool == "token" and self.cls_token is None:
                raise ValueError("global_pool='token' needs a class token; this model has none")
            self._check_pool(global_pool, self.cls_token is not None)
            self.global_pool = global_pool
        super().reset_classifier(num_classes)

    def check_input(self, x: torch.Tensor) -> None:
        """Raise ValueError unless ``x`` is (B, in_chans, *img_size)."""
        check_input_size(
            x, self.in_chans, self.img_size, self.fixed_input_size, self.patch_size,
            "patch_size", reason="the position embedding has one entry per token",
        )

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        x = self.stem(x)
        if self.cls_token is not None:
            x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        return self.pos_drop(x + self.pos_embed.to(x.dtype))

    def _run_block(self, block: Block, x: torch.Tensor, scores: Any) -> tuple[torch.Tensor, Any]:
        if self.grad_checkpointing and torch.is_grad_enabled():
            return checkpoint(block, x, scores, use_reentrant=False)
        return block(x, scores)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) -> normalised tokens (B, T, D)."""
        x = self._embed(x)
        scores: Any = None
        for block in self.blocks:
            x, scores = self._run_block(block, x, scores)
        return self.norm(x)

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | Sequence[int] | None = None,
        intermediates_only: bool = False,
        stop_early: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """The tokens (B, T, D) after the blocks ``indices`` (not normalised).

        ``indices``: see :func:`~._contract.feature_take_indices`. Returns
        ``(forward_features(x), [tokens])``, or only the list with
        ``intermediates_only=True``; ``stop_early`` then skips the blocks after the last
        one asked for.
        """
        take, last = feature_take_indices(len(self.blocks), indices)
        stop = last if (stop_early and intermediates_only) else len(self.blocks) - 1
        x = self._embed(x)
        scores: Any = None
        out = []
        for i, block in enumerate(self.blocks[: stop + 1]):
            x, scores = self._run_block(block, x, scores)
            if i in take:
                out.append(x)
        return out if intermediates_only else (self.norm(x), out)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Tokens (B, T, D) -> logits (B, num_classes), or pooled features (B, D)."""
        x = x[:, self.num_prefix_tokens :].mean(dim=1) if self.global_pool == "avg" else x[:, 0]
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


_MIXER_NOTE = (
    "mixer= takes any create_mixer name (mixer_kwargs= its options); the reported figures "
    "are DeiT's, with self-attention."
)
_DEIT = dict(paper=DEIT, fixed_input_size=True)
_CIFAR = dict(input_size=(3, 32, 32), mean=CIFAR10_MEAN, std=CIFAR10_STD, num_classes=10,
              dataset="cifar-10")

# DeiT-Ti: patch 16, D=192, depth 12, 3 heads, MLP ratio 4 (5.72M parameters).
register("vit_tiny", VisionTransformer, dict(patch_size=16, embed_dim=192, depth=12, num_heads=3),
         **_DEIT, reported_params_m=5.7, reported_gmacs=1.3, reported_top1=72.2,
         notes="DeiT-Ti. " + _MIXER_NOTE)
# DeiT-S: patch 16, D=384, depth 12, 6 heads, MLP ratio 4 (22.05M parameters).
register("vit_small", VisionTransformer, dict(patch_size=16, embed_dim=384, depth=12, num_heads=6),
         **_DEIT, reported_params_m=22.1, reported_gmacs=4.6, reported_top1=79.8,
         notes="DeiT-S. " + _MIXER_NOTE)
# Small-image ViT: patch 4, D=192, depth 6, 3 heads, MLP ratio 2 (ViT-Lite's, Hassani et
# al. Table 1), a LayerNorm on the embedded patches and PyTorch's default init (1.81M
# parameters). CIFAR-10 test top-1 after 20,000 images: 36.95 with MLP ratio 4, DeiT's init
# and no patch norm (the earlier model), 42.32 with the norm and PyTorch's init, 44.31 with
# MLP ratio 2 as well; after 15 minutes 59.11 against 49.52 (benchmarks/cifar10.md).
# Recipe for short CPU runs, measured on Fashion-MNIST (2 epochs of 8,000 images,
# benchmarks/recipes.md): batch 32, no random crop and lr 1e-3 reach 72.6 top-1 against 55.8
# with the fallback (lr 2e-3, batch 128, 4-pixel crop) and 65.3 at lr 2e-3 (the earlier
# model; the reshaped one: 76.95 with this recipe in bfloat16). Long runs want
# the crop back: --crop-padding 4. bfloat16 autocast where the CPU computes it natively:
# 49.52 CIFAR-10 top-1 after 15 minutes against 44.79 in float32 (the earlier model).
register("vit_tiny_cifar", VisionTransformer,
         dict(patch_size=4, embed_dim=192, depth=6, num_heads=3, mlp_ratio=2.0,
              embed_norm=True, weight_init="pytorch"), **_DEIT, **_CIFAR,
         recipe={"lr": 1e-3, "warmup": 0.2, "weight_decay": 0.05, "label_smoothing": 0.1,
                 "batch_size": 32, "crop_padding": 0, "amp": "native"},
         notes="DeiT-Ti width at depth 6, MLP ratio 2, patch norm, patch 4 on 32x32 "
         "(8x8 tokens + class token). "
         + _MIXER_NOTE.split(";")[0] + ".")
