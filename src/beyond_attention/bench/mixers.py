"""``beyond-attention bench mixers``: the pieces of the mixer benchmark under one name.

:mod:`.settings` (what a run is made of), :mod:`.contenders` (the mixers, baselines, peers
and LaViT adapters), :mod:`.point` (one measurement), :mod:`.targets` (the acceptance
targets), :mod:`.compile_study` and :mod:`.sweep` (the whole run, its
:class:`~.sweep.SweepResult`); the report is :mod:`.mixers_report`.
"""

from .compile_study import CompileResult, compile_speedups
from .contenders import (
    DEFAULT_MIXERS,
    CarriedLessMixer,
    MixerEntry,
    ReducedLessAttention,
    ReducedSelfAttention,
    ReducedVanillaAttention,
    make_inputs,
    mixer_entries,
    previous_attention,
    reduced_key_grid,
)
from .point import ERROR, OK, OOM, SKIPPED, TOO_SLOW, PointResult, measure_point, predict
from .settings import Grid, MixerSettings
from .sweep import CROSSOVER_METRICS, CrossoverResult, MixerInfo, SweepResult, crossovers, run_sweep
from .targets import TargetResult, ea_targets, lambda_targets

__all__ = [
    "CROSSOVER_METRICS",
    "DEFAULT_MIXERS",
    "ERROR",
    "OK",
    "OOM",
    "SKIPPED",
    "TOO_SLOW",
    "CarriedLessMixer",
    "CompileResult",
    "CrossoverResult",
    "Grid",
    "MixerEntry",
    "MixerInfo",
    "MixerSettings",
    "PointResult",
    "ReducedLessAttention",
    "ReducedSelfAttention",
    "ReducedVanillaAttention",
    "SweepResult",
    "TargetResult",
    "compile_speedups",
    "crossovers",
    "ea_targets",
    "lambda_targets",
    "make_inputs",
    "measure_point",
    "mixer_entries",
    "predict",
    "previous_attention",
    "reduced_key_grid",
    "run_sweep",
]
