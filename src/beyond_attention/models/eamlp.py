"""EAMLP: the Tokens-to-Token ViT with every attention replaced by external attention.

Guo, Liu, Mu, Hu 2021 ("Beyond Self-attention: External Attention using Two Linear Layers
for Visual Tasks", arXiv:2105.02358), section 4.4 / Table 11. The paper gives
the sizes and accuracies; the architecture comes from the authors' code (repository
``MenghaoGuo/EANet``, folder ``EAMLP/models``: ``t2t_vit.py``, ``token_performer.py``,
``transformer_block.py``), a fork of T2T-ViT (Yuan et al., arXiv:2101.11986)::

    T2T stem (``T2T_module`` with ``tokens_type='performer'``, the default there):
        Unfold 7x7 / stride 4 / pad 2  -> token block (in C*49 -> 64)
        Unfold 3x3 / stride 2 / pad 1  -> token block (in 64*9 -> 64)
        Unfold 3x3 / stride 2 / pad 1  -> Linear(64*9 -> D)              14x14 tokens at 224
    x   = [x_cls; tokens] + P_sin                                        fixed sinusoid
    x'  = x + DropPath(MHEA(LN(x)));  x = x' + DropPath(MLP(LN(x')))     pre-norm, GELU
    y   = Head(LN(x)[:, 0])                                              class token

Each stem token block (``token_performer.py``, whose attention the authors rewrote as a
single-head external attention) is::

    v   = x W_in + b_in                  (B, N, C k^2) -> (B, N, 64)    the "q_linear"
    A   = v M_k^T                        (B, N, 128)                    S = 128, no bias
    A   = softmax(A, over N);  A = A / (1e-9 + sum_S A)
    y   = v + Proj(Dropout(A) M_v + b_v)                                 skip from v
    y   = y + MLP(LN(y))                                                 MLP ratio 1

and is preceded by a LayerNorm over its input (C k^2 channels). The main blocks use
:class:`~beyond_attention.layers.MultiHeadExternalAttention` (the authors'
``transformer_block.py``: expansion 4, S = 64 shared by the 4h heads of D/h channels,
biases on M_k and M_v).

Configurations (``t2t_vit.py``): EAMLP-14 D=384, depth 14, 6 heads, MLP ratio 3;
EAMLP-19 D=448, depth 19, 7 heads, MLP ratio 3; EAMLP-7 D=256, depth 7, 4 heads, MLP
ratio 2 (trained at 384 px: ``EAMLP_7_384/args.yaml``).

Where each detail comes from, and the choices made here:

* Stem attention: ``token_performer.py`` ``Attention`` (k = 128 slots, ``linear_0``
  without bias, ``linear_1`` with bias, eps 1e-9, attention dropout 0.1 and projection
  dropout 0.1 hard-coded as ``dp1``/``dp2``, skip connection from the input projection,
  no skip around the LayerNorm'd attention branch). ``linear_1`` starts as the transpose
  of ``linear_0`` there by aliasing ``.data``; here M_v is initialised to a *copy* of
  M_k^T and the two are independent parameters (aliasing ``.data`` ties the weights on the
  CPU and unties them after ``.cuda()``).
* Main attention: ``transformer_block.py`` ``Attention`` (``coef = 4``,
  ``k = 256 // coef = 64``, bias on every linear, eps 1e-9, no ``qkv_bias`` switch).
* LayerNorm: PyTorch's default eps 1e-5 (``norm_layer=nn.LayerNorm`` there; DeiT uses 1e-6).
* Position embedding: ``get_sinusoid_encoding`` over N + 1 positions, added to the class
  token too. The authors keep it as a frozen ``nn.Parameter``, which their parameter
  count includes; here it is a non-persistent buffer, so ``model.parameters()`` counts
  ``(N + 1) * D`` fewer: 29.80M + 0.08M = 29.88M (EAMLP-14), 54.47M + 0.09M = 54.56M
  (EAMLP-19), 6.10M + 0.15M = 6.24M (EAMLP-7 at 384). The tests assert this identity.
* Initialisation: ``T2T_ViT._init_weights``: truncated normal std 0.02 on every Linear
  (zero biases), LayerNorm (1, 0), class token truncated normal std 0.02.
* Drop-path: linear in depth, one rate shared by both branches of a block; the stem has
  none.
* Fixed input size: the position table has one row per token of the grid the model was
  built for (and a stem that reshapes to that grid), so a built model accepts only its
  ``img_size`` (a ValueError naming it otherwise). ``create_model(..., img_size=S)`` builds
  one for S (S / 16 tokens per side when 16 divides S).

Small-image variant ``eamlp_cifar`` (32x32, 10 classes): the width, depth and heads of
``vit_tiny_cifar`` (D=192, depth 6, 3 heads of 64 channels, as every EAMLP) with EAMLP-7's
MLP ratio 2, behind a stem of soft splits 3x3/2/1, 3x3/2/1, 3x3/1/1 (32 -> 16 -> 8 -> 8:
8x8 tokens, overall stride 4 like ViT's patch 4), so that it trains on two CPU cores at
tens of images per second.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from ..layers._validate import check_tokens
from ..layers.external_attention import double_normalize
from ..layers.mlp import Mlp
from ._contract import check_input_size, to_2tuple
from ._registry import CIFAR10_MEAN, CIFAR10_STD, EXTERNAL_ATTENTION, register
from .vit import VisionTransformer

__all__ = [
    "T2T_SPLITS",
    "EAMLP",
    "TokenBlock",
    "TokenExternalAttention",
    "TokensToToken",
    "init_eamlp_weights",
]

Split = tuple[int, int, int]
T2T_SPLITS: tuple[Split, Split, Split] = ((7, 4, 2), (3, 2, 1), (3, 2, 1))
"""(kernel, stride, padding) of T2T-ViT's three soft splits."""
CIFAR_SPLITS: tuple[Split, Split, Split] = ((3, 2, 1), (3, 2, 1), (3, 1, 1))


