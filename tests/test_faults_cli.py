"""Faults end to end (subprocesses): SIGKILL + resume, preemption signals, a failing sweep job."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.test_train_cli import ROOT, SMALL, offline_env, run_sweep, run_train

RESUMABLE = [*SMALL, "trainer.max_steps=6", "eval.every=2", "samples.every=2"]


def _metrics(run: Path) -> list[dict]:
    """metrics.jsonl without wall-clock timings (the only values allowed to differ)."""
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in line.items() if not k.startswith("time/")} for line in lines]


def _start(*overrides: str, cache: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tempo.train", *overrides],
        cwd=ROOT,
        env=offline_env(cache),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(condition, proc: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"run ended early: {proc.stderr.read()[-2000:]}"
        assert time.monotonic() < deadline, "timed out waiting for the run"
        time.sleep(0.02)


def _lines(run: Path) -> int:
    path = run / "metrics.jsonl"
    return len(path.read_text().splitlines()) if path.is_file() else 0


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The reference: each method run start to finish without interruption."""
    root = tmp_path_factory.mktemp("uninterrupted")
    runs = {}
    for method in ("introspective", "meta_policy"):
        run = root / method
        proc = run_train(*RESUMABLE, f"method={method}", f"hydra.run.dir={run}", cache=root)
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs[method] = run
    return root, runs


@pytest.mark.parametrize(
    ("method", "kill_when"),
    [("introspective", "checkpoint_written"), ("meta_policy", "between_checkpoints")],
)
def test_a_run_killed_at_any_point_resumes_to_the_same_metrics(
    uninterrupted, tmp_path, method, kill_when
):
    cache, reference = uninterrupted[0], uninterrupted[1][method]
    run = tmp_path / "run"
    args = [*RESUMABLE, f"method={method}", f"hydra.run.dir={run}"]
    proc = _start(*args, cache=cache)
    if kill_when == "checkpoint_written":  # right after the step-2 checkpoint, before eval 2
        _wait_for(lambda: (run / "checkpoints" / "step2.ckpt").is_file(), proc)
    else:  # in step 3, lines 1-2 on disk after the step-2 checkpoint: they must not repeat
        _wait_for(lambda: _lines(run) >= 3, proc)
    proc.kill()  # SIGKILL: no handler runs
    proc.wait(timeout=30)
    assert not (run / "summary.json").exists()

    again = run_train(*args, cache=cache)  # the same command: resumes by itself
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming from" in again.stderr
    resumed, expected = _metrics(run), _metrics(reference)
    assert [line["step"] for line in resumed] == list(range(7))
    assert resumed == expected  # data order, RNG streams, controller and optimiser state
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["steps"] == 6


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1])
def test_a_preemption_signal_saves_a_checkpoint_and_the_rerun_finishes(tmp_path, signum):
    run = tmp_path / "run"
    args = [*SMALL, "eval.every=0", f"hydra.run.dir={run}"]
    proc = _start(*args, "trainer.max_steps=500", cache=tmp_path)
    _wait_for(lambda: _lines(run) >= 2, proc)  # training is under way
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, stderr[-2000:]
    assert f"stopped by signal {int(signum)} after RL step" in stderr
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "preempted"
    saved = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert saved["global_step"] == summary["steps"] < 500

    steps = summary["steps"] + 2  # finish soon after the preemption point
    again = run_train(*args, f"trainer.max_steps={steps}", cache=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["steps"] == steps
    trained = [line["step"] for line in _metrics(run) if "train/accuracy" in line]
    assert trained == list(range(steps))  # every step once: no gap, no duplicate


def test_a_failing_sweep_job_keeps_the_others_and_tempo_compare_lists_it(tmp_path):
    proc = run_sweep(
        tmp_path,
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "method.temperature=1.0,-1.0,0.7",
        steps=1,
    )
    assert proc.returncode == 1  # the sweep reports the failure...
    assert "1 failed, 2 finished" in proc.stderr or "2 finished" in proc.stderr, proc.stderr[-2000:]
    assert "failed jobs: 1_fixed-s0" in proc.stderr
    done = [tmp_path / "0_fixed-s0", tmp_path / "2_fixed-s0"]
    for run in done:  # ...and the other jobs finished with their results
        assert json.loads((run / "summary.json").read_text())["status"] == "finished"
    failed = json.loads((tmp_path / "1_fixed-s0" / "summary.json").read_text())
    assert failed["status"] == "failed"
    assert "method.temperature=-1.0 is invalid" in failed["error"]

    out = tmp_path / "report"
    compare = subprocess.run(
        [sys.executable, "-m", "tempo.compare", str(tmp_path), "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "MPLBACKEND": "Agg"},
    )
    assert compare.returncode == 0, compare.stderr
    report = (out / "report.md").read_text()
    assert report.count("| finished |") == 2 and report.count("| failed |") == 1
