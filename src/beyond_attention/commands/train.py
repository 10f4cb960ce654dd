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
from dataclasses import Field, fields
from typing import Any

from ..train.config import TrainConfig
from ..train.engine import train


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


def run(args: argparse.Namespace) -> int:
    """Run the ``train`` command."""
    train(config_from_args(args))
    return 0
