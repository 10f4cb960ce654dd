"""Measure one mixer at one (batch, token grid) point, or predict that it cannot be measured.

A point records parameters, forward FLOPs, activation memory, forward and forward+backward
latency and, for a mixer that claims to be cheaper than attention, its interleaved ratio to
SDPA self-attention (:class:`PointResult`). A point over the memory or time budget, either
measured or predicted from the mixer's previous points (:func:`predict`), is recorded as
such; nothing here raises for OOM or slowness.
"""

from __future__ import annotations

import gc
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from . import timing
from .contenders import MixerEntry, build_contender, make_inputs, mixer_entries
from .counting import forward_flops
from .memory import activation_bytes, cuda_peak_bytes
from .records import Record
from .settings import Grid, MixerSettings
from .timing import BudgetExceeded, forward_backward_callable, forward_callable

OK = "ok"
OOM = "oom"
TOO_SLOW = "too_slow"
SKIPPED = "skipped"
ERROR = "error"

#: with a single previous point, memory and time are assumed to grow like N^2 (attention).
DEFAULT_GROWTH = 2.0
#: the growth exponent measured from two points is clipped to this range.
GROWTH_RANGE = (1.0, 2.5)


@dataclass
class PointResult(Record):
    """One mixer at one (batch, grid) point; the fields are the keys of a recorded point.

    Attributes:
        mixer, batch, grid, tokens: what was measured (tokens = H * W).
        status: ``ok``, ``oom``, ``too_slow``, ``skipped`` or ``error``; reason: why not ok.
        predicted: ``{"memory_bytes", "train_ms"}`` extrapolated from earlier points.
        params, param_bytes: parameter count and bytes.
        flops, fft_flops: forward FLOPs (:func:`.counting.forward_flops`) and their FFT part.
        activation_bytes: bytes the training forward saves for backward.
        peak_bytes: CUDA allocator peak of one forward+backward.
        forward_ms, train_ms: timing summaries (:meth:`.timing.Summary.to_dict`).
        train_median_ms: median forward+backward time (or the call that overran the budget).
        vs_self: interleaved ``{"forward", "train"}`` ratios to SDPA self-attention.
    """

    mixer: str
    batch: int
    grid: list[int]
    tokens: int
    status: str = OK
    reason: str = ""
    predicted: dict[str, float] | None = None
    params: int | None = None
    param_bytes: int | None = None
    flops: int | None = None
    fft_flops: int | None = None
    activation_bytes: int | None = None
    peak_bytes: int | None = None
    forward_ms: dict[str, Any] | None = None
    train_ms: dict[str, Any] | None = None
    train_median_ms: float | None = None
    vs_self: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.status == OK

    def fail(self, status: str, reason: str) -> None:
        """Record that the point could not be measured (``status`` other than ``ok``)."""
        self.status, self.reason = status, reason

    def vs_self_median(self, metric: str) -> float | None:
        """The median interleaved ratio to SDPA for ``metric`` (``forward``/``train``)."""
        r = (self.vs_self or {}).get(metric)
        return r["ratio"]["median"] if r else None


def _is_oom(err: BaseException) -> bool:
    msg = str(err).lower()
    return isinstance(err, MemoryError) or "out of memory" in msg or "can't allocate" in msg


def release(device: str, collect: bool = False) -> None:
    """Give memory back after a point (a full garbage collection only after a failure)."""
    if collect:
        gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


# ---------------------------------------------------------------------------------------------
# one point


def _growth(history: list[PointResult], key: str) -> float:
    """Growth exponent of ``key`` over tokens from the last two points, in
    :data:`GROWTH_RANGE`; with a single point :data:`DEFAULT_GROWTH`.
    """
    pts = [(p.tokens, getattr(p, key)) for p in history if getattr(p, key)]
    if len(pts) < 2 or pts[-1][0] == pts[-2][0]:
        return DEFAULT_GROWTH
    (n1, v1), (n2, v2) = pts[-2], pts[-1]
    e = math.log(v2 / v1) / math.log(n2 / n1)
    return min(GROWTH_RANGE[1], max(GROWTH_RANGE[0], e))


def predict(history: list[PointResult], tokens: int, batch: int) -> dict[str, float] | None:
    """Predicted memory (bytes) and one-call training time (ms) at a new point.

    Extrapolated from the mixer's previous successful points at the same batch with the
    growth exponent of :func:`_growth`; ``None`` without history.
    """
    ok = [p for p in history if p.ok and p.batch == batch]
    if not ok:
        return None
    last = ok[-1]
    f = tokens / last.tokens
    mem_e = _growth(ok, "activation_bytes")
    par_e = _growth(ok, "param_bytes") if last.param_bytes else 1.0
    t_e = _growth(ok, "train_median_ms")
    act = (last.activation_bytes or 0) * f**mem_e
    params = 2 * (last.param_bytes or 0) * (f**par_e if par_e > 1.0 else 1.0)
    t = (last.train_median_ms or 0.0) * f**t_e
    return {"memory_bytes": act + params, "train_ms": t}


