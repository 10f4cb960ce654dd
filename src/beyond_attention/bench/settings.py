"""What a benchmark run is made of, written once: the settings dataclasses and their flags.

Every field of :class:`MixerSettings`, :class:`ModelSettings` and :class:`PointSettings`
carries its command-line form in its metadata (:func:`setting`): the flag, the help text,
the ``--quick`` value and how the value is spelled. From that one place come the ``bench``
flags and their defaults (:func:`add_flags`), the settings of a parsed command line
(:func:`from_args`) and the command that reproduces a run (:func:`command_parts`).

Fields in the order of the reproduction command: the command is read left to right.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

import torch

Grid = tuple[int, int]

# how a field is spelled on the command line
INT = "int"  # --flag 3
FLOAT = "float"  # --flag 2.5 (printed with %g)
STR = "str"  # --flag text
INTS = "ints"  # --flag 1 2
GRID = "grid"  # --flag 28 / 14x20
GRIDS = "grids"  # --flag 14 28x20
SWITCH = "switch"  # --flag sets True
NO_SWITCH = "no_switch"  # --no-x sets False
BATCH_GRID = "batch_grid"  # (batch, grid) from two flags
NAMES = "names"  # --flag a b, None for all, [] for none
POSITIONAL = "positional"  # an optional positional argument

_SAME = object()


def setting(
    default: Any,
    help: str,
    *,
    kind: str = INT,
    flag: str | None = None,
    quick: Any = _SAME,
    when: str | None = None,
    metavar: str | None = None,
    default_text: str | None = None,
    empty_flag: str | None = None,
) -> Any:
    """A settings field with its command-line form.

    Args:
        default: the value of a plain run (a list or tuple is copied per instance).
        help: what the flag sets; the default is appended to it.
        kind: how the value is spelled (``INT``, ``GRIDS``, ``SWITCH``, ...).
        flag: the option; ``--field-name`` by default (for ``BATCH_GRID`` the prefix of
            ``-batch`` and ``-grid``).
        quick: the value under ``--quick`` (tiny sizes for tests and CI); none: unchanged.
        when: the name of a boolean field; the flag only appears in the reproduction
            command when that field is true.
        metavar, default_text: argparse metavar, and the default as the help prints it.
        empty_flag: for ``NAMES``, the flag the command prints for an empty list.
    """
    meta = {
        "help": help,
        "kind": kind,
        "flag": flag,
        "quick": quick,
        "when": when,
        "metavar": metavar,
        "default_text": default_text,
        "empty_flag": empty_flag,
    }
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def format_grid(grid: Grid | list[int]) -> str:
    """(28, 28) -> ``"28"``; (14, 20) -> ``"14x20"``."""
    return f"{grid[0]}x{grid[1]}" if grid[0] != grid[1] else str(grid[0])


def parse_grid(text: str) -> Grid:
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


def grid_from_tokens(n: int) -> Grid:
    """A square grid of ``n`` tokens; ``n`` must be a perfect square."""
    r = math.isqrt(n)
    if n <= 0 or r * r != n:
        raise ValueError(f"--tokens entries must be perfect squares (a square grid), got {n}")
    return (r, r)


@dataclass
class MixerSettings:
    """Everything that defines a mixer sweep (``beyond-attention bench mixers``).

    Attributes:
        dim: token width d of every mixer.
        heads: heads of self-attention, multi-head EA and the less-attention layer.
        memory_size: EA memory slots S.
        lambda_k, lambda_heads, lambda_u, lambda_r: lambda layer k, h, u and local context r.
        grids: token grids (H, W) swept, N = H * W.
        batches: batch sizes swept.
        mixers: names of the mixers to run (see :func:`.contenders.mixer_entries`); None for
            all, an empty list for none (targets only).
        warmup, repeats: untimed and timed calls per latency.
        pairs: interleaved pairs per ratio.
        max_seconds: time budget of one measurement (a latency or a ratio); a single call
            over it marks the point ``too_slow``.
        max_memory_gb: points predicted to need more memory than this (activations plus
            parameters and their gradients) are skipped.
        device, dtype: where and in what precision the mixers run.
        seed: seed of the weights and inputs.
        targets: measure the benchmark's target ratios (:mod:`.targets`).
        ea_target: (batch, grid) of the EA-versus-bare-GEMMs target.
        lambda_target_grids, lambda_target_batch: points of the lambda-versus-peer target.
        lambda_global_grid: grid at which the global lambda layer must run.
        compile: also measure the ``torch.compile`` speed-up of every mixer.
        compile_grid: the grid of the compile comparison.
    """

    dim: int = setting(256, "token width d", quick=32)
    heads: int = setting(8, "heads of self-attention, multi-head EA, LA", quick=4)
    memory_size: int = setting(64, "EA memory slots S", quick=16)
    lambda_k: int = setting(16, "lambda query/key depth k", quick=8)
    lambda_heads: int = setting(4, "lambda heads h", quick=4)
    lambda_u: int = setting(1, "lambda intra-depth u", quick=1)
    lambda_r: int = setting(23, "lambda local context r", quick=5)
    grids: list[Grid] = setting(
        [(14, 14), (28, 28), (56, 56), (112, 112)],
        "token grids to sweep",
        kind=GRIDS,
        flag="--grid",
        quick=[(4, 4), (8, 8)],
    )
    batches: list[int] = setting([1], "batch sizes to sweep", kind=INTS, flag="--batch", quick=[1])
    mixers: list[str] | None = setting(
        None,
        "mixers to run",
        kind=NAMES,
        metavar="NAME",
        default_text="all; see the report's Mixers table",
        empty_flag="--targets-only",
    )
    warmup: int = setting(1, "untimed calls before timing", quick=0)
    repeats: int = setting(5, "timed calls per latency", quick=2)
    pairs: int = setting(7, "interleaved pairs per ratio", quick=2)
    max_seconds: float = setting(60.0, "time budget per measurement", kind=FLOAT, quick=20.0)
    max_memory_gb: float = setting(
        4.0, "skip work predicted to need more memory than this", kind=FLOAT, quick=1.0
    )
    device: str = setting("cpu", "cpu, cuda, cuda:1, ...", kind=STR)
    dtype: str = setting("float32", "float32, bfloat16, ...", kind=STR)
    seed: int = setting(0, "seed of weights and inputs")
    targets: bool = setting(True, "skip the target ratios", kind=NO_SWITCH, flag="--no-targets")
    ea_target: tuple[int, Grid] = setting(
        (8, (56, 56)),
        "EA target",
        kind=BATCH_GRID,
        flag="--ea-target",
        quick=(2, (8, 8)),
        when="targets",
    )
    lambda_target_grids: list[Grid] = setting(
        [(28, 28), (56, 56)],
        "grids of the lambda-vs-peer target",
        kind=GRIDS,
        flag="--lambda-target-grid",
        quick=[(8, 8)],
        when="targets",
    )
    lambda_target_batch: int = setting(1, "batch of the lambda targets", quick=1, when="targets")
    lambda_global_grid: Grid = setting(
        (56, 56), "grid of the global-lambda target", kind=GRID, quick=(8, 8), when="targets"
    )
    compile: bool = setting(False, "measure torch.compile speed-ups", kind=SWITCH)
    compile_grid: Grid = setting(
        (28, 28), "grid of the compile comparison", kind=GRID, quick=(4, 4), when="compile"
    )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MixerSettings:
        """The settings of a recorded run (JSON lists back to tuples)."""
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        for key in ("grids", "lambda_target_grids"):
            if key in kw:
                kw[key] = [tuple(g) for g in kw[key]]
        for key in ("compile_grid", "lambda_global_grid"):
            if key in kw:
                kw[key] = tuple(kw[key])
        if "ea_target" in kw:
            kw["ea_target"] = (kw["ea_target"][0], tuple(kw["ea_target"][1]))
        return cls(**kw)

    @property
    def torch_dtype(self) -> torch.dtype:
        return _floating_dtype(self.dtype)


@dataclass
class ModelSettings:
    """What ``beyond-attention bench models`` measures.

    Attributes:
        pattern: shell pattern of model names (``list_models``).
        batch: images per step.
        img_size: input size, ``None`` for each model's configured size.
        amp: autocast to bfloat16 (CPU and CUDA).
        compile: ``torch.compile`` the model first.
        channels_last: channels-last memory format for model and input.
        train: also measure training throughput.
        warmup, repeats: untimed and timed steps.
        max_seconds: time budget per measurement.
        max_memory_gb: training is skipped when activations (measured per image, times the
            batch) plus parameters, gradients and momentum would exceed this.
        gemm_size: side of the square matrix product that sets the reference FLOP rate.
        device: where to run.
        seed: seed of the weights and inputs.
    """

    pattern: str = setting("*", "model name pattern", kind=POSITIONAL, default_text="all")
    batch: int = setting(8, "images per step", quick=2)
    img_size: int | None = setting(None, "input size", default_text="each model's own")
    amp: bool = setting(False, "autocast to bfloat16", kind=SWITCH)
    compile: bool = setting(False, "torch.compile the model", kind=SWITCH)
    channels_last: bool = setting(False, "channels-last memory format", kind=SWITCH)
    train: bool = setting(True, "inference only", kind=NO_SWITCH, flag="--no-train")
    warmup: int = setting(1, "untimed calls before timing", quick=0)
    repeats: int = setting(5, "timed calls per latency", quick=2)
    max_seconds: float = setting(60.0, "time budget per measurement", kind=FLOAT, quick=30.0)
    max_memory_gb: float = setting(
        4.0, "skip work predicted to need more memory than this", kind=FLOAT, quick=2.0
    )
    gemm_size: int = setting(2048, "side of the reference GEMM", quick=256)
    device: str = setting("cpu", "cpu, cuda, cuda:1, ...", kind=STR)
    seed: int = setting(0, "seed of weights and inputs")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelSettings:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass
class PointSettings:
    """What ``beyond-attention bench points`` measures: point mixers over point counts.

    Attributes:
        points: point counts N swept.
        mixers: names from :data:`.points.POINT_MIXERS`; None for all.
        channels: feature width C (PCT: 128 without down-sampling, 256 after the
            neighbour embedding); a multiple of 4 (the query width is C / 4).
        batch: point clouds per call.
        memory_size: EA memory slots S.
        warmup, repeats: untimed and timed calls per latency.
        max_seconds: time budget of one measurement; a single call over it skips the
            mixer from that N on.
        max_memory_gb: a mixer whose N x N attention is predicted to need more memory than
            this (:func:`.points.attention_bytes`) is skipped from that N on.
        device, dtype: where and in what precision the layers run.
        seed: seed of the weights and inputs.
    """

    points: list[int] = setting(
        [1024, 2048, 4096, 8192, 16384], "point counts N to sweep", kind=INTS, quick=[64, 128]
    )
    mixers: list[str] | None = setting(
        None, "point mixers to run", kind=NAMES, metavar="NAME",
        default_text="all: external offset sdpa",
    )
    channels: int = setting(128, "feature width C (PCT: 128 or 256)", quick=16)
    batch: int = setting(1, "point clouds per call")
    memory_size: int = setting(64, "EA memory slots S", quick=16)
    warmup: int = setting(1, "untimed calls before timing", quick=0)
    repeats: int = setting(5, "timed calls per latency", quick=2)
    max_seconds: float = setting(60.0, "time budget per measurement", kind=FLOAT, quick=20.0)
    max_memory_gb: float = setting(
        8.0, "skip N x N attention predicted to need more memory than this", kind=FLOAT,
        quick=1.0,
    )
    device: str = setting("cpu", "cpu, cuda, cuda:1, ...", kind=STR)
    dtype: str = setting("float32", "float32, bfloat16, ...", kind=STR)
    seed: int = setting(0, "seed of weights and inputs")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PointSettings:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    @property
    def torch_dtype(self) -> torch.dtype:
        return _floating_dtype(self.dtype)


def _floating_dtype(name: str) -> torch.dtype:
    dt = getattr(torch, name, None)
    if not isinstance(dt, torch.dtype) or not dt.is_floating_point:
        raise ValueError(f"dtype must name a floating torch dtype, got {name!r}")
    return dt


# ---------------------------------------------------------------------------------------------
# the command line, derived from the fields


def _flag(f: Any) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def _default(f: Any) -> Any:
    return f.default_factory() if f.default is MISSING else f.default


def _default_text(f: Any) -> str:
    text = f.metadata.get("default_text")
    if text is not None:
        return text
    value = _default(f)
    kind = f.metadata["kind"]
    if kind == GRIDS:
        return " ".join(format_grid(g) for g in value)
    if kind == GRID:
        return format_grid(value)
    if kind == INTS:
        return " ".join(map(str, value))
    if kind == FLOAT:
        return f"{value:g}"
    return str(value)


def _help(f: Any) -> str:
    return f"{f.metadata['help']} (default {_default_text(f)})"


def add_flags(
    parser: argparse.ArgumentParser,
    cls: type,
    *,
    group: Callable[[str], Any] | None = None,
) -> None:
    """Add one flag per field of ``cls`` (flags with a ``--quick`` value default to None and
    are resolved by :func:`from_args`). ``group(name)`` may return the argparse group a
    field's flag goes into (``--grid`` shares one with ``--tokens``).
    """
    for f in fields(cls):
        meta = f.metadata
        kind = meta["kind"]
        target = (group(f.name) if group else None) or parser
        preset = meta["quick"] is not _SAME
        default = None if preset else _default(f)
        flag = _flag(f)
        if kind == POSITIONAL:
            target.add_argument(f.name, nargs="?", default=default, help=_help(f))
        elif kind in (SWITCH, NO_SWITCH):
            target.add_argument(flag, action="store_true", help=meta["help"])
        elif kind == BATCH_GRID:
            label = meta["help"]
            target.add_argument(
                flag + "-batch",
                type=int,
                help=f"batch of the {label} (default {_default(f)[0]})",
            )
            target.add_argument(
                flag + "-grid",
                metavar="H[xW]",
                help=f"grid of the {label} (default {format_grid(_default(f)[1])})",
            )
        else:
            kw: dict[str, Any] = {"help": _help(f), "default": default}
            if kind in (INT, INTS):
                kw["type"] = int
            elif kind == FLOAT:
                kw["type"] = float
            if kind in (INTS, GRIDS, NAMES):
                kw["nargs"] = "+"
            if kind in (GRID, GRIDS):
                kw["metavar"] = "H[xW]"
            if meta["metavar"]:
                kw["metavar"] = meta["metavar"]
            target.add_argument(flag, **kw)


def _dest(flag: str) -> str:
    return flag.removeprefix("--").replace("-", "_")


def from_args(cls: type, args: argparse.Namespace, **overrides: Any) -> Any:
    """The settings of parsed flags: given flags, else the ``--quick`` value (with
    ``args.quick``), else the field's default. ``overrides`` replace fields outright.
    """
    quick = bool(getattr(args, "quick", False))
    kw: dict[str, Any] = {}
    for f in fields(cls):
        if f.name in overrides:
            kw[f.name] = overrides[f.name]
            continue
        meta = f.metadata
        kind = meta["kind"]
        fallback = meta["quick"] if quick and meta["quick"] is not _SAME else _default(f)
        if kind == SWITCH:
            kw[f.name] = bool(getattr(args, _dest(_flag(f))))
            continue
        if kind == NO_SWITCH:
            kw[f.name] = not getattr(args, _dest(_flag(f)))
            continue
        if kind == BATCH_GRID:
            b = getattr(args, _dest(_flag(f) + "-batch"))
            g = getattr(args, _dest(_flag(f) + "-grid"))
            kw[f.name] = (
                fallback[0] if b is None else b,
                tuple(fallback[1]) if g is None else parse_grid(g),
            )
            continue
        value = getattr(args, f.name if kind == POSITIONAL else _dest(_flag(f)))
        if value is None:
            value = fallback
        elif kind == GRID:
            value = parse_grid(value)
        elif kind == GRIDS:
            value = [parse_grid(v) for v in value]
        kw[f.name] = list(value) if isinstance(value, list) else value
    return cls(**kw)


def command_parts(settings: Any, *, after_seed: list[Any] | None = None) -> list[Any]:
    """The flags that reproduce ``settings``, every setting spelled out, in field order.

    A field whose ``when`` switch is off is left out (with ``--no-targets`` the target
    grids are meaningless); ``after_seed`` (run-control flags such as ``--threads``) goes
    right after ``--seed``.
    """
    parts: list[Any] = []
    for f in fields(settings):
        meta = f.metadata
        kind = meta["kind"]
        value = getattr(settings, f.name)
        if meta["when"] and not getattr(settings, meta["when"]):
            continue
        flag = _flag(f)
        if kind == POSITIONAL:
            parts.append(value)
        elif kind == SWITCH:
            if value:
                parts.append(flag)
        elif kind == NO_SWITCH:
            if not value:
                parts.append(flag)
        elif kind == BATCH_GRID:
            parts += [flag + "-batch", value[0], flag + "-grid", format_grid(value[1])]
        elif kind == NAMES:
            if value == [] and meta["empty_flag"]:
                parts.append(meta["empty_flag"])
            elif value:
                parts += [flag, *value]
        elif value is None:
            continue
        elif kind == GRID:
            parts += [flag, format_grid(value)]
        elif kind == GRIDS:
            parts += [flag, *(format_grid(g) for g in value)]
        elif kind == INTS:
            parts += [flag, *value]
        elif kind == FLOAT:
            parts += [flag, f"{value:g}"]
        else:
            parts += [flag, value]
        if f.name == "seed" and after_seed:
            parts += after_seed
    return parts
