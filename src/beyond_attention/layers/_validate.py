"""Input checks shared by every layer: clear errors that name the argument and the shape.

Every layer (and every model, through its first layer or these checks) refuses:
- a non-tensor (TypeError);
- a tensor that is not floating point, e.g. uint8 images (TypeError: convert them first,
  ``beyond_attention.data.to_float`` or ``x.float() / 255``);
- an empty batch, B = 0 (ValueError): batch norms cannot normalise it and no layer has
  anything to compute, so a caller that may produce empty batches skips them;
- a wrong number of dimensions or channels (ValueError).
"""

from __future__ import annotations

import torch


def check_tensor(x: torch.Tensor, name: str, layout: str) -> None:
    """Require ``x`` to be a non-empty floating tensor; ``layout`` names its expected shape."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(
            f"{name} must be a floating-point tensor {layout} (float32, float64, float16 or "
            f"bfloat16), got dtype {x.dtype}; convert integer images first, e.g. "
            f"x.float() / 255 or beyond_attention.data.to_float"
        )
    if x.ndim >= 1 and x.shape[0] == 0:
        raise ValueError(
            f"{name} must hold at least one sample {layout}, got an empty batch of shape "
            f"{tuple(x.shape)}; skip empty batches before calling the layer"
        )


def check_tokens(x: torch.Tensor, dim: int, name: str = "x") -> None:
    """Require ``x`` to be a non-empty floating ``(B, N, dim)`` token tensor."""
    check_tensor(x, name, f"(B, N, C={dim})")
    if x.ndim != 3:
        raise ValueError(
            f"{name} must have shape (B, N, C={dim}) with 3 dimensions, "
            f"got {x.ndim} dimensions: {tuple(x.shape)}"
        )
    if x.shape[-1] != dim:
        raise ValueError(
            f"{name} must have {dim} channels in its last dimension (B, N, C={dim}), "
            f"got shape {tuple(x.shape)}"
        )


def check_image(x: torch.Tensor, channels: int, name: str = "x") -> None:
    """Require ``x`` to be a non-empty floating ``(B, channels, H, W)`` feature map."""
    check_tensor(x, name, f"(B, C={channels}, H, W)")
    if x.ndim != 4:
        raise ValueError(
            f"{name} must have shape (B, C={channels}, H, W) with 4 dimensions, "
            f"got {x.ndim} dimensions: {tuple(x.shape)}"
        )
    if x.shape[1] != channels:
        raise ValueError(
            f"{name} must have {channels} channels in dimension 1 (B, C={channels}, H, W), "
            f"got shape {tuple(x.shape)}"
        )


def check_divisible(value: int, divisor: int, name: str, divisor_name: str) -> None:
    """Require ``value`` to be divisible by ``divisor`` (used for dims and heads)."""
    if divisor <= 0 or value % divisor != 0:
        raise ValueError(f"{name}={value} must be divisible by {divisor_name}={divisor}")


LOW_PRECISION: tuple[torch.dtype, ...] = (torch.float16, torch.bfloat16)
"""The half-precision dtypes (autocast's), which :func:`upcast` lifts to float32."""


def upcast(x: torch.Tensor) -> torch.Tensor:
    """Half-precision tensors to float32 for softmax and normalisations; others unchanged."""
    return x.float() if x.dtype in LOW_PRECISION else x
