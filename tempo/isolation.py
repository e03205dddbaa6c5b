"""Run a function in a forked child process, so that the child's death (SIGKILL from the
out-of-memory killer, a segfault) ends only that call, not the process that made it.

Local sweeps use it: a joblib (loky) worker whose process dies takes the whole sweep with it
(loky's executor breaks and stops every other worker), so each sweep job trains in a child of
its worker and the worker only waits. The child's return value or exception comes back
through a pipe; a child that dies without sending one raises `ChildDied` in the parent.
"""

from __future__ import annotations

import atexit
import logging
import os
import pickle
import signal
import sys
import traceback
from collections.abc import Callable
from typing import Any

#: Set in the child, so that code it runs does not fork again.
IN_CHILD_ENV = "TEMPO_ISOLATED_CHILD"


class ChildDied(RuntimeError):
    """The child process ended without a result: killed by a signal, or exited early."""

    def __init__(self, pid: int, signum: int | None, exitcode: int | None) -> None:
        self.pid, self.signum, self.exitcode = pid, signum, exitcode
        super().__init__(self.describe())

    def describe(self) -> str:
        if self.signum is not None:
            name = signal.Signals(self.signum).name
            hint = ", e.g. by the out-of-memory killer" if self.signum == signal.SIGKILL else ""
            return f"killed by signal {self.signum} ({name}{hint})"
        return f"exited with code {self.exitcode} without a result"


class _ChildTraceback(Exception):
    """The traceback text of an exception raised in the child (attached as __cause__)."""


def _exception_payload(err: BaseException) -> bytes:
    """`err` as bytes that rebuild it in the parent: its class, args and attributes."""
    text = "".join(traceback.format_exception(type(err), err, err.__traceback__))
    try:
        payload = pickle.dumps(("raise", type(err), err.args, dict(vars(err)), text))
        pickle.loads(payload)
        return payload
    except Exception:  # noqa: BLE001 - an exception that does not pickle: its text then
        message = f"{type(err).__name__}: {err}"
        return pickle.dumps(("raise", RuntimeError, (message,), {}, text))


def _rebuild(kind: type[BaseException], args: tuple, attrs: dict, text: str) -> BaseException:
    err = kind.__new__(kind, *args)
    err.args = args
    vars(err).update(attrs)
    err.__cause__ = _ChildTraceback(text)
    return err


def in_child() -> bool:
    """True in a process started by `run_in_child`."""
    return os.environ.get(IN_CHILD_ENV) == "1"


def run_in_child(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """`fn(*args, **kwargs)` in a forked child; its result, or its exception re-raised here.
    Raises ChildDied when the child ends without either. POSIX only."""
    read_fd, write_fd = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        os.close(read_fd)
        os.environ[IN_CHILD_ENV] = "1"
        atexit._clear()  # the parent's exit handlers are not the child's to run
        code = 0
        try:
            payload = pickle.dumps(("return", fn(*args, **kwargs)))
        except BaseException as err:  # noqa: BLE001 - everything goes to the parent
            payload = _exception_payload(err)
        try:
            with os.fdopen(write_fd, "wb") as pipe:
                pipe.write(payload)
            atexit._run_exitfuncs()  # those the child registered (e.g. W&B's finish)
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
        except BaseException:  # noqa: BLE001
            code = 1
        os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    if not data:
        signum = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
        exitcode = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
        raise ChildDied(pid, signum, exitcode)
    kind, *rest = pickle.loads(data)
    if kind == "return":
        return rest[0]
    raise _rebuild(*rest)