class TokenExternalAttention(nn.Module):
    """Single-head external attention of the T2T stem, with the input projection as skip.

    The authors' ``token_performer.Attention``::

        v   = x W_in + b_in                      (B, N, in_dim) -> (B, N, dim)
        A   = softmax_N(v M_k^T);  A = A / (eps + sum_S A)       (B, N, S)
        out = v + Dropout(Proj(Dropout(A) M_v + b_v))

    With ``b_v = 0`` and no dropout, ``out - v`` is ``Proj(ExternalAttention(v))``
    (EA paper (Guo et al., arXiv:2105.02358), Alg. 1). The normalisation runs in float32.

    Args:
        in_dim: input channels (``C * k * k`` of the soft split).
        dim: channels after the input projection (T2T's ``token_dim``, 64).
        memory_size: slots S (authors: 128).
        attn_drop: dropout on the normalised attention (authors: 0.1).
        proj_drop: dropout after the output projection (authors: 0.1).
        eps: L1 denominator epsilon (authors: 1e-9).

    Shapes: (B, N, in_dim) -> (B, N, dim).
    """

    def __init__(
        self,
        in_dim: int,
        dim: int = 64,
        memory_size: int = 128,
        attn_drop: float = 0.1,
        proj_drop: float = 0.1,
        eps: float = 1e-9,
    ) -> None:
        super().__init__()
        self.in_dim = in_dim
        self.dim = dim
        self.memory_size = memory_size
        self.eps = eps
        self.proj_in = nn.Linear(in_dim, dim)
        self.mk = nn.Linear(dim, memory_size, bias=False)
        self.mv = nn.Linear(memory_size, dim)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    @torch.no_grad()
    def tie_init(self) -> None:
        """Start M_v as a copy of M_k^T (the authors' start; the two stay independent)."""
        self.mv.weight.copy_(self.mk.weight.t())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_tokens(x, self.in_dim)
        v = self.proj_in(x)
        attn = double_normalize(self.mk(v), token_dim=1, slot_dim=2, eps=self.eps).to(v.dtype)
        out = self.proj_drop(self.proj(self.mv(self.attn_drop(attn))))
        return v + out

    def extra_repr(self) -> str:
        return f"in_dim={self.in_dim}, dim={self.dim}, memory_size={self.memory_size}"


