"""What attention over point features costs: EA vs offset-attention vs SDPA self-attention.

For each mixer and each point count N (1,024 to 16,384 by default) on (B, C, N) point
features, one layer of:

- ``external``: :class:`~beyond_attention.layers.offset_attention.ExternalAttentionPoints`
  (EA in PCT's offset block, S = 64 slots): linear in N;
- ``offset``: PCT's :class:`~beyond_attention.layers.offset_attention.OffsetAttention`
  (an explicit N x N map, normalised twice): quadratic in N;
- ``sdpa``: :class:`~beyond_attention.layers.offset_attention.PointSelfAttention`
  (scaled dot-product self-attention through ``torch.nn.functional.
  scaled_dot_product_attention``, which a fused kernel may run without storing the map;
  torch 2.13's CPU kernel does not take a value width (C) other than the query width
  (C / 4), so on CPU the math path runs and stores it: quadratic in N there),

is timed (forward without autograd; forward + backward, gradients of the input and the
parameters) with :func:`~beyond_attention.bench.timing.time_callable`, and its activation
memory (the bytes saved for backward by one training forward) counted with
:func:`~beyond_attention.bench.memory.activation_bytes`; on CUDA the peak memory of the
forward + backward is recorded too. A point that runs out of memory or over the time
budget is recorded as skipped, and the larger sizes of that mixer are not attempted; so is
a point whose N x N attention is predicted (:func:`attention_bytes`) to need more memory
than the budget. :func:`memory_growth` says whether a mixer's activation memory grows
linearly or quadratically in N. :func:`run_points` is ``beyond-attention bench points``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from ..layers.offset_attention import ExternalAttentionPoints, OffsetAttention, PointSelfAttention
from ..tables import fmt_bytes, fmt_num, format_table
from .memory import activation_bytes, cuda_peak_bytes
from .records import Record
from .settings import PointSettings
from .timing import BudgetExceeded, forward_backward_callable, forward_callable, time_callable

__all__ = [
    "ATTENTION_MAPS",
    "POINT_MIXERS",
    "PointsResult",
    "attention_bytes",
    "bench_point_mixers",
    "format_growth",
    "format_point_mixers",
    "growth_label",
    "make_point_mixer",
    "memory_growth",
    "run_points",
]

POINT_MIXERS = ("external", "offset", "sdpa")
DEFAULT_POINTS = (1024, 2048, 4096, 8192, 16384)

#: (B, N, N) maps one forward + backward of a mixer holds at its peak, the mixers with an
#: N x N attention only: the growth of the CPU process's peak resident memory over one
#: forward + backward at N = 4,096, C = 128, in units of one float32 map, rounded up
#: (offset-attention 5.5: the energy, the softmax, A and their gradients; SDPA 3.6).
ATTENTION_MAPS = {"offset": 6, "sdpa": 4}

#: a memory growing like N^p with p below this is "linear", from it on "quadratic" (the
#: nearer of the two; the exponent itself is recorded beside the label).
QUADRATIC_FROM = 1.5


def make_point_mixer(name: str, channels: int, memory_size: int = 64) -> nn.Module:
    """One point-attention layer by name (see :data:`POINT_MIXERS`)."""
    if name == "external":
        return ExternalAttentionPoints(channels, memory_size)
    if name == "offset":
        return OffsetAttention(channels)
    if name == "sdpa":
        return PointSelfAttention(channels)
    raise ValueError(f"mixer must be one of {POINT_MIXERS}, got {name!r}")


def attention_bytes(name: str, points: int, batch: int, dtype: torch.dtype) -> int | None:
    """Predicted peak bytes of a mixer's N x N attention in one forward + backward.

    ``ATTENTION_MAPS[name] * B * N^2 * itemsize``; None for a mixer without an N x N map
    (EA attends to S memory slots: (B, S, N)).
    """
    maps = ATTENTION_MAPS.get(name)
    if maps is None:
        return None
    itemsize = torch.empty((), dtype=dtype).element_size()
    return maps * batch * points * points * itemsize


def growth_label(exponent: float | None) -> str:
    """``linear`` or ``quadratic``, the nearer to the exponent p of memory ~ N^p
    (``unknown`` without one)."""
    if exponent is None or not math.isfinite(exponent):
        return "unknown"
    return "quadratic" if exponent >= QUADRATIC_FROM else "linear"


def memory_growth(rows: Sequence[dict[str, Any]], key: str = "activation_bytes"
                  ) -> dict[str, dict[str, Any]]:
    """How each mixer's memory grows with N: ``{mixer: {"exponent", "label", "between"}}``.

    The exponent p of ``memory ~ N^p`` between the two largest measured point counts
    (at small N the linear terms, projections and normalisations, hide an N^2 map; the
    largest sizes show the asymptote). A mixer with fewer than two measured points has
    exponent None and label ``unknown``.
    """
    by_mixer: dict[str, list[tuple[int, float]]] = {}
    for r in rows:
        by_mixer.setdefault(r["mixer"], [])
        if "skipped" not in r and r.get(key):
            by_mixer[r["mixer"]].append((int(r["points"]), float(r[key])))
    out: dict[str, dict[str, Any]] = {}
    for name, pts in by_mixer.items():
        pts.sort()
        if len(pts) < 2:
            out[name] = {"exponent": None, "label": "unknown", "between": [p[0] for p in pts]}
            continue
        (n1, m1), (n2, m2) = pts[-2], pts[-1]
        p = math.log(m2 / m1) / math.log(n2 / n1)
        out[name] = {"exponent": p, "label": growth_label(p), "between": [n1, n2]}
    return out


def _measure(layer: nn.Module, x: torch.Tensor, device: torch.device, repeats: int,
             max_seconds: float | None, warmup: int = 1) -> dict[str, Any]:
    layer.eval()
    fwd = time_callable(forward_callable(layer, [x]), repeats=repeats, warmup=warmup,
                        max_seconds=max_seconds, device=device)
    layer.train()
    xg = x.detach().requires_grad_(True)
    fwd_bwd = forward_backward_callable(layer, [xg], list(layer.parameters()))
    fb = time_callable(fwd_bwd, repeats=repeats, warmup=warmup, max_seconds=max_seconds,
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
    warmup: int = 1,
    max_memory_gb: float | None = None,
    log: Callable[[str], None] | None = None,
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
        warmup: untimed calls before each latency.
        max_memory_gb: a point whose N x N attention (:func:`attention_bytes`) would need
            more than this is skipped, with the larger ones; None: no prediction.
        log: called with one progress line per point.

    Each row: ``mixer``, ``points``, ``channels``, ``batch``, ``device``, for the mixers
    with an N x N map ``attention_bytes`` (predicted), and either the measurements
    (``forward_ms``, ``fwd_bwd_ms`` medians with their IQRs, ``activation_bytes``, on
    CUDA ``peak_bytes``) or ``skipped`` with the reason.
    """
    device = torch.device(device)
    unknown = [m for m in mixers if m not in POINT_MIXERS]
    if unknown:
        raise ValueError(f"mixer must be one of {POINT_MIXERS}, got {unknown[0]!r}")
    rows: list[dict[str, Any]] = []
    for name in mixers:
        torch.manual_seed(seed)
        layer = make_point_mixer(name, channels, memory_size).to(device, dtype)
        stop: str | None = None
        for n in sorted(points):
            row: dict[str, Any] = {"mixer": name, "points": n, "channels": channels,
                                   "batch": batch, "device": str(device)}
            need = attention_bytes(name, n, batch, dtype)
            if need is not None:
                row["attention_bytes"] = need
            over = (need is not None and max_memory_gb is not None
                    and need > max_memory_gb * 2**30)
            if stop is None and over:
                row["skipped"] = (f"its N x N attention needs about {fmt_bytes(need)} > "
                                  f"--max-memory-gb {max_memory_gb:g}")
            if stop is None and "skipped" not in row:
                g = torch.Generator().manual_seed(seed + n)
                x = torch.randn(batch, channels, n, generator=g).to(device, dtype)
                try:
                    row.update(_measure(layer, x, device, repeats, max_seconds, warmup))
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
            if log is not None:
                log(_row_line(row))
    return rows