def measure_point(
    entry: MixerEntry,
    grid: Grid,
    batch: int,
    settings: MixerSettings,
    *,
    history: list[PointResult] | None = None,
    self_available: bool = False,
    log: Callable[[str], None] = lambda s: None,
) -> PointResult:
    """Measure one mixer at one (batch, grid) point; never raises for OOM or slowness.

    ``history``: the mixer's earlier points (bigger points after a failure are skipped;
    memory and time are predicted from them). Returns a :class:`PointResult`; for ``ok``
    every measurement is filled in, and ``vs_self`` for a ``vs_self`` entry when SDPA
    self-attention ran at this point (``self_available``).
    """
    tokens = grid[0] * grid[1]
    point = PointResult(mixer=entry.name, batch=batch, grid=list(grid), tokens=tokens)
    failed = [
        p
        for p in history or []
        if p.batch == batch and p.tokens < tokens and p.status in (OOM, TOO_SLOW, SKIPPED)
    ]
    if failed:
        point.fail(
            SKIPPED,
            f"already {failed[-1].status} at {failed[-1].tokens:,} tokens",
        )
        log(_point_line(point))
        return point
    pred = predict(history or [], tokens, batch)
    if pred is not None:
        point.predicted = pred
        if pred["memory_bytes"] > settings.max_memory_gb * 2**30:
            point.fail(
                SKIPPED,
                (
                    f"predicted {pred['memory_bytes'] / 2**30:.1f} GiB > "
                    f"--max-memory-gb {settings.max_memory_gb:g}"
                ),
            )
            log(_point_line(point))
            return point
        if pred["train_ms"] / 1e3 > settings.max_seconds:
            point.fail(
                TOO_SLOW,
                (
                    f"predicted {pred['train_ms'] / 1e3:.0f} s per forward+backward > "
                    f"--max-seconds {settings.max_seconds:g}"
                ),
            )
            log(_point_line(point))
            return point
    dev = settings.device
    gen = torch.Generator().manual_seed(settings.seed)
    module: nn.Module | None = None
    try:
        module = build_contender(entry, settings, grid)
        inputs = make_inputs(module, batch, grid, settings, gen)
        params = [p for p in module.parameters() if p.requires_grad]
        point.params = sum(p.numel() for p in module.parameters())
        point.param_bytes = sum(p.numel() * p.element_size() for p in module.parameters())
        counted = forward_flops(module, inputs)
        point.flops, point.fft_flops = counted["flops"], counted["fft_flops"]
        module.train()
        point.activation_bytes = activation_bytes(module, inputs).bytes
        train_fn = forward_backward_callable(module, inputs, params)
        if torch.device(dev).type == "cuda":
            point.peak_bytes = cuda_peak_bytes(train_fn, dev)
        module.eval()
        fwd = timing.time_callable(
            forward_callable(module, inputs),
            warmup=settings.warmup,
            repeats=settings.repeats,
            max_seconds=settings.max_seconds,
            device=dev,
        )
        point.forward_ms = fwd.to_dict()
        module.train()
        trn = timing.time_callable(
            train_fn,
            warmup=settings.warmup,
            repeats=settings.repeats,
            max_seconds=settings.max_seconds,
            device=dev,
        )
        point.train_ms = trn.to_dict()
        point.train_median_ms = trn.median
        if entry.vs_self and self_available:
            point.vs_self = _ratios_vs_self(module, inputs, grid, batch, settings, gen)
    except BudgetExceeded as e:
        point.fail(TOO_SLOW, str(e))
        point.train_median_ms = e.seconds * 1e3
    except (RuntimeError, MemoryError) as e:
        if _is_oom(e):
            point.fail(OOM, str(e).splitlines()[0][:200])
        else:
            point.fail(ERROR, _error_reason(e))
    except (ValueError, TypeError, ImportError, NotImplementedError, AssertionError) as e:
        point.fail(ERROR, _error_reason(e))
    finally:
        del module
        release(dev, collect=not point.ok)
    log(_point_line(point))
    return point


def _ratios_vs_self(
    module: nn.Module,
    inputs: tuple[Any, ...],
    grid: Grid,
    batch: int,
    settings: MixerSettings,
    gen: torch.Generator,
) -> dict[str, Any]:
    """Interleaved forward and forward+backward ratios of ``module`` over SDPA attention."""
    ref = build_contender(mixer_entries()["self"], settings, grid)
    x = inputs[0]
    out: dict[str, Any] = {}
    try:
        module.eval()
        ref.eval()
        r = timing.interleaved_ratio(
            forward_callable(module, inputs),
            forward_callable(ref, (x,)),
            warmup=settings.warmup,
            pairs=settings.pairs,
            max_seconds=settings.max_seconds,
            device=settings.device,
        )
        out["forward"] = r.to_dict()
        module.train()
        ref.train()
        r = timing.interleaved_ratio(
            forward_backward_callable(module, inputs, list(module.parameters())),
            forward_backward_callable(ref, (x,), list(ref.parameters())),
            warmup=settings.warmup,
            pairs=settings.pairs,
            max_seconds=settings.max_seconds,
            device=settings.device,
        )
        out["train"] = r.to_dict()
    except BudgetExceeded as e:
        out["error"] = f"too slow: {e}"
    return out


def _point_line(p: PointResult) -> str:
    g = "x".join(map(str, p.grid))
    if not p.ok:
        return f"  {p.mixer:>20s}  B={p.batch:<3d} {g:>8s}  {p.status}: {p.reason}"
    f, t = p.forward_ms["median"], p.train_ms["median"]
    extra = ""
    fwd, trn = p.vs_self_median("forward"), p.vs_self_median("train")
    if fwd is not None:
        # the training ratio is missing when it ran over the time budget
        extra = f"  vs SDPA fwd {fwd:.2f}x train " + (f"{trn:.2f}x" if trn else "n/a")
    return (
        f"  {p.mixer:>20s}  B={p.batch:<3d} {g:>8s}  fwd {f:9.2f} ms  "
        f"fwd+bwd {t:9.2f} ms  act {p.activation_bytes / 2**20:8.1f} MiB{extra}"
    )


def _error_reason(e: BaseException) -> str:
    return f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
