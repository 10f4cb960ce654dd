"""The ``train`` command's flags, recorded: names, defaults, choices and the settings they
make. The flags are generated from :class:`TrainConfig`; these tests pin what a user
types and gets."""

from __future__ import annotations

import argparse

import pytest

from beyond_attention.commands.train import add_arguments, config_from_args
from beyond_attention.train import DEFAULT_MODEL, TrainConfig

DATASETS = ("auto", "cifar10", "cifar100", "mnist", "fashion-mnist", "imagefolder",
            "procedural-points")

# (group, option, dest, default, const, nargs, choices, metavar, action)
FLAGS = [
    ("model and data", "--model", "model", "lavit_tiny_cifar", None, None, None, None, "store"),
    ("model and data", "--model-arg", "model_arg", [], None, None, None, "KEY=VALUE", "append"),
    ("model and data", "--data", "data", None, None, None, None, "PATH", "store"),
    ("model and data", "--dataset", "dataset", "auto", None, None, DATASETS, None, "store"),
    ("model and data", "--train-split", "train_split", "train", None, None, None, None, "store"),
    ("model and data", "--val-split", "val_split", None, None, None, None, None, "store"),
    ("model and data", "--limit-train", "limit_train", 10000, None, None, None, "N", "store"),
    ("model and data", "--limit-val", "limit_val", 2000, None, None, None, "N", "store"),
    ("model and data", "--img-size", "img_size", None, None, None, None, None, "store"),
    ("model and data", "--download", "download", False, True, 0, None, None, "store_true"),
    ("model and data", "--cache-dir", "cache_dir", None, None, None, None, None, "store"),
    ("model and data", "--no-cache", "no_cache", False, True, 0, None, None, "store_true"),
    ("model and data", "--num-points", "num_points", None, None, None, None, "N", "store"),
    ("model and data", "--crop-size", "crop_size", None, None, None, None, "PX", "store"),
    ("model and data", "--eval-mode", "eval_mode", "whole", None, None, ("whole", "slide"),
     None, "store"),
    ("optimisation", "--epochs", "epochs", 1, None, None, None, None, "store"),
    ("optimisation", "--budget-minutes", "budget_minutes", None, None, None, None, "M",
     "store"),
    ("optimisation", "--batch-size", "batch_size", None, None, None, None, None, "store"),
    ("optimisation", "--eval-batch-size", "eval_batch_size", None, None, None, None, None,
     "store"),
    ("optimisation", "--lr", "lr", None, None, None, None, None, "store"),
    ("optimisation", "--min-lr", "min_lr", 1e-05, None, None, None, None, "store"),
    ("optimisation", "--weight-decay", "weight_decay", None, None, None, None, None, "store"),
    ("optimisation", "--warmup", "warmup", None, None, None, None, None, "store"),
    ("optimisation", "--clip-grad", "clip_grad", 1.0, None, None, None, None, "store"),
    ("optimisation", "--label-smoothing", "label_smoothing", None, None, None, None, None,
     "store"),
    ("optimisation", "--drop-path", "drop_path", None, None, None, None, None, "store"),
    ("optimisation", "--ema", "ema", 0.0, 0.999, "?", None, "DECAY", "store"),
    ("optimisation", "--aux-weight", "aux_weight", 1.0, None, None, None, None, "store"),
    ("optimisation", "--amp", "amp", None, "auto", "?", ("off", "auto", "native", "bf16", "fp16"),
     None, "store"),
    ("optimisation", "--seed", "seed", 0, None, None, None, None, "store"),
    ("augmentation", "--crop-padding", "crop_padding", None, None, None, None, None, "store"),
    ("augmentation", "--hflip", "hflip", None, None, None, None, "P", "store"),
    ("augmentation", "--randaugment", "randaugment", None, (2, 9), "?", None, "N,M", "store"),
    ("augmentation", "--trivialaugment", "trivialaugment", False, True, 0, None, None,
     "store_true"),
    ("augmentation", "--seg-scale", "seg_scale", (0.5, 2.0), None, 2, None, ("LOW", "HIGH"),
     "store"),
    ("augmentation", "--mixup", "mixup", 0.0, None, None, None, None, "store"),
    ("augmentation", "--cutmix", "cutmix", 0.0, None, None, None, None, "store"),
    ("run", "--out", "out", None, None, None, None, "DIR", "store"),
    ("run", "--overwrite", "overwrite", False, True, 0, None, None, "store_true"),
    ("run", "--resume", "resume", None, "auto", "?", None, "PATH", "store"),
    ("run", "--save-every", "save_every", 200, None, None, None, "STEPS", "store"),
    ("run", "--max-steps-per-epoch", "max_steps_per_epoch", None, None, None, None, None,
     "store"),
    ("run", "--workers", "workers", 1, None, None, None, None, "store"),
    ("run", "--device", "device", "auto", None, None, None, None, "store"),
    ("run", "--threads", "threads", None, None, None, None, None, "store"),
    ("run", "--channels-last", "--no-channels-last", "channels_last", None, None, 0, None,
     None, "boolean"),
    ("run", "--log-every", "log_every", 50, None, None, None, "STEPS", "store"),
    ("run", "--quiet", "quiet", False, True, 0, None, None, "store_true"),
]

