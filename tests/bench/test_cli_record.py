"""The ``bench`` command line does not drift: flags, defaults, presets and the printed command.

``data/cli_record.json`` records, for ``bench mixers`` and ``bench models``, every flag
(option strings, destination, argparse default, nargs, type, const) and, for a few argument
vectors, the reproduction command the report prints and the settings the run uses. The
measurement itself is replaced by a stub: only the argument handling is under test. (The
``bench models`` command once left ``--seed`` out; it is spelled out like every setting.)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest

import beyond_attention.commands.bench as bench_command
from beyond_attention.bench.models import ModelsResult
from beyond_attention.bench.sweep import SweepResult
from beyond_attention.cli import build_parser, main

RECORD = json.loads((Path(__file__).parent / "data" / "cli_record.json").read_text())


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices[name]
    raise AssertionError(f"no subcommand {name}")


@pytest.mark.parametrize("what", ["mixers", "models"])
def test_flags_and_their_defaults(what):
    sub = _subparser(_subparser(build_parser(), "bench"), what)
    flags = [
        [
            list(a.option_strings),
            a.dest,
            a.default,
            a.nargs,
            getattr(a.type, "__name__", None),
            a.const,
        ]
        for a in sub._actions
        if not isinstance(a, argparse._HelpAction)
    ]
    # the same flags with the same defaults; --help lists them in the settings' field order
    assert sorted(flags, key=lambda f: f[1]) == sorted(RECORD["flags"][what], key=lambda f: f[1])


@pytest.fixture
def captured(monkeypatch):
    """Run the command with the measurement stubbed out; return what it would write."""
    got: dict[str, Any] = {}

    def capture(result, args):
        got.update(result.to_json())
        return 0

    monkeypatch.setattr(bench_command, "run_sweep", lambda s, log: SweepResult(settings=s))
    monkeypatch.setattr(bench_command, "run_model_bench", lambda s, log: ModelsResult(settings=s))
    monkeypatch.setattr(bench_command, "_write_mixer_outputs", capture)
    monkeypatch.setattr(bench_command, "_write_model_outputs", capture)
    monkeypatch.setattr(
        bench_command, "machine_info", lambda d: {"cpu": "cpu", "torch_threads": 1, "torch": "t"}
    )
    return got


@pytest.mark.parametrize("sample", RECORD["samples"], ids=lambda s: " ".join(s["argv"][1:]))
def test_command_line_and_settings(sample, captured):
    assert main(sample["argv"]) == 0
    assert captured["command"] == sample["command"]
    assert json.loads(json.dumps(captured["settings"])) == sample["settings"]
