"""`python -m tempo.train` end to end on a shrunken embedded default (subprocesses, CPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SMALL = [
    "model.hidden_size=32",
    "model.num_layers=2",
    "model.intermediate_size=64",
    "model.warmstart.steps=4",
    "model.warmstart.batch_size=8",
    "trainer.max_steps=3",
    "trainer.checkpoint_every=2",
    "trainer.progress_bar=false",
    "trainer.threads=1",
    "rollout.prompts_per_step=2",
    "rollout.max_new_tokens=16",
    "algorithm.group_size=4",
    "eval.every=2",
    "eval.num_problems=4",
    "eval.samples=2",
    "eval.ks=[1,2]",
    "logger=jsonl",
]
TRAIN_KEYS = [
    "train/reward_mean",
    "train/accuracy",
    "train/frac_zero_std_groups",
    "train/response_length",
    "loss/policy",
    "loss/kl",
    "loss/clip_frac",
    "explore/entropy",
    "explore/entropy_at_T",
    "explore/temperature_mean",
    "explore/temperature_std",
    "explore/unique_answers",
]
EVAL_KEYS = ["accuracy", "avg@2", "pass@1", "pass@2", "maj@2"]


def run_train(*overrides: str, cache: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, TEMPO_CACHE_DIR=str(cache), HF_HUB_OFFLINE="1", WANDB_MODE="disabled")
    return subprocess.run(
        [sys.executable, "-m", "tempo.train", *overrides],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    proc = run_train(
        *SMALL, "method.temperature=0.7", f"hydra.run.dir={root}", cache=root / "cache"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root


def test_metrics_jsonl_has_the_contract_keys_at_every_step(finished_run):
    lines = [json.loads(x) for x in (finished_run / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [0, 1, 2, 3]  # one line per step
    for line in lines[:3]:
        assert all(key in line for key in TRAIN_KEYS), sorted(line)
        assert line["explore/temperature_mean"] == pytest.approx(0.7)
    for step in (0, 2, 3):  # at start, every 2 steps, and at the end
        assert all(f"eval/arithmetic/{k}" in lines[step] for k in EVAL_KEYS)
    assert "eval/arithmetic/accuracy" not in lines[1]


def test_summary_and_checkpoint(finished_run):
    summary = json.loads((finished_run / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["steps"] == 3
    assert summary["method"] == "fixed"
    assert set(summary["best"]) >= {"eval/arithmetic/accuracy", "eval/arithmetic/pass@2"}
    ckpt = torch.load(finished_run / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 3
    assert any(k.startswith("model.") for k in ckpt["state_dict"])
    assert "tempo_sampler_rng" in ckpt
    assert (finished_run / "final_model" / "config.json").is_file()
    assert (finished_run / ".hydra" / "config.yaml").is_file()


def test_second_run_reuses_the_cached_warm_start(finished_run, tmp_path):
    cached = list((finished_run / "cache").glob("warmstart-*/meta.json"))
    assert len(cached) == 1
    stamp = cached[0].stat().st_mtime_ns
    proc = run_train(
        *SMALL,
        "trainer.max_steps=1",
        "eval.at_start=false",
        f"hydra.run.dir={tmp_path}",
        cache=finished_run / "cache",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "warm-start:" not in proc.stdout
    assert cached[0].stat().st_mtime_ns == stamp


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("method.temperature=-1", "method.temperature=-1 is invalid: allowed a finite number > 0"),
        ("algorithm.group_size=1", "algorithm.group_size=1 is invalid"),
        ("eval.ks=[1,16]", "eval.ks=[1, 16] is invalid"),
        ("task.max_ops=0", "task.max_ops=0 is invalid"),
    ],
)
def test_bad_override_fails_at_once_with_one_line(tmp_path, override, expected):
    proc = run_train(override, f"hydra.run.dir={tmp_path}", cache=tmp_path / "cache", timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], proc.stderr
    assert not (tmp_path / "cache").exists()  # failed before any heavy work


def test_multirun_over_seeds(tmp_path):
    proc = run_train(
        "-m",
        *SMALL,
        "trainer.max_steps=1",
        "eval.every=0",
        "eval.at_start=false",
        f"hydra.sweep.dir={tmp_path}",
        "seed=0,1",
        cache=tmp_path / "cache",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = sorted(p.name for p in tmp_path.iterdir() if p.is_dir() and p.name != "cache")
    assert runs == ["0_fixed-s0", "1_fixed-s1"]
    for name in runs:
        assert json.loads((tmp_path / name / "summary.json").read_text())["status"] == "finished"
