"""A tiny conv net registered for the engine tests only (never in the package).

Run as a script it registers the net and runs the command line, so a subprocess (plain or
under torchrun) can train it: ``python tests/train/tiny_model.py train --model tiny_test_net``.
A leading ``--kill-after-steps N`` installs a step hook that kills the process (SIGKILL)
after N steps, to test ``--resume`` against a real hard crash; a leading
``--sleep-per-step SECONDS`` slows every step down, so a test can interrupt a run midway.

``tiny_test_net_nan`` has an auxiliary loss that turns NaN (with a NaN gradient) from its
``nan_from``-th training step on (0-based; ``--model-arg nan_from=N``).
"""

from __future__ import annotations

import functools
import os
import signal
import sys
from pathlib import Path

import torch
from torch import nn

NAME = "tiny_test_net"
AUX_NAME = "tiny_test_net_aux"
NAN_NAME = "tiny_test_net_nan"
REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO.parent / "shared" / "data"
FASHION = SHARED_DATA / "fashion-mnist"
CIFAR_TAR = SHARED_DATA / "cifar10-jpg.tar.gz"


class TinyNet(nn.Module):
    """conv(stride 2) -> BN -> ReLU -> conv(stride 2) -> ReLU -> pool -> dropout -> linear.

    Dropout makes the run depend on the random generator, so resume tests check that the
    generator state is reproduced. With ``aux`` the net has ``auxiliary_loss()`` returning
    ``aux_value`` plus a zero-weighted term of its last features.
    """

    def __init__(self, num_classes: int, in_chans: int, aux: bool = False,
                 aux_value: float = 0.0, nan_from: int | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, 8, 3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.drop = nn.Dropout(0.1)
        self.fc = nn.Linear(16, num_classes)
        self.pos = nn.Parameter(torch.zeros(16))
        self.aux, self.aux_value = aux, aux_value
        self.nan_from, self.aux_calls = nan_from, 0
        self._last: torch.Tensor | None = None
        if aux:
            self.auxiliary_loss = self._auxiliary_loss

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.conv2(x)).mean((2, 3)) + self.pos
        self._last = x
        return self.fc(self.drop(x))

    def _auxiliary_loss(self) -> torch.Tensor:
        assert self._last is not None
        self.aux_calls += 1
        if self.nan_from is not None and self.aux_calls > self.nan_from:
            return self._last.sum() * float("nan")
        return self._last.sum() * 0.0 + self.aux_value

    def no_weight_decay(self) -> set[str]:
        return {"pos"}


def tiny_test_net(num_classes: int = 10, in_chans: int = 1, img_size=(28, 28),
                  drop_path_rate: float = 0.0, **kwargs) -> nn.Module:
    return TinyNet(num_classes, in_chans)


def tiny_test_net_aux(num_classes: int = 10, in_chans: int = 1, img_size=(28, 28),
                      drop_path_rate: float = 0.0, aux_value: float = 50.0, **kwargs) -> nn.Module:
    return TinyNet(num_classes, in_chans, aux=True, aux_value=aux_value)


def tiny_test_net_nan(num_classes: int = 10, in_chans: int = 1, img_size=(28, 28),
                      drop_path_rate: float = 0.0, nan_from: int = 5, **kwargs) -> nn.Module:
    return TinyNet(num_classes, in_chans, aux=True, aux_value=0.0, nan_from=nan_from)


def register() -> None:
    """Register the test nets (idempotent)."""
    from beyond_attention.models._registry import _MODELS, register_model

    for fn in (tiny_test_net, tiny_test_net_aux, tiny_test_net_nan):
        if fn.__name__ not in _MODELS:
            register_model(input_size=(1, 28, 28), mean=(0.2860,), std=(0.3530,),
                           num_classes=10, dataset="fashion-mnist")(fn)


def unregister() -> None:
    """Remove the test nets from the registry."""
    from beyond_attention.models._registry import _MODELS

    for name in (NAME, AUX_NAME, NAN_NAME):
        _MODELS.pop(name, None)


def kill_after(steps: int):
    """A step hook that SIGKILLs this process once ``steps`` steps are done."""
    def hook(steps_done: int) -> None:
        if steps_done >= steps:
            os.kill(os.getpid(), signal.SIGKILL)
    return hook


if __name__ == "__main__":
    register()
    from beyond_attention.cli import main

    argv = sys.argv[1:]
    if argv[:1] == ["--sleep-per-step"]:
        import time

        import beyond_attention.commands.train as train_command

        seconds = float(argv[1])
        train_command.train = functools.partial(train_command.train,
                                                on_step=lambda _: time.sleep(seconds))
        argv = argv[2:]
    if argv[:1] == ["--kill-after-steps"]:
        import beyond_attention.commands.train as train_command

        train_command.train = functools.partial(train_command.train,
                                                on_step=kill_after(int(argv[1])))
        argv = argv[2:]
    sys.exit(main(argv))
