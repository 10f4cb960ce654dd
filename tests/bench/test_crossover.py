"""Crossover interpolation on synthetic power-law costs."""

from __future__ import annotations

import math

import pytest

from beyond_attention.bench.crossover import (
    ALWAYS_CHEAPER,
    CROSSES,
    NO_DATA,
    NOT_CHEAPER,
    crossover_from_costs,
    crossover_from_ratios,
    interpolate_loglog,
)

TOKENS = [196, 784, 3136, 12544]


def test_linear_against_quadratic_crosses_exactly_where_the_costs_meet():
    # mixer 1000 N, attention N^2: equal at N = 1000. Power laws are straight lines in
    # log-log, so the interpolation is exact.
    c = crossover_from_costs(TOKENS, [1000 * n for n in TOKENS], [n * n for n in TOKENS])
    assert c.status == CROSSES
    assert c.tokens == pytest.approx(1000.0, rel=1e-12)
    assert (c.lo, c.hi) == (784, 3136)
    assert c.describe() == "~1,000"


@pytest.mark.parametrize("n_star", [200.0, 500.0, 2500.0, 12000.0])
def test_crossover_of_ratio_power_law(n_star):
    ratios = [(n_star / n) ** 0.7 for n in TOKENS]
    c = crossover_from_ratios(TOKENS, ratios)
    assert c.status == CROSSES
    assert c.tokens == pytest.approx(n_star, rel=1e-9)


def test_below_and_above_range():
    c = crossover_from_ratios(TOKENS, [0.9, 0.5, 0.2, 0.1])
    assert c.status == ALWAYS_CHEAPER and c.tokens is None
    assert c.describe() == "< 196"
    c = crossover_from_ratios(TOKENS, [3.0, 2.0, 1.5, 1.2])
    assert c.status == NOT_CHEAPER and c.describe() == "> 12,544"


def test_missing_points_skipped_and_last_crossing_kept():
    # cheaper at 196, dearer at 784, cheaper from 3136 on: the crossover that holds to the
    # end of the sweep is between 784 and 3136; the point at 12544 did not run.
    ratios = [0.5, 2.0, 0.5, None]
    c = crossover_from_ratios(TOKENS, ratios)
    assert c.status == CROSSES
    assert (c.lo, c.hi) == (784, 3136)
    assert c.tokens == pytest.approx(math.sqrt(784 * 3136))  # symmetric in log space
    assert crossover_from_ratios(TOKENS, [None, None, float("nan"), None]).status == NO_DATA


def test_unsorted_input_and_exact_one():
    c = crossover_from_ratios([3136, 196, 784], [0.5, 2.0, 1.0])
    assert c.status == CROSSES
    assert c.tokens == pytest.approx(784.0)  # ratio 1 at 784 counts as not cheaper yet


def test_length_mismatch_raises():
    with pytest.raises(ValueError, match="same length"):
        crossover_from_ratios([1, 2], [1.0])
    with pytest.raises(ValueError, match="same length"):
        crossover_from_costs([1, 2], [1.0, 2.0], [1.0])


def test_interpolate_loglog_exact_on_power_law():
    vals = [3.0 * n**1.5 for n in TOKENS]
    for at in (300.0, 1000.0, 5000.0, 20000.0):
        assert interpolate_loglog(TOKENS, vals, at) == pytest.approx(3.0 * at**1.5, rel=1e-9)