_ACTIONS = {argparse._StoreAction: "store", argparse._StoreTrueAction: "store_true",
            argparse._AppendAction: "append", argparse.BooleanOptionalAction: "boolean"}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="train")
    add_arguments(p)
    return p


def _parse(argv: list[str]) -> TrainConfig:
    return config_from_args(_parser().parse_args(argv))


def test_flags_names_defaults_and_choices_are_unchanged():
    p = _parser()
    found = []
    for group in p._action_groups:
        for a in group._group_actions:
            if isinstance(a, argparse._HelpAction):
                continue
            found.append((group.title, *a.option_strings, a.dest, a.default, a.const, a.nargs,
                          tuple(a.choices) if a.choices else None, a.metavar,
                          _ACTIONS[type(a)]))
    assert found == FLAGS
    exclusive = [sorted(a.dest for a in g._group_actions) for g in p._mutually_exclusive_groups]
    assert exclusive == [["randaugment", "trivialaugment"]]


def test_no_flags_give_the_default_config():
    cfg = _parse([])
    assert cfg == TrainConfig()
    assert cfg.model == DEFAULT_MODEL and cfg.model_kwargs == {}


def test_flags_with_optional_values_and_converters():
    cfg = _parse(["--model", "vit_tiny", "--model-arg", "depth=3", "--model-arg", "name=abc",
                  "--model-arg", "dims=[1, 2]", "--limit-train", "0", "--limit-val", "5",
                  "--epochs", "3", "--lr", "0.1", "--img-size", "32", "--download", "--quiet",
                  "--eval-batch-size", "64", "--threads", "2", "--max-steps-per-epoch", "7",
                  "--ema", "--amp", "--randaugment", "--resume"])
    assert cfg == TrainConfig(
        model="vit_tiny", model_kwargs={"depth": 3, "name": "abc", "dims": [1, 2]},
        limit_train=None, limit_val=5, epochs=3, lr=0.1, img_size=32, download=True,
        quiet=True, eval_batch_size=64, threads=2, max_steps_per_epoch=7, ema=0.999,
        amp="auto", randaugment=(2, 9), resume="auto")
    assert isinstance(cfg.lr, float) and isinstance(cfg.epochs, int)


def test_flags_with_given_values():
    cfg = _parse(["--ema", "0.5", "--amp", "bf16", "--randaugment", "3,7", "--resume",
                  "runs/x", "--mixup", "0.8", "--cutmix", "1", "--val-split", "none",
                  "--dataset", "mnist", "--save-every", "0", "--data", "d", "--out", "o",
                  "--seed", "4", "--hflip", "0", "--crop-padding", "2", "--warmup", "1.5",
                  "--device", "cpu", "--workers", "0", "--batch-size", "16"])
    assert cfg == TrainConfig(
        ema=0.5, amp="bf16", randaugment=(3, 7), resume="runs/x", mixup=0.8, cutmix=1.0,
        val_split="none", dataset="mnist", save_every=0, data="d", out="o", seed=4, hflip=0.0,
        crop_padding=2, warmup=1.5, device="cpu", workers=0, batch_size=16)
    cfg = _parse(["--trivialaugment", "--train-split", "test", "--cache-dir", "c",
                  "--weight-decay", "0", "--min-lr", "0", "--clip-grad", "0", "--aux-weight",
                  "0.5", "--drop-path", "0.1", "--label-smoothing", "0"])
    assert cfg == TrainConfig(
        trivialaugment=True, train_split="test", cache_dir="c", weight_decay=0.0, min_lr=0.0,
        clip_grad=0.0, aux_weight=0.5, drop_path=0.1, label_smoothing=0.0)


def test_channels_last_is_unset_on_or_off():
    assert _parse([]).channels_last is None  # the model's recipe decides
    assert _parse(["--channels-last"]).channels_last is True
    assert _parse(["--no-channels-last"]).channels_last is False
    assert _parse(["--channels-last", "--no-channels-last"]).channels_last is False


@pytest.mark.parametrize("argv, message", [
    (["--limit-train", "-1"], "expected a count >= 0"),
    (["--randaugment", "2"], "expected N,M"),
    (["--model-arg", "depth"], "expected KEY=VALUE"),
    (["--amp", "half"], "invalid choice"),
    (["--dataset", "imagenet"], "invalid choice"),
    (["--epochs", "1.5"], "invalid int value"),
    (["--randaugment", "--trivialaugment"], "not allowed with"),
])
def test_bad_flags_are_refused_with_the_reason(argv, message, capsys):
    with pytest.raises(SystemExit):
        _parse(argv)
    assert message in capsys.readouterr().err


def test_help_shows_every_default(capsys):
    from beyond_attention.cli import main

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    p = _parser()
    helps = [a.help for a in p._actions if not isinstance(a, argparse._HelpAction)]
    assert len(helps) == len(FLAGS) and all("(default: " in h for h in helps)
    squeezed = text.replace(" ", "")  # argparse wraps lines at hyphens too
    for shown in ("(default: lavit_tiny_cifar)", "(default: 10000)",
                  "(default: the model's recipe, else 2e-3)",
                  "(default: off)", "(default: a new runs/MODEL-DATASET, -2, -3, ...)",
                  "--no-channels-last keeps the default layout (default: the model's "
                  "recipe, else off)",
                  "(default: 200)", "(default: 50)"):
        assert shown.replace(" ", "") in squeezed, shown
