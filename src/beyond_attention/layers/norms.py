"""Normalisation layers, with a guard against a wrong BatchNorm gradient at batch size 1.

torch 2.13's CPU BatchNorm backward returns a wrong input gradient when the batch has one
sample and the incoming gradient is a non-contiguous view (for example the gradient of a
``rearrange``/``transpose`` that follows the norm): the result differs from the one for the
same values laid out contiguously. At batch 2 and above it is exact.

:class:`BatchNorm2d` is ``torch.nn.BatchNorm2d`` with its output passed through
:func:`contiguous_grad`, a gradient hook that hands the incoming gradient to the norm's
backward as a contiguous tensor. The forward is unchanged and so are the state-dict keys; when the
gradient is already contiguous the guard costs nothing (``contiguous()`` returns it).
"""

from __future__ import annotations

import torch
from torch import nn


def _contiguous(grad: torch.Tensor | None) -> torch.Tensor | None:
    return None if grad is None else grad.contiguous()


def contiguous_grad(x: torch.Tensor) -> torch.Tensor:
    """``x`` itself; the gradient its producer's backward receives is made contiguous.

    Registers a gradient hook on ``x`` (a no-op when the gradient is already contiguous:
    ``contiguous()`` returns it). The hook stays attached to the op that produced ``x``,
    so an in-place op applied to ``x`` afterwards (``ReLU(inplace=True)``) is fine.
    Outside autograd (no gradient needed) nothing is registered.
    """
    if torch.is_grad_enabled() and x.requires_grad:
        x.register_hook(_contiguous)
    return x


class BatchNorm2d(nn.BatchNorm2d):
    """``torch.nn.BatchNorm2d`` whose backward always receives a contiguous gradient.

    Same arguments, parameters, buffers and state-dict keys as ``torch.nn.BatchNorm2d``;
    only the backward differs, working around the batch-1 CPU bug described in this
    module's docstring. Shapes: ``(B, C, H, W) -> (B, C, H, W)``.
    """

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # noqa: A002 (torch's name)
        return contiguous_grad(super().forward(input))
