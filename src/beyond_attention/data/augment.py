"""Batched augmentation on the training device: kornia transforms, MixUp/CutMix, normalisation.

The loader hands over uint8 ``(B, C, H, W)`` batches; everything here runs on the whole
batch where it lives (CPU or GPU):

1. scale to [0, 1] float, resize to the model's input size if the data differs;
2. kornia ``RandomCrop`` with zero padding (``crop_padding`` pixels, 4 for CIFAR) and
   ``RandomHorizontalFlip``;
3. optionally kornia's ``RandAugment(n, m)`` or ``TrivialAugment`` (grey images are
   replicated to 3 channels for them and averaged back);
4. MixUp (Zhang et al. 2018) / CutMix (Yun et al. 2019) with the Beta(alpha, alpha) mixing
   of the DeiT recipe (one lambda per batch, the batch mixed with its reverse; CutMix's
   lambda corrected to the clipped box area); when both are on, one of the two is chosen
   per batch with probability ``switch_prob``. They are written here rather than taken
   from kornia because kornia's versions draw lambda uniformly, not from Beta(alpha, alpha).
   Targets become soft: ``lam * smooth(one_hot(y)) + (1 - lam) * smooth(one_hot(y_rev))``,
   each row summing to 1;
5. normalisation ``(x - mean) / std`` with the model's mean and std (kornia ``Normalize``).

Random draws use torch's default generator, which the training loop seeds per step.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import kornia.augmentation as K
import torch
import torch.nn.functional as F
from kornia.augmentation import auto
from torch import nn


def one_hot_smooth(labels: torch.Tensor, num_classes: int, smoothing: float = 0.0) -> torch.Tensor:
    """Label-smoothed one-hot targets ``(B, K)``: ``1 - s + s/K`` on the label, ``s/K`` off."""
    off = smoothing / num_classes
    t = torch.full((labels.shape[0], num_classes), off, device=labels.device)
    return t.scatter_(1, labels[:, None], 1.0 - smoothing + off)


def mix_batch(
    x: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    mixup_alpha: float = 0.0,
    cutmix_alpha: float = 0.0,
    switch_prob: float = 0.5,
    smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """MixUp or CutMix a batch with its reverse.

    Args:
        x: ``(B, C, H, W)`` float images.
        labels: ``(B,)`` int64.
        num_classes: K.
        mixup_alpha, cutmix_alpha: Beta(alpha, alpha) parameters; 0 turns one off.
        switch_prob: probability of CutMix when both are on.
        smoothing: label smoothing applied to both one-hot targets before mixing.

    Returns:
        ``(mixed x, soft targets (B, K), lam)`` where ``lam`` is the weight of the original
        labels (the fraction of pixels kept, for CutMix).
    """
    if mixup_alpha <= 0 and cutmix_alpha <= 0:
        return x, one_hot_smooth(labels, num_classes, smoothing), 1.0
    use_cutmix = cutmix_alpha > 0 and (mixup_alpha <= 0 or float(torch.rand(())) < switch_prob)
    alpha = cutmix_alpha if use_cutmix else mixup_alpha
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    x_rev = x.flip(0)
    if use_cutmix:
        h, w = x.shape[-2:]
        cut = math.sqrt(1.0 - lam)
        ch, cw = int(h * cut), int(w * cut)
        cy, cx = int(torch.randint(h, ())), int(torch.randint(w, ()))
        y0, y1 = max(cy - ch // 2, 0), min(cy + ch // 2, h)
        x0, x1 = max(cx - cw // 2, 0), min(cx + cw // 2, w)
        x = x.clone()
        x[..., y0:y1, x0:x1] = x_rev[..., y0:y1, x0:x1]
        lam = 1.0 - (y1 - y0) * (x1 - x0) / (h * w)
    else:
        x = x * lam + x_rev * (1.0 - lam)
    y1h = one_hot_smooth(labels, num_classes, smoothing)
    return x, y1h * lam + y1h.flip(0) * (1.0 - lam), lam


def to_float(images: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
    """uint8 ``(B, C, H, W)`` -> float32 in [0, 1], resized (bilinear, antialiased) to
    ``size`` if given and different."""
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(
            f"images must be a uint8 (B, C, H, W) tensor, got {images.dtype} {tuple(images.shape)}"
        )
    x = images.float().div_(255.0)
    if size is not None and tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
    return x


class Normalize(nn.Module):
    """uint8 batch -> normalised float batch, for evaluation: ``(x / 255 - mean) / std``.

    Args:
        mean, std: per-channel statistics (length C).
        size: the model's input ``(H, W)``; batches of another size are resized.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float],
                 size: tuple[int, int] | None = None) -> None:
        super().__init__()
        self.size = size
        self.norm = K.Normalize(torch.tensor(mean, dtype=torch.float32),
                                torch.tensor(std, dtype=torch.float32))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` uint8 -> ``(B, C, H', W')`` float32."""
        return self.norm(to_float(images, self.size))


#: A file of this name in an image folder's root marks data whose labels a horizontal
#: flip would change (digits, letters, signs); its training then flips nothing by default.
NO_HFLIP_MARKER = "NO_HFLIP"


def default_hflip(channels: int, source: str = "", extra: dict | None = None,
                  recipe_hflip: float | None = None) -> float:
    """The horizontal-flip probability a run uses when none is given.

    A mirrored digit or letter is not the same class, and Fashion-MNIST has asymmetric
    items too, so flips are off (0.0) for grayscale data (the 28x28 IDX sets and grey
    folders), for data whose ``extra["hflip"]`` is False, and for folders holding a
    :data:`NO_HFLIP_MARKER` file. Otherwise the model's recipe value, else 0.5.
    """
    from pathlib import Path

    if channels == 1 or (extra or {}).get("hflip") is False:
        return 0.0
    root = Path(source) if source else None
    if root is not None and root.is_dir() and (root / NO_HFLIP_MARKER).exists():
        return 0.0
    return 0.5 if recipe_hflip is None else float(recipe_hflip)


class TrainAugment(nn.Module):
    """The training transform: uint8 batch and labels -> augmented, normalised batch and targets.

    Args:
        mean, std: the model's normalisation (length C).
        num_classes: K, for the soft targets of MixUp/CutMix.
        size: the model's input ``(H, W)``; the data is resized to it if different.
        crop_padding: zero padding of the random crop (0: no crop).
        hflip: probability of a horizontal flip (0: none).
        randaugment: ``(n, m)`` for RandAugment (n ops of magnitude m, 0-30 scale), or None.
        trivialaugment: use TrivialAugment (exclusive with ``randaugment``).
        mixup, cutmix: Beta alphas (0: off).
        switch_prob: probability of CutMix when both are on.
        label_smoothing: folded into the soft targets when mixing.

    ``forward`` returns ``(x, targets)``: ``targets`` is the ``(B,)`` int64 labels when no
    mixing is configured (the loss applies label smoothing), else ``(B, K)`` soft targets.
    """

    def __init__(
        self,
        mean: Sequence[float],
        std: Sequence[float],
        num_classes: int,
        size: tuple[int, int],
        crop_padding: int = 4,
        hflip: float = 0.5,
        randaugment: tuple[int, int] | None = None,
        trivialaugment: bool = False,
        mixup: float = 0.0,
        cutmix: float = 0.0,
        switch_prob: float = 0.5,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        if randaugment is not None and trivialaugment:
            raise ValueError("randaugment and trivialaugment are exclusive; choose one")
        if crop_padding < 0 or not 0.0 <= hflip <= 1.0:
            raise ValueError(
                f"crop_padding must be >= 0 and hflip in [0, 1], got {crop_padding}, {hflip}"
            )
        if mixup < 0 or cutmix < 0:
            raise ValueError(f"mixup and cutmix alphas must be >= 0, got {mixup}, {cutmix}")
        self.size = tuple(size)
        self.num_classes = num_classes
        self.mixup, self.cutmix, self.switch_prob = mixup, cutmix, switch_prob
        self.label_smoothing = label_smoothing
        geometric: list[nn.Module] = []
        if crop_padding > 0:
            geometric.append(K.RandomCrop(self.size, padding=crop_padding))
        if hflip > 0:
            geometric.append(K.RandomHorizontalFlip(p=hflip))
        self.geometric = nn.Sequential(*geometric)
        self.policy: nn.Module | None = None
        if randaugment is not None:
            self.policy = auto.RandAugment(n=randaugment[0], m=randaugment[1])
        elif trivialaugment:
            self.policy = auto.TrivialAugment()
        self.norm = K.Normalize(torch.tensor(mean, dtype=torch.float32),
                                torch.tensor(std, dtype=torch.float32))

    @property
    def mixes(self) -> bool:
        return self.mixup > 0 or self.cutmix > 0

    def forward(self, images: torch.Tensor, labels: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, C, H, W)`` uint8, ``(B,)`` int64 -> float ``(B, C, H', W')``, targets."""
        x = to_float(images, self.size)
        if len(self.geometric):
            x = self.geometric(x)
        if self.policy is not None:
            grey = x.shape[1] == 1
            x = self.policy(x.expand(-1, 3, -1, -1) if grey else x)
            x = x.mean(1, keepdim=True) if grey else x
            x = x.clamp_(0.0, 1.0)
        targets = labels
        if self.mixes:
            x, targets, _ = mix_batch(x, labels, self.num_classes, self.mixup, self.cutmix,
                                      self.switch_prob, self.label_smoothing)
        return self.norm(x), targets
