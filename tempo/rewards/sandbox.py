"""Run an untrusted Python solution against trusted tests in a throwaway, locked-down process.

`run_sandboxed` starts a fresh ``python -I -S -B`` (isolated mode, no site-packages, no
bytecode writes) from the calling process (a verifier worker, so the pool's per-item
timeout applies on top) with:

* **its own wall-clock timeout**: the child leads a new session (``setsid``), and on overrun
  or exit its whole process group is killed (SIGKILL);
* **resource limits** set by the child before any untrusted code: RLIMIT_CPU (the timeout,
  rounded up), RLIMIT_AS (``memory_mb``), RLIMIT_NPROC 0 (no fork, no thread: a fork bomb
  cannot start), RLIMIT_FSIZE, RLIMIT_NOFILE, RLIMIT_CORE 0;
* **a throwaway working directory** (``tempfile.mkdtemp``, removed afterwards, also TMPDIR;
  a folder left by a killed worker is removed by the next process's first sandbox);
* **death with its parent**: ``PR_SET_PDEATHSIG`` (SIGKILL), so a verifier worker killed at
  the pool's timeout takes its sandbox with it;
* **a stripped environment**: only ``PATH=/usr/bin:/bin``, ``LC_ALL=C.UTF-8`` and ``TMPDIR``
  (no HOME, no tokens, no PYTHONPATH);
* **another user** when the caller is root: ``nobody`` (no groups), with an interpreter
  ``nobody`` can run (the caller's base interpreter, else ``python3.X`` / ``python3`` on
  PATH, probed once per process); and ``PR_SET_NO_NEW_PRIVS``;
* **no network**: a new network namespace (``unshare(CLONE_NEWNET)``, with a user namespace
  when unprivileged) where the kernel allows it, and in any case the audit hook below;
* **an audit hook** (`tempo/rewards/_sandbox_boot.py`) installed before the solution runs
  that refuses: sockets, subprocesses, ``os.system`` / exec / spawn / fork / kill,
  ctypes and the other native back doors (their imports), opening files for writing
  outside the sandbox folder, reading files outside Python's own stdlib folders (and the
  folder), listing other folders, deleting / renaming / linking / chmod outside the folder,
  ``chdir``, and frame introspection (``sys._getframe``, ``tb_frame``...) from non-stdlib code;
* **output caps**: stdout and stderr go to one anonymous file of at most ``max_output_bytes``
  (RLIMIT_FSIZE; more kills the child), of which the first 64 KiB are kept.

The verdict: the solution runs in one namespace, the tests in a fresh one (the prompt's own
helpers executed anew, a copy of the builtins taken before the solution ran, the modules the
solution imported re-imported fresh); ``check(candidate)`` must return, and with
``strict_returns`` every value the candidate returns must be built of exact builtin types
(an object whose ``__eq__`` always says True fails). Only then does the child write a random
nonce (sent over stdin, never on disk or in argv) to a pipe; ``sys.exit(0)`` or
``os._exit(0)`` from the solution do not pass.

What this does NOT stop (the honest limits): the audit hook is a Python-level guard in the
same process, so anything that reaches native code bypasses it (a C extension found on
disk, a bug in CPython; ctypes and friends are refused at import, which is the cheap path).
The frame check trusts a code object's file name, which a program
can forge (``compile(src, "/usr/lib/python3.11/x.py", "exec")``): such a program reaches the
checker's frames and can forge the verdict (shown in five lines), and a program can still
patch objects the tests share with it (e.g. a stdlib module both use). When the caller
is not root, the child runs as the caller's user: the hook is then the only barrier to the
user's files, and kernel isolation rests on the namespace and rlimits. Treat a pass as
"the tests passed unless the program attacked the checker", never as a security proof; for
adversarial code at scale use a container or VM (gVisor, Firecracker) around the workers.
"""

from __future__ import annotations

import json
import logging
import math
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

log = logging.getLogger(__name__)

_BOOT = (Path(__file__).with_name("_sandbox_boot.py")).read_text(encoding="utf-8")
_FLAGS = ("-I", "-S", "-B", "-X", "utf8")
_KEEP_OUTPUT = 64 * 1024
_RESULT_BYTES = 4096
_SANDBOX_USER = "nobody"
_PREFIX = "tempo-sandbox-"
_STALE_S = 3600.0


@dataclass(frozen=True)
class SandboxResult:
    """What one sandboxed run did: ``status`` passed | failed | timeout | error."""

    status: str
    seconds: float
    returncode: int | None = None
    output: str = ""  # the first 64 KiB of stdout + stderr
    network_isolated: bool = False  # the child entered its own network namespace
    user: str = ""  # the user the child ran as

    @property
    def passed(self) -> bool:
        return self.status == "passed"


@dataclass(frozen=True)
class _Identity:
    python: str
    uid: int | None  # None = the caller's own user
    gid: int | None
    name: str


def _candidates() -> list[str]:
    found = [os.path.realpath(getattr(sys, "_base_executable", sys.executable) or "")]
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for name in (version, "python3"):
        for folder in ("/usr/bin", "/usr/local/bin", "/bin"):
            path = os.path.join(folder, name)
            if os.path.isfile(path):
                found.append(os.path.realpath(path))
        which = shutil.which(name)
        if which:
            found.append(os.path.realpath(which))
    return [p for p in dict.fromkeys(found) if p and os.path.isfile(p)]


