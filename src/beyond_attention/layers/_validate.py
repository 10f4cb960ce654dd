"""Input checks shared by every layer: clear errors that name the argument and the shape."""

from __future__ import annotations

import torch


def check_tokens(x: torch.Tensor, dim: int, name: str = "x") -> None:
    """Require ``x`` to be a ``(B, N, dim)`` token tensor."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
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
    """Require ``x`` to be a ``(B, channels, H, W)`` feature map."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
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


def upcast(x: torch.Tensor) -> torch.Tensor:
    """Half-precision tensors to float32 for softmax and normalisations; others unchanged."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
