"""``beyond-attention bench``: ``mixers`` (token mixers over resolution) and ``models``."""

from __future__ import annotations

import argparse
import json
import math
import shlex
from pathlib import Path
from typing import Any

import torch

from ..bench.mixers import MixerSettings, run_sweep
from ..bench.models import ModelSettings
from ..bench.models import run_models as run_model_bench
from ..bench.report import machine_info, write_json

# defaults, and the --quick preset (tiny sizes, for tests and CI smoke runs)
MIXER_DEFAULTS: dict[str, Any] = {
    "dim": 256,
    "heads": 8,
    "memory_size": 64,
    "lambda_k": 16,
    "lambda_heads": 4,
    "lambda_u": 1,
    "lambda_r": 23,
    "grid": ["14", "28", "56", "112"],
    "batch": [1],
    "warmup": 1,
    "repeats": 5,
    "pairs": 7,
    "max_seconds": 60.0,
    "max_memory_gb": 4.0,
    "compile_grid": "28",
    "ea_target_batch": 8,
    "ea_target_grid": "56",
    "lambda_target_grid": ["28", "56"],
    "lambda_target_batch": 1,
    "lambda_global_grid": "56",
}
MIXER_QUICK: dict[str, Any] = {
    "dim": 32,
    "heads": 4,
    "memory_size": 16,
    "lambda_k": 8,
    "lambda_heads": 4,
    "lambda_u": 1,
    "lambda_r": 5,
    "grid": ["4", "8"],
    "batch": [1],
    "warmup": 0,
    "repeats": 2,
    "pairs": 2,
    "max_seconds": 20.0,
    "max_memory_gb": 1.0,
    "compile_grid": "4",
    "ea_target_batch": 2,
    "ea_target_grid": "8",
    "lambda_target_grid": ["8"],
    "lambda_target_batch": 1,
    "lambda_global_grid": "8",
}
MODEL_DEFAULTS: dict[str, Any] = {
    "batch": 8,
    "warmup": 1,
    "repeats": 5,
    "max_seconds": 60.0,
    "gemm_size": 2048,
    "max_memory_gb": 4.0,
}
MODEL_QUICK: dict[str, Any] = {
    "batch": 2,
    "warmup": 0,
    "repeats": 2,
    "max_seconds": 30.0,
    "gemm_size": 256,
    "max_memory_gb": 2.0,
}


def parse_grid(text: str) -> tuple[int, int]:
    """``"28"`` -> (28, 28); ``"14x20"`` -> (14, 20)."""
    parts = text.lower().split("x")
    try:
        dims = tuple(int(p) for p in parts)
    except ValueError:
        raise ValueError(
            f"--grid entries must be H or HxW with positive ints, got {text!r}"
        ) from None
    if len(dims) == 1:
        dims = (dims[0], dims[0])
    if len(dims) != 2 or min(dims) <= 0:
        raise ValueError(f"--grid entries must be H or HxW with positive ints, got {text!r}")
    return dims  # type: ignore[return-value]


def grid_from_tokens(n: int) -> tuple[int, int]:
    """A square grid of ``n`` tokens; ``n`` must be a perfect square."""
    r = math.isqrt(n)
    if n <= 0 or r * r != n:
        raise ValueError(f"--tokens entries must be perfect squares (a square grid), got {n}")
    return (r, r)


