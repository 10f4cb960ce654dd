"""Smoke runs of ``beyond-attention bench`` on tiny sizes: files and their structure."""

from __future__ import annotations

import json

import pytest
import torch

from beyond_attention.cli import main
from beyond_attention.commands.bench import grid_from_tokens, parse_grid


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_grid_parsing():
    assert parse_grid("28") == (28, 28)
    assert parse_grid("14x20") == (14, 20)
    assert grid_from_tokens(3136) == (56, 56)
    with pytest.raises(ValueError, match="--grid"):
        parse_grid("0")
    with pytest.raises(ValueError, match="--grid"):
        parse_grid("axb")
    with pytest.raises(ValueError, match="--tokens"):
        grid_from_tokens(200)


def test_bench_mixers_quick(tmp_path, one_thread, capsys):
    out = tmp_path / "report"
    js = tmp_path / "mixers.json"
    assert (
        main(["bench", "mixers", "--quick", "--threads", "1", "--json", str(js), "--out", str(out)])
        == 0
    )
    printed = capsys.readouterr().out
    assert "crossovers vs SDPA" in printed and "target ea_forward_vs_gemms" in printed

    result = json.loads(js.read_text())
    assert result["kind"] == "mixers"
    for key in ("cpu", "cpu_count", "torch", "torch_threads", "device"):
        assert key in result["machine"]
    assert result["machine"]["torch_threads"] == 1
    assert result["command"].startswith("beyond-attention bench mixers --dim 32")
    mixers = set(result["mixers"])
    assert {
        "self",
        "naive",
        "ea_gemms",
        "external",
        "external_mh",
        "lambda",
        "lambda_global",
        "mlp_mixer",
        "feedforward",
    } <= mixers
    grids = result["settings"]["grids"]
    assert len(result["points"]) == len(mixers) * len(grids)
    for p in result["points"]:
        assert p["status"] in ("ok", "oom", "too_slow", "skipped", "error")
        if p["mixer"] in ("self", "external", "ea_gemms", "lambda", "less", "less_sr"):
            assert p["status"] == "ok", p
        if p["status"] == "ok":
            assert p["params"] > 0 and p["flops"] > 0 and p["activation_bytes"] > 0
            assert p["forward_ms"]["n"] >= 1 and p["train_ms"]["median"] > 0
            if result["mixers"][p["mixer"]]["vs_self"]:
                assert p["vs_self"]["forward"]["ratio"]["median"] > 0
    # the SDPA FLOPs are counted (fused CPU kernel) and equal the naive formulation's
    flops = {(p["mixer"], p["tokens"]): p.get("flops") for p in result["points"]}
    for n in {p["tokens"] for p in result["points"]}:
        assert flops[("self", n)] == flops[("naive", n)]
    names = {t["name"] for t in result["targets"]}
    assert {"ea_forward_vs_gemms", "ea_train_vs_gemms"} <= names
    assert any(n.startswith("lambda_global_") for n in names)
    assert {c["metric"] for c in result["crossovers"]} == {"flops", "forward", "train"}

    md = (out / "mixers.md").read_text()
    assert "## Targets" in md and "## Crossovers" in md and "## Batch 1" in md
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == ["mixers_b1_latency.png", "mixers_b1_memory.png"]
    for name in pngs:
        assert f"]({name})" in md
        assert (out / name).read_bytes()[:4] == b"\x89PNG"

    # re-rendering the recorded run gives the same report, measuring nothing
    again = tmp_path / "again"
    assert main(["bench", "mixers", "--from-json", str(js), "--out", str(again)]) == 0
    assert (again / "mixers.md").read_text() == md
    assert sorted(p.name for p in again.glob("*.png")) == pngs


def test_bench_mixers_records_budget_skips(tmp_path, one_thread):
    # a zero memory budget: every point after the first is skipped, not run
    js = tmp_path / "m.json"
    assert (
        main(
            [
                "bench",
                "mixers",
                "--quick",
                "--threads",
                "1",
                "--mixers",
                "external",
                "--no-targets",
                "--max-memory-gb",
                "0",
                "--json",
                str(js),
            ]
        )
        == 0
    )
    points = json.loads(js.read_text())["points"]
    ext = [p for p in points if p["mixer"] == "external"]
    assert [p["status"] for p in ext] == ["ok", "skipped"]
    assert "--max-memory-gb" in ext[1]["reason"]


