"""Farthest point sampling, kNN and grouping against brute-force references."""

from __future__ import annotations

import pytest
import torch

from beyond_attention.layers.points import (
    farthest_point_sample,
    gather_points,
    group_neighbours,
    knn,
    sample_and_group,
)


def _fps_reference(xyz: torch.Tensor, m: int) -> list[list[int]]:
    """Farthest point sampling written out with Python loops over the points."""
    out = []
    for pts in xyz.tolist():
        chosen = [0]
        while len(chosen) < m:
            best, best_d = -1, -1.0
            for i, p in enumerate(pts):
                d = min(sum((a - b) ** 2 for a, b in zip(p, pts[j], strict=True))
                        for j in chosen)
                if d > best_d:
                    best, best_d = i, d
            chosen.append(best)
        out.append(chosen)
    return out


def test_fps_matches_the_loop_reference() -> None:
    torch.manual_seed(0)
    xyz = torch.randn(3, 40, 3, dtype=torch.float64)
    idx = farthest_point_sample(xyz, 12)
    assert idx.shape == (3, 12) and idx.dtype == torch.long
    assert idx.tolist() == _fps_reference(xyz, 12)
    assert all(len(set(row)) == 12 for row in idx.tolist())


def test_fps_picks_the_corners_of_a_cube_first() -> None:
    corners = torch.tensor([[x, y, z] for x in (0, 1) for y in (0, 1) for z in (0, 1)],
                           dtype=torch.float32)
    inner = torch.rand(50, 3) * 0.5 + 0.25
    xyz = torch.cat([corners[:1], inner, corners[1:]]).unsqueeze(0)
    idx = farthest_point_sample(xyz, 8)[0].tolist()
    assert set(idx) == {0, *range(51, 58)}


def test_fps_start_index_is_used() -> None:
    xyz = torch.randn(2, 30, 3)
    idx = farthest_point_sample(xyz, 5, start=torch.tensor([3, 7]))
    assert idx[:, 0].tolist() == [3, 7]


def test_knn_matches_brute_force_and_chunks_agree() -> None:
    torch.manual_seed(1)
    pts = torch.randn(2, 64, 3, dtype=torch.float64)
    query = torch.randn(2, 10, 3, dtype=torch.float64)
    idx = knn(query, pts, 5, chunk_size=3)
    for b in range(2):
        for m in range(10):
            d = [float(((query[b, m] - pts[b, n]) ** 2).sum()) for n in range(64)]
            expected = sorted(range(64), key=lambda n: d[n])[:5]
            assert idx[b, m].tolist() == expected
    assert torch.equal(idx, knn(query, pts, 5, chunk_size=1024))


def test_knn_of_a_member_finds_itself_first() -> None:
    pts = torch.randn(1, 20, 3)
    assert knn(pts, pts, 1)[0, :, 0].tolist() == list(range(20))


def test_group_neighbours_is_difference_and_centre() -> None:
    torch.manual_seed(2)
    feats = torch.randn(2, 9, 4)
    centre_idx = torch.tensor([[0, 5], [2, 8]])
    idx = torch.randint(0, 9, (2, 2, 3))
    centres = gather_points(feats, centre_idx)
    out = group_neighbours(feats, centres, idx)
    assert out.shape == (2, 2, 3, 8)
    for b in range(2):
        for m in range(2):
            for j in range(3):
                f_q, f_p = feats[b, idx[b, m, j]], feats[b, centre_idx[b, m]]
                torch.testing.assert_close(out[b, m, j], torch.cat([f_q - f_p, f_p]))


def test_sample_and_group_shapes_and_gradient() -> None:
    xyz = torch.randn(2, 50, 3)
    feats = torch.randn(2, 50, 6, requires_grad=True)
    new_xyz, grouped = sample_and_group(xyz, feats, 16, 8)
    assert new_xyz.shape == (2, 16, 3) and grouped.shape == (2, 16, 8, 12)
    grouped.sum().backward()
    assert feats.grad is not None and torch.isfinite(feats.grad).all()


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: farthest_point_sample(torch.randn(2, 10), 4), r"xyz must have shape \(B, N, 3\)"),
        (lambda: farthest_point_sample(torch.randn(1, 10, 3), 11), "10 points, fewer than the 11"),
        (lambda: farthest_point_sample(torch.full((1, 10, 3), float("nan")), 2), "NaN"),
        (lambda: knn(torch.randn(1, 4, 3), torch.randn(1, 3, 3), 4), "points has 3 points"),
        (lambda: knn(torch.randn(2, 4, 3), torch.randn(1, 8, 3), 2), "same batch size"),
        (lambda: knn(torch.randn(1, 4, 2), torch.randn(1, 8, 3), 2), "query must have shape"),
        (lambda: farthest_point_sample(torch.zeros(1, 5, 3, dtype=torch.long), 2),
         "floating-point"),
    ],
)
def test_bad_input_is_named(call, match: str) -> None:
    with pytest.raises((ValueError, TypeError), match=match):
        call()
