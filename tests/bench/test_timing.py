"""Timing logic with an injected fake clock: pairing, medians, budgets (no real timing)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from beyond_attention.bench.timing import (
    BudgetExceeded,
    Summary,
    forward_backward_callable,
    forward_callable,
    interleaved_ratio,
    time_callable,
)


class FakeClock:
    """A clock that only moves when a fake workload says how long it took."""

    def __init__(self) -> None:
        self.now = 0.0
        self.calls: list[str] = []

    def __call__(self) -> float:
        return self.now

    def work(self, name: str, durations: list[float]):
        it = iter(durations)

        def fn() -> None:
            self.calls.append(name)
            self.now += next(it)

        return fn


def test_summary_matches_numpy_quantiles():
    values = [5.0, 1.0, 4.0, 2.0, 10.0, 3.0]
    s = Summary.of(values)
    assert s.median == pytest.approx(np.median(values))
    assert s.q1 == pytest.approx(np.percentile(values, 25))
    assert s.q3 == pytest.approx(np.percentile(values, 75))
    assert (s.min, s.max, s.n) == (1.0, 10.0, 6)
    assert s.samples == tuple(values)
    with pytest.raises(ValueError, match="samples"):
        Summary.of([])


def test_time_callable_reports_the_timed_calls_only():
    clock = FakeClock()
    fn = clock.work("a", [9.0, 9.0, 0.001, 0.003, 0.002])
    s = time_callable(fn, warmup=2, repeats=3, clock=clock)
    assert s.n == 3
    assert s.samples == pytest.approx((1.0, 3.0, 2.0))  # milliseconds
    assert s.median == pytest.approx(2.0)


def test_interleaved_pairs_alternate_and_take_median_of_pair_ratios():
    clock = FakeClock()
    # warm-up: one call each; then 5 pairs. Pair i: a_i / b_i.
    a = [1.0, 0.010, 0.030, 0.010, 0.050, 0.012]
    b = [1.0, 0.005, 0.010, 0.010, 0.010, 0.004]
    r = interleaved_ratio(clock.work("A", a), clock.work("B", b), warmup=1, pairs=5, clock=clock)
    assert clock.calls == ["A", "B", "A", "B", "B", "A", "A", "B", "B", "A", "A", "B"]
    expected = [x / y for x, y in zip(a[1:], b[1:], strict=True)]  # 2, 3, 1, 5, 3
    assert r.ratio.samples == pytest.approx(tuple(expected))
    assert r.ratio.median == pytest.approx(3.0)
    assert r.a.median == pytest.approx(np.median(a[1:]) * 1e3)
    assert r.b.median == pytest.approx(np.median(b[1:]) * 1e3)


def test_interleaved_without_alternation():
    clock = FakeClock()
    interleaved_ratio(
        clock.work("A", [1.0] * 4),
        clock.work("B", [1.0] * 4),
        warmup=1,
        pairs=3,
        alternate=False,
        clock=clock,
    )
    assert clock.calls == ["A", "B"] * 4


def test_pair_ratio_is_not_the_ratio_of_medians():
    # A load spike hits both members of pairs 1 and 2: the pair ratios stay 2, while
    # separately taken medians would give 20/10... the point of pairing.
    clock = FakeClock()
    a = [0.0, 0.002, 0.040, 0.040, 0.002, 0.002]
    b = [0.0, 0.001, 0.020, 0.020, 0.001, 0.001]
    r = interleaved_ratio(
        clock.work("A", a), clock.work("B", b), warmup=1, pairs=5, alternate=False, clock=clock
    )
    assert r.ratio.median == pytest.approx(2.0)
    assert r.ratio.iqr == pytest.approx(0.0)


def test_budget_stops_after_min_pairs_and_single_call_over_budget_raises():
    clock = FakeClock()
    r = interleaved_ratio(
        clock.work("A", [1.0] * 20),
        clock.work("B", [1.0] * 20),
        warmup=1,
        pairs=10,
        min_pairs=3,
        max_seconds=4.0,
        clock=clock,
    )
    assert r.ratio.n == 3  # 2 s of warm-up + 3 pairs of 2 s > 4 s budget, min 3 pairs
    clock = FakeClock()
    with pytest.raises(BudgetExceeded):
        interleaved_ratio(
            clock.work("A", [10.0]),
            clock.work("B", [1.0]),
            warmup=1,
            pairs=3,
            max_seconds=5.0,
            clock=clock,
        )
    clock = FakeClock()
    with pytest.raises(BudgetExceeded) as info:
        time_callable(clock.work("A", [7.0]), warmup=1, repeats=3, max_seconds=5.0, clock=clock)
    assert info.value.seconds == pytest.approx(7.0)
    clock = FakeClock()
    s = time_callable(
        clock.work("A", [1.0] * 10),
        warmup=1,
        repeats=8,
        min_repeats=2,
        max_seconds=2.5,
        clock=clock,
    )
    assert s.n == 2


def test_bad_counts_raise():
    with pytest.raises(ValueError, match="repeats"):
        time_callable(lambda: None, repeats=0)
    with pytest.raises(ValueError, match="pairs"):
        interleaved_ratio(lambda: None, lambda: None, pairs=0)


def test_forward_backward_callable_returns_exact_gradients_without_accumulating():
    torch.manual_seed(0)
    lin = nn.Linear(3, 2).double()
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    fn = forward_backward_callable(lin, (x,), list(lin.parameters()))
    gx, gw, gb = fn()
    gx2, gw2, _ = fn()
    g = torch.randn((4, 2), generator=torch.Generator().manual_seed(0)).double()
    torch.testing.assert_close(gx, g @ lin.weight.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gw, g.t() @ x.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gb, g.sum(0), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gw2, gw)  # same output gradient, nothing accumulated
    assert lin.weight.grad is None and x.grad is None


def test_forward_callable_runs_without_autograd():
    lin = nn.Linear(3, 2)
    x = torch.randn(4, 3, requires_grad=True)
    out = forward_callable(lin, (x,))()
    assert out.grad_fn is None
    with pytest.raises(ValueError, match="require grad"):
        forward_backward_callable(lin, (x.detach(),), [])
