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


def _start(*overrides: str, cache: Path, session: bool = False) -> subprocess.Popen:
    """`python -m tempo.train` in the background (`session`: in its own process group, as a
    terminal's foreground job is, so that a Ctrl-C reaches every process of it)."""
    return subprocess.Popen(
        [sys.executable, "-m", "tempo.train", *overrides],
        cwd=ROOT,
        env=offline_env(cache),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=session,
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


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1, signal.SIGINT])
def test_a_preemption_signal_saves_a_checkpoint_and_the_rerun_finishes(tmp_path, signum):
    run = tmp_path / "run"
    args = [*SMALL, "eval.every=0", f"hydra.run.dir={run}"]
    proc = _start(*args, "trainer.max_steps=500", cache=tmp_path, session=True)
    _wait_for(lambda: _lines(run) >= 2, proc)  # training is under way
    if signum == signal.SIGINT:  # Ctrl-C: the whole foreground group, reward workers too
        os.killpg(proc.pid, signum)
    else:
        proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, stderr[-2000:]
    assert f"stopped by signal {int(signum)} ({signum.name}) after RL step" in stderr
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == ("interrupted" if signum == signal.SIGINT else "preempted")
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


def _run(*overrides: str, cache: Path, **env: str) -> subprocess.CompletedProcess:
    """`python -m tempo.train` to the end, with more environment variables."""
    return subprocess.run(
        [sys.executable, "-m", "tempo.train", *overrides],
        cwd=ROOT,
        env={**offline_env(cache), **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def _killed_at_step4(args: list[str], run: Path, cache: Path) -> None:
    """Start the run and SIGKILL it once its step-4 checkpoint is on disk."""
    proc = _start(*args, cache=cache)
    _wait_for(lambda: (run / "checkpoints" / "step4.ckpt").is_file(), proc)
    proc.kill()
    proc.wait(timeout=30)


def test_a_killed_run_moved_with_damaged_files_resumes_to_the_same_metrics(uninterrupted, tmp_path):
    cache, reference = uninterrupted[0], uninterrupted[1]["introspective"]
    run = tmp_path / "run1"
    args = [*RESUMABLE, "method=introspective"]
    _killed_at_step4([*args, f"hydra.run.dir={run}"], run, cache)

    (run / "run_config.json").unlink()  # the checkpoint still knows the run's config
    mixed = _run(*args, f"hydra.run.dir={run}", "algorithm.lr=0.001", cache=cache)
    assert mixed.returncode == 2, mixed.stderr[-2000:]
    assert "Traceback" not in mixed.stderr
    assert "algorithm.lr=3e-05, not 0.001" in mixed.stderr.strip().splitlines()[-1]

    moved = tmp_path / "run2"
    run.rename(moved)  # `mv run1 run2`
    last = moved / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:1000])  # truncated
    (moved / "metrics.jsonl").unlink()
    stale = moved / "checkpoints" / ".step6.ckpt.tmp-999999999"  # a save killed mid-write
    stale.write_bytes(b"partial")

    again = _run(*args, f"hydra.run.dir={moved}", cache=cache)
    assert again.returncode == 0, again.stderr[-3000:]
    notes = [line for line in again.stderr.splitlines() if line.startswith("[tempo]")]
    assert any(f"{last} is unreadable" in n and "from step4.ckpt" in n for n in notes), notes
    assert any("metrics.jsonl is missing: rewritten from the checkpoint" in n for n in notes)
    assert _metrics(moved) == _metrics(reference)  # steps 0-6, each exactly once
    summary = json.loads((moved / "summary.json").read_text())
    assert summary["initial"] == json.loads((reference / "summary.json").read_text())["initial"]
    names = sorted(p.name for p in (moved / "checkpoints").iterdir())
    assert names == ["last.ckpt", "step6.ckpt"]  # keep_checkpoints=1, also after a kill
    saved = torch.load(moved / "checkpoints" / "last.ckpt", weights_only=False)["callbacks"]
    (saver,) = [state for key, state in saved.items() if key.startswith("ModelCheckpoint")]
    assert saver["dirpath"] == str(moved / "checkpoints")  # its bookkeeping moved along
    assert saver["best_model_path"] == str(moved / "checkpoints" / "step6.ckpt")


