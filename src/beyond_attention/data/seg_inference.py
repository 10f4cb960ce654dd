"""Segmentation inference at any image size: whole-image or sliding-window.

Both take a model mapping ``(B, C, h, w)`` to logits ``(B, K, h', w')`` (``h'``, ``w'``
may be smaller: the logits are then upsampled bilinearly to ``(h, w)``) and return
logits ``(B, K, H, W)`` at the input's size.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

__all__ = ["sliding_window_inference", "whole_image_inference"]

Model = Callable[[torch.Tensor], torch.Tensor]


def _check(images: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        raise ValueError(f"images must be a (B, C, H, W) tensor, got "
                         f"{tuple(getattr(images, 'shape', ()))}")


def _logits_at(model: Model, x: torch.Tensor) -> torch.Tensor:
    out = model(x)
    if out.ndim != 4 or out.shape[0] != x.shape[0]:
        raise ValueError(f"model must return (B, K, h, w) logits, got {tuple(out.shape)}")
    if out.shape[-2:] != x.shape[-2:]:
        out = F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)
    return out


@torch.no_grad()
def whole_image_inference(model: Model, images: torch.Tensor, size_divisor: int = 1
                          ) -> torch.Tensor:
    """Run ``model`` on the whole image, padded (right, bottom, zeros) to a multiple of
    ``size_divisor``; the padding is cropped off the logits."""
    _check(images)
    if size_divisor <= 0:
        raise ValueError(f"size_divisor must be positive, got {size_divisor}")
    h, w = images.shape[-2:]
    ph, pw = -h % size_divisor, -w % size_divisor
    x = F.pad(images, (0, pw, 0, ph)) if ph or pw else images
    return _logits_at(model, x)[..., :h, :w]


def _starts(size: int, window: int, stride: int) -> list[int]:
    if size <= window:
        return [0]
    starts = list(range(0, size - window + 1, stride))
    if starts[-1] != size - window:
        starts.append(size - window)
    return starts


@torch.no_grad()
def sliding_window_inference(
    model: Model, images: torch.Tensor, window: tuple[int, int],
    stride: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Average the logits of overlapping ``window``-sized crops, ``stride`` apart.

    The windows cover the image (the last one in each direction is aligned with the
    border); an image smaller than the window is padded (zeros) and the padding cropped
    off. ``stride`` defaults to two thirds of the window.
    """
    _check(images)
    wh, ww = window
    if wh <= 0 or ww <= 0:
        raise ValueError(f"window must be positive, got {window}")
    sh, sw = stride if stride is not None else (max(1, 2 * wh // 3), max(1, 2 * ww // 3))
    if sh <= 0 or sw <= 0:
        raise ValueError(f"stride must be positive, got {stride}")
    h, w = images.shape[-2:]
    x = F.pad(images, (0, max(ww - w, 0), 0, max(wh - h, 0)))
    hp, wp = x.shape[-2:]
    total: torch.Tensor | None = None
    count = torch.zeros(1, 1, hp, wp, device=x.device)
    for top in _starts(hp, wh, sh):
        for left in _starts(wp, ww, sw):
            out = _logits_at(model, x[..., top:top + wh, left:left + ww])
            if total is None:
                total = out.new_zeros(x.shape[0], out.shape[1], hp, wp)
            total[..., top:top + wh, left:left + ww] += out
            count[..., top:top + wh, left:left + ww] += 1
    assert total is not None
    return (total / count)[..., :h, :w]
