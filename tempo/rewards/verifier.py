"""A persistent pool of worker processes that runs checks and reward functions under a timeout.

Why processes: Math-Verify can take unbounded time (sympy on adversarial answers), its own
signal-based timeout only works on the main thread, and a user's reward function may hang,
crash or eat memory. Each worker is a fresh interpreter (``subprocess``, never ``fork``: the
trainer runs torch threads) that answers one item at a time over a socket pair; the parent
waits with a deadline and, when a worker overruns, kills it, starts a fresh one, and scores that
item 0.0. Every wait in this module has a deadline, so no call hangs.

Why not ``multiprocessing``'s "spawn" or "forkserver": both re-run the caller's ``__main__``
script in the child (``multiprocessing.spawn._fixup_main_from_path``), so a script that calls
``math_reward`` at top level without an ``if __name__ == "__main__":`` guard killed every
worker at start-up, and a script that imports torch made each worker import it too. A worker
here runs ``python -c "...; from tempo.rewards.verifier import _serve; _serve(fd)"``: it
inherits the caller's environment, interpreter flags, working directory and ``sys.path`` (sent
over the pipe before anything else), never its ``__main__``. Hence a check, a reward function
or a job's callable must be importable by the worker: defined in a module, not in the
``__main__`` script (one that is not fails with a clear error: at start-up for the pool's
check, as that job's error outcome otherwise).

The worker protocol: an item is ``(target, args)``. ``target`` is an import path
(``"pkg.mod:func"`` or ``"pkg.mod.func"``, resolved and cached inside the worker), a picklable
callable, or None for the pool's own check (Math-Verify equivalence, or a task's check), whose
reply is read as a bool. ``args`` is a tuple (positional) or a dict (keyword arguments). The
reply is any picklable value. `VerifierPool.run` runs a list of such `Job`s and returns one
`Outcome` per job; `score` / `score_answers` / `verify` are the answer checks built on it.

Hostile answers are bounded in three ways: an answer longer than ``max_answer_chars`` is scored
0.0 without a worker (never pickled across the pipe); a worker overrunning its deadline is
killed (SIGKILL) and replaced; and each worker's address space may grow by at most
``memory_limit_mb`` past its size after start-up (``RLIMIT_AS``), so a sympy blow-up ends in a
``MemoryError`` instead of eating the machine's memory. The item scores 0.0; a MemoryError that
reaches the worker loop is counted as an error and retires the worker (Math-Verify swallows
some internally; those score 0.0 as "not equivalent").
"""

from __future__ import annotations

import importlib
import logging
import multiprocessing as mp
import os
import re
import signal
import subprocess
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.reduction import ForkingPickler
from pathlib import Path
from typing import Any

from tempo.rewards.boxed import extract_boxed

# A check run inside a worker: (extracted answer, gold answer) -> equivalent?
Target = Callable[[str, str], bool]

log = logging.getLogger(__name__)

# Bounded and ASCII-only: int() of huge digit strings is slow (and refused past 4300 digits),
# and Math-Verify does not read non-ASCII digits ("４２") as numbers, so neither may the shortcut.
_INTEGER = re.compile(r"-?[0-9]{1,100}")
_READY = "ready"
_FAILED = "failed"
_JOIN_S = 2.0
_MEMORY_ERROR = "MemoryError"
_PREVIEW_CHARS = 80
#: Worker-side Math-Verify entry points (tempo/rewards/equivalence.py).
VERIFY_COMPLETION = "tempo.rewards.equivalence:verify_completion"
EXTRACT_ANSWER = "tempo.rewards.equivalence:extract_answer"
EXTRACTIONS = ("boxed", "math_verify")


def resolve_target(path: str) -> Any:
    """The object an import path names: ``"pkg.mod:attr.sub"`` or ``"pkg.mod.attr"``.

    The dotted form imports the longest prefix that is a module, then reads the rest as
    attributes. An ImportError raised *inside* an existing module (its own broken import)
    propagates as is; a path naming no module raises ImportError, a missing attribute
    AttributeError.
    """
    if not isinstance(path, str) or not path.strip():
        raise ImportError(f"not an import path: {path!r}")
    if ":" in path:
        module_name, _, attrs = path.partition(":")
        return _attributes(importlib.import_module(module_name), attrs.split("."), path)
    parts = path.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        name = ".".join(parts[:cut])
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name and (name == err.name or name.startswith(err.name + ".")):
                continue  # this prefix is not a module: try a shorter one
            raise  # the module exists, an import inside it failed
        return _attributes(module, parts[cut:], path)
    raise ImportError(f"no importable module in {path!r} (expected pkg.module.function)")


