"""One process per run directory: an exclusive `flock` on `<run_dir>/.lock` for the run's life.

The lock dies with its process (the kernel releases a `flock` when the last descriptor of the
open file closes), so a run that was killed never blocks the next start; the file itself stays
and holds the PID of the process that last held it, which a refused start names.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from tempo.config_error import ConfigError

LOCK_NAME = ".lock"


class RunLock:
    """An exclusive hold on a run directory; `release` (or the process's end) gives it up."""

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.path = Path(run_dir) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        """Take the lock, or raise ConfigError(hydra.run.dir) naming the PID that holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = holder_pid(self.path.parent)
            raise ConfigError(
                "hydra.run.dir",
                str(self.path.parent),
                f"a run directory no other process is using (PID {holder or '?'} is running "
                "in it; wait for it to end or stop it, or use another directory)",
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def holder_pid(run_dir: str | os.PathLike) -> int | None:
    """The PID recorded in the run directory's lock file, or None."""
    try:
        text = (Path(run_dir) / LOCK_NAME).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def is_locked(run_dir: str | os.PathLike) -> bool:
    """True when another open file description holds the run directory's lock (another
    process, or another `RunLock` in this one)."""
    path = Path(run_dir) / LOCK_NAME
    if not path.is_file():
        return False
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
