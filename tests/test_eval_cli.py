"""`python -m tempo.evaluate` end to end (subprocesses, CPU): a real tiny run's checkpoint, a
local model directory, and one-line errors for bad inputs."""

from __future__ import annotations

import json
import math
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from tests.test_train_cli import SMALL, run_module, run_train

# A task small enough that 300 warm-start steps of the 2-layer model get some answers right:
# single-digit additions, 20 held-out problems, completions up to 24 tokens.
TASK = ["task.operations=[+]", "task.max_ops=1", "task.operand_max=9"]
TASK += ["task.test_fraction=0.3", "task.num_test=20"]
TRAIN = [o for o in SMALL if not o.startswith(("model.warmstart", "rollout.max_new_tokens"))]
TRAIN += ["model.warmstart.steps=300", "model.warmstart.batch_size=16"]
TRAIN += ["model.warmstart.lr=1e-2", "model.warmstart.warmup_steps=10"]
TRAIN += ["rollout.max_new_tokens=24", "trainer.max_steps=2", "eval.every=0"]
TRAIN += ["eval.at_start=false", *TASK, "method=introspective"]
FAST = ["trainer.threads=1", "trainer.progress_bar=false"]
N = 4  # eval.samples in the checkpoint tests
KEYS = ["accuracy", f"avg@{N}", *(f"pass@{k}" for k in range(1, N + 1))]
KEYS += [*(f"maj@{k}" for k in range(1, N + 1)), "temperature_mean"]


def run_eval(*overrides: str, cache: Path, timeout: int = 120) -> subprocess.CompletedProcess:
    return run_module("tempo.evaluate", *overrides, cache=cache, timeout=timeout)


def read(run: Path) -> tuple[dict, list[dict], list[dict]]:
    """eval_results.json, metrics.jsonl lines, samples.jsonl records (if any)."""
    results = json.loads((run / "eval_results.json").read_text())
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    samples = run / "samples.jsonl"
    records = [json.loads(x) for x in samples.read_text().splitlines()] if samples.exists() else []
    return results, lines, records


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval-cli")
    proc = run_train(*TRAIN, f"hydra.run.dir={root / 'run'}", cache=root / "cache")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root


