"""The procedural solids dataset and the point augmentations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from beyond_attention.data.point_augment import (
    PointAugment,
    jitter,
    rotate_up,
    scale_anisotropic,
    translate,
)
from beyond_attention.data.procedural_points import SOLIDS, procedural_point_clouds


def test_deterministic_by_seed_and_balanced() -> None:
    a = procedural_point_clouds(21, 256, seed=4)
    b = procedural_point_clouds(21, 256, seed=4)
    c = procedural_point_clouds(21, 256, seed=5)
    np.testing.assert_array_equal(a.points, b.points)
    np.testing.assert_array_equal(a.parts, b.parts)
    assert not np.array_equal(a.points, c.points)
    assert np.bincount(a.labels).tolist() == [3] * len(SOLIDS)
    assert a.points.dtype == np.float32 and np.isfinite(a.points).all()


def test_parts_belong_to_their_category() -> None:
    ds = procedural_point_clouds(14, 512, seed=0)
    assert ds.num_parts == sum(len(p) for _, p in SOLIDS.values()) == 16
    for pts_parts, label in zip(ds.parts, ds.labels, strict=True):
        allowed = set(ds.category_parts[label])
        assert set(pts_parts.tolist()) <= allowed
        assert len(set(pts_parts.tolist())) == len(allowed)  # every part is sampled


def _canonical(name: str, n: int = 20000) -> tuple[np.ndarray, np.ndarray]:
    return SOLIDS[name][0](n, np.random.default_rng(0))


def test_canonical_surfaces_are_exact_and_area_weighted() -> None:
    p, _ = _canonical("sphere")
    np.testing.assert_allclose(np.linalg.norm(p, axis=1), 1.0)
    p, part = _canonical("cylinder")
    assert abs((part < 2).mean() - 1 / 3) < 0.01  # caps: 2 pi of 6 pi
    side = p[part == 2]
    np.testing.assert_allclose(np.hypot(side[:, 0], side[:, 2]), 1.0)
    p, part = _canonical("cone")
    assert abs((part == 0).mean() - 1 / (1 + math.sqrt(5))) < 0.01
    side = p[part == 1]
    np.testing.assert_allclose(np.hypot(side[:, 0], side[:, 2]), (1 - side[:, 1]) / 2)
    p, part = _canonical("torus")
    ring = np.hypot(p[:, 0], p[:, 2])
    np.testing.assert_allclose(np.hypot(ring - 0.7, p[:, 1]), 0.3, atol=1e-12)
    assert (part == 0).mean() > 0.5  # the outer half has the larger area
    p, part = _canonical("cube")
    assert np.all(np.abs(p).max(axis=1) == 1) and abs((part == 2).mean() - 2 / 3) < 0.01


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="classes must be names"):
        procedural_point_clouds(4, classes=["dodecahedron"])
    with pytest.raises(ValueError, match="num_clouds"):
        procedural_point_clouds(0)


def _cloud(seed: int = 0) -> torch.Tensor:
    return torch.randn(4, 100, 3, generator=torch.Generator().manual_seed(seed))


def test_augmentations_do_what_they_say() -> None:
    x = _cloud()
    g = lambda: torch.Generator().manual_seed(1)  # noqa: E731
    scaled = scale_anisotropic(x, 0.5, 2.0, generator=g())
    factors = scaled / x
    assert torch.allclose(factors, factors[:, :1], rtol=1e-5)  # one factor per cloud and axis
    assert factors.min() >= 0.5 and factors.max() <= 2.0
    shifted = translate(x, 0.2, generator=g())
    d = shifted - x
    assert torch.allclose(d, d[:, :1], atol=1e-6) and d.abs().max() <= 0.2
    noisy = jitter(x, 0.01, 0.02, generator=g())
    assert 0 < (noisy - x).abs().max() <= 0.02 + 1e-6
    rot = rotate_up(x, generator=g())
    torch.testing.assert_close(rot[..., 1], x[..., 1])  # the up axis is kept
    torch.testing.assert_close(rot.norm(dim=-1), x.norm(dim=-1))
    torch.testing.assert_close(PointAugment(rotate=True, jitter_sigma=0.01)(x, g()),
                               PointAugment(rotate=True, jitter_sigma=0.01)(x, g()))


def test_augmentations_reject_bad_input() -> None:
    with pytest.raises(ValueError, match=r"points must have shape \(B, N, 3\)"):
        translate(torch.randn(4, 3))
    with pytest.raises(ValueError, match="NaN"):
        jitter(torch.full((1, 5, 3), float("nan")))
    with pytest.raises(ValueError, match="low <= high"):
        scale_anisotropic(_cloud(), 2.0, 1.0)
