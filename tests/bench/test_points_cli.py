"""``beyond-attention bench points``: the files it writes, its skips, its memory-growth labels.

Tiny sizes and no timing assertions: the figures themselves are recorded in
``benchmarks/pointclouds.md``.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

import beyond_attention.commands.bench as bench_command
from beyond_attention.bench.points import (
    ATTENTION_MAPS,
    PointsResult,
    attention_bytes,
    growth_label,
    memory_growth,
)
from beyond_attention.cli import main

MEASURED = {"forward_ms", "forward_iqr_ms", "fwd_bwd_ms", "fwd_bwd_iqr_ms", "activation_bytes"}


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_bench_points_quick_files_fields_and_skips(tmp_path, one_thread, capsys):
    js, out = tmp_path / "points.json", tmp_path / "report"
    # 0.0002 GiB: room for the N x N attention at N = 64 (at most 6 maps of 16 KiB), not at
    # N = 128 (4 maps of 64 KiB for SDPA, 6 for offset-attention)
    argv = ["bench", "points", "--quick", "--threads", "1", "--max-memory-gb", "0.0002",
            "--json", str(js), "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert printed.count("N=64 ") == 3 and printed.count("N=128 ") == 3  # one line a point
    assert "reproduce with: beyond-attention bench points --points 64 128" in printed

    result = json.loads(js.read_text())
    assert result["kind"] == "points"
    assert result["settings"]["points"] == [64, 128] and result["settings"]["channels"] == 16
    assert result["machine"]["torch_threads"] == 1
    assert result["command"].startswith("beyond-attention bench points --points 64 128 ")
    assert "--max-memory-gb 0.0002" in result["command"]
    rows = {(r["mixer"], r["points"]): r for r in result["rows"]}
    assert sorted(rows) == [(m, n) for m in ("external", "offset", "sdpa") for n in (64, 128)]
    for (mixer, n), r in rows.items():
        assert r["channels"] == 16 and r["batch"] == 1 and r["device"] == "cpu"
        if mixer == "external" or n == 64:
            assert "skipped" not in r and set(r) >= MEASURED, r
            assert r["activation_bytes"] > 0 and r["forward_ms"] > 0 and r["fwd_bwd_ms"] > 0
        else:
            assert MEASURED.isdisjoint(r)
            assert r["skipped"].startswith("its N x N attention needs about ")
            assert "> --max-memory-gb 0.0002" in r["skipped"]
        # EA has no N x N map to predict
        assert ("attention_bytes" in r) == (mixer != "external")
    assert rows["offset", 128]["attention_bytes"] == ATTENTION_MAPS["offset"] * 128 * 128 * 4
    growth = result["growth"]
    assert growth["external"]["label"] == "linear" and growth["external"]["between"] == [64, 128]
    assert growth["offset"] == {"exponent": None, "label": "unknown", "between": [64]}

    md = (out / "points.md").read_text()
    for part in ("## Results", "## Memory growth", "## Machine", "](points_cost.png)",
                 "skipped: its N x N attention", result["command"]):
        assert part in md, part
    assert (out / "points_cost.png").read_bytes()[:4] == b"\x89PNG"

    # re-rendering the recorded run writes the same report, measuring nothing
    again = tmp_path / "again"
    assert main(["bench", "points", "--from-json", str(js), "--out", str(again)]) == 0
    assert (again / "points.md").read_text() == md
    assert PointsResult.from_json(result).to_json() == result


def test_the_default_command_spells_out_every_setting(monkeypatch):
    got = {}

    def capture(result, args):
        got.update(result.to_json())
        return 0

    monkeypatch.setattr(bench_command, "run_point_bench", lambda s, log: PointsResult(settings=s))
    monkeypatch.setattr(bench_command, "_write_point_outputs", capture)
    assert main(["bench", "points"]) == 0
    assert got["command"] == (
        "beyond-attention bench points --points 1024 2048 4096 8192 16384 --channels 128 "
        "--batch 1 --memory-size 64 --warmup 1 --repeats 5 --max-seconds 60 "
        "--max-memory-gb 8 --device cpu --dtype float32 --seed 0"
    )
    assert got["settings"]["mixers"] is None  # all three
    assert main(["bench", "points", "--mixers", "external", "sdpa", "--channels", "256",
                 "--batch", "2"]) == 0
    assert " --mixers external sdpa --channels 256 --batch 2 " in got["command"]


@pytest.mark.parametrize("argv, shown", [
    (["--channels", "6"], "--channels must be a positive multiple of 4"),
    (["--points", "0", "64"], "--points values must be positive"),
    (["--mixers", "lambda"], "unknown mixers ['lambda']"),
    (["--batch", "0"], "--batch must be positive"),
    (["--dtype", "int8"], "dtype must name a floating torch dtype"),
])
def test_bad_arguments_are_one_error_line(argv, shown, capsys):
    assert main(["bench", "points", "--quick", *argv]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and shown in err, err


def _rows(mixer, sizes, memory):
    return [{"mixer": mixer, "points": n, "activation_bytes": memory(n)} for n in sizes]


def test_memory_growth_labels_on_constructed_inputs():
    sizes = (1024, 2048, 4096)
    rows = (_rows("lin", sizes, lambda n: 3000 * n)
            + _rows("quad", sizes, lambda n: 4 * n * n + 5000 * n)
            + _rows("mid", sizes, lambda n: int(n**1.5))
            + _rows("one", (1024,), lambda n: 10 * n))
    # a skipped point does not count, nor does a point without a figure
    rows.append({"mixer": "one", "points": 2048, "skipped": "over the time budget"})
    rows.append({"mixer": "lin", "points": 8192, "skipped": "out of memory at N=8192"})
    g = memory_growth(rows)
    assert g["lin"]["label"] == "linear" and g["lin"]["exponent"] == pytest.approx(1.0)
    assert g["lin"]["between"] == [2048, 4096]
    # between the two largest sizes, where the linear term still weighs: p = 1.70, nearer 2
    want = math.log2((4 * 4096**2 + 5000 * 4096) / (4 * 2048**2 + 5000 * 2048))
    assert g["quad"]["exponent"] == pytest.approx(want) and g["quad"]["label"] == "quadratic"
    assert g["mid"]["exponent"] == pytest.approx(1.5, abs=1e-3)
    assert g["one"] == {"exponent": None, "label": "unknown", "between": [1024]}
    assert [growth_label(p) for p in (0.9, 1.0, 1.49, 1.5, 2.0, 2.1, None, math.nan)] == [
        "linear", "linear", "linear", "quadratic", "quadratic", "quadratic", "unknown",
        "unknown"]


def test_attention_bytes_prediction():
    assert attention_bytes("external", 16384, 4, torch.float32) is None
    assert attention_bytes("offset", 1024, 2, torch.float32) == 6 * 2 * 1024 * 1024 * 4
    assert attention_bytes("sdpa", 1024, 1, torch.bfloat16) == 4 * 1024 * 1024 * 2
