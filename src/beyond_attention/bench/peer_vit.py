"""A peer plain ViT for side-by-side training benchmarks: the architecture of vit-pytorch.

Written after ``vit_pytorch/vit.py`` of github.com/lucidrains/vit-pytorch (the ``ViT`` class
and its ``Attention``, ``FeedForward`` and ``Transformer``), which cannot be imported here
(the package imports torchvision at import time). The same modules in the same order, so
that a step costs what the peer's step costs:

- patch embedding: ``rearrange('b c (h p1) (w p2) -> b (h w) (p1 p2 c)')``, LayerNorm,
  Linear, LayerNorm; a learned position embedding over ``1 + N`` tokens and a cls token;
- ``depth`` pre-norm blocks ``x = attn(x) + x; x = ff(x) + x``: attention with its own
  LayerNorm, a bias-free qkv Linear, ``softmax(q k^T * dim_head^-0.5) v`` written out with
  two matmuls (the peer's code; no fused SDPA kernel) and an output Linear; a feed-forward
  LayerNorm-Linear-GELU-Linear;
- a final LayerNorm, cls (or mean) pooling and a Linear head.

:func:`peer_vit_cifar` is the configuration the benchmarks compare to: 32x32 images, patch 4
(64 tokens + cls), d = 192, depth 6, 3 heads of 64, MLP 384, 10 classes: 1,803,562
parameters (1.80M). Dropout is left out (the peer's default rate is 0).
"""

from __future__ import annotations

import torch
from einops import rearrange, repeat
from einops.layers.torch import Rearrange
from torch import nn

__all__ = ["PeerViT", "peer_vit_cifar"]


class FeedForward(nn.Module):
    """LayerNorm, Linear d -> hidden, GELU, Linear hidden -> d. (B, N, d) -> (B, N, d)."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(dim), nn.Linear(dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, dim)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Attention(nn.Module):
    """Pre-norm multi-head self-attention, ``softmax(Q K^T / sqrt(d_head)) V`` (Vaswani et al.
    2017, Eq. 1), as two explicit matmuls. (B, N, d) -> (B, N, d)."""

    def __init__(self, dim: int, heads: int, dim_head: int) -> None:
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.scale = dim_head**-0.5
        self.norm = nn.LayerNorm(dim)
        self.attend = nn.Softmax(dim=-1)
        self.to_qkv = nn.Linear(dim, inner * 3, bias=False)
        project_out = not (heads == 1 and dim_head == dim)
        self.to_out: nn.Module = nn.Linear(inner, dim) if project_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x)
        q, k, v = (
            rearrange(t, "b n (h d) -> b h n d", h=self.heads)
            for t in self.to_qkv(x).chunk(3, dim=-1)
        )
        attn = self.attend(torch.matmul(q, k.transpose(-1, -2)) * self.scale)
        out = rearrange(torch.matmul(attn, v), "b h n d -> b n (h d)")
        return self.to_out(out)


class PeerViT(nn.Module):
    """vit-pytorch's plain ViT (Dosovitskiy et al., arXiv 2010.11929).

    Args:
        image_size, patch_size: square image and patch sides (the image a multiple).
        num_classes: classes of the head.
        dim, depth, heads, dim_head, mlp_dim: token width, blocks, heads, head width,
            feed-forward hidden width.
        pool: ``"cls"`` (the cls token) or ``"mean"`` (the mean over all tokens).
        channels: input channels.

    Shapes: (B, channels, image_size, image_size) -> (B, num_classes).
    """

    def __init__(
        self,
        *,
        image_size: int,
        patch_size: int,
        num_classes: int,
        dim: int,
        depth: int,
        heads: int,
        mlp_dim: int,
        pool: str = "cls",
        channels: int = 3,
        dim_head: int = 64,
    ) -> None:
        super().__init__()
        if image_size % patch_size:
            raise ValueError(
                f"image_size must be a multiple of patch_size, got {image_size}, {patch_size}"
            )
        if pool not in ("cls", "mean"):
            raise ValueError(f"pool must be 'cls' or 'mean', got {pool!r}")
        num_patches = (image_size // patch_size) ** 2
        patch_dim = channels * patch_size**2
        self.image_size = image_size
        self.channels = channels
        self.to_patch_embedding = nn.Sequential(
            Rearrange("b c (h p1) (w p2) -> b (h w) (p1 p2 c)", p1=patch_size, p2=patch_size),
            nn.LayerNorm(patch_dim),
            nn.Linear(patch_dim, dim),
            nn.LayerNorm(dim),
        )
        self.pos_embedding = nn.Parameter(torch.randn(1, num_patches + 1, dim))
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim))
        self.layers = nn.ModuleList(
            nn.ModuleList([Attention(dim, heads, dim_head), FeedForward(dim, mlp_dim)])
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)
        self.pool = pool
        self.mlp_head = nn.Linear(dim, num_classes)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, num_classes) logits."""
        if img.ndim != 4 or img.shape[1:] != (self.channels, self.image_size, self.image_size):
            raise ValueError(
                f"img must be (B, {self.channels}, {self.image_size}, {self.image_size}), "
                f"got {tuple(img.shape)}"
            )
        x = self.to_patch_embedding(img)
        b, n, _ = x.shape
        x = torch.cat((repeat(self.cls_token, "1 1 d -> b 1 d", b=b), x), dim=1)
        x = x + self.pos_embedding[:, : n + 1]
        for attn, ff in self.layers:
            x = attn(x) + x
            x = ff(x) + x
        x = self.norm(x)
        x = x.mean(dim=1) if self.pool == "mean" else x[:, 0]
        return self.mlp_head(x)


def peer_vit_cifar(num_classes: int = 10) -> PeerViT:
    """The CIFAR configuration: 32x32, patch 4, d 192, depth 6, 3 heads of 64, MLP 384
    (1.80M parameters at 10 classes)."""
    return PeerViT(image_size=32, patch_size=4, num_classes=num_classes, dim=192, depth=6,
                   heads=3, dim_head=64, mlp_dim=384)
