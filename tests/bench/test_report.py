"""JSON and markdown writers, tables and plots on a synthetic sweep result."""

from __future__ import annotations

import json

import pytest

from beyond_attention.bench.mixers_report import console_table, markdown_report, write_plots
from beyond_attention.bench.point import PointResult
from beyond_attention.bench.report import write_json
from beyond_attention.bench.sweep import crossovers
from beyond_attention.tables import fmt_bytes, fmt_num, format_table

TOKENS = [196, 784, 3136]


def _summary(ms: float) -> dict:
    return {
        "median": ms,
        "q1": 0.9 * ms,
        "q3": 1.1 * ms,
        "min": 0.8 * ms,
        "max": 1.2 * ms,
        "n": 3,
        "samples": [ms, 0.9 * ms, 1.1 * ms],
    }


def _ratio(r: float) -> dict:
    return {"ratio": _summary(r), "a": _summary(1.0), "b": _summary(1.0)}


def synthetic_result() -> dict:
    points = []
    for n in TOKENS:
        h = int(n**0.5)
        points.append(
            {
                "mixer": "self",
                "batch": 1,
                "grid": [h, h],
                "tokens": n,
                "status": "ok",
                "reason": "",
                "params": 263168,
                "flops": n * n,
                "forward_ms": _summary(n / 100),
                "train_ms": _summary(n / 30),
                "activation_bytes": 40 * n,
            }
        )
        points.append(
            {
                "mixer": "external",
                "batch": 1,
                "grid": [h, h],
                "tokens": n,
                "status": "ok",
                "reason": "",
                "params": 32768,
                "flops": 1000 * n,
                "forward_ms": _summary(n / 1000),
                "train_ms": _summary(n / 300),
                "activation_bytes": 10 * n,
                "vs_self": {"forward": _ratio(500 / n), "train": _ratio(600 / n)},
            }
        )
    points.append(
        {
            "mixer": "naive",
            "batch": 1,
            "grid": [56, 56],
            "tokens": 3136,
            "status": "skipped",
            "reason": "predicted 9.0 GiB > --max-memory-gb 4",
        }
    )
    result = {
        "kind": "mixers",
        "command": "beyond-attention bench mixers --grid 14 28 56",
        "machine": {"cpu": "Test CPU", "device": "cpu", "torch": "2.x", "load_average": [1.0, 2.0]},
        "settings": {
            "dim": 256,
            "heads": 8,
            "memory_size": 64,
            "lambda_k": 16,
            "lambda_heads": 4,
            "lambda_u": 1,
            "lambda_r": 23,
            "batches": [1],
            "dtype": "float32",
            "device": "cpu",
            "warmup": 1,
            "repeats": 5,
            "pairs": 7,
            "max_seconds": 60.0,
            "max_memory_gb": 4.0,
            "compile_grid": [28, 28],
        },
        "mixers": {
            "self": {
                "label": "SDPA self-attention",
                "role": "baseline",
                "description": "sdpa",
                "vs_self": False,
            },
            "naive": {
                "label": "naive self-attention",
                "role": "baseline",
                "description": "n",
                "vs_self": False,
            },
            "external": {
                "label": "external attention",
                "role": "mixer",
                "description": "EA",
                "vs_self": True,
            },
        },
        "unavailable": [],
        "points": points,
        "targets": [
            {
                "name": "ea_forward_vs_gemms",
                "description": "EA forward / GEMMs",
                "value": 1.05,
                "target": 1.10,
                "op": "<=",
                "passed": True,
                "ratio": _ratio(1.05),
            }
        ],
        "compile": [
            {
                "mixer": "external",
                "status": "ok",
                "forward": _ratio(1.3),
                "train": _ratio(1.1),
                "compile_forward_s": 2.0,
                "compile_train_s": 3.0,
            }
        ],
    }
    found = crossovers([PointResult.from_json(p) for p in points], [1])
    result["crossovers"] = [c.to_json() for c in found]
    return result


def test_crossovers_of_synthetic_sweep():
    by_metric = {c["metric"]: c for c in synthetic_result()["crossovers"]}
    assert by_metric["flops"]["tokens"] == pytest.approx(1000.0)
    assert by_metric["forward"]["tokens"] == pytest.approx(500.0)
    assert by_metric["train"]["tokens"] == pytest.approx(600.0)
    assert all(c["mixer"] == "external" for c in by_metric.values())


def test_write_json_round_trip(tmp_path):
    result = synthetic_result()
    result["extra"] = {"tuple": (1, 2), "nan": float("nan")}
    path = write_json(tmp_path / "sub" / "r.json", result)
    back = json.loads(path.read_text())
    assert back["extra"] == {"tuple": [1, 2], "nan": None}
    assert back["points"][0]["forward_ms"]["median"] == pytest.approx(1.96)
    assert {c["metric"] for c in back["crossovers"]} == {"flops", "forward", "train"}


def test_markdown_report_sections(tmp_path):
    result = synthetic_result()
    plots = write_plots(result, tmp_path)
    md = markdown_report(result, plots)
    for heading in (
        "# Token mixers",
        "## Machine",
        "## Targets",
        "## Crossovers",
        "## Batch 1",
        "## torch.compile",
        "## Mixers",
        "## Method",
    ):
        assert heading in md
    assert "beyond-attention bench mixers --grid 14 28 56" in md
    assert "CUDA figures are missing" in md
    assert "~1,000" in md and "~500" in md
    assert "skipped: predicted 9.0 GiB" in md
    assert "1.050x" in md
    for p in plots:
        assert f"]({p.name})" in md
    # every table row has as many cells as its header
    for block in md.split("\n\n"):
        rows = [r for r in block.splitlines() if r.startswith("|")]
        if rows:
            assert len({r.count(" | ") for r in rows if not r.startswith("|---")}) == 1


def test_plots_are_pngs(tmp_path):
    paths = write_plots(synthetic_result(), tmp_path)
    assert sorted(p.name for p in paths) == ["mixers_b1_latency.png", "mixers_b1_memory.png"]
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_console_table_lists_every_point():
    text = console_table(synthetic_result())
    lines = text.splitlines()
    rows = [line for line in lines if line.startswith("external ") and "x" in line.split()[1]]
    assert [r.split()[1] for r in rows] == ["14x14=196", "28x28=784", "56x56=3,136"]
    assert "crossovers vs SDPA" in text


def test_format_table_and_numbers():
    text = format_table(["a", "bb"], [["x", 1], ["yyy", 22]])
    assert text.splitlines() == ["a    bb", "---  --", "x     1", "yyy  22"]
    md = format_table(["a", "b"], [[1, None]], markdown=True)
    assert md.splitlines() == ["| a | b |", "|---|---|", "| 1 |  |"]
    with pytest.raises(ValueError, match="cells"):
        format_table(["a"], [[1, 2]])
    assert fmt_num(1234.5678) == "1,235"
    assert fmt_num(0.012345) == "0.0123"
    assert fmt_bytes(3 * 2**20) == "3.0 MiB"
    assert fmt_bytes(2**31) == "2.00 GiB"
    assert fmt_bytes(512) == "0.5 KiB"
