"""`python -m tempo.train` end to end on a shrunken embedded default (subprocesses, CPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

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


def offline_env(cache: Path) -> dict[str, str]:
    """The environment of a tempo subprocess: private warm-start cache, no hub, no W&B."""
    return dict(os.environ, TEMPO_CACHE_DIR=str(cache), HF_HUB_OFFLINE="1", WANDB_MODE="disabled")


def run_module(
    module: str, *overrides: str, cache: Path, timeout: int = 300
) -> subprocess.CompletedProcess:
    """`python -m <module> <overrides>` from the repository root, offline."""
    return subprocess.run(
        [sys.executable, "-m", module, *overrides],
        cwd=ROOT,
        env=offline_env(cache),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_train(*overrides: str, cache: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    return run_module("tempo.train", *overrides, cache=cache, timeout=timeout)


def run_sweep(sweep_dir: Path, *overrides: str, steps: int, timeout: int = 300):
    """A `-m` sweep of the shrunken default, training only (no evaluation before or between)."""
    return run_train(
        "-m",
        *SMALL,
        f"trainer.max_steps={steps}",
        "eval.every=0",
        "eval.at_start=false",
        f"hydra.sweep.dir={sweep_dir}",
        *overrides,
        cache=sweep_dir / "cache",
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


def test_sample_completions_are_saved_as_jsonl_and_temperature_coloured_html(finished_run):
    rows = [json.loads(x) for x in (finished_run / "samples" / "step000000.jsonl").open()]
    # samples.limit=8 of the step's 2 prompts x 4 completions: one per group first, then more
    assert len(rows) == 8 and len({r["prompt"] for r in rows}) == 2
    fixed_t = OmegaConf.load(finished_run / ".hydra" / "config.yaml").method.temperature
    for row in rows:  # every token at the fixed T; reward = correctness (no format bonus)
        assert row["step"] == 0 and row["mean_temperature"] == pytest.approx(fixed_t)
        assert row["reward"] == float(row["correct"]) and row["prompt"].endswith("=")
    page = (finished_run / "samples" / "step000000.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and rows[0]["prompt"].split("=")[0] in page


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
    ("overrides", "expected"),
    [
        ("method.temperature=-1", "method.temperature=-1 is invalid: allowed a finite number > 0"),
        ("algorithm.group_size=1", "algorithm.group_size=1 is invalid"),
        ("eval.ks=[1,16]", "eval.ks=[1, 16] is invalid"),
        ("task.max_ops=0", "task.max_ops=0 is invalid"),
        ("method=meta_policy method.candidates=[]", "method.candidates=[] is invalid"),
        ("method=meta_policy method.top_p=1.5", "method.top_p=1.5 is invalid"),
        ("method=meta_policy method.top_p=0", "method.top_p=0 is invalid"),
        ("method=heuristic method.rule=magic", "method.rule='magic' is invalid: allowed one of"),
        ("method=heuristic method.rule=edt method.edt.t0=-1", "method.edt.t0=-1 is invalid"),
        ("method=introspective method.t_min=2.0", "method.t_min=2.0 is invalid"),
        ("method=introspective method.head_steps=0", "method.head_steps=0 is invalid"),
        ("model=hub model.name_or_path=/no/such/dir", "model.name_or_path='/no/such/dir'"),
    ],
)
def test_bad_override_fails_at_once_with_one_line(tmp_path, overrides, expected):
    proc = run_train(
        *overrides.split(), f"hydra.run.dir={tmp_path}", cache=tmp_path / "cache", timeout=60
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], proc.stderr
    assert not (tmp_path / "cache").exists()  # failed before any heavy work


def test_multirun_over_seeds(tmp_path):
    proc = run_sweep(
        tmp_path,
        "seed=0,1",
        steps=1,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = sorted(p.name for p in tmp_path.iterdir() if p.is_dir() and p.name != "cache")
    assert runs == ["0_fixed-s0", "1_fixed-s1"]
    for name in runs:
        assert json.loads((tmp_path / name / "summary.json").read_text())["status"] == "finished"


METHOD_KEYS = {
    "fixed": [],
    "heuristic": ["method/temperature"],
    "meta_policy": ["method/T", "method/prob_T=1.0", "method/ema_T=1.0", "method/support_size"],
    "introspective": ["method/gate_rate", "method/T_class=other", "method/phase_head"],
}


def test_four_methods_by_two_seeds_multirun(tmp_path):
    proc = run_sweep(
        tmp_path,
        "method=fixed,heuristic,meta_policy,introspective",
        "seed=0,1",
        steps=2,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = sorted(p for p in tmp_path.iterdir() if p.is_dir() and p.name != "cache")
    names = sorted(p.name.split("_", 1)[1] for p in runs)
    expected = ["fixed", "heuristic-linear", "introspective", "meta_policy"]
    assert names == sorted(f"{m}-s{s}" for m in expected for s in (0, 1))
    for run in runs:
        summary = json.loads((run / "summary.json").read_text())
        assert summary["status"] == "finished" and summary["steps"] == 2
        lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        for key in METHOD_KEYS[summary["method"]]:
            assert key in lines[0], (run.name, key)
        state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
        if summary["method"] == "meta_policy":
            assert lines[0]["method/T"] in [round(0.6 + 0.1 * k, 1) for k in range(10)]
            assert "controller.ema" in state
        if summary["method"] == "introspective":
            assert any(k.startswith("controller.head.") for k in state)


def test_every_heuristic_rule_runs_from_the_command_line(tmp_path):
    rules = ["linear", "cosine", "exponential", "entropy_target", "edt", "ead", "two_level"]
    proc = run_sweep(
        tmp_path,
        "method=heuristic",
        f"method.rule={','.join(rules)}",
        steps=2,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for num, rule in enumerate(rules):
        run = tmp_path / f"{num}_heuristic-{rule}-s0"
        lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        lines = [line for line in lines if "train/accuracy" in line]  # not the final eval
        assert [line["step"] for line in lines] == [0, 1]
        temps = [line["explore/temperature_mean"] for line in lines]
        if rule == "linear":  # 0.9 -> 1.5 over S = 2 steps: steps 0 and 1
            assert temps == pytest.approx([0.9, 1.2])
        if rule in ("edt", "ead", "two_level"):
            assert "method/T_pos=0-1" in lines[0]  # per-token profile is logged


def test_resume_restores_the_controller_state(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    common = [*SMALL, "method=meta_policy", "eval.every=0", "eval.at_start=false"]
    common += ["method.init=[0,1,2,3,4,5,6,7,8,9]"]  # a state that visibly decays
    proc = run_train(*common, "trainer.max_steps=2", f"hydra.run.dir={first}", cache=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = first / "checkpoints" / "last.ckpt"
    proc = run_train(
        *common,
        "trainer.max_steps=3",
        f"ckpt_path={ckpt}",
        f"hydra.run.dir={second}",
        cache=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    before = [json.loads(x) for x in (first / "metrics.jsonl").read_text().splitlines()]
    after = [json.loads(x) for x in (second / "metrics.jsonl").read_text().splitlines()]
    # the first run's lines up to its checkpoint, then where it stopped (and the final
    # evaluation, also at step 3)
    assert [line["step"] for line in after] == [0, 1, 2, 3] and "train/accuracy" in after[2]
    assert after[:2] == before[:2]
    labels = [f"{0.6 + 0.1 * k:.1f}" for k in range(10)]
    trained = [line for line in before if "train/accuracy" in line]
    assert trained[-1]["step"] == 1
    ema = [trained[-1][f"method/ema_T={t}"] for t in labels]  # Abar after step 1
    lo, hi = min(ema), max(ema)
    scaled = [(e - lo) / (hi - lo) for e in ema] if hi > lo else [1.0] * 10
    expected_pi = [v / sum(scaled) for v in scaled]
    for t, p in zip(labels, expected_pi, strict=True):
        assert after[2][f"method/prob_T={t}"] == pytest.approx(p, abs=1e-9)
    assert hi > lo and ema != list(range(10))  # the restored EMA, not the initial one


def test_missing_checkpoint_fails_with_one_line(tmp_path):
    proc = run_train(
        f"ckpt_path={tmp_path}/nope.ckpt", f"hydra.run.dir={tmp_path}", cache=tmp_path / "c"
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"tempo-train: invalid config: ckpt_path='{tmp_path}/nope.ckpt' is invalid: "
        "allowed an existing checkpoint file"
    ]


def test_joblib_launcher_runs_two_jobs_in_parallel(tmp_path):
    """Verifier workers must start inside loky workers (they inherit its start method)."""
    proc = run_sweep(
        tmp_path,
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "seed=0,1",
        steps=1,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("0_fixed-s0", "1_fixed-s1"):
        summary = json.loads((tmp_path / name / "summary.json").read_text())
        assert summary["status"] == "finished" and summary["steps"] == 1


@pytest.mark.parametrize("method", ["meta_policy", "introspective"])
def test_resume_from_a_mid_run_checkpoint_continues_like_the_full_run(tmp_path, method):
    common = [*SMALL, f"method={method}", "eval.every=0", "eval.at_start=false"]
    common += ["trainer.keep_checkpoints=-1"]
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    proc = run_train(*common, "trainer.max_steps=4", f"hydra.run.dir={full}", cache=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (full / "checkpoints" / "step4.ckpt").is_file()
    mid = full / "checkpoints" / "step2.ckpt"  # checkpoint_every=2
    assert mid.is_file(), sorted(p.name for p in (full / "checkpoints").iterdir())
    proc = run_train(
        *common,
        "trainer.max_steps=4",
        f"ckpt_path={mid}",
        f"hydra.run.dir={resumed}",
        cache=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]

    def trained(run):
        lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        return {line["step"]: line for line in lines if "train/accuracy" in line}

    a, b = trained(full), trained(resumed)
    assert sorted(b) == [0, 1, 2, 3]  # the metrics up to the checkpoint come with it
    for step in (2, 3):  # same problems, samples, temperatures and updates as the full run
        for key in ("train/reward_mean", "train/response_length", "explore/temperature_mean"):
            assert b[step][key] == pytest.approx(a[step][key], abs=1e-6), (step, key)


def test_a_local_model_directory_trains_through_model_hub(tmp_path, tiny_model, char_tokenizer):
    tiny_model.save_pretrained(tmp_path / "model")
    char_tokenizer.save_pretrained(tmp_path / "model")
    not_model = [o for o in SMALL if not o.startswith("model.")]
    proc = run_train(
        *not_model,
        "model=hub",
        f"model.name_or_path={tmp_path / 'model'}",
        "trainer.max_steps=1",
        "eval.at_start=false",
        f"hydra.run.dir={tmp_path / 'run'}",
        cache=tmp_path / "cache",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["steps"] == 1
    assert not (tmp_path / "cache").exists()  # no warm-start for a given model


def test_countdown_trains_and_evaluates_with_its_own_check(tmp_path):
    proc = run_train(
        *SMALL,
        "task=countdown",
        "trainer.max_steps=1",
        f"hydra.run.dir={tmp_path / 'run'}",
        cache=tmp_path / "cache",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["task"] == "countdown" and summary["status"] == "finished"
    assert {f"eval/countdown/{k}" for k in EVAL_KEYS} <= set(summary["final"])
    assert summary["final"]["reward/verifier_calls"] >= 0


@pytest.mark.parametrize(
    ("module", "start", "listed"),
    [
        ("tempo.train", "tempo-train: train a language model with reinforcement", "method"),
        ("tempo.evaluate", "tempo-eval: evaluate a tempo-train checkpoint", "tasks"),
    ],
)
def test_help_says_what_the_command_does_and_lists_the_options(tmp_path, module, start, listed):
    proc = run_module(module, "--help", cache=tmp_path / "cache", timeout=60)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith(start), proc.stdout[:300]
    lines = proc.stdout.splitlines()
    command = start.split(":")[0]
    examples = [line for line in lines if line.startswith(f"  {command} ")]
    assert len(examples) == 3, examples
    options = next(line for line in lines if line.startswith(f"{listed}: "))
    names = {"method": ["fixed", "heuristic", "introspective", "meta_policy"]}
    names["tasks"] = ["arithmetic", "countdown", "gsm8k"]
    assert all(name in options.split(": ", 1)[1].split(", ") for name in names[listed]), options
    assert "powered by Hydra" not in proc.stdout
    if module == "tempo.evaluate":  # only the groups tempo-eval reads
        assert "model: " in proc.stdout and not any(x.startswith("method:") for x in lines)


def test_entry_points_import_without_torch_or_lightning():
    """What keeps `--help` and bad overrides fast (about 0.8-1.5 s here): the heavy parts are
    imported inside the job."""
    code = (
        "import sys, tempo.train, tempo.evaluate; "
        "print(sorted(m for m in ('torch', 'lightning', 'transformers') if m in sys.modules))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "[]"
