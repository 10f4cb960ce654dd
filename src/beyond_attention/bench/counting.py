"""FLOP counting for the benchmarks: the library's counter plus FFT-based convolutions.

:mod:`beyond_attention.flops` counts matrix products, convolutions and the fused CPU SDPA
kernel. The lambda layer computes its position lambdas for large kernels (the paper's
r = 23, and the global form) as a correlation through the FFT, whose transforms and
complex products that counter does not see, so a lambda layer would look almost free.
:func:`forward_flops` adds them with the usual radix-2 estimates.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..flops import sdpa_cpu_flops


def _fft_flops(input_shape: Sequence[int], dim: Sequence[int], complex_input: bool) -> int:
    """Real FLOPs of an FFT over ``dim`` of a tensor of ``input_shape``.

    The usual radix-2 estimate: ``5 n log2(m)`` for a complex transform of ``n`` elements
    over axes of total length ``m``, half of it (``2.5 n log2 m``) for a real-input
    (or real-output) transform of ``n`` real values.
    """
    m = math.prod(int(input_shape[d]) for d in dim)
    n = math.prod(int(s) for s in input_shape)
    if m <= 1:
        return 0
    return int((5.0 if complex_input else 2.5) * n * math.log2(m))


def _r2c(x: torch.Tensor, dim: Sequence[int], *args: Any, out_shape: Any = None, **kw: Any) -> int:
    return _fft_flops(x.shape, dim, complex_input=False)


def _c2r(
    x: torch.Tensor,
    dim: Sequence[int],
    normalization: int,
    last_dim_size: int,
    *args: Any,
    out_shape: Any = None,
    **kw: Any,
) -> int:
    shape = list(x.shape)
    shape[dim[-1]] = last_dim_size  # the real output's length along the last axis
    return _fft_flops(shape, dim, complex_input=False)


def _c2c(x: torch.Tensor, dim: Sequence[int], *args: Any, out_shape: Any = None, **kw: Any) -> int:
    return _fft_flops(x.shape, dim, complex_input=True)


def _complex_mul(a: Any, b: Any, *args: Any, out_shape: Any = None, **kw: Any) -> int:
    """6 real FLOPs per complex product (4 multiplications, 2 additions); real muls free."""
    tensors = [t for t in (a, b) if isinstance(t, torch.Tensor)]
    if not any(t.is_complex() for t in tensors):
        return 0
    return 6 * math.prod(torch.broadcast_shapes(*(t.shape for t in tensors)))


for _f in (_r2c, _c2r, _c2c, _complex_mul):
    _f._get_raw = True  # FlopCounterMode hands these the tensors, not only their shapes


def flop_mapping() -> dict[Any, Any]:
    """FlopCounterMode formulas: the fused CPU SDPA kernel and FFT-based convolutions."""
    aten = torch.ops.aten
    return {
        **sdpa_cpu_flops(),
        aten._fft_r2c: _r2c,
        aten._fft_c2r: _c2r,
        aten._fft_c2c: _c2c,
        aten.mul: _complex_mul,
    }


def forward_flops(module: nn.Module, inputs: Sequence[Any]) -> dict[str, int]:
    """Forward FLOPs of ``module(*inputs)``, 2 per multiply-accumulate, in eval mode.

    The counter of :mod:`beyond_attention.flops` (matrix products, convolutions, the fused
    CPU SDPA kernel) plus the FFTs and complex products that FFT-based convolutions run
    (the lambda layer's position lambdas for large kernels), which that counter leaves
    out. Returns ``{"flops": total, "fft_flops": the FFT part}``.
    """

    detached = tuple(t.detach() if isinstance(t, torch.Tensor) else t for t in inputs)
    was_training = module.training
    module.eval()
    mode = FlopCounterMode(display=False, depth=None, custom_mapping=flop_mapping())
    try:
        with torch.no_grad(), mode:
            module(*detached)
    finally:
        module.train(was_training)
    by_op = mode.get_flop_counts().get("Global", {})
    fft_ops = {
        torch.ops.aten._fft_r2c,
        torch.ops.aten._fft_c2r,
        torch.ops.aten._fft_c2c,
        torch.ops.aten.mul,
    }
    fft = sum(int(v) for k, v in by_op.items() if k in fft_ops)
    return {"flops": int(mode.get_total_flops()), "fft_flops": fft}
