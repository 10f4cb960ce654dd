"""Turning an image into tokens: the ViT patch embedding and fixed sinusoidal positions.

``PatchEmbed`` is ViT's stem (Dosovitskiy et al. 2021, eq. 1): the image is cut into
non-overlapping P x P patches and each patch is linearly projected to ``embed_dim``,
implemented as a convolution with kernel = stride = P, optionally followed by a LayerNorm
over the embedded patches (as timm's ``PatchEmbed(norm_layer=...)`` and vit-pytorch's ViT
do). ``sinusoid_position_table`` is the
fixed position code of Vaswani et al. 2017 that T2T-ViT (and so EAMLP) adds to its tokens.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ._validate import check_image

__all__ = ["PatchEmbed", "sinusoid_position_table", "to_2tuple"]


def to_2tuple(value: int | tuple[int, int] | list[int], name: str = "size") -> tuple[int, int]:
    """``S -> (S, S)``; ``(H, W) -> (H, W)``, requiring positive ints."""
    out = (value, value) if isinstance(value, int) else tuple(value)
    if len(out) != 2 or not all(isinstance(v, int) and v > 0 for v in out):
        raise ValueError(f"{name} must be a positive int or a pair (H, W) of them, got {value!r}")
    return out  # type: ignore[return-value]


class PatchEmbed(nn.Module):
    """Non-overlapping patch embedding.

    ``x_p W_E`` for every flattened P x P patch ``x_p`` (ViT eq. 1), as
    ``Conv2d(in_chans, embed_dim, kernel_size=P, stride=P)``.

    Args:
        img_size: the input size (H, W) the embedding is built for; both must be
            divisible by the patch size.
        patch_size: P (int or (P_h, P_w)).
        in_chans: image channels.
        embed_dim: token channels D.
        bias: bias of the projection.
        strict_img_size: when True (the default) an input of another size is a ValueError
            that names the expected size; when False any size divisible by P is accepted.
        norm_eps: when given, a LayerNorm over D (this epsilon) normalises every embedded
            patch (``patch_embed.norm``); None (the default): no norm, ViT eq. 1 as written.

    Shapes: ``(B, in_chans, H, W) -> (B, N, D)`` with ``N = (H / P_h) * (W / P_w)``, tokens
    in row-major order of the ``grid_size = (H / P_h, W / P_w)`` patch grid.
    """

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        patch_size: int | tuple[int, int] = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        bias: bool = True,
        strict_img_size: bool = True,
        norm_eps: float | None = None,
    ) -> None:
        super().__init__()
        self.img_size = to_2tuple(img_size, "img_size")
        self.patch_size = to_2tuple(patch_size, "patch_size")
        for s, p, axis in zip(self.img_size, self.patch_size, ("height", "width"), strict=True):
            if s % p != 0:
                raise ValueError(
                    f"img_size {self.img_size} must be divisible by patch_size "
                    f"{self.patch_size} ({axis}: {s} % {p} != 0)"
                )
        if in_chans <= 0 or embed_dim <= 0:
            raise ValueError(
                f"in_chans and embed_dim must be positive, got {in_chans} and {embed_dim}"
            )
        self.grid_size = (
            self.img_size[0] // self.patch_size[0],
            self.img_size[1] // self.patch_size[1],
        )
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.in_chans = in_chans
        self.embed_dim = embed_dim
        self.strict_img_size = strict_img_size
        self.proj = nn.Conv2d(
            in_chans, embed_dim, kernel_size=self.patch_size, stride=self.patch_size, bias=bias
        )
        self.norm: nn.Module = (
            nn.Identity() if norm_eps is None else nn.LayerNorm(embed_dim, eps=norm_eps)
        )

    def check_input(self, x: torch.Tensor) -> None:
        """Raise ValueError unless ``x`` is ``(B, in_chans, H, W)`` of an accepted size."""
        check_image(x, self.in_chans)
        h, w = x.shape[-2:]
        if self.strict_img_size:
            if (h, w) != self.img_size:
                raise ValueError(
                    f"x has spatial size {(h, w)} but this model was built for img_size "
                    f"{self.img_size}; resize the input or build the model with "
                    f"img_size={(h, w)}"
                )
        elif h % self.patch_size[0] or w % self.patch_size[1]:
            raise ValueError(
                f"x has spatial size {(h, w)}, which is not divisible by patch_size "
                f"{self.patch_size}"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.norm(self.proj(x).flatten(2).transpose(1, 2))

    def extra_repr(self) -> str:
        return f"img_size={self.img_size}, patch_size={self.patch_size}, grid={self.grid_size}"


def sinusoid_position_table(num_positions: int, dim: int) -> torch.Tensor:
    """The fixed sinusoidal position code of Vaswani et al. 2017, as T2T-ViT builds it.

    ``P[p, 2i] = sin(p / 10000^(2i / dim))`` and ``P[p, 2i+1] = cos(p / 10000^(2i / dim))``
    for positions ``p = 0 .. num_positions - 1``.

    Returns a float32 tensor of shape ``(1, num_positions, dim)`` (computed in float64).
    """
    if num_positions <= 0 or dim <= 0:
        raise ValueError(
            f"num_positions and dim must be positive, got {num_positions} and {dim}"
        )
    position = torch.arange(num_positions, dtype=torch.float64).unsqueeze(1)
    channel = torch.arange(dim, dtype=torch.float64)
    exponent = 2.0 * torch.div(channel, 2, rounding_mode="floor") / dim
    angle = position / torch.exp(exponent * math.log(10000.0))
    table = torch.where(channel.long() % 2 == 0, torch.sin(angle), torch.cos(angle))
    return table.float().unsqueeze(0)
