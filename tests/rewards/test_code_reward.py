"""Code rewards: assembly, right and wrong solutions, and hostile programs in the sandbox.

Each hostile program must score 0.0 within its bound and leave this process, the canary
files and the machine as they were. Where a read or a connection is what is forbidden, the
tests are written so that the program *passes* if the forbidden thing worked (it returns what
it read and the tests check for it): a 0.0 then shows it did not happen.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from tempo.rewards import code_reward
from tempo.rewards.code import (
    MAX_CODE_CHARS,
    assemble_program,
    build_solution,
    check_code,
    code_gold,
    extract_code,
    run_code,
)
from tempo.rewards.sandbox import run_sandboxed, sandbox_identity
from tempo.rewards.scorer import RewardScorer

PROMPT = 'def add(a: int, b: int) -> int:\n    """Return a + b."""\n'
TESTS = "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n"
TIMEOUT = 2.0
SLACK = 3.0  # process start-up and clean-up on a loaded 2-core machine


def dedent(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def returns(body: str) -> str:
    """A full-function solution ``def add(a, b)`` whose body is ``body`` (its value is what
    the tests below look at)."""
    return "def add(a, b):\n" + textwrap.indent(dedent(body), "    ")


def timed(completion: str, tests: str = TESTS, timeout: float = TIMEOUT) -> tuple[float, float]:
    start = time.monotonic()
    score = code_reward(completion, tests, "add", timeout, prompt=PROMPT)
    return score, time.monotonic() - start


# ----------------------------------------------------------------------- assembly


def test_extract_code_takes_the_last_python_block() -> None:
    text = "Try:\n```python\nx = 1\n```\nor\n```py\nx = 2\n```\n```text\nnot code\n```\n"
    assert extract_code(text) == "x = 2\n"
    assert extract_code("```\ny = 3\n```") == "y = 3\n"
    assert extract_code("    return a + b\n") == "    return a + b\n"  # no block: all of it
    assert extract_code("```python\nunclosed") == "```python\nunclosed"
    assert extract_code("   \n") is None
    assert extract_code("x" * (MAX_CODE_CHARS + 1)) is None
    assert extract_code.max_answer_chars == MAX_CODE_CHARS  # type: ignore[attr-defined]


def test_solution_is_a_continuation_unless_it_defines_the_entry_point() -> None:
    body = "    return a + b\n"
    assert build_solution(body, "add", PROMPT) == PROMPT + body
    full = "import math\n\ndef add(a, b):\n    return a + b\n"
    assert build_solution(full, "add", PROMPT) == PROMPT + "\n" + full
    assert build_solution(full, "add") == full
    program = assemble_program(body, TESTS, "add", PROMPT)
    assert program == PROMPT + body + "\n\n" + TESTS + "\n\ncheck(add)\n"
    namespace: dict = {}
    exec(program, namespace)  # the one-file rendering is itself a passing program
    assert namespace["add"](4, 5) == 9


def test_correct_and_wrong_solutions() -> None:
    assert code_reward("    return a + b\n", TESTS, "add", prompt=PROMPT) == 1.0
    assert code_reward("    return a - b\n", TESTS, "add", prompt=PROMPT) == 0.0
    fenced = "Here it is:\n```python\ndef add(a, b):\n    return b + a\n```\nDone."
    assert code_reward(fenced, TESTS, "add", prompt=PROMPT) == 1.0
    assert code_reward("def add(a, b):\n    return 5\n", TESTS, "add") == 0.0
    assert code_reward("    return a +\n", TESTS, "add", prompt=PROMPT) == 0.0  # syntax error
    assert code_reward("def plus(a, b):\n    return a + b\n", TESTS, "add") == 0.0  # wrong name


def test_the_prompt_helpers_reach_the_check_from_the_benchmark() -> None:
    prompt = dedent(
        '''
        def encode(s: str) -> str:
            return s[::-1] + "!"


        def decode(s: str) -> str:
            """Inverse of encode."""
        '''
    )
    tests = dedent(
        """
        def check(candidate):
            for word in ["abc", "", "xyz z"]:
                assert candidate(encode(word)) == word
        """
    )
    assert code_reward("    return s[:-1][::-1]\n", tests, "decode", prompt=prompt) == 1.0
    # A completion that redefines the helper cannot change what the tests use.
    cheat = "def encode(s):\n    return s\n\ndef decode(s):\n    return s\n"
    assert code_reward(cheat, tests, "decode", prompt=prompt) == 0.0


@pytest.mark.parametrize(
    "completion",
    [
        returns("import sys\nsys.exit(0)"),  # exit "successfully" before the tests
        "import sys\nsys.exit(0)\n",
        "import os\nos._exit(0)\n",
        # An object equal to everything, and one built on a builtin subclass.
        returns("class Yes:\n    def __eq__(self, other):\n        return True\nreturn Yes()"),
        returns("class I(int):\n    def __eq__(self, other):\n        return True\nreturn I(0)"),
        # Shadowing or patching the builtins the tests use.
        "abs = len = lambda *a: 0\n" + returns("return 0"),
        "import builtins\nbuiltins.AssertionError = ZeroDivisionError\n" + returns("return 0"),
    ],
)
def test_verdict_tricks_do_not_pass(completion: str) -> None:
    tests = TESTS + "    assert abs(candidate(1, 1) - 2) < 1e-9\n"
    score, elapsed = timed(completion, tests)
    assert score == 0.0 and elapsed < TIMEOUT + SLACK


# ----------------------------------------------------------------------- hostile programs


def test_the_sandbox_is_what_it_says() -> None:
    """The limits are in place where the program runs: a solution that reports them passes
    only if every one holds."""
    who = sandbox_identity()
    probe = returns(
        """
        import os, resource
        limits = [resource.getrlimit(getattr(resource, k))[0] for k in
                  ("RLIMIT_NPROC", "RLIMIT_AS", "RLIMIT_CPU", "RLIMIT_CORE", "RLIMIT_NOFILE")]
        return [limits, sorted(os.environ), os.getcwd(), os.getuid()]
        """
    )
    uid = os.getuid() if who.uid is None else who.uid
    tests = dedent(
        f"""
        def check(candidate):
            limits, env, cwd, uid = candidate(0, 0)
            assert limits == [0, 512 * 2**20, 2, 0, 64], limits
            assert env == ["LC_ALL", "PATH", "TMPDIR"], env
            assert "/tempo-sandbox-" in cwd, cwd
            assert uid == {uid}
        """
    )
    result = run_code(probe, tests, "add", timeout=TIMEOUT)
    assert result is not None and result.passed, result
    if os.geteuid() == 0:
        assert result.user == "nobody"
    # Where this process may make a network namespace (an independent probe with
    # util-linux), so may the sandbox.
    unshare = shutil.which("unshare")
    if unshare and subprocess.run([unshare, "-n", "true"], capture_output=True).returncode == 0:
        assert result.network_isolated


def test_infinite_loop_is_cut_off_at_the_timeout() -> None:
    score, elapsed = timed(returns("while True:\n    pass"), timeout=1.0)
    assert score == 0.0 and 1.0 <= elapsed < 1.0 + SLACK


def test_fork_bomb_and_threads_cannot_start() -> None:
    before = _children()
    bomb = returns(
        """
        import os
        while True:
            try:
                os.fork()
            except Exception:
                pass
        """
    )
    score, elapsed = timed(bomb, timeout=1.0)
    assert score == 0.0 and elapsed < 1.0 + SLACK
    threads = returns(
        """
        import threading
        t = threading.Thread(target=print)
        t.start()
        return a + b
        """
    )
    assert timed(threads)[0] == 0.0
    assert _children() == before  # nothing left behind


def test_memory_hogs_fail_fast() -> None:
    for hog in (
        returns("x = bytearray(8 << 30)\nreturn a + b"),
        returns("blocks = []\nwhile True:\n    blocks.append(bytearray(1 << 24))"),
    ):
        score, elapsed = timed(hog, timeout=10.0)
        assert score == 0.0 and elapsed < 5.0  # a MemoryError, not the 10 s timeout


def test_writes_and_deletes_outside_the_folder_are_refused(tmp_path: Path) -> None:
    folder = tmp_path / "canary"
    folder.mkdir()
    folder.chmod(0o777)  # even a world-writable folder: the hook refuses
    canary = folder / "canary.txt"
    canary.write_text("keep me")
    canary.chmod(0o666)
    attempts = [
        f"open({str(canary)!r}, 'a').write('x')",
        f"open({str(folder / 'new.txt')!r}, 'w').write('x')",
        f"import os; os.remove({str(canary)!r})",
        f"import os; os.rename({str(canary)!r}, {str(folder / 'moved')!r})",
        f"import shutil; shutil.rmtree({str(folder)!r})",
        f"import os; os.close(os.open({str(folder / 'fd.txt')!r}, os.O_CREAT | os.O_WRONLY))",
        f"import pathlib; pathlib.Path({str(folder / 'p.txt')!r}).write_text('x')",
        f"import os; os.system('rm -rf {folder}')",
        "open('/tmp/tempo-sandbox-escape.txt', 'w').write('x')",
    ]
    for attempt in attempts:
        # Passes only if the forbidden step did not raise.
        score, elapsed = timed(returns(f"{attempt}\nreturn a + b"))
        assert score == 0.0 and elapsed < TIMEOUT + SLACK, attempt
    assert canary.read_text() == "keep me"
    assert sorted(p.name for p in folder.iterdir()) == ["canary.txt"]
    assert not Path("/tmp/tempo-sandbox-escape.txt").exists()
    # Its own folder is writable: a program may use scratch files.
    scratch = returns(
        "open('scratch.txt', 'w').write('ok')\nreturn a + len(open('scratch.txt').read()) - 2 + b"
    )
    assert timed(scratch)[0] == 1.0


def test_reading_project_and_private_files_fails(tmp_path: Path) -> None:
    readme = Path(__file__).resolve().parents[2] / "README.md"
    secret = tmp_path / "id_rsa"
    secret.write_text("SECRET-KEY")
    secret.chmod(0o644)
    targets = [
        (readme, readme.read_text(encoding="utf-8")[:20]),
        (secret, "SECRET-KEY"),
        (Path("/root/.ssh/authorized_keys"), ""),
        (Path("/etc/passwd"), "root"),
    ]
    for path, expected in targets:
        # The tests pass iff the program could read the file.
        leak = returns(f"return open({str(path)!r}).read()")
        tests = f"def check(candidate):\n    assert {expected!r} in candidate(0, 0)\n"
        score, elapsed = timed(leak, tests)
        assert score == 0.0 and elapsed < TIMEOUT + SLACK, path
        listing = returns(f"import os\nreturn ' '.join(os.listdir({str(path.parent)!r}))")
        tests = f"def check(candidate):\n    assert {path.name!r} in candidate(0, 0)\n"
        assert timed(listing, tests)[0] == 0.0, path.parent
    # The stdlib itself stays readable (imports work).
    ok = returns("import json, collections, typing, re\nreturn json.loads(str(a + b))")
    assert timed(ok)[0] == 1.0


def test_network_is_unreachable() -> None:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.2)
    port = server.getsockname()[1]
    try:
        for attempt in (
            f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=1)",
            "import socket; socket.getaddrinfo('example.com', 80)",
            f"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{port}')",
        ):
            score, elapsed = timed(returns(f"{attempt}\nreturn a + b"))
            assert score == 0.0 and elapsed < TIMEOUT + SLACK, attempt
        with pytest.raises(TimeoutError):
            server.accept()  # no connection ever arrived
    finally:
        server.close()


def test_killing_the_parent_and_escaping_the_hook_fail() -> None:
    me = os.getpid()
    for attempt in (
        "import os, signal; os.kill(os.getppid(), signal.SIGKILL)",
        "import os, signal; os.killpg(os.getpgid(os.getppid()), signal.SIGKILL)",
        "import ctypes",
        "import _posixsubprocess",
        "import sys; sys._getframe(1)",
        "import gc; gc.get_objects()",
        "import subprocess; subprocess.run(['true'])",
    ):
        score, _ = timed(returns(f"{attempt}\nreturn a + b"))
        assert score == 0.0, attempt
    assert os.getpid() == me  # still here (a SIGKILL would have ended the test run)


def test_output_is_capped() -> None:
    spam = returns("import sys\nsys.stdout.write('x' * (8 << 20))\nreturn a + b")
    result = run_sandboxed(PROMPT + "\n" + spam, TESTS, "add", timeout=TIMEOUT)
    assert not result.passed  # past RLIMIT_FSIZE (1 MiB): killed
    assert len(result.output) <= 64 * 1024


# ----------------------------------------------------------------------- through the scorer


def test_check_through_the_reward_scorer_and_worker_pool() -> None:
    gold = code_gold(PROMPT, TESTS, "add", timeout=1.0)
    completions = [
        "    return a + b\n",
        "```python\ndef add(a, b):\n    return a * b\n```",
        "    while True:\n        pass\n",
        "    import os, signal\n    os.kill(os.getppid(), signal.SIGKILL)\n",
        "",
        "```python\ndef add(a, b):\n    return sum((a, b))\n```",
    ]
    scorer = RewardScorer(timeout=5.0, workers=2, check=check_code, extract=extract_code)
    try:
        start = time.monotonic()
        out = scorer(completions, [gold] * len(completions))
        elapsed = time.monotonic() - start
        assert out.correct == [True, False, False, False, False, True]
        assert out.rewards == [1.0, 0.0, 0.0, 0.0, 0.0, 1.0]
        assert out.answers[0] == "    return a + b\n"  # unstripped: it continues the prompt
        assert out.answers[1] == "def add(a, b):\n    return a * b\n"
        assert out.answers[4] is None
        stats = scorer.stats()
        assert stats["reward/verifier_timeouts"] == 0.0  # the sandbox's own 1 s came first
        assert stats["reward/verifier_errors"] == 0.0  # no worker died
        assert elapsed < 20.0
    finally:
        scorer.close()
    assert check_code("    return a + b\n", gold) is True
    with pytest.raises(ValueError):
        check_code("    return a + b\n", "42")


def _children() -> set[int]:
    me, found = os.getpid(), set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == me:
                found.add(int(entry))
    return found


def _sandboxes() -> set[int]:
    """Pids of live sandbox processes (their command line carries the boot script)."""
    marker = b"See tempo/rewards/sandbox.py for the whole design"
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if marker in Path(f"/proc/{entry}/cmdline").read_bytes():
                    found.add(int(entry))
            except OSError:
                continue
    return found


def test_a_worker_killed_at_the_pool_timeout_takes_its_sandbox_with_it() -> None:
    # The sandbox would allow 60 s; the pool kills the worker after 1.5 s.
    gold = code_gold(PROMPT, TESTS, "add", timeout=60.0)
    sleeper = "    import time\n    time.sleep(60)\n"
    before = _sandboxes()
    scorer = RewardScorer(timeout=1.5, check=check_code, extract=extract_code)
    try:
        start = time.monotonic()
        out = scorer([sleeper, "    return a + b\n"], [gold, gold])
        assert time.monotonic() - start < 1.5 + 2 * SLACK
        assert out.correct == [False, True]  # the replacement worker still checks
        assert scorer.stats()["reward/verifier_timeouts"] == 1.0
    finally:
        scorer.close()
    deadline = time.monotonic() + 5.0
    while _sandboxes() - before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _sandboxes() - before, "a sandbox outlived its worker"
    # The replacement worker's first sandbox removed the killed worker's folder.
    left = [p for p in Path(tempfile.gettempdir()).glob("tempo-sandbox-*-*") if p.is_dir()]
    assert not [p for p in left if not Path(f"/proc/{p.name.split('-')[2]}").exists()]
