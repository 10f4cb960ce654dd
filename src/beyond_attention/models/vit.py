"""The ViT / DeiT baseline with a swappable token mixer.

A plain Vision Transformer (Dosovitskiy et al. 2021) in the DeiT configurations (Touvron et
al. 2021, arXiv 2012.12877), where the token mixer of every block is built by
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
* **Carried attention.** A mixer with ``carries_attention = True`` (LaViT's less-attention
  adapter) has ``forward(x, attn_state) -> (out, attn_state)``; the model threads the
  state through its blocks in order, starting from ``None``.
* **Fixed input size.** The learned position embedding has one entry per token of the
  grid it was built for, and the token-axis mixers have parameters per token, so a built
  model accepts only its ``img_size`` (a ValueError naming that size otherwise, raised
  before any computation); ``create_model(name, img_size=S)`` builds one for size S. No
  position-embedding interpolation is done.
* **Initialisation** (DeiT / timm): truncated normal (std 0.02) for the position
  embedding, the class token and every Linear of the patch MLPs, the head and
  self-attention, zero biases, LayerNorm (1, 0); the patch embedding keeps PyTorch's
  default convolution init. Other mixers keep the initialisation their layer defines
  (for example LaViT's identity transforms), so that swapping the mixer does not silently
  change what it starts from.

Small-image variants (32x32 CIFAR-10, 10 classes, patch 4 -> an 8x8 grid, CIFAR-10 mean/std):
``vit_tiny_cifar`` keeps DeiT-Ti's width (192, 3 heads, MLP ratio 4) at depth 6, so it
trains on two CPU cores at tens of images per second. ``img_size=28, in_chans=1`` gives
the Fashion-MNIST model (a 7x7 grid).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..layers.drop_path import DropPath
from ..layers.factory import create_mixer
from ..layers.mlp import Mlp
from ..layers.patch_embed import PatchEmbed, to_2tuple
from ..layers.self_attention import SelfAttention
from ._registry import CIFAR10_MEAN, CIFAR10_STD, DEIT, register_model

__all__ = ["GRID_MIXERS", "Block", "VisionTransformer", "vit_tiny", "vit_small", "vit_tiny_cifar"]

GRID_MIXERS: frozenset[str] = frozenset({"lambda"})
"""Mixers that need the tokens to be exactly an (H, W) grid (no class token)."""

GlobalPool = Literal["token", "avg"]


class Block(nn.Module):
    """Pre-norm transformer block with any token mixer.

    ``x = x + DropPath(mixer(LN(x)))``; ``x = x + DropPath(MLP(LN(x)))``.

    Args:
        dim: channels D.
        mixer: a module mapping (B, N, D) -> (B, N, D); if it has
            ``carries_attention = True`` its forward is ``(x, attn_state) -> (out, state)``.
        mlp_ratio: hidden width of the MLP over D.
        drop: dropout inside the MLP.
        drop_path: stochastic-depth rate of both residual branches.
        norm_eps: LayerNorm epsilon.

    Shapes: ``forward(x, attn_state=None)`` with ``x`` (B, N, D) returns
    ``(x (B, N, D), attn_state)``; the state passes through unchanged unless the mixer
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
        self.carries_attention = bool(getattr(mixer, "carries_attention", False))
        self.drop_path1 = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)
        self.drop_path2 = DropPath(drop_path)

    def forward(self, x: torch.Tensor, attn_state: Any = None) -> tuple[torch.Tensor, Any]:
        if self.carries_attention:
            y, attn_state = self.attn(self.norm1(x), attn_state)
        else:
            y = self.attn(self.norm1(x))
        x = x + self.drop_path1(y)
        x = x + self.drop_path2(self.mlp(self.norm2(x)))
        return x, attn_state


