"""Wall-clock budgets with a fake clock, per-model recipes and the flip policy."""

from __future__ import annotations

import json
import math

import pytest
import tiny_model

from beyond_attention.data.augment import NO_HFLIP_MARKER, default_hflip
from beyond_attention.train import TrainConfig, train
from beyond_attention.train import budget as budget_mod
from beyond_attention.train.budget import TrainingClock, budget_lr
from beyond_attention.train.recipe import FALLBACK, resolve


class FakeClock:
    """Seconds that move only when the test says so."""

    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def _expected_lr(s: float, total: float, base: float, low: float, frac: float) -> float:
    warm = frac * total
    if s < warm:
        return base * s / warm
    p = min(1.0, (s - warm) / (total - warm))
    return low + (base - low) * (1 + math.cos(math.pi * p)) / 2


@pytest.mark.parametrize("s", [1.0, 14.9, 15.0, 60.0, 150.0, 299.0, 300.0, 400.0])
def test_budget_lr_is_warmup_then_cosine_over_time(s):
    assert budget_lr(s, 300.0, 1e-2, 1e-5, 0.05) == pytest.approx(
        _expected_lr(s, 300.0, 1e-2, 1e-5, 0.05), rel=1e-12, abs=1e-15)


def test_budget_lr_shape():
    lrs = [budget_lr(s, 100.0, 1.0, 0.0, 0.1) for s in range(0, 101)]
    peak = max(range(len(lrs)), key=lrs.__getitem__)
    assert peak == 10 and lrs[10] == pytest.approx(1.0)
    assert all(a <= b for a, b in zip(lrs[:11], lrs[1:11], strict=False))
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))
    assert lrs[100] == pytest.approx(0.0, abs=1e-12) and lrs[55] == pytest.approx(0.5)


@pytest.mark.parametrize("kwargs, message", [
    (dict(elapsed_s=1.0, budget_s=0.0, base_lr=1.0), "budget_s must be positive"),
    (dict(elapsed_s=1.0, budget_s=1.0, base_lr=1.0, warmup_fraction=1.0), "warmup_fraction"),
])
def test_budget_lr_refuses_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        budget_lr(**kwargs)


def test_clock_counts_only_while_running_and_expires_at_the_budget():
    fake = FakeClock()
    clock = TrainingClock(1.0, elapsed_s=20.0, clock=fake)
    fake.t += 50  # not started: not counted
    assert clock.elapsed() == 20.0 and not clock.expired()
    clock.start()
    fake.t += 30
    assert clock.elapsed() == 50.0
    clock.pause()
    fake.t += 1000  # evaluation: paused
    assert clock.elapsed() == 50.0
    clock.start()
    fake.t += 9.5
    assert not clock.expired()
    fake.t += 0.5
    assert clock.expired() and clock.elapsed() == 60.0
    assert clock.lr(1.0, 0.0) == pytest.approx(0.0, abs=1e-12)
    assert not TrainingClock(None, clock=fake).expired()
    with pytest.raises(ValueError, match="budget_minutes must be positive"):
        TrainingClock(0.0)


def _cfg(data, out, **kw) -> TrainConfig:
    base = dict(model=tiny_model.NAME, data=str(data), out=str(out), batch_size=16,
                limit_train=64, limit_val=32, quiet=True, workers=0, device="cpu",
                save_every=0, lr=0.01, min_lr=0.0)
    base.update(kw)
    return TrainConfig(**base)


