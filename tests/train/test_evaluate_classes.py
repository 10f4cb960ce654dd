"""evaluate refuses data whose class names differ from the checkpoint's, and defaults to
the data and validation split the run recorded."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "deploy"))
from deploy_helpers import write_checkpoint, write_folder  # noqa: E402

from beyond_attention.train.checkpoint import CheckpointError  # noqa: E402
from beyond_attention.train.evaluate import evaluate_checkpoint  # noqa: E402


def test_other_class_names_are_refused_with_the_mismatch(tmp_path):
    ckpt = tmp_path / "best.safetensors"
    write_checkpoint(ckpt, classes=["cat", "dog", "ship"])
    other = write_folder(tmp_path / "other", ["airplane", "bird", "frog"], splits=("test",))
    with pytest.raises(CheckpointError, match=r"0: 'cat' vs 'airplane'.*2: 'ship' vs 'frog'"):
        evaluate_checkpoint(ckpt, other, "test", device="cpu")


def test_same_names_in_another_order_are_a_mismatch(tmp_path):
    ckpt = tmp_path / "best.safetensors"
    write_checkpoint(ckpt, classes=["dog", "cat", "ship"])  # the folder sorts: cat, dog, ship
    data = write_folder(tmp_path / "d", ["cat", "dog", "ship"], splits=("test",))
    with pytest.raises(CheckpointError, match="same names in another order"):
        evaluate_checkpoint(ckpt, data, "test", device="cpu")


def test_defaults_follow_the_run_data_and_validation_split(tmp_path):
    data = write_folder(tmp_path / "mine", ["cat", "dog", "ship"], splits=("train", "val"))
    ckpt = tmp_path / "best.safetensors"
    write_checkpoint(ckpt, data=str(data), val_split="val")
    result = evaluate_checkpoint(ckpt, device="cpu", batch_size=5)  # nothing but the file
    assert result["split"] == "val" and result["count"] == 12
    assert list(result["per_class"]) == ["cat", "dog", "ship"]
    with pytest.raises(Exception, match="train"):  # an explicit split still overrides
        evaluate_checkpoint(ckpt, split="nosuchsplit", device="cpu")


def test_matching_names_evaluate(tmp_path):
    ckpt = tmp_path / "best.safetensors"
    write_checkpoint(ckpt)
    data = write_folder(tmp_path / "d", ["cat", "dog", "ship"], splits=("test",))
    assert evaluate_checkpoint(ckpt, data, device="cpu")["count"] == 12  # no val: test
