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


def test_summary_mean_and_std_over_seeds_best_first(tmp_path):
    results = [{"entry": "a", "top1": t, "params": 10, "images_per_s": s, "epochs_done": 1.0}
               for t, s in ((50.0, 100.0), (60.0, 300.0))]
    results.append({"entry": "b", "top1": 70.0, "params": 20, "images_per_s": 50.0,
                    "epochs_done": 0.5})
    rows, table = study.summarise(results, {"a": {"gmacs": 0.5, "activation_mib": 1.25}})
    assert [r["entry"] for r in rows] == ["b", "a"]
    a = rows[1]
    assert a["top1_mean"] == 55.0 and a["top1_std"] == pytest.approx(7.0710678)
    assert a["images_per_s"] == 200.0 and a["gmacs"] == 0.5 and rows[0]["gmacs"] is None
    assert "55.00 +- 7.07" in table and "0.500" in table and "1.25" in table
    assert rows[0]["top1_std"] is None and "| 70.00 |" in table  # one seed: no spread
    assert study.plot(rows, tmp_path / "study.png")
    assert (tmp_path / "study.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_entry_costs_count_the_entry_model():
    import torch

    from beyond_attention import create_model
    from beyond_attention.bench.memory import activation_bytes
    from beyond_attention.flops import count
    from beyond_attention.models._registry import example_input

    entry = study.entries(["mixer-external"])[0]
    costs = study.entry_costs(entry)
    torch.manual_seed(0)
    model = create_model("vit_tiny_cifar", mixer="external")
    # the fake-tensor count equals a real pass; the model is the EA ViT, not the SA one
    assert costs["gmacs"] == pytest.approx(count(model).gmacs, rel=1e-9)
    assert costs["gmacs"] < study.entry_costs(study.entries(["mixer-self"])[0])["gmacs"]
    saved = activation_bytes(model.train(), (example_input(model.config, 1),)).bytes
    assert costs["activation_mib"] == pytest.approx(saved / 2**20, rel=1e-9)


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
    # float32 by default, though the backbone's recipe asks for bfloat16 where native
    run_final = json.loads((tmp_path / "runs" / "mixer-feedforward-s0" / "final.json").read_text())
    assert run_final["amp"] == "off" and run_final["config"]["amp"] == "off"
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


def test_a_run_is_claimed_once_and_a_dead_claim_is_taken_over(tmp_path):
    import os
    import subprocess
    import sys

    claim = tmp_path / "claims" / "mixer-self-s0.pid"
    assert study.claim_run(claim) and claim.read_text() == str(os.getpid())
    assert study.claim_run(claim)  # this process's own claim
    claim.write_text(str(os.getppid()))  # a live process's claim is refused
    assert not study.claim_run(claim) and claim.read_text() == str(os.getppid())
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    claim.write_text(done.stdout.strip())  # that process has exited: the claim is stale
    assert study.claim_run(claim) and claim.read_text() == str(os.getpid())


def test_runs_claimed_by_another_live_process_are_left_to_it(tmp_path, monkeypatch):
    import os

    import beyond_attention.train as train_pkg

    trained = []

    def fake_train(cfg):
        trained.append((cfg.model_kwargs["mixer"], cfg.seed))
        claim = tmp_path / "claims" / f"mixer-{cfg.model_kwargs['mixer']}-s{cfg.seed}.pid"
        assert claim.read_text() == str(os.getpid())  # claimed while it trains
        return {"top1": 50.0, "params": 1, "images_per_s": 10.0, "images_seen": 100,
                "epochs_done": 0.5, "val_images": 10}

    monkeypatch.setattr(train_pkg, "train", fake_train)
    (tmp_path / "claims").mkdir()
    (tmp_path / "claims" / "mixer-self-s1.pid").write_text(str(os.getppid()))
    lines: list[str] = []
    results = study.run_study(tmp_path, 1.0, 2, only=["mixer-self"], log=lines.append)
    assert trained == [("self", 0)] and [r["seed"] for r in results] == [0]
    assert "[2/2] mixer-self seed 1: training in another process" in lines
    assert not (tmp_path / "claims" / "mixer-self-s0.pid").exists()  # released when done
    assert (tmp_path / "results" / "mixer-self-s0.json").is_file()


@pytest.mark.parametrize("record", ["study_cifar10.json", "study_cifar10_15min.json"])
def test_the_recorded_study_renders_to_the_table_in_cifar10_md(record):
    benchmarks = Path(__file__).resolve().parents[2] / "benchmarks"
    recorded = json.loads((benchmarks / record).read_text(encoding="utf-8"))
    costs = {r["entry"]: {"gmacs": r["gmacs"], "activation_mib": r["activation_mib"]}
             for r in recorded["rows"]}
    rows, table = study.summarise(recorded["runs"], costs)
    assert [r["entry"] for r in rows] == [r["entry"] for r in recorded["rows"]]
    assert {r["entry"] for r in rows} == {e.name for e in study.entries()}
    assert all(r["seeds"] == recorded["seeds"] for r in rows)
    committed = (benchmarks / "cifar10.md").read_text(encoding="utf-8")
    missing = [line for line in table.splitlines() if line not in committed.splitlines()]
    assert not missing, missing[:3]