@pytest.mark.parametrize("fault", ["metrics.jsonl:4", ".step4.ckpt.tmp:2"])
def test_a_full_disk_fails_in_one_line_with_whole_files_and_resumes(uninterrupted, tmp_path, fault):
    cache, reference = uninterrupted[0], uninterrupted[1]["introspective"]
    run = tmp_path / "run"
    args = [*RESUMABLE, "method=introspective", f"hydra.run.dir={run}"]
    full = _run(
        *args,
        cache=cache,
        PYTHONPATH=str(ROOT / "tests" / "fault_inject"),
        TEMPO_TEST_ENOSPC=fault,  # that write runs out of space half-way (sitecustomize.py)
    )
    assert full.returncode == 1, full.stderr[-3000:]
    assert "Traceback" not in full.stderr
    last_line = full.stderr.strip().splitlines()[-1]
    target = "metrics.jsonl" if fault.startswith("metrics") else "checkpoints/step4.ckpt"
    assert last_line.startswith("tempo-train: disk full (OSError 28) while writing "), last_line
    assert target in last_line and "resume" in last_line
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "failed"
    assert summary["error"] == f"disk full (OSError 28) while writing {run / target}"
    assert all(json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines())
    assert not [p for p in (run / "checkpoints").iterdir() if ".tmp-" in p.name]

    again = _run(*args, cache=cache)  # space again
    assert again.returncode == 0, again.stderr[-3000:]
    assert _metrics(run) == _metrics(reference)


@pytest.mark.parametrize("when", ["before_the_first_checkpoint", "at_a_checkpoint_and_eval"])
def test_two_quick_sigterms_preempt_once_without_duplicate_checkpoints(tmp_path, when):
    run = tmp_path / "run"
    every = 4 if when == "before_the_first_checkpoint" else 2
    args = [*SMALL, f"trainer.checkpoint_every={every}", "eval.every=2", f"hydra.run.dir={run}"]
    proc = _start(*args, "trainer.max_steps=500", cache=tmp_path)
    if when == "before_the_first_checkpoint":
        _wait_for(lambda: _lines(run) >= 1, proc)
    else:  # step2.ckpt written, the step-2 evaluation about to run
        _wait_for(lambda: (run / "checkpoints" / "step2.ckpt").is_file(), proc)
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-2000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "preempted", summary

    steps = summary["steps"] + 2
    again = run_train(*args, f"trainer.max_steps={steps}", cache=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    trained = [line["step"] for line in _metrics(run) if "train/accuracy" in line]
    assert trained == list(range(steps))
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == ["last.ckpt", f"step{steps // every * every}.ckpt"]  # no last-v1.ckpt


def test_a_second_process_on_a_run_directory_is_refused_in_one_line(tmp_path):
    run = tmp_path / "run"
    args = [*SMALL, "eval.every=0", f"hydra.run.dir={run}"]
    first = _start(*args, "trainer.max_steps=500", cache=tmp_path)
    _wait_for(lambda: _lines(run) >= 1, first)
    second = _run(*args, cache=tmp_path)
    assert first.poll() is None  # the first run goes on
    first.send_signal(signal.SIGTERM)
    first.communicate(timeout=120)
    assert second.returncode == 2, second.stderr[-2000:]
    assert "Traceback" not in second.stderr
    line = second.stderr.strip().splitlines()[-1]
    assert f"hydra.run.dir='{run}'" in line and f"PID {first.pid} is running in it" in line
    assert json.loads((run / "summary.json").read_text())["status"] == "preempted"
    steps = [line["step"] for line in _metrics(run)]
    assert steps == sorted(set(steps))  # one writer: no duplicate steps


def test_a_sweep_job_killed_by_sigkill_fails_alone(tmp_path):
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tempo.train",
            "-m",
            *SMALL,
            "trainer.max_steps=8",
            "eval.every=0",
            "eval.at_start=false",
            f"hydra.sweep.dir={tmp_path}",
            "hydra/launcher=local",
            "seed=0,1",
        ],
        cwd=ROOT,
        env=offline_env(tmp_path / "cache"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    job = tmp_path / "0_fixed-s0"
    _wait_for(lambda: (job / ".lock").is_file() and _lines(job) >= 1, proc)
    os.kill(int((job / ".lock").read_text()), signal.SIGKILL)  # job 0's trainer, as the OOM killer
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 1, stderr[-3000:]
    assert "1 failed, 1 finished" in stderr and "failed jobs: 0_fixed-s0" in stderr
    failed = json.loads((job / "summary.json").read_text())
    assert failed["status"] == "failed" and failed["error"].startswith("killed by signal 9")
    done = json.loads((tmp_path / "1_fixed-s1" / "summary.json").read_text())
    assert done["status"] == "finished" and done["steps"] == 8


def test_an_unknown_choice_in_a_sweep_fails_up_front_in_one_line(tmp_path):
    proc = run_sweep(tmp_path, "method=fixed,foo", steps=1)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "tempo: invalid sweep: method=foo is invalid: allowed one of fixed, heuristic, "
        "introspective, meta_policy; no job was started"
    ]
    assert not [p for p in tmp_path.iterdir() if p.name != "cache"]
