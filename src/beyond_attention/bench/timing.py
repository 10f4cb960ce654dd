"""Latency measurement: warm-up, repeated runs, robust summaries and interleaved ratios.

Two ways of timing, used everywhere in :mod:`beyond_attention.bench`:

- :func:`time_callable` runs a callable ``warmup`` times untimed, then up to ``repeats``
  times timed, and summarises the samples by their median and spread (quartiles, min, max).
- :func:`interleaved_ratio` compares two callables ``A`` and ``B`` by timing them in
  alternation, pair after pair (``A B``, ``B A``, ``A B``, ... : the order inside a pair
  alternates so that a slow drift of the machine favours neither), and reports the median
  of the pair-by-pair ratios ``t_A / t_B``. On a shared, noisy machine the ratio of two
  medians measured minutes apart can be off by far more than the effect being measured;
  two runs a few milliseconds apart see the same machine state, so their ratio is stable.

On CUDA every timed call is bracketed by CUDA events and synchronised; on CPU a wall
clock (``time.perf_counter`` unless a ``clock`` is injected, which the tests do) is read
around the call.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

Clock = Callable[[], float]


class BudgetExceeded(RuntimeError):
    """A single call took longer than the time budget of its measurement point."""

    def __init__(self, seconds: float, budget: float) -> None:
        super().__init__(f"one call took {seconds:.3g} s, over the budget of {budget:.3g} s")
        self.seconds = seconds
        self.budget = budget


def _quantile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolation quantile of already sorted values (numpy's default method)."""
    if not sorted_values:
        raise ValueError("sorted_values must not be empty")
    pos = q * (len(sorted_values) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


@dataclass(frozen=True)
class Summary:
    """Median and spread of a list of samples (any unit; timings are in milliseconds).

    ``q1``/``q3`` are the first and third quartiles (the inter-quartile range is the spread
    the reports print), ``n`` the number of samples.
    """

    median: float
    q1: float
    q3: float
    min: float
    max: float
    n: int
    samples: tuple[float, ...] = field(default=(), repr=False)

    @classmethod
    def of(cls, samples: Sequence[float]) -> Summary:
        """Summarise ``samples`` (at least one)."""
        if len(samples) == 0:
            raise ValueError("samples must contain at least one value")
        s = sorted(float(v) for v in samples)
        return cls(
            median=statistics.median(s),
            q1=_quantile(s, 0.25),
            q3=_quantile(s, 0.75),
            min=s[0],
            max=s[-1],
            n=len(s),
            samples=tuple(float(v) for v in samples),
        )

    @property
    def iqr(self) -> float:
        """Inter-quartile range ``q3 - q1``."""
        return self.q3 - self.q1

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["samples"] = list(self.samples)
        return d


def synchronize(device: torch.device | str) -> None:
    """Wait for the queued work of ``device`` (a no-op on CPU)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_once(fn: Callable[[], Any], device: torch.device, clock: Clock) -> float:
    """Seconds one call of ``fn`` takes (CUDA events on CUDA, ``clock`` otherwise)."""
    if device.type == "cuda":
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3
    t0 = clock()
    fn()
    return clock() - t0


def time_callable(
    fn: Callable[[], Any],
    *,
    warmup: int = 2,
    repeats: int = 10,
    min_repeats: int = 3,
    max_seconds: float | None = None,
    device: torch.device | str = "cpu",
    clock: Clock = time.perf_counter,
) -> Summary:
    """Time ``fn()``: ``warmup`` untimed calls, then up to ``repeats`` timed calls.

    Args:
        fn: the work to time, with its inputs bound (see :func:`forward_callable`).
        warmup: untimed calls first (allocator, caches, lazy initialisation, compilation).
        repeats: timed calls wanted.
        min_repeats: timed calls made even when the budget runs out.
        max_seconds: the budget of the whole measurement (warm-up included): once spent,
            no further timed call starts beyond ``min_repeats``. A single call (the first
            warm-up call, or the first timed one) taking longer than the budget raises
            :class:`BudgetExceeded`.
        device: where ``fn`` runs; on CUDA calls are timed with events.
        clock: seconds counter for CPU timing and for the budget.

    Returns the :class:`Summary` of the timed calls, in milliseconds.
    """
    if warmup < 0 or repeats < 1 or min_repeats < 1:
        raise ValueError(
            f"warmup must be >= 0 and repeats, min_repeats >= 1, got {warmup}, {repeats}, "
            f"{min_repeats}"
        )
    device = torch.device(device)
    start = clock()
    for i in range(warmup):
        t = _time_once(fn, device, clock)
        if i == 0 and max_seconds is not None and t > max_seconds:
            raise BudgetExceeded(t, max_seconds)
    samples: list[float] = []
    for i in range(repeats):
        if (
            i >= min(min_repeats, repeats)
            and max_seconds is not None
            and clock() - start > max_seconds
        ):
            break
        t = _time_once(fn, device, clock)
        if i == 0 and warmup == 0 and max_seconds is not None and t > max_seconds:
            raise BudgetExceeded(t, max_seconds)
        samples.append(t * 1e3)
    return Summary.of(samples)


@dataclass(frozen=True)
class Ratio:
    """The interleaved comparison of two callables.

    ``ratio`` summarises the pair-by-pair ratios ``t_A / t_B`` (its ``median`` is the
    figure to quote); ``a`` and ``b`` summarise each side's own timings (milliseconds).
    """

    ratio: Summary
    a: Summary
    b: Summary

    def to_dict(self) -> dict[str, Any]:
        return {"ratio": self.ratio.to_dict(), "a": self.a.to_dict(), "b": self.b.to_dict()}


def interleaved_ratio(
    fn_a: Callable[[], Any],
    fn_b: Callable[[], Any],
    *,
    warmup: int = 2,
    pairs: int = 10,
    min_pairs: int = 3,
    max_seconds: float | None = None,
    alternate: bool = True,
    device: torch.device | str = "cpu",
    clock: Clock = time.perf_counter,
) -> Ratio:
    """The median of pair-by-pair time ratios ``t_A / t_B`` of two interleaved callables.

    After ``warmup`` untimed calls of each (alternating), ``pairs`` pairs are timed. Pair
    ``i`` times ``A`` then ``B`` (or, with ``alternate`` and odd ``i``, ``B`` then ``A``) and
    contributes the ratio of those two adjacent timings. The median of these ratios is
    robust to the load changes of a shared machine, which move both timings of a pair
    together.

    Args:
        fn_a, fn_b: the two contenders (ratio > 1 means ``A`` is slower).
        warmup: untimed calls of each first.
        pairs: timed pairs wanted.
        min_pairs: pairs made even when the budget runs out.
        max_seconds: budget of the whole comparison, warm-up included; a single warm-up
            call over the budget raises :class:`BudgetExceeded`.
        alternate: alternate the order inside consecutive pairs (A B, B A, ...).
        device: where the callables run (CUDA events on CUDA).
        clock: seconds counter for CPU timing and for the budget.
    """
    if warmup < 0 or pairs < 1 or min_pairs < 1:
        raise ValueError(
            f"warmup must be >= 0 and pairs, min_pairs >= 1, got {warmup}, {pairs}, {min_pairs}"
        )
    device = torch.device(device)
    start = clock()
    for i in range(warmup):
        for fn in (fn_a, fn_b):
            t = _time_once(fn, device, clock)
            if i == 0 and max_seconds is not None and t > max_seconds:
                raise BudgetExceeded(t, max_seconds)
    ta: list[float] = []
    tb: list[float] = []
    for i in range(pairs):
        if i >= min(min_pairs, pairs) and max_seconds is not None and clock() - start > max_seconds:
            break
        if alternate and i % 2 == 1:
            b = _time_once(fn_b, device, clock)
            a = _time_once(fn_a, device, clock)
        else:
            a = _time_once(fn_a, device, clock)
            b = _time_once(fn_b, device, clock)
        ta.append(a * 1e3)
        tb.append(b * 1e3)
    ratios = [a / b if b > 0 else float("inf") for a, b in zip(ta, tb, strict=True)]
    return Ratio(ratio=Summary.of(ratios), a=Summary.of(ta), b=Summary.of(tb))


def _first_tensor(out: Any) -> torch.Tensor:
    """The output to back-propagate from: ``out`` or the first element of a tuple."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    raise TypeError(f"expected a tensor or a tuple starting with one, got {type(out).__name__}")


def forward_callable(module: Callable[..., Any], inputs: Sequence[Any]) -> Callable[[], Any]:
    """A callable running ``module(*inputs)`` without autograd (inference forward)."""
    inputs = tuple(inputs)

    def run() -> Any:
        with torch.no_grad():
            return module(*inputs)

    return run


def forward_backward_callable(
    module: Callable[..., Any],
    inputs: Sequence[Any],
    params: Sequence[torch.Tensor] = (),
) -> Callable[[], Any]:
    """A callable running ``module(*inputs)`` and back-propagating a fixed output gradient.

    The gradients are taken with respect to ``params`` and every input tensor that requires
    grad (``torch.autograd.grad``, so nothing accumulates between calls). The output
    gradient is a fixed random tensor of the output's shape, drawn on the first call.
    """
    inputs = tuple(inputs)
    leaves = [t for t in inputs if isinstance(t, torch.Tensor) and t.requires_grad]
    leaves += [p for p in params if p.requires_grad]
    if not leaves:
        raise ValueError("forward_backward_callable needs params or inputs that require grad")
    grad_out: list[torch.Tensor] = []

    def run() -> Any:
        out = _first_tensor(module(*inputs))
        if not grad_out:
            g = torch.Generator(device="cpu").manual_seed(0)
            grad_out.append(torch.randn(out.shape, generator=g).to(out.device, out.dtype))
        return torch.autograd.grad(out, leaves, grad_out[0], allow_unused=True)

    return run
