"""Point Cloud Transformer (PCT, Guo et al., Computational Visual Media 2021, arXiv:2012.09688)
and the same network with external attention (arXiv:2105.02358) in place of offset-attention.

Classification (PCT Sec. 3.2 and 3.4, Fig. 2)::

    x (B, 3, N)
    -> neighbour embedding: LBR(3->64), LBR(64->64),
       SG(512 centres, 32 nearest) -> LBR, LBR (128), max over the neighbours,
       SG(256 centres, 32 nearest) -> LBR, LBR (256), max over the neighbours
       (or the point embedding of SPCT/NPCT: LBR(3->128), LBR(128->128), all N points kept)
    -> LBR(256), LBR(256)                              (neighbour embedding only)
    -> 4 attention layers, outputs concatenated (4 x 256), plus the embedding (256)
    -> LBR(1280 -> 1024)                                 forward_features: (B, 1024, M)
    -> pooling, LBRD(512), LBRD(256), Linear(num_classes)  forward_head

LBR = linear (1x1 convolution) + BatchNorm + ReLU; LBRD adds dropout (0.5); the fusion and
the head use LeakyReLU(0.2) as in the authors' implementation.

Variants (the paper's Table 1 names): ``pct`` (neighbour embedding + offset-attention),
``spct`` (point embedding + offset-attention), ``npct`` (point embedding + scaled
dot-product self-attention), ``pct_ea`` (neighbour embedding + EA, the EA paper's
point-cloud network). Parameter counts: the paper reports 2.88M for PCT and 1.36M for
NPCT/SPCT; those counts are reproduced (2.876M, 1.361M) with ``pooling="max"`` and the
query and key projections shared (``share_qk=True``), which is how the authors' code
builds the network. The paper's text describes the pooling as max and average pooling
concatenated (MA-Pool), which is the default here and widens the first head layer to
2048 inputs (3.40M for PCT, 1.89M for SPCT/NPCT).

Part segmentation (PCT Sec. 3.4, Fig. 2 bottom): the point embedding (no down-sampling),
the 4 attention layers at 128 channels, LBR(512 -> 1024), then for every point the
concatenation of its feature, the max- and mean-pooled global features and a 64-d
embedding of the object category's one-hot vector (16 categories in ShapeNet-Part),
then LBR(512), dropout, LBR(256), Conv1d(num_classes).

Contract: inputs are channels-first point clouds (B, in_chans, N), the first three
channels the coordinates (further channels, normals for instance, only enter the
embedding). ``forward_features`` -> per-point features (B, 1024, M); ``forward_head(x,
pre_logits=False)`` -> logits (B, num_classes) (classification) or (B, num_classes, N)
(segmentation); ``num_features`` is the width fed to the classifier (256).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..layers._validate import check_tensor
from ..layers.offset_attention import (
    ExternalAttentionPoints,
    OffsetAttention,
    PointSelfAttention,
    check_point_features,
)
from ..layers.points import check_points, sample_and_group
from ._contract import ClassifierMixin, check_num_classes
from ._registry import EXTERNAL_ATTENTION, Paper, register

__all__ = [
    "PCT",
    "NeighbourEmbedding",
    "PointCloudTransformer",
    "PointCloudTransformerSeg",
    "PointEmbedding",
]

PCT = Paper("PCT: Point Cloud Transformer", "2012.09688")
Mixer = Literal["offset", "external", "self"]
Embedding = Literal["neighbour", "point"]
Pooling = Literal["max_mean", "max"]


def lbr(in_chs: int, out_chs: int, dims: int = 1) -> nn.Sequential:
    """LBR: 1x1 convolution (no bias) + BatchNorm + ReLU, on (B, C, N) or (B, C, M, k)."""
    conv, bn = (nn.Conv1d, nn.BatchNorm1d) if dims == 1 else (nn.Conv2d, nn.BatchNorm2d)
    return nn.Sequential(conv(in_chs, out_chs, 1, bias=False), bn(out_chs), nn.ReLU(inplace=True))


def _check_input(x: torch.Tensor, in_chans: int, min_points: int) -> torch.Tensor:
    """Check a (B, in_chans, N) cloud; return its coordinates (B, N, 3)."""
    check_tensor(x, "x", f"(B, {in_chans}, N)")
    check_point_features(x, in_chans)
    xyz = x[:, :3].transpose(1, 2)
    check_points(xyz, "x", min_points=min_points)
    return xyz


class PointEmbedding(nn.Sequential):
    """SPCT/NPCT's point embedding: LBR(in -> width), LBR(width -> width), per point.

    Shapes: (B, in_chans, N) -> (B, width, N).
    """

    def __init__(self, in_chans: int = 3, width: int = 128) -> None:
        super().__init__(lbr(in_chans, width), lbr(width, width))


class NeighbourEmbedding(nn.Module):
    """PCT's neighbour embedding (Sec. 3.4): two LBRs, then two sampling-and-grouping stages.

    Each stage samples ``samples[i]`` centres by farthest point sampling, groups the ``k``
    nearest points of each (``concat(F(q) - F(p), F(p))``), applies two LBRs and takes the
    max over the neighbours; widths double: ``width`` -> 2 width -> 4 width.

    Shapes: (B, in_chans, N) -> features (B, 4 * width, samples[-1]) and their coordinates
    (B, samples[-1], 3). Requires N >= max(samples[0], k).
    """

    def __init__(self, in_chans: int = 3, width: int = 64,
                 samples: Sequence[int] = (512, 256), k: int = 32) -> None:
        super().__init__()
        if len(samples) != 2 or min(samples) <= 0 or samples[1] > samples[0]:
            raise ValueError(f"samples must be two positive, non-increasing counts, got {samples}")
        if k <= 0 or k > samples[1]:
            raise ValueError(f"k must be in [1, samples[1]={samples[1]}], got {k}")
        self.samples = tuple(int(s) for s in samples)
        self.k = k
        self.in_chans = in_chans
        self.stem = nn.Sequential(lbr(in_chans, width), lbr(width, width))
        self.local0 = nn.Sequential(lbr(2 * width, 2 * width, 2), lbr(2 * width, 2 * width, 2))
        self.local1 = nn.Sequential(lbr(4 * width, 4 * width, 2), lbr(4 * width, 4 * width, 2))
        self.out_chs = 4 * width

    @property
    def min_points(self) -> int:
        return max(self.samples[0], self.k)

    def _stage(self, local: nn.Module, xyz: torch.Tensor, feats: torch.Tensor, m: int
               ) -> tuple[torch.Tensor, torch.Tensor]:
        new_xyz, grouped = sample_and_group(xyz, feats.transpose(1, 2), m, self.k)
        grouped = local(grouped.permute(0, 3, 1, 2))  # (B, 2D, M, k) -> (B, D', M, k)
        return new_xyz, grouped.amax(dim=-1)  # (B, D', M)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        xyz = _check_input(x, self.in_chans, self.min_points)
        feats = self.stem(x)
        xyz, feats = self._stage(self.local0, xyz, feats, self.samples[0])
        xyz, feats = self._stage(self.local1, xyz, feats, self.samples[1])
        return feats, xyz


def make_mixer(mixer: Mixer, channels: int, memory_size: int = 64, share_qk: bool = True
               ) -> nn.Module:
    """One attention layer over (B, C, N) point features: ``offset``, ``external``, ``self``."""
    if mixer == "offset":
        return OffsetAttention(channels, share_qk=share_qk)
    if mixer == "external":
        return ExternalAttentionPoints(channels, memory_size)
    if mixer == "self":
        return PointSelfAttention(channels, share_qk=share_qk)
    raise ValueError(f"mixer must be 'offset', 'external' or 'self', got {mixer!r}")


class _AttentionStack(nn.Module):
    """``depth`` attention layers in sequence; returns their outputs concatenated."""

    def __init__(self, mixer: Mixer, channels: int, depth: int, memory_size: int,
                 share_qk: bool) -> None:
        super().__init__()
        if depth <= 0:
            raise ValueError(f"depth must be positive, got {depth}")
        self.layers = nn.ModuleList(
            make_mixer(mixer, channels, memory_size, share_qk) for _ in range(depth)
        )
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = []
        for layer in self.layers:
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(layer, x, use_reentrant=False)
            else:
                x = layer(x)
            outs.append(x)
        return torch.cat(outs, dim=1)


def _fuse(in_chs: int, out_chs: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv1d(in_chs, out_chs, 1, bias=False), nn.BatchNorm1d(out_chs),
                         nn.LeakyReLU(0.2))


def _pool(x: torch.Tensor, pooling: Pooling) -> torch.Tensor:
    """(B, C, N) -> (B, C) (max) or (B, 2C) (max and mean concatenated)."""
    if pooling == "max":
        return x.amax(dim=-1)
    return torch.cat([x.amax(dim=-1), x.mean(dim=-1)], dim=1)


def _check_pooling(pooling: str) -> None:
    if pooling not in ("max_mean", "max"):
        raise ValueError(f"pooling must be 'max_mean' or 'max', got {pooling!r}")


class PointCloudTransformer(ClassifierMixin, nn.Module):
    """PCT classification network and its variants (see the module docstring).

    Args:
        num_classes: classes (ModelNet40: 40); 0 gives no classifier (``forward``
            returns the 256-d pre-logits).
        in_chans: input channels, the first three the coordinates.
        embedding: ``"neighbour"`` (PCT) or ``"point"`` (SPCT/NPCT).
        mixer: ``"offset"`` (PCT), ``"external"`` (EA) or ``"self"`` (NPCT).
        depth: attention layers (paper: 4).
        width: channels of the attention layers; ``None`` = 256 (neighbour embedding, whose
            first LBRs have ``width // 4``) or 128 (point embedding).
        samples, k: the neighbour embedding's centres per stage and neighbours (512, 256;
            32).
        memory_size: EA memory slots S (64).
        share_qk: one projection for queries and keys (the authors' implementation).
        fuse_dim: width after the fusion LBR (1024).
        pooling: ``"max_mean"`` (the paper's text, default) or ``"max"`` (the authors' code,
            the reported parameter counts).
        dropout: dropout of the two head LBRDs (0.5).

    Shapes: (B, in_chans, N) -> (B, num_classes). The neighbour embedding needs N >= 512.
    """

    fixed_input_size = False  # any number of points (see min_points)

    classifier_attr = "classifier"

    def __init__(
        self,
        num_classes: int = 40,
        in_chans: int = 3,
        *,
        embedding: Embedding = "neighbour",
        mixer: Mixer = "offset",
        depth: int = 4,
        width: int | None = None,
        samples: Sequence[int] = (512, 256),
        k: int = 32,
        memory_size: int = 64,
        share_qk: bool = True,
        fuse_dim: int = 1024,
        pooling: Pooling = "max_mean",
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        if in_chans < 3:
            raise ValueError(f"in_chans must be >= 3 (coordinates first), got {in_chans}")
        _check_pooling(pooling)
        self.in_chans = in_chans
        self.embedding_type = embedding
        self.pooling = pooling
        if embedding == "neighbour":
            width = 256 if width is None else width
            if width % 4:
                raise ValueError(f"width must be divisible by 4, got {width}")
            self.embed: nn.Module = NeighbourEmbedding(in_chans, width // 4, samples, k)
            self.pre = nn.Sequential(lbr(width, width), lbr(width, width))
            fuse_in = (depth + 1) * width
            self.min_points = self.embed.min_points
        elif embedding == "point":
            width = 128 if width is None else width
            self.embed = PointEmbedding(in_chans, width)
            self.pre = nn.Identity()
            fuse_in = depth * width
            self.min_points = 1
        else:
            raise ValueError(f"embedding must be 'neighbour' or 'point', got {embedding!r}")
        self.width = width
        self.blocks = _AttentionStack(mixer, width, depth, memory_size, share_qk)
        self.fuse = _fuse(fuse_in, fuse_dim)
        pooled = fuse_dim * (2 if pooling == "max_mean" else 1)
        self.head = nn.Sequential(
            nn.Linear(pooled, 512, bias=False), nn.BatchNorm1d(512), nn.LeakyReLU(0.2),
            nn.Dropout(dropout),
            nn.Linear(512, 256), nn.BatchNorm1d(256), nn.LeakyReLU(0.2), nn.Dropout(dropout),
        )
        self.num_features = 256
        self.num_classes = check_num_classes(num_classes)
        self.classifier = self._make_classifier(self.num_classes)

    def _make_classifier(self, num_classes: int) -> nn.Module:
        if num_classes == 0:
            return nn.Identity()
        ref = next(self.head.parameters())
        return nn.Linear(self.num_features, num_classes, device=ref.device, dtype=ref.dtype)

    def no_weight_decay(self) -> set[str]:
        """Every one-dimensional parameter (BatchNorm scales and shifts, biases)."""
        return {name for name, p in self.named_parameters() if p.ndim <= 1}

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each attention layer in the backward pass."""
        self.blocks.grad_checkpointing = enable

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_chans, N) -> fused point features (B, fuse_dim, M), M = 256 or N."""
        if self.embedding_type == "neighbour":
            feats, _ = self.embed(x)
            feats = self.pre(feats)
            return self.fuse(torch.cat([self.blocks(feats), feats], dim=1))
        _check_input(x, self.in_chans, self.min_points)
        return self.fuse(self.blocks(self.embed(x)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """(B, fuse_dim, M) -> pooled, two LBRDs: (B, 256) if ``pre_logits``, else logits."""
        x = self.head(_pool(x, self.pooling))
        return x if pre_logits else self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_chans, N) -> logits (B, num_classes)."""
        return self.forward_head(self.forward_features(x))


