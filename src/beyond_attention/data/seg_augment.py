"""Joint image/mask augmentation for segmentation: random scale, pad, crop, flip.

The image is resized bilinearly, the mask by nearest neighbour (labels are never blended);
padding fills the image with ``pad_value`` and the mask with ``ignore_index`` so padded
pixels are left out of the loss and the metrics. Deterministic by ``torch.Generator``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["SegmentationAugment", "collate_segmentation"]


def _as_tensors(image: np.ndarray | torch.Tensor, mask: np.ndarray | torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
    image = torch.as_tensor(image)
    mask = torch.as_tensor(mask)
    if image.ndim != 3:
        raise ValueError(f"image must have shape (C, H, W), got {tuple(image.shape)}")
    if mask.ndim != 2 or mask.shape != image.shape[1:]:
        raise ValueError(f"mask must have shape (H, W)={tuple(image.shape[1:])}, got "
                         f"{tuple(mask.shape)}")
    return image, mask.long()


class SegmentationAugment:
    """Random scale in ``scale``, pad to ``crop_size``, random crop, horizontal flip.

    Args:
        crop_size: (h, w) of the output; ``None`` keeps the scaled size (no pad, no crop).
        scale: the range of the random scale factor (1 and 1: no rescaling).
        flip: flip horizontally with probability 1/2.
        ignore_index: mask value of padded pixels.
        pad_value: image value of padded pixels.

    ``aug(image, mask, generator)``: image (C, H, W) uint8 or float, mask (H, W) ->
    image (C, h, w) of the input's dtype, mask (h, w) int64.
    """

    def __init__(self, crop_size: tuple[int, int] | None = (512, 512),
                 scale: tuple[float, float] = (0.5, 2.0), flip: bool = True,
                 ignore_index: int = 255, pad_value: float = 0) -> None:
        if not 0 < scale[0] <= scale[1]:
            raise ValueError(f"scale must be (low, high) with 0 < low <= high, got {scale}")
        if crop_size is not None and min(crop_size) <= 0:
            raise ValueError(f"crop_size must be positive, got {crop_size}")
        self.crop_size, self.scale, self.flip = crop_size, scale, flip
        self.ignore_index, self.pad_value = ignore_index, pad_value

    def _rand(self, generator: torch.Generator | None) -> float:
        return float(torch.rand((), generator=generator, dtype=torch.float64))

    def __call__(self, image: np.ndarray | torch.Tensor, mask: np.ndarray | torch.Tensor,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = _as_tensors(image, mask)
        dtype = image.dtype
        h, w = mask.shape
        s = self.scale[0] + (self.scale[1] - self.scale[0]) * self._rand(generator)
        size = (max(1, round(h * s)), max(1, round(w * s)))
        if size != (h, w):
            img = F.interpolate(image[None].float(), size=size, mode="bilinear",
                                align_corners=False)[0]
            image = img.round().clamp(0, 255).to(dtype) if not dtype.is_floating_point \
                else img.to(dtype)
            mask = F.interpolate(mask[None, None].float(), size=size, mode="nearest")[0, 0].long()
        if self.crop_size is not None:
            ch, cw = self.crop_size
            ph, pw = max(ch - size[0], 0), max(cw - size[1], 0)
            if ph or pw:
                image = F.pad(image, (0, pw, 0, ph), value=self.pad_value)
                mask = F.pad(mask, (0, pw, 0, ph), value=self.ignore_index)
            top = int(self._rand(generator) * (mask.shape[0] - ch + 1))
            left = int(self._rand(generator) * (mask.shape[1] - cw + 1))
            image = image[:, top:top + ch, left:left + cw]
            mask = mask[top:top + ch, left:left + cw]
        if self.flip and self._rand(generator) < 0.5:
            image, mask = image.flip(-1), mask.flip(-1)
        return image.contiguous(), mask.contiguous()


def collate_segmentation(samples: Sequence[tuple[torch.Tensor, torch.Tensor]]
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack same-size (image, mask) pairs into (B, C, h, w) and (B, h, w)."""
    if not samples:
        raise ValueError("samples must not be empty")
    sizes = {tuple(m.shape) for _, m in samples}
    if len(sizes) != 1:
        raise ValueError(f"samples must share one size to be stacked (crop them), got {sizes}")
    return torch.stack([i for i, _ in samples]), torch.stack([m for _, m in samples])
