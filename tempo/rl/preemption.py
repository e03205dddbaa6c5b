"""Checkpoint-before-exit on preemption signals (SLURM, submitit, `kill`, job schedulers).

A signal can arrive in the middle of a decoding loop or an optimiser step, where no state is
consistent, so the handler only records it. The training loop checks at the end of each RL step:
it then saves a checkpoint, stops, and the runner reports the run as preempted. Whatever handler
was installed before (e.g. submitit's, which requeues the job) is called after that, so the
scheduler's own requeue logic still runs, only later.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

#: SIGTERM: preemption and `scancel`; SIGUSR1: SLURM `--signal`; SIGUSR2: submitit's timeout.
SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)


class PreemptionCheckpoint(Callback):
    """Records preemption signals; at the next RL-step boundary saves `path` and stops."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.signum: int | None = None
        self.saved_step: int | None = None
        self._previous: dict[int, Any] = {}
        self._previous_after: dict[int, Any] = {}  # kept by `uninstall` for `chain`

    def install(self) -> None:
        """Start recording the signals (main thread only; elsewhere signals cannot be caught)."""
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in SIGNALS:
            self._previous[sig] = signal.getsignal(sig)
            signal.signal(sig, self._record)

    def _reassert(self) -> None:
        """Take the signals back from Lightning, which installs its own handlers when fit or
        validate starts (its SIGTERM handling would end the run at the epoch's end by raising
        SystemExit, without our checkpoint); the real previous handlers stay recorded."""
        if self._previous and threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                signal.signal(sig, self._record)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._reassert()

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._reassert()

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        self._previous_after = dict(self._previous)
        self._previous = {}

    def _record(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is None:
            self.signum = signum

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if self.signum is not None and self.saved_step is None:
            trainer.save_checkpoint(self.path)
            self.saved_step = trainer.global_step
            trainer.should_stop = True

    def chain(self) -> None:
        """Hand the signal to the handler that was installed before ours, if it is a function
        (e.g. submitit's requeue); default and ignore dispositions are left alone."""
        previous: Callable | Any = self._previous_after.get(self.signum)
        if self.signum is not None and callable(previous):
            previous(self.signum, None)
