"""``beyond-attention models``: the listing of registered models beside the papers."""

from __future__ import annotations

import json

import torch

from beyond_attention import create_model, get_model_config
from beyond_attention.cli import main


def test_json_listing_matches_the_models(capsys):
    assert main(["models", "vit_tiny*", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    rows = {r["name"]: r for r in data["models"]}
    assert set(rows) == {"vit_tiny", "vit_tiny_cifar"}
    assert "not counted" in data["note"]
    row = rows["vit_tiny_cifar"]
    model = create_model("vit_tiny_cifar")
    assert round(row["params_m"] * 1e6) == sum(p.numel() for p in model.parameters())
    assert row["input_size"] == [3, 32, 32] and row["fixed_input_size"] is True
    tiny = rows["vit_tiny"]
    assert tiny["paper_params_m"] == get_model_config("vit_tiny").reported_params_m
    assert tiny["paper_top1"] == 72.2
    assert abs(tiny["gmacs"] - 1.2536832) < 1e-6  # the DeiT-Ti formula (tests/models)
    assert row["error"] is None


def test_table_without_flops(capsys):
    assert main(["models", "eamlp_1*", "--no-flops"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["model", "params(M)", "paper"]
    eamlp_14 = next(line for line in lines if line.startswith("eamlp_14"))
    assert eamlp_14.split()[1:3] == ["29.80", "29.88"]
    assert "not counted" in out


def test_no_match_is_an_error(capsys):
    assert main(["models", "no_such_model*"]) == 1
    assert "no registered model" in capsys.readouterr().out


def test_listing_does_not_leave_meta_defaults():
    main(["models", "vit_tiny_cifar", "--no-flops"])
    assert torch.empty(1).device.type == "cpu"


def test_demo_table_and_the_carried_less_layer(capsys):
    """``demo`` measures the less-attention layer on the scores of the layer before it."""
    assert main(["demo", "--mixers", "self", "less", "--grid", "4", "--dim", "16"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("mixer"))
    assert lines[header].split() == ["mixer", "grid", "input", "output", "params", "GMACs",
                                     "fwd", "ms"]
    rows = {line.split()[0]: line for line in lines[header + 2 :]}
    assert set(rows) == {"self", "less"} and "4x4" in rows["less"]
    assert main(["demo", "--mixers", "less", "--grid", "3", "--dim", "8", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["output"] == row["input"] == [1, 9, 8] and row["finite"]