class PointCloudTransformerSeg(ClassifierMixin, nn.Module):
    """PCT's part-segmentation network, with offset-attention or EA (module docstring).

    Args:
        num_classes: part labels (ShapeNet-Part: 50); 0 gives no final convolution.
        in_chans: input channels, the first three the coordinates.
        num_categories: object categories whose one-hot vector conditions the head
            (ShapeNet-Part: 16); 0 drops the category branch.
        mixer, depth, width, memory_size, share_qk, fuse_dim: as in
            :class:`PointCloudTransformer` (width 128).
        category_dim: width of the category embedding (64).
        dropout: dropout after the first head LBR (0.5).

    ``forward(x, category=None)``: ``category`` (B,) int64 in [0, num_categories), the
    object category of each cloud; ``None`` feeds an all-zero one-hot vector (no category
    information). Shapes: (B, in_chans, N) -> per-point logits (B, num_classes, N).
    """

    fixed_input_size = False  # any number of points

    classifier_attr = "classifier"

    def __init__(
        self,
        num_classes: int = 50,
        in_chans: int = 3,
        *,
        num_categories: int = 16,
        mixer: Mixer = "offset",
        depth: int = 4,
        width: int = 128,
        memory_size: int = 64,
        share_qk: bool = True,
        fuse_dim: int = 1024,
        category_dim: int = 64,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        if in_chans < 3:
            raise ValueError(f"in_chans must be >= 3 (coordinates first), got {in_chans}")
        if num_categories < 0:
            raise ValueError(f"num_categories must be >= 0, got {num_categories}")
        self.in_chans = in_chans
        self.num_categories = num_categories
        self.embed = PointEmbedding(in_chans, width)
        self.blocks = _AttentionStack(mixer, width, depth, memory_size, share_qk)
        self.fuse = _fuse(depth * width, fuse_dim)
        self.category_embed = (
            nn.Sequential(nn.Conv1d(num_categories, category_dim, 1, bias=False),
                          nn.BatchNorm1d(category_dim), nn.LeakyReLU(0.2))
            if num_categories > 0 else None
        )
        head_in = 3 * fuse_dim + (category_dim if num_categories > 0 else 0)
        self.head = nn.Sequential(
            nn.Conv1d(head_in, 512, 1), nn.BatchNorm1d(512), nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Conv1d(512, 256, 1), nn.BatchNorm1d(256), nn.ReLU(inplace=True),
        )
        self.num_features = 256
        self.num_classes = check_num_classes(num_classes)
        self.classifier = self._make_classifier(self.num_classes)

    def _make_classifier(self, num_classes: int) -> nn.Module:
        if num_classes == 0:
            return nn.Identity()
        ref = next(self.head.parameters())
        return nn.Conv1d(self.num_features, num_classes, 1, device=ref.device, dtype=ref.dtype)

    no_weight_decay = PointCloudTransformer.no_weight_decay
    set_grad_checkpointing = PointCloudTransformer.set_grad_checkpointing

    def _category_features(self, category: torch.Tensor | None, ref: torch.Tensor
                           ) -> torch.Tensor | None:
        if self.category_embed is None:
            if category is not None:
                raise ValueError("category was given but the model has num_categories=0")
            return None
        b = ref.shape[0]
        onehot = torch.zeros(b, self.num_categories, 1, device=ref.device, dtype=ref.dtype)
        if category is not None:
            if (not isinstance(category, torch.Tensor) or category.shape != (b,)
                    or category.dtype not in (torch.int64, torch.int32)):
                raise ValueError(
                    f"category must be an integer tensor of shape ({b},), got "
                    f"{getattr(category, 'dtype', type(category).__name__)} "
                    f"{tuple(getattr(category, 'shape', ()))}"
                )
            # a check on the values: skipped while compiling or exporting (see check_points)
            if not torch.compiler.is_compiling() and (
                    (category < 0) | (category >= self.num_categories)).any():
                raise ValueError(f"category values must lie in [0, {self.num_categories})")
            onehot[torch.arange(b, device=ref.device), category.long().to(ref.device), 0] = 1
        return self.category_embed(onehot)  # (B, category_dim, 1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_chans, N) -> fused per-point features (B, fuse_dim, N)."""
        _check_input(x, self.in_chans, 1)
        return self.fuse(self.blocks(self.embed(x)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False,
                     category: torch.Tensor | None = None) -> torch.Tensor:
        """(B, fuse_dim, N) -> (B, 256, N) if ``pre_logits``, else (B, num_classes, N)."""
        n = x.shape[-1]
        parts = [x, x.amax(dim=-1, keepdim=True).expand_as(x),
                 x.mean(dim=-1, keepdim=True).expand_as(x)]
        cat = self._category_features(category, x)
        if cat is not None:
            parts.append(cat.expand(-1, -1, n))
        x = self.head(torch.cat(parts, dim=1))
        return x if pre_logits else self.classifier(x)

    def forward(self, x: torch.Tensor, category: torch.Tensor | None = None) -> torch.Tensor:
        """(B, in_chans, N), optional category (B,) -> per-point logits (B, num_classes, N)."""
        return self.forward_head(self.forward_features(x), category=category)


def _check_common(drop_path_rate: float) -> None:
    if drop_path_rate:
        raise ValueError(f"PCT has no stochastic depth: drop_path_rate must be 0, got "
                         f"{drop_path_rate}")


# Registered models: the table style of the other families. The networks take any number
# of points (at least max(samples[0], k) with the neighbour embedding: 512 by default).
def _classifier(num_classes: int = 40, in_chans: int = 3, drop_path_rate: float = 0.0,
                **kwargs: Any) -> PointCloudTransformer:
    """Builder of the registered classification networks."""
    _check_common(drop_path_rate)
    return PointCloudTransformer(num_classes, in_chans, **kwargs)


def _part_segmenter(num_classes: int = 50, in_chans: int = 3, drop_path_rate: float = 0.0,
                    **kwargs: Any) -> PointCloudTransformerSeg:
    """Builder of the registered part-segmentation networks."""
    _check_common(drop_path_rate)
    return PointCloudTransformerSeg(num_classes, in_chans, **kwargs)


_CLS = dict(task="pointcloud_classification", input_size=(3, 1024), mean=(0.0, 0.0, 0.0),
            std=(1.0, 1.0, 1.0), num_classes=40, dataset="modelnet40")
_SEG = dict(task="pointcloud_part_segmentation", input_size=(3, 2048), mean=(0.0, 0.0, 0.0),
            std=(1.0, 1.0, 1.0), num_classes=50, dataset="shapenet-part")

register("pct", _classifier, dict(embedding="neighbour", mixer="offset"), **_CLS, paper=PCT,
         reported_params_m=2.88, reported_top1=93.2,
         notes="PCT: neighbour embedding + 4 offset-attention layers. 2.88M parameters and "
         "93.2% ModelNet40 overall accuracy reported; pooling='max' reproduces the count.")
register("pct_ea", _classifier, dict(embedding="neighbour", mixer="external"), **_CLS,
         paper=EXTERNAL_ATTENTION,
         notes="PCT with external attention (S=64) in place of offset-attention, as in the EA "
         "paper's point-cloud experiments; linear in the number of points.")
register("spct", _classifier, dict(embedding="point", mixer="offset"), **_CLS, paper=PCT,
         reported_params_m=1.36, reported_top1=92.0,
         notes="Simple PCT: point embedding + 4 offset-attention layers (1.36M parameters "
         "reported; pooling='max' reproduces it).")
register("npct", _classifier, dict(embedding="point", mixer="self"), **_CLS, paper=PCT,
         reported_params_m=1.36, reported_top1=91.0,
         notes="Naive PCT: point embedding + 4 scaled dot-product self-attention layers "
         "(1.36M parameters reported; pooling='max' reproduces it).")
register("pct_partseg", _part_segmenter, dict(mixer="offset"), **_SEG, paper=PCT,
         extra={"num_categories": 16, "reported_miou": {"shapenet-part": 86.4}},
         notes="PCT part segmentation: point embedding + 4 offset-attention layers, per-point "
         "features with max/mean global features and the object category; 86.4 instance mIoU "
         "on ShapeNet-Part reported. forward(x, category=None).")
register("pct_ea_partseg", _part_segmenter, dict(mixer="external"), **_SEG,
         paper=EXTERNAL_ATTENTION, extra={"num_categories": 16},
         notes="PCT part segmentation with external attention (S=64) in place of "
         "offset-attention. forward(x, category=None).")
