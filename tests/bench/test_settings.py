"""Settings written once: flags, help defaults, the --quick preset and the printed command."""

from __future__ import annotations

import argparse
import shlex
from dataclasses import fields

import pytest

from beyond_attention.bench.settings import (
    MixerSettings,
    ModelSettings,
    PointSettings,
    add_flags,
    command_parts,
    from_args,
)
from beyond_attention.cli import build_parser


def _parse(cls, argv):
    parser = argparse.ArgumentParser()
    add_flags(parser, cls)
    parser.add_argument("--quick", action="store_true")
    return from_args(cls, parser.parse_args(argv))


@pytest.mark.parametrize("cls", [MixerSettings, ModelSettings, PointSettings])
def test_no_flags_give_the_dataclass_defaults(cls):
    assert _parse(cls, []) == cls()


def test_quick_preset_and_explicit_flags():
    s = _parse(MixerSettings, ["--quick", "--dim", "48"])
    assert s.dim == 48 and s.heads == 4 and s.grids == [(4, 4), (8, 8)]
    assert s.ea_target == (2, (8, 8)) and s.compile_grid == (4, 4)
    assert s.dtype == "float32"  # no preset: the default
    m = _parse(ModelSettings, ["--quick", "--no-train", "vit*"])
    assert (m.batch, m.gemm_size, m.train, m.pattern) == (2, 256, False, "vit*")
    p = _parse(PointSettings, ["--quick", "--channels", "256"])
    assert (p.points, p.channels, p.memory_size, p.repeats) == ([64, 128], 256, 16, 2)
    assert _parse(PointSettings, []).points == [1024, 2048, 4096, 8192, 16384]


def test_help_prints_every_default():
    sub = build_parser()._subparsers._group_actions[0].choices["bench"]
    mixers = sub._subparsers._group_actions[0].choices["mixers"].format_help()
    for text in ("(default 256)", "(default 14 28 56 112)", "(default 60)", "(default 28)"):
        assert text in " ".join(mixers.split()), text


@pytest.mark.parametrize(
    "cls, argv",
    [
        (MixerSettings, []),
        (MixerSettings, ["--quick", "--grid", "14x20", "--no-targets", "--compile"]),
        (MixerSettings, ["--mixers", "external", "self", "--batch", "1", "4", "--seed", "5"]),
        (ModelSettings, ["vit*", "--amp", "--img-size", "64", "--max-seconds", "2.5"]),
        (PointSettings, []),
        (PointSettings, ["--quick", "--mixers", "offset", "--points", "96", "--dtype",
                         "bfloat16", "--max-memory-gb", "0.5"]),
    ],
)
def test_the_printed_command_reproduces_the_settings(cls, argv):
    s = _parse(cls, argv)
    again = _parse(cls, shlex.split(" ".join(shlex.quote(str(p)) for p in command_parts(s))))
    if not s.__dict__.get("targets", True):  # target fields are not printed without targets
        again.ea_target, again.lambda_target_grids = s.ea_target, s.lambda_target_grids
        again.lambda_target_batch, again.lambda_global_grid = (
            s.lambda_target_batch,
            s.lambda_global_grid,
        )
    assert again == s


def test_every_field_has_help():
    for cls in (MixerSettings, ModelSettings, PointSettings):
        for f in fields(cls):
            assert f.metadata["help"], f.name


def test_bad_grid_names_the_flag():
    with pytest.raises(ValueError, match="--grid"):
        _parse(MixerSettings, ["--compile-grid", "0x3"])
