"""Ctrl-C during training: finish the step, save a resumable checkpoint, stop.

While :class:`StopOnSigint` is active, the first SIGINT only sets a flag; the training loop
looks at it after each step (a host-side boolean, no synchronisation), writes ``last.*`` at
that step exactly as a scheduled checkpoint, and raises :class:`TrainingInterrupted`. A
second SIGINT interrupts at once (Python's default behaviour), leaving the previous
checkpoint. Under DDP the processes must agree on the step, so the flag is exchanged at the
loop's existing synchronisation points (checkpoints and the end of an epoch) and the run
stops at the first one after the signal.
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from types import FrameType, TracebackType


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on SIGINT after saving a checkpoint.

    Attributes:
        checkpoint: the ``last.json`` written at the stop.
        step: the global steps done.
    """

    def __init__(self, checkpoint: Path, step: int) -> None:
        super().__init__(f"interrupted after step {step}; checkpoint {checkpoint}")
        self.checkpoint = checkpoint
        self.step = step


class StopOnSigint:
    """A context manager turning the first SIGINT into :attr:`requested` (main thread only;
    elsewhere it does nothing). The previous handler is restored on exit."""

    def __init__(self, announce: bool = True) -> None:
        self.requested = False
        self.announce = announce
        self._previous: object = None
        self._active = False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C: now
        if self.announce:
            print("interrupt: saving a checkpoint after this step (Ctrl-C again to stop now)",
                  file=sys.stderr, flush=True)

    def __enter__(self) -> StopOnSigint:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
            self._active = True
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._active:
            signal.signal(signal.SIGINT, self._previous)  # type: ignore[arg-type]
            self._active = False
