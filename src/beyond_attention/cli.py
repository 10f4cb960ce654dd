"""The ``beyond-attention`` command line: one subcommand per job.

Each subcommand lives in its own module, which provides ``add_arguments(parser)`` and
``run(args) -> int``; modules are imported only when their command runs or help is built.

Errors the user can act on (a bad dataset, checkpoint, path or combination of settings,
a diverged run) print one line ``error: ...`` on stderr and exit with status 1, or 2 for
usage errors (as argparse does for a bad flag); any other exception is a bug and keeps its
traceback. ``--debug`` (before or after the command) or ``BEYOND_ATTENTION_DEBUG=1`` shows
the traceback of expected errors too. Ctrl-C exits with status 130.

Run from the command line (``argv`` not given), the process keeps the memory it frees for
its next allocations (:func:`beyond_attention.allocator.keep_freed_memory`: no page faults
for the same large activations every training step); ``BEYOND_ATTENTION_MALLOC=system``
keeps the C library's defaults.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

DEBUG_ENV = "BEYOND_ATTENTION_DEBUG"
EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130

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
    "predict": ("beyond_attention.commands.predict", "top-k classes of image files"),
    "export": (
        "beyond_attention.commands.export",
        "export a checkpoint or model to ONNX, checked against onnxruntime",
    ),
    "viz": (
        "beyond_attention.commands.viz",
        "attention, memory-slot and lambda maps as pictures; attention saturation",
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
    debug_help = f"show the traceback of expected errors too (or set {DEBUG_ENV}=1)"
    parser.add_argument("--debug", action="store_true", help=debug_help)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        command = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(command)
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                             help=debug_help)
        command.set_defaults(_run=module.run)
    return parser


def expected_errors() -> tuple[type[BaseException], ...]:
    """The exceptions reported as one ``error:`` line: the library's own (data, checkpoint,
    settings, divergence), ``ValueError`` from argument checks and ``FileNotFoundError``
    for paths the user gave."""
    from .data.base import DatasetError
    from .export.onnx import ExportError
    from .train.checkpoint import CheckpointError
    from .train.guards import NonFiniteLossError

    return (
        DatasetError, CheckpointError, ExportError, NonFiniteLossError, ValueError,
        FileNotFoundError,
    )


def exit_status(error: BaseException) -> int:
    """2 for a usage error (settings that cannot run together), else 1."""
    from .train.config import UsageError

    return EXIT_USAGE if isinstance(error, UsageError) else EXIT_ERROR


def _one_line(error: BaseException) -> str:
    """The error's message on one line (``strerror: path`` for a missing file)."""
    if isinstance(error, FileNotFoundError) and error.filename and error.strerror:
        return f"{error.strerror.lower()}: {error.filename}"
    return " ".join(str(error).split()) or type(error).__name__


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:  # a process of its own, not a call from a program that embeds us
        from .allocator import keep_freed_memory

        keep_freed_memory()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args._argv = argv
    debug = bool(getattr(args, "debug", False)) or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        if debug:
            raise
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except expected_errors() as e:
        if debug:
            raise
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return exit_status(e)


if __name__ == "__main__":
    sys.exit(main())
