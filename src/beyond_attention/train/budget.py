"""Wall-clock training budgets: a clock that counts training time only, and the schedule
laid over it.

A budget run (``train --budget-minutes M``) trains for ``M`` minutes of *training* time:
the clock runs while batches are gathered, augmented and optimised, and is paused while
the data is loaded and while the model is evaluated. The learning rate is the same linear
warm-up + cosine as the epoch schedule (:func:`~beyond_attention.train.optim.lr_at`), laid
over time instead of steps::

    lr(s) = base * s / S_w                                          for s < S_w
    lr(s) = min + (base - min) * (1 + cos(pi * (s - S_w) / (S - S_w))) / 2   for S_w <= s < S

with ``s`` the training seconds elapsed before the step, ``S = 60 M`` and
``S_w = warmup_fraction * S``. Training stops after the first step that ends at or after
``S``.

What a budget run gives up: how many steps fit in ``M`` minutes depends on the machine
and its load, so two budget runs are not bitwise equal, and a resumed budget run continues
the schedule from the elapsed training time recorded in its checkpoint rather than
repeating an uninterrupted run exactly. Epoch-based runs keep both properties.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

__all__ = ["DEFAULT_WARMUP_FRACTION", "TrainingClock", "budget_lr", "default_clock"]

#: The share of a budget spent warming the learning rate up.
DEFAULT_WARMUP_FRACTION = 0.05

Clock = Callable[[], float]


def default_clock() -> float:
    """Monotonic seconds (``time.perf_counter``); tests replace it with a fake clock."""
    return time.perf_counter()


def budget_lr(elapsed_s: float, budget_s: float, base_lr: float, min_lr: float = 0.0,
              warmup_fraction: float = DEFAULT_WARMUP_FRACTION) -> float:
    """The learning rate after ``elapsed_s`` of a ``budget_s``-second budget (formula in
    the module docstring); ``min_lr`` once the budget is spent."""
    if budget_s <= 0:
        raise ValueError(f"budget_s must be positive, got {budget_s}")
    if not 0.0 <= warmup_fraction < 1.0:
        raise ValueError(f"warmup_fraction must be in [0, 1), got {warmup_fraction}")
    warm = warmup_fraction * budget_s
    s = max(0.0, elapsed_s)
    if s < warm:
        return base_lr * max(s, 1e-3 * warm) / warm
    progress = min(1.0, (s - warm) / max(budget_s - warm, 1e-12))
    return min_lr + 0.5 * (base_lr - min_lr) * (1.0 + math.cos(math.pi * progress))


class TrainingClock:
    """Training seconds of a budget run, paused outside training.

    Without a budget (``budget_minutes=None``: an epoch-based run) it only measures the
    training time and never expires.

    Args:
        budget_minutes: the budget ``M`` (> 0), or None.
        elapsed_s: training seconds already spent (a resumed run's recorded time).
        clock: the time source (default :func:`default_clock`).
    """

    def __init__(self, budget_minutes: float | None, elapsed_s: float = 0.0,
                 clock: Clock | None = None) -> None:
        if budget_minutes is not None and not budget_minutes > 0:
            raise ValueError(f"budget_minutes must be positive, got {budget_minutes}")
        self.budget_s = None if budget_minutes is None else 60.0 * float(budget_minutes)
        self._clock = clock or default_clock
        self._banked = float(elapsed_s)
        self._since: float | None = None

    def start(self) -> None:
        """Start (or keep) counting."""
        if self._since is None:
            self._since = self._clock()

    def pause(self) -> None:
        """Stop counting; the time so far is kept."""
        if self._since is not None:
            self._banked += self._clock() - self._since
            self._since = None

    def elapsed(self) -> float:
        """Training seconds so far."""
        running = 0.0 if self._since is None else self._clock() - self._since
        return self._banked + running

    def expired(self) -> bool:
        """Whether the budget is spent (never without a budget)."""
        return self.budget_s is not None and self.elapsed() >= self.budget_s

    def lr(self, base_lr: float, min_lr: float = 0.0,
           warmup_fraction: float = DEFAULT_WARMUP_FRACTION) -> float:
        """:func:`budget_lr` at the current elapsed time (a budget run only)."""
        if self.budget_s is None:
            raise ValueError("lr() needs a budget; epoch-based runs use optim.lr_at")
        return budget_lr(self.elapsed(), self.budget_s, base_lr, min_lr, warmup_fraction)