def test_bench_models_quick(tmp_path, one_thread):
    js = tmp_path / "models.json"
    assert (
        main(
            [
                "bench",
                "models",
                "vit_tiny_cifar",
                "--quick",
                "--threads",
                "1",
                "--json",
                str(js),
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    result = json.loads(js.read_text())
    assert result["gemm"]["flops_per_s"] > 0
    (row,) = result["models"]
    assert row["model"] == "vit_tiny_cifar" and row["status"] == "ok"
    assert row["params"] > 0 and row["gmacs"] > 0
    assert row["infer_img_s"] > 0 and row["train_img_s"] > 0
    assert row["infer_mfu"] > 0 and row["train_mfu"] > 0
    md = (tmp_path / "models.md").read_text()
    assert "vit_tiny_cifar" in md and "MFU" in md
    again = tmp_path / "again"
    assert main(["bench", "models", "--from-json", str(js), "--out", str(again)]) == 0
    assert (again / "models.md").read_text() == md


def test_bad_arguments(capsys):
    # the command line turns these ValueErrors into one "error:" line and status 1
    for argv, shown in ((["bench", "mixers", "--quick", "--tokens", "200"], "--tokens"),
                        (["bench", "mixers", "--quick", "--mixers", "nope", "--no-targets"],
                         "unknown mixers"),
                        (["bench", "models", "no_such_model*", "--quick"], "pattern")):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert err.startswith("error: ") and shown in err, err
        with pytest.raises(ValueError, match=shown.replace("*", "")):
            main(["--debug", *argv])


def test_bench_mixers_targets_only(tmp_path, one_thread):
    js = tmp_path / "t.json"
    assert (
        main(
            [
                "bench",
                "mixers",
                "--quick",
                "--threads",
                "1",
                "--targets-only",
                "--json",
                str(js),
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    result = json.loads(js.read_text())
    assert result["points"] == [] and result["crossovers"] == []
    targets = {t["name"]: t for t in result["targets"]}
    ea = targets["ea_forward_vs_gemms"]
    assert ea["op"] == "<=" and ea["target"] == 1.10 and ea["ratio"]["ratio"]["n"] >= 3
    assert isinstance(ea["passed"], bool)
    assert "--targets-only" in result["command"]
    assert list(tmp_path.glob("*.png")) == []
    assert "## Targets" in (tmp_path / "mixers.md").read_text()


@pytest.mark.parametrize("name, input_size, shown", [
    ("spct", [3, 1024], "1024 pts"),  # a point cloud; its head's BatchNorm needs two clouds
    ("eanet_resnet26_small_noattn", [3, 128, 128], "128x128"),  # dense (per-pixel) logits
])
def test_bench_models_point_clouds_and_segmentation(name, input_size, shown, tmp_path,
                                                     one_thread):
    js = tmp_path / "models.json"
    argv = ["bench", "models", name, "--quick", "--threads", "1", "--json", str(js), "--out",
            str(tmp_path)]
    assert main(argv) == 0
    (row,) = json.loads(js.read_text())["models"]
    assert row["status"] == "ok" and row["input_size"] == input_size, row
    assert row["params"] > 0 and row["gmacs"] > 0 and row["activation_bytes_per_image"] > 0
    assert row["infer_ms"]["median"] > 0 and row["train_img_s"] > 0
    md = (tmp_path / "models.md").read_text()
    assert f"| {name} | {shown} |" in md and "infer ms" in md


def test_random_targets_follow_the_logits():
    from beyond_attention.bench.models import random_targets

    g = torch.Generator().manual_seed(0)
    assert random_targets((4, 10), 10, g).shape == (4,)
    dense = random_targets((2, 11, 16, 8), 11, g)
    assert dense.shape == (2, 16, 8) and int(dense.max()) < 11 and int(dense.min()) >= 0
    assert random_targets((2, 50, 2048), 50, g).shape == (2, 2048)
    with pytest.raises(ValueError, match="logits must be"):
        random_targets((4,), 10, g)
