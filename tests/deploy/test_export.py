"""ONNX export with onnxruntime parity for every registered model; failures write nothing."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch
from deploy_helpers import MODEL, SIZE, write_checkpoint, write_image

import beyond_attention.export.onnx as onnx_export
from beyond_attention import create_model, get_model_config, list_models
from beyond_attention.cli import main
from beyond_attention.export import ExportError, export_onnx
from beyond_attention.layers.external_attention import double_normalize
from beyond_attention.train.checkpoint import CheckpointError

SMALL = list_models("*_cifar*")
FULL = [n for n in list_models() if n not in SMALL]


def _export_and_compare(name: str, size: tuple[int, int], tmp_path) -> None:
    torch.manual_seed(0)
    model = create_model(name, img_size=size).eval()
    c = get_model_config(name).input_size[0]
    inputs = torch.randn(3, c, *size)
    out = tmp_path / f"{name}.onnx"
    result = export_onnx(model, out, inputs)
    assert result.parity.ok and result.parity.batch == 3
    # the written file, run independently at a fourth batch size (dynamic axis)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = torch.randn(1, c, *size)
    (got,) = session.run(None, {"images": x.numpy()})
    with torch.no_grad():
        ref = model(x).numpy()
    np.testing.assert_allclose(got, ref, atol=1e-4 + 1e-4 * np.abs(ref).max(), rtol=0)


@pytest.mark.parametrize("name", SMALL)
def test_small_models_export_with_parity(name, tmp_path):
    _export_and_compare(name, tuple(get_model_config(name).input_size[1:]), tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name", FULL)
def test_full_size_models_export_with_parity(name, tmp_path):
    _export_and_compare(name, tuple(get_model_config(name).input_size[1:]), tmp_path)


def test_export_branch_of_double_normalisation_is_the_same_formula(monkeypatch):
    logits = torch.randn(2, 5, 7, dtype=torch.float64)
    trained = double_normalize(logits, 1, 2, 1e-9)
    monkeypatch.setattr(torch.compiler, "is_exporting", lambda: True)
    exported = double_normalize(logits, 1, 2, 1e-9)
    p = torch.exp(logits - logits.amax(1, keepdim=True))
    p = p / p.sum(1, keepdim=True)
    torch.testing.assert_close(exported, p / (1e-9 + p.sum(2, keepdim=True)))
    torch.testing.assert_close(exported, trained)


def test_export_command_on_a_checkpoint_with_real_images(tmp_path, capsys):
    ckpt = tmp_path / "best.safetensors"
    net = write_checkpoint(ckpt)
    for i in range(3):
        write_image(tmp_path / "img" / f"{i}.png", (SIZE, SIZE), i)
    assert main(["export", str(ckpt), "--images", str(tmp_path / "img"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["model"] == MODEL and report["inputs"] == "3 images given"
    assert report["parity"]["ok"] and report["opset"] == onnx_export.DEFAULT_OPSET
    out = tmp_path / "best.onnx"
    assert report["path"] == str(out) and out.stat().st_size == report["size_bytes"]
    x = torch.randn(2, 3, SIZE, SIZE)
    (got,) = ort.InferenceSession(str(out)).run(None, {"images": x.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(got, net(x).numpy(), atol=1e-4)


def test_parity_failure_writes_nothing(tmp_path, monkeypatch):
    real = onnx_export.run_onnxruntime
    monkeypatch.setattr(onnx_export, "run_onnxruntime", lambda b, x: real(b, x) + 1e-2)
    out = tmp_path / "m.onnx"
    with pytest.raises(ExportError, match="max abs difference .* nothing written"):
        main(["--debug", "export", MODEL, "--img-size", "16", "--out", str(out)])
    assert list(tmp_path.iterdir()) == []


def test_bad_checkpoints_get_a_clear_error_and_write_nothing(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        main(["--debug", "export", str(bad)])
    with pytest.raises(CheckpointError, match="does not exist"):
        main(["--debug", "export", str(tmp_path / "missing.safetensors")])
    with pytest.raises(ValueError, match="unknown model name 'nosuchmodel'"):
        main(["--debug", "export", "nosuchmodel", "--out", str(tmp_path / "x.onnx")])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.safetensors"]
