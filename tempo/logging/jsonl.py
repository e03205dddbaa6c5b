"""The project-owned metrics sink: `metrics.jsonl`, one JSON object per logged step.

Metrics logged for the same step (training and evaluation) are merged into one line; a line
is written when a later step arrives or the run ends (`close`). The file is what `tempo-compare` and
the tests read, so it never depends on W&B.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

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
            self.latest[key] = value
            self.history.setdefault(key, []).append((step, value))

    def _flush(self) -> None:
        if self._pending is None:
            return
        self._dir.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(self._pending) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        self._pending = None

    @rank_zero_only
    def finalize(self, status: str) -> None:
        """Lightning calls this after every fit/validate; the run may go on, so keep the
        current step open (a later step or `close` writes it)."""

    @rank_zero_only
    def close(self) -> None:
        """Write what is buffered; call once when the run ends."""
        self._flush()
