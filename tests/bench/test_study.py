"""The mixer study end to end at a tiny budget on a small subset, and its resumability."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from beyond_attention.bench import study
from beyond_attention.cli import main

FASHION = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "fashion-mnist"


def test_entries_share_the_backbone_and_refuse_unknown_names():
    rows = study.entries()
    mixers = [e for e in rows if e.name.startswith("mixer-")]
    assert {e.model for e in mixers} == {study.BACKBONE}
    assert [e.model_kwargs["mixer"] for e in mixers] == list(study.MIXERS)
    assert [e.name for e in rows[len(mixers):]] == list(study.PAPER_MODELS)
    with pytest.raises(ValueError, match="unknown study entries"):
        study.entries(["mixer-nothing"])


def test_summary_mean_and_std_over_seeds():
    results = [{"entry": "a", "top1": t, "params": 10, "images_per_s": s}
               for t, s in ((50.0, 100.0), (60.0, 300.0))]
    rows, table = study.summarise(results, {"a": 0.5})
    assert rows[0]["top1_mean"] == 55.0 and rows[0]["top1_std"] == pytest.approx(7.0710678)
    assert rows[0]["images_per_s"] == 200.0 and "55.00 +- 7.07" in table and "0.500" in table


def test_study_runs_end_to_end_and_a_rerun_skips_finished_runs(tmp_path, capsys, monkeypatch):
    if not (FASHION / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip("shared Fashion-MNIST not found")
    argv = ["study", "--out", str(tmp_path), "--budget-minutes", "0.005", "--seeds", "2",
            "--only", "mixer-feedforward", "--data", str(FASHION), "--limit-train", "64",
            "--limit-val", "32", "--batch-size", "16", "--threads", "1", "--device", "cpu"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "[1/2] mixer-feedforward seed 0: top-1" in out and "[2/2]" in out
    results = sorted((tmp_path / "results").glob("*.json"))
    assert [p.name for p in results] == ["mixer-feedforward-s0.json",
                                         "mixer-feedforward-s1.json"]
    first = json.loads(results[0].read_text())
    assert first["images_seen"] >= 16 and first["budget_minutes"] == 0.005
    summary = json.loads((tmp_path / "study.json").read_text())
    assert summary["rows"][0]["seeds"] == 2
    assert "mixer-feedforward" in (tmp_path / "study.md").read_text()
    assert (tmp_path / "study.png").stat().st_size > 0

    import beyond_attention.train as train_pkg

    def refuse(*a, **k):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(train_pkg, "train", refuse)
    assert main(argv) == 0
    assert "seed 1: done before" in capsys.readouterr().out
