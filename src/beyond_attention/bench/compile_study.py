"""The ``torch.compile`` study: eager time / compiled time of every mixer, interleaved."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from . import timing
from .contenders import build_contender, make_inputs, mixer_entries
from .point import ERROR, OK, release
from .records import Record
from .settings import MixerSettings
from .timing import forward_backward_callable, forward_callable


@dataclass
class CompileResult(Record):
    """The compile comparison of one mixer; the fields are the keys of a recorded row.

    Attributes:
        mixer, grid, batch: what was compared.
        compile_forward_s, compile_train_s: seconds of the first compiled calls (compiling).
        forward, train: eager / compiled interleaved ratios (:meth:`.timing.Ratio.to_dict`).
        status: ``ok`` or ``error``; reason: the compiler's failure.
    """

    mixer: str
    grid: list[int] | None = None
    batch: int | None = None
    compile_forward_s: float | None = None
    forward: dict[str, Any] | None = None
    compile_train_s: float | None = None
    train: dict[str, Any] | None = None
    status: str | None = None
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == OK


def compile_speedups(
    settings: MixerSettings, names: Sequence[str], log: Callable[[str], None] = print
) -> list[CompileResult]:
    """``torch.compile`` speed-up (eager time / compiled time, interleaved) of each mixer.

    Measured at ``settings.compile_grid`` and the first batch, forward (eval, no grad) and
    forward+backward; the first compiled call (compilation) is timed separately.
    """
    grid = settings.compile_grid
    batch = settings.batches[0]
    entries = mixer_entries()
    results = []
    for name in names:
        entry = entries[name]
        row = CompileResult(mixer=name, grid=list(grid), batch=batch)
        if not entry.available():
            continue
        try:
            gen = torch.Generator().manual_seed(settings.seed)
            module = build_contender(entry, settings, grid)
            inputs = make_inputs(module, batch, grid, settings, gen)
            compiled = torch.compile(module)
            module.eval()
            t0 = time.perf_counter()
            forward_callable(compiled, inputs)()
            row.compile_forward_s = time.perf_counter() - t0
            row.forward = timing.interleaved_ratio(
                forward_callable(module, inputs),
                forward_callable(compiled, inputs),
                warmup=settings.warmup,
                pairs=settings.pairs,
                device=settings.device,
                max_seconds=settings.max_seconds,
            ).to_dict()
            module.train()
            params = list(module.parameters())
            t0 = time.perf_counter()
            forward_backward_callable(compiled, inputs, params)()
            row.compile_train_s = time.perf_counter() - t0
            row.train = timing.interleaved_ratio(
                forward_backward_callable(module, inputs, params),
                forward_backward_callable(compiled, inputs, params),
                warmup=settings.warmup,
                pairs=settings.pairs,
                device=settings.device,
                max_seconds=settings.max_seconds,
            ).to_dict()
            row.status = OK
            log(
                f"  compile {name:>20s}: forward {row.forward['ratio']['median']:.2f}x, "
                f"fwd+bwd {row.train['ratio']['median']:.2f}x "
                f"(compiled in {row.compile_forward_s + row.compile_train_s:.0f} s)"
            )
        except Exception as e:  # noqa: BLE001 - any compiler failure is a result to record
            row.status = ERROR
            row.reason = f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
            log(f"  compile {name:>20s}: FAILED {row.reason}")
        finally:
            release(settings.device)
        results.append(row)
    return results