def _row_line(r: dict[str, Any]) -> str:
    """One progress line: a measured point or why it was skipped."""
    head = f"  {r['mixer']:>8s}  N={r['points']:<6d}"
    if "skipped" in r:
        return f"{head}  skipped: {r['skipped']}"
    return (f"{head}  forward {fmt_num(r['forward_ms']):>8s} ms  fwd+bwd "
            f"{fmt_num(r['fwd_bwd_ms']):>8s} ms  activations {fmt_bytes(r['activation_bytes'])}")


@dataclass
class PointsResult(Record):
    """The results of ``bench points``, in the layout of ``benchmarks/points.json``.

    Attributes:
        kind: ``"points"``; settings: the run's :class:`.settings.PointSettings`.
        rows: one dict per (mixer, N), as :func:`bench_point_mixers` makes them.
        growth: :func:`memory_growth` of the rows (activation memory).
        machine: :func:`.report.machine_info`; command: the command that made the run.
    """

    kind: str = "points"
    settings: PointSettings = field(default_factory=PointSettings)
    settings_type: ClassVar[Any] = PointSettings
    rows: list[dict[str, Any]] = field(default_factory=list)
    growth: dict[str, dict[str, Any]] = field(default_factory=dict)
    machine: dict[str, Any] | None = None
    command: str | None = None



