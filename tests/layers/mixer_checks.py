"""Checks every mixer must pass: round trips and compilation keep the output identical."""

from __future__ import annotations

import copy

import torch
from safetensors.torch import load, save
from torch import nn


def assert_round_trips(module: nn.Module, *inputs: torch.Tensor) -> None:
    """state_dict (through safetensors bytes), deepcopy and .to(float64) keep the output."""
    module = module.eval()
    with torch.no_grad():
        expected = module(*inputs)

        clone = copy.deepcopy(module)
        torch.testing.assert_close(clone(*inputs), expected, rtol=0, atol=0)

        rebuilt = copy.deepcopy(module)
        for p in rebuilt.parameters():
            p.add_(1.0)  # make sure the load really overwrites
        state = {k: v.contiguous() for k, v in module.state_dict().items()}
        rebuilt.load_state_dict(load(save(state)))
        torch.testing.assert_close(rebuilt(*inputs), expected, rtol=0, atol=0)

        wide = copy.deepcopy(module).to(torch.float64)
        assert all(p.dtype == torch.float64 for p in wide.parameters())
        wide_out = wide(*(t.double() for t in inputs))
        torch.testing.assert_close(wide_out.float(), expected, rtol=1e-4, atol=1e-5)


def assert_compiles(module: nn.Module, *inputs: torch.Tensor, backend: str = "inductor") -> None:
    """torch.compile(fullgraph=True) gives the eager output."""
    module = module.eval()
    torch._dynamo.reset()
    compiled = torch.compile(module, fullgraph=True, backend=backend)
    with torch.no_grad():
        torch.testing.assert_close(compiled(*inputs), module(*inputs), rtol=1e-5, atol=1e-5)