def _resolve(args: argparse.Namespace, defaults: dict[str, Any], quick: dict[str, Any]) -> None:
    preset = quick if args.quick else defaults
    for key, value in preset.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``mixers`` and ``models`` subcommands."""
    sub = parser.add_subparsers(dest="bench_command", metavar="WHAT", required=True)

    m = sub.add_parser(
        "mixers",
        help="cost of every token mixer over a resolution sweep",
        description="Params, FLOPs, latency and activation memory of every "
        "token mixer at equal width over a sweep of token grids, beside SDPA "
        "and naive self-attention, EA's bare GEMMs and lambda-networks; "
        "crossovers with SDPA and the benchmark's target ratios.",
    )
    m.add_argument("--dim", type=int, help="token width d (default 256)")
    m.add_argument("--heads", type=int, help="heads of self-attention, multi-head EA, LA (8)")
    m.add_argument("--memory-size", type=int, help="EA memory slots S (64)")
    m.add_argument("--lambda-k", type=int, help="lambda query/key depth k (16)")
    m.add_argument("--lambda-heads", type=int, help="lambda heads h (4)")
    m.add_argument("--lambda-u", type=int, help="lambda intra-depth u (1)")
    m.add_argument("--lambda-r", type=int, help="lambda local context r (23)")
    size = m.add_mutually_exclusive_group()
    size.add_argument(
        "--grid", nargs="+", metavar="H[xW]", help="token grids to sweep (default 14 28 56 112)"
    )
    size.add_argument(
        "--tokens", nargs="+", type=int, metavar="N", help="token counts to sweep (perfect squares)"
    )
    m.add_argument("--batch", nargs="+", type=int, help="batch sizes to sweep (1)")
    m.add_argument(
        "--mixers",
        nargs="+",
        metavar="NAME",
        help="mixers to run (default: all; see the report's Mixers table)",
    )
    m.add_argument("--compile", action="store_true", help="measure torch.compile speed-ups")
    m.add_argument("--compile-grid", metavar="H[xW]", help="grid of the compile comparison (28)")
    m.add_argument("--no-targets", action="store_true", help="skip the target ratios")
    m.add_argument(
        "--targets-only", action="store_true", help="measure the target ratios, no sweep"
    )
    m.add_argument("--ea-target-batch", type=int, help="batch of the EA target (8)")
    m.add_argument("--ea-target-grid", metavar="H[xW]", help="grid of the EA target (56)")
    m.add_argument(
        "--lambda-target-grid",
        nargs="+",
        metavar="H[xW]",
        help="grids of the lambda-vs-peer target (28 56)",
    )
    m.add_argument("--lambda-target-batch", type=int, help="batch of the lambda targets (1)")
    m.add_argument(
        "--lambda-global-grid", metavar="H[xW]", help="grid of the global-lambda target (56)"
    )
    m.add_argument("--dtype", default="float32", help="float32, bfloat16, ... (float32)")
    m.add_argument("--pairs", type=int, help="interleaved pairs per ratio (7)")
    _common(m)
    m.set_defaults(_bench=run_mixers)

    d = sub.add_parser(
        "models",
        help="throughput and FLOP utilisation of registered models",
        description="Inference and training images/s, params, GMACs and model "
        "FLOP utilisation (against a GEMM measured in the same run) of every "
        "registered model matching PATTERN.",
    )
    d.add_argument("pattern", nargs="?", default="*", help="model name pattern (default: all)")
    d.add_argument("--img-size", type=int, help="input size (default: each model's own)")
    d.add_argument("--batch", type=int, help="images per step (8)")
    d.add_argument("--amp", action="store_true", help="autocast to bfloat16")
    d.add_argument("--compile", action="store_true", help="torch.compile the model")
    d.add_argument("--channels-last", action="store_true", help="channels-last memory format")
    d.add_argument("--gemm-size", type=int, help="side of the reference GEMM (2048)")
    d.add_argument("--no-train", action="store_true", help="inference only")
    _common(d)
    d.set_defaults(_bench=run_models)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (cpu)")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    p.add_argument("--warmup", type=int, help="untimed calls before timing (1)")
    p.add_argument("--repeats", type=int, help="timed calls per latency (5)")
    p.add_argument("--max-seconds", type=float, help="time budget per measurement (60)")
    p.add_argument(
        "--max-memory-gb", type=float, help="skip work predicted to need more memory than this (4)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of weights and inputs")
    p.add_argument("--quick", action="store_true", help="tiny sizes and few runs (tests, CI)")
    p.add_argument("--json", metavar="FILE", help="write the results as JSON")
    p.add_argument(
        "--from-json",
        metavar="FILE",
        help="measure nothing: re-write the tables, report and plots of a recorded run",
    )
    p.add_argument("--out", metavar="DIR", help="write the markdown report (and plots) here")


def run(args: argparse.Namespace) -> int:
    """Dispatch to ``mixers`` or ``models``."""
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be positive, got {args.threads}")
        torch.set_num_threads(args.threads)
    return int(args._bench(args))


def _check_device(device: str) -> None:
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: CUDA is not available on this machine")


def _mixer_command(s: Any, args: argparse.Namespace) -> str:
    """The full command reproducing a mixer run, every setting spelled out."""
    g = lambda grid: f"{grid[0]}x{grid[1]}" if grid[0] != grid[1] else str(grid[0])  # noqa: E731
    parts = [
        "beyond-attention",
        "bench",
        "mixers",
        "--dim",
        s.dim,
        "--heads",
        s.heads,
        "--memory-size",
        s.memory_size,
        "--lambda-k",
        s.lambda_k,
        "--lambda-heads",
        s.lambda_heads,
        "--lambda-u",
        s.lambda_u,
        "--lambda-r",
        s.lambda_r,
        "--grid",
        *[g(x) for x in s.grids],
        "--batch",
        *s.batches,
    ]
    if args.targets_only:
        parts.append("--targets-only")
    elif args.mixers:
        parts += ["--mixers", *args.mixers]
    parts += [
        "--warmup",
        s.warmup,
        "--repeats",
        s.repeats,
        "--pairs",
        s.pairs,
        "--max-seconds",
        f"{s.max_seconds:g}",
        "--max-memory-gb",
        f"{s.max_memory_gb:g}",
        "--device",
        s.device,
        "--dtype",
        s.dtype,
        "--seed",
        s.seed,
    ]
    if args.threads is not None:
        parts += ["--threads", args.threads]
    if s.targets:
        parts += [
            "--ea-target-batch",
            s.ea_target[0],
            "--ea-target-grid",
            g(s.ea_target[1]),
            "--lambda-target-grid",
            *[g(x) for x in s.lambda_target_grids],
            "--lambda-target-batch",
            s.lambda_target_batch,
            "--lambda-global-grid",
            g(s.lambda_global_grid),
        ]
    else:
        parts.append("--no-targets")
    if s.compile:
        parts += ["--compile", "--compile-grid", g(s.compile_grid)]
    if args.json:
        parts += ["--json", args.json]
    if args.out:
        parts += ["--out", args.out]
    return " ".join(shlex.quote(str(p)) for p in parts)


def run_mixers(args: argparse.Namespace) -> int:
    """``bench mixers``: run the sweep, print the tables, write JSON/markdown/plots."""
    if args.from_json:
        result = json.loads(Path(args.from_json).read_text(encoding="utf-8"))
        return _write_mixer_outputs(result, args)
    _resolve(args, MIXER_DEFAULTS, MIXER_QUICK)
    _check_device(args.device)
    grids = (
        [grid_from_tokens(n) for n in args.tokens]
        if args.tokens
        else [parse_grid(t) for t in args.grid]
    )
    for name, values in (("--batch", args.batch),):
        if any(v <= 0 for v in values):
            raise ValueError(f"{name} values must be positive, got {values}")
    settings = MixerSettings(
        dim=args.dim,
        heads=args.heads,
        memory_size=args.memory_size,
        lambda_k=args.lambda_k,
        lambda_heads=args.lambda_heads,
        lambda_u=args.lambda_u,
        lambda_r=args.lambda_r,
        grids=grids,
        batches=list(args.batch),
        mixers=[] if args.targets_only else args.mixers,
        warmup=args.warmup,
        repeats=args.repeats,
        pairs=args.pairs,
        max_seconds=args.max_seconds,
        max_memory_gb=args.max_memory_gb,
        device=args.device,
        dtype=args.dtype,
        compile=args.compile,
        compile_grid=parse_grid(args.compile_grid),
        targets=not args.no_targets,
        ea_target=(args.ea_target_batch, parse_grid(args.ea_target_grid)),
        lambda_target_grids=[parse_grid(t) for t in args.lambda_target_grid],
        lambda_target_batch=args.lambda_target_batch,
        lambda_global_grid=parse_grid(args.lambda_global_grid),
        seed=args.seed,
    )
    settings.torch_dtype  # noqa: B018 - validates --dtype early
    if args.targets_only and args.no_targets:
        raise ValueError("--targets-only and --no-targets exclude each other")
    machine = machine_info(args.device)
    print(
        f"bench mixers on {machine['cpu']} ({machine['torch_threads']} threads), "
        f"torch {machine['torch']}, device {args.device}",
        flush=True,
    )
    result = run_sweep(settings, log=lambda s: print(s, flush=True))
    result["machine"] = machine
    result["command"] = _mixer_command(settings, args)
    return _write_mixer_outputs(result, args)


def _write_mixer_outputs(result: dict[str, Any], args: argparse.Namespace) -> int:
    from ..bench.mixers_report import console_table, markdown_report, write_plots

    print()
    print(console_table(result))
    if args.json:
        write_json(args.json, result)
        print(f"wrote {args.json}")
    if args.out:
        out = Path(args.out)
        plots = write_plots(result, out)
        (out / "mixers.md").write_text(markdown_report(result, plots) + "\n", encoding="utf-8")
        print(f"wrote {out / 'mixers.md'} and {len(plots)} plots")
    return 0


def run_models(args: argparse.Namespace) -> int:
    """``bench models``: throughput of the registered models matching the pattern."""
    if args.from_json:
        result = json.loads(Path(args.from_json).read_text(encoding="utf-8"))
        return _write_model_outputs(result, args)
    _resolve(args, MODEL_DEFAULTS, MODEL_QUICK)
    _check_device(args.device)
    if args.batch <= 0:
        raise ValueError(f"--batch must be positive, got {args.batch}")
    settings = ModelSettings(
        pattern=args.pattern,
        batch=args.batch,
        img_size=args.img_size,
        device=args.device,
        amp=args.amp,
        compile=args.compile,
        channels_last=args.channels_last,
        warmup=args.warmup,
        repeats=args.repeats,
        max_seconds=args.max_seconds,
        gemm_size=args.gemm_size,
        max_memory_gb=args.max_memory_gb,
        train=not args.no_train,
        seed=args.seed,
    )
    machine = machine_info(args.device)
    print(
        f"bench models on {machine['cpu']} ({machine['torch_threads']} threads), "
        f"torch {machine['torch']}, device {args.device}",
        flush=True,
    )
    result = run_model_bench(settings, log=lambda s: print(s, flush=True))
    result["machine"] = machine
    parts = ["beyond-attention", "bench", "models", args.pattern, "--batch", settings.batch]
    if args.img_size:
        parts += ["--img-size", args.img_size]
    for flag in ("amp", "compile", "channels_last", "no_train"):
        if getattr(args, flag):
            parts.append("--" + flag.replace("_", "-"))
    parts += [
        "--warmup",
        settings.warmup,
        "--repeats",
        settings.repeats,
        "--max-seconds",
        f"{settings.max_seconds:g}",
        "--max-memory-gb",
        f"{settings.max_memory_gb:g}",
        "--gemm-size",
        settings.gemm_size,
        "--device",
        settings.device,
    ]
    if args.threads is not None:
        parts += ["--threads", args.threads]
    if args.json:
        parts += ["--json", args.json]
    if args.out:
        parts += ["--out", args.out]
    result["command"] = " ".join(shlex.quote(str(p)) for p in parts)
    return _write_model_outputs(result, args)


def _write_model_outputs(result: dict[str, Any], args: argparse.Namespace) -> int:
    from ..bench.models import console_table, markdown_report

    print()
    print(console_table(result))
    if args.json:
        write_json(args.json, result)
        print(f"wrote {args.json}")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "models.md").write_text(markdown_report(result) + "\n", encoding="utf-8")
        print(f"wrote {out / 'models.md'}")
    return 0
