"""Count the floating-point operations of a model's forward (and optionally backward) pass.

Built on :class:`torch.utils.flop_counter.FlopCounterMode`, which counts the operations
that carry the arithmetic of a network: matrix products (``mm``, ``addmm``, ``bmm``,
``baddbmm``, and so ``nn.Linear``, ``torch.matmul`` and ``torch.einsum``), convolutions
of every dimension, and scaled dot-product attention. One multiply-accumulate is two
FLOPs; papers that say "FLOPs" usually mean multiply-accumulates (MACs), so
:class:`FlopCount` reports both.

Lambda layers are counted as the direct correlation of their position lambdas
(``b n r^2 k v u`` MACs, the paper's figure), also where they evaluate it through FFTs.

What is NOT counted: softmax, normalisations (LayerNorm, BatchNorm, the L1 normalisation of
external attention), activations, additions, scaling, pooling and every other elementwise or
reduction op. Their cost is linear in the tensor size and small beside the products, and
it is also what the papers leave out.

Scaled dot-product attention: on CPU, ``F.scaled_dot_product_attention`` runs the fused
kernel ``aten._scaled_dot_product_flash_attention_for_cpu``, for which FlopCounterMode
has no formula and counts zero. :func:`count` registers one (forward and backward), equal
to the two batched products ``Q K^T`` and ``A V`` that the kernel computes: forward
``4 * B * h * N_q * N_k * d`` FLOPs for ``d``-dimensional heads (the same figure the math
backend's two ``bmm`` calls give).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils import flop_counter
from torch.utils.flop_counter import FlopCounterMode

from .layers.lambda_layer import LambdaLayer

__all__ = ["FlopCount", "count", "sdpa_cpu_flops"]

_aten = torch.ops.aten


def _sdpa_cpu_forward(
    query_shape: Sequence[int],
    key_shape: Sequence[int],
    value_shape: Sequence[int],
    *args: Any,
    out_shape: Any = None,
    **kwargs: Any,
) -> int:
    """FLOPs of the fused CPU attention kernel: ``Q K^T`` then ``A V`` (2 per MAC)."""
    return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)


def _sdpa_cpu_backward(
    grad_out_shape: Sequence[int],
    query_shape: Sequence[int],
    key_shape: Sequence[int],
    value_shape: Sequence[int],
    *args: Any,
    out_shape: Any = None,
    **kwargs: Any,
) -> int:
    """FLOPs of the fused CPU attention backward kernel (same formula as the CUDA kernels)."""
    return flop_counter.sdpa_backward_flop_count(
        grad_out_shape, query_shape, key_shape, value_shape
    )


def sdpa_cpu_flops() -> dict[Any, Any]:
    """The ``custom_mapping`` for FlopCounterMode that counts the fused CPU SDPA kernels."""
    return {
        _aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_cpu_forward,
        _aten._scaled_dot_product_flash_attention_for_cpu_backward: _sdpa_cpu_backward,
    }


@dataclass(frozen=True)
class FlopCount:
    """The result of :func:`count`.

    Attributes:
        flops: total floating-point operations (one multiply-accumulate = 2 FLOPs).
        macs: multiply-accumulates, ``flops / 2`` (what papers usually call "FLOPs").
        by_module: FLOPs per submodule, keyed by the qualified name inside the model
            (``""`` is the whole model, ``"blocks.0.attn"`` a submodule).
        by_op: FLOPs per aten operator (``"aten.addmm"``, ``"aten.convolution"``, ...).
        input_shape: the full input shape counted, batch included.
    """

    flops: int
    macs: float
    by_module: dict[str, int] = field(default_factory=dict)
    by_op: dict[str, int] = field(default_factory=dict)
    input_shape: tuple[int, ...] = ()

    @property
    def gflops(self) -> float:
        """FLOPs in units of 1e9."""
        return self.flops / 1e9

    @property
    def gmacs(self) -> float:
        """Multiply-accumulates in units of 1e9."""
        return self.macs / 1e9


def _input_shape(input_size: int | Sequence[int], batch_size: int) -> tuple[int, ...]:
    if isinstance(input_size, int):
        input_size = (3, input_size, input_size)
    shape = tuple(int(s) for s in input_size)
    if len(shape) == 3:
        shape = (batch_size, *shape)
    if len(shape) != 4 or min(shape) <= 0:
        raise ValueError(
            "input_size must be an int (square RGB image), (C, H, W) or (B, C, H, W) "
            f"of positive sizes, got {input_size}"
        )
    return shape


def count(
    model: nn.Module,
    input_size: int | Sequence[int] | None = None,
    *,
    batch_size: int = 1,
    backward: bool = False,
    inputs: Any = None,
    fake: bool = False,
) -> FlopCount:
    """Count the FLOPs of one forward pass of ``model`` (and its backward, if asked).

    Softmax, normalisation and elementwise operations are not counted (see the module
    docstring); the fused CPU SDPA kernel is.

    Args:
        model: any module taking one image tensor (or ``inputs``).
        input_size: ``(C, H, W)`` (a batch of ``batch_size`` is made), ``(B, C, H, W)``,
            or an int ``S`` for ``(3, S, S)``. ``None`` takes ``model.config.input_size``
            for models made by :func:`beyond_attention.create_model`.
        batch_size: images per pass when ``input_size`` has no batch axis; the default 1
            gives the per-image figure the papers quote.
        backward: also count the backward pass of ``output.sum()`` (training cost).
        inputs: a ready input (tensor, or tuple of positional arguments) to use instead of
            a random image; ``input_size`` is then ignored.
        fake: trace with fake tensors (:class:`torch._subclasses.FakeTensorMode`): shapes
            flow through the model but nothing is computed, which is several times faster
            for large models. A model whose forward needs real values (``.item()``,
            data-dependent shapes) falls back to a real pass. Ignored with ``inputs``
            and ``backward``. Count a freshly built model this way: a module that caches
            a tensor computed in its forward would keep a fake one.

    Returns:
        :class:`FlopCount` with ``flops``, ``macs`` and per-module / per-op breakdowns.

    The model is counted in eval mode (dropout and drop-path off, BatchNorm using its
    running statistics) on the device and dtype of its first parameter; its training
    flag and the parameters' ``.grad`` are restored afterwards.
    """
    if inputs is None:
        if input_size is None:
            config = getattr(model, "config", None)
            if config is None:
                raise ValueError(
                    "input_size is required for a model without a .config "
                    "(give (C, H, W), (B, C, H, W) or an int)"
                )
            input_size = config.input_size
        shape = _input_shape(input_size, batch_size)
        ref = next(model.parameters(), None)
        device = ref.device if ref is not None else torch.device("cpu")
        dtype = ref.dtype if ref is not None and ref.is_floating_point() else torch.float32
        if fake and not backward:
            try:
                return _count_fake(model, shape, device, dtype)
            except Exception:  # data-dependent forward: count a real pass instead
                pass
        args: tuple[Any, ...] = (torch.randn(shape, device=device, dtype=dtype),)
    else:
        args = inputs if isinstance(inputs, tuple) else (inputs,)
        shape = tuple(args[0].shape) if isinstance(args[0], torch.Tensor) else ()
    return _count(model, args, shape, backward)


def _count_fake(
    model: nn.Module, shape: tuple[int, ...], device: torch.device, dtype: torch.dtype
) -> FlopCount:
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode(allow_non_fake_inputs=True):
        x = torch.empty(shape, device=device, dtype=dtype)
        return _count(model, (x,), shape, backward=False)


@contextlib.contextmanager
def _direct_position_lambdas(model: nn.Module) -> Iterator[None]:
    """Count lambda layers' position lambdas as the direct correlation they compute.

    :class:`~beyond_attention.layers.lambda_layer.LambdaLayer` may evaluate its position
    correlation through FFTs (faster for large kernels), which FlopCounterMode does not
    count; the paper's cost, Theta(b n r^2 k v), is the direct convolution's, so counting
    switches every lambda layer to its ``"conv"`` path and restores it afterwards.
    """
    layers = [m for m in model.modules() if isinstance(m, LambdaLayer)]
    saved = [m.position_impl for m in layers]
    for m in layers:
        m.position_impl = "conv"
    try:
        yield
    finally:
        for m, impl in zip(layers, saved, strict=True):
            m.position_impl = impl


def _count(
    model: nn.Module, args: tuple[Any, ...], shape: tuple[int, ...], backward: bool
) -> FlopCount:
    was_training = model.training
    saved_grads = {p: p.grad for p in model.parameters()} if backward else {}
    model.eval()
    mode = FlopCounterMode(display=False, depth=None, custom_mapping=sdpa_cpu_flops())
    try:
        with torch.set_grad_enabled(backward), _direct_position_lambdas(model), mode:
            out = model(*args)
            if backward:
                tensors = out if isinstance(out, (tuple, list)) else (out,)
                total = sum(t.float().sum() for t in tensors if isinstance(t, torch.Tensor))
                total.backward()
    finally:
        model.train(was_training)
        for p, grad in saved_grads.items():
            p.grad = grad

    counts = mode.get_flop_counts()
    total_flops = int(mode.get_total_flops())
    root = type(model).__name__
    by_module: dict[str, int] = {}
    for name, ops in counts.items():
        if name == "Global":
            continue
        if name == root:
            key = ""
        elif name.startswith(root + "."):
            key = name[len(root) + 1 :]
        else:
            key = name
        by_module[key] = int(sum(ops.values()))
    by_op: dict[str, int] = {}
    for op, n in counts.get("Global", {}).items():
        by_op[str(op).removeprefix("aten::").replace("::", ".")] = int(n)
    return FlopCount(
        flops=total_flops,
        macs=total_flops / 2,
        by_module=by_module,
        by_op=by_op,
        input_shape=tuple(shape),
    )
