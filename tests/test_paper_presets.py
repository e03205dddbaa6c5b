"""The papers' presets: each composes, and each one's exact pipeline (its tasks, metrics,
schedule and methods) runs scaled down on CPU with a tiny local stand-in model that has a chat
template, and local data files written here in every benchmark's schema."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from tests.data import test_benchmark as bench
from tests.data import test_humaneval as he
from tests.data import test_multiple_choice as mc
from tests.models.chat_fixtures import save_chat_model
from tests.test_train_cli import ROOT, offline_env

PAPER_TASKS = {  # task name -> (train rows or None, test rows), each in the benchmark's schema
    "math": (bench.MATH_TRAIN, bench.MATH_TEST),
    "math500": (None, bench.MATH500_TEST),
    "aime24": (None, bench.AIME24_TEST),
    "amc23": (None, bench.AMC23_TEST),
    "minerva": (None, bench.MINERVA_TEST),
    "olympiadbench": (None, bench.OLYMPIAD_TEST),
    "omni_math": (None, bench.OMNI_MATH_TEST),
    "open_s1": (bench.OPEN_S1_TRAIN, None),  # train only: its held-out rows are `holdout`
    "ecqa": (mc.ECQA_TRAIN, mc.ECQA_TEST),
    "gpqa_diamond": (None, mc.GPQA_ROWS),
    "mmlu_pro": (None, mc.MMLU_PRO_TEST),
    "humaneval": (None, he.ROWS),
}
SCALED_DOWN = [
    "trainer=cpu",
    "trainer.devices=1",
    "trainer.precision=32-true",
    "trainer.max_steps=2",
    "trainer.progress_bar=false",
    "trainer.threads=1",
    "trainer.gradient_checkpointing=false",
    "rollout.prompts_per_step=2",
    "rollout.max_new_tokens=12",
    "algorithm.group_size=2",
    "algorithm.micro_batch_size=4",
    "eval.num_problems=2",
    "eval.samples=2",
    "eval.ks=[1,2]",
    "eval.batch_size=4",
    "reward.workers=1",
    "logger=jsonl",
]


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory) -> tuple[Path, Path]:
    """(model directory, TEMPO_DATA_DIR) shared by this module's runs."""
    root = tmp_path_factory.mktemp("papers")
    model = save_chat_model(root / "model", context=512)
    data = root / "data"
    for name, (train, test) in PAPER_TASKS.items():
        folder = data / name
        folder.mkdir(parents=True)
        if train is not None:
            bench.write_jsonl(folder / "train.jsonl", train)
        if test is not None:
            bench.write_jsonl(folder / "test.jsonl", test)
    return model, data


