"""What a run's console shows, and its copy in the run directory's job log (`train.log`).

- `silence_third_party_noise()`: targeted filters for messages of libraries that tell the user
  nothing (an advertisement, deprecations inside Lightning, a default being applied). Each is
  matched by its logger or warning category and the start of its text, so every other warning
  still shows.
- `ConsoleFormatter`: the console format of conf/hydra/job_logging/tempo.yaml: INFO lines
  as plain text (as Lightning prints them), warnings and errors with logger and level.
- `route_lightning_logs()`: Lightning's log lines through the job's logging, printed once.
- `console_to_log_file()`: while a job runs, every line written to stdout or stderr (tempo's
  own lines, warnings, progress bars' final states, errors) is also written to the job log
  file that Hydra's logging set up; log records reach that file through Hydra's handler.

Importing this module is cheap (no torch or Lightning): the entry points use it before they
import the heavy parts.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TextIO

#: (logger name, start of the message) of log records dropped; a filter on a logger sees only
#: the records logged to that logger itself, so each is named exactly.
NOISY_RECORDS: tuple[tuple[str, str], ...] = (
    # "Tip: ... try installing litlogger" at every Trainer; both names, whichever is wired
    ("lightning.pytorch.utilities.rank_zero", "\N{ELECTRIC LIGHT BULB} Tip:"),
    ("lightning.fabric.utilities.rank_zero", "\N{ELECTRIC LIGHT BULB} Tip:"),
    # trainer.save_checkpoint() without weights_only: the full checkpoint is what tempo wants
    ("lightning.pytorch.trainer.connectors.checkpoint_connector", "`weights_only` was not set"),
)

#: (category, regular expression matching the start of the message) of warnings ignored.
NOISY_WARNINGS: tuple[tuple[type[Warning], str], ...] = (
    # Lightning's own pytree helper uses torch's deprecated LeafSpec (nothing a user can change)
    (FutureWarning, r"`isinstance\(treespec, LeafSpec\)` is deprecated"),
)

# Cursor movement / erase sequences: a line holding one is redrawn in place (a live display
# such as Rich's progress bar in a terminal), not a line of the log. Colours (SGR, "...m")
# are only stripped.
_REDRAW = re.compile(r"\x1b\[[0-9;?]*[A-HJKST]|\x1b\[\?25[lh]")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_MAX_PENDING = 8192  # characters of an unfinished line kept (progress bars never end a line)


class _DropPrefix(logging.Filter):
    """Drops the records whose message starts with `prefix`."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


def silence_third_party_noise() -> None:
    """Install the filters of `NOISY_RECORDS` and `NOISY_WARNINGS` (idempotent)."""
    for name, prefix in NOISY_RECORDS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropPrefix) and f.prefix == prefix for f in logger.filters):
            logger.addFilter(_DropPrefix(prefix))
    for category, message in NOISY_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)


def quiet_wandb_loggers(loggers: Iterable[Any]) -> None:
    """Lightning's WandbLogger passes `anonymous=None` to `wandb.init`, which wandb answers
    with "The anonymous setting has no effect" on every run; an unset value (the key left
    out) means the same to wandb. Call before the W&B run starts (at its first use)."""
    for logger in loggers:
        init = getattr(logger, "_wandb_init", None)
        if isinstance(init, dict) and init.get("anonymous", False) is None:
            del init["anonymous"]


#: Loggers Lightning gives stream handlers of their own (the top one always, the others when
#: imported before logging was configured).
LIGHTNING_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric")


def route_lightning_logs() -> None:
    """When the root logger has handlers (Hydra's job logging: console and job log file), let
    Lightning's records reach them instead of Lightning's own stderr handlers, so each line
    prints once, in the job's format, and lands in the job log. Call after importing Lightning
    (it attaches the handlers at import)."""
    if not logging.getLogger().handlers:
        return
    for name in LIGHTNING_LOGGERS:
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            if type(handler) is logging.StreamHandler:
                logger.removeHandler(handler)
        logger.propagate = True


class ConsoleFormatter(logging.Formatter):
    """INFO and below as the bare message; WARNING and above as `[logger][LEVEL] - message`."""

    def __init__(self) -> None:
        super().__init__("%(message)s")
        self._loud = logging.Formatter("[%(name)s][%(levelname)s] - %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        if record.levelno >= logging.WARNING:
            return self._loud.format(record)
        return super().format(record)


def log_line(text: str) -> str | None:
    """The line a log file keeps of one console line: what a terminal finally shows after
    carriage returns (a progress bar's last state), without colour codes; None for an empty
    line or one a live display redraws in place."""
    text = text.rstrip("\r").rsplit("\r", 1)[-1]
    if _REDRAW.search(text):
        return None
    text = _ANSI.sub("", text).rstrip()
    return text or None


class _LogTee:
    """A text stream that writes through to `stream` and hands each finished line to the log
    file handlers as a record of logger `name`; every other attribute is the stream's own
    (isatty, fileno, encoding, buffer), so progress bars and colour detection see the
    terminal as before."""

    def __init__(self, stream: TextIO, handlers: Sequence[logging.Handler], name: str) -> None:
        self._stream = stream
        self._handlers = list(handlers)
        self._name = name
        self._pending = ""
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        written = self._stream.write(text)
        if text:
            with self._lock:
                *lines, self._pending = (self._pending + text).split("\n")
                if len(self._pending) > _MAX_PENDING:  # keep the last redraw only
                    cut = self._pending.rstrip("\r").rfind("\r")
                    self._pending = self._pending[max(cut, len(self._pending) - _MAX_PENDING) :]
            for line in lines:
                self._emit(line)
        return written

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        self._stream.flush()

    def detach(self) -> None:
        """Log an unfinished last line, then only write through: a library that kept this
        stream (a handler made during the job) must not reach a finished job's log."""
        with self._lock:
            pending, self._pending = self._pending, ""
        if pending:
            self._emit(pending)
        self._handlers = []

    def _emit(self, line: str) -> None:
        text = log_line(line)
        if text is None:
            return
        record = logging.LogRecord(self._name, logging.INFO, "", 0, text, None, None)
        for handler in self._handlers:
            handler.handle(record)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def job_log_handlers() -> list[logging.FileHandler]:
    """The file handlers of the root logger: Hydra's job log (`<job name>.log`), if any."""
    return [h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]


@contextmanager
def console_to_log_file(handlers: Sequence[logging.Handler] | None = None) -> Iterator[None]:
    """Copy stdout and stderr line by line into `handlers` (default: the job log file
    handlers) for the duration; an exception leaving the block is written there with its
    traceback (the console gets it from Hydra). Without a file handler (Hydra's job logging
    disabled) nothing changes."""
    handlers = job_log_handlers() if handlers is None else list(handlers)
    if not handlers:
        yield
        return
    out, err = sys.stdout, sys.stderr
    tees = (_LogTee(out, handlers, "stdout"), _LogTee(err, handlers, "stderr"))
    sys.stdout, sys.stderr = tees
    try:
        yield
    except Exception:
        failure = sys.exc_info()
        record = logging.LogRecord("tempo", logging.ERROR, "", 0, "job failed", None, failure)
        for handler in handlers:
            handler.handle(record)
        raise
    finally:
        for tee in tees:
            tee.detach()
        if sys.stdout is tees[0]:
            sys.stdout = out
        if sys.stderr is tees[1]:
            sys.stderr = err
