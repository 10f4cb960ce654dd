"""EANet: semantic segmentation with an external-attention head (EA paper (Guo et al.,
arXiv:2105.02358), the segmentation network, and the authors' code).

A dilated ResNet (output stride 8) extracts a c5 map; the head is, as in the authors' code::

    f = relu(BN(conv3x3(c5)))                 (B, 2048, h, w) -> (B, 512, h, w)
    f = ExternalAttentionBlock2d(f)           EA with S = 64 memory slots, BN, residual, ReLU
    f = Dropout2d(relu(BN(conv3x3(f))))       (B, 256, h, w)
    logits = conv1x1(f)                       (B, num_classes, h, w)
    out = bilinear_upsample(logits)           (B, num_classes, H, W), align_corners=True

Backbone choices follow the authors' code (``model_torch.py``): the "deep" stem (three 3x3
convolutions, 128 channels into c2), c4 dilated by 2 and c5 by 4 with the first block of
each keeping the previous dilation, and the multi-grid (1, 2, 4) on c5 applied to blocks 1
and 2 only (c5 dilations 2, 8, 16). ``stem_type="imagenet"`` and ``multi_grid=None`` give
the plain torchvision-style dilated ResNet instead.

Model contract, adapted to segmentation: ``forward_features`` returns the backbone's c5 map
(B, 2048, H/8, W/8); ``forward_head(x, pre_logits=False, output_size=None)`` maps it to
per-pixel logits (upsampled to ``output_size``, by default 8x the feature size);
``forward`` returns logits at the input size; ``reset_classifier`` replaces the final 1x1
convolution; ``num_features`` is the channel count of the head's last map (256).

Registered: ``eanet_resnet50`` and ``eanet_resnet101`` (the paper's network), both for
ADE20K (150 classes) at 512x512 by default; any size works (the model is not fixed-size).
``eanet_resnet26_small`` (a narrow dilated ResNet-26, 128x128, 11 classes: the Fashion-MNIST
composite's 10 items + background) with the EA head, and the same network with an SDPA
head (``eanet_resnet26_small_sdpa``) and without a mixer (``eanet_resnet26_small_noattn``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..layers.external_attention import ExternalAttentionBlock2d
from ..layers.norms import BatchNorm2d
from ..layers.self_attention import SelfAttention
from ._contract import ClassifierMixin, check_num_classes
from ._registry import EXTERNAL_ATTENTION, register
from .resnet import ResNet, StemType

__all__ = ["ConvBNReLU", "EANet", "SelfAttentionBlock2d", "make_head_mixer"]

HeadMixer = Literal["external", "self", "none"]


class ConvBNReLU(nn.Sequential):
    """``relu(BN(conv(x)))``, a convolution without bias, 'same' padding.

    Shapes: (B, in_chs, H, W) -> (B, out_chs, H, W).
    """

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, padding=kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(out_chs)
        self.act = nn.ReLU(inplace=True)


class SelfAttentionBlock2d(nn.Module):
    """The EA block's residual form with scaled dot-product self-attention as the mixer
    (the comparison head): ``relu(x + BN(conv1x1(SA(conv1x1(x) as tokens))))``.

    Shapes: (B, C, H, W) -> (B, C, H, W); quadratic in H * W.
    """

    def __init__(self, channels: int, num_heads: int = 8) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 1)
        self.attn = SelfAttention(channels, num_heads=num_heads)
        self.conv2 = nn.Conv2d(channels, channels, 1, bias=False)
        self.norm = BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = rearrange(self.conv1(x), "b c h w -> b (h w) c")
        y = rearrange(self.attn(tokens), "b (h w) c -> b c h w", h=h, w=w)
        return F.relu(x + self.norm(self.conv2(y)))


def make_head_mixer(kind: HeadMixer, channels: int, memory_size: int) -> nn.Module:
    """The head's mixer: ``"external"`` (EANet), ``"self"`` (SDPA) or ``"none"``."""
    if kind == "external":
        return ExternalAttentionBlock2d(channels, memory_size)
    if kind == "self":
        return SelfAttentionBlock2d(channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"head_mixer must be 'external', 'self' or 'none', got {kind!r}")


