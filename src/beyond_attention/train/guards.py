"""Stopping a run that has diverged: :class:`LossWatch` and :class:`NonFiniteLossError`.

A loss that turns NaN or infinite poisons the weights at that very step (the gradient is
non-finite too), so the run must stop and must not write those weights. The check costs no
host synchronisation of its own:

- per step, :meth:`LossWatch.observe` records on the device the first step whose loss is
  not finite (two elementwise ops, no ``.item()``);
- the loop already synchronises at its checkpoints, its progress lines and the end of an
  epoch, where it adds the losses up: a non-finite loss makes that sum non-finite, so
  :meth:`LossWatch.check` reads only the sum the loop fetched anyway and, when it is not
  finite, raises :class:`NonFiniteLossError` naming the first bad step, before anything is
  saved.

Under float16 mixed precision the gradient scaler skips a step whenever the scaled
gradients overflow, and lowers the scale: a few skips are normal. The loss itself stays
finite then; a scaler that skips :data:`MAX_SKIPPED_STEPS` steps in a row has lost the run,
and :meth:`LossWatch.count_skip` raises. AdamW keeps its step count on the host (a CPU
tensor), so telling a skipped step from a taken one needs no device synchronisation.
"""

from __future__ import annotations

import math

import torch

#: Consecutive steps the float16 gradient scaler may skip before the run is stopped. Each
#: skip halves the scale; from the initial 2**16 the scale is below float16's smallest
#: normal number after 30 halvings, so by then no scale can make the gradients finite.
MAX_SKIPPED_STEPS = 30


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite (or the gradient scaler kept skipping)."""


class LossWatch:
    """Watches the training loss for the first non-finite value without a per-step sync.

    Args:
        device: where the losses live.
        max_skipped: consecutive steps a gradient scaler may skip (see the module).
    """

    def __init__(self, device: torch.device, max_skipped: int = MAX_SKIPPED_STEPS) -> None:
        self.first_bad = torch.full((), -1, dtype=torch.int64, device=device)
        self.max_skipped = max_skipped
        self.skipped_in_a_row = 0
        self._last_opt_step: float | None = None

    def observe(self, loss: torch.Tensor, step: int) -> None:
        """Note global ``step`` (0-based) as the first bad one if ``loss`` is not finite."""
        bad = ~torch.isfinite(loss.detach()) & (self.first_bad < 0)
        self.first_bad = torch.where(bad, step, self.first_bad)

    def check(self, loss_sum: float, where: str, checkpoint: str | None = None) -> None:
        """Raise if ``loss_sum`` (the running sum of the losses the loop fetched) is not
        finite. ``where`` says when it was seen; ``checkpoint`` is the last one saved."""
        if math.isfinite(loss_sum):
            return
        first = int(self.first_bad.item())
        at = f"at step {first + 1}" if first >= 0 else "before the first step"
        keep = (f"; the last checkpoint, {checkpoint}, was saved before it and is kept"
                if checkpoint else "; no checkpoint was written with these weights")
        raise NonFiniteLossError(
            f"training diverged: the loss became {_kind(loss_sum)} {at} (seen {where}){keep}; "
            f"lower --lr, keep --clip-grad on, or try --amp off"
        )

    def count_skip(self, optimizer: torch.optim.Optimizer, step: int) -> None:
        """After a scaled step: count it as skipped if AdamW's step count did not move, and
        raise once :attr:`max_skipped` steps in a row were skipped."""
        opt_step = _optimizer_step(optimizer)
        if opt_step is _ON_DEVICE:  # reading it would synchronise: leave it to the loss
            return
        if opt_step is not None and opt_step != self._last_opt_step:
            self._last_opt_step = opt_step
            self.skipped_in_a_row = 0
            return
        self.skipped_in_a_row += 1
        if self.skipped_in_a_row >= self.max_skipped:
            raise NonFiniteLossError(
                f"training diverged: the float16 gradient scaler skipped "
                f"{self.skipped_in_a_row} steps in a row (up to step {step + 1}): the "
                f"gradients overflow at every scale; lower --lr or use --amp bf16 / off"
            )


_ON_DEVICE = object()


def _optimizer_step(optimizer: torch.optim.Optimizer) -> object:
    """The step count of the first parameter with optimiser state (a host value for
    AdamW's default, non-capturable state), None before the first step, or
    ``_ON_DEVICE`` when the count lives on an accelerator (fused or capturable AdamW)."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            state = optimizer.state.get(p)
            if state and "step" in state:
                s = state["step"]
                if isinstance(s, torch.Tensor) and s.device.type != "cpu":
                    return _ON_DEVICE
                return float(s)
    return None


def _kind(value: float) -> str:
    return "NaN" if math.isnan(value) else "infinite"


def weights_finite(module: torch.nn.Module) -> bool:
    """Whether every floating-point parameter and buffer of ``module`` is finite (one
    synchronisation; called only before a checkpoint is written)."""
    flags = [torch.isfinite(t).all() for t in module.state_dict().values()
             if t.dtype.is_floating_point]
    return bool(torch.stack(flags).all()) if flags else True
