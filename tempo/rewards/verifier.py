"""A persistent pool of worker processes that runs Math-Verify under a wall-clock timeout.

Why processes: Math-Verify can take unbounded time (sympy on adversarial answers), and its
own signal-based timeout only works on the main thread. Each worker is a ``spawn``-ed process
(never ``fork``: the trainer runs torch threads) that answers one item at a time over a pipe;
the parent waits with a deadline and, when a worker overruns, kills it, starts a fresh one,
and scores that item 0.0. Every wait in this module has a deadline, so ``score`` never hangs.

Hostile answers are bounded in three ways: an answer longer than ``max_answer_chars`` is scored
0.0 without a worker (never pickled across the pipe); a worker overrunning its deadline is
killed (SIGKILL) and replaced; and each worker's address space may grow by at most
``memory_limit_mb`` past its size after start-up (``RLIMIT_AS``), so a sympy blow-up ends in a
``MemoryError`` instead of eating the machine's memory. The item scores 0.0; a MemoryError that
reaches the worker loop is counted as an error and retires the worker (Math-Verify swallows
some internally; those score 0.0 as "not equivalent").
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import re
import signal
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess

from tempo.rewards.boxed import extract_boxed

# A check run inside a worker: (extracted answer, gold answer) -> equivalent?
Target = Callable[[str, str], bool]

log = logging.getLogger(__name__)

# Bounded and ASCII-only: int() of huge digit strings is slow (and refused past 4300 digits),
# and Math-Verify does not read non-ASCII digits ("４２") as numbers, so neither may the shortcut.
_INTEGER = re.compile(r"-?[0-9]{1,100}")
_READY = "ready"
_JOIN_S = 2.0
_MEMORY_ERROR = "MemoryError"
_PREVIEW_CHARS = 80


def _limit_memory(headroom_mb: int | None) -> None:
    """Cap this process's address space at its current size plus ``headroom_mb`` MiB.

    Relative to the size after start-up, not absolute: a worker that imported torch through
    the parent's ``__main__`` already maps gigabytes of address space. Best effort: silently
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


def _worker_main(conn: Connection, target: Target | None, memory_limit_mb: int | None) -> None:
    """Worker loop: signal readiness, then answer ``(pred, gold)`` items until told to stop."""
    # Ctrl-C reaches the whole process group; let the parent decide what to do.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if target is None:
        from tempo.rewards.equivalence import answers_equivalent

        target = answers_equivalent
        answers_equivalent("1", "1")  # warm up sympy/antlr before reporting ready
    _limit_memory(memory_limit_mb)
    conn.send((_READY, None))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return  # parent went away
        if message is None:
            return
        pred, gold = message
        try:
            reply = ("ok", bool(target(pred, gold)))
        except Exception as exc:  # any Math-Verify failure (MemoryError included) is scored 0.0
            # Only the type name: str() of some sympy objects can itself hang.
            reply = ("err", type(exc).__name__)
        conn.send(reply)


def _preview(text: str) -> str:
    """A short, printable rendering of an answer for a log line."""
    shown = repr(text[:_PREVIEW_CHARS])
    return shown + f"... ({len(text)} chars)" if len(text) > _PREVIEW_CHARS else shown


def _standard_start_method() -> None:
    """Make spawned workers start in a plain interpreter.

    A spawned child re-applies the parent's *global* start method. Inside a joblib/loky
    worker (Hydra's joblib launcher) that is "loky", which a plain child cannot find, so the
    verifier worker would die at start-up; reset it to "spawn" there.
    """
    if mp.get_start_method(allow_none=True) not in (None, "fork", "spawn", "forkserver"):
        mp.set_start_method("spawn", force=True)


def _shortcut(pred: str, ref: str) -> float | None:
    """A score without a worker where Math-Verify's verdict is certain, else None: an exact
    match, or two plain integers (equal values or not)."""
    if pred == ref:
        return 1.0
    if _INTEGER.fullmatch(pred) and _INTEGER.fullmatch(ref):
        return float(int(pred) == int(ref))
    return None


