"""ResNet (He et al., arXiv:1512.03385) with a pluggable spatial mixer.

The network is the bottleneck ResNet "v1.5" that torchvision ships (stride on the 3x3
convolution, not on the first 1x1), written from scratch; parameter names follow
torchvision (``conv1``, ``bn1``, ``layer1`` ... ``layer4``, ``fc``; in a block ``conv1``,
``bn1``, ``conv2``, ``bn2``, ``conv3``, ``bn3``, ``downsample``) so that a torchvision
ResNet-50 state dict loads into :func:`resnet50` unchanged.

LambdaNetworks changes one thing in the ResNet: the 3x3 convolution of the bottleneck, here
called the *spatial mixer* (slot ``conv2``). A :data:`SpatialMixerFn` builds it:

    mixer_fn(in_chs, out_chs, *, stride, dilation, feat_size) -> nn.Module
        (B, in_chs, H, W) -> (B, out_chs, H / stride, W / stride)

:func:`conv3x3_mixer` is the plain ResNet; ``lambda_resnet.LambdaMixer`` puts a lambda layer
there (LambdaNetworks, Bello, ICLR 2021, arXiv:2102.08602: the LambdaResNets). A mixer built
with a fixed map size (a ``feat_size`` attribute that is not ``None``: global relative
positions) makes the whole model fixed-size (``model.fixed_input_size``): the model checks
the input size before computing anything.

Also here: the dilated backbone of segmentation networks (``output_stride`` 16 or 8,
strides of c5 / c4+c5 replaced by dilation, torchvision's convention that the first block
of a dilated stage keeps the previous dilation, optional multi-grid on the last stage), the
"deep" 3x3 stem used by the EANet authors' backbone, and a CIFAR stem (3x3 stride 1, no max
pool) for 32x32 inputs.

Registered here: ``resnet50`` (ImageNet, 25.557M parameters, 4.09 GMACs at 224) and
``resnet26_cifar`` (the convolutional twin of ``lambda_resnet26_cifar``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..layers.drop_path import DropPath
from ._contract import (
    ClassifierMixin,
    check_input_size,
    check_num_classes,
    feature_take_indices,
    to_2tuple,
)
from ._registry import CIFAR10_MEAN, CIFAR10_STD, RESNET, register

__all__ = [
    "SpatialMixerFn",
    "conv3x3_mixer",
    "Bottleneck",
    "ResNet",
]

SpatialMixerFn = Callable[..., nn.Module]
"""``fn(in_chs, out_chs, *, stride, dilation, feat_size) -> nn.Module`` building the
bottleneck's spatial mixer; ``feat_size`` is the (H, W) of the mixer's input map.
A built mixer whose parameters depend on ``feat_size`` says so with a ``feat_size``
attribute that is not ``None`` (or ``fixed_input_size = True``)."""

StemType = Literal["imagenet", "deep", "cifar"]


def conv3x3_mixer(
    in_chs: int,
    out_chs: int,
    *,
    stride: int = 1,
    dilation: int = 1,
    feat_size: tuple[int, int] | None = None,
) -> nn.Conv2d:
    """The ResNet's own spatial mixer: a 3x3 convolution without bias.

    ``(B, in_chs, H, W) -> (B, out_chs, ceil(H / stride), ceil(W / stride))``; padding equals
    ``dilation`` so the map keeps its size at stride 1. ``feat_size`` is unused.
    """
    del feat_size
    return nn.Conv2d(
        in_chs, out_chs, 3, stride=stride, padding=dilation, dilation=dilation, bias=False
    )


def _out_size(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


class Bottleneck(nn.Module):
    """The ResNet bottleneck block with a pluggable spatial mixer (ResNet paper Fig. 5).

    ``out = relu(x' + DropPath(bn3(conv3(relu(bn2(mixer(relu(bn1(conv1(x)))))))))``
    where ``x'`` is ``x`` or ``downsample(x)`` (1x1 conv with the block's stride + BN)
    when the shape changes.

    Args:
        in_chs: input channels.
        width: bottleneck width (channels of the spatial mixer).
        stride: stride of the spatial mixer (and of the shortcut projection).
        dilation: dilation passed to the spatial mixer.
        downsample: the shortcut projection, or ``None`` for the identity.
        mixer: a :data:`SpatialMixerFn`; :func:`conv3x3_mixer` gives the ResNet.
        feat_size: (H, W) of the block's input map (used by fixed-size mixers).
        drop_path: stochastic-depth rate of the residual branch.
        expansion: output channels are ``width * expansion``.

    Shapes: (B, in_chs, H, W) -> (B, width * expansion, H / stride, W / stride).
    """

    def __init__(
        self,
        in_chs: int,
        width: int,
        stride: int = 1,
        dilation: int = 1,
        downsample: nn.Module | None = None,
        mixer: SpatialMixerFn = conv3x3_mixer,
        feat_size: tuple[int, int] | None = None,
        drop_path: float = 0.0,
        expansion: int = 4,
    ) -> None:
        super().__init__()
        out_chs = width * expansion
        self.in_chs = in_chs
        self.conv1 = nn.Conv2d(in_chs, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = mixer(width, width, stride=stride, dilation=dilation, feat_size=feat_size)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_chs, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_chs)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def zero_init_last(self) -> None:
        """Set the last BN's gamma to zero, so the block starts as the identity."""
        nn.init.zeros_(self.bn3.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(self.drop_path(out) + shortcut)


class ResNet(ClassifierMixin, nn.Module):
    """Bottleneck ResNet with per-stage spatial mixers, dilation and stochastic depth.

    Args:
        layers: blocks per stage (c2..c5); ``(3, 4, 6, 3)`` is ResNet-50.
        num_classes: classifier outputs; 0 gives an identity head (``forward`` returns the
            pooled features).
        in_chans: input channels.
        img_size: the input (H, W) the model is built for; checked on every forward when
            the model is fixed-size, used to size fixed-size mixers.
        widths: bottleneck widths of the four stages (outputs are 4x these).
        stem_type: ``"imagenet"`` (7x7 stride 2 + 3x3 max pool, stride 4), ``"deep"`` (three
            3x3 convs, the first stride 2, giving ``2 * stem_width`` channels, + max pool:
            the EANet authors' backbone), ``"cifar"`` (one 3x3 stride 1, no pool).
        stem_width: channels of the stem convolutions.
        mixers: one :data:`SpatialMixerFn` for every stage, or four (one per stage).
        output_stride: 32 (classification), 16 (c5 dilated) or 8 (c4 and c5 dilated);
            only for the ImageNet/deep stems (stride-4 stems).
        multi_grid: per-block dilation multipliers of the last stage, applied as in the
            EANet authors' code: block 0 keeps the previous dilation, block ``i >= 1`` uses
            ``dilation * multi_grid[i]``. ``None`` is all ones.
        drop_rate: dropout before the classifier.
        drop_path_rate: stochastic depth of the last block; block ``i`` of ``n`` gets
            ``drop_path_rate * i / (n - 1)`` (linear schedule).
        zero_init_last: start every block as the identity (last BN gamma = 0), as the
            TensorFlow TPU ResNet reference code and timm do (torchvision's default is off;
            the architecture, and a torchvision state dict, are the same either way).
            Besides easing optimisation this keeps a freshly built LambdaResNet finite in
            eval mode: a lambda layer's output is quadratic in its input (queries times
            values), so with uncalibrated BN statistics the residual stream of stacked
            lambda blocks would overflow.

    Shapes: ``forward`` (B, in_chans, H, W) -> (B, num_classes);
    ``forward_features`` -> (B, num_features, H / output_stride, W / output_stride).
    """

    classifier_attr = "fc"

    def __init__(
        self,
        layers: Sequence[int] = (3, 4, 6, 3),
        num_classes: int = 1000,
        in_chans: int = 3,
        img_size: int | tuple[int, int] = 224,
        *,
        widths: Sequence[int] = (64, 128, 256, 512),
        stem_type: StemType = "imagenet",
        stem_width: int = 64,
        mixers: SpatialMixerFn | Sequence[SpatialMixerFn] = conv3x3_mixer,
        output_stride: int = 32,
        multi_grid: Sequence[int] | None = None,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        zero_init_last: bool = True,
    ) -> None:
        super().__init__()
        if len(layers) != 4 or min(layers) < 1:
            raise ValueError(f"layers must be 4 positive block counts, got {tuple(layers)}")
        if len(widths) != 4:
            raise ValueError(f"widths must have 4 entries, got {tuple(widths)}")
        if stem_type not in ("imagenet", "deep", "cifar"):
            raise ValueError(
                f"stem_type must be 'imagenet', 'deep' or 'cifar', got {stem_type!r}"
            )
        stem_stride = 1 if stem_type == "cifar" else 4
        if output_stride not in (8, 16, 32) or (stem_stride == 1 and output_stride != 32):
            raise ValueError(
                f"output_stride must be 8, 16 or 32 (32 with the cifar stem), got {output_stride}"
            )
        if not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {drop_path_rate}")
        if callable(mixers):
            mixers = [mixers] * 4
        if len(mixers) != 4:
            raise ValueError(f"mixers must be one mixer factory or 4, got {len(mixers)}")
        if multi_grid is not None and len(multi_grid) != layers[3]:
            raise ValueError(
                f"multi_grid must have one entry per block of the last stage ({layers[3]}), "
                f"got {tuple(multi_grid)}"
            )
        num_classes = check_num_classes(num_classes)
        img_size = to_2tuple(img_size, "img_size")
        self.img_size: tuple[int, int] = img_size
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.output_stride = output_stride
        self.grad_checkpointing = False
        h, w = img_size

        # Stem.
        if stem_type == "imagenet":
            self.conv1: nn.Module = nn.Conv2d(in_chans, stem_width, 7, 2, 3, bias=False)
            stem_out = stem_width
            h, w = _out_size(h, 7, 2, 3), _out_size(w, 7, 2, 3)
        elif stem_type == "deep":
            self.conv1 = nn.Sequential(
                nn.Conv2d(in_chans, stem_width, 3, 2, 1, bias=False),
                nn.BatchNorm2d(stem_width),
                nn.ReLU(inplace=True),
                nn.Conv2d(stem_width, stem_width, 3, 1, 1, bias=False),
                nn.BatchNorm2d(stem_width),
                nn.ReLU(inplace=True),
                nn.Conv2d(stem_width, 2 * stem_width, 3, 1, 1, bias=False),
            )
            stem_out = 2 * stem_width
            h, w = _out_size(h, 3, 2, 1), _out_size(w, 3, 2, 1)
        else:
            self.conv1 = nn.Conv2d(in_chans, stem_width, 3, 1, 1, bias=False)
            stem_out = stem_width
        self.bn1 = nn.BatchNorm2d(stem_out)
        self.relu = nn.ReLU(inplace=True)
        if stem_type == "cifar":
            self.maxpool: nn.Module = nn.Identity()
        else:
            self.maxpool = nn.MaxPool2d(3, 2, 1)
            h, w = _out_size(h, 3, 2, 1), _out_size(w, 3, 2, 1)

        # Stages c2..c5.
        expansion = 4
        n_blocks = sum(layers)
        dpr = [drop_path_rate * i / max(n_blocks - 1, 1) for i in range(n_blocks)]
        dilate_from = {32: 4, 16: 3, 8: 2}[output_stride]  # first dilated stage index
        in_chs, dilation, block_idx = stem_out, 1, 0
        self.feature_info: list[dict[str, Any]] = []
        reduction = stem_stride
        for i, (n, width, mixer) in enumerate(zip(layers, widths, mixers, strict=True)):
            stride = 1 if i == 0 else 2
            prev_dilation = dilation
            if i >= dilate_from:
                dilation *= stride
                stride = 1
            out_chs = width * expansion
            downsample = None
            if stride != 1 or in_chs != out_chs:
                downsample = nn.Sequential(
                    nn.Conv2d(in_chs, out_chs, 1, stride=stride, bias=False),
                    nn.BatchNorm2d(out_chs),
                )
            grid = list(multi_grid) if (i == 3 and multi_grid is not None) else [1] * n
            blocks = []
            for j in range(n):
                block_dilation = prev_dilation if j == 0 else dilation * grid[j]
                blocks.append(
                    Bottleneck(
                        in_chs if j == 0 else out_chs,
                        width,
                        stride=stride if j == 0 else 1,
                        dilation=block_dilation,
                        downsample=downsample if j == 0 else None,
                        mixer=mixer,
                        feat_size=(h, w),
                        drop_path=dpr[block_idx],
                        expansion=expansion,
                    )
                )
                block_idx += 1
                if j == 0 and stride == 2:
                    h, w = _out_size(h, 3, 2, 1), _out_size(w, 3, 2, 1)
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            in_chs = out_chs
            reduction *= stride
            self.feature_info.append(
                {"num_chs": out_chs, "reduction": reduction, "module": f"layer{i + 1}"}
            )

        # Head.
        self.num_features = in_chs
        self.drop_rate = drop_rate
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.fc: nn.Module = self._make_classifier(num_classes)
        self._init_weights(zero_init_last)

    @property
    def fixed_input_size(self) -> bool:
        """Whether a spatial mixer is sized for its map (global relative positions)."""
        return any(
            getattr(b.conv2, "feat_size", None) is not None
            or bool(getattr(b.conv2, "fixed_input_size", False))
            for b in self.modules()
            if isinstance(b, Bottleneck)
        )

    def _make_classifier(self, num_classes: int) -> nn.Module:
        """A fresh ``Linear(num_features, num_classes)`` (PyTorch's init), or identity."""
        return nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    @property
    def stages(self) -> list[nn.Sequential]:
        """The four stages c2..c5 (``layer1`` .. ``layer4``)."""
        return [self.layer1, self.layer2, self.layer3, self.layer4]

    @torch.no_grad()
    def _init_weights(self, zero_init_last: bool) -> None:
        """torchvision's ResNet initialisation: Kaiming-normal (fan_out) convs, BN 1/0.

        Mixers other than a plain convolution keep their own initialisation.
        """
        skip: set[int] = set()
        for m in self.modules():
            if isinstance(m, Bottleneck) and not isinstance(m.conv2, nn.Conv2d):
                skip.update(id(sub) for sub in m.conv2.modules())
        for m in self.modules():
            if id(m) in skip:
                continue
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_last:
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    m.zero_init_last()

    def no_weight_decay(self) -> set[str]:
        """Names of parameters to exclude from weight decay.

        Every one-dimensional parameter: BatchNorm scales and shifts and all biases (the
        usual ResNet recipe since Goyal et al. 2017). Position tables of lambda layers have
        more dimensions and stay decayed, as in the LambdaNetworks recipe.
        """
        return {name for name, p in self.named_parameters() if p.ndim <= 1}

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute every bottleneck block in the backward pass (saves activation memory)."""
        self.grad_checkpointing = enable

    def check_input(self, x: torch.Tensor) -> None:
        """Raise ``ValueError`` unless ``x`` is (B, in_chans, H, W) with the built-for size
        (fixed-size models only)."""
        check_input_size(
            x, self.in_chans, self.img_size, self.fixed_input_size,
            reason="its position embeddings are sized for it",
        )

    def _run_stage(self, stage: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
        for block in stage:
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return x

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        """Stem: (B, in_chans, H, W) -> (B, C_stem, H / 4, W / 4) (H, W for the cifar stem)."""
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_chans, H, W) -> the c5 map (B, num_features, H / os, W / os)."""
        self.check_input(x)
        x = self.forward_stem(x)
        for stage in self.stages:
            x = self._run_stage(stage, x)
        return x

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | Sequence[int] | None = None,
        intermediates_only: bool = False,
        stop_early: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """The feature maps after stages c2..c5 (stage indices 0..3).

        ``indices``: ``None`` for all four, an int n for the last n, or a list of stage
        indices (negative ones count from the end). Returns ``(c5 map, [maps])``, or only
        the list with ``intermediates_only=True``; ``stop_early`` then skips the stages after
        the last one asked for. Map ``i`` has ``feature_info[i]["num_chs"]`` channels at
        ``1 / feature_info[i]["reduction"]`` of the input size.
        """
        take, last = feature_take_indices(4, indices)
        if not (stop_early and intermediates_only):
            last = 3
        self.check_input(x)
        x = self.forward_stem(x)
        maps = []
        for i, stage in enumerate(self.stages[: last + 1]):
            x = self._run_stage(stage, x)
            if i in take:
                maps.append(x)
        return maps if intermediates_only else (x, maps)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """(B, num_features, h, w) -> pooled (B, num_features) if ``pre_logits`` else logits
        (B, num_classes)."""
        x = self.global_pool(x).flatten(1)
        if self.drop_rate > 0:
            x = F.dropout(x, p=self.drop_rate, training=self.training)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_chans, H, W) -> logits (B, num_classes)."""
        return self.forward_head(self.forward_features(x))


CIFAR_WIDTHS = (16, 32, 64, 128)
"""Bottleneck widths of the CIFAR variants (outputs 64..512): a quarter of ResNet-50's,
small enough to train on two CPU cores."""

# ResNet-50: bottleneck stages (3, 4, 6, 3), widths 64..512, 7x7 stem. 25.557M params.
register("resnet50", ResNet, dict(layers=(3, 4, 6, 3)), paper=RESNET, reported_params_m=25.557,
         reported_gmacs=4.09,
         notes="ResNet-50 v1.5 (stride on the 3x3, as torchvision); the baseline of "
         "LambdaNetworks (Bello, ICLR 2021, arXiv:2102.08602). The ResNet paper's 3.8 GFLOPs "
         "counts v1 (stride on the 1x1).")
# ResNet-26 for 32x32 inputs: stages (2, 2, 2, 2), widths 16..128, CIFAR stem.
# Recipe for short CPU runs, measured on Fashion-MNIST (2 epochs of 8,000 images,
# benchmarks/recipes.md): batch 32 and no random crop reach 84.2 top-1 against 70.6 with the
# fallback (batch 128, 4-pixel crop). Long runs want the crop back: --crop-padding 4.
register("resnet26_cifar", ResNet,
         dict(layers=(2, 2, 2, 2), widths=CIFAR_WIDTHS, stem_type="cifar", stem_width=32),
         input_size=(3, 32, 32), mean=CIFAR10_MEAN, std=CIFAR10_STD, num_classes=10,
         dataset="cifar-10", paper=RESNET,
         recipe={"lr": 2e-3, "warmup": 0.2, "weight_decay": 0.05, "label_smoothing": 0.1,
                 "batch_size": 32, "crop_padding": 0, "channels_last": True},
         notes="Convolutional twin of lambda_resnet26_cifar: ResNet-26 bottlenecks (2, 2, 2, 2), "
         "widths 16-128, CIFAR stem (3x3 stride 1, no max pool).")
