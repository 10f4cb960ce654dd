"""``beyond-attention bench``: ``mixers`` (token mixers over resolution), ``models``,
``points`` (point-cloud attention over the number of points) and ``train-step`` (the phases
of a training step).

The flags, their defaults, the ``--quick`` preset and the reproduction command printed in
the reports all come from the settings dataclasses (:mod:`beyond_attention.bench.settings`).
"""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path
from typing import Any

import torch

from ..bench.mixers_report import console_table as mixer_table
from ..bench.mixers_report import markdown_report as mixer_markdown
from ..bench.mixers_report import write_plots
from ..bench.models import ModelsResult
from ..bench.models import console_table as model_table
from ..bench.models import markdown_report as model_markdown
from ..bench.models import run_models as run_model_bench
from ..bench.points import POINT_MIXERS, PointsResult
from ..bench.points import run_points as run_point_bench
from ..bench.points_report import console_table as point_table
from ..bench.points_report import markdown_report as point_markdown
from ..bench.points_report import write_plot as write_point_plot
from ..bench.report import machine_info, write_json
from ..bench.settings import (
    MixerSettings,
    ModelSettings,
    PointSettings,
    add_flags,
    command_parts,
    from_args,
    grid_from_tokens,
    parse_grid,
)
from ..bench.sweep import SweepResult, run_sweep
from ..bench.train_step import TrainStepResult, TrainStepSettings, run_train_step
from ..bench.train_step import console_table as step_table
from ..bench.train_step import markdown_table as step_markdown
from ..io import atomic_write_bytes

