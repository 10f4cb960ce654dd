"""``bench train-step`` (fields, phases, peer comparison, JSON round trip) and the peer ViT.

No timing assertions: only that every figure is there, positive and consistent with the
others (shares from the phase medians, the ratio from the interleaved pairs, MFU from
images/s, the forward FLOPs and the GEMM rate).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from beyond_attention.bench import peer_vit
from beyond_attention.bench.train_step import (
    PHASES,
    TrainStepResult,
    TrainStepSettings,
    markdown_table,
)
from beyond_attention.cli import main


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_train_step_quick(tmp_path, one_thread, capsys):
    js = tmp_path / "steps.json"
    argv = ["bench", "train-step", "resnet26_cifar", "--quick", "--threads", "1",
            "--json", str(js), "--out", str(tmp_path)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "reproduce with: beyond-attention bench train-step resnet26_cifar --batch 4" in printed
    result = json.loads(js.read_text())
    assert result["kind"] == "train_step" and result["settings"]["batch"] == 4
    gemm = result["gemm"]["flops_per_s"]
    assert gemm > 0 and len(result["gemm_runs"]) == 2
    assert gemm == max(r["flops_per_s"] for r in result["gemm_runs"])
    (row,) = result["models"]
    peer = result["peer"]
    assert row["model"] == "resnet26_cifar" and peer["model"] == "peer_vit_cifar"
    for r in (row, peer):
        assert r["status"] == "ok" and r["params"] > 0 and r["gmacs"] > 0
        assert set(r["phase_ms"]) == set(PHASES) == set(r["phase_share"])
        assert all(v >= 0 for v in r["phase_ms"].values())
        assert sum(r["phase_share"].values()) == pytest.approx(1.0)
        total = sum(r["phase_ms"].values())
        assert r["phase_share"]["forward"] == pytest.approx(r["phase_ms"]["forward"] / total)
        assert r["img_s"] == pytest.approx(4 / (r["step_ms"]["median"] / 1e3))
        assert r["step_ms"]["n"] == 2
        assert r["mfu"] == pytest.approx(3 * 2e9 * r["gmacs"] * r["img_s"] / gemm, rel=1e-6)
        # each step against the GEMM timed right after it
        steps = r["step_ms"]["samples"]
        rates = r["gemm_local"]["samples"]
        per_step = [3 * 2e9 * r["gmacs"] * 4 / (t / 1e3) / g
                    for t, g in zip(steps, rates, strict=True)]
        assert len(rates) == 2 and r["mfu_local"] == pytest.approx(sum(per_step) / 2)
    assert row["peer_ratio"] == pytest.approx(1 / row["peer_pairs"]["ratio"]["median"])
    assert row["peer_pairs"]["ratio"]["n"] == 2
    assert "peer_ratio" not in peer
    md = (tmp_path / "train_step.md").read_text()
    assert "resnet26_cifar" in md and "peer_vit_cifar" in md and "vs peer ViT" in md
    # the recorded run renders again without measuring, and reads back unchanged
    assert TrainStepResult.from_json(result).to_json() == result
    again = tmp_path / "again"
    assert main(["bench", "train-step", "--from-json", str(js), "--out", str(again)]) == 0
    assert (again / "train_step.md").read_text() == md


def test_train_step_without_peer_channels_last_amp(tmp_path, one_thread):
    js = tmp_path / "steps.json"
    argv = ["bench", "train-step", "lambda_resnet26_cifar", "--quick", "--no-peer",
            "--channels-last", "--amp", "--variants", "--threads", "1", "--json", str(js)]
    assert main(argv) == 0
    result = json.loads(js.read_text())
    assert "peer" not in result and result["gemm"]["dtype"] == "bfloat16"
    assert result["settings"]["channels_last"] and result["settings"]["amp"]
    (row,) = result["models"]
    assert row["status"] == "ok" and "peer_ratio" not in row and row["img_s"] > 0
    # each variant flips one setting of the run and is timed interleaved with it
    assert set(row["variant_speedup"]) == {"channels_last", "amp"} == set(row["variant_pairs"])
    for key, speedup in row["variant_speedup"].items():
        assert speedup > 0
        assert speedup == pytest.approx(row["variant_pairs"][key]["ratio"]["median"])


@pytest.mark.parametrize(("argv", "shown"), [
    (["--batch", "0"], "--batch"),
    (["--batch", "8", "--images", "4"], "--images"),
    (["--warmup", "-1"], "--warmup"),
])
def test_bad_settings(argv, shown, capsys):
    assert main(["bench", "train-step", "resnet26_cifar", "--quick", *argv]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and shown in err, err


def test_no_match_names_the_pattern(capsys):
    assert main(["bench", "train-step", "no_such_model*", "--quick"]) == 1
    assert "pattern" in capsys.readouterr().err


def test_settings_round_trip():
    s = TrainStepSettings(batch=32, amp=True, peer=False)
    assert TrainStepSettings.from_dict(s.to_dict()) == s


# --------------------------------------------------------------------------- the peer ViT
def test_peer_vit_parameter_count_by_formula():
    """1.80M: the vit-pytorch layout counted by hand (d=192, depth 6, 3x64 heads, MLP 384)."""
    d, depth, inner, mlp, patch_dim, tokens, classes = 192, 6, 3 * 64, 384, 3 * 4 * 4, 65, 10
    attn = 2 * d + d * 3 * inner + inner * d + d  # LayerNorm, qkv (no bias), output Linear
    ff = 2 * d + d * mlp + mlp + mlp * d + d  # LayerNorm, Linear, Linear
    embed = 2 * patch_dim + patch_dim * d + d + 2 * d  # LayerNorm, Linear, LayerNorm
    total = depth * (attn + ff) + embed + tokens * d + d + 2 * d + d * classes + classes
    model = peer_vit.peer_vit_cifar()
    assert sum(p.numel() for p in model.parameters()) == total == 1_803_562
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_peer_attention_is_softmax_qk_v():
    """The explicit two-matmul attention against torch's scaled dot-product attention."""
    torch.manual_seed(0)
    attn = peer_vit.Attention(dim=12, heads=3, dim_head=4).double()
    x = torch.randn(2, 7, 12, dtype=torch.float64)
    q, k, v = attn.to_qkv(attn.norm(x)).chunk(3, dim=-1)
    q, k, v = (t.reshape(2, 7, 3, 4).transpose(1, 2) for t in (q, k, v))
    want = attn.to_out(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(2, 7, 12))
    torch.testing.assert_close(attn(x), want)