@lru_cache(maxsize=1)
def sandbox_identity() -> _Identity:
    """Interpreter and user for sandboxes (probed once per process): as root, ``nobody``
    with the first candidate interpreter it can run; else the caller's user and its own
    base interpreter."""
    candidates = _candidates()
    if os.geteuid() == 0:
        try:
            import pwd

            entry = pwd.getpwnam(_SANDBOX_USER)
        except (ImportError, KeyError):
            entry = None
        if entry is not None:
            for python in candidates:
                try:
                    probe = subprocess.run(
                        [python, *_FLAGS, "-c", "import json, resource"],
                        user=entry.pw_uid,
                        group=entry.pw_gid,
                        extra_groups=[],
                        env={"PATH": "/usr/bin:/bin"},
                        cwd="/",
                        capture_output=True,
                        timeout=30,
                    )
                except (OSError, subprocess.SubprocessError):
                    continue
                if probe.returncode == 0:
                    return _Identity(python, entry.pw_uid, entry.pw_gid, _SANDBOX_USER)
        log.warning(
            "code sandbox: no interpreter runs as %r; sandboxes run as root (the audit hook "
            "and rlimits still apply)",
            _SANDBOX_USER,
        )
    import getpass

    try:
        name = getpass.getuser()
    except Exception:  # noqa: BLE001 - only a label
        name = str(os.geteuid())
    return _Identity(candidates[0] if candidates else sys.executable, None, None, name)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, not ours
    return True


@lru_cache(maxsize=1)
def _sweep_stale_folders() -> None:
    """Once per process: remove sandbox folders whose creating process is gone (a verifier
    worker killed mid-run) or that are older than an hour (no sandbox lives that long)."""
    cutoff = time.time() - _STALE_S
    for folder in Path(tempfile.gettempdir()).glob(_PREFIX + "*-*"):
        owner = folder.name[len(_PREFIX) :].split("-", 1)[0]
        try:
            stale = folder.stat().st_mtime < cutoff
            if stale or (owner.isdigit() and not _alive(int(owner))):
                shutil.rmtree(folder, ignore_errors=True)
        except OSError:
            pass


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError, OSError):
        pass


def run_sandboxed(
    solution: str,
    tests: str,
    entry_point: str,
    *,
    prompt: str = "",
    timeout: float = 3.0,
    memory_mb: int = 512,
    max_output_bytes: int = 1 << 20,
    open_files: int = 64,
    strict_returns: bool = True,
    max_return_nodes: int = 1_000_000,
) -> SandboxResult:
    """Run ``solution`` then ``check(<entry_point>)`` from ``tests`` in a sandbox (see the
    module docstring). ``prompt``: trusted code executed before the tests in their own
    namespace (HumanEval's prompt: its helper functions and imports)."""
    if not (isinstance(timeout, (int, float)) and math.isfinite(timeout) and timeout > 0):
        raise ValueError(f"timeout must be a number of seconds > 0, got {timeout!r}")
    if memory_mb < 32:
        raise ValueError(f"memory_mb must be >= 32, got {memory_mb}")
    who = sandbox_identity()
    nonce = secrets.token_hex(16)
    request = {
        "nonce": nonce,
        "parent": os.getpid(),
        "solution": solution,
        "tests": tests,
        "entry_point": entry_point,
        "prompt": prompt,
        "strict_returns": bool(strict_returns),
        "limits": {
            "cpu_s": max(1, math.ceil(timeout)),
            "memory_bytes": int(memory_mb) << 20,
            "file_bytes": int(max_output_bytes),
            "open_files": int(open_files),
            "max_return_nodes": int(max_return_nodes),
        },
    }
    _sweep_stale_folders()
    box = os.path.realpath(tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-"))
    start = time.monotonic()
    read_end, write_end = os.pipe()
    output = tempfile.TemporaryFile()
    proc: subprocess.Popen[bytes] | None = None
    status, returncode = "error", None
    request["result_fd"] = write_end  # the child writes its boot line and verdict here
    payload = json.dumps(request).encode("utf-8")
    try:
        if who.uid is not None:
            os.chown(box, who.uid, who.gid if who.gid is not None else -1)
        os.chmod(box, 0o700)
        proc = subprocess.Popen(
            [who.python, *_FLAGS, "-c", _BOOT],
            stdin=subprocess.PIPE,
            stdout=output,
            stderr=subprocess.STDOUT,
            cwd=box,
            env={"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8", "TMPDIR": box},
            close_fds=True,
            pass_fds=(write_end,),
            start_new_session=True,
            umask=0o077,
            **(
                {"user": who.uid, "group": who.gid, "extra_groups": []}
                if who.uid is not None
                else {}
            ),
        )
        os.close(write_end)
        write_end = -1
        try:
            proc.communicate(payload, timeout=timeout)
            returncode = proc.returncode
        except subprocess.TimeoutExpired:
            status = "timeout"
    except OSError as err:
        log.warning("code sandbox could not start: %s", err)
    finally:
        if proc is not None:
            _kill_group(proc.pid)
            try:
                proc.wait(5.0)
            except subprocess.TimeoutExpired:
                pass
            if returncode is None and status != "timeout":
                returncode = proc.returncode
        if write_end >= 0:
            os.close(write_end)
        seconds = time.monotonic() - start
        try:
            os.set_blocking(read_end, False)
            verdict = os.read(read_end, _RESULT_BYTES)
        except (BlockingIOError, OSError):
            verdict = b""
        os.close(read_end)
        output.seek(0)
        text = output.read(_KEEP_OUTPUT).decode("utf-8", errors="replace")
        output.close()
        shutil.rmtree(box, ignore_errors=True)
    lines = verdict.decode("ascii", errors="replace").split("\n")
    network = bool(lines) and lines[0] == "boot network=1"
    if status != "timeout" and proc is not None:
        passed = returncode == 0 and lines[1:] == [nonce, ""] and lines[0].startswith("boot ")
        status = "passed" if passed else "failed"
    return SandboxResult(status, seconds, returncode, text, network, who.name)
