"""``beyond-attention train``: train a model on real images.

With no arguments it runs a short real training (one epoch on a 10,000-image subset of the
default dataset, validated on 2,000 held-out images) that finishes in minutes on a laptop
CPU; ``--limit-train 0 --limit-val 0 --epochs N`` trains on everything. Under
``torchrun --nproc-per-node K -m beyond_attention train ...`` it runs DDP.

The flags are generated from :class:`~beyond_attention.train.config.TrainConfig`'s fields
(their metadata holds help, type and choices), and parsed flags are turned back into a
config field by field, so the two cannot drift apart.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from dataclasses import Field, fields
from pathlib import Path
from typing import Any

from ..train.config import TrainConfig
from ..train.engine import train
from ..train.interrupt import TrainingInterrupted


def flag_of(f: Field) -> str:
    """The option string of a :class:`TrainConfig` field."""
    return f.metadata["flag"] or "--" + f.name.replace("_", "-")


def _dest(f: Field) -> str:
    return flag_of(f)[2:].replace("-", "_")


def _help(f: Field) -> str:
    m = f.metadata
    if m["shown_default"] is not None:
        shown = m["shown_default"]
    elif m["action"] == "store_true":
        shown = "off"
    else:
        shown = str(f.default)
    return f"{m['help']} (default: {shown})".replace("%", "%%")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``train`` command's flags, one per :class:`TrainConfig` field, in field order."""
    groups: dict[str, Any] = {}
    exclusive: dict[str, Any] = {}
    for f in fields(TrainConfig):
        m = f.metadata
        if m["group"] not in groups:
            groups[m["group"]] = p.add_argument_group(m["group"])
        target = groups[m["group"]]
        if m["exclusive"]:
            if m["exclusive"] not in exclusive:
                exclusive[m["exclusive"]] = target.add_mutually_exclusive_group()
            target = exclusive[m["exclusive"]]
        kwargs: dict[str, Any] = {"dest": _dest(f), "help": _help(f)}
        if m["action"] == "store_true":
            kwargs["action"] = "store_true"
        else:
            kwargs["default"] = [] if m["action"] == "append" else f.default
            for key in ("action", "type", "choices", "nargs", "const", "metavar"):
                if m[key] is not None:
                    kwargs[key] = m[key]
        target.add_argument(flag_of(f), **kwargs)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """A :class:`TrainConfig` from parsed flags."""
    values = {}
    for f in fields(TrainConfig):
        value = getattr(args, _dest(f))
        convert = f.metadata["convert"]
        values[f.name] = convert(value) if convert is not None else value
    return TrainConfig(**values)


def resume_command(argv: list[str], out: str | Path, prog: str | None = None) -> str:
    """The command line that resumes a run: ``argv`` (the arguments after the program)
    without ``--out``/``--resume``/``--overwrite``, plus ``--out OUT --resume``."""
    kept: list[str] = []
    skip_value = False
    for i, a in enumerate(argv):
        if skip_value:
            skip_value = False
            continue
        if a in ("--out", "--resume", "--overwrite") or a.startswith(("--out=", "--resume=")):
            # --out takes a value; --resume takes one only if it does not look like a flag
            nxt = argv[i + 1] if i + 1 < len(argv) else None
            skip_value = (a == "--out" or (a == "--resume" and nxt is not None
                                            and not nxt.startswith("-")))
            continue
        kept.append(a)
    return shlex.join([*shlex.split(prog or _program()), *kept, "--out", str(out), "--resume"])


def _program() -> str:
    """How this process was started: ``beyond-attention``, ``python -m beyond_attention``,
    or ``python SCRIPT``."""
    arg0 = sys.argv[0] if sys.argv else ""
    if Path(arg0).name == "beyond-attention":
        return "beyond-attention"
    if Path(arg0).name == "__main__.py" or not arg0:
        return "python -m beyond_attention"
    return shlex.join(["python", arg0])


def run(args: argparse.Namespace) -> int:
    """Run the ``train`` command; on Ctrl-C, say how to resume and return 130."""
    try:
        train(config_from_args(args))
    except TrainingInterrupted as stop:
        if os.environ.get("RANK", "0") != "0":  # under torchrun, rank 0 speaks
            return 130
        argv = getattr(args, "_argv", None) or sys.argv[1:]
        print(f"interrupted after step {stop.step}: checkpoint {stop.checkpoint}; resume "
              f"with: {resume_command(argv, stop.checkpoint.parent)}", file=sys.stderr,
              flush=True)
        return 130
    return 0