def evaluate_checkpoint(trained: Path, name: str, *overrides: str) -> Path:
    out = trained / name
    proc = run_eval(
        f"checkpoint={trained / 'run'}",
        f"eval.samples={N}",
        "save_samples=true",
        *FAST,
        f"hydra.run.dir={out}",
        *overrides,
        cache=trained / "cache",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "pass@1" in proc.stdout and "eval_results.json" in proc.stdout  # the table
    return out


@pytest.fixture(scope="module")
def head_on(trained):
    return evaluate_checkpoint(trained, "head_on")


def test_results_have_every_metric_and_the_source(head_on, trained):
    results, _, _ = read(head_on)
    metrics = results["tasks"]["arithmetic"]
    assert sorted(metrics) == sorted(KEYS)
    assert results["problems"] == {"arithmetic": 20}  # the run's task settings: num_test=20
    for key in KEYS[:-1]:
        assert 0.0 <= metrics[key] <= 1.0, key
    passes = [metrics[f"pass@{k}"] for k in range(1, N + 1)]
    assert passes == sorted(passes) and passes[-1] > 0  # the warm-started model solves some
    assert metrics["pass@1"] == pytest.approx(metrics[f"avg@{N}"])
    source = results["source"]
    assert source["kind"] == "checkpoint" and source["step"] == 2
    assert source["checkpoint"] == str((trained / "run" / "checkpoints" / "last.ckpt").resolve())
    sampling = results["sampling"]
    assert sampling["use_head"] is True and sampling["controller"] == "introspective"
    assert sampling["temperature"] is None and sampling["max_new_tokens"] == 24  # the run's
    assert sampling["ks"] == [1, 2, 3, 4]
    assert 0.4 <= metrics["temperature_mean"] <= 1.6 and metrics["temperature_mean"] != 1.0
    assert results["config"]["eval"]["samples"] == N and results["wall_time_s"] > 0


def test_metrics_jsonl_has_the_same_numbers_at_step_0(head_on):
    results, lines, _ = read(head_on)
    assert len(lines) == 1 and lines[0]["step"] == 0
    logged = {k: v for k, v in lines[0].items() if k != "step"}
    expected = {f"eval/arithmetic/{k}": v for k, v in results["tasks"]["arithmetic"].items()}
    assert logged == expected


def test_samples_recompute_to_the_reported_metrics(head_on):
    """Recount every metric from the saved completions' verdicts, independently."""
    results, _, records = read(head_on)
    metrics = results["tasks"]["arithmetic"]
    assert len(records) == 20 and all(r["task"] == "arithmetic" for r in records)
    assert all(len(r["completions"]) == N == len(r["correct"]) for r in records)
    assert all("+" in r["prompt"] for r in records)
    count = len(records)
    assert metrics["accuracy"] == pytest.approx(sum(r["greedy"] for r in records) / count)
    assert metrics[f"avg@{N}"] == pytest.approx(sum(sum(r["correct"]) for r in records) / N / count)
    for k in range(1, N + 1):
        expected = (
            sum(1 - math.comb(N - sum(r["correct"]), k) / math.comb(N, k) for r in records) / count
        )
        assert metrics[f"pass@{k}"] == pytest.approx(expected), k
        wins = 0
        for r in records:
            answers = [a for a in r["answers"][:k] if a is not None]
            if answers:
                top = max(Counter(answers).values())
                winner = next(a for a in answers if Counter(answers)[a] == top)
                wins += any(
                    a == winner and ok
                    for a, ok in zip(r["answers"][:k], r["correct"][:k], strict=True)
                )
        assert metrics[f"maj@{k}"] == pytest.approx(wins / count), k
    tokens = sum(sum(r["lengths"]) for r in records)
    weighted = sum(
        t * n for r in records for t, n in zip(r["temperatures"], r["lengths"], strict=True)
    )
    assert metrics["temperature_mean"] == pytest.approx(weighted / tokens)


def test_the_same_seed_gives_identical_results(head_on, trained):
    again = evaluate_checkpoint(trained, "head_on_again")
    first, _, first_samples = read(head_on)
    second, _, second_samples = read(again)
    assert second["tasks"] == first["tasks"]
    assert second_samples == first_samples


def test_head_off_samples_at_the_fixed_temperature(head_on, trained):
    off = evaluate_checkpoint(trained, "head_off", "eval.use_head=false")
    results, _, records = read(off)
    on, _, _ = read(head_on)
    metrics = results["tasks"]["arithmetic"]
    assert results["sampling"]["use_head"] is False
    assert (
        results["sampling"]["controller"] == "fixed" and results["sampling"]["temperature"] == 1.0
    )
    assert metrics["temperature_mean"] == 1.0  # exactly: every sampled token at T = 1
    assert all(t == 1.0 for r in records for t in r["temperatures"])
    # greedy decoding does not depend on the sampling temperature
    assert metrics["accuracy"] == on["tasks"]["arithmetic"]["accuracy"]


def test_explicit_task_with_overrides_starts_from_the_runs_settings(trained):
    out = evaluate_checkpoint(
        trained,
        "overrides",
        "tasks=[arithmetic]",
        "+task_overrides.arithmetic.num_test=6",
        "eval.ks=[1,3]",
        "eval.greedy=false",
    )
    results, _, records = read(out)
    assert results["problems"] == {"arithmetic": 6}
    assert all("+" in r["prompt"] and r["greedy_completion"] is None for r in records)
    assert sorted(results["tasks"]["arithmetic"]) == sorted(
        ["avg@4", "pass@1", "pass@3", "maj@1", "maj@3", "maj@4", "temperature_mean"]
    )


def test_a_local_model_directory_through_model_hub(tmp_path, tiny_model, char_tokenizer):
    tiny_model.save_pretrained(tmp_path / "model")
    char_tokenizer.save_pretrained(tmp_path / "model")
    proc = run_eval(
        "model=hub",
        f"model.name_or_path={tmp_path / 'model'}",
        "eval.samples=3",
        "eval.ks=[1,3]",
        "eval.num_problems=5",
        "eval.max_new_tokens=12",
        "eval.temperature=0.7",
        "logger=wandb",  # WANDB_MODE=disabled: exercises the W&B path without files
        *FAST,
        f"hydra.run.dir={tmp_path / 'out'}",
        cache=tmp_path / "cache",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results, lines, _ = read(tmp_path / "out")
    assert results["source"] == {"kind": "model", "model": str(tmp_path / "model")}
    assert results["problems"] == {"arithmetic": 5}
    metrics = results["tasks"]["arithmetic"]
    assert sorted(metrics) == sorted(
        ["accuracy", "avg@3", "pass@1", "pass@3", "maj@1", "maj@3", "temperature_mean"]
    )
    assert metrics["temperature_mean"] == pytest.approx(0.7)
    assert results["sampling"]["max_new_tokens"] == 12
    assert lines[0]["eval/arithmetic/pass@3"] == metrics["pass@3"]
    assert not (tmp_path / "cache").exists()  # no warm-start for a given model


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("checkpoint={tmp}/nope.ckpt", "checkpoint='{tmp}/nope.ckpt' is invalid: allowed an"),
        ("checkpoint={tmp}", "checkpoint='{tmp}' is invalid: allowed a .ckpt file or a run"),
        ("tasks=[arithmetic,nosuchtask]", "tasks='nosuchtask' is invalid: allowed one of"),
        ("eval.ks=[0,2]", "eval.ks=[0, 2] is invalid"),
        # a task's own config the user never wrote: named under tasks, with the override to use
        ("tasks=[local]", "tasks='local' is invalid: allowed a task whose config works"),
    ],
)
def test_bad_input_fails_with_one_line(tmp_path, override, expected):
    proc = run_eval(
        override.format(tmp=tmp_path),
        f"hydra.run.dir={tmp_path / 'out'}",
        cache=tmp_path / "cache",
        timeout=60,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tempo-eval: invalid config: "), proc.stderr
    assert expected.format(tmp=tmp_path) in lines[0]
    assert not (tmp_path / "out" / "eval_results.json").exists()


def test_a_checkpoint_without_its_run_config_fails_with_one_line(trained, tmp_path):
    loose = tmp_path / "checkpoints"
    loose.mkdir()
    (loose / "last.ckpt").write_bytes((trained / "run" / "checkpoints" / "last.ckpt").read_bytes())
    proc = run_eval(
        f"checkpoint={tmp_path}",
        f"hydra.run.dir={tmp_path / 'out'}",
        cache=tmp_path / "cache",
        timeout=60,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{tmp_path}/.hydra/config.yaml not found" in lines[0]


def test_the_introspective_head_through_vllm_fails_with_one_line(trained, tmp_path):
    proc = run_eval(
        f"checkpoint={trained / 'run'}",
        "eval.engine=vllm",
        f"hydra.run.dir={tmp_path / 'out'}",
        cache=trained / "cache",
        timeout=60,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert (
        len(lines) == 1 and "eval.engine='vllm' is invalid: allowed tempo for method " in (lines[0])
    )
    assert "'introspective'" in lines[0] and "hidden state" in lines[0]
    assert not (tmp_path / "out" / "eval_results.json").exists()
