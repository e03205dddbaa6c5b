"""The sandbox's first code: run by ``python -I -S -c <this file's text>`` in the child process.

Stdlib only, and importable without side effects (``main`` runs only as ``__main__``). It
reads one JSON request from stdin, isolates itself (network namespace, no-new-privs,
resource limits), installs the audit hook, runs the solution in one namespace and the tests
in another, and writes the request's nonce to the result pipe only if ``check(candidate)``
returned.
Everything the steps after the untrusted code use is bound to local names first, so a
program that patches modules (``os.write``, ``posixpath.realpath``...) cannot redirect them.
See tempo/rewards/sandbox.py for the whole design and its limits.
"""

from __future__ import annotations


def main() -> None:  # noqa: C901, PLR0915 - one closed scope on purpose (see the docstring)
    import builtins
    import json
    import os
    import resource
    import sys

    write, stat_fn, getcwd, exit_now = os.write, os.stat, os.getcwd, os._exit
    isdir_mode = __import__("stat").S_ISDIR
    request = json.loads(sys.stdin.buffer.read().decode("utf-8"))
    os.close(0)
    nonce = request.pop("nonce")
    result_fd = int(request.pop("result_fd"))

    # ---- OS-level isolation, before any untrusted code
    network = 0
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        clone_newnet, clone_newuser = 0x40000000, 0x10000000
        if libc.unshare(clone_newnet) == 0 or libc.unshare(clone_newuser | clone_newnet) == 0:
            network = 1
        libc.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS: no setuid binary can raise privileges
        libc.prctl(1, 9, 0, 0, 0)  # PR_SET_PDEATHSIG SIGKILL: die with the worker that started us
        del ctypes, libc
    except Exception:
        pass
    for name in [m for m in sys.modules if m == "ctypes" or m.startswith(("ctypes.", "_ctypes"))]:
        del sys.modules[name]
    if os.getppid() != request["parent"]:
        exit_now(1)  # the parent died before the death signal was armed
    limits = request["limits"]
    for key, value in (
        ("RLIMIT_CPU", (limits["cpu_s"], limits["cpu_s"] + 1)),
        ("RLIMIT_AS", (limits["memory_bytes"],) * 2),
        ("RLIMIT_FSIZE", (limits["file_bytes"],) * 2),
        ("RLIMIT_NOFILE", (limits["open_files"],) * 2),
        ("RLIMIT_NPROC", (0, 0)),  # no fork, no thread: a fork bomb cannot start
        ("RLIMIT_CORE", (0, 0)),
    ):
        try:
            resource.setrlimit(getattr(resource, key), value)
        except (AttributeError, ValueError, OSError):
            pass
    write(result_fd, f"boot network={network}\n".encode())

    # ---- the audit hook
    box = getcwd()
    read_roots = tuple(
        p.rstrip("/") + "/" for p in sys.path if p and p.startswith("/") and os.path.isdir(p)
    )
    read_files = ("/dev/null", "/dev/urandom")
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC
    blocked_imports = frozenset(
        "ctypes _ctypes _posixsubprocess _xxsubinterpreters _xxinterpchannels _testcapi"
        " _testinternalcapi _testbuffer _testmultiphase _testsinglephase _testimportmultiple"
        " _xxtestfuzz sqlite3 _sqlite3 _posixshmem _tkinter readline pty termios".split()
    )
    blocked_prefixes = (
        "socket.",
        "subprocess.",
        "os.system",
        "os.exec",
        "os.posix_spawn",
        "os.spawn",
        "os.fork",
        "os.forkpty",
        "os.kill",
        "os.killpg",
        "os.chdir",
        "os.symlink",
        "os.link",
        "os.chown",
        "os.chmod",
        "os.chflags",
        "os.utime",
        "os.setxattr",
        "os.removexattr",
        "os.putenv",
        "os.unsetenv",
        "signal.pthread_kill",
        "ctypes.",
        "sys._current_frames",
        "sys._current_exceptions",
        "sys.settrace",
        "sys.setprofile",
        "gc.get_objects",
        "gc.get_referrers",
        "gc.get_referents",
        "shutil.",
        "sqlite3.",
        "pty.",
        "urllib.",
        "http.",
        "ftplib.",
        "smtplib.",
        "poplib.",
        "imaplib.",
        "telnetlib.",
        "nntplib.",
        "webbrowser.",
        "_thread.start_new_thread",
    )
    frame_attrs = frozenset(("tb_frame", "gi_frame", "cr_frame", "ag_frame"))
    sandbox_events = frozenset(("os.remove", "os.rmdir", "os.rename", "os.mkdir", "os.truncate"))
    getframe = sys._getframe
    try:
        import pathlib

        path_types = (pathlib.PosixPath, pathlib.PurePosixPath)
    except ImportError:
        path_types = ()
    busy = [False]

    def absolute(path: object) -> str | None:
        """``path`` as a normalised absolute string, or None for a path we refuse to reason
        about (``..`` components, odd types); pure string work with bound functions only."""
        if isinstance(path, bytes):
            try:
                path = path.decode("utf-8")
            except UnicodeDecodeError:
                return None
        elif not isinstance(path, str):
            # Only the stdlib's own path types: a user class's __fspath__ could answer the
            # hook with one path and the real open with another.
            if type(path) not in path_types:
                return None
            return absolute(str(path))
        if "\x00" in path:
            return None
        if not path.startswith("/"):
            path = getcwd() + "/" + path
        parts = [p for p in path.split("/") if p and p != "."]
        if ".." in parts:
            return None
        return "/" + "/".join(parts)

    def in_box(path: object) -> bool:
        full = absolute(path)
        return full is not None and (full == box or full.startswith(box + "/"))

    def readable(path: object) -> bool:
        full = absolute(path)
        if full is None:
            return False
        if full in read_files:
            return True
        if not full.startswith(read_roots):
            return False
        try:
            return not isdir_mode(stat_fn(full).st_mode)  # no directory fds (dir_fd tricks)
        except OSError:
            return True  # a missing file: the open itself fails

    def from_stdlib() -> bool:
        """Whether the Python code that raised the event lives in the stdlib."""
        frame = getframe(2)  # 0: this function, 1: the hook, 2: the caller of the C function
        name = frame.f_code.co_filename if frame is not None else ""
        return name.startswith(read_roots)

    def hook(event: str, args: tuple) -> None:
        if busy[0]:
            return
        busy[0] = True
        try:
            refused = False
            if event == "open":
                path, mode, flags = (tuple(args) + (None, None, None))[:3]
                if isinstance(path, int):
                    refused = False
                elif in_box(path):
                    refused = False
                else:
                    writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                        isinstance(flags, int) and flags & write_flags
                    )
                    refused = bool(writes) or not readable(path)
            elif event == "import":
                refused = str(args[0]).split(".")[0] in blocked_imports
            elif event in ("os.listdir", "os.scandir"):
                path = args[0] if args else None
                refused = not (path is None or isinstance(path, int) or in_box(path))
                full = absolute(path) if refused else None
                if full is not None:
                    refused = not (full + "/").startswith(read_roots)
            elif event in sandbox_events:
                paths = [a for a in args if isinstance(a, (str, bytes))]
                fds = [a for a in args[1:] if isinstance(a, int) and event != "os.truncate"]
                if event == "os.mkdir":
                    fds = [a for a in args[2:] if isinstance(a, int)]
                refused = bool(fds) or not paths or not all(in_box(p) for p in paths)
            elif event == "sys._getframe":
                refused = not from_stdlib()
            elif event == "object.__getattr__":
                refused = len(args) > 1 and args[1] in frame_attrs and not from_stdlib()
            elif event.startswith(blocked_prefixes):
                refused = True
        finally:
            busy[0] = False
        if refused:
            raise PermissionError(f"sandbox: {event} refused")

    pristine_builtins = dict(builtins.__dict__)
    modules_before = set(sys.modules)
    path_before, meta_before, hooks_before = (
        list(sys.path),
        list(sys.meta_path),
        list(sys.path_hooks),
    )
    sys_path, sys_meta, sys_hooks, sys_modules = (
        sys.path,
        sys.meta_path,
        sys.path_hooks,
        sys.modules,
    )
    allowed_scalars = (int, float, str, bool, type(None), bytes, complex)
    containers = (list, tuple, set, frozenset)
    max_nodes = int(limits["max_return_nodes"])
    strict = bool(request["strict_returns"])

    def plain(value: object) -> bool:
        """True iff ``value`` is built of exact builtin types only (no __eq__ tricks)."""
        stack, seen = [value], 0
        while stack:
            item = stack.pop()
            seen += 1
            if seen > max_nodes:
                return False
            kind = type(item)
            if kind in allowed_scalars:
                continue
            if kind in containers:
                stack.extend(item)  # type: ignore[call-overload]
            elif kind is dict:
                stack.extend(item.keys())  # type: ignore[attr-defined]
                stack.extend(item.values())  # type: ignore[attr-defined]
            else:
                return False
        return True

    sys.addaudithook(hook)
    status = "failed"
    try:
        solution_ns: dict = {"__name__": "__solution__", "__builtins__": builtins}
        exec(compile(request["solution"], "<solution>", "exec"), solution_ns)
        candidate = solution_ns.get(request["entry_point"])
        if not callable(candidate):
            raise NameError(f"the solution defines no function {request['entry_point']!r}")
        # The tests see a fresh interpreter state as far as cheaply possible.
        for name in list(sys_modules):
            if name not in modules_before:
                del sys_modules[name]
        sys_path[:], sys_meta[:], sys_hooks[:] = path_before, meta_before, hooks_before
        sys.path, sys.meta_path, sys.path_hooks, sys.modules = (
            sys_path,
            sys_meta,
            sys_hooks,
            sys_modules,
        )
        sys.path_importer_cache.clear()

        def checked(*args: object, **kwargs: object) -> object:
            value = candidate(*args, **kwargs)
            if strict and not plain(value):
                raise TypeError("the candidate returned a non-builtin value")
            return value

        check_ns: dict = {"__name__": "__check__", "__builtins__": dict(pristine_builtins)}
        if request["prompt"]:
            exec(compile(request["prompt"], "<prompt>", "exec"), check_ns)
        exec(compile(request["tests"], "<tests>", "exec"), check_ns)
        check = check_ns.get("check")
        if not callable(check):
            raise NameError("the tests define no check(candidate)")
        check(checked)
        status = "passed"
    except BaseException as exc:  # noqa: BLE001 - whatever the program does, it fails
        try:
            write(2, f"sandbox: {type(exc).__name__}\n".encode())
        except BaseException:  # noqa: BLE001
            pass
    if status == "passed":
        write(result_fd, (nonce + "\n").encode())
    exit_now(0 if status == "passed" else 1)


if __name__ == "__main__":
    main()
