"""Engine parts: schedule, parameter groups, EMA, loss, seeds, checkpoints."""

from __future__ import annotations

import json
import math
import pickle

import pytest
import tiny_model
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from beyond_attention.io import atomic_write
from beyond_attention.train import (
    CheckpointError,
    ModelEma,
    build_optimizer,
    load_checkpoint,
    load_weights,
    lr_at,
    param_groups,
    save_checkpoint,
    soft_cross_entropy,
    step_seed,
)
from beyond_attention.train.checkpoint import (
    load_optimizer_state,
    model_metadata,
    optimizer_state,
    save_safetensors,
)
from beyond_attention.train.engine import amp_dtype


def test_schedule_warmup_then_cosine():
    base, low, total, warm = 1e-3, 1e-5, 100, 10
    lrs = [lr_at(t, total, warm, base, low) for t in range(total)]
    for t in range(warm):  # linear warm-up reaching base at the last warm-up step
        assert lrs[t] == pytest.approx(base * (t + 1) / warm, rel=1e-12)
    assert lrs[warm - 1] == pytest.approx(base)
    assert lrs[warm] == pytest.approx(base)  # cosine starts at the peak
    mid = warm + (total - warm) // 2
    assert lrs[mid] == pytest.approx((base + low) / 2, rel=1e-12)
    for t in range(warm, total):
        p = (t - warm) / (total - warm)
        assert lrs[t] == pytest.approx(low + (base - low) * (1 + math.cos(math.pi * p)) / 2)
    assert all(a >= b for a, b in zip(lrs[warm:], lrs[warm + 1:], strict=False))
    assert lr_at(total, total, warm, base, low) == pytest.approx(low)
    assert lr_at(0, 5, 0, base) == pytest.approx(base)  # no warm-up


