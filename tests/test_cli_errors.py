"""Expected errors are one ``error:`` line on stderr and a non-zero status, for every
subcommand; unexpected ones keep their traceback; ``--debug`` shows it for expected ones."""

from __future__ import annotations

import argparse

import pytest

import beyond_attention.cli as cli
from beyond_attention.cli import DEBUG_ENV, main
from beyond_attention.data.base import DatasetError
from beyond_attention.train.checkpoint import CheckpointError


def _error_line(capsys) -> str:
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and captured.err.startswith("error: "), captured.err
    assert "Traceback" not in captured.err
    return captured.err


@pytest.mark.parametrize("argv, status, shown", [
    (["train", "--data", "{tmp}/absent", "--quiet"], 1, "data path {tmp}/absent does not exist"),
    (["train", "--epochs", "0", "--quiet"], 2, "--epochs and --batch-size must be positive"),
    (["evaluate", "--checkpoint", "{tmp}/absent.safetensors"], 1,
     "checkpoint file {tmp}/absent.safetensors does not exist"),
    (["bench", "mixers", "--from-json", "{tmp}/absent.json"], 1,
     "no such file or directory: {tmp}/absent.json"),
    (["bench", "models", "--from-json", "{tmp}/absent.json"], 1,
     "no such file or directory: {tmp}/absent.json"),
    # demo's sizes are checked before any mixer is built (--dim 0 once divided by zero)
    (["demo", "--dim", "0", "--grid", "2"], 1, "--dim must be a positive int, got 0"),
    (["demo", "--dim", "-4", "--grid", "2"], 1, "--dim must be a positive int, got -4"),
    (["demo", "--batch", "-1", "--grid", "2"], 1, "--batch must be a positive int, got -1"),
    (["demo", "--batch", "0", "--grid", "2"], 1, "--batch must be a positive int, got 0"),
])
def test_expected_errors_are_one_line(argv, status, shown, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    argv = [a.format(tmp=tmp_path) for a in argv]
    assert main(argv) == status
    assert shown.format(tmp=tmp_path) in _error_line(capsys)


def test_a_checkpoint_that_is_not_safetensors(tmp_path, capsys):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 64)
    assert main(["evaluate", "--checkpoint", str(bad)]) == 1
    assert "is not a readable safetensors file" in _error_line(capsys)


def _fake_command(monkeypatch, error: BaseException) -> None:
    def run(args: argparse.Namespace) -> int:
        raise error
    real = cli.build_parser

    def build() -> argparse.ArgumentParser:
        parser = real()
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        sub.choices["models"].set_defaults(_run=run)
        return parser
    monkeypatch.setattr(cli, "build_parser", build)


@pytest.mark.parametrize("error, status", [
    (DatasetError("image archive x.tar is truncated"), 1),
    (CheckpointError("checkpoint y is incomplete"), 1),
    (ValueError("--grid must be positive"), 1),
    (FileNotFoundError(2, "No such file or directory", "z.json"), 1),
])
def test_each_expected_kind(error, status, monkeypatch, capsys):
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    _fake_command(monkeypatch, error)
    assert main(["models"]) == status
    _error_line(capsys)


def test_unexpected_errors_keep_their_traceback(monkeypatch):
    _fake_command(monkeypatch, RuntimeError("a bug"))
    with pytest.raises(RuntimeError, match="a bug"):
        main(["models"])


@pytest.mark.parametrize("argv, env", [(["--debug", "models"], None),
                                       (["models", "--debug"], None),
                                       (["models"], "1")])
def test_debug_shows_the_traceback_of_expected_errors(argv, env, monkeypatch):
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    if env:
        monkeypatch.setenv(DEBUG_ENV, env)
    _fake_command(monkeypatch, CheckpointError("checkpoint y is incomplete"))
    with pytest.raises(CheckpointError):
        main(argv)


def test_ctrl_c_outside_training_exits_130(monkeypatch, capsys):
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    _fake_command(monkeypatch, KeyboardInterrupt())
    assert main(["models"]) == 130
    assert capsys.readouterr().err == "interrupted\n"


def test_bad_flags_still_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--epochs", "x"])
    assert e.value.code == 2
