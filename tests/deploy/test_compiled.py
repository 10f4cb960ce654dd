"""torch.compile (training and inference) and torch.export of every *_cifar* model agree with
eager PyTorch. The default sweep compiles with the aot_eager backend (dynamo tracing and
AOT autograd, the part our code can break); the inductor sweep is marked slow."""

from __future__ import annotations

import pytest
import torch

from beyond_attention import create_model, list_models
from beyond_attention.export.compiled import (
    check_compile_inference,
    check_compile_training,
    check_torch_export,
)

CIFAR = list_models("*_cifar*")


def _model(name):
    torch.manual_seed(0)
    return create_model(name)


def _close(agreement, tol=1e-4):
    assert agreement.output <= tol * max(1.0, agreement.scale), agreement
    if agreement.grad is not None:
        assert agreement.grad <= tol, agreement


@pytest.mark.parametrize("name", CIFAR)
def test_torch_export_matches_eager_at_another_batch(name):
    model = _model(name)
    _close(check_torch_export(model, torch.randn(2, 3, 32, 32), torch.randn(5, 3, 32, 32)))


@pytest.mark.parametrize("name", CIFAR)
def test_compile_inference_matches_eager(name):
    _close(check_compile_inference(_model(name), torch.randn(4, 3, 32, 32), backend="aot_eager"))


@pytest.mark.parametrize("name", CIFAR)
def test_compile_training_matches_eager(name):
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    _close(check_compile_training(_model(name), x, y, backend="aot_eager"))


@pytest.mark.slow
@pytest.mark.parametrize("name", CIFAR)
def test_inductor_training_and_inference_match_eager(name):
    model = _model(name)
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    _close(check_compile_inference(model, x), tol=1e-3)
    _close(check_compile_training(model, x, y), tol=1e-3)
