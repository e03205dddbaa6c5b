"""The project-owned metrics sink: `metrics.jsonl`, one JSON object per logged step.

Metrics logged for the same step (training and evaluation) are merged into one line; a line
is written when a later step arrives or the run ends (`close`). The file is what `tempo-compare` and
the tests read, so it never depends on W&B.

Each line is written with one `write` and fsynced, and checkpoints carry the file's length and the
open step (`JsonlState`): a run resumed from a checkpoint cuts the file back to that length, so
lines written after the checkpoint (or half-written by a killed process) are never duplicated.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers.logger import Logger, rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/inf; keep them visible instead of dropping them
    return value


class JsonlLogger(Logger):
    """Lightning logger writing `<save_dir>/metrics.jsonl`; keeps the latest value of each key."""

    def __init__(self, save_dir: str | os.PathLike, filename: str = "metrics.jsonl") -> None:
        super().__init__()
        self._dir = Path(save_dir)
        self.path = self._dir / filename
        self._pending: dict[str, Any] | None = None
        self.latest: dict[str, Any] = {}
        self.history: dict[str, list[tuple[int, Any]]] = {}
        self._written = self.path.stat().st_size if self.path.is_file() else 0

    @property
    def name(self) -> str:
        return "jsonl"

    @property
    def version(self) -> str:
        return ""

    @property
    def save_dir(self) -> str:
        return str(self._dir)

    @property
    @rank_zero_experiment
    def experiment(self) -> JsonlLogger:
        return self

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        """The resolved config lives in `.hydra/`; nothing to add here."""

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        step = int(step or 0)
        if self._pending is not None and self._pending["step"] != step:
            self._flush()
        if self._pending is None:
            self._pending = {"step": step}
        for key, value in metrics.items():
            value = _plain(value)
            self._pending[key] = value
            self._remember(key, value, step)

    def _remember(self, key: str, value: Any, step: int) -> None:
        self.latest[key] = value
        self.history.setdefault(key, []).append((step, value))

    def _flush(self) -> None:
        if self._pending is None:
            return
        self._dir.mkdir(parents=True, exist_ok=True)
        line = (json.dumps(self._pending) + "\n").encode("utf-8")
        with open(self.path, "ab") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())
        self._written += len(line)
        self._pending = None

    def state(self) -> dict[str, Any]:
        """What a checkpoint needs to put this file back where it stands now."""
        pending = None if self._pending is None else dict(self._pending)
        return {"path": str(self.path), "offset": self._written, "pending": pending}

    @rank_zero_only
    def restore(self, state: dict[str, Any]) -> None:
        """Return to a checkpoint's `state()`: the file is cut back to the checkpoint's length
        (dropping lines logged after it) and the open step is reopened. A checkpoint from another
        run directory brings the first `offset` bytes of that run's file when this one is new.
        Global rank 0 only, like every write of this logger: other ranks' loggers hold nothing
        (and would find the file rank 0 has just copied)."""
        offset = int(state["offset"])
        source = Path(state["path"])
        self._dir.mkdir(parents=True, exist_ok=True)
        if source.resolve() != self.path.resolve():
            if self.path.is_file() and self.path.stat().st_size > 0:
                raise RuntimeError(
                    f"{self.path} already holds metrics; resume into a new run directory"
                )
            data = source.read_bytes()[:offset] if source.is_file() else b""
            self.path.write_bytes(data)
        elif self.path.is_file():
            with open(self.path, "r+b") as fh:
                fh.truncate(min(offset, fh.seek(0, os.SEEK_END)))
                fh.flush()
                os.fsync(fh.fileno())
        else:
            self.path.write_bytes(b"")
        self._written = self.path.stat().st_size
        self.latest, self.history = {}, {}
        for line in self.path.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            step = record.pop("step")
            for key, value in record.items():
                self._remember(key, value, step)
        self._pending = None if state["pending"] is None else dict(state["pending"])
        for key, value in (self._pending or {}).items():
            if key != "step":
                self._remember(key, value, self._pending["step"])

    @rank_zero_only
    def finalize(self, status: str) -> None:
        """Lightning calls this after every fit/validate; the run may go on, so keep the
        current step open (a later step or `close` writes it)."""

    @rank_zero_only
    def close(self) -> None:
        """Write what is buffered; call once when the run ends."""
        self._flush()


class JsonlState(Callback):
    """Carries a `JsonlLogger`'s position in every checkpoint and restores it on resume."""

    def __init__(self, logger: JsonlLogger) -> None:
        self.logger = logger

    def state_dict(self) -> dict[str, Any]:
        return self.logger.state()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.logger.restore(state_dict)