__all__ = ["add_arguments", "grid_from_tokens", "parse_grid", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``mixers``, ``models`` and ``points`` subcommands."""
    sub = parser.add_subparsers(dest="bench_command", metavar="WHAT", required=True)

    m = sub.add_parser(
        "mixers",
        help="cost of every token mixer over a resolution sweep",
        description="Params, FLOPs, latency and activation memory of every "
        "token mixer at equal width over a sweep of token grids, beside SDPA "
        "and naive self-attention, EA's bare GEMMs and lambda-networks; "
        "crossovers with SDPA and the benchmark's target ratios.",
    )
    size = m.add_mutually_exclusive_group()
    add_flags(m, MixerSettings, group=lambda name: size if name == "grids" else None)
    size.add_argument(
        "--tokens", nargs="+", type=int, metavar="N", help="token counts to sweep (perfect squares)"
    )
    m.add_argument(
        "--targets-only", action="store_true", help="measure the target ratios, no sweep"
    )
    _run_flags(m)
    m.set_defaults(_bench=run_mixers)

    d = sub.add_parser(
        "models",
        help="throughput and FLOP utilisation of registered models",
        description="Inference and training images/s, params, GMACs and model "
        "FLOP utilisation (against a GEMM measured in the same run) of every "
        "registered model matching PATTERN.",
    )
    add_flags(d, ModelSettings)
    _run_flags(d)
    d.set_defaults(_bench=run_models)

    p = sub.add_parser(
        "points",
        help="EA vs offset-attention vs SDPA over the number of points",
        description="Forward and forward+backward latency and activation memory of one "
        "point-attention layer (EA, PCT's offset-attention, SDPA self-attention) on "
        "(B, C, N) point features over a sweep of point counts N, and whether each "
        "layer's memory grows linearly or quadratically in N.",
    )
    add_flags(p, PointSettings)
    _run_flags(p)
    p.set_defaults(_bench=run_points)
    t = sub.add_parser(
        "train-step",
        help="phases, images/s and MFU of the training step (*_cifar models)",
        description="The training engine's step, phase by phase (batch gather, "
        "augmentation, forward, backward, optimizer), for every registered model "
        "matching PATTERN: images/s, MFU against a GEMM measured in the same run, the "
        "share of each phase, and the images/s ratio to a peer plain ViT measured "
        "interleaved.",
    )
    add_flags(t, TrainStepSettings)
    _run_flags(t)
    t.set_defaults(_bench=run_train_steps)


def _run_flags(p: argparse.ArgumentParser) -> None:
    """The flags that control a run but are not settings of the measurement."""
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    p.add_argument("--quick", action="store_true", help="tiny sizes and few runs (tests, CI)")
    p.add_argument("--json", metavar="FILE", help="write the results as JSON")
    p.add_argument(
        "--from-json",
        metavar="FILE",
        help="measure nothing: re-write the tables, report and plots of a recorded run",
    )
    p.add_argument("--out", metavar="DIR", help="write the markdown report (and plots) here")


def run(args: argparse.Namespace) -> int:
    """Dispatch to ``mixers``, ``models``, ``points`` or ``train-step``."""
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be positive, got {args.threads}")
        torch.set_num_threads(args.threads)
    return int(args._bench(args))


def _check_device(device: str) -> None:
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: CUDA is not available on this machine")


def _command(what: str, settings: Any, args: argparse.Namespace) -> str:
    """The full command reproducing a run, every setting spelled out."""
    threads = [] if args.threads is None else ["--threads", args.threads]
    parts: list[Any] = ["beyond-attention", "bench", what]
    parts += command_parts(settings, after_seed=threads)
    if args.json:
        parts += ["--json", args.json]
    if args.out:
        parts += ["--out", args.out]
    return " ".join(shlex.quote(str(p)) for p in parts)


def _read_json(path: str) -> dict[str, Any]:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"--from-json {path}: expected a JSON object of a recorded run")
    return data


def _banner(what: str, device: str) -> dict[str, Any]:
    machine = machine_info(device)
    print(
        f"bench {what} on {machine['cpu']} ({machine['torch_threads']} threads), "
        f"torch {machine['torch']}, device {device}",
        flush=True,
    )
    return machine


def run_mixers(args: argparse.Namespace) -> int:
    """``bench mixers``: run the sweep, print the tables, write JSON/markdown/plots."""
    if args.from_json:
        return _write_mixer_outputs(SweepResult.from_json(_read_json(args.from_json)), args)
    if args.targets_only and args.no_targets:
        raise ValueError("--targets-only and --no-targets exclude each other")
    overrides: dict[str, Any] = {}
    if args.tokens:
        overrides["grids"] = [grid_from_tokens(n) for n in args.tokens]
    if args.targets_only:
        overrides["mixers"] = []
    settings = from_args(MixerSettings, args, **overrides)
    _check_device(settings.device)
    if any(v <= 0 for v in settings.batches):
        raise ValueError(f"--batch values must be positive, got {settings.batches}")
    settings.torch_dtype  # noqa: B018 - validates --dtype early
    machine = _banner("mixers", settings.device)
    result = run_sweep(settings, log=lambda s: print(s, flush=True))
    result.machine = machine
    result.command = _command("mixers", settings, args)
    return _write_mixer_outputs(result, args)


def _write_mixer_outputs(result: SweepResult, args: argparse.Namespace) -> int:
    print()
    print(mixer_table(result))
    if args.json:
        write_json(args.json, result.to_json())
        print(f"wrote {args.json}")
    if args.out:
        out = Path(args.out)
        plots = write_plots(result, out)
        atomic_write_bytes(out / "mixers.md", (mixer_markdown(result, plots) + "\n").encode())
        print(f"wrote {out / 'mixers.md'} and {len(plots)} plots")
    return 0


def run_models(args: argparse.Namespace) -> int:
    """``bench models``: throughput of the registered models matching the pattern."""
    if args.from_json:
        return _write_model_outputs(ModelsResult.from_json(_read_json(args.from_json)), args)
    settings = from_args(ModelSettings, args)
    _check_device(settings.device)
    if settings.batch <= 0:
        raise ValueError(f"--batch must be positive, got {settings.batch}")
    machine = _banner("models", settings.device)
    result = run_model_bench(settings, log=lambda s: print(s, flush=True))
    result.machine = machine
    result.command = _command("models", settings, args)
    return _write_model_outputs(result, args)


def _write_model_outputs(result: ModelsResult, args: argparse.Namespace) -> int:
    print()
    print(model_table(result))
    if args.json:
        write_json(args.json, result.to_json())
        print(f"wrote {args.json}")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out / "models.md", (model_markdown(result) + "\n").encode())
        print(f"wrote {out / 'models.md'}")
    return 0


def _check_points(settings: PointSettings) -> None:
    """Reject settings the point mixers cannot run with, naming the flag."""
    if any(n < 1 for n in settings.points):
        raise ValueError(f"--points values must be positive, got {settings.points}")
    if settings.channels < 4 or settings.channels % 4:
        raise ValueError(
            f"--channels must be a positive multiple of 4 (the query width is C / 4), got "
            f"{settings.channels}"
        )
    for flag, value in (("--batch", settings.batch), ("--memory-size", settings.memory_size),
                        ("--repeats", settings.repeats)):
        if value < 1:
            raise ValueError(f"{flag} must be positive, got {value}")
    if settings.warmup < 0:
        raise ValueError(f"--warmup must be >= 0, got {settings.warmup}")
    if settings.max_seconds <= 0 or settings.max_memory_gb < 0:
        raise ValueError(
            f"--max-seconds must be positive and --max-memory-gb >= 0, got "
            f"{settings.max_seconds:g} and {settings.max_memory_gb:g}"
        )
    unknown = sorted(set(settings.mixers or ()) - set(POINT_MIXERS))
    if unknown:
        raise ValueError(
            f"unknown mixers {unknown}; expected names from {', '.join(POINT_MIXERS)}"
        )
    settings.torch_dtype  # noqa: B018 - validates --dtype early


def run_points(args: argparse.Namespace) -> int:
    """``bench points``: point mixers over point counts; tables, JSON, markdown and plot."""
    if args.from_json:
        return _write_point_outputs(PointsResult.from_json(_read_json(args.from_json)), args)
    settings = from_args(PointSettings, args)
    _check_device(settings.device)
    _check_points(settings)
    machine = _banner("points", settings.device)
    result = run_point_bench(settings, log=lambda s: print(s, flush=True))
    result.machine = machine
    result.command = _command("points", settings, args)
    return _write_point_outputs(result, args)


def _show(table: str, result: Any, args: argparse.Namespace) -> None:
    """Print a run's table and its reproduction command; write its JSON with ``--json``."""
    print()
    print(table)
    if result.command:
        print(f"\nreproduce with: {result.command}")
    if args.json:
        write_json(args.json, result.to_json())
        print(f"wrote {args.json}")


def _write_point_outputs(result: PointsResult, args: argparse.Namespace) -> int:
    _show(point_table(result), result, args)
    if args.out:
        out = Path(args.out)
        plot = write_point_plot(result, out)
        name = plot.name if plot is not None else None
        atomic_write_bytes(out / "points.md", (point_markdown(result, name) + "\n").encode())
        print(f"wrote {out / 'points.md'}" + (f" and {name}" if name else ""))
    return 0


def run_train_steps(args: argparse.Namespace) -> int:
    """``bench train-step``: the phases of a training step of the matching models."""
    if args.from_json:
        return _write_step_outputs(TrainStepResult.from_json(_read_json(args.from_json)), args)
    settings = from_args(TrainStepSettings, args)
    _check_device(settings.device)
    settings.check()
    machine = _banner("train-step", settings.device)
    result = run_train_step(settings, log=lambda s: print(s, flush=True))
    result.machine = machine
    result.command = _command("train-step", settings, args)
    return _write_step_outputs(result, args)


def _write_step_outputs(result: TrainStepResult, args: argparse.Namespace) -> int:
    _show(step_table(result), result, args)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out / "train_step.md", (step_markdown(result) + "\n").encode())
        print(f"wrote {out / 'train_step.md'}")
    return 0
