"""Channels-last training: the memory format reaches the weights and the batches, changes
the losses only at float rounding, keeps checkpoints contiguous and resumes exactly; the
model recipes that set it; point clouds ignore it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tiny_model
import torch
from safetensors.torch import load_file
from torch import nn

from beyond_attention.models._registry import ModelConfig
from beyond_attention.train import TrainConfig, train
from beyond_attention.train import engine as E
from beyond_attention.train import task_data as TD
from beyond_attention.train.recipe import resolve


class _Stop(Exception):
    pass


def _stop_at(step: int):
    def hook(done: int) -> None:
        if done == step:
            raise _Stop
    return hook


def _cfg(data, out, **kw) -> TrainConfig:
    base = dict(model=tiny_model.NAME, data=str(data), out=str(out), epochs=2, batch_size=32,
                limit_train=128, limit_val=32, quiet=True, workers=0, device="cpu",
                save_every=1, channels_last=True)
    base.update(kw)
    return TrainConfig(**base)


def _metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _is_channels_last(t: torch.Tensor) -> bool:
    return t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()


def test_conv_weights_and_image_batches_take_the_format():
    model = tiny_model.TinyNet(10, 3)
    E._memory_format(model, True)
    assert _is_channels_last(model.conv1.weight) and _is_channels_last(model.conv2.weight)
    assert model.fc.weight.is_contiguous()  # only 2-D convolutions change
    plain = tiny_model.TinyNet(10, 3)
    E._memory_format(plain, None)  # unset: nothing changes
    assert plain.conv1.weight.is_contiguous()

    x = torch.randn(4, 3, 8, 8)
    batches = TD.ImageBatches(lambda images, labels: (images * 2, labels),
                              lambda logits, t: logits.sum(), channels_last=True)
    (y,), _ = batches.train_inputs((x, torch.zeros(4)))
    assert _is_channels_last(y) and torch.equal(y, x * 2)
    off = TD.ImageBatches(lambda images, labels: (images, labels), lambda a, b: a)
    assert off.train_inputs((x, torch.zeros(4)))[0][0].is_contiguous()
    points = torch.randn(2, 3, 16)  # (B, 3, N): left as it is
    assert TD.image_layout(points, True) is points


def test_a_3d_convolution_does_not_stop_the_conversion():
    """The lambda layers hold a Conv3d (``nn.Module.to(memory_format=channels_last)``
    fails on its 5-D weight); only the 2-D convolutions are converted."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv3d(1, 2, (1, 3, 3)))
    with pytest.raises(RuntimeError):
        nn.Sequential(nn.Conv3d(1, 2, (1, 3, 3))).to(memory_format=torch.channels_last)
    E._memory_format(model, True)
    assert _is_channels_last(model[0].weight) and model[1].weight.is_contiguous()


def test_channels_last_gives_the_contiguous_losses_and_contiguous_checkpoints(
        tiny_net, fashion_dir, tmp_path):
    """Two epochs of two steps each way: the same losses to float rounding; the saved
    tensors are contiguous and match. ``conv1.bias`` is left out: the BatchNorm after it
    cancels any shift, so its gradient is zero but for rounding, which AdamW scales up to
    a full-size step of either sign (and ``bn1.running_mean`` follows that bias)."""
    runs = {}
    for on in (True, False):
        out = tmp_path / str(on)
        train(_cfg(fashion_dir, out, channels_last=on, max_steps_per_epoch=2))
        runs[on] = out
    assert len(_metrics(runs[True])) == 2
    for a, b in zip(_metrics(runs[True]), _metrics(runs[False]), strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-4)
        assert a["lr"] == b["lr"] and a["val_count"] == b["val_count"]
    assert json.loads((runs[True] / "final.json").read_text())["config"]["channels_last"]
    free = {"conv1.bias", "bn1.running_mean"}
    for name in ("last.safetensors", "last.state.safetensors", "best.safetensors"):
        wa, wb = load_file(runs[True] / name), load_file(runs[False] / name)
        assert wa.keys() == wb.keys()
        for k in wa:
            assert wa[k].is_contiguous() and wa[k].shape == wb[k].shape, (name, k)
            if k not in free:
                assert torch.allclose(wa[k], wb[k], rtol=1e-4, atol=1e-5), (name, k)


def test_a_channels_last_run_resumes_exactly(tiny_net, fashion_dir, tmp_path):
    """Stopped after step 3 (of 4 per epoch) and resumed, with an EMA: the weights, the
    AdamW moments, the EMA and the metrics equal an uninterrupted channels-last run's."""
    full, cut = tmp_path / "full", tmp_path / "cut"
    train(_cfg(fashion_dir, full, ema=0.9))
    with pytest.raises(_Stop):
        train(_cfg(fashion_dir, cut, ema=0.9), on_step=_stop_at(3))
    train(_cfg(fashion_dir, cut, ema=0.9, resume="auto"))
    for name in ("last.safetensors", "last.state.safetensors", "best.safetensors"):
        a, b = load_file(full / name), load_file(cut / name)
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), (name, k)
    assert [{k: v for k, v in m.items() if k not in ("images_per_s", "seconds")}
            for m in _metrics(full)] == [
        {k: v for k, v in m.items() if k not in ("images_per_s", "seconds")}
        for m in _metrics(cut)]


def test_point_clouds_ignore_channels_last(tmp_path):
    cfg = TrainConfig(model="spct", dataset="procedural-points", out=str(tmp_path / "p"),
                      epochs=1, batch_size=8, limit_train=16, limit_val=8, num_points=32,
                      quiet=True, workers=0, device="cpu", channels_last=True,
                      model_kwargs={"depth": 1, "width": 32, "fuse_dim": 64})
    final = train(cfg)
    assert final["task"] == "pointcloud_classification" and final["config"]["channels_last"]


def test_the_recipes_set_channels_last_and_a_flag_wins():
    for name in ("resnet26_cifar", "lavit_tiny_cifar", "eamlp_cifar"):
        assert resolve(TrainConfig(model=name)).channels_last is True, name
        assert resolve(TrainConfig(model=name, channels_last=False)).channels_last is False
    for name in ("vit_tiny_cifar", "lambda_resnet26_cifar"):  # measured no faster
        assert resolve(TrainConfig(model=name)).channels_last is False, name
    assert resolve(TrainConfig(model="vit_tiny_cifar", channels_last=True)).channels_last
    ModelConfig(name="ok", recipe={"channels_last": False})
    for recipe in ({"channels_last": 1}, {"lr": True}):
        with pytest.raises(ValueError, match="recipe of 'bad' must map"):
            ModelConfig(name="bad", recipe=recipe)