def _run(*args: str, stand_in: tuple[Path, Path], tmp: Path, timeout: int = 600):
    model, data = stand_in
    env = dict(offline_env(tmp / "cache"), TEMPO_DATA_DIR=str(data))
    return subprocess.run(
        [sys.executable, "-m", "tempo.train", *args, f"model.name_or_path={model}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _compose(*args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "tempo.train", *args, "--cfg", "job"],
        cwd=ROOT,
        env=offline_env(Path("/nonexistent-cache")),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").open()]


TAMPO_EVAL = ["aime24", "math500", "amc23", "minerva", "olympiadbench"]
INTROLLM_EVAL = [
    "aime24",
    "amc23",
    "math500",
    "minerva",
    "olympiadbench",
    "omni_math",
    "gpqa_diamond",
    "mmlu_pro",
    "humaneval",
]


@pytest.mark.parametrize(
    ("preset", "expected"),
    [
        (
            "tampo_paper",
            [
                "name_or_path: deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B",
                "name: open_s1",
                "max_steps: 200",
                "lr: 1.0e-06",
                "lr_schedule: cosine",
                "min_lr_ratio: 0.1",
                "max_new_tokens: 6144",
                "alpha: 0.05",
                "top_p: 0.7",
                "strategy: ddp",
                "precision: bf16-mixed",
                "devices: 8",
            ],
        ),
        ("tampo_ecqa", ["name_or_path: Qwen/Qwen2.5-3B-Instruct", "name: ecqa"]),
        (
            "introllm_paper",
            ["name_or_path: Qwen/Qwen3-1.7B", "name: math", "IntrospectiveTemperature"],
        ),
        ("introllm_paper_4b", ["name_or_path: Qwen/Qwen3-4B", "IntrospectiveTemperature"]),
    ],
)
def test_each_preset_composes_with_the_papers_settings(preset, expected):
    text = _compose(f"experiment={preset}")
    for fragment in expected:
        assert fragment in text, (preset, fragment)


def test_tampo_candidates_and_benchmarks_are_the_papers():
    text = _compose("experiment=tampo_paper")
    assert "candidates:\n  - 0.6\n  - 0.7" in text.replace("\n", "\\n") or (
        "- 0.6" in text and "- 1.5" in text
    )
    for task in TAMPO_EVAL:
        assert f"- {task}" in text


@pytest.mark.parametrize(
    "point", ["fixed_t0.9", "fixed_t1.2", "fixed_t1.5", "linear_0.9_1.5", "tampo"]
)
def test_each_baseline_point_composes(point):
    text = _compose("experiment=tampo_paper", f"baseline={point}")
    if point.startswith("fixed"):
        assert "FixedTemperature" in text and f"temperature: {point[7:]}" in text
    elif point == "tampo":
        assert "MetaPolicyTemperature" in text
    else:
        assert "rule: linear" in text and "t_start: 0.9" in text and "t_end: 1.5" in text


def _cosine(step: int, total: int, lr: float, ratio: float) -> float:
    return lr * (ratio + (1 - ratio) * 0.5 * (1 + math.cos(math.pi * step / total)))


def _check_run(run: Path, tasks: list[str], ks: tuple[int, ...] = (1, 2)) -> dict:
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["steps"] == 2, summary
    final = summary["final"]
    for task in tasks:
        for k in ks:
            assert f"eval/{task}/pass@{k}" in final, (task, k)
        assert f"eval/{task}/avg@2" in final
    return summary


def test_tampo_paper_pipeline_runs_scaled_down(stand_in, tmp_path):
    run = tmp_path / "run"
    proc = _run(
        "experiment=tampo_paper",
        *SCALED_DOWN,
        "task.holdout=2",
        "trainer.checkpoint_every=1",
        f"hydra.run.dir={run}",
        stand_in=stand_in,
        tmp=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    _check_run(run, ["open_s1", *TAMPO_EVAL])
    lines = _metrics(run)
    lrs = [line["train/lr"] for line in lines if "train/lr" in line]
    assert lrs == pytest.approx([_cosine(s, 2, 1e-6, 0.1) for s in (0, 1)])  # paper's schedule
    temps = [line["method/T"] for line in lines if "method/T" in line]
    assert len(temps) == 2 and all(0.6 <= t <= 1.5 for t in temps)  # TAMPO's candidates
    assert any("method/prob_T=1.5" in line for line in lines)
    # keep_checkpoints: 2 with checkpoint_every: 1 keeps the two newest periodic checkpoints.
    kept = sorted(p.name for p in (run / "checkpoints").glob("step*.ckpt"))
    assert kept == ["step1.ckpt", "step2.ckpt"]


def test_tampo_paper_baselines_sweep_runs_every_point_scaled_down(stand_in, tmp_path):
    sweep = tmp_path / "sweep"
    proc = _run(
        "experiment=tampo_paper_baselines",
        *SCALED_DOWN,
        "task.holdout=2",
        "eval.tasks=[aime24]",
        f"hydra.sweep.dir={sweep}",
        stand_in=stand_in,
        tmp=tmp_path,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    runs = sorted(p for p in sweep.iterdir() if (p / "summary.json").is_file())
    names = {p.name.split("_", 1)[1] for p in runs}
    assert names == {
        "fixed-T0.9-s0",
        "fixed-T1.2-s0",
        "fixed-T1.5-s0",
        "linear-0.9-1.5-s0",
        "tampo-s0",
    }
    for run in runs:
        _check_run(run, ["open_s1", "aime24"])
        temps = [
            line["explore/temperature_mean"]
            for line in _metrics(run)
            if "explore/temperature_mean" in line
        ]
        if "fixed-T" in run.name:
            t = float(run.name.split("fixed-T")[1].split("-")[0])
            assert temps == pytest.approx([t, t])
        if "linear" in run.name:
            assert temps == pytest.approx([0.9, 0.9 + 0.6 / 2])  # T_s = 0.9 + 0.6 s / S


def test_tampo_ecqa_pipeline_runs_scaled_down(stand_in, tmp_path):
    run = tmp_path / "run"
    proc = _run(
        "experiment=tampo_ecqa",
        *SCALED_DOWN,
        f"hydra.run.dir={run}",
        stand_in=stand_in,
        tmp=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = _check_run(run, ["ecqa"])
    assert not any(key.startswith("eval/aime24") for key in summary["final"])


@pytest.mark.parametrize("preset", ["introllm_paper", "introllm_paper_baselines"])
def test_introllm_pipelines_run_scaled_down(stand_in, tmp_path, preset):
    out = tmp_path / "out"
    where = f"hydra.sweep.dir={out}" if preset.endswith("baselines") else f"hydra.run.dir={out}"
    extra = ["eval.tasks=[amc23,humaneval]"] if preset.endswith("baselines") else []
    proc = _run(
        f"experiment={preset}",
        *SCALED_DOWN,
        *extra,
        "eval.ks=[2]",
        where,
        stand_in=stand_in,
        tmp=tmp_path,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    runs = (
        [out]
        if not preset.endswith("baselines")
        else sorted(p for p in out.iterdir() if (p / "summary.json").is_file())
    )
    tasks = ["math", "amc23", "humaneval"] if extra else ["math", *INTROLLM_EVAL]
    for run in runs:
        _check_run(run, tasks, ks=(2,))
    if preset.endswith("baselines"):
        names = {p.name.split("_", 1)[1] for p in runs}
        assert names == {"fixed-T1.0-s0", "ead-s0", "tampo-s0", "introspective-s0"}
    else:  # policy phase, then head phase (coordinate ascent, 1:1)
        phases = [
            line["method/phase_head"] for line in _metrics(out) if "method/phase_head" in line
        ]
        assert phases == [0.0, 1.0]