class EANet(ClassifierMixin, nn.Module):
    """Dilated ResNet + external-attention segmentation head (EA paper (Guo et al.,
    arXiv:2105.02358), with the EA block of the authors' code).

    Args:
        layers: backbone blocks per stage; (3, 4, 23, 3) is ResNet-101.
        num_classes: output classes; 0 leaves the head without its final 1x1 convolution
            (``forward`` then returns the upsampled 256-channel map).
        in_chans: input channels.
        img_size: nominal input (H, W) (any size works).
        widths: backbone bottleneck widths (c5 has ``4 * widths[3]`` channels; paper 2048).
        stem_width: backbone stem width (the deep stem outputs twice this).
        memory_size: S, slots of the external memories (paper: 64).
        head_width: channels of the EA block (paper: 512).
        head_mixer: the head's mixer between its two convolutions, kept under the name
            ``ea``: ``"external"`` (the paper's EA block), ``"self"`` (the same residual
            block with SDPA self-attention, :class:`SelfAttentionBlock2d`) or ``"none"``
            (identity), for comparisons that change the mixer and nothing else.
        head_out: channels before the classifier (paper: 256).
        dropout: Dropout2d rate before the classifier (paper: 0.1).
        stem_type: backbone stem, ``"deep"`` as in the authors' code.
        output_stride: 8 (paper) or 16.
        multi_grid: dilation multipliers of c5's blocks, authors' convention (see
            :class:`~beyond_attention.models.resnet.ResNet`).
        drop_path_rate: stochastic depth of the backbone's last block (linear schedule).
        zero_init_last: zero-initialise the last BN of every backbone block (see
            :class:`~beyond_attention.models.resnet.ResNet`; irrelevant when loading
            ImageNet weights, as the authors do).
        align_corners: of the final bilinear upsampling (authors: True).

    Shapes: (B, in_chans, H, W) -> (B, num_classes, H, W).
    """

    classifier_attr = "classifier"

    def __init__(
        self,
        layers: Sequence[int] = (3, 4, 23, 3),
        num_classes: int = 150,
        in_chans: int = 3,
        img_size: int | tuple[int, int] = 512,
        *,
        widths: Sequence[int] = (64, 128, 256, 512),
        stem_width: int = 64,
        memory_size: int = 64,
        head_width: int = 512,
        head_out: int = 256,
        dropout: float = 0.1,
        stem_type: StemType = "deep",
        output_stride: int = 8,
        multi_grid: Sequence[int] | None = (1, 2, 4),
        drop_path_rate: float = 0.0,
        zero_init_last: bool = True,
        align_corners: bool = True,
        head_mixer: HeadMixer = "external",
    ) -> None:
        super().__init__()
        if output_stride not in (8, 16):
            raise ValueError(f"output_stride must be 8 or 16 for EANet, got {output_stride}")
        self.backbone = ResNet(
            layers,
            num_classes=0,
            in_chans=in_chans,
            img_size=img_size,
            widths=widths,
            stem_type=stem_type,
            stem_width=stem_width,
            output_stride=output_stride,
            multi_grid=multi_grid,
            drop_path_rate=drop_path_rate,
            zero_init_last=zero_init_last,
        )
        self.img_size = self.backbone.img_size
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.output_stride = output_stride
        self.align_corners = align_corners
        self.feature_info = self.backbone.feature_info
        self.conv0 = ConvBNReLU(self.backbone.num_features, head_width, 3)
        self.ea = make_head_mixer(head_mixer, head_width, memory_size)
        self.conv1 = ConvBNReLU(head_width, head_out, 3)
        self.drop = nn.Dropout2d(dropout)
        self.num_features = head_out
        self.classifier: nn.Module = self._make_classifier(num_classes)
        for conv in (self.conv0.conv, self.conv1.conv):
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")

    @property
    def fixed_input_size(self) -> bool:
        """As the backbone's (False: the EA head works at any size)."""
        return self.backbone.fixed_input_size

    def _make_classifier(self, num_classes: int) -> nn.Module:
        num_classes = check_num_classes(num_classes)
        return nn.Conv2d(self.num_features, num_classes, 1) if num_classes > 0 else nn.Identity()

    def no_weight_decay(self) -> set[str]:
        """Every one-dimensional parameter (BN scales/shifts, biases), as in the backbone."""
        return {name for name, p in self.named_parameters() if p.ndim <= 1}

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute the backbone's blocks in the backward pass."""
        self.backbone.set_grad_checkpointing(enable)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_chans, H, W) -> the backbone's c5 map (B, 2048, H/8, W/8)."""
        return self.backbone.forward_features(x)

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | Sequence[int] | None = None,
        intermediates_only: bool = False,
        stop_early: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """The backbone's stage maps c2..c5 (see ``ResNet.forward_intermediates``)."""
        return self.backbone.forward_intermediates(x, indices, intermediates_only, stop_early)

    def forward_head(
        self,
        x: torch.Tensor,
        pre_logits: bool = False,
        output_size: tuple[int, int] | None = None,
    ) -> torch.Tensor:
        """The EANet head on a c5 map (B, 2048, h, w).

        Returns the 256-channel map (B, 256, h, w) after dropout if ``pre_logits``, else
        logits (B, num_classes, H, W) bilinearly upsampled to ``output_size`` (default
        ``(h * output_stride, w * output_stride)``).
        """
        x = self.conv0(x)
        x = self.ea(x)
        x = self.drop(self.conv1(x))
        if pre_logits:
            return x
        x = self.classifier(x)
        if output_size is None:
            output_size = (x.shape[-2] * self.output_stride, x.shape[-1] * self.output_stride)
        return F.interpolate(
            x, size=tuple(output_size), mode="bilinear", align_corners=self.align_corners
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_chans, H, W) -> per-pixel logits (B, num_classes, H, W)."""
        return self.forward_head(self.forward_features(x), output_size=tuple(x.shape[-2:]))


_EANET_CONFIG: dict[str, Any] = dict(
    task="semantic_segmentation",
    input_size=(3, 512, 512),
    num_classes=150,
    dataset="ade20k",
    paper=EXTERNAL_ATTENTION,
)

# EANet on a dilated ResNet-50 (deep stem, output stride 8), ADE20K's 150 classes.
register("eanet_resnet50", EANet, dict(layers=(3, 4, 6, 3)), **_EANET_CONFIG,
         notes="EANet head on a dilated ResNet-50 (output stride 8); the paper reports only the "
         "ResNet-101 network. Returns per-pixel logits at the input size.")
# EANet: dilated ResNet-101 (deep stem, output stride 8) + EA head, 150 classes.
register("eanet_resnet101", EANet, dict(layers=(3, 4, 23, 3)), **_EANET_CONFIG,
         notes="The paper's EANet: dilated ResNet-101 (output stride 8) + EA head. Reported "
         "ADE20K val 45.33 mIoU, Cityscapes val 81.7 mIoU (EA paper, Guo et al., "
         "arXiv:2105.02358). Returns per-pixel logits at the input size.",
         extra={"reported_miou": {"ade20k": 45.33, "cityscapes": 81.7}})

# Small networks for the offline segmentation set (Fashion-MNIST items on a 128 px canvas):
# dilated ResNet-26 (2, 2, 2, 2) at half width (c5: 1024 channels), EA head at 128 channels.
_SMALL = dict(layers=(2, 2, 2, 2), widths=(32, 64, 128, 256), stem_width=32, head_width=128,
              head_out=64, memory_size=32, multi_grid=(1, 2))
_SMALL_CONFIG: dict[str, Any] = dict(
    task="semantic_segmentation", input_size=(3, 128, 128), num_classes=11,
    dataset="fashion-mnist-composite", paper=EXTERNAL_ATTENTION,
)
register("eanet_resnet26_small", EANet, _SMALL, **_SMALL_CONFIG,
         notes="Small EANet: narrow dilated ResNet-26 (output stride 8) + EA head (S=32) at "
         "128 channels, for 64-128 px inputs.")
register("eanet_resnet26_small_sdpa", EANet, {**_SMALL, "head_mixer": "self"}, **_SMALL_CONFIG,
         notes="eanet_resnet26_small with SDPA self-attention (8 heads) in place of the EA "
         "block; quadratic in the feature-map size.")
register("eanet_resnet26_small_noattn", EANet, {**_SMALL, "head_mixer": "none"},
         **_SMALL_CONFIG, notes="eanet_resnet26_small without a mixer in the head (the two "
         "convolutions only).")
