"""What a resume must agree with: :func:`changed_settings` and :func:`validate_record`.

A resumed run reaches the weights of an uninterrupted one only if it continues the same
optimisation: the same batch size, schedule length, seeds, augmentation and process count,
and a checkpoint record that says truthfully where the run stood. Settings that only change
how the run is carried out (threads, workers, logging, where the data and the cache live)
may change (so may the memory format, which like the thread count changes only the order
of floating-point operations); every other setting must match the saved run, so a new
setting is protected by default.

The record ``last.json`` is checked before any of it is used: field types and ranges, the
step counters against each other and against the optimiser's own step count and learning
rate (both saved by the optimiser itself, so a hand-edited step is caught), and the
checkpoint id shared by the three files.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from .checkpoint import Checkpoint, CheckpointError
from .optim import lr_at

#: Settings a resume may change: they do not alter the optimisation.
MAY_CHANGE = frozenset({
    "data", "download", "cache_dir", "no_cache", "workers", "threads", "device", "quiet",
    "log_every", "save_every", "out", "resume", "overwrite", "eval_batch_size", "eval_mode",
    "channels_last",
})


def changed_settings(old: dict[str, Any], new: dict[str, Any]) -> tuple[list[str], list[str]]:
    """``(refused, allowed)``: the settings that differ between the saved run's ``old``
    and this run's ``new`` configuration (``TrainConfig.to_dict()``), each as
    ``"name: old -> new"``, split by :data:`MAY_CHANGE`. Settings the old run did not
    record are not compared."""
    refused, allowed = [], []
    for key, value in new.items():
        if key not in old or old[key] == value:
            continue
        (allowed if key in MAY_CHANGE else refused).append(f"{key}: {old[key]!r} -> {value!r}")
    return refused, allowed


def changed_model_arguments(saved: dict[str, Any] | None, now: dict[str, Any] | None
                            ) -> list[str]:
    """The family keywords (checkpoint metadata's ``model_arguments``) whose value differs
    between the saved run's model and the one this run built, each as
    ``"name: old -> new"``; none when either side records no arguments (a checkpoint
    written before they were recorded). A keyword this version's model no longer takes
    counts as changed; one it takes newly does not (a new option keeps the old behaviour by
    default). A changed registration can keep every tensor shape and still change what
    the model computes, so a resume must not continue with it silently."""
    if not isinstance(saved, dict) or not isinstance(now, dict):
        return []
    now = json.loads(json.dumps(now))  # tuples as the lists the saved JSON holds
    return [f"{key}: {value!r} -> {now[key]!r}" if key in now
            else f"{key}: {value!r} -> (not an argument any more)"
            for key, value in sorted(saved.items()) if key not in now or now[key] != value]


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def validate_record(ckpt: Checkpoint, path: str | Path, *, steps_per_epoch: int, epochs: int,
                    batch_size: int, lr: float, min_lr: float, warmup_steps: int,
                    scaler_enabled: bool, budget: bool = False,
                    per_sample: bool = True) -> None:
    """Check the record of a loaded checkpoint; raise :class:`CheckpointError` listing
    every problem found.

    Args:
        ckpt: the checkpoint (``load_checkpoint`` already matched the ids of its files).
        path: its ``last.json``, for the message.
        steps_per_epoch, epochs, batch_size: this run's, equal to the saved run's (checked
            before by :func:`changed_settings`).
        lr, min_lr, warmup_steps: the schedule, to check the saved learning rate.
        scaler_enabled: float16 loss scaling may skip steps, so AdamW's step count may
            then lag the global step.
        budget: a wall-clock budget run: its length is set by time, not by ``epochs``, and
            its learning rate by the training seconds, so neither bound nor the saved
            learning rate is checked against the step schedule.
        per_sample: the running sums count samples (classification); False when they
            count pixels or points (segmentation), a number the batches alone do not fix.
    """
    problems: list[str] = []
    info = ckpt.info
    ids = (info.get("checkpoint_id"), ckpt.model_meta.get("checkpoint_id"))
    if not all(isinstance(i, str) and i for i in ids):
        problems.append("the checkpoint id is missing from its files")
    state = info.get("state")
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} has no 'state' record; it cannot be resumed")
    if budget:  # no step bound: any count of epochs fits, the schedule follows time
        epochs = 2**62 // max(steps_per_epoch, 1)
    total = epochs * steps_per_epoch
    epoch, in_epoch, step = (state.get(k) for k in ("epoch", "step_in_epoch", "global_step"))
    if not (_is_int(epoch) and 0 <= epoch <= epochs):
        problems.append(f"state.epoch is {epoch!r}, expected an integer in [0, {epochs}]")
    if not (_is_int(in_epoch) and 0 <= in_epoch < steps_per_epoch):
        problems.append(f"state.step_in_epoch is {in_epoch!r}, expected an integer in "
                        f"[0, {steps_per_epoch})")
    if not (_is_int(step) and 0 <= step <= total):
        problems.append(f"state.global_step is {step!r}, expected an integer in [0, {total}]")
    elif _is_int(epoch) and _is_int(in_epoch) and step != epoch * steps_per_epoch + in_epoch:
        problems.append(f"state.global_step {step} is not epoch {epoch} x {steps_per_epoch} "
                        f"steps + step_in_epoch {in_epoch}")
    best = state.get("best_top1")
    if best is not None and not (_is_num(best) and (best == -1.0 or 0.0 <= best <= 100.0)):
        problems.append(f"state.best_top1 is {best!r}, expected null, -1 (no validation) or "
                        f"a percentage in [0, 100]")
    seconds = state.get("train_seconds")
    if not (_is_num(seconds) and seconds >= 0):
        problems.append(f"state.train_seconds is {seconds!r}, expected a number >= 0")
    sums = state.get("sums")
    if not (isinstance(sums, list) and len(sums) == 3 and all(_is_num(s) for s in sums)):
        problems.append(f"state.sums is {sums!r}, expected 3 finite numbers")
    elif _is_int(in_epoch) and not ((sums[2] == in_epoch * batch_size or not per_sample)
                                    and 0 <= sums[1] <= sums[2]):
        problems.append(f"state.sums {sums} do not count {in_epoch} batches of {batch_size} "
                        f"images")
    if _is_int(step) and 0 <= step <= total and not budget:
        problems += _optimizer_problems(ckpt, step, total, lr, min_lr, warmup_steps,
                                        scaler_enabled)
    if problems:
        raise CheckpointError(f"checkpoint {path} cannot be resumed: "
                              + "; ".join(problems)
                              + " (was it edited? resume from an unedited checkpoint)")


def _optimizer_problems(ckpt: Checkpoint, step: int, total: int, lr: float, min_lr: float,
                        warmup_steps: int, scaler_enabled: bool) -> list[str]:
    """The optimiser's own step count and learning rate against ``step``."""
    problems = []
    counts = {float(v) for k, v in ckpt.state_tensors.items()
              if k.startswith("optim.") and k.endswith(".step") and isinstance(v, torch.Tensor)}
    taken = max(counts) if counts else 0.0
    if taken > step or (not scaler_enabled and taken != step):
        problems.append(f"state.global_step is {step} but the optimiser has taken "
                        f"{taken:g} steps")
    groups = ckpt.info.get("optimizer", {}).get("param_groups", [])
    if step > 0 and groups:
        expected = lr_at(step - 1, total, warmup_steps, lr, min_lr)
        saved = groups[0].get("lr")
        if not (_is_num(saved) and math.isclose(saved, expected, rel_tol=1e-9, abs_tol=1e-15)):
            problems.append(f"the saved learning rate {saved!r} is not the schedule's "
                            f"{expected:.6g} after step {step}")
    return problems
