"""End-to-end tests of the training engine on a subset of the shared Fashion-MNIST."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import tiny_model
import torch
from safetensors.torch import load_file

from beyond_attention.cli import main as cli_main
from beyond_attention.train import (
    DEFAULT_MODEL,
    CheckpointError,
    TrainConfig,
    evaluate_checkpoint,
    train,
)

SCRIPT = str(Path(tiny_model.__file__).resolve())
TIMING = {"images_per_s", "seconds"}


def _cfg(data, out, **kw) -> TrainConfig:
    base = dict(model=tiny_model.NAME, data=str(data), out=str(out), epochs=2, batch_size=32,
                limit_train=256, limit_val=128, quiet=True, workers=0, device="cpu",
                save_every=3)
    base.update(kw)
    return TrainConfig(**base)


def _metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONHASHSEED="0")
    env["PYTHONPATH"] = os.pathsep.join(
        [str(tiny_model.REPO / "src")] + [p for p in [env.get("PYTHONPATH")] if p])
    return env


def test_train_writes_run_files(tiny_net, fashion_dir, tmp_path):
    out = tmp_path / "run"
    final = train(_cfg(fashion_dir, out, ema=0.9))
    for name in ("metrics.jsonl", "last.safetensors", "last.state.safetensors", "last.json",
                 "best.safetensors", "final.json"):
        assert (out / name).is_file(), name
    lines = _metrics(out)
    assert [m["epoch"] for m in lines] == [0, 1]
    for m in lines:
        assert {"epoch", "train_loss", "train_top1", "val_top1", "val_top5", "lr",
                "images_per_s", "seconds"} <= set(m)
        assert 0 <= m["val_top1"] <= m["val_top5"] <= 100
        assert m["val_count"] == 128
    on_disk = json.loads((out / "final.json").read_text())
    assert on_disk["top1"] == final["top1"] == lines[-1]["val_top1"]
    for key in ("model", "dataset", "epochs", "top1", "top5", "params", "train_seconds"):
        assert key in on_disk
    assert on_disk["model"] == tiny_model.NAME and on_disk["dataset"] == "fashion-mnist"
    n_params = sum(p.numel() for p in tiny_model.tiny_test_net().parameters())
    assert on_disk["params"] == n_params
    # the EMA is in the state file, the raw weights in last.safetensors
    state = load_file(out / "last.state.safetensors")
    assert any(k.startswith("ema.") for k in state) and any(k.startswith("optim.") for k in state)
    # evaluating best.safetensors (EMA weights of the best epoch) on the same subset
    best_epoch = max(range(len(lines)), key=lambda i: lines[i]["val_top1"])
    result = evaluate_checkpoint(out / "best.safetensors", fashion_dir, "test", limit=128,
                                 device="cpu")
    assert result["top1"] == pytest.approx(lines[best_epoch]["val_top1"], abs=1e-9)
    assert result["count"] == 128 and len(result["per_class"]) == 10


def test_evaluate_command_json_and_wrong_model(tiny_net, fashion_dir, tmp_path, capsys):
    out = tmp_path / "run"
    final = train(_cfg(fashion_dir, out, epochs=1))
    rc = cli_main(["evaluate", "--checkpoint", str(out / "last.safetensors"), "--data",
                   str(fashion_dir), "--split", "test", "--limit", "128", "--json",
                   "--device", "cpu"])
    assert rc == 0
    result = json.loads(capsys.readouterr().out)
    assert result["top1"] == pytest.approx(final["top1"], abs=1e-9)
    assert result["top5"] == pytest.approx(final["top5"], abs=1e-9)
    assert set(result["per_class"]) == set(final["per_class_top1"])
    # independent check: per-class accuracies weighted by class counts give top-1
    ds_labels = __import__("beyond_attention.data", fromlist=["load_dataset"]).load_dataset(
        fashion_dir, "test").subset(128).labels
    counts = torch.bincount(torch.from_numpy(ds_labels), minlength=10).tolist()
    weighted = sum((a or 0.0) * c for a, c in zip(result["per_class"].values(), counts,
                                                  strict=True)) / 128
    assert weighted == pytest.approx(result["top1"], abs=1e-9)
    rc = cli_main(["evaluate", "--checkpoint", str(out / "last.safetensors"), "--data",
                   str(fashion_dir), "--limit", "32", "--device", "cpu"])
    assert rc == 0 and "top-1" in capsys.readouterr().out
    with pytest.raises(CheckpointError, match=f"{tiny_model.NAME}.*{tiny_model.AUX_NAME}"):
        evaluate_checkpoint(out / "last.safetensors", fashion_dir, model=tiny_model.AUX_NAME)


def test_resume_with_another_model_names_both(tiny_net, fashion_dir, tmp_path):
    out = tmp_path / "run"
    train(_cfg(fashion_dir, out, epochs=1, limit_train=64))
    with pytest.raises(CheckpointError) as err:
        train(_cfg(fashion_dir, out, model=tiny_model.AUX_NAME, resume="auto", limit_train=64))
    assert tiny_model.NAME in str(err.value) and tiny_model.AUX_NAME in str(err.value)


def test_auxiliary_loss_is_added_with_its_weight(tiny_net, fashion_dir, tmp_path):
    # the aux net's auxiliary_loss() is the constant 50: the recorded loss includes it
    # exactly when --aux-weight is on
    with_aux = train(_cfg(fashion_dir, tmp_path / "a", model=tiny_model.AUX_NAME, epochs=1,
                          limit_train=64, aux_weight=1.0))
    without = train(_cfg(fashion_dir, tmp_path / "b", model=tiny_model.AUX_NAME, epochs=1,
                         limit_train=64, aux_weight=0.0))
    loss_a = _metrics(tmp_path / "a")[0]["train_loss"]
    loss_b = _metrics(tmp_path / "b")[0]["train_loss"]
    assert loss_a == pytest.approx(loss_b + 50.0, abs=1e-4)
    assert with_aux["top1"] == without["top1"]  # the constant adds no gradient


def test_bfloat16_autocast_on_cpu(tiny_net, fashion_dir, tmp_path):
    final = train(_cfg(fashion_dir, tmp_path / "bf16", epochs=1, limit_train=64, amp="auto",
                       threads=1))
    assert final["amp"] == "bfloat16" and final["device"] == "cpu"
    assert math.isfinite(_metrics(tmp_path / "bf16")[0]["train_loss"])


def _run(args: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, SCRIPT, *args], cwd=cwd, env=_env(),
                          capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def test_resume_after_kill_matches_uninterrupted_run(fashion_dir, tmp_path):
    common = ["train", "--model", tiny_model.NAME, "--data", str(fashion_dir), "--epochs", "2",
              "--batch-size", "32", "--limit-train", "192", "--limit-val", "64",
              "--save-every", "4", "--seed", "3", "--ema", "0.9", "--mixup", "0.2",
              "--cutmix", "1.0", "--workers", "0", "--device", "cpu", "--quiet"]
    full, broken = tmp_path / "full", tmp_path / "broken"
    _run([*common, "--out", str(full)], tmp_path)
    # 6 steps per epoch; killed (SIGKILL) after global step 10, mid-epoch 2: the last
    # checkpoint is the step-8 one, two steps into the second epoch
    killed = _run(["--kill-after-steps", "10", *common, "--out", str(broken)], tmp_path,
                  check=False)
    assert killed.returncode == -9, killed.stderr
    assert not (broken / "final.json").exists()
    state = json.loads((broken / "last.json").read_text())["state"]
    assert (state["epoch"], state["step_in_epoch"], state["global_step"]) == (1, 2, 8)
    epoch0_line = (broken / "metrics.jsonl").read_text()
    resumed = _run([*[a for a in common if a != "--quiet"], "--out", str(broken), "--resume"],
                   tmp_path)
    # continued, not restarted
    assert "epoch 2, after step 2 of the epoch (global step 8)" in resumed.stdout
    assert (broken / "metrics.jsonl").read_text().startswith(epoch0_line)

    a, b = load_file(full / "last.safetensors"), load_file(broken / "last.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    sa = load_file(full / "last.state.safetensors")
    sb = load_file(broken / "last.state.safetensors")
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    ma, mb = _metrics(full), _metrics(broken)
    assert len(ma) == len(mb) == 2
    for x, y in zip(ma, mb, strict=True):
        assert {k: v for k, v in x.items() if k not in TIMING} == \
            {k: v for k, v in y.items() if k not in TIMING}
    fa = json.loads((full / "final.json").read_text())
    fb = json.loads((broken / "final.json").read_text())
    assert (fa["top1"], fa["top5"], fa["per_class_top1"]) == \
        (fb["top1"], fb["top5"], fb["per_class_top1"])


def test_step_hook_sees_every_step_and_a_resume_continues_the_count(tiny_net, fashion_dir,
                                                                     tmp_path):
    seen: list[int] = []
    cfg = _cfg(fashion_dir, tmp_path / "run", limit_train=64, save_every=1)
    train(cfg, on_step=seen.append)
    assert seen == [1, 2, 3, 4]  # 2 epochs x 2 steps

    class Stop(Exception):
        pass

    def stop_at_3(steps_done: int) -> None:
        seen.append(steps_done)
        if steps_done == 3:
            raise Stop

    seen.clear()
    with pytest.raises(Stop):
        train(_cfg(fashion_dir, tmp_path / "cut", limit_train=64, save_every=1),
              on_step=stop_at_3)
    train(_cfg(fashion_dir, tmp_path / "cut", limit_train=64, save_every=1, resume="auto"),
          on_step=seen.append)
    assert seen == [1, 2, 3, 4]  # the resume starts after the checkpoint of step 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_processes_on_cpu(fashion_dir, tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
           "--master-addr", "127.0.0.1", "--master-port", str(_free_port()), SCRIPT,
           "train", "--model", tiny_model.NAME, "--data", str(fashion_dir), "--epochs", "2",
           "--batch-size", "32", "--limit-train", "128", "--limit-val", "100",
           "--save-every", "2", "--workers", "0", "--device", "cpu", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Grad strides do not match bucket view strides" not in proc.stderr
    final = json.loads((out / "final.json").read_text())
    assert final["world_size"] == 2 and final["steps"] == 2 * 4
    lines = _metrics(out)
    assert [m["epoch"] for m in lines] == [0, 1]  # rank 0 alone writes
    assert all(m["val_count"] == 100 for m in lines)  # each image once across 2 ranks
    assert proc.stdout.count("epoch 1/2:") == 1  # only rank 0 prints
    ckpt = json.loads((out / "last.json").read_text())
    assert ckpt["world_size"] == 2 and ckpt["state"]["global_step"] == 8


def test_train_help_lists_flags(capsys):
    with pytest.raises(SystemExit) as e:
        cli_main(["train", "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--model", "--data", "--epochs", "--batch-size", "--lr", "--weight-decay",
                 "--warmup", "--label-smoothing", "--mixup", "--cutmix", "--randaugment",
                 "--trivialaugment", "--drop-path", "--ema", "--amp", "--seed", "--out",
                 "--resume", "--workers", "--max-steps-per-epoch", "--limit-train",
                 "--limit-val", "--download", "--aux-weight", "--device"):
        assert flag in text, flag


@pytest.mark.slow
def test_default_command_trains_on_the_default_dataset(tmp_path):
    """``beyond-attention train`` with only its length cut: the default model on the default
    dataset (CIFAR-10 from the shared data, decoded and cached on first use)."""
    from beyond_attention.data import find_dataset

    try:
        find_dataset()
    except ValueError:
        pytest.skip("no default dataset on this machine")
    rc = cli_main(["train", "--max-steps-per-epoch", "3", "--limit-val", "256", "--quiet",
                   "--out", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "cache")])
    assert rc == 0
    final = json.loads((tmp_path / "run" / "final.json").read_text())
    assert final["model"] == DEFAULT_MODEL and final["val_images"] == 256
