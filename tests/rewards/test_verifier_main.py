"""Verifier workers never run the caller's ``__main__``: rewards work from an unguarded script.

With ``multiprocessing``'s spawn start method a worker re-ran the calling script, so a script
that called ``math_reward`` at top level (no ``if __name__ == "__main__":`` guard) lost every
worker at start-up ("verifier worker died during start-up"). The script below does exactly
that, with hostile completions that make the pool kill and replace workers (timeouts, a worker
killed from outside, a MemoryError at the cap, a worker that exits), and code rewards in the
sandbox both directly and through the workers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MARKER = "unguarded-script-top-level"

SCRIPT = textwrap.dedent(
    """
    import json
    import os
    import signal

    print("MARKER", flush=True)  # printed again if a worker re-ran this script

    from tempo.rewards import VerifierPool, code_reward, math_reward, shared_pool
    from tempo.rewards.code import check_code, code_gold
    from tempo.rewards.verifier import Job
    from tests.rewards import reward_fns
    from tests.rewards.hostile import hostile_math

    def main_check(pred, gold):  # lives in __main__: no worker can import it
        return pred == gold

    out = {}
    hangers = [h for h in hostile_math(60, seed=1, categories=["power", "factorial"]) if h.hangs]
    half = "We get \\\\boxed{\\\\frac{1}{2}}."
    scores = [math_reward(half, "0.5")]
    for item in hangers[:2]:  # each overruns: its worker is killed and replaced
        scores.append(math_reward(item.completion, item.gold, timeout=1.0))
        scores.append(math_reward(half, "1/2"))
    pool = shared_pool()
    (worker,) = pool._live
    os.kill(worker.proc.pid, signal.SIGKILL)  # an idle worker killed from outside
    worker.proc.join(10)
    scores.append(math_reward(half, "0.5"))
    hostile = [h for h in hostile_math(22, seed=2) if not h.hangs]
    out["hostile"] = [math_reward(h.completion, h.gold, timeout=2.0) for h in hostile]
    out["scores"] = scores
    out["timeouts"] = pool.timeouts

    with VerifierPool(target=reward_fns.exact_check, timeout=1.0, memory_limit_mb=256) as p:
        jobs = [
            Job(reward_fns.allocate, {"completions": ["a"]}),  # MemoryError: worker retired
            Job(reward_fns.add, (1, 2)),
            Job(reward_fns.die, {"completions": ["a"]}),  # the worker exits mid-item
            Job(reward_fns.slow, {"completions": ["a"]}),  # overruns: killed and replaced
            Job(None, ("x", "x")),
            Job(main_check, ("x", "x")),  # a callable from __main__: that job's error
        ]
        out["jobs"] = [[o.status, o.value, o.error] for o in p.run(jobs)]

    tests = "def check(candidate):\\n    assert candidate(2, 3) == 5\\n"
    good, bad = "def add(a, b):\\n    return a + b\\n", "def add(a, b):\\n    return a - b\\n"
    spin = "def add(a, b):\\n    while True:\\n        pass\\n"
    out["code_direct"] = [code_reward(c, tests, "add", 2.0) for c in (good, bad)]
    gold = code_gold("", tests, "add", timeout=1.0)
    with VerifierPool(target=check_code, shortcuts=False, timeout=10.0) as p:
        out["code_pool"] = p.score_answers([good, bad, spin], [gold] * 3)

    try:
        VerifierPool(target=main_check, shortcuts=False).score_answers(["a"], ["b"])
    except RuntimeError as err:
        out["main_check"] = str(err)
    print(json.dumps(out))
    """
).replace("MARKER", MARKER)


def test_rewards_from_a_script_without_a_main_guard(tmp_path: Path) -> None:
    script = tmp_path / "score.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "died during start-up" not in proc.stderr
    lines = proc.stdout.splitlines()
    assert lines.count(MARKER) == 1  # no worker re-ran the script
    out = json.loads(lines[-1])
    assert out["scores"] == [1.0, 0.0, 1.0, 0.0, 1.0, 1.0]
    assert out["timeouts"] == 2
    assert out["hostile"] and all(s in (0.0, 1.0) for s in out["hostile"])
    assert out["jobs"] == [
        ["error", None, "MemoryError"],
        ["ok", 3, None],
        ["error", None, "WorkerDied"],
        ["timeout", None, "Timeout"],
        ["ok", True, None],
        ["error", None, "AttributeError"],
    ]
    assert out["code_direct"] == [1.0, 0.0]
    assert out["code_pool"] == [1.0, 0.0, 0.0]
    message = out["main_check"]
    assert "could not load its check" in message and "main_check" in message
    assert "not in the __main__ script" in message