class TokenBlock(nn.Module):
    """A T2T stem block: ``y = TokenEA(LN(x)); y = y + MLP(LN(y))`` (authors' Token_performer).

    Shapes: (B, N, in_dim) -> (B, N, dim). There is no residual around the attention
    branch (the channel count changes); :class:`TokenExternalAttention` adds its own skip
    from the projected input.
    """

    def __init__(
        self,
        in_dim: int,
        dim: int = 64,
        memory_size: int = 128,
        mlp_ratio: float = 1.0,
        attn_drop: float = 0.1,
        proj_drop: float = 0.1,
        norm_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(in_dim, eps=norm_eps)
        self.attn = TokenExternalAttention(in_dim, dim, memory_size, attn_drop, proj_drop)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def _split_out(size: int, split: Split) -> int:
    kernel, stride, padding = split
    return (size + 2 * padding - kernel) // stride + 1


class _ContiguousGrad(torch.autograd.Function):
    """Identity whose backward makes the incoming gradient contiguous.

    The stem transposes each token block's output (B, N, C) -> (B, C, N), so the gradient
    reaching the block is a transposed, non-contiguous tensor. Eager PyTorch handles it;
    in a compiled backward (AOT autograd, torch 2.13) the dropout backward's traced strides
    are contiguous while the kernel keeps the transposed ones, and the next ``view``
    fails ("view size is not compatible with input tensor's size and stride"). A
    contiguous gradient gives both the same layout; the values are unchanged.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad.contiguous()


def _contiguous_grad(x: torch.Tensor) -> torch.Tensor:
    """``x``, with a contiguous gradient in the backward (see :class:`_ContiguousGrad`)."""
    return _ContiguousGrad.apply(x) if torch.is_grad_enabled() and x.requires_grad else x


class TokensToToken(nn.Module):
    """The T2T stem: three soft splits (``nn.Unfold``) with a token block after the first two.

    Args:
        img_size: input (H, W) the stem is built for.
        in_chans: image channels C.
        embed_dim: output token channels D.
        token_dim: channels of the stem token blocks (64).
        memory_size: slots of the stem external attention (128).
        splits: (kernel, stride, padding) of the three soft splits (T2T: 7/4/2, 3/2/1, 3/2/1).
        attn_drop, proj_drop: the stem attention's dropouts (authors: 0.1 and 0.1).

    Shapes: (B, C, H, W) -> (B, N, D) with ``N = grid_size[0] * grid_size[1]`` (row-major).
    """

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        in_chans: int = 3,
        embed_dim: int = 384,
        token_dim: int = 64,
        memory_size: int = 128,
        splits: Sequence[Split] = T2T_SPLITS,
        attn_drop: float = 0.1,
        proj_drop: float = 0.1,
    ) -> None:
        super().__init__()
        splits = tuple(tuple(int(v) for v in s) for s in splits)
        if len(splits) != 3 or any(len(s) != 3 for s in splits):
            raise ValueError(
                f"splits must be three (kernel, stride, padding) triples, got {splits}"
            )
        self.img_size = to_2tuple(img_size, "img_size")
        self.in_chans = in_chans
        grids = [self.img_size]
        for split in splits:
            grids.append(tuple(_split_out(s, split) for s in grids[-1]))
        if min(min(g) for g in grids[1:]) <= 0:
            raise ValueError(
                f"img_size {self.img_size} is too small for the soft splits {splits} "
                f"(grids {grids[1:]})"
            )
        self.grids = grids[1:]
        self.grid_size: tuple[int, int] = self.grids[-1]
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        (k0, s0, p0), (k1, s1, p1), (k2, s2, p2) = splits
        self.soft_split0 = nn.Unfold(kernel_size=k0, stride=s0, padding=p0)
        self.soft_split1 = nn.Unfold(kernel_size=k1, stride=s1, padding=p1)
        self.soft_split2 = nn.Unfold(kernel_size=k2, stride=s2, padding=p2)
        block = dict(memory_size=memory_size, attn_drop=attn_drop, proj_drop=proj_drop)
        self.attention1 = TokenBlock(in_chans * k0 * k0, token_dim, **block)
        self.attention2 = TokenBlock(token_dim * k1 * k1, token_dim, **block)
        self.project = nn.Linear(token_dim * k2 * k2, embed_dim)

    def check_input(self, x: torch.Tensor) -> None:
        """Raise ValueError unless ``x`` is (B, in_chans, *img_size)."""
        check_input_size(x, self.in_chans, self.img_size, True, reason="the stem's grids")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        x = _contiguous_grad(self.attention1(self.soft_split0(x).transpose(1, 2)))  # (B, N0, 64)
        x = x.transpose(1, 2).unflatten(2, self.grids[0])
        x = _contiguous_grad(self.attention2(self.soft_split1(x).transpose(1, 2)))  # (B, N1, 64)
        x = x.transpose(1, 2).unflatten(2, self.grids[1])
        return self.project(self.soft_split2(x).transpose(1, 2))  # (B, N, D)


def _init_module(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


@torch.no_grad()
def init_eamlp_weights(model: VisionTransformer) -> None:
    """The authors' init (truncated normal 0.02 on every Linear, LayerNorm (1, 0), class
    token truncated normal 0.02), then the stem's M_v = M_k^T (a copy)."""
    nn.init.trunc_normal_(model.cls_token, std=0.02)
    model.apply(_init_module)
    model.tokens_to_token.attention1.attn.tie_init()
    model.tokens_to_token.attention2.attn.tie_init()