def _attributes(obj: Any, names: list[str], path: str) -> Any:
    for name in names:
        if not hasattr(obj, name):
            raise AttributeError(f"{path!r}: {getattr(obj, '__name__', obj)!s} has no {name!r}")
        obj = getattr(obj, name)
    return obj


def _limit_memory(headroom_mb: int | None) -> None:
    """Cap this process's address space at its current size plus ``headroom_mb`` MiB.

    Relative to the size after start-up, not absolute: a worker whose check or preloaded
    reward function imports torch already maps gigabytes of address space. Best effort: silently
    skipped where ``resource`` or ``/proc`` is missing (non-Linux).
    """
    if not headroom_mb:
        return
    try:
        import resource

        with open("/proc/self/status") as status:
            line = next(line for line in status if line.startswith("VmSize:"))
        size = int(line.split()[1]) * 1024  # reported in kB
        limit = size + int(headroom_mb) * 2**20
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        for existing in (soft, hard):
            if existing != resource.RLIM_INFINITY:
                limit = min(limit, existing)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    except (ImportError, OSError, ValueError, StopIteration):
        pass


def _worker_main(
    conn: Connection,
    check: Target | None,
    memory_limit_mb: int | None,
    preload: tuple[str, ...] = (),
) -> None:
    """Worker loop: resolve ``preload``, signal readiness, then answer ``(target, args)`` items
    until told to stop (``None``) or the parent goes away."""
    if check is None:
        from tempo.rewards.equivalence import answers_equivalent

        check = answers_equivalent
        answers_equivalent("1", "1")  # warm up sympy/antlr before reporting ready
    resolved: dict[str, Any] = {}
    for path in preload:  # imports (e.g. a reward function's module) happen before the clock
        try:
            resolved[path] = resolve_target(path)
        except Exception:  # reported by the item that uses it, not at start-up
            pass
    _limit_memory(memory_limit_mb)
    conn.send_bytes(ForkingPickler.dumps((_READY, None)))
    while True:
        try:
            data = conn.recv_bytes()
        except (EOFError, OSError):
            return  # parent went away
        try:
            # Unpickled here, not by recv(): an item naming a callable the worker cannot
            # import (e.g. one defined in the caller's __main__) is that item's error.
            message = ForkingPickler.loads(data)
            if message is None:
                return
            target, args = message
            if target is None:
                value: Any = bool(check(*args))
            else:
                fn = resolved.get(target) if isinstance(target, str) else target
                if fn is None:
                    fn = resolved[target] = resolve_target(target)
                value = fn(**args) if isinstance(args, dict) else fn(*args)
            reply: tuple[str, Any] = ("ok", value)
        except Exception as exc:  # any failure (MemoryError included) is scored 0.0
            # Only the type name: str() of some sympy objects can itself hang.
            reply = ("err", type(exc).__name__)
        try:
            payload = ForkingPickler.dumps(reply)
        except Exception:
            payload = ForkingPickler.dumps(("err", "UnpicklableResult"))
        conn.send_bytes(payload)


def _serve(fd: int) -> None:
    """A worker process's entry point: the end ``fd`` of the parent's socket pair.

    The first message is ``(sys.path, payload)``: the parent's import path is installed before
    ``payload`` (the pickled ``(check, memory_limit_mb, preload)``) is unpickled, so the check
    resolves as it does in the parent. A check that cannot be unpickled is reported to the
    parent as ``("failed", reason)`` instead of the ready message.
    """
    # Ctrl-C reaches the whole process group; let the parent decide what to do.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    conn = Connection(fd)
    try:
        sys_path, payload = ForkingPickler.loads(conn.recv_bytes())
    except (EOFError, OSError):
        return  # parent went away before sending the set-up
    sys.path[:] = list(sys_path)
    try:
        check, memory_limit_mb, preload = ForkingPickler.loads(payload)
    except Exception as exc:
        reason = f"{type(exc).__name__}: {str(exc)[:300]}"
        try:
            conn.send_bytes(ForkingPickler.dumps((_FAILED, reason)))
        except OSError:
            pass
        return
    _worker_main(conn, check, memory_limit_mb, tuple(preload))


