"""The generalised worker protocol: (target, args) items, any picklable reply, per-job tallies."""

from __future__ import annotations

import time

import pytest

from tempo.rewards.verifier import Job, Tally, VerifierPool, resolve_target
from tests.rewards import reward_fns


def test_import_paths_resolve_in_both_spellings() -> None:
    assert resolve_target("tests.rewards.reward_fns.add") is reward_fns.add
    assert resolve_target("tests.rewards.reward_fns:add") is reward_fns.add
    assert resolve_target("tests.rewards.reward_fns:NotAFunction.__init__") is not None
    with pytest.raises(ImportError, match="no importable module"):
        resolve_target("no_such_pkg.f")
    with pytest.raises(AttributeError, match="nope"):
        resolve_target("tests.rewards.reward_fns.nope")
    with pytest.raises(ImportError):
        resolve_target("")


def test_jobs_by_path_by_callable_and_the_default_check() -> None:
    mine = Tally()
    with VerifierPool(target=reward_fns.exact_check, shortcuts=False, workers=2) as p:
        outcomes = p.run(
            [
                Job("tests.rewards.reward_fns:add", (2, 3), tally=mine),
                Job(reward_fns.add, {"a": 1, "b": -1}, tally=mine),
                Job(None, ("x", "x")),  # the pool's check, reply read as a bool
                Job("tests.rewards.reward_fns.slow", {"completions": ["a"], "seconds": 0.0}),
                Job("tests.rewards.reward_fns.nope", (), tally=mine),
                Job(reward_fns.add, (lambda: 1, 2), tally=mine),  # an unpicklable argument
                Job("tests.rewards.reward_fns.unpicklable_reply", (), tally=mine),
            ]
        )
        assert [o.status for o in outcomes] == ["ok"] * 4 + ["error"] * 3
        assert [o.value for o in outcomes[:4]] == [5, 0, True, [1.0]]
        assert outcomes[4].error == "AttributeError"
        assert outcomes[5].error in ("PicklingError", "AttributeError", "TypeError")
        assert outcomes[6].error == "UnpicklableResult"
        # Counted where they were charged: the path/callable jobs to `mine`, the rest to the pool.
        assert (mine.calls, mine.errors, mine.timeouts) == (4, 3, 0)
        assert (p.calls, p.errors, p.timeouts) == (2, 0, 0)
        # Every failure left the workers usable.
        assert p.run([Job(reward_fns.add, (20, 22))])[0].value == 42


def test_per_job_timeouts_kill_only_the_overrunning_job() -> None:
    slow, fast = Tally(), Tally()
    with VerifierPool(target=reward_fns.exact_check, timeout=30.0, workers=2) as p:
        p.run([Job(reward_fns.add, (0, 0))])  # warm: start-up is not timed
        start = time.perf_counter()
        outcomes = p.run(
            [
                Job(reward_fns.slow, {"completions": ["a"]}, timeout=0.5, tally=slow),
                Job(reward_fns.add, (1, 1), timeout=5.0, tally=fast),
            ]
        )
        assert time.perf_counter() - start < 0.5 + 8.0
        assert [o.status for o in outcomes] == ["timeout", "ok"]
        assert (slow.timeouts, fast.timeouts, p.timeouts) == (1, 0, 0)
        assert slow.max_latency >= 0.5
        with pytest.raises(ValueError, match="timeout"):
            p.run([Job(reward_fns.add, (1, 1), timeout=0)])