def test_peer_vit_pools_and_checks_input():
    torch.manual_seed(0)
    cls = peer_vit.PeerViT(image_size=8, patch_size=4, num_classes=3, dim=8, depth=1, heads=2,
                           dim_head=4, mlp_dim=16)
    mean = peer_vit.PeerViT(image_size=8, patch_size=4, num_classes=3, dim=8, depth=1, heads=2,
                            dim_head=4, mlp_dim=16, pool="mean")
    mean.load_state_dict(cls.state_dict())
    x = torch.randn(2, 3, 8, 8)
    assert not torch.allclose(cls(x), mean(x))
    with pytest.raises(ValueError, match="img must be"):
        cls(torch.randn(2, 3, 16, 16))
    with pytest.raises(ValueError, match="pool"):
        peer_vit.PeerViT(image_size=8, patch_size=4, num_classes=3, dim=8, depth=1, heads=2,
                         mlp_dim=16, pool="max")
    with pytest.raises(ValueError, match="multiple of patch_size"):
        peer_vit.PeerViT(image_size=10, patch_size=4, num_classes=3, dim=8, depth=1, heads=2,
                         mlp_dim=16)


# --------------------------------------------------------------------------- recorded runs
BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
RECORDED = sorted(p.name for p in BENCHMARKS.glob("train_step*.json"))


def test_recorded_runs_are_there():
    assert {"train_step_cifar.json", "train_step_variants.json"} <= set(RECORDED)


@pytest.mark.parametrize("name", RECORDED)
def test_recorded_runs_round_trip_and_render_as_committed(name):
    raw = json.loads((BENCHMARKS / name).read_text(encoding="utf-8"))
    result = TrainStepResult.from_json(raw)
    assert result.to_json() == raw
    committed = (BENCHMARKS / "models.md").read_text(encoding="utf-8")
    rows = [line for line in markdown_table(result).splitlines() if line.startswith("|")]
    assert len(rows) >= 3 and not set(rows) - set(committed.splitlines())  # header, rule, rows