def _init_linear(module: nn.Module) -> None:
    """DeiT / timm init for a Linear: truncated normal std 0.02, zero bias."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class VisionTransformer(nn.Module):
    """ViT/DeiT classifier whose token mixer is chosen by name.

    Args:
        img_size: input (H, W) the model is built for (int for square).
        patch_size: patch size P; ``img_size`` must be divisible by it.
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
        drop_rate: dropout after the position embedding, inside MLPs and before the head.
        drop_path_rate: stochastic depth of the last block (linear from 0 over depth).
        norm_eps: LayerNorm epsilon (DeiT: 1e-6).

    Shapes: ``forward`` (B, in_chans, H, W) -> (B, num_classes);
    ``forward_features`` -> (B, T, D) normalised tokens, T = N (+1 with a class token);
    ``forward_head(tokens, pre_logits=True)`` -> (B, D).
    """

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
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        norm_eps: float = 1e-6,
    ) -> None:
        super().__init__()
        if not isinstance(mixer, str):
            raise ValueError(f"mixer must be a create_mixer name (str), got {mixer!r}")
        if depth <= 0 or embed_dim <= 0:
            raise ValueError(f"depth and embed_dim must be positive, got {depth}, {embed_dim}")
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {num_classes}")
        if not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {drop_path_rate}")
        if class_token is None:
            class_token = mixer not in GRID_MIXERS
        if global_pool is None:
            global_pool = "token" if class_token else "avg"
        if global_pool not in ("token", "avg"):
            raise ValueError(f"global_pool must be 'token' or 'avg', got {global_pool!r}")
        if global_pool == "token" and not class_token:
            raise ValueError("global_pool='token' needs class_token=True; use global_pool='avg'")
        if class_token and mixer in GRID_MIXERS:
            raise ValueError(
                f"mixer {mixer!r} needs the tokens to form an exact grid: use class_token=False"
            )

        self.img_size = to_2tuple(img_size, "img_size")
        self.num_classes = num_classes
        self.num_features = self.embed_dim = embed_dim
        self.global_pool = global_pool
        self.mixer_name = mixer
        self.grad_checkpointing = False
        self.num_prefix_tokens = 1 if class_token else 0

        self.patch_embed = PatchEmbed(self.img_size, patch_size, in_chans, embed_dim)
        grid = self.patch_embed.grid_size
        num_tokens = self.patch_embed.num_patches + self.num_prefix_tokens
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if class_token else None
        self.pos_embed = nn.Parameter(torch.zeros(1, num_tokens, embed_dim))
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
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """DeiT init for the model's own layers and self-attention; other mixers keep theirs."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if self.cls_token is not None:
            nn.init.trunc_normal_(self.cls_token, std=0.02)
        for block in self.blocks:
            block.mlp.apply(_init_linear)
            if isinstance(block.attn, SelfAttention):
                block.attn.apply(_init_linear)
        self.head.apply(_init_linear)

    def no_weight_decay(self) -> set[str]:
        """Parameter names that take no weight decay (position embedding, class token)."""
        return {"pos_embed", "cls_token"} if self.cls_token is not None else {"pos_embed"}

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block in the backward pass instead of storing its activations."""
        self.grad_checkpointing = bool(enable)

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: GlobalPool | None = None) -> None:
        """Replace the head with a fresh one for ``num_classes`` (0: identity)."""
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {num_classes}")
        if global_pool is not None:
            if global_pool not in ("token", "avg"):
                raise ValueError(f"global_pool must be 'token' or 'avg', got {global_pool!r}")
            if global_pool == "token" and self.cls_token is None:
                raise ValueError("global_pool='token' needs a class token; this model has none")
            self.global_pool = global_pool
        self.num_classes = num_classes
        self.head = nn.Linear(self.embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self.head.apply(_init_linear)
        self.head.to(self.pos_embed.device, self.pos_embed.dtype)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) -> normalised tokens (B, T, D)."""
        self.patch_embed.check_input(x)
        x = self.patch_embed(x)
        if self.cls_token is not None:
            x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        x = self.pos_drop(x + self.pos_embed)
        state: Any = None
        for block in self.blocks:
            if self.grad_checkpointing and torch.is_grad_enabled():
                x, state = checkpoint(block, x, state, use_reentrant=False)
            else:
                x, state = block(x, state)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Tokens (B, T, D) -> logits (B, num_classes), or pooled features (B, D)."""
        x = x[:, self.num_prefix_tokens :].mean(dim=1) if self.global_pool == "avg" else x[:, 0]
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _vit(
    num_classes: int,
    in_chans: int,
    img_size: tuple[int, int],
    drop_path_rate: float,
    defaults: dict[str, Any],
    kwargs: dict[str, Any],
) -> VisionTransformer:
    return VisionTransformer(
        img_size=img_size,
        in_chans=in_chans,
        num_classes=num_classes,
        drop_path_rate=drop_path_rate,
        **{**defaults, **kwargs},
    )


_MIXER_NOTE = (
    "mixer= takes any create_mixer name (mixer_kwargs= its options); the reported figures "
    "are DeiT's, with self-attention."
)


@register_model(
    paper=DEIT,
    fixed_input_size=True,
    reported_params_m=5.7,
    reported_gmacs=1.3,
    reported_top1=72.2,
    notes="DeiT-Ti. " + _MIXER_NOTE,
)
def vit_tiny(
    num_classes: int = 1000,
    in_chans: int = 3,
    img_size: tuple[int, int] = (224, 224),
    drop_path_rate: float = 0.0,
    **kwargs: Any,
) -> VisionTransformer:
    """DeiT-Ti: patch 16, D=192, depth 12, 3 heads, MLP ratio 4 (5.72M parameters)."""
    defaults = dict(patch_size=16, embed_dim=192, depth=12, num_heads=3, mlp_ratio=4.0)
    return _vit(num_classes, in_chans, img_size, drop_path_rate, defaults, kwargs)


@register_model(
    paper=DEIT,
    fixed_input_size=True,
    reported_params_m=22.1,
    reported_gmacs=4.6,
    reported_top1=79.8,
    notes="DeiT-S. " + _MIXER_NOTE,
)
def vit_small(
    num_classes: int = 1000,
    in_chans: int = 3,
    img_size: tuple[int, int] = (224, 224),
    drop_path_rate: float = 0.0,
    **kwargs: Any,
) -> VisionTransformer:
    """DeiT-S: patch 16, D=384, depth 12, 6 heads, MLP ratio 4 (22.05M parameters)."""
    defaults = dict(patch_size=16, embed_dim=384, depth=12, num_heads=6, mlp_ratio=4.0)
    return _vit(num_classes, in_chans, img_size, drop_path_rate, defaults, kwargs)


@register_model(
    paper=DEIT,
    input_size=(3, 32, 32),
    mean=CIFAR10_MEAN,
    std=CIFAR10_STD,
    num_classes=10,
    fixed_input_size=True,
    dataset="cifar-10",
    notes="DeiT-Ti width at depth 6, patch 4 on 32x32 (8x8 tokens + class token). "
    + _MIXER_NOTE.split(";")[0]
    + ".",
)
def vit_tiny_cifar(
    num_classes: int = 10,
    in_chans: int = 3,
    img_size: tuple[int, int] = (32, 32),
    drop_path_rate: float = 0.0,
    **kwargs: Any,
) -> VisionTransformer:
    """Small-image ViT: patch 4, D=192, depth 6, 3 heads, MLP ratio 4 (2.7M parameters)."""
    defaults = dict(patch_size=4, embed_dim=192, depth=6, num_heads=3, mlp_ratio=4.0)
    return _vit(num_classes, in_chans, img_size, drop_path_rate, defaults, kwargs)
