"""The model contract shared by every family: one implementation of each common piece.

* :func:`to_2tuple` normalises ``img_size`` (``S -> (S, S)``) once, with one error.
* :func:`check_num_classes` and :meth:`ClassifierMixin.reset_classifier`: a fresh head on
  the model's device and dtype, ``num_classes >= 0`` (0 gives an identity head).
* :func:`feature_take_indices`: which blocks or stages ``forward_intermediates`` returns
  (as timm's function of that name: ``None`` all, an int n the last n, a sequence of
  indices, negative ones counting from the end; out-of-range and repeated indices are
  errors).
* :func:`check_input_size`: a clear error for a wrong image layout, a wrong size of a
  fixed-size model, or a size not divisible by the patch size / total stride, raised
  before any computation.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import torch
from torch import nn

from ..layers._validate import check_tensor

__all__ = [
    "ClassifierMixin",
    "check_input_size",
    "check_num_classes",
    "feature_take_indices",
    "to_2tuple",
]


def to_2tuple(value: int | Sequence[int], name: str = "img_size") -> tuple[int, int]:
    """``S -> (S, S)``; ``(H, W) -> (H, W)``, requiring positive integers."""
    out = (value, value) if isinstance(value, numbers.Integral) else tuple(value)
    if len(out) != 2 or not all(
        isinstance(v, numbers.Integral) and not isinstance(v, bool) and v > 0 for v in out
    ):
        raise ValueError(f"{name} must be a positive int or a pair (H, W) of them, got {value!r}")
    return int(out[0]), int(out[1])


def check_num_classes(num_classes: int) -> int:
    """Return ``num_classes`` as an int, requiring ``num_classes >= 0`` (0: no head)."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral):
        raise ValueError(f"num_classes must be an int >= 0, got {num_classes!r}")
    if num_classes < 0:
        raise ValueError(f"num_classes must be >= 0 (0 gives an identity head), got {num_classes}")
    return int(num_classes)


def feature_take_indices(
    num_features: int, indices: int | Sequence[int] | None = None
) -> tuple[list[int], int]:
    """The sorted feature indices to take, and the largest of them.

    Args:
        num_features: how many blocks or stages can be taken (indices ``0 .. n-1``).
        indices: ``None`` for all; an int ``k`` in ``[1, n]`` for the last ``k``; or a
            sequence of indices in ``[-n, n-1]`` (negative ones count from the end),
            each at most once.

    Raises ValueError naming ``indices`` for an out-of-range or repeated index.
    """
    n = num_features
    if indices is None:
        take = list(range(n))
    elif isinstance(indices, numbers.Integral) and not isinstance(indices, bool):
        if not 1 <= indices <= n:
            raise ValueError(f"indices as an int (the last k) must be in [1, {n}], got {indices}")
        take = list(range(n - int(indices), n))
    else:
        raw = list(indices)
        if not raw:
            raise ValueError("indices must name at least one index, got an empty sequence")
        bad = [i for i in raw if not isinstance(i, numbers.Integral) or not -n <= i < n]
        if bad:
            raise ValueError(
                f"indices must be ints in [-{n}, {n - 1}] (this model has {n}), got {bad} in "
                f"{raw}"
            )
        norm = [int(i) % n for i in raw]
        if len(set(norm)) != len(norm):
            raise ValueError(f"indices must not repeat an index (after negatives), got {raw}")
        take = sorted(norm)
    return take, max(take)


def check_input_size(
    x: torch.Tensor,
    in_chans: int,
    img_size: tuple[int, int],
    fixed: bool,
    divisor: tuple[int, int] | int = 1,
    divisor_name: str = "the total stride",
    reason: str = "",
) -> None:
    """Raise a clear error unless ``x`` is images (B, in_chans, H, W) this model accepts.

    A fixed-size model (``fixed``) accepts only ``img_size``; any model requires H and W to
    be divisible by ``divisor`` (its patch size, for example). ``reason`` says why the size
    is fixed (it is added to the message).
    """
    check_tensor(x, "x", f"(B, C={in_chans}, H, W)")
    built = f"this model: in_chans={in_chans}, img_size={img_size}"
    if x.ndim != 4:
        raise ValueError(
            f"x must have shape (B, C={in_chans}, H, W) with 4 dimensions, got {x.ndim} "
            f"dimensions: {tuple(x.shape)} ({built})"
        )
    if x.shape[1] != in_chans:
        raise ValueError(
            f"x must have {in_chans} channels in dimension 1 (B, C={in_chans}, H, W), got "
            f"shape {tuple(x.shape)} ({built})"
        )
    hw = (int(x.shape[-2]), int(x.shape[-1]))
    if fixed and hw != tuple(img_size):
        why = f" ({reason})" if reason else ""
        raise ValueError(
            f"x has spatial size {hw} but this model was built for img_size "
            f"{tuple(img_size)}{why}; resize the input or build the model with img_size={hw}"
        )
    div = (divisor, divisor) if isinstance(divisor, int) else tuple(divisor)
    if hw[0] % div[0] or hw[1] % div[1]:
        raise ValueError(
            f"x has spatial size {hw}, which is not divisible by {divisor_name} {div}"
        )


def _reference_tensor(module: nn.Module) -> torch.Tensor | None:
    """The first floating-point parameter (or buffer) of ``module``: its device and dtype."""
    for t in (*module.parameters(), *module.buffers()):
        if t.is_floating_point():
            return t
    return None


class ClassifierMixin:
    """``get_classifier`` / ``reset_classifier`` for a model whose head is one attribute.

    A model sets ``classifier_attr`` (the attribute holding its head: ``"head"``, ``"fc"``,
    ``"classifier"``) and implements ``_make_classifier(num_classes) -> nn.Module`` (a
    freshly initialised head, ``nn.Identity()`` for 0). :meth:`reset_classifier` then puts
    the new head on the device and in the dtype of the model's parameters.
    """

    classifier_attr: str = "head"
    num_classes: int

    def _make_classifier(self, num_classes: int) -> nn.Module:  # pragma: no cover - abstract
        raise NotImplementedError

    def get_classifier(self) -> nn.Module:
        """The classification head (``nn.Identity`` when ``num_classes == 0``)."""
        return getattr(self, self.classifier_attr)

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the head by a fresh one with ``num_classes`` outputs (0: identity)."""
        num_classes = check_num_classes(num_classes)
        old = self.get_classifier()
        ref = _reference_tensor(old)
        if ref is None:
            ref = _reference_tensor(self)  # type: ignore[arg-type]
        head = self._make_classifier(num_classes)
        if ref is not None:
            head = head.to(device=ref.device, dtype=ref.dtype)
        setattr(self, self.classifier_attr, head)
        self.num_classes = num_classes
