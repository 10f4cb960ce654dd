"""A procedural point-cloud dataset: sampled surfaces of parametric solids, offline.

Each cloud is ``num_points`` points drawn uniformly (by area) on the surface of one of
seven solids, in a canonical frame with the up axis ``y``, then distorted at random:
anisotropic scaling per axis, rotation about the up axis (any angle) and a small tilt,
an overall scale, and Gaussian noise. Everything is drawn from ``numpy``'s generator
seeded by ``seed``: the same arguments give the same clouds, bit for bit.

Parts (for part segmentation; 16 labels in all, numbered across the classes as in
ShapeNet-Part): sphere upper/lower hemisphere, cube top/bottom/side faces, cylinder
top cap/bottom cap/side, cone base/side, torus outer/inner half, pyramid base/sides,
octahedron upper/lower half. The parts are defined in the canonical frame, before the
rotation, so they stay meaningful (the rotation keeps the up axis, up to the tilt).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from .points import PointCloudDataset, sample_surface

__all__ = ["SOLIDS", "procedural_point_clouds"]

Sampler = Callable[[int, np.random.Generator], tuple[np.ndarray, np.ndarray]]


def _sphere(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    p = rng.standard_normal((n, 3))
    p /= np.linalg.norm(p, axis=1, keepdims=True).clip(1e-12)
    return p, (p[:, 1] < 0).astype(np.int64)  # 0 upper, 1 lower


def _cube(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    face = rng.integers(0, 6, n)  # all six faces have the same area
    axis, sign = face // 2, np.where(face % 2 == 0, 1.0, -1.0)
    p = rng.uniform(-1, 1, (n, 3))
    p[np.arange(n), axis] = sign
    part = np.where(axis == 1, np.where(sign > 0, 0, 1), 2)  # top, bottom, side
    return p, part


def _disk(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    r, t = np.sqrt(rng.random(n)), rng.uniform(0, 2 * math.pi, n)
    return r * np.cos(t), r * np.sin(t)


def _cylinder(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    areas = np.array([math.pi, math.pi, 4 * math.pi])  # caps of radius 1, side of height 2
    part = rng.choice(3, size=n, p=areas / areas.sum())
    x, z = _disk(n, rng)
    t = rng.uniform(0, 2 * math.pi, n)
    side = part == 2
    x[side], z[side] = np.cos(t[side]), np.sin(t[side])
    y = np.where(part == 0, 1.0, np.where(part == 1, -1.0, rng.uniform(-1, 1, n)))
    return np.stack([x, y, z], axis=1), part  # top cap, bottom cap, side


def _cone(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    areas = np.array([math.pi, math.pi * math.sqrt(5)])  # base radius 1, height 2
    part = rng.choice(2, size=n, p=areas / areas.sum())
    x, z = _disk(n, rng)
    y = np.full(n, -1.0)
    side = part == 1
    s = np.sqrt(rng.random(side.sum()))  # distance from the apex, density ~ s
    t = rng.uniform(0, 2 * math.pi, side.sum())
    x[side], z[side], y[side] = s * np.cos(t), s * np.sin(t), 1 - 2 * s
    return np.stack([x, y, z], axis=1), part  # base, side


def _torus(n: int, rng: np.random.Generator, big: float = 0.7, small: float = 0.3
           ) -> tuple[np.ndarray, np.ndarray]:
    out: list[np.ndarray] = []
    while sum(len(o) for o in out) < n:  # area element ~ (R + r cos v): rejection sampling
        v = rng.uniform(0, 2 * math.pi, 2 * n)
        keep = rng.random(2 * n) < (big + small * np.cos(v)) / (big + small)
        out.append(v[keep])
    v = np.concatenate(out)[:n]
    u = rng.uniform(0, 2 * math.pi, n)
    ring = big + small * np.cos(v)
    p = np.stack([ring * np.cos(u), small * np.sin(v), ring * np.sin(u)], axis=1)
    return p, (np.cos(v) < 0).astype(np.int64)  # outer, inner


_PYRAMID_V = np.array([[-1, -1, -1], [1, -1, -1], [1, -1, 1], [-1, -1, 1], [0, 1, 0]], float)
_PYRAMID_F = np.array([[0, 1, 2], [0, 2, 3], [0, 1, 4], [1, 2, 4], [2, 3, 4], [3, 0, 4]])
_OCTA_V = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], float)
_OCTA_F = np.array([[0, 4, 2], [4, 1, 2], [1, 5, 2], [5, 0, 2],
                    [0, 4, 3], [4, 1, 3], [1, 5, 3], [5, 0, 3]])


def _pyramid(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    p, face = sample_surface(_PYRAMID_V, _PYRAMID_F, n, rng)
    return p, (face >= 2).astype(np.int64)  # base, sides


def _octahedron(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    p, face = sample_surface(_OCTA_V, _OCTA_F, n, rng)
    return p, (face >= 4).astype(np.int64)  # upper, lower


# name -> (sampler, part names)
SOLIDS: dict[str, tuple[Sampler, tuple[str, ...]]] = {
    "sphere": (_sphere, ("upper", "lower")),
    "cube": (_cube, ("top", "bottom", "side")),
    "cylinder": (_cylinder, ("top_cap", "bottom_cap", "side")),
    "cone": (_cone, ("base", "side")),
    "torus": (_torus, ("outer", "inner")),
    "pyramid": (_pyramid, ("base", "side")),
    "octahedron": (_octahedron, ("upper", "lower")),
}


def _rotation(yaw: float, tilt: float) -> np.ndarray:
    cy, sy, ct, st = math.cos(yaw), math.sin(yaw), math.cos(tilt), math.sin(tilt)
    about_y = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    about_x = np.array([[1, 0, 0], [0, ct, -st], [0, st, ct]])
    return about_x @ about_y


def procedural_point_clouds(
    num_clouds: int,
    num_points: int = 1024,
    seed: int = 0,
    classes: Sequence[str] | None = None,
    *,
    scale: tuple[float, float] = (0.6, 1.0),
    anisotropy: tuple[float, float] = (0.8, 1.25),
    max_tilt: float = math.radians(10),
    noise: float = 0.01,
    split: str = "train",
) -> PointCloudDataset:
    """``num_clouds`` clouds of the solids in ``classes`` (default: all of :data:`SOLIDS`).

    Classes are balanced (cloud ``i`` has class ``i mod K`` before a seeded shuffle).
    Per cloud: canonical surface sample, per-axis scale in ``anisotropy``, rotation about
    the up axis (uniform angle) and about x (uniform in ``[-max_tilt, max_tilt]``),
    overall scale in ``scale``, Gaussian noise of std ``noise``. The returned dataset has
    part labels (``parts``, ``category_parts``) as described in the module docstring.
    Use different seeds for train and test splits.
    """
    names = list(SOLIDS) if classes is None else list(classes)
    unknown = [c for c in names if c not in SOLIDS]
    if unknown or not names:
        raise ValueError(f"classes must be names from {list(SOLIDS)}, got {names}")
    if num_clouds <= 0 or num_points <= 0:
        raise ValueError(f"num_clouds and num_points must be positive, got {num_clouds}, "
                         f"{num_points}")
    offsets = np.cumsum([0] + [len(SOLIDS[c][1]) for c in names])
    category_parts = [list(range(offsets[i], offsets[i + 1])) for i in range(len(names))]
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(num_clouds) % len(names))
    points = np.empty((num_clouds, num_points, 3), dtype=np.float32)
    parts = np.empty((num_clouds, num_points), dtype=np.int64)
    for i, label in enumerate(labels):
        sampler = SOLIDS[names[label]][0]
        p, part = sampler(num_points, rng)
        p = p * rng.uniform(*anisotropy, size=3)
        p = p @ _rotation(rng.uniform(0, 2 * math.pi), rng.uniform(-max_tilt, max_tilt)).T
        p = p * rng.uniform(*scale) + noise * rng.standard_normal(p.shape)
        points[i], parts[i] = p, part + offsets[label]
    part_names = [f"{c}/{p}" for c in names for p in SOLIDS[c][1]]
    return PointCloudDataset(points, labels, names, parts=parts, category_parts=category_parts,
                             name="procedural-solids", split=split, source=f"seed={seed}",
                             extra={"part_names": part_names})