@dataclass(eq=False)
class _Worker:
    """Parent-side handle of one worker process."""

    proc: BaseProcess
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
    """Scores completions against gold answers with Math-Verify in timed-out worker processes.

    Workers start lazily on first need and are stopped by ``close()``, on garbage collection,
    or at interpreter exit. Counters for logging: ``calls`` (items sent to a worker),
    ``timeouts`` (each also logged as a warning), ``errors`` (Math-Verify exceptions, a
    ``MemoryError`` past the memory limit, or a worker dying mid-item), ``fast_path`` (items
    scored by the shortcuts without a worker) and ``rejected`` (answers longer than
    ``max_answer_chars``, scored 0.0 without a worker); ``max_latency`` is the longest any
    item has held a worker (seconds, from send to answer or kill).

    ``target`` replaces the Math-Verify check with another picklable top-level function of
    ``(pred, gold) -> bool`` (a task's own answer check, or a test double); ``shortcuts``
    (default True) scores exact string matches and pairs of plain integers without a worker,
    which is only right for checks that agree with them (Math-Verify does).
    ``max_answer_chars`` (default 1000; None = no cap) bounds what is sent to a worker: no
    real final answer is that long, and Math-Verify's time grows with the length.
    ``memory_limit_mb`` (default 2048; None or 0 = none) is how far a worker's address space
    may grow past its size after start-up; an item that needs more ends in a MemoryError,
    scores 0.0 and retires the worker. Calls from
    several threads are serialised by a lock. Workers are spawned, so they import the
    parent's ``__main__`` module (guard scripts with ``if __name__ == "__main__"``): start-up
    is ~0.7 s, ~2.5 s if it imports torch.
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
        self.calls = 0
        self.timeouts = 0
        self.errors = 0
        self.fast_path = 0
        self.rejected = 0
        self.max_latency = 0.0
        self.last_error: str | None = None
        self._target = target
        self.shortcuts = shortcuts
        self.max_answer_chars = None if max_answer_chars is None else int(max_answer_chars)
        self.memory_limit_mb = int(memory_limit_mb) if memory_limit_mb else None
        _standard_start_method()
        self._ctx = mp.get_context("spawn")
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._closed = False
        self._live: list[_Worker] = []
        self._finalizer = weakref.finalize(self, _stop_all, self._live)

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
        items: list[tuple[str, str]] = []
        for i, (answer, gold) in enumerate(zip(answers, golds, strict=True)):
            if answer is None:
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
            items.append((pred, ref))
        if items:
            with self._lock:
                results = self._run(items, self.timeout if timeout is None else float(timeout))
            for i, result in zip(todo, results, strict=True):
                scores[i] = result
        return scores

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

    def _run(self, items: list[tuple[str, str]], timeout: float) -> list[float]:
        """Score ``items`` on the workers: dispatch, wait with deadlines, replace on overrun."""
        if self._closed:
            raise RuntimeError("VerifierPool is closed")
        if os.getpid() != self._pid:
            # Forked child: the workers belong to the parent; start our own.
            self._finalizer.detach()
            self._live = []
            self._finalizer = weakref.finalize(self, _stop_all, self._live)
            self._pid = os.getpid()
        results = [0.0] * len(items)
        pending = deque(range(len(items)))
        retried: set[int] = set()
        try:
            while True:
                self._dispatch(pending, items, timeout, retried)
                busy = [w for w in self._live if w.state == "busy"]
                if not pending and not busy:
                    return results
                waiting = [w for w in self._live if w.state != "idle"]
                if not waiting:  # defensive: nothing to wait for, dispatch again
                    continue
                delay = min(w.deadline for w in waiting) - time.monotonic()
                ready = wait([w.conn for w in waiting], max(0.0, delay))
                for worker in waiting:
                    if worker.conn in ready:
                        self._receive(worker, results)
                now = time.monotonic()
                for worker in list(self._live):
                    if worker.state != "idle" and worker.deadline <= now:
                        self._expire(worker, items, timeout)
        finally:
            # On an exception (e.g. KeyboardInterrupt) a busy worker's late answer must not
            # be read by the next call as if it were for a new item.
            for worker in [w for w in self._live if w.state == "busy"]:
                self._retire(worker)

    def _dispatch(
        self,
        pending: deque[int],
        items: list[tuple[str, str]],
        timeout: float,
        retried: set[int],
    ) -> None:
        """Hand pending items to idle workers; start workers (up to the cap) for the rest."""
        for worker in list(self._live):
            if not pending:
                return
            if worker.state == "idle":
                index = pending.popleft()
                try:
                    worker.conn.send(items[index])
                except (OSError, ValueError):
                    # The worker died while idle (e.g. killed from outside): nothing of this
                    # item ran, so give it one more try on a fresh worker before scoring it 0.
                    if index in retried:
                        self._fail_item(worker, "BrokenPipe")
                    else:
                        retried.add(index)
                        pending.appendleft(index)
                        self._retire(worker)
                    continue
                self.calls += 1
                worker.state, worker.item = "busy", index
                worker.sent = time.monotonic()
                worker.deadline = worker.sent + timeout
        starting = sum(w.state == "starting" for w in self._live)
        while len(pending) > starting and len(self._live) < self.workers:
            self._start()
            starting += 1

    def _start(self) -> None:
        parent_conn, child_conn = self._ctx.Pipe(duplex=True)
        proc = self._ctx.Process(
            target=_worker_main,
            args=(child_conn, self._target, self.memory_limit_mb),
            name="tempo-verifier",
            daemon=True,
        )
        try:
            proc.start()
        finally:
            child_conn.close()
            if proc.pid is None:  # start failed (e.g. an unpicklable target)
                parent_conn.close()
        deadline = time.monotonic() + self.startup_timeout
        self._live.append(_Worker(proc, parent_conn, "starting", deadline))

    def _done(self, worker: _Worker) -> None:
        """Record the latency of the item a busy worker just finished (or was killed on)."""
        if worker.state == "busy":
            self.max_latency = max(self.max_latency, time.monotonic() - worker.sent)

    def _receive(self, worker: _Worker, results: list[float]) -> None:
        try:
            kind, value = worker.conn.recv()
        except (EOFError, OSError):
            if worker.state == "starting":
                self._retire(worker)
                raise RuntimeError(
                    f"verifier worker died during start-up (exit code {worker.proc.exitcode})"
                ) from None
            self._fail_item(worker, "WorkerDied")
            return
        if worker.state == "starting":
            worker.state, worker.deadline = "idle", float("inf")
            return
        self._done(worker)
        if kind == "ok":
            results[worker.item] = 1.0 if value else 0.0
        else:
            self.errors += 1
            self.last_error = str(value)
            if value == _MEMORY_ERROR:
                # Hit the address-space cap: start the next item on a clean process (sympy's
                # caches may still hold the blow-up's intermediates).
                self._retire(worker)
                return
        worker.state, worker.item, worker.deadline = "idle", -1, float("inf")

    def _expire(self, worker: _Worker, items: list[tuple[str, str]], timeout: float) -> None:
        if worker.state == "starting":
            self._retire(worker)
            raise RuntimeError(f"verifier worker did not start within {self.startup_timeout:.0f} s")
        self.timeouts += 1
        self._done(worker)
        self._retire(worker)
        log.warning(
            "answer check overran %.3g s; worker killed and replaced (%d timeouts so far): %s",
            timeout,
            self.timeouts,
            _preview(items[worker.item][0]),
        )

    def _fail_item(self, worker: _Worker, reason: str) -> None:
        """A worker died or broke while holding an item: count an error, replace it."""
        self._done(worker)
        self.errors += 1
        self.last_error = reason
        self._retire(worker)

    def _retire(self, worker: _Worker) -> None:
        if worker in self._live:
            self._live.remove(worker)
        _stop(worker)
