"""``torch.compile`` and ``torch.export`` checked against eager PyTorch.

:func:`check_compile_inference` and :func:`check_compile_training` run a model eagerly and
compiled on the same input and weights and return the largest differences (outputs, and
for training the loss and every parameter's gradient); :func:`check_torch_export` does the
same for the program of ``torch.export.export`` with a dynamic batch axis. The custom
autograd Functions compile as they are (dynamo traces their forward and backward);
under ``torch.export`` they take their plain-ops branch. Speed is measured by the export
report, never asserted.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .onnx import Inputs, as_inputs, input_spec


@dataclass
class Agreement:
    """The largest absolute differences between eager and compiled/exported runs.

    Attributes:
        output: of the outputs.
        grad: of the parameter gradients (training checks only; else None).
        scale: the largest absolute eager output (for a relative reading).
    """

    output: float
    scale: float
    grad: float | None = None


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max())


def check_compile_inference(model: nn.Module, x: torch.Tensor, backend: str = "inductor"
                            ) -> Agreement:
    """Eager vs ``torch.compile(model, backend=backend)`` in eval mode, no grad."""
    model.eval()
    compiled = torch.compile(model, backend=backend)
    with torch.no_grad():
        ref = model(x)
        got = compiled(x)
    return Agreement(_max_diff(got, ref), float(ref.abs().max()))


def check_compile_training(model: nn.Module, x: torch.Tensor, labels: torch.Tensor,
                           backend: str = "inductor") -> Agreement:
    """One forward + cross-entropy backward, eager vs compiled, in train mode from the
    same weights and seed (two copies, so normalisation statistics update independently;
    inductor's ``fallback_random``, so dropout draws the same masks)."""
    eager, other = copy.deepcopy(model).train(), copy.deepcopy(model).train()
    compiled = torch.compile(other, backend=backend)
    torch.manual_seed(0)
    ref = eager(x)
    F.cross_entropy(ref, labels).backward()
    torch.manual_seed(0)
    # inductor draws dropout masks with its own generator unless told to fall back to
    # PyTorch's (compilation happens at this first call, inside the patch)
    with torch._inductor.config.patch(fallback_random=True):
        got = compiled(x)
        F.cross_entropy(got, labels).backward()
    grad = max((_max_diff(p.grad, q.grad) for p, q in
                zip(eager.parameters(), other.parameters(), strict=True)
                if p.grad is not None and q.grad is not None), default=0.0)
    missing = [n for (n, p), q in zip(eager.named_parameters(), other.parameters(), strict=True)
               if (p.grad is None) != (q.grad is None)]
    if missing:
        raise AssertionError(f"compiled and eager disagree on which parameters get a "
                             f"gradient: {missing[:5]}")
    return Agreement(_max_diff(got.detach(), ref.detach()), float(ref.detach().abs().max()),
                     grad)


def export_program(model: nn.Module, inputs: Inputs) -> torch.export.ExportedProgram:
    """``torch.export.export`` of ``model`` (eval mode) at ``inputs`` (what its task takes,
    :func:`~beyond_attention.export.onnx.input_spec`) with a dynamic batch axis, and a
    dynamic point axis for point clouds."""
    spec = input_spec(model)
    inputs = as_inputs(inputs)
    spec.check(inputs)
    model.eval()
    with torch.no_grad():
        return torch.export.export(model, inputs, dynamic_shapes=spec.dynamic_shapes())


def check_torch_export(model: nn.Module, x: Inputs, other: Inputs | None = None
                       ) -> Agreement:
    """Eager vs the exported program, on ``other`` (a batch of another size) if given."""
    program = export_program(model, x)
    inputs = as_inputs(x if other is None else other)
    with torch.no_grad():
        ref = model(*inputs)
        got = program.module()(*inputs)
    return Agreement(_max_diff(got, ref), float(ref.abs().max()))
