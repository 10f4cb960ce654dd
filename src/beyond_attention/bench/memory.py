"""Training memory: the bytes a forward pass keeps alive for the backward pass.

:func:`saved_tensor_bytes` runs a callable under
``torch.autograd.graph.saved_tensors_hooks`` and adds up the storage of every tensor the
autograd graph saves (inputs of matmuls, softmax outputs, masks, ...), counting each
storage once: a view, a transpose or a tensor saved by two operations shares one storage
and costs its bytes once. Parameters (and any other tensor passed in ``exclude``) are not
activations and are left out. This is the activation memory of training, the quantity
that grows with the batch and the resolution, and it is exact on any device, CPU included.

On CUDA, :func:`cuda_peak_bytes` adds the allocator's peak during a call, which also
counts the temporaries that live only inside the forward or the backward.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


def _storage_key(t: torch.Tensor) -> tuple[str, int] | None:
    """(device, data pointer) of ``t``'s storage, or None for tensors without one."""
    try:
        storage = t.untyped_storage()
    except (RuntimeError, NotImplementedError):
        return None
    ptr = storage.data_ptr()
    if ptr == 0:
        return None
    return (str(t.device), ptr)


def _storage_nbytes(t: torch.Tensor) -> int:
    return int(t.untyped_storage().nbytes())


@dataclass(frozen=True)
class SavedTensors:
    """What a forward pass saved for backward.

    Attributes:
        bytes: total bytes of the distinct storages saved (parameters excluded).
        storages: number of distinct storages counted.
        saved: number of times the autograd graph saved a tensor (before deduplication,
            excluded tensors included).
    """

    bytes: int
    storages: int
    saved: int


def saved_tensor_bytes(
    fn: Callable[[], Any], *, exclude: Iterable[torch.Tensor] = ()
) -> tuple[SavedTensors, Any]:
    """Run ``fn()`` with autograd on and count the bytes it saves for backward.

    Args:
        fn: a callable running a forward pass (grad mode is enabled around it).
        exclude: tensors whose storages are not activations (parameters, buffers).

    Returns ``(SavedTensors, fn's return value)``; keep or drop the return value, the count
    is taken while the forward runs. Each storage counts once, whole: a saved view of a
    larger buffer keeps the whole buffer alive, so the whole buffer is what it costs.
    """
    excluded = {key for t in exclude if (key := _storage_key(t)) is not None}
    seen: dict[tuple[str, int], int] = {}
    calls = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal calls
        calls += 1
        key = _storage_key(t)
        if key is not None and key not in excluded and key not in seen:
            seen[key] = _storage_nbytes(t)
        return t

    def unpack(t: torch.Tensor) -> torch.Tensor:
        return t

    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, unpack):
        out = fn()
    return SavedTensors(bytes=sum(seen.values()), storages=len(seen), saved=calls), out


def activation_bytes(module: nn.Module, inputs: Iterable[Any]) -> SavedTensors:
    """Bytes saved for backward by one training forward ``module(*inputs)``.

    The module's parameters and buffers are excluded; inputs that a layer saves (the
    input of the first linear map, for instance) are counted, as in a network where the
    input is the previous layer's output held for this layer's backward.
    """
    inputs = tuple(inputs)
    exclude = [*module.parameters(), *module.buffers()]
    report, out = saved_tensor_bytes(lambda: module(*inputs), exclude=exclude)
    del out
    return report


def cuda_peak_bytes(fn: Callable[[], Any], device: torch.device | str) -> int:
    """Peak CUDA memory allocated during ``fn()`` above what was allocated before it."""
    device = torch.device(device)
    if device.type != "cuda":
        raise ValueError(f"device must be a CUDA device for peak memory, got {device}")
    torch.cuda.synchronize(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    out = fn()
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device)
    del out
    return int(peak - base)


def activation_bytes_per_image(
    model: torch.nn.Module, x1: torch.Tensor, two: Callable[[], torch.Tensor]
) -> int:
    """Bytes one image's training forward saves for backward (``model`` in train mode).

    Measured on the one image ``x1``; a model that cannot train on one (a BatchNorm over
    pooled features, as in the PCT heads, needs two values per channel) is measured on
    the two images ``two()`` and the count halved (activations grow linearly with the
    batch).
    """
    try:
        return activation_bytes(model, (x1,)).bytes
    except ValueError as e:
        if "more than 1 value per channel" not in str(e):
            raise
    return activation_bytes(model, (two(),)).bytes // 2
