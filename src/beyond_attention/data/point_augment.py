"""Point-cloud augmentations, batched in torch (CPU or GPU), deterministic by generator.

The ones PCT trains with (arXiv:2012.09688, Sec. 4.1: random translation in [-0.2, 0.2],
anisotropic scaling in [0.67, 1.5]) and the usual others (Gaussian jitter, rotation about
the up axis). Every function takes and returns ``(B, P, 3)`` coordinates, channels last.
The up axis is ``y`` (axis 1) by default, as in the ModelNet40 HDF5 release.
"""

from __future__ import annotations

import math

import torch

from ..layers.points import check_points

__all__ = ["PointAugment", "jitter", "rotate_up", "scale_anisotropic", "translate"]


def _uniform(shape: tuple[int, ...], low: float, high: float, ref: torch.Tensor,
             generator: torch.Generator | None) -> torch.Tensor:
    r = torch.rand(shape, generator=generator, dtype=torch.float64)
    return (low + (high - low) * r).to(ref.device, ref.dtype)


def scale_anisotropic(points: torch.Tensor, low: float = 2 / 3, high: float = 1.5,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """Scale each axis of each cloud by its own factor drawn uniformly in [low, high]."""
    check_points(points, "points")
    if not 0 < low <= high:
        raise ValueError(f"need 0 < low <= high, got low={low}, high={high}")
    return points * _uniform((points.shape[0], 1, 3), low, high, points, generator)


def translate(points: torch.Tensor, shift: float = 0.2,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """Shift each cloud by a vector drawn uniformly in [-shift, shift]^3."""
    check_points(points, "points")
    if shift < 0:
        raise ValueError(f"shift must be >= 0, got {shift}")
    return points + _uniform((points.shape[0], 1, 3), -shift, shift, points, generator)


def jitter(points: torch.Tensor, sigma: float = 0.01, clip: float = 0.05,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """Add Gaussian noise of std ``sigma`` to every coordinate, clipped to [-clip, clip]."""
    check_points(points, "points")
    if sigma < 0 or clip < 0:
        raise ValueError(f"sigma and clip must be >= 0, got {sigma}, {clip}")
    noise = torch.randn(points.shape, generator=generator, dtype=torch.float64)
    return points + (sigma * noise).clamp(-clip, clip).to(points.device, points.dtype)


def rotation_about(axis: int, angle: torch.Tensor) -> torch.Tensor:
    """Rotation matrices (B, 3, 3) by ``angle`` (B,) radians about coordinate ``axis``."""
    if axis not in (0, 1, 2):
        raise ValueError(f"axis must be 0, 1 or 2, got {axis}")
    c, s = torch.cos(angle), torch.sin(angle)
    i, j = [a for a in range(3) if a != axis]
    rot = torch.zeros(angle.shape[0], 3, 3, dtype=angle.dtype, device=angle.device)
    rot[:, axis, axis] = 1
    rot[:, i, i], rot[:, i, j], rot[:, j, i], rot[:, j, j] = c, -s, s, c
    return rot


def rotate_up(points: torch.Tensor, max_angle: float = 2 * math.pi, axis: int = 1,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """Rotate each cloud about the up ``axis`` by an angle uniform in [0, max_angle)."""
    check_points(points, "points")
    angle = _uniform((points.shape[0],), 0.0, max_angle, points, generator)
    return points @ rotation_about(axis, angle).transpose(1, 2)


class PointAugment:
    """PCT's training augmentation: anisotropic scaling then translation (optionally
    rotation about the up axis and jitter). ``aug(points, generator)`` on (B, P, 3)."""

    def __init__(self, scale: tuple[float, float] | None = (2 / 3, 1.5),
                 shift: float | None = 0.2, rotate: bool = False,
                 jitter_sigma: float | None = None) -> None:
        self.scale, self.shift, self.rotate, self.jitter_sigma = scale, shift, rotate, jitter_sigma

    def __call__(self, points: torch.Tensor, generator: torch.Generator | None = None
                 ) -> torch.Tensor:
        if self.rotate:
            points = rotate_up(points, generator=generator)
        if self.scale is not None:
            points = scale_anisotropic(points, *self.scale, generator=generator)
        if self.shift is not None:
            points = translate(points, self.shift, generator=generator)
        if self.jitter_sigma is not None:
            points = jitter(points, self.jitter_sigma, generator=generator)
        return points
