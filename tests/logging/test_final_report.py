"""The lines a run ends with, from its summary.json contents."""

from __future__ import annotations

import io

from tempo.logging.final_report import print_final_report, report_lines


def _summary(**changes):
    summary = {
        "status": "finished",
        "task": "gsm8k",
        "steps": 200,
        "wall_time_s": 312.44,
        "final": {
            "eval/aime24/accuracy": 0.1,
            "eval/aime24/pass@2": 0.2,
            "eval/gsm8k/accuracy": 0.4123,
            "eval/gsm8k/avg@8": 0.395,
            "eval/gsm8k/pass@1": 0.39,
            "eval/gsm8k/pass@4": 0.61,
            "eval/gsm8k/pass@16": 0.72,
            "eval/gsm8k/maj@8": 0.5,
            "train/reward_mean": 0.406,
            "explore/temperature_mean": 0.98,
            "explore/entropy": 0.7345,
            "loss/policy": 0.01,
        },
        "initial": {"eval/gsm8k/accuracy": 0.18},
    }
    summary.update(changes)
    return summary


def test_a_finished_run(tmp_path):
    assert report_lines(tmp_path, _summary()) == [
        "[tempo] finished: 200 RL steps in 312.4 s",
        "[tempo] eval gsm8k: greedy accuracy 0.412 (start 0.180), avg@8 0.395, pass@16 0.720",
        "[tempo] eval aime24: greedy accuracy 0.100, pass@2 0.200",  # training task first
        "[tempo] last RL step: reward 0.406, mean T 0.980, entropy 0.735",
        f"[tempo] run directory: {tmp_path}",
    ]


def test_a_failed_run_names_its_error_and_keeps_what_it_measured(tmp_path):
    summary = _summary(status="failed", steps=3, error="NonFiniteError: loss is nan")
    lines = report_lines(tmp_path, summary)
    assert lines[0] == "[tempo] failed: NonFiniteError: loss is nan (after 3 RL steps in 312.4 s)"
    assert lines[-1] == f"[tempo] run directory: {tmp_path}"


def test_a_run_that_failed_before_training(tmp_path):
    summary = {"status": "failed", "error": "OSError: disk full", "steps": None}
    assert report_lines(tmp_path / "run", summary) == [
        "[tempo] failed: OSError: disk full (before the first RL step)",
        f"[tempo] run directory: {tmp_path / 'run'}",
    ]


def test_a_preempted_run_says_how_to_resume(tmp_path):
    lines = report_lines(tmp_path, _summary(status="preempted", steps=7, final={}))
    assert lines == [
        "[tempo] preempted after 7 RL steps in 312.4 s: run the same command again "
        "(same run directory) to resume",
        f"[tempo] run directory: {tmp_path}",
    ]


def test_printed_as_one_block(tmp_path):
    stream = io.StringIO()
    print_final_report(tmp_path, _summary(final={"train/reward_mean": None}), file=stream)
    assert stream.getvalue().splitlines() == [
        "[tempo] finished: 200 RL steps in 312.4 s",
        "[tempo] last RL step: reward n/a",
        f"[tempo] run directory: {tmp_path}",
    ]