def _worker_command(fd: int) -> list[str]:
    """The command line of a worker serving socket ``fd``: this interpreter with its flags
    (``-X``, ``-W``, ``-I``...), importing tempo from where the parent did; never the
    parent's ``__main__``."""
    root = str(Path(__file__).resolve().parents[2])
    boot = (
        f"import sys; sys.path.insert(0, {root!r}); "
        f"from tempo.rewards.verifier import _serve; _serve({int(fd)})"
    )
    flags = subprocess._args_from_interpreter_flags()  # what multiprocessing uses too
    return [sys.executable, *flags, "-c", boot]


class _Process:
    """The parent's handle of a worker subprocess, with the ``multiprocessing.Process``
    methods the pool (and its tests) use: ``pid``, ``exitcode``, ``is_alive``, ``kill``,
    ``join``."""

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self._popen = popen

    @property
    def pid(self) -> int:
        return self._popen.pid

    @property
    def exitcode(self) -> int | None:
        return self._popen.poll()

    def is_alive(self) -> bool:
        return self._popen.poll() is None

    def kill(self) -> None:
        try:
            self._popen.kill()
        except ProcessLookupError:
            pass

    def join(self, timeout: float | None = None) -> None:
        try:
            self._popen.wait(timeout)
        except subprocess.TimeoutExpired:
            pass


def _preview(text: str, tail: bool = False) -> str:
    """A short, printable rendering of an answer (or a completion's end) for a log line."""
    if len(text) <= _PREVIEW_CHARS:
        return repr(text)
    shown = repr(text[-_PREVIEW_CHARS:]) if tail else repr(text[:_PREVIEW_CHARS])
    return ("..." + shown if tail else shown + "...") + f" ({len(text)} chars)"


def _shortcut(pred: str, ref: str) -> float | None:
    """A score without a worker where Math-Verify's verdict is certain, else None: an exact
    match, or two plain integers (equal values or not)."""
    if pred == ref:
        return 1.0
    if _INTEGER.fullmatch(pred) and _INTEGER.fullmatch(ref):
        return float(int(pred) == int(ref))
    return None


@dataclass
class Tally:
    """Counters of the jobs charged to it: items sent to a worker, timeouts, errors (an
    exception, a MemoryError past the limit, a worker dying, an unpicklable item or reply),
    the longest time one item held a worker (seconds), and the last error's name."""

    calls: int = 0
    timeouts: int = 0
    errors: int = 0
    max_latency: float = 0.0
    last_error: str | None = None


@dataclass
class Job:
    """One item for the workers: ``target(*args)`` or ``target(**args)`` under ``timeout``."""

    target: str | Callable[..., Any] | None  # import path, picklable callable, None = the check
    args: tuple | dict  # positional (tuple) or keyword (dict) arguments
    timeout: float | None = None  # wall-clock seconds; None = the pool's timeout
    tally: Tally | None = None  # where its counts go; None = the pool's own (the verifier's)
    preview: str | None = None  # shown in the timeout warning; None = no warning (caller reports)


@dataclass(frozen=True)
class Outcome:
    """What became of one job: ``status`` ok (``value`` is the reply), error (``error`` is the
    exception's type name, ``WorkerDied``, ``PicklingError``...) or timeout."""

    status: str  # "ok" | "error" | "timeout"
    value: Any = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


_NOT_RUN = Outcome("error", error="NotRun")


@dataclass(eq=False)
class _Worker:
    """Parent-side handle of one worker process."""

    proc: _Process
    conn: Connection
    state: str  # "starting" | "idle" | "busy"
    deadline: float
    item: int = -1
    sent: float = 0.0  # monotonic time the current item was sent


def _stop(worker: _Worker) -> None:
    """Kill a worker and reap it (bounded wait; workers are daemonic as a last resort)."""
    try:
        if worker.proc.is_alive():
            worker.proc.kill()
        worker.proc.join(_JOIN_S)
    except (OSError, ValueError, AssertionError):
        pass  # already reaped, or not our child (after a fork)
    worker.conn.close()


