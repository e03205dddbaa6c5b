"""Checkpoint-before-exit on preemption signals (SLURM, submitit, `kill`, job schedulers, Ctrl-C).

A signal can arrive in the middle of a decoding loop or an optimiser step, where no state is
consistent, so the handler only records it. The training loop checks at the end of each RL step:
it then saves a checkpoint, stops, and the runner reports the run as preempted (SIGINT, i.e.
Ctrl-C: interrupted). Whatever handler was installed before (e.g. submitit's, which requeues the
job) is called after that, so the scheduler's own requeue logic still runs, only later.

The handler is idempotent: a second signal (of any of these kinds) only finds the first one
recorded, so it can neither interrupt the checkpoint being written nor end the run another way.
Lightning installs its own SIGTERM handler at the start of every `fit`/`validate` (it would end
the run by raising SystemExit, without our checkpoint); the guard takes the signals back in the
first hook after that and clears the flag Lightning's handler may have set in between.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

#: SIGTERM: preemption and `scancel`; SIGUSR1: SLURM `--signal`; SIGUSR2: submitit's timeout;
#: SIGINT: Ctrl-C.
SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2, signal.SIGINT)


def _on_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


class PreemptionCheckpoint(Callback):
    """Records preemption signals; at the next RL-step boundary saves `path` and stops."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.signum: int | None = None
        self.saved_step: int | None = None
        self.signals_seen = 0
        self._previous: dict[int, Any] = {}
        self._previous_after: dict[int, Any] = {}  # kept by `uninstall` for `chain`
        self._trainer: L.Trainer | None = None

    @property
    def interrupted(self) -> bool:
        """True when the recorded signal is Ctrl-C (SIGINT) rather than a scheduler's."""
        return self.signum == signal.SIGINT

    @property
    def status(self) -> str:
        """The run status the recorded signal stands for."""
        return "interrupted" if self.interrupted else "preempted"

    def install(self) -> None:
        """Start recording the signals (main thread only; elsewhere signals cannot be caught).
        Installing again keeps the handlers recorded the first time."""
        if not _on_main_thread() or self._previous:
            return
        for sig in SIGNALS:
            self._previous[sig] = signal.getsignal(sig)
            signal.signal(sig, self._record)

    def _take_back(self, trainer: L.Trainer | None = None) -> None:
        """Make `_record` the handler again where another one (Lightning's) replaced it, and
        clear Lightning's SIGTERM flag: the signal is ours to act on. Safe to call often."""
        if trainer is not None:
            self._trainer = trainer
        if not self._previous or not _on_main_thread():
            return
        for sig in SIGNALS:
            if signal.getsignal(sig) != self._record:
                signal.signal(sig, self._record)
        self._clear_lightning_flag()

    def _clear_lightning_flag(self) -> None:
        connector = getattr(self._trainer, "_signal_connector", None)
        if connector is not None and getattr(connector, "received_sigterm", False):
            connector.received_sigterm = False

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._trainer = trainer

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._take_back(trainer)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._take_back(trainer)

    def on_validation_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        self._take_back(trainer)

    def uninstall(self) -> None:
        """Put the previous handlers back (once; calling it again does nothing)."""
        if not self._previous:
            return
        for sig, handler in self._previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        self._previous_after = dict(self._previous)
        self._previous = {}
        self._trainer = None

    def _record(self, signum: int, frame: FrameType | None) -> None:
        """The handler: note the first signal, nothing else (async-signal-safe enough to run
        at any point, also while a checkpoint is being written)."""
        self.signals_seen += 1
        self._clear_lightning_flag()  # Lightning's handler, when it ran first, set it
        if self.signum is not None:
            return
        self.signum = signum
        if signum == signal.SIGINT:
            os.write(
                2,
                b"[tempo] Ctrl-C: stopping after this RL step with a checkpoint "
                b"(Ctrl-\\ quits at once, without one)\n",
            )

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        self._take_back(trainer)
        if self.signum is not None and self.saved_step is None:
            trainer.save_checkpoint(self.path)
            self.saved_step = trainer.global_step
            trainer.should_stop = True

    def chain(self) -> None:
        """Hand the signal to the handler that was installed before ours, if it is a function
        (e.g. submitit's requeue); default and ignore dispositions are left alone, and so is
        Python's own SIGINT handler (it would only raise KeyboardInterrupt)."""
        previous: Callable | Any = self._previous_after.get(self.signum)
        if previous is signal.default_int_handler:
            return
        if self.signum is not None and callable(previous):
            previous(self.signum, None)
