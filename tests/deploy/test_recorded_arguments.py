"""Checkpoints record every family keyword their model was built with and rebuild that
model, even after a registration changes."""

from __future__ import annotations

import json

import pytest
import torch
from deploy_helpers import CLASSES

import beyond_attention.models  # noqa: F401
from beyond_attention import create_model
from beyond_attention.inference import load_for_inference
from beyond_attention.models import list_models
from beyond_attention.models._registry import model_arguments
from beyond_attention.train.checkpoint import (
    CheckpointError,
    model_metadata,
    rebuild_arguments,
    save_safetensors,
)
from beyond_attention.viz.load import load_model

SIZE = 32


def _through_json(meta: dict) -> dict:
    """Metadata as a reader decodes it from the file."""
    return {k: json.loads(json.dumps(v)) for k, v in meta.items()}


@pytest.mark.parametrize("name", list_models())
def test_the_recorded_arguments_rebuild_every_registered_model(name):
    recorded = _through_json({"model_arguments": model_arguments(name)})
    with torch.device("meta"):  # structure and shapes only: no weights are drawn
        registered = create_model(name)
        rebuilt = create_model(name, **rebuild_arguments(recorded))
    assert repr(rebuilt) == repr(registered)
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == \
        {k: v.shape for k, v in registered.state_dict().items()}


def test_the_arguments_hold_the_builders_defaults_the_registration_and_the_kwargs():
    args = model_arguments("vit_tiny_cifar", mixer="external")
    assert args["embed_dim"] == 192 and args["mlp_ratio"] == 2.0  # registered
    assert args["pos_embed"] == "learned" and args["norm_eps"] == 1e-6  # the class defaults
    assert args["mixer"] == "external"  # given
    assert not {"num_classes", "in_chans", "img_size", "drop_path_rate"} & set(args)
    # a value JSON cannot hold (a callable) is left out rather than written as a lie
    assert "mixers" not in model_arguments("resnet26_cifar")
    assert model_arguments("resnet26_cifar")["widths"] == (16, 32, 64, 128)


def _earlier_vit_checkpoint(path, *, record_arguments: bool) -> torch.nn.Module:
    """A checkpoint of ``vit_tiny_cifar`` as registered before it was reshaped (MLP ratio 4,
    no patch norm, DeiT's init): then these were the registered defaults, so the run's own
    ``model_kwargs`` were empty."""
    earlier = dict(mlp_ratio=4.0, embed_norm=False, weight_init="deit")
    torch.manual_seed(0)
    net = create_model("vit_tiny_cifar", num_classes=len(CLASSES), **earlier).eval()
    meta = model_metadata("vit_tiny_cifar", len(CLASSES), 3, (SIZE, SIZE), [0.5] * 3,
                          [0.25] * 3, CLASSES,
                          model_arguments=model_arguments("vit_tiny_cifar", **earlier))
    if not record_arguments:
        meta.pop("model_arguments")
    save_safetensors(path, net.state_dict(), {**meta, "checkpoint_id": "0-test"})
    return net


def test_a_checkpoint_of_an_earlier_registration_rebuilds_its_own_model(tmp_path):
    path = tmp_path / "earlier.safetensors"
    net = _earlier_vit_checkpoint(path, record_arguments=True)
    model, meta = load_for_inference(path)
    assert model.blocks[0].mlp.fc1.out_features == 4 * 192  # not today's ratio 2
    assert meta["model_kwargs"] == {}
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        torch.testing.assert_close(model(x), net(x), rtol=0, atol=0)
    loaded = load_model(path)  # the viz loader takes the same path
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), net(x), rtol=0, atol=0)


def test_without_the_record_the_current_registration_is_named_as_not_fitting(tmp_path):
    path = tmp_path / "older.safetensors"
    _earlier_vit_checkpoint(path, record_arguments=False)
    with pytest.raises(CheckpointError, match="does not fit model vit_tiny_cifar.*missing: "
                                              "patch_embed.norm"):
        load_for_inference(path)


def test_a_recorded_argument_this_version_does_not_take_is_named(tmp_path):
    path = tmp_path / "future.safetensors"
    net = create_model("resnet26_cifar", num_classes=len(CLASSES))
    meta = model_metadata("resnet26_cifar", len(CLASSES), 3, (SIZE, SIZE), [0.5] * 3,
                          [0.25] * 3, CLASSES,
                          model_arguments={**model_arguments("resnet26_cifar"),
                                           "stem_pool": "max"})
    save_safetensors(path, net.state_dict(), {**meta, "checkpoint_id": "0-test"})
    with pytest.raises(CheckpointError, match="cannot rebuild the model it was trained as.*"
                                              "takes no argument 'stem_pool'"):
        load_for_inference(path)


def test_the_runs_own_keywords_win_over_the_recorded_arguments():
    meta = _through_json({"model_arguments": model_arguments("vit_tiny_cifar"),
                          "model_kwargs": {"mixer": "less"}})
    args = rebuild_arguments(meta)
    assert args["mixer"] == "less" and args["embed_dim"] == 192
    assert rebuild_arguments({"model_kwargs": {"depth": 2}}) == {"depth": 2}  # older files