def _stop_all(workers: list[_Worker]) -> None:
    """Finalizer: stop every worker (runs on ``close``, garbage collection, or exit)."""
    while workers:
        _stop(workers.pop())


class VerifierPool:
    """Runs answer checks (Math-Verify by default) and other jobs in timed-out worker processes.

    Workers start lazily on first need and are stopped by ``close()``, on garbage collection,
    or at interpreter exit. Counters of the answer checks, for logging: ``calls`` (items sent
    to a worker), ``timeouts`` (each also logged as a warning), ``errors`` (Math-Verify
    exceptions, a ``MemoryError`` past the memory limit, or a worker dying mid-item),
    ``fast_path`` (items scored by the shortcuts without a worker) and ``rejected`` (answers
    longer than ``max_answer_chars``, scored 0.0 without a worker); ``max_latency`` is the
    longest any check has held a worker (seconds, from send to answer or kill). Jobs given to
    `run` with their own `Tally` are counted there instead.

    ``target`` replaces the Math-Verify check with another picklable top-level function of
    ``(pred, gold) -> bool`` (a task's own answer check, or a test double); ``shortcuts``
    (default True) scores exact string matches and pairs of plain integers without a worker,
    which is only right for checks that agree with them (Math-Verify does).
    ``max_answer_chars`` (default 1000; None = no cap) bounds what is sent to a worker: no
    real final answer is that long, and Math-Verify's time grows with the length.
    ``memory_limit_mb`` (default 2048; None or 0 = none) is how far a worker's address space
    may grow past its size after start-up; an item that needs more ends in a MemoryError,
    scores 0.0 and retires the worker. ``preload``: import paths each worker resolves before
    it reports ready (e.g. reward functions), so their import is not timed. Calls from
    several threads are serialised by a lock. Workers are fresh interpreters that never run
    the caller's ``__main__`` (a script needs no ``if __name__ == "__main__"`` guard): start-up
    is ~0.7 s (Math-Verify's imports), more if the check or a preloaded function imports torch.
    """

    def __init__(
        self,
        timeout: float = 5.0,
        workers: int = 1,
        *,
        startup_timeout: float = 120.0,
        target: Target | None = None,
        shortcuts: bool = True,
        max_answer_chars: int | None = 1000,
        memory_limit_mb: int | None = 2048,
        preload: Sequence[str] = (),
    ) -> None:
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0, got {timeout}")
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if max_answer_chars is not None and max_answer_chars < 1:
            raise ValueError(f"max_answer_chars must be >= 1 or None, got {max_answer_chars}")
        if memory_limit_mb is not None and memory_limit_mb < 0:
            raise ValueError(f"memory_limit_mb must be >= 0 or None, got {memory_limit_mb}")
        self.timeout = float(timeout)
        self.workers = int(workers)
        self.startup_timeout = float(startup_timeout)
        self.tally = Tally()
        self.fast_path = 0
        self.rejected = 0
        self._target = target
        self.shortcuts = shortcuts
        self.max_answer_chars = None if max_answer_chars is None else int(max_answer_chars)
        self.memory_limit_mb = int(memory_limit_mb) if memory_limit_mb else None
        self.preload = tuple(dict.fromkeys(preload))
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._closed = False
        self._live: list[_Worker] = []
        self._finalizer = weakref.finalize(self, _stop_all, self._live)

    # The answer checks' counters (see the class docstring).
    calls = property(lambda self: self.tally.calls)
    timeouts = property(lambda self: self.tally.timeouts)
    errors = property(lambda self: self.tally.errors)
    max_latency = property(lambda self: self.tally.max_latency)
    last_error = property(lambda self: self.tally.last_error)

    # ----------------------------------------------------------------- public API

    def score(
        self, completions: Sequence[str], golds: Sequence[str], timeout: float | None = None
    ) -> list[float]:
        """1.0/0.0 per completion: is its last ``\\boxed{}`` answer equivalent to the gold?"""
        if len(completions) != len(golds):
            raise ValueError(f"got {len(completions)} completions but {len(golds)} golds")
        return self.score_answers([extract_boxed(c) for c in completions], golds, timeout)

    def score_answers(
        self,
        answers: Sequence[str | None],
        golds: Sequence[str],
        timeout: float | None = None,
    ) -> list[float]:
        """Like ``score`` for already-extracted answers (None = no answer, scores 0.0).

        Exact matches after stripping whitespace, and pairs of plain integers (compared by
        value), are scored without a worker; so are answers longer than ``max_answer_chars``
        (0.0, counted as ``rejected``); the rest go to the workers with a per-item wall-clock
        ``timeout`` (default: the pool's).
        """
        if len(answers) != len(golds):
            raise ValueError(f"got {len(answers)} answers but {len(golds)} golds")
        scores = [0.0] * len(answers)
        todo: list[int] = []
        jobs: list[Job] = []
        for i, (answer, gold) in enumerate(zip(answers, golds, strict=True)):
            if not isinstance(answer, str) or not isinstance(gold, str):
                continue
            pred, ref = answer.strip(), gold.strip()
            if not pred or not ref:
                continue
            quick = _shortcut(pred, ref) if self.shortcuts else None
            if quick is not None:
                scores[i] = quick
                self.fast_path += 1
                continue
            if self.max_answer_chars is not None and len(pred) > self.max_answer_chars:
                self.rejected += 1
                continue
            todo.append(i)
            jobs.append(Job(None, (pred, ref), timeout, preview=_preview(pred)))
        if jobs:
            for i, outcome in zip(todo, self.run(jobs), strict=True):
                scores[i] = 1.0 if outcome.ok and outcome.value else 0.0
        return scores

    def verify(
        self,
        completions: Sequence[str],
        golds: Sequence[str],
        extraction: str = "boxed",
        timeout: float | None = None,
    ) -> tuple[list[float], list[str | None]]:
        """(1.0/0.0 per completion, its extracted answer or None), by ``extraction``.

        ``boxed``: the last closed ``\\boxed{}`` (extracted here), checked as in
        `score_answers`. ``math_verify``: Math-Verify's own extraction of the last LaTeX or
        plain expression anywhere in the completion, done in the worker with the check (the
        pool's Math-Verify check: one item per completion; a task's own check: Math-Verify
        extracts the answer string in a first pass, the check judges it in a second). An
        extracted answer longer than ``max_answer_chars`` scores 0.0 unchecked (``rejected``).
        """
        if len(completions) != len(golds):
            raise ValueError(f"got {len(completions)} completions but {len(golds)} golds")
        if extraction not in EXTRACTIONS:
            raise ValueError(f"extraction must be one of {', '.join(EXTRACTIONS)}: {extraction!r}")
        if extraction == "boxed":
            answers = [extract_boxed(c) for c in completions]
            return self.score_answers(answers, golds, timeout), answers
        rows = [i for i, c in enumerate(completions) if isinstance(c, str) and c.strip()]
        if self._target is not None:
            jobs = [
                Job(EXTRACT_ANSWER, (completions[i],), timeout, preview=_preview(completions[i]))
                for i in rows
            ]
            answers: list[str | None] = [None] * len(completions)
            for i, outcome in zip(rows, self.run(jobs) if jobs else [], strict=True):
                if outcome.ok and isinstance(outcome.value, str):
                    answers[i] = outcome.value
            return self.score_answers(answers, golds, timeout), answers
        scores = [0.0] * len(completions)
        answers = [None] * len(completions)
        cap = self.max_answer_chars
        jobs = [
            Job(
                VERIFY_COMPLETION,
                (completions[i], golds[i] if isinstance(golds[i], str) else "", cap),
                timeout,
                preview=_preview(completions[i], tail=True),
            )
            for i in rows
        ]
        for i, outcome in zip(rows, self.run(jobs) if jobs else [], strict=True):
            if not outcome.ok:
                continue
            verdict, answer = outcome.value
            answers[i] = answer
            if answer is not None and verdict is None:
                self.rejected += 1
            scores[i] = 1.0 if verdict else 0.0
        return scores, answers

    def run(self, jobs: Sequence[Job]) -> list[Outcome]:
        """Run ``jobs`` on the workers (in parallel up to ``workers``); one `Outcome` each.

        Never raises for what a job does: an exception, a timeout, a memory blow-up or a dead
        worker is that job's outcome, charged to its tally (a timeout kills and replaces the
        worker). Raises only if the pool is closed or a worker cannot start.
        """
        for job in jobs:
            if job.timeout is not None and not job.timeout > 0:
                raise ValueError(f"job timeout must be > 0, got {job.timeout}")
        with self._lock:
            return self._run(list(jobs))

    def prestart(self) -> None:
        """Start the workers now, without waiting for them: their start-up (a process and
        Math-Verify's imports, seconds) then overlaps other work instead of landing in the
        first call that needs a worker."""
        if self._closed:
            raise RuntimeError("VerifierPool is closed")
        while len(self._live) < self.workers:
            self._start()

    def close(self) -> None:
        """Stop all workers; the pool cannot be used afterwards."""
        self._closed = True
        if os.getpid() == self._pid:
            self._finalizer()
        else:
            self._finalizer.detach()

    def __enter__(self) -> VerifierPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ----------------------------------------------------------------- internals

    def _tally(self, job: Job) -> Tally:
        return self.tally if job.tally is None else job.tally

    def _run(self, jobs: list[Job]) -> list[Outcome]:
        """Run ``jobs`` on the workers: dispatch, wait with deadlines, replace on overrun."""
        if self._closed:
            raise RuntimeError("VerifierPool is closed")
        if os.getpid() != self._pid:
            # Forked child: the workers belong to the parent; start our own.
            self._finalizer.detach()
            self._live = []
            self._finalizer = weakref.finalize(self, _stop_all, self._live)
            self._pid = os.getpid()
        results: list[Outcome | None] = [None] * len(jobs)
        pending = deque(range(len(jobs)))
        retried: set[int] = set()
        try:
            while True:
                self._dispatch(pending, jobs, results, retried)
                busy = [w for w in self._live if w.state == "busy"]
                if not pending and not busy:
                    return [_NOT_RUN if r is None else r for r in results]
                waiting = [w for w in self._live if w.state != "idle"]
                if not waiting:  # defensive: nothing to wait for, dispatch again
                    continue
                delay = min(w.deadline for w in waiting) - time.monotonic()
                ready = wait([w.conn for w in waiting], max(0.0, delay))
                for worker in waiting:
                    if worker.conn in ready:
                        self._receive(worker, jobs, results)
                now = time.monotonic()
                for worker in list(self._live):
                    if worker.state != "idle" and worker.deadline <= now:
                        self._expire(worker, jobs, results)
        finally:
            # On an exception (e.g. KeyboardInterrupt) a busy worker's late answer must not
            # be read by the next call as if it were for a new item.
            for worker in [w for w in self._live if w.state == "busy"]:
                self._retire(worker)

    def _dispatch(
        self,
        pending: deque[int],
        jobs: list[Job],
        results: list[Outcome | None],
        retried: set[int],
    ) -> None:
        """Hand pending jobs to idle workers; start workers (up to the cap) for the rest."""
        for worker in list(self._live):
            while pending and worker.state == "idle":
                index = pending.popleft()
                job = jobs[index]
                try:
                    payload = ForkingPickler.dumps((job.target, job.args))
                except Exception as exc:  # e.g. an unpicklable callable or argument
                    self._error(index, jobs, results, type(exc).__name__)
                    continue  # nothing was sent: the worker takes the next job
                try:
                    worker.conn.send_bytes(payload)
                except (OSError, ValueError):
                    # The worker died while idle (e.g. killed from outside): nothing of this
                    # item ran, so give it one more try on a fresh worker before scoring it 0.
                    if index in retried:
                        self._error(index, jobs, results, "BrokenPipe")
                    else:
                        retried.add(index)
                        pending.appendleft(index)
                    self._retire(worker)
                    break
                self._tally(job).calls += 1
                worker.state, worker.item = "busy", index
                worker.sent = time.monotonic()
                timeout = self.timeout if job.timeout is None else job.timeout
                worker.deadline = worker.sent + timeout
        starting = sum(w.state == "starting" for w in self._live)
        while len(pending) > starting and len(self._live) < self.workers:
            self._start()
            starting += 1

    def _start(self) -> None:
        # Pickled here first: an unpicklable check fails now, in the caller, with nothing started.
        payload = ForkingPickler.dumps((self._target, self.memory_limit_mb, self.preload))
        setup = ForkingPickler.dumps((list(sys.path), bytes(payload)))
        parent_conn, child_conn = mp.Pipe(duplex=True)
        try:
            fd = child_conn.fileno()
            popen = subprocess.Popen(
                _worker_command(fd), pass_fds=(fd,), stdin=subprocess.DEVNULL, close_fds=True
            )
        except BaseException:
            parent_conn.close()
            raise
        finally:
            child_conn.close()
        try:
            parent_conn.send_bytes(setup)
        except OSError:
            pass  # the worker already died: reported as a start-up failure by _receive
        deadline = time.monotonic() + self.startup_timeout
        self._live.append(_Worker(_Process(popen), parent_conn, "starting", deadline))

    def _done(self, worker: _Worker, jobs: list[Job]) -> None:
        """Record the latency of the item a busy worker just finished (or was killed on)."""
        if worker.state == "busy":
            tally = self._tally(jobs[worker.item])
            tally.max_latency = max(tally.max_latency, time.monotonic() - worker.sent)

    def _error(
        self, index: int, jobs: list[Job], results: list[Outcome | None], reason: str
    ) -> None:
        tally = self._tally(jobs[index])
        tally.errors += 1
        tally.last_error = reason
        results[index] = Outcome("error", error=reason)

    def _receive(self, worker: _Worker, jobs: list[Job], results: list[Outcome | None]) -> None:
        try:
            data = worker.conn.recv_bytes()
        except (EOFError, OSError):
            if worker.state == "starting":
                self._retire(worker)
                raise RuntimeError(
                    f"verifier worker died during start-up (exit code {worker.proc.exitcode})"
                ) from None
            self._fail_item(worker, jobs, results, "WorkerDied")
            return
        if worker.state == "starting":
            try:
                kind, reason = ForkingPickler.loads(data)
            except Exception:
                kind, reason = _FAILED, "an unreadable start-up message"
            if kind != _READY:
                self._retire(worker)
                hint = (
                    " (the check must be importable by the worker: define it in a module, "
                    "not in the __main__ script)"
                    if "__main__" in str(reason)
                    else ""
                )
                raise RuntimeError(f"verifier worker could not load its check: {reason}{hint}")
            worker.state, worker.deadline = "idle", float("inf")
            return
        self._done(worker, jobs)
        try:
            kind, value = ForkingPickler.loads(data)
        except Exception:  # e.g. a reply whose class the parent cannot import
            kind, value = "err", "UnreadableResult"
        if kind == "ok":
            results[worker.item] = Outcome("ok", value)
        else:
            self._error(worker.item, jobs, results, str(value))
            if value == _MEMORY_ERROR:
                # Hit the address-space cap: start the next item on a clean process (sympy's
                # caches may still hold the blow-up's intermediates).
                self._retire(worker)
                return
        worker.state, worker.item, worker.deadline = "idle", -1, float("inf")

    def _expire(self, worker: _Worker, jobs: list[Job], results: list[Outcome | None]) -> None:
        if worker.state == "starting":
            self._retire(worker)
            raise RuntimeError(f"verifier worker did not start within {self.startup_timeout:.0f} s")
        job = jobs[worker.item]
        tally = self._tally(job)
        tally.timeouts += 1
        results[worker.item] = Outcome("timeout", error="Timeout")
        self._done(worker, jobs)
        self._retire(worker)
        if job.preview is not None:
            log.warning(
                "answer check overran %.3g s; worker killed and replaced (%d timeouts so far): %s",
                self.timeout if job.timeout is None else job.timeout,
                tally.timeouts,
                job.preview,
            )

    def _fail_item(
        self, worker: _Worker, jobs: list[Job], results: list[Outcome | None], reason: str
    ) -> None:
        """A worker died or broke while holding an item: count an error, replace it."""
        self._done(worker, jobs)
        self._error(worker.item, jobs, results, reason)
        self._retire(worker)

    def _retire(self, worker: _Worker) -> None:
        if worker in self._live:
            self._live.remove(worker)
        _stop(worker)