class EAMLP(VisionTransformer):
    """T2T-ViT with multi-head external attention (the authors' EAMLP), as a configuration
    of :class:`~.vit.VisionTransformer`: the T2T stem (``tokens_to_token``), the fixed
    sinusoidal positions, the ``external_mh`` mixer, LayerNorm eps 1e-5, no dropout before
    the head, and the authors' init (:func:`init_eamlp_weights`).

    Args:
        img_size: input (H, W) the model is built for.
        in_chans: image channels.
        num_classes: classifier outputs; 0 gives an identity head.
        embed_dim: token channels D.
        depth: number of main blocks.
        num_heads: h; each block's external attention runs 4h heads of D/h channels.
        mlp_ratio: MLP hidden width / D.
        memory_size: slots S of the main blocks' shared memories (64).
        expansion: query expansion of the main blocks' external attention (4).
        token_dim: channels of the stem token blocks (64).
        stem_memory_size: slots of the stem external attention (128).
        splits: the three soft splits (kernel, stride, padding).
        stem_drop: the stem attention's dropouts (authors: 0.1).
        global_pool: ``"token"`` (class token, the authors') or ``"avg"`` (mean of the
            patch tokens).
        drop_rate: dropout after the position embedding, in the MLPs and attention output.
        attn_drop_rate: dropout on the main blocks' attention.
        drop_path_rate: stochastic depth of the last block (linear from 0).
        norm_eps: LayerNorm epsilon (PyTorch default 1e-5, as the authors).

    Shapes: ``forward`` (B, in_chans, H, W) -> (B, num_classes);
    ``forward_features`` -> (B, 1 + N, D); ``forward_head(tokens, pre_logits=True)``
    -> (B, D).
    """

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        in_chans: int = 3,
        num_classes: int = 1000,
        embed_dim: int = 384,
        depth: int = 14,
        num_heads: int = 6,
        mlp_ratio: float = 3.0,
        memory_size: int = 64,
        expansion: int = 4,
        token_dim: int = 64,
        stem_memory_size: int = 128,
        splits: Sequence[Split] = T2T_SPLITS,
        stem_drop: float = 0.1,
        global_pool: Literal["token", "avg"] = "token",
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        norm_eps: float = 1e-5,
    ) -> None:
        super().__init__(
            img_size=img_size,
            in_chans=in_chans,
            num_classes=num_classes,
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
            mixer="external_mh",
            mixer_kwargs=dict(
                memory_size=memory_size, expansion=expansion, attn_drop=attn_drop_rate,
                proj_drop=drop_rate,
            ),
            class_token=True,
            global_pool=global_pool,
            embed_layer=TokensToToken,
            embed_kwargs=dict(
                token_dim=token_dim, memory_size=stem_memory_size, splits=splits,
                attn_drop=stem_drop, proj_drop=stem_drop,
            ),
            embed_name="tokens_to_token",
            pos_embed="sinusoid",
            drop_rate=drop_rate,
            head_drop_rate=0.0,
            drop_path_rate=drop_path_rate,
            norm_eps=norm_eps,
            weight_init=init_eamlp_weights,
        )

    @torch.no_grad()
    def init_weights(self) -> None:
        """The authors' init (:func:`init_eamlp_weights`)."""
        init_eamlp_weights(self)


