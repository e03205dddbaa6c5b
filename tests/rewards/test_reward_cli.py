"""Reward functions given by import path in a real `tempo-train` run."""

from __future__ import annotations

import json

import pytest

from tests.test_train_cli import SMALL, run_train

FUNCTIONS = (
    "reward.functions=[{_target_: tempo.rewards.builtin.accuracy, weight: 1.0},"
    " {_target_: tests.rewards.reward_fns.length_credit, weight: 0.5},"
    " {_target_: tests.rewards.reward_fns.crash, weight: 2.0}]"
)


def test_user_functions_add_their_weighted_credit_and_a_crash_costs_nothing_but_zeros(tmp_path):
    run = tmp_path / "run"
    proc = run_train(*SMALL, FUNCTIONS, "samples.every=1", f"hydra.run.dir={run}", cache=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(line) for line in (run / "metrics.jsonl").open()]
    steps = [line for line in lines if "train/reward_mean" in line]
    assert len(steps) == 3
    for line in steps:
        # reward = 1 * correct + 0.5 * len/100 + 2 * 0 (the crashing function scores 0)
        expected = line["train/accuracy"] + 0.5 * line["reward/length_credit"]
        assert line["train/reward_mean"] == pytest.approx(expected, abs=1e-6)  # float32 mean
        assert line["reward/accuracy"] == pytest.approx(line["train/accuracy"])
        assert line["reward/crash"] == 0.0
    assert [line["reward/crash_errors"] for line in steps] == [1.0, 2.0, 3.0]
    # The credit is the completions' own: recompute it from a saved step's samples.
    rows = [json.loads(r) for r in (run / "samples" / "step000001.jsonl").open()]
    for row in rows:
        credit = len(row["completion"]) / 100
        assert row["reward"] == pytest.approx(float(row["correct"]) + 0.5 * credit)
    console = proc.stdout + proc.stderr  # Hydra's log handler writes to stdout
    assert console.count("reward function 'crash' failed: ValueError: boom") == 1  # warned once
    assert "reward function 'crash' failed" in (run / "train.log").read_text()