def run_points(settings: PointSettings, log: Callable[[str], None] = print) -> PointsResult:
    """Measure the point mixers of ``settings`` at each point count (``bench points``)."""
    rows = bench_point_mixers(
        points=settings.points,
        mixers=POINT_MIXERS if settings.mixers is None else settings.mixers,
        channels=settings.channels,
        batch=settings.batch,
        memory_size=settings.memory_size,
        device=settings.device,
        dtype=settings.torch_dtype,
        repeats=settings.repeats,
        max_seconds=settings.max_seconds,
        seed=settings.seed,
        warmup=settings.warmup,
        max_memory_gb=settings.max_memory_gb,
        log=log,
    )
    return PointsResult(settings=settings, rows=rows, growth=memory_growth(rows))


def format_point_mixers(rows: Sequence[dict[str, Any]], markdown: bool = False) -> str:
    """The rows of :func:`bench_point_mixers` as a table (a CUDA peak column on CUDA)."""
    cuda = any("peak_bytes" in r for r in rows)
    headers = ["mixer", "N", "forward ms", "fwd+bwd ms", "activations", "N x N (pred.)"]
    headers += ["CUDA peak"] if cuda else []
    headers += ["status"]
    body = []
    for r in rows:
        pred = fmt_bytes(r["attention_bytes"]) if r.get("attention_bytes") else "-"
        if "skipped" in r:
            line = [r["mixer"], r["points"], "-", "-", "-", pred] + (["-"] if cuda else [])
            body.append([*line, f"skipped: {r['skipped']}"])
            continue
        line = [r["mixer"], r["points"], fmt_num(r["forward_ms"]), fmt_num(r["fwd_bwd_ms"]),
                fmt_bytes(r["activation_bytes"]), pred]
        line += [fmt_bytes(r.get("peak_bytes"))] if cuda else []
        body.append([*line, "ok"])
    return format_table(headers, body, markdown=markdown)


def format_growth(growth: dict[str, dict[str, Any]], markdown: bool = False) -> str:
    """:func:`memory_growth` as a table: the exponent p of activations ~ N^p per mixer."""
    body = []
    for name, g in growth.items():
        between = g.get("between") or []
        span = f"{between[0]:,} -> {between[1]:,}" if len(between) == 2 else "-"
        exp = "-" if g.get("exponent") is None else f"{g['exponent']:.2f}"
        body.append([name, exp, g["label"], span])
    return format_table(["mixer", "p in N^p", "activation memory", "between N"], body,
                        markdown=markdown)