_COUNTED = (
    "Parameters counted from the authors' code, which includes the fixed sinusoidal "
    "position table (a buffer here)"
)
_EA = dict(paper=EXTERNAL_ATTENTION, fixed_input_size=True)

# EAMLP-7 at 384 px: D=256, depth 7, 4 heads, MLP ratio 2 (6.10M + 0.15M fixed).
register("eamlp_7", EAMLP, dict(embed_dim=256, depth=7, num_heads=4, mlp_ratio=2.0), **_EA,
         input_size=(3, 384, 384), reported_params_m=6.24, reported_top1=71.7,
         notes=_COUNTED + "; top-1 from the authors' training log at 384 px.")
# EAMLP-14: D=384, depth 14, 6 heads, MLP ratio 3 (29.80M + 0.08M fixed).
register("eamlp_14", EAMLP, dict(embed_dim=384, depth=14, num_heads=6, mlp_ratio=3.0), **_EA,
         reported_params_m=29.88, reported_gmacs=6.45, reported_top1=78.9,
         notes=_COUNTED + " (the paper's table: 30M); GMACs counted, not in the paper.")
# EAMLP-19: D=448, depth 19, 7 heads, MLP ratio 3 (54.47M + 0.09M fixed).
register("eamlp_19", EAMLP, dict(embed_dim=448, depth=19, num_heads=7, mlp_ratio=3.0), **_EA,
         reported_params_m=54.56, reported_gmacs=11.60, reported_top1=79.4,
         notes=_COUNTED + " (the paper's table: 55M); GMACs counted, not in the paper.")
# Small-image EAMLP: D=192, depth 6, 3 heads, MLP ratio 2, 8x8 tokens at 32 px.
# Recipe for short CPU runs (benchmarks/recipes.md): batch 32 and no random crop, the change
# that helped the three models measured against the fallback; 65.1 top-1 on Fashion-MNIST
# (2 epochs of 8,000 images). Its fallback run and an lr sweep were not measured. Long runs
# want the crop back: --crop-padding 4.
register("eamlp_cifar", EAMLP,
         dict(embed_dim=192, depth=6, num_heads=3, mlp_ratio=2.0, splits=CIFAR_SPLITS), **_EA,
         recipe={"lr": 2e-3, "warmup": 0.2, "weight_decay": 0.05, "label_smoothing": 0.1,
                 "batch_size": 32, "crop_padding": 0, "channels_last": True},
         input_size=(3, 32, 32), mean=CIFAR10_MEAN, std=CIFAR10_STD, num_classes=10,
         dataset="cifar-10",
         notes="D=192, depth 6, 3 heads, MLP ratio 2; soft splits 3/2/1, 3/2/1, 3/1/1 "
         "(8x8 tokens).")
