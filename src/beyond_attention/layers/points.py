"""Point-cloud sampling and grouping: farthest point sampling, kNN, neighbour grouping.

These are the building blocks of the neighbour embedding of the Point Cloud Transformer
(PCT, Guo et al., Computational Visual Media 2021, arXiv:2012.09688, Sec. 3.4, the
"sampling and grouping" (SG) module):

    P_s       = FPS(P, M)                     (B, M, 3)       M sampled centres
    knn(p)    = the k points nearest to p     (B, M, k)       indices into the N points
    dF(p)     = concat_q (F(q) - F(p)),  q in knn(p)
    F~(p)     = concat(dF(p), repeat(F(p), k))                (B, M, k, 2D)

Coordinates are channels-last here, ``xyz`` (B, N, 3); the models (channels-first, as PCT)
transpose once. Everything is vectorised over the batch and the points: farthest point
sampling loops only over the M samples it draws (each step is one (B, N) update; while
exporting, the loop is one ``scan``, so the graph holds the step once), and
the kNN search runs in chunks of queries so that its memory is ``chunk x N`` per sample,
never a full (N, N) table unless the chunk covers every query.
"""

from __future__ import annotations

import torch

__all__ = [
    "check_points",
    "farthest_point_sample",
    "gather_points",
    "group_neighbours",
    "knn",
    "sample_and_group",
]


def check_points(xyz: torch.Tensor, name: str = "xyz", min_points: int = 1) -> None:
    """Require ``xyz`` to be a finite floating ``(B, N, 3)`` tensor with ``N >= min_points``."""
    if not isinstance(xyz, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(xyz).__name__}")
    if xyz.ndim != 3 or xyz.shape[-1] != 3:
        raise ValueError(
            f"{name} must have shape (B, N, 3) (coordinates last), got {tuple(xyz.shape)}"
        )
    if not xyz.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {xyz.dtype}")
    if xyz.shape[1] < min_points:
        raise ValueError(
            f"{name} has {xyz.shape[1]} points, fewer than the {min_points} required"
        )
    # A check on the values, not the shape: skipped while compiling or exporting, where it
    # would break the graph (dynamo) or fail to trace (torch.export cannot branch on data).
    if not torch.compiler.is_compiling() and not torch.isfinite(xyz).all():
        raise ValueError(f"{name} contains NaN or infinite coordinates")


def farthest_point_sample(
    xyz: torch.Tensor, num_samples: int, start: torch.Tensor | None = None
) -> torch.Tensor:
    """Indices of ``num_samples`` points chosen by iterative farthest point sampling.

    Each step picks the point farthest (Euclidean) from all points picked so far; ties go
    to the lowest index. The first pick is ``start`` (B,) or index 0 of every sample
    (deterministic; pass random indices for the random start of the usual training code).

    Shapes: ``xyz`` (B, N, 3) -> (B, num_samples) int64, distinct indices in [0, N).
    Cost: num_samples steps of O(B N) each; memory O(B N).
    """
    check_points(xyz, "xyz", min_points=max(num_samples, 1))
    if num_samples <= 0:
        raise ValueError(f"num_samples must be positive, got {num_samples}")
    b, n, _ = xyz.shape
    device = xyz.device
    points = xyz.detach().float() if xyz.dtype in (torch.float16, torch.bfloat16) else xyz.detach()
    if start is None:
        current = torch.zeros(b, dtype=torch.long, device=device)
    else:
        if start.shape != (b,) or start.dtype != torch.long:
            raise ValueError(f"start must be an int64 tensor of shape ({b},), got "
                             f"{start.dtype} {tuple(start.shape)}")
        if not torch.compiler.is_compiling() and ((start < 0) | (start >= n)).any():
            raise ValueError(f"start indices must lie in [0, {n})")
        current = start.to(device)
    nearest = torch.full((b, n), float("inf"), dtype=points.dtype, device=device)
    if torch.compiler.is_exporting():
        return _farthest_point_sample_scan(points, nearest, current, num_samples)
    batch = torch.arange(b, device=device)
    picked = []
    for _ in range(num_samples):
        picked.append(current)
        centre = points[batch, current].unsqueeze(1)  # (B, 1, 3)
        dist = (points - centre).square().sum(-1)  # (B, N)
        nearest = torch.minimum(nearest, dist)
        current = nearest.argmax(dim=1)
    return torch.stack(picked, dim=1)


