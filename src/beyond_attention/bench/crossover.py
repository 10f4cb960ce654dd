"""Where a mixer becomes cheaper than a baseline: crossover points on a token sweep.

Given the cost ratio ``r(N) = cost_mixer(N) / cost_baseline(N)`` at the swept token counts
``N_1 < N_2 < ...``, the crossover is the token count where ``r`` falls through 1. Costs
scale as powers of ``N`` (linear mixers ~ N, attention ~ N^2), so ``log r`` is close to
linear in ``log N`` and the crossing is interpolated there::

    log N* = log N_i + (log N_{i+1} - log N_i) * log r_i / (log r_i - log r_{i+1})

for the last step ``i`` where ``r_i >= 1 > r_{i+1}`` (after it the mixer stays cheaper up
to the largest swept size).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

CROSSES = "crosses"
ALWAYS_CHEAPER = "cheaper_over_whole_sweep"
NOT_CHEAPER = "not_cheaper_at_largest"
NO_DATA = "insufficient_data"


@dataclass(frozen=True)
class Crossover:
    """A located crossover.

    Attributes:
        tokens: the interpolated token count N* (None unless ``status == "crosses"``).
        status: ``"crosses"``; ``"cheaper_over_whole_sweep"`` (N* lies below the smallest
            size); ``"not_cheaper_at_largest"`` (N* lies above the largest size measured,
            if it exists); ``"insufficient_data"`` (fewer than one usable point).
        lo, hi: the swept token counts bracketing N* (or the range measured).
    """

    tokens: float | None
    status: str
    lo: float | None = None
    hi: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        """A short human-readable form: ``"~1,234 tokens"``, ``"< 196"``, ``"> 12,544"``."""
        if self.status == CROSSES and self.tokens is not None:
            return f"~{self.tokens:,.0f}"
        if self.status == ALWAYS_CHEAPER and self.lo is not None:
            return f"< {self.lo:,.0f}"
        if self.status == NOT_CHEAPER and self.hi is not None:
            return f"> {self.hi:,.0f}"
        return "n/a"


def crossover_from_ratios(tokens: Sequence[float], ratios: Sequence[float | None]) -> Crossover:
    """Locate where ``ratios`` (mixer cost / baseline cost) fall through 1.

    Args:
        tokens: swept token counts, positive (any order; sorted here).
        ratios: the cost ratio at each token count; ``None`` or non-finite entries (points
            that did not run) are skipped.

    Returns a :class:`Crossover`.
    """
    if len(tokens) != len(ratios):
        raise ValueError(
            f"tokens and ratios must have the same length, got {len(tokens)} and {len(ratios)}"
        )
    points = sorted(
        (float(n), float(r))
        for n, r in zip(tokens, ratios, strict=True)
        if r is not None and math.isfinite(r) and r > 0 and n > 0
    )
    if not points:
        return Crossover(None, NO_DATA)
    lo, hi = points[0][0], points[-1][0]
    if points[-1][1] >= 1.0:
        return Crossover(None, NOT_CHEAPER, lo, hi)
    # the last index where the mixer is not cheaper; after it, cheaper to the end
    last_not = max((i for i, (_, r) in enumerate(points) if r >= 1.0), default=None)
    if last_not is None:
        return Crossover(None, ALWAYS_CHEAPER, lo, hi)
    (n1, r1), (n2, r2) = points[last_not], points[last_not + 1]
    l1, l2 = math.log(r1), math.log(r2)
    frac = l1 / (l1 - l2) if l1 != l2 else 0.0
    n_star = math.exp(math.log(n1) + (math.log(n2) - math.log(n1)) * frac)
    return Crossover(n_star, CROSSES, n1, n2)


def crossover_from_costs(
    tokens: Sequence[float],
    costs: Sequence[float | None],
    baseline_costs: Sequence[float | None],
) -> Crossover:
    """Locate the crossover from two cost curves on the same token counts.

    Points where either cost is missing are skipped. Use
    :func:`crossover_from_ratios` with interleaved ratios for latencies on a noisy
    machine; this form suits deterministic costs such as FLOPs.
    """
    if not (len(tokens) == len(costs) == len(baseline_costs)):
        raise ValueError(
            "tokens, costs and baseline_costs must have the same length, got "
            f"{len(tokens)}, {len(costs)}, {len(baseline_costs)}"
        )
    ratios: list[float | None] = []
    for c, b in zip(costs, baseline_costs, strict=True):
        ratios.append(None if c is None or b is None or b <= 0 else c / b)
    return crossover_from_ratios(tokens, ratios)


def interpolate_loglog(tokens: Sequence[float], values: Sequence[float], at: float) -> float:
    """Value of a positive curve at ``at``, interpolated linearly in log-log space.

    Outside the sampled range the nearest segment is extrapolated.
    """
    pts = sorted((float(n), float(v)) for n, v in zip(tokens, values, strict=True) if v > 0)
    if not pts:
        raise ValueError("values must contain at least one positive entry")
    if len(pts) == 1:
        return pts[0][1]
    i = 0
    while i < len(pts) - 2 and at > pts[i + 1][0]:
        i += 1
    (n1, v1), (n2, v2) = pts[i], pts[i + 1]
    t = (math.log(at) - math.log(n1)) / (math.log(n2) - math.log(n1))
    return math.exp(math.log(v1) + t * (math.log(v2) - math.log(v1)))
