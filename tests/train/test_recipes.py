"""The registered models' training recipes reach the run, and flags win over them.

The recipes themselves were chosen by measurement (``benchmarks/recipes.md``); these tests
check the plumbing for the real registrations: ``ModelConfig.recipe`` -> ``resolve`` ->
``TrainConfig`` -> the AdamW parameter groups, and an explicit flag overriding each value.
"""

from __future__ import annotations

import argparse

import pytest

import beyond_attention.models  # noqa: F401  (registers the model families)
from beyond_attention.commands.train import add_arguments, config_from_args
from beyond_attention.models._registry import RECIPE_KEYS, ModelConfig, get_model_config
from beyond_attention.train import TrainConfig, engine, train
from beyond_attention.train.config import DEFAULT_MODEL
from beyond_attention.train.recipe import FALLBACK, resolve

MEASURED = ("lavit_tiny_cifar", "vit_tiny_cifar", "eamlp_cifar", "lambda_resnet26_cifar",
            "resnet26_cifar")
"""The models whose recipes were measured on Fashion-MNIST (benchmarks/recipes.md)."""

# A value no recipe uses, per setting, to check that a flag overrides the recipe.
OVERRIDE = {"lr": "0.0777", "weight_decay": "0.333", "warmup": "0.777", "drop_path": "0.0555",
            "label_smoothing": "0.0222", "batch_size": "48", "crop_padding": "3"}


def _parse(argv: list[str]) -> TrainConfig:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return config_from_args(parser.parse_args(argv))


@pytest.mark.parametrize("name", MEASURED)
def test_a_run_without_flags_takes_the_models_recipe(name):
    recipe = get_model_config(name).recipe
    assert recipe and set(recipe) <= set(RECIPE_KEYS)
    cfg = resolve(_parse(["--model", name]))
    for key, fallback in FALLBACK.items():
        assert getattr(cfg, key) == recipe.get(key, fallback), key


@pytest.mark.parametrize("name", MEASURED)
@pytest.mark.parametrize("key", sorted(OVERRIDE))
def test_a_flag_overrides_the_recipe(name, key):
    flag = "--" + key.replace("_", "-")
    cfg = resolve(_parse(["--model", name, flag, OVERRIDE[key]]))
    assert getattr(cfg, key) == float(OVERRIDE[key])
    recipe = get_model_config(name).recipe
    for other in set(FALLBACK) - {key}:  # the other settings still come from the recipe
        assert getattr(cfg, other) == recipe.get(other, FALLBACK[other]), other


def test_the_default_model_has_a_recipe_that_differs_from_the_fallback():
    recipe = get_model_config(DEFAULT_MODEL).recipe
    assert any(recipe.get(k, v) != v for k, v in FALLBACK.items())


@pytest.mark.parametrize("lr_flag", [None, 0.0314])
def test_the_recipe_reaches_the_optimizer(fashion_dir, tmp_path, monkeypatch, lr_flag):
    """One step of the default model: the AdamW groups carry the recipe's lr and decay,
    unless a flag gives the lr."""
    built = []

    def spy(model, lr, weight_decay):
        opt = real(model, lr, weight_decay)
        built.append([(g["lr"], g["weight_decay"]) for g in opt.param_groups])
        return opt

    real = engine.build_optimizer
    monkeypatch.setattr(engine, "build_optimizer", spy)
    recipe = get_model_config(DEFAULT_MODEL).recipe
    cfg = TrainConfig(model=DEFAULT_MODEL, data=str(fashion_dir), out=str(tmp_path / "r"),
                      batch_size=8, limit_train=8, limit_val=8, max_steps_per_epoch=1,
                      quiet=True, workers=0, device="cpu", save_every=0, lr=lr_flag)
    final = train(cfg)
    lr = recipe.get("lr", FALLBACK["lr"]) if lr_flag is None else lr_flag
    wd = recipe.get("weight_decay", FALLBACK["weight_decay"])
    assert built == [[(lr, wd), (lr, 0.0)]]
    assert final["config"]["lr"] == lr and final["config"]["weight_decay"] == wd
    assert final["config"]["warmup"] == recipe.get("warmup", FALLBACK["warmup"])


@pytest.mark.parametrize("recipe", [{"batch_size": 32.0}, {"batch_size": 0}, {"batch_size": True},
                                    {"crop_padding": -1}, {"crop_padding": 2.0}])
def test_recipe_counts_must_be_integers_in_range(recipe):
    with pytest.raises(ValueError, match="recipe of 'bad' must map .*batch_size an integer"):
        ModelConfig(name="bad", recipe=recipe)
    ModelConfig(name="good", recipe={"batch_size": 1, "crop_padding": 0})


def test_a_resumed_runs_saved_settings_come_before_the_recipe():
    saved = {"lr": 0.0123, "batch_size": 96, "crop_padding": None}
    cfg = resolve(_parse(["--model", "lavit_tiny_cifar", "--warmup", "0.5"]), saved)
    recipe = get_model_config("lavit_tiny_cifar").recipe
    assert cfg.lr == 0.0123 and cfg.batch_size == 96  # saved, over the recipe
    assert cfg.warmup == 0.5  # the flag, over both
    assert cfg.crop_padding == recipe["crop_padding"]  # nothing saved: the recipe


@pytest.mark.parametrize("amp", ["half", 1, True])
def test_a_recipes_amp_must_be_a_mode_of_the_flag(amp):
    with pytest.raises(ValueError, match="amp one of off, auto, native, bf16, fp16"):
        ModelConfig(name="bad", recipe={"amp": amp})
    assert ModelConfig(name="good", recipe={"amp": "native"}).recipe["amp"] == "native"


def test_an_amp_flag_overrides_the_recipe():
    recipe = get_model_config(DEFAULT_MODEL).recipe
    assert resolve(_parse([])).amp == recipe.get("amp", FALLBACK["amp"])
    assert resolve(_parse(["--amp", "off"])).amp == "off"
    assert resolve(_parse(["--amp"])).amp == "auto"
