"""The shared model contract (``models/_contract.py``) and the registry around it: one
``reset_classifier``, one index rule for ``forward_intermediates``, one input check, one
``to_2tuple``, the truthful ``fixed_input_size``, tasks and ``example_input``."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from beyond_attention import create_model, get_model_config, list_models
from beyond_attention.cli import main
from beyond_attention.commands.models import substring_pattern
from beyond_attention.models import TASKS, ModelConfig, example_input
from beyond_attention.models._contract import (
    check_input_size,
    check_num_classes,
    feature_take_indices,
    to_2tuple,
)

# one small member of every family, with its classifier attribute
FAMILIES = {
    "vit_tiny_cifar": "head",
    "eamlp_cifar": "head",
    "resnet26_cifar": "fc",
    "lambda_resnet26_cifar": "fc",
    "lavit_tiny_cifar": "head",
    "eanet_resnet50": "classifier",
}
WITH_INTERMEDIATES = ["vit_tiny_cifar", "eamlp_cifar", "resnet26_cifar", "lavit_tiny_cifar"]


def _small(name: str, **kwargs) -> nn.Module:
    if name == "eanet_resnet50":  # the smallest EANet is still large: shrink its widths
        kwargs = {"widths": (4, 4, 8, 8), "stem_width": 4, "head_width": 8, "head_out": 8,
                  "memory_size": 4, "img_size": 32, **kwargs}
    return create_model(name, **kwargs)


# ----------------------------------------------------------------- reset_classifier
@pytest.mark.parametrize("name", FAMILIES)
def test_reset_classifier_keeps_dtype_float64(name):
    torch.manual_seed(0)
    model = _small(name).double().eval()
    model.reset_classifier(3)
    head = getattr(model, FAMILIES[name])
    assert head is model.get_classifier()
    assert all(p.dtype == torch.float64 for p in head.parameters())
    c, h, w = model.config.input_size
    h = w = 32
    with torch.no_grad():
        out = model(torch.randn(2, c, h, w, dtype=torch.float64))
    assert out.shape[:2] == (2, 3) and out.dtype == torch.float64
    assert model.num_classes == 3


@pytest.mark.parametrize("name", FAMILIES)
def test_reset_classifier_keeps_the_meta_device(name):
    with torch.device("meta"):
        model = create_model(name)
    model.reset_classifier(5)
    head = model.get_classifier()
    assert {p.device.type for p in head.parameters()} == {"meta"}
    assert sum(p.numel() for p in head.parameters()) > 0


@pytest.mark.parametrize("name", FAMILIES)
def test_reset_classifier_rejects_negative_and_zero_gives_identity(name):
    with torch.device("meta"):
        model = create_model(name)
    with pytest.raises(ValueError, match="num_classes must be >= 0"):
        model.reset_classifier(-1)
    with pytest.raises(ValueError, match="num_classes"):
        model.reset_classifier(2.5)  # type: ignore[arg-type]
    model.reset_classifier(0)
    assert isinstance(model.get_classifier(), nn.Identity) and model.num_classes == 0


@pytest.mark.parametrize("name", FAMILIES)
def test_building_with_negative_num_classes_is_an_error(name):
    with torch.device("meta"), pytest.raises(ValueError, match="num_classes"):
        create_model(name, num_classes=-3)


# ----------------------------------------------------------------- intermediates
def test_feature_take_indices():
    assert feature_take_indices(4) == ([0, 1, 2, 3], 3)
    assert feature_take_indices(4, 2) == ([2, 3], 3)
    assert feature_take_indices(4, [-1, 0]) == ([0, 3], 3)
    assert feature_take_indices(4, (1,)) == ([1], 1)
    for bad, match in [
        (0, r"\[1, 4\]"), (5, r"\[1, 4\]"), ([4], r"\[-4, 3\]"), ([-5], r"\[-4, 3\]"),
        ([1, 1], "repeat"), ([3, -1], "repeat"), ([], "at least one"),
    ]:
        with pytest.raises(ValueError, match="indices") as err:
            feature_take_indices(4, bad)
        assert err.match(match)


@pytest.mark.parametrize("name", WITH_INTERMEDIATES)
def test_forward_intermediates_same_rule_in_every_model(name):
    torch.manual_seed(0)
    model = create_model(name).eval()
    x = torch.randn(1, 3, 32, 32)
    n = len(model.forward_intermediates(x, intermediates_only=True))
    with torch.no_grad():
        last = model.forward_intermediates(x, [-1], intermediates_only=True)
        both = model.forward_intermediates(x, [0, n - 1], intermediates_only=True)
        final, every = model.forward_intermediates(x)
    torch.testing.assert_close(last[0], both[1])
    assert len(every) == n
    with torch.no_grad():
        torch.testing.assert_close(final, model.forward_features(x))
    for bad in ([n], [-n - 1], [0, 0], [1, 1 - n]):  # out of range, repeated (also after %)
        with pytest.raises(ValueError, match="indices"):
            model.forward_intermediates(x, bad)


# ----------------------------------------------------------------- input checks
def test_check_input_size_messages():
    x = torch.zeros(2, 3, 32, 32)
    check_input_size(x, 3, (32, 32), fixed=True)
    check_input_size(torch.zeros(1, 3, 48, 64), 3, (32, 32), fixed=False, divisor=16)
    with pytest.raises(ValueError, match="4 dimensions"):
        check_input_size(torch.zeros(3, 32, 32), 3, (32, 32), fixed=True)
    with pytest.raises(ValueError, match="3 channels"):
        check_input_size(torch.zeros(1, 1, 32, 32), 3, (32, 32), fixed=True)
    with pytest.raises(ValueError, match=r"img_size \(32, 32\).*img_size=\(40, 40\)"):
        check_input_size(torch.zeros(1, 3, 40, 40), 3, (32, 32), fixed=True)
    with pytest.raises(ValueError, match="divisible by patch_size"):
        check_input_size(torch.zeros(1, 3, 40, 40), 3, (32, 32), False, 16, "patch_size")
    with pytest.raises(TypeError, match="torch.Tensor"):
        check_input_size([1, 2], 3, (32, 32), fixed=True)  # type: ignore[arg-type]


def test_to_2tuple_and_num_classes():
    assert to_2tuple(7) == (7, 7) and to_2tuple((3, 5)) == (3, 5) and to_2tuple([3, 5]) == (3, 5)
    for bad in (0, (3,), (3, 0), (3, 4, 5), (2.5, 3), True):
        with pytest.raises(ValueError, match="img_size"):
            to_2tuple(bad)
    assert check_num_classes(0) == 0
    with pytest.raises(ValueError, match="num_classes"):
        check_num_classes(-1)


# ----------------------------------------------------------------- fixed_input_size
def test_fixed_input_size_is_read_from_the_built_model():
    registered = get_model_config("lambda_resnet26_cifar")
    assert registered.fixed_input_size is False
    model = create_model("lambda_resnet26_cifar", r=None, dim_k=4)
    assert model.fixed_input_size is True
    assert model.config.fixed_input_size is True
    assert get_model_config(model).fixed_input_size is True
    assert get_model_config("lambda_resnet26_cifar").fixed_input_size is False  # untouched
    with pytest.raises(ValueError, match=r"\(32, 32\)"):
        model(torch.randn(1, 3, 48, 48))
    glob = create_model("lambda_resnet26_cifar_global", r=7, dim_k=4)
    assert glob.fixed_input_size is False and glob.config.fixed_input_size is False


@pytest.mark.parametrize("name", list_models())
def test_registered_fixed_input_size_matches_the_default_model(name):
    with torch.device("meta"):
        model = create_model(name)
    assert model.fixed_input_size == get_model_config(name).fixed_input_size
    assert model.config is get_model_config(name)


def test_get_model_config_of_a_model_without_config():
    with pytest.raises(ValueError, match="create_model"):
        get_model_config(nn.Linear(2, 2))


# ----------------------------------------------------------------- tasks and inputs
def test_tasks():
    assert TASKS == (
        "image_classification", "semantic_segmentation", "pointcloud_classification",
        "pointcloud_part_segmentation",
    )
    assert {get_model_config(n).task for n in list_models("eanet_*")} == {"semantic_segmentation"}
    others = set(list_models()) - set(list_models("eanet_*"))
    assert {get_model_config(n).task for n in others} <= set(TASKS)
    assert get_model_config("vit_tiny").task == "image_classification"
    with pytest.raises(ValueError, match="task must be one of"):
        ModelConfig(name="x", task="detection")
    with pytest.raises(ValueError, match=r"\(3, N\)"):
        ModelConfig(name="x", task="pointcloud_classification", input_size=(3, 32, 32))
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        ModelConfig(name="x", input_size=(3, 1024))


def test_example_input_shapes():
    assert example_input("vit_tiny_cifar").shape == (2, 3, 32, 32)
    assert example_input("eanet_resnet50", 1).shape == (1, 3, 512, 512)
    assert example_input(get_model_config("vit_tiny"), 3, img_size=(32, 48)).shape == (
        3, 3, 32, 48
    )
    assert example_input("vit_tiny_cifar", in_chans=1, img_size=28).shape == (2, 1, 28, 28)
    points = ModelConfig(name="pc", task="pointcloud_classification", input_size=(3, 1024))
    assert example_input(points).shape == (2, 3, 1024)
    assert example_input(points, 4, num_points=256).shape == (4, 3, 256)
    gen = torch.Generator().manual_seed(0)
    x = example_input("vit_tiny_cifar", dtype=torch.float64, generator=gen)
    assert x.dtype == torch.float64
    with pytest.raises(ValueError, match="num_points"):
        example_input("vit_tiny_cifar", num_points=5)
    with pytest.raises(ValueError, match="img_size"):
        example_input(points, img_size=32)
    with pytest.raises(ValueError, match="batch"):
        example_input("vit_tiny_cifar", 0)


# ----------------------------------------------------------------- names
def test_models_command_pattern_without_wildcards_matches_as_a_substring(capsys):
    assert substring_pattern("lambda") == "*lambda*"
    assert substring_pattern("lambda*") == "lambda*" and substring_pattern("vit_?") == "vit_?"
    assert list_models("lambda") == []  # list_models itself stays shell-style
    assert main(["models", "lambda", "--no-flops"]) == 0
    out = capsys.readouterr().out
    listed = [line.split()[0] for line in out.splitlines()[2:] if line.startswith("lambda")]
    assert listed == list_models("*lambda*") and len(listed) == 7
    assert main(["models", "resnet26", "--no-flops"]) == 0
    out = capsys.readouterr().out
    assert "lambda_resnet26_cifar_global" in out and "resnet26_cifar" in out
    assert main(["models", "no_such_model"]) == 1


def test_models_help_documents_the_substring_rule(capsys):
    with pytest.raises(SystemExit):
        main(["models", "--help"])
    assert "substring" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["vit_tiny_cifar", "pct_ea_partseg"])
def test_an_argument_the_family_does_not_take_is_named(name):
    with pytest.raises(ValueError, match=rf"model {name} takes no argument 'samplez'"):
        create_model(name, samplez=[128, 64])


def test_a_type_error_inside_a_constructor_is_not_renamed(monkeypatch):
    from beyond_attention.models import _registry

    def broken(**kwargs):
        raise TypeError("unsupported operand type(s) for +: 'int' and 'str'")

    monkeypatch.setitem(_registry._MODELS, "broken_cifar",
                        (broken, _registry._MODELS["vit_tiny_cifar"][1]))
    with pytest.raises(TypeError, match="unsupported operand"):
        create_model("broken_cifar")
