"""A run whose loss turns NaN stops with a clear error and never writes NaN weights."""

from __future__ import annotations

import json
import math

import pytest
import tiny_model
import torch
from safetensors.torch import load_file

from beyond_attention.cli import main as cli_main
from beyond_attention.train import TrainConfig, train
from beyond_attention.train.guards import LossWatch, NonFiniteLossError, weights_finite


def _cfg(data, out, **kw) -> TrainConfig:
    base = dict(model=tiny_model.NAN_NAME, data=str(data), out=str(out), epochs=2,
                batch_size=32, limit_train=128, limit_val=32, quiet=True, workers=0,
                device="cpu", save_every=2)
    base.update(kw)
    return TrainConfig(**base)


def _all_finite(path) -> bool:
    return all(torch.isfinite(t).all() for t in load_file(path).values()
               if t.dtype.is_floating_point)


def test_nan_loss_stops_and_keeps_the_last_finite_checkpoint(tiny_net, fashion_dir, tmp_path):
    # 4 steps per epoch; the loss is NaN from step 6 (index 5) on; checkpoints every 2 steps
    out = tmp_path / "run"
    seen: list[int] = []
    with pytest.raises(NonFiniteLossError) as err:
        train(_cfg(fashion_dir, out, model_kwargs={"nan_from": 5}), on_step=seen.append)
    message = str(err.value)
    assert "NaN at step 6" in message and "last.json" in message
    assert seen == [1, 2, 3, 4, 5]  # stopped at the step-6 checkpoint, before saving it
    state = json.loads((out / "last.json").read_text())["state"]
    assert state["global_step"] == 4  # the end of epoch 1: the last finite weights
    assert _all_finite(out / "last.safetensors") and _all_finite(out / "last.state.safetensors")
    assert _all_finite(out / "best.safetensors")
    assert not (out / "final.json").exists()
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1


def test_nan_in_the_first_epoch_writes_no_weights_at_all(tiny_net, fashion_dir, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(NonFiniteLossError, match="NaN at step 1 .*no checkpoint"):
        train(_cfg(fashion_dir, out, model_kwargs={"nan_from": 0}, save_every=0))
    assert not list(out.glob("*.safetensors"))


def test_the_command_line_exits_1_with_one_error_line(tiny_net, fashion_dir, tmp_path, capsys):
    rc = cli_main(["train", "--model", tiny_model.NAN_NAME, "--model-arg", "nan_from=1",
                   "--data", str(fashion_dir), "--epochs", "1", "--batch-size", "32",
                   "--limit-train", "128", "--limit-val", "32", "--workers", "0",
                   "--device", "cpu", "--quiet", "--out", str(tmp_path / "run")])
    assert rc == 1
    err = capsys.readouterr().err
    assert err.startswith("error: training diverged: the loss became NaN at step 2")
    assert err.count("\n") == 1


def test_loss_watch_finds_the_first_bad_step_without_syncing():
    watch = LossWatch(torch.device("cpu"))
    for step, value in enumerate([1.0, 2.0, float("inf"), float("nan")]):
        watch.observe(torch.tensor(value), step)
    watch.check(3.0, "here")  # a finite sum passes
    with pytest.raises(NonFiniteLossError, match="infinite at step 3 \\(seen here\\)"):
        watch.check(math.inf, "here")


def test_a_scaler_that_keeps_skipping_stops_the_run():
    # a real gradient scaler on CPU: an overflowing gradient makes it skip every step
    w = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.AdamW([w], lr=1e-3)
    scaler = torch.amp.GradScaler("cpu")
    watch = LossWatch(torch.device("cpu"), max_skipped=4)

    def step(i: int, blow_up: bool) -> None:
        opt.zero_grad()
        loss = (w * (3e38 if blow_up else 1.0)).sum()
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        watch.count_skip(opt, i)

    step(0, False)
    for i in range(1, 4):  # three skips in a row are tolerated
        step(i, True)
    step(4, False)  # a taken step resets the count
    assert watch.skipped_in_a_row == 0
    for i in range(5, 8):
        step(i, True)
    with pytest.raises(NonFiniteLossError, match="skipped 4 steps in a row"):
        step(8, True)


def test_weights_finite():
    net = torch.nn.Linear(2, 2)
    assert weights_finite(net)
    with torch.no_grad():
        net.bias[0] = float("nan")
    assert not weights_finite(net)
