"""``beyond-attention bench mixers``: what each token mixer costs, swept over resolution.

Every mixer is built at the same width and measured at every (batch, token grid) point
(:mod:`.point`):

- parameters, forward FLOPs (:func:`beyond_attention.flops.count`: matrix products and
  convolutions, 2 FLOPs per multiply-accumulate; softmax, normalisations and FFTs are not
  counted),
- forward latency (eval mode, no autograd) and forward+backward latency (train mode,
  gradients of the parameters and of the input), as the median and inter-quartile range
  of repeated runs after a warm-up,
- training activation memory: the bytes the forward saves for backward
  (:mod:`beyond_attention.bench.memory`), and on CUDA the allocator's peak,
- for the mixers that claim to be cheaper than attention, their cost relative to SDPA
  self-attention at the same point, timed interleaved (:func:`interleaved_ratio`).

From these, the crossover token counts where those mixers become cheaper than SDPA
self-attention (in FLOPs, forward and forward+backward latency) are computed, then the
targets of the benchmark (:mod:`.targets`) and the compile study (:mod:`.compile_study`).
Points over the memory or time budget, either measured or predicted from the previous
point, are recorded as such and the sweep goes on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .compile_study import CompileResult, compile_speedups
from .contenders import DEFAULT_MIXERS, mixer_entries
from .crossover import crossover_from_costs, crossover_from_ratios
from .point import PointResult, measure_point
from .records import Record, kept
from .settings import MixerSettings
from .targets import TargetResult, ea_targets, lambda_targets

# the sweep


CROSSOVER_METRICS = ("flops", "forward", "train")


@dataclass
class CrossoverResult(Record):
    """Where one mixer becomes cheaper than SDPA self-attention, for one metric and batch.

    Attributes:
        mixer, batch, metric: which (``metric`` one of :data:`CROSSOVER_METRICS`).
        tokens, status, lo, hi: as in :class:`.crossover.Crossover`.
        text: the short form of :meth:`.crossover.Crossover.describe`.
    """

    mixer: str
    batch: int
    metric: str
    tokens: float | None = kept()
    status: str = ""
    lo: float | None = kept()
    hi: float | None = kept()
    text: str = ""


@dataclass
class MixerInfo(Record):
    """How the report names a contender (from :class:`.contenders.MixerEntry`)."""

    label: str
    role: str
    description: str
    vs_self: bool = False


@dataclass
class SweepResult(Record):
    """The results of ``bench mixers``, in the layout of ``benchmarks/mixers.json``.

    Attributes:
        kind: ``"mixers"``.
        settings: the run's :class:`.settings.MixerSettings`.
        mixers: the contenders that ran, by name, in report order.
        unavailable: contenders that could not run here (optional peers).
        points, crossovers, targets, compile: the measurements.
        machine: :func:`.report.machine_info` of the run; command: the command that made it.
    """

    kind: str = "mixers"
    settings: MixerSettings = field(default_factory=MixerSettings)
    settings_type: ClassVar[Any] = MixerSettings
    mixers: dict[str, MixerInfo] = field(default_factory=dict)
    unavailable: list[str] = field(default_factory=list)
    points: list[PointResult] = field(default_factory=list)
    crossovers: list[CrossoverResult] = field(default_factory=list)
    targets: list[TargetResult] = field(default_factory=list)
    compile: list[CompileResult] = field(default_factory=list)
    machine: dict[str, Any] | None = None
    command: str | None = None

    def _encode(self, name: str, value: Any) -> Any:
        if name == "mixers":
            return {k: v.to_json() for k, v in value.items()}
        return super()._encode(name, value)

    @classmethod
    def _decode(cls, name: str, value: Any) -> Any:
        if name == "mixers":
            return {k: MixerInfo.from_json(v) for k, v in value.items()}
        record = {
            "points": PointResult,
            "crossovers": CrossoverResult,
            "targets": TargetResult,
            "compile": CompileResult,
        }.get(name)
        if record is not None:
            return [record.from_json(v) for v in value]
        return super()._decode(name, value)

    def label(self, mixer: str) -> str:
        """The report label of ``mixer`` (its name when unknown)."""
        info = self.mixers.get(mixer)
        return info.label if info else mixer


def crossovers(points: list[PointResult], batches: Sequence[int]) -> list[CrossoverResult]:
    """Crossover token counts versus SDPA self-attention for every ``vs_self`` mixer.

    FLOPs are compared directly; latencies through the interleaved ratios of each point.
    """
    entries = mixer_entries()
    out = []
    for batch in batches:
        ref = {p.tokens: p for p in points if p.mixer == "self" and p.batch == batch and p.ok}
        for name, entry in entries.items():
            if not entry.vs_self:
                continue
            mine = [p for p in points if p.mixer == name and p.batch == batch and p.ok]
            if not mine:
                continue
            tokens = [p.tokens for p in mine]
            for metric in CROSSOVER_METRICS:
                if metric == "flops":
                    c = crossover_from_costs(
                        tokens,
                        [p.flops for p in mine],
                        [ref[n].flops if n in ref else None for n in tokens],
                    )
                else:
                    c = crossover_from_ratios(tokens, [p.vs_self_median(metric) for p in mine])
                out.append(
                    CrossoverResult(
                        mixer=name,
                        batch=batch,
                        metric=metric,
                        tokens=c.tokens,
                        status=c.status,
                        lo=c.lo,
                        hi=c.hi,
                        text=c.describe(),
                    )
                )
    return out


def run_sweep(settings: MixerSettings, log: Callable[[str], None] = print) -> SweepResult:
    """Run the mixer benchmark and return its results (rendered by :mod:`.mixers_report`).

    ``settings.mixers`` ``None`` runs every mixer; an empty list runs no sweep (targets and
    compile comparisons only).
    """
    entries = mixer_entries()
    names = list(DEFAULT_MIXERS if settings.mixers is None else settings.mixers)
    unknown = [n for n in names if n not in entries]
    if unknown:
        raise ValueError(f"unknown mixers {unknown}; expected names from {', '.join(entries)}")
    if "self" not in names and any(entries[n].vs_self for n in names):
        names.insert(0, "self")
    unavailable = [n for n in names if not entries[n].available()]
    names = [n for n in names if n not in unavailable]
    for n in unavailable:
        log(f"  {n}: not installed (pip install 'beyond-attention[peers]'), skipped")
    grids = sorted(settings.grids, key=lambda g: g[0] * g[1])
    points: list[PointResult] = []
    history: dict[str, list[PointResult]] = {n: [] for n in names}
    for batch in settings.batches:
        for grid in grids:
            log(f"B={batch}, grid {grid[0]}x{grid[1]} ({grid[0] * grid[1]} tokens)")
            self_ok = False
            for name in names:
                p = measure_point(
                    entries[name],
                    grid,
                    batch,
                    settings,
                    history=history[name],
                    self_available=self_ok,
                    log=log,
                )
                if name == "self":
                    self_ok = p.ok
                history[name].append(p)
                points.append(p)
    result = SweepResult(
        settings=settings,
        mixers={
            n: MixerInfo(
                label=entries[n].label,
                role=entries[n].role,
                description=entries[n].description,
                vs_self=entries[n].vs_self,
            )
            for n in names
        },
        unavailable=unavailable,
        points=points,
        crossovers=crossovers(points, settings.batches),
    )
    if settings.targets:
        log("targets (interleaved ratios)")
        result.targets += ea_targets(settings, log)
        result.targets += lambda_targets(settings, log)
    if settings.compile:
        log(f"torch.compile at {settings.compile_grid[0]}x{settings.compile_grid[1]}")
        result.compile = compile_speedups(settings, names, log)
    return result
