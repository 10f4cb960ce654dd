"""What attention over point features costs: EA vs offset-attention vs SDPA self-attention.

For each mixer and each point count N (1,024 to 16,384 by default) on (B, C, N) point
features, one layer of:

- ``external``: :class:`~beyond_attention.layers.offset_attention.ExternalAttentionPoints`
  (EA in PCT's offset block, S = 64 slots): linear in N;
- ``offset``: PCT's :class:`~beyond_attention.layers.offset_attention.OffsetAttention`
  (an explicit N x N map, normalised twice): quadratic in N;
- ``sdpa``: :class:`~beyond_attention.layers.offset_attention.PointSelfAttention`
  (scaled dot-product self-attention through ``torch.nn.functional.
  scaled_dot_product_attention``, which a fused kernel may run without storing the map),

is timed (forward without autograd; forward + backward, gradients of the input and the
parameters) with :func:`~beyond_attention.bench.timing.time_callable`, and its activation
memory (the bytes saved for backward by one training forward) counted with
:func:`~beyond_attention.bench.memory.activation_bytes`; on CUDA the peak memory of the
forward + backward is recorded too. A point that runs out of memory or over the time
budget is recorded as skipped, and the larger sizes of that mixer are not attempted.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..layers.offset_attention import ExternalAttentionPoints, OffsetAttention, PointSelfAttention
from ..tables import fmt_bytes, fmt_num, format_table
from .memory import activation_bytes, cuda_peak_bytes
from .timing import BudgetExceeded, forward_backward_callable, forward_callable, time_callable

__all__ = ["POINT_MIXERS", "bench_point_mixers", "format_point_mixers", "make_point_mixer"]

POINT_MIXERS = ("external", "offset", "sdpa")
DEFAULT_POINTS = (1024, 2048, 4096, 8192, 16384)


def make_point_mixer(name: str, channels: int, memory_size: int = 64) -> nn.Module:
    """One point-attention layer by name (see :data:`POINT_MIXERS`)."""
    if name == "external":
        return ExternalAttentionPoints(channels, memory_size)
    if name == "offset":
        return OffsetAttention(channels)
    if name == "sdpa":
        return PointSelfAttention(channels)
    raise ValueError(f"mixer must be one of {POINT_MIXERS}, got {name!r}")


def _measure(layer: nn.Module, x: torch.Tensor, device: torch.device, repeats: int,
             max_seconds: float | None) -> dict[str, Any]:
    layer.eval()
    fwd = time_callable(forward_callable(layer, [x]), repeats=repeats, warmup=1,
                        max_seconds=max_seconds, device=device)
    layer.train()
    xg = x.detach().requires_grad_(True)
    fwd_bwd = forward_backward_callable(layer, [xg], list(layer.parameters()))
    fb = time_callable(fwd_bwd, repeats=repeats, warmup=1, max_seconds=max_seconds,
                       device=device)
    row: dict[str, Any] = {"forward_ms": fwd.median, "forward_iqr_ms": fwd.iqr,
                           "fwd_bwd_ms": fb.median, "fwd_bwd_iqr_ms": fb.iqr,
                           "activation_bytes": activation_bytes(layer, [xg]).bytes}
    if device.type == "cuda":
        row["peak_bytes"] = cuda_peak_bytes(fwd_bwd, device)
    return row


def bench_point_mixers(
    points: Sequence[int] = DEFAULT_POINTS,
    mixers: Sequence[str] = POINT_MIXERS,
    channels: int = 128,
    batch: int = 1,
    memory_size: int = 64,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    repeats: int = 5,
    max_seconds: float | None = 30.0,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Measure each mixer at each point count; one dict per (mixer, N).

    Args:
        points: the point counts N.
        mixers: names from :data:`POINT_MIXERS`.
        channels: C (128: PCT's width without down-sampling, as in its segmentation net).
        batch: B.
        memory_size: EA's S.
        device, dtype: where and in what precision the layers run.
        repeats: timed calls per measurement.
        max_seconds: time budget per measurement; over it the point is skipped.
        seed: for the weights and the input.

    Each row: ``mixer``, ``points``, ``channels``, ``batch``, ``device``, and either the
    measurements (``forward_ms``, ``fwd_bwd_ms`` medians with their IQRs,
    ``activation_bytes``, on CUDA ``peak_bytes``) or ``skipped`` with the reason.
    """
    device = torch.device(device)
    rows: list[dict[str, Any]] = []
    for name in mixers:
        torch.manual_seed(seed)
        layer = make_point_mixer(name, channels, memory_size).to(device, dtype)
        stop: str | None = None
        for n in sorted(points):
            row: dict[str, Any] = {"mixer": name, "points": n, "channels": channels,
                                   "batch": batch, "device": str(device)}
            if stop is None:
                g = torch.Generator().manual_seed(seed + n)
                x = torch.randn(batch, channels, n, generator=g).to(device, dtype)
                try:
                    row.update(_measure(layer, x, device, repeats, max_seconds))
                except BudgetExceeded as err:
                    stop = f"over the time budget at N={n} ({err})"
                except torch.OutOfMemoryError:
                    stop = f"out of memory at N={n}"
                except RuntimeError as err:  # CPU allocators raise plain RuntimeErrors
                    if "memory" not in str(err).lower():
                        raise
                    stop = f"out of memory at N={n}"
                if device.type == "cuda":
                    torch.cuda.empty_cache()
            if stop is not None:
                row["skipped"] = stop
            rows.append(row)
    return rows


def format_point_mixers(rows: Sequence[dict[str, Any]], markdown: bool = False) -> str:
    """The rows of :func:`bench_point_mixers` as a table."""
    headers = ["mixer", "N", "forward ms", "fwd+bwd ms", "activations", "CUDA peak"]
    body = []
    for r in rows:
        if "skipped" in r:
            body.append([r["mixer"], r["points"], "skipped", "", "", ""])
            continue
        body.append([r["mixer"], r["points"], fmt_num(r["forward_ms"]), fmt_num(r["fwd_bwd_ms"]),
                     fmt_bytes(r["activation_bytes"]), fmt_bytes(r.get("peak_bytes"))])
    return format_table(headers, body, markdown=markdown)