def _farthest_point_sample_scan(points: torch.Tensor, nearest: torch.Tensor,
                                current: torch.Tensor, num_samples: int) -> torch.Tensor:
    """The sampling loop of :func:`farthest_point_sample` as one ``scan`` (exported graphs).

    Unrolled, an exported graph holds one copy of the step per sampled centre, and its
    export time grows about with the square of the centres (PCT's 512 + 256 ran for over
    20 minutes). As a ``scan`` the step is traced once and exports as one ONNX ``Scan``
    node whatever the number of centres. Same arithmetic, same picks as the eager loop.

    Shapes: ``points`` (B, N, 3), ``nearest`` (B, N), ``current`` (B,) -> (B, num_samples).
    """
    from torch._higher_order_ops.scan import scan

    def step(carry: tuple[torch.Tensor, torch.Tensor], _: torch.Tensor
             ) -> tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
        nearest, current = carry
        centre = points.gather(1, current.view(-1, 1, 1).expand(-1, 1, 3))  # (B, 1, 3)
        nearest = torch.minimum(nearest, (points - centre).square().sum(-1))
        return (nearest, nearest.argmax(dim=1)), current.clone()

    steps = points.new_zeros(num_samples, 1)  # the scanned axis: one row per centre
    _, picked = scan(step, (nearest, current), steps)  # (num_samples, B)
    return picked.transpose(0, 1)


def knn(
    query: torch.Tensor, points: torch.Tensor, k: int, chunk_size: int = 1024
) -> torch.Tensor:
    """Indices of the ``k`` nearest ``points`` of every ``query`` point, nearest first.

    Euclidean distances computed pair by pair (``torch.cdist`` without the matrix-product
    shortcut), one chunk of ``chunk_size`` queries at a time: memory ``B x chunk_size x N``.
    A query that is itself in ``points`` finds itself first.

    Shapes: ``query`` (B, M, 3), ``points`` (B, N, 3) -> (B, M, k) int64 indices into N.
    """
    check_points(query, "query")
    check_points(points, "points", min_points=max(k, 1))
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    if query.shape[0] != points.shape[0]:
        raise ValueError(
            f"query and points must have the same batch size, got {query.shape[0]} and "
            f"{points.shape[0]}"
        )
    q, p = query.detach(), points.detach()
    if q.dtype in (torch.float16, torch.bfloat16):
        q, p = q.float(), p.float()
    out = []
    for s in range(0, q.shape[1], chunk_size):
        qc = q[:, s : s + chunk_size]
        # pairwise, without the |q|^2 - 2 q.p + |p|^2 expansion (whose cancellation could
        # reorder near neighbours) and without a (B, m, N, 3) difference tensor
        if torch.compiler.is_exporting() or torch.onnx.is_in_onnx_export():
            # ONNX has no cdist: the same pairwise distances from the (B, m, N, 3)
            # differences (exported graphs only; eager and compiled code keep cdist)
            dist = (qc.unsqueeze(2) - p.unsqueeze(1)).square().sum(-1).sqrt()
        else:
            dist = torch.cdist(qc, p, compute_mode="donot_use_mm_for_euclid_dist")  # (B, m, N)
        out.append(dist.topk(k, dim=-1, largest=False, sorted=True).indices)
    return torch.cat(out, dim=1)


def gather_points(features: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Rows of ``features`` picked per sample by ``idx``.

    Shapes: ``features`` (B, N, C), ``idx`` (B, *S) int64 -> (B, *S, C).
    """
    if features.ndim != 3:
        raise ValueError(f"features must have shape (B, N, C), got {tuple(features.shape)}")
    if idx.ndim < 2 or idx.shape[0] != features.shape[0]:
        raise ValueError(
            f"idx must have shape (B, ...) with B={features.shape[0]}, got {tuple(idx.shape)}"
        )
    b, _, c = features.shape
    flat = idx.reshape(b, -1, 1).expand(-1, -1, c)
    return features.gather(1, flat).reshape(*idx.shape, c)


def group_neighbours(features: torch.Tensor, centres: torch.Tensor, idx: torch.Tensor
                     ) -> torch.Tensor:
    """PCT's grouped features ``concat(F(q) - F(p), F(p))`` for each neighbour q of p.

    Shapes: ``features`` (B, N, D), ``centres`` (B, M, D) (the features of the sampled
    points), ``idx`` (B, M, k) -> (B, M, k, 2D).
    """
    grouped = gather_points(features, idx)  # (B, M, k, D)
    centre = centres.unsqueeze(2).expand_as(grouped)
    return torch.cat([grouped - centre, centre], dim=-1)


def sample_and_group(
    xyz: torch.Tensor, features: torch.Tensor, num_samples: int, k: int,
    start: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """PCT's SG module: FPS ``num_samples`` centres, group their ``k`` nearest neighbours.

    Shapes: ``xyz`` (B, N, 3), ``features`` (B, N, D) -> ``new_xyz`` (B, M, 3) and
    ``grouped`` (B, M, k, 2D) (see :func:`group_neighbours`), M = ``num_samples``.
    """
    check_points(xyz, "xyz", min_points=max(num_samples, k))
    if features.ndim != 3 or features.shape[:2] != xyz.shape[:2]:
        raise ValueError(
            f"features must have shape (B, N, D) with (B, N)={tuple(xyz.shape[:2])}, "
            f"got {tuple(features.shape)}"
        )
    centre_idx = farthest_point_sample(xyz, num_samples, start)  # (B, M)
    new_xyz = gather_points(xyz, centre_idx)
    neighbours = knn(new_xyz, xyz, k)  # (B, M, k)
    grouped = group_neighbours(features, gather_points(features, centre_idx), neighbours)
    return new_xyz, grouped
