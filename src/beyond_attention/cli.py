"""The ``beyond-attention`` command line: one subcommand per job.

Each subcommand lives in its own module, which provides ``add_arguments(parser)`` and
``run(args) -> int``; modules are imported only when their command runs or help is built.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": (
        "beyond_attention.commands.demo",
        "build every mixer and print shapes, params and FLOPs",
    ),
    "bench": ("beyond_attention.commands.bench", "measure what mixers and models cost"),
    "models": (
        "beyond_attention.commands.models",
        "list registered models with params and FLOPs beside the papers'",
    ),
    "train": ("beyond_attention.commands.train", "train a model on real images"),
    "evaluate": (
        "beyond_attention.commands.evaluate",
        "evaluate a checkpoint: top-1, top-5, per-class accuracy",
    ),
    "study": ("beyond_attention.commands.study",
              "train every mixer in one backbone at an equal wall-clock budget"),
}


def build_parser() -> argparse.ArgumentParser:
    from beyond_attention import __version__

    parser = argparse.ArgumentParser(
        prog="beyond-attention",
        description="External attention, lambda layers and less-attention ViTs for vision.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        command = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(command)
        command.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args._run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