def test_budget_run_follows_the_clock_and_stops_at_the_budget(tiny_net, fashion_dir, tmp_path,
                                                             monkeypatch, capsys):
    fake = FakeClock()
    monkeypatch.setattr(budget_mod, "default_clock", fake)
    from beyond_attention.train import engine

    lrs: list[float] = []  # the learning rate of each optimisation step
    last: list[float] = []
    real_lr = engine._lr

    def record(run, step):
        last.append(real_lr(run, step))
        return last[-1]

    monkeypatch.setattr(engine, "_lr", record)

    def on_step(done: int) -> None:  # every step takes 6 "seconds" of training time
        lrs.append(last[-1])
        fake.t += 6.0

    # 64 images / 16 = 4 steps an epoch; a 1-minute budget at 6 s a step is 10 steps:
    # two whole epochs and half of the third.
    final = train(_cfg(fashion_dir, tmp_path / "run", budget_minutes=1.0, epochs=1,
                       quiet=False, log_every=2), on_step=on_step)
    assert len(lrs) == 10
    # the epochs are counted without a total: --epochs does not bound a budget run
    log = capsys.readouterr().out
    assert "epoch 3 (budget) step 2/4:" in log and "epoch 2 (budget): train loss" in log
    assert "epoch 2/1" not in log and "epoch 1/1" not in log
    assert lrs == pytest.approx([_expected_lr(6.0 * k, 60.0, 0.01, 0.0, 0.05)
                                 if k else 0.01 * 1e-3 for k in range(10)])
    assert final["images_seen"] == 160 and final["epochs_done"] == pytest.approx(2.5)
    assert final["training_seconds"] == pytest.approx(60.0)
    assert final["images_per_s"] == pytest.approx(160 / 60.0)
    assert final["budget_minutes"] == 1.0 and final["top1"] is not None
    metrics = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [0, 1, 2]
    # resuming a spent budget run does not train again
    again = train(_cfg(fashion_dir, tmp_path / "run", budget_minutes=1.0, resume="auto"),
                  on_step=on_step)
    assert len(lrs) == 10 and again["images_seen"] == 160


def test_epoch_runs_record_throughput_too(tiny_net, fashion_dir, tmp_path):
    final = train(_cfg(fashion_dir, tmp_path / "e", epochs=1))
    assert final["images_seen"] == 64 and final["epochs_done"] == 1.0
    assert final["budget_minutes"] is None and final["images_per_s"] > 0
    assert final["hflip"] == 0.0  # grayscale data: no flips by default


def test_recipe_defaults_reach_the_run_and_explicit_values_win(fashion_dir, tmp_path):
    from beyond_attention.models._registry import _MODELS, ModelConfig, register_model

    name = "tiny_recipe_net"

    def tiny_recipe_net(num_classes=10, in_chans=1, img_size=(28, 28), drop_path_rate=0.0,
                        **kwargs):
        return tiny_model.TinyNet(num_classes, in_chans)

    register_model(input_size=(1, 28, 28), mean=(0.2860,), std=(0.3530,), num_classes=10,
                   recipe={"lr": 0.0123, "warmup": 0.5, "hflip": 0.25})(tiny_recipe_net)
    try:
        cfg = resolve(TrainConfig(model=name))
        assert (cfg.lr, cfg.warmup) == (0.0123, 0.5)
        assert cfg.weight_decay == FALLBACK["weight_decay"] and cfg.hflip is None
        assert resolve(TrainConfig(model=name, lr=0.5)).lr == 0.5
        final = train(_cfg(fashion_dir, tmp_path / "r", model=name, lr=None, epochs=1))
        assert final["config"]["lr"] == 0.0123 and final["config"]["warmup"] == 0.5
        assert final["hflip"] == 0.0  # grayscale wins over the recipe's flips
        with pytest.raises(ValueError, match="recipe of 'bad' must map"):
            ModelConfig(name="bad", recipe={"learning_rate": 1.0})
        with pytest.raises(ValueError, match="recipe of 'bad' must map"):
            ModelConfig(name="bad", recipe={"lr": "fast"})
    finally:
        _MODELS.pop(name, None)


def test_flip_policy(tmp_path):
    assert default_hflip(1) == 0.0
    assert default_hflip(3) == 0.5 and default_hflip(3, recipe_hflip=0.3) == 0.3
    assert default_hflip(3, extra={"hflip": False}) == 0.0
    (tmp_path / NO_HFLIP_MARKER).write_text("")
    assert default_hflip(3, str(tmp_path)) == 0.0
