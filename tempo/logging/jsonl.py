"""The project-owned metrics sink: `metrics.jsonl`, one JSON object per logged step.

Metrics logged for the same step (training and evaluation) are merged into one line; a line
is written when a later step arrives or the run ends (`close`). The file is what `tempo-compare` and
the tests read, so it never depends on W&B.

Each line is built first and written with one `write`, then fsynced; a write that fails (a full
disk) is cut back off, so the file only ever holds whole lines. Checkpoints carry the file's
length, the open step and a compressed copy of the file up to that length (`JsonlState`): a
run resumed from a checkpoint cuts the file back to that length, so lines written after the
checkpoint (or half-written by a killed process) are never duplicated, and a file that is
missing, shorter than the checkpoint's length (cut, torn last line) or different from it is
rewritten from the copy, with one line on stderr saying so (see `JsonlLogger.restore`).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
import zlib
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


def _whole_lines(data: bytes) -> bytes:
    """`data` up to its last complete line that parses (drops a torn or garbled tail)."""
    good = 0
    for line in data.splitlines(keepends=True):
        if not line.endswith(b"\n"):
            break
        try:
            json.loads(line)
        except ValueError:
            break
        good += len(line)
    return data[:good]


def _steps(data: bytes) -> str:
    steps = [json.loads(line).get("step") for line in data.splitlines() if line.strip()]
    if not steps:
        return "no lines"
    return f"{len(steps)} lines, steps {steps[0]}-{steps[-1]}"


def _replace_bytes(path: Path, data: bytes) -> None:
    """Write `path` as `data` through a temporary file and an atomic rename."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class JsonlLogger(Logger):
    """Lightning logger writing `<save_dir>/metrics.jsonl`; keeps the latest value of each key."""

    def __init__(self, save_dir: str | os.PathLike, filename: str = "metrics.jsonl") -> None:
        super().__init__()
        self._dir = Path(save_dir)
        self.path = self._dir / filename
        self._pending: dict[str, Any] | None = None
        self.latest: dict[str, Any] = {}
        self.history: dict[str, list[tuple[int, Any]]] = {}
        self._content = bytearray(self.path.read_bytes() if self.path.is_file() else b"")
        self._written = len(self._content)
        #: What `restore` had to repair (None when the file was as the checkpoint left it).
        self.repaired: str | None = None

    @property
    def current_step(self) -> int | None:
        """The step being logged (the open one), else the last one logged; None before any."""
        if self._pending is not None:
            return int(self._pending["step"])
        return max((step for series in self.history.values() for step, _ in series), default=None)

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
        """Append the open step as one line. On an OSError (e.g. ENOSPC) the file is cut back
        to its last whole line and the error, naming the file, propagates; the step stays
        open."""
        if self._pending is None:
            return
        self._dir.mkdir(parents=True, exist_ok=True)
        line = (json.dumps(self._pending) + "\n").encode("utf-8")
        try:
            with open(self.path, "ab") as fh:
                fh.write(line)
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as err:
            self._cut_back()
            raise OSError(err.errno, err.strerror or str(err), str(self.path)) from err
        self._written += len(line)
        self._content += line
        self._pending = None

    def _cut_back(self) -> None:
        """Drop whatever a failed write left after the last whole line (truncating frees
        space, so it works on a full disk)."""
        try:
            with open(self.path, "r+b") as fh:
                fh.truncate(self._written)
        except OSError:
            pass

    def state(self) -> dict[str, Any]:
        """What a checkpoint needs to put this file back where it stands now: its length, the
        open step, and the file's bytes up to that length (zlib-compressed)."""
        pending = None if self._pending is None else dict(self._pending)
        return {
            "file": self.path.name,
            "offset": self._written,
            "pending": pending,
            "data": zlib.compress(bytes(self._content[: self._written])),
        }

    @rank_zero_only
    def restore(self, state: dict[str, Any]) -> None:
        """Return to a checkpoint's `state()`: the file is cut back to the checkpoint's length
        (dropping lines logged after it) and the open step is reopened.

        The checkpoint's copy of the file decides what the first `offset` bytes are. When the
        file on disk does not start with them, it is rewritten from the copy and one line
        on stderr says what was found: the file missing (deleted, or a checkpoint of another
        run resumed into a new directory), shorter than the checkpoint's length (cut short, a
        torn last line), or different (then kept as `metrics.before-<time>.jsonl`). Paths are
        never taken from the checkpoint, so a copied or moved run directory resumes in place.
        A checkpoint without the copy (written before it existed) keeps the file's whole lines
        up to `offset`, and says so in one line when that is less than the checkpoint had.
        Global rank 0 only, like every write of this logger: other ranks' loggers hold nothing.
        """
        offset = int(state["offset"])
        self._dir.mkdir(parents=True, exist_ok=True)
        current = self.path.read_bytes() if self.path.is_file() else None
        if state.get("data") is not None:
            data = self._restored(zlib.decompress(state["data"])[:offset], current)
        else:
            data = self._legacy(state, offset, current)
        self._content = bytearray(data)
        self._written = len(data)
        self.latest, self.history = {}, {}
        for line in data.decode("utf-8").splitlines():
            record = json.loads(line)
            step = record.pop("step")
            for key, value in record.items():
                self._remember(key, value, step)
        self._pending = None if state["pending"] is None else dict(state["pending"])
        for key, value in (self._pending or {}).items():
            if key != "step":
                self._remember(key, value, self._pending["step"])

    def _restored(self, expected: bytes, current: bytes | None) -> bytes:
        """Make the file `expected`; cutting when it starts with it, rewriting when not."""
        offset = len(expected)
        if current is not None and current[:offset] == expected:
            if len(current) > offset:
                with open(self.path, "r+b") as fh:
                    fh.truncate(offset)
                    fh.flush()
                    os.fsync(fh.fileno())
            return expected
        name = self.path.name
        if current is None:
            what = f"{name} is missing"
        elif expected.startswith(current):
            what = f"{name} ends at byte {len(current)}, before the checkpoint's {offset}"
        else:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            kept = self.path.with_name(f"{self.path.stem}.before-{stamp}{self.path.suffix}")
            self.path.rename(kept)
            what = f"{name} differs from the checkpoint's copy (kept as {kept.name})"
        _replace_bytes(self.path, expected)
        self.repaired = f"{what}: rewritten from the checkpoint ({_steps(expected)})"
        print(f"[tempo] {self.repaired}", file=sys.stderr)
        return expected

    def _legacy(self, state: dict[str, Any], offset: int, current: bytes | None) -> bytes:
        """A checkpoint without the file's copy: keep the whole lines up to `offset`."""
        source = Path(state.get("path", self.path))
        if current is None and source.is_file() and source.resolve() != self.path.resolve():
            current = source.read_bytes()  # another run's checkpoint into a new directory
        kept = _whole_lines((current or b"")[:offset])
        _replace_bytes(self.path, kept)
        if len(kept) < offset:
            self.repaired = (
                f"{self.path.name} holds {len(kept)} of the checkpoint's {offset} bytes and the "
                f"checkpoint has no copy: kept its whole lines ({_steps(kept)}); the lines "
                "after them are lost"
            )
            print(f"[tempo] {self.repaired}", file=sys.stderr)
        return kept

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
