"""A new run never overwrites another run's directory unless asked (--out, --overwrite)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tiny_model

from beyond_attention.cli import main as cli_main
from beyond_attention.train import TrainConfig, train
from beyond_attention.train.run_dir import RunDirError, fresh_dir


def _cfg(data, out, **kw) -> TrainConfig:
    base = dict(model=tiny_model.NAME, data=str(data), out=None if out is None else str(out),
                epochs=1, batch_size=32, limit_train=64, limit_val=32, quiet=True, workers=0,
                device="cpu", save_every=0)
    base.update(kw)
    return TrainConfig(**base)


def _args(data, out: Path, *extra: str) -> list[str]:
    return ["train", "--model", tiny_model.AUX_NAME, "--data", str(data), "--epochs", "1",
            "--batch-size", "32", "--limit-train", "64", "--limit-val", "32", "--workers", "0",
            "--device", "cpu", "--quiet", "--out", str(out), *extra]


def test_another_model_into_a_used_out_is_refused_and_best_kept(tiny_net, fashion_dir,
                                                               tmp_path, capsys):
    out = tmp_path / "run"
    train(_cfg(fashion_dir, out))
    best = (out / "best.safetensors").read_bytes()
    with pytest.raises(RunDirError) as err:
        train(_cfg(fashion_dir, out, model=tiny_model.AUX_NAME))
    message = str(err.value)
    for part in (str(out), tiny_model.NAME, "best.safetensors", "--resume", "--overwrite"):
        assert part in message, part
    # the command line: one line on stderr, usage status
    assert cli_main(_args(fashion_dir, out)) == 2
    err_text = capsys.readouterr().err
    assert err_text.startswith("error: output directory") and err_text.count("\n") == 1
    assert (out / "best.safetensors").read_bytes() == best
    assert json.loads((out / "final.json").read_text())["model"] == tiny_model.NAME


def test_overwrite_replaces_the_run(tiny_net, fashion_dir, tmp_path):
    out = tmp_path / "run"
    train(_cfg(fashion_dir, out, epochs=2))
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2
    (out / "notes.txt").write_text("mine")
    assert cli_main(_args(fashion_dir, out, "--overwrite")) == 0
    assert json.loads((out / "final.json").read_text())["model"] == tiny_model.AUX_NAME
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1
    assert (out / "notes.txt").read_text() == "mine"  # only the run's own files go


def test_resume_and_overwrite_together_is_a_usage_error(tiny_net, fashion_dir, tmp_path,
                                                        capsys):
    assert cli_main(_args(fashion_dir, tmp_path / "x", "--resume", "--overwrite")) == 2
    assert "--resume" in capsys.readouterr().err


def test_empty_or_unrelated_out_is_fine(tiny_net, fashion_dir, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "README").write_text("x")
    train(_cfg(fashion_dir, out))
    assert (out / "final.json").is_file()


def test_without_out_each_run_gets_a_fresh_directory(tiny_net, fashion_dir, tmp_path,
                                                     monkeypatch):
    monkeypatch.chdir(tmp_path)
    outs = [train(_cfg(fashion_dir, None))["out"] for _ in range(3)]
    stem = f"runs/{tiny_model.NAME}-fashion-mnist"
    assert outs == [stem, stem + "-2", stem + "-3"]
    for o in outs:
        assert (tmp_path / o / "best.safetensors").is_file()


def test_fresh_dir_skips_taken_names(tmp_path):
    assert fresh_dir(tmp_path, "m-d") == tmp_path / "m-d"
    (tmp_path / "m-d").mkdir()
    assert fresh_dir(tmp_path, "m-d") == tmp_path / "m-d"  # empty: still fresh
    (tmp_path / "m-d" / "x").write_text("")
    (tmp_path / "m-d-2").write_text("a file")
    assert fresh_dir(tmp_path, "m-d") == tmp_path / "m-d-3"