def test_param_groups_skip_1d_and_no_weight_decay_names():
    model = tiny_model.TinyNet(10, 1)
    decay, no_decay = param_groups(model, 0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    assert {names[id(p)] for p in decay["params"]} == {"conv1.weight", "conv2.weight",
                                                        "fc.weight"}
    assert {names[id(p)] for p in no_decay["params"]} == {
        "conv1.bias", "bn1.weight", "bn1.bias", "conv2.bias", "fc.bias", "pos"}
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    with pytest.raises(ValueError, match="lr must be positive"):
        build_optimizer(model, 0.0, 0.05)


def test_ema_update_rule():
    torch.manual_seed(0)
    model = tiny_model.TinyNet(10, 1)
    ema = ModelEma(model, decay=0.9)
    before = {k: v.clone() for k, v in ema.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update(model, step=1000)  # warmed-up decay: min(0.9, 1001/1010) = 0.9
    for k, v in model.state_dict().items():
        if v.dtype.is_floating_point:
            torch.testing.assert_close(ema.state_dict()[k], 0.9 * before[k] + 0.1 * v)
        else:
            assert torch.equal(ema.state_dict()[k], v)
    ema.update(model, step=0)  # early: decay (1 + 0) / (10 + 0) = 0.1
    w = model.fc.weight
    prev = ema.module.fc.weight.clone()
    ema.update(model, step=0)
    torch.testing.assert_close(ema.module.fc.weight, 0.1 * prev + 0.9 * w)
    assert not any(p.requires_grad for p in ema.module.parameters())


def test_soft_cross_entropy_matches_reference():
    torch.manual_seed(0)
    logits = torch.randn(5, 4, dtype=torch.float64)
    labels = torch.tensor([0, 3, 1, 1, 2])
    got = soft_cross_entropy(logits, labels, 0.1)
    logp = torch.log_softmax(logits.double(), -1)
    target = torch.full((5, 4), 0.025, dtype=torch.float64)
    target[torch.arange(5), labels] += 0.9
    assert got.item() == pytest.approx(-(target * logp).sum(-1).mean().item(), rel=1e-6)
    assert soft_cross_entropy(logits, target).item() == pytest.approx(got.item(), rel=1e-6)
    assert soft_cross_entropy(logits, labels).item() == pytest.approx(
        F.cross_entropy(logits, labels).item(), rel=1e-6)


def test_step_seeds_are_distinct():
    seeds = {step_seed(s, r, t) for s in range(3) for r in range(4) for t in range(200)}
    assert len(seeds) == 3 * 4 * 200 and all(0 <= s < 2**63 for s in seeds)
    assert step_seed(1, 0, 5) == step_seed(1, 0, 5)


def test_amp_dtype_choices():
    cpu = torch.device("cpu")
    assert amp_dtype("off", cpu) is None
    assert amp_dtype("auto", cpu) is torch.bfloat16 and amp_dtype("bf16", cpu) is torch.bfloat16
    with pytest.raises(ValueError, match="needs a GPU"):
        amp_dtype("fp16", cpu)
    with pytest.raises(ValueError, match="amp must be"):
        amp_dtype("int8", cpu)


@pytest.mark.parametrize("avx512_bf16, amx, expected", [
    (True, False, torch.bfloat16), (False, True, torch.bfloat16), (False, False, None)])
def test_native_amp_is_bfloat16_only_on_cpus_that_compute_it(monkeypatch, avx512_bf16, amx,
                                                             expected):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16,
                        raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    assert amp_dtype("native", torch.device("cpu")) is expected


def _trained(steps=3):
    torch.manual_seed(0)
    model = tiny_model.TinyNet(10, 1)
    opt = build_optimizer(model, 1e-2, 0.05)
    for _ in range(steps):
        loss = model(torch.randn(4, 1, 12, 12)).logsumexp(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model, opt


def test_checkpoint_round_trip_continues_identically(tmp_path, monkeypatch):
    model, opt = _trained()
    tensors, opt_info = optimizer_state(opt)
    meta = model_metadata("tiny_test_net", 10, 1, (12, 12), (0.5,), (0.25,), list("abcdefghij"))
    info = {"config": {"model": "tiny_test_net"}, "optimizer": opt_info,
            "state": {"epoch": 1, "global_step": 3}, "global_step": 3}
    save_checkpoint(tmp_path, "last", model_state=model.state_dict(), model_meta=meta,
                    state_tensors=tensors, info=info)
    assert not list(tmp_path.glob(".*tmp"))  # no temporary files left

    # loading never unpickles
    def no_pickle(*a, **k):
        raise AssertionError("unpickling during checkpoint load")

    monkeypatch.setattr(pickle, "loads", no_pickle)
    monkeypatch.setattr(pickle, "load", no_pickle)
    monkeypatch.setattr(torch, "load", no_pickle)
    ckpt = load_checkpoint(tmp_path)
    monkeypatch.undo()
    assert ckpt.model_meta["model"] == "tiny_test_net" and ckpt.model_meta["img_size"] == [12, 12]
    assert ckpt.info["state"] == {"epoch": 1, "global_step": 3}

    fresh = tiny_model.TinyNet(10, 1)
    fresh.load_state_dict(ckpt.model_state)
    fresh_opt = build_optimizer(fresh, 1e-2, 0.05)
    load_optimizer_state(fresh_opt, ckpt.state_tensors, ckpt.info["optimizer"])
    x = torch.randn(4, 1, 12, 12)
    for m, o in ((model, opt), (fresh, fresh_opt)):
        torch.manual_seed(1)  # the same dropout mask
        loss = m(x).logsumexp(-1).mean()
        o.zero_grad()
        loss.backward()
        o.step()
    for (k, a), b in zip(model.state_dict().items(), fresh.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_checkpoint_from_two_saves_is_detected(tmp_path):
    model, opt = _trained(1)
    tensors, opt_info = optimizer_state(opt)
    kw = dict(model_state=model.state_dict(), model_meta={"model": "m"}, state_tensors=tensors)
    save_checkpoint(tmp_path, "last", info={"optimizer": opt_info, "global_step": 1}, **kw)
    first = (tmp_path / "last.safetensors").read_bytes()
    save_checkpoint(tmp_path, "last", info={"optimizer": opt_info, "global_step": 2}, **kw)
    (tmp_path / "last.safetensors").write_bytes(first)  # as if killed between two moves
    with pytest.raises(CheckpointError, match="incomplete"):
        load_checkpoint(tmp_path / "last.json")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.json")


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    target = tmp_path / "last.json"
    target.write_text("old")

    def fail(f):
        f.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(target, fail)
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == \
        ["last.json"]


def test_load_weights_checks_model_and_keys(tmp_path):
    model = tiny_model.TinyNet(10, 1)
    save_safetensors(tmp_path / "w.safetensors", model.state_dict(), {"model": "tiny_test_net"})
    meta = load_weights(tiny_model.TinyNet(10, 1), tmp_path / "w.safetensors", "tiny_test_net")
    assert meta["model"] == "tiny_test_net"
    with pytest.raises(CheckpointError, match="'tiny_test_net', not 'vit_tiny_cifar'"):
        load_weights(tiny_model.TinyNet(10, 1), tmp_path / "w.safetensors", "vit_tiny_cifar")
    with pytest.raises(CheckpointError, match="shape differs: fc.bias, fc.weight"):
        load_weights(tiny_model.TinyNet(7, 1), tmp_path / "w.safetensors")
    sd = load_file(tmp_path / "w.safetensors")
    assert json.dumps(sorted(sd)) == json.dumps(sorted(model.state_dict()))
