"""DDP without torch's "grad strides do not match bucket view strides" warning: every
parameter's gradient has its parameter's layout (LaViT's depthwise convolution used to get
a channels-last gradient from a transposed token view), with contiguous and with
channels-last weights (``lavit_tiny_cifar``'s recipe trains channels-last)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import tiny_model
import torch

import beyond_attention.models  # noqa: F401  (registers the models)
from beyond_attention.models._registry import create_model

SCRIPT = str(Path(tiny_model.__file__).resolve())
WARNING = "Grad strides do not match bucket view strides"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONHASHSEED="0")
    env["PYTHONPATH"] = os.pathsep.join(
        [str(tiny_model.REPO / "src")] + [p for p in [env.get("PYTHONPATH")] if p])
    return env


@pytest.mark.parametrize("channels_last", [False, True])
def test_lavit_gradients_have_their_parameters_strides(channels_last):
    torch.manual_seed(0)
    model = create_model("lavit_tiny_cifar", num_classes=10, in_chans=1, img_size=(28, 28))
    x = torch.randn(2, 1, 28, 28)
    if channels_last:  # as the engine trains it with --channels-last (its recipe's default)
        torch.nn.utils.convert_conv2d_weight_memory_format(model, torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    model(x).sum().backward()
    differ = [(n, p.stride(), p.grad.stride()) for n, p in model.named_parameters()
              if p.grad is not None and p.grad.stride() != p.stride()]
    assert differ == []


def test_ddp_lavit_prints_no_grad_stride_warning(fashion_dir, tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
           "--master-addr", "127.0.0.1", "--master-port", str(_free_port()), SCRIPT,
           "train", "--model", "lavit_tiny_cifar", "--data", str(fashion_dir), "--epochs", "1",
           "--batch-size", "16", "--limit-train", "32", "--limit-val", "16", "--save-every",
           "0", "--workers", "0", "--device", "cpu", "--threads", "1", "--quiet", "--out",
           str(out)]
    proc = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads((out / "final.json").read_text())["world_size"] == 2
    assert WARNING not in proc.stderr, proc.stderr
