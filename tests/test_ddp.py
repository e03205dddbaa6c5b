"""Two RL steps of `run_training` under Lightning DDP on 2 CPU processes (gloo).

The two ranks are started the way `torchrun` (or Lightning's own launcher) starts them: each
process gets RANK / LOCAL_RANK / WORLD_SIZE / MASTER_* in its environment and runs the same
`run_training` call (the function `tempo-train` calls) with `trainer.strategy=ddp`,
`devices=2`. The rewards are rigged (the first completion of every group scores 1), so every
rank has something to learn at every step; a further run gives rank 1 nothing to learn and
rank 0 three micro-batches, which the module must balance (every backward is an all-reduce).
Checked: each
rank draws its own prompts, the policy (and the introspective head, whose phases need
`find_unused_parameters`) stays identical on both ranks and moves, TAMPO draws the same T_s
on both ranks, and the run directory's files are written once, by rank 0.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import traceback
from pathlib import Path

import pytest
import torch

from tempo.data.arithmetic import ArithmeticTask
from tempo.logging.samples import SamplesConfig
from tempo.models.preflight import TRAIN_PROMPTS_CHECKED
from tempo.models.specs import TinyModel
from tempo.rewards.scorer import ScoredBatch
from tempo.rl.grpo import GRPOConfig
from tempo.rl.settings import EvalConfig, LoggerConfig, RewardConfig, RolloutConfig, TrainerConfig
from tempo.runner import RunParts, make_strategy, run_training
from tempo.temperature.fixed import FixedTemperature
from tempo.temperature.introspective import IntrospectiveTemperature
from tempo.temperature.meta_policy import MetaPolicyTemperature
from tests.gloo_ranks import run_ranks

WORLD = 2
GROUP = 4
PROMPTS = 2  # per rank and step
STEPS = 2
JOIN_TIMEOUT_S = 150


class FirstOfGroupScorer:
    """Reward 1 for the first completion of each group: every group has a spread."""

    def __call__(self, completions, golds, **row_data):
        rewards = [float(i % GROUP == 0) for i in range(len(completions))]
        return ScoredBatch(rewards, [r == 1.0 for r in rewards], [None] * len(completions))

    def stats(self):
        return {}

    def close(self):
        pass


class RiggedReward(RewardConfig):
    def scorer(self, check=None, extract=None):
        return FirstOfGroupScorer()


class NothingOnRankOne(FirstOfGroupScorer):
    """Rank 0 as above; rank 1 scores everything 0, so it has nothing to learn."""

    def __call__(self, completions, golds, **row_data):
        if torch.distributed.get_rank() == 0:
            return super().__call__(completions, golds)
        n = len(completions)
        return ScoredBatch([0.0] * n, [False] * n, [None] * n)


class UnevenReward(RewardConfig):
    def scorer(self, check=None, extract=None):
        return NothingOnRankOne()


class RecordingTask(ArithmeticTask):
    """Remembers which training problems were drawn."""

    def __init__(self) -> None:
        super().__init__(num_test=4)
        self.drawn: list[int] = []

    def train_problem(self, index: int):
        self.drawn.append(index)
        return super().train_problem(index)


class RecordingTiny(TinyModel):
    """Keeps the model it built, so the test can read the trained weights of every rank."""

    def build(self, task, accelerator: str = "cpu"):
        self.built, tokenizer = super().build(task, accelerator)
        return self.built, tokenizer


class RecordingMeta(MetaPolicyTemperature):
    """Remembers the temperature drawn at every step."""

    def begin_step(self, step: int):
        metrics = super().begin_step(step)
        self.drawn = [*getattr(self, "drawn", []), self.current_temperature]
        return metrics


def _method(name: str):
    if name == "fixed":
        return FixedTemperature(1.0)
    if name == "introspective":  # step 0 updates the policy, step 1 the head
        return IntrospectiveTemperature(policy_steps=1, head_steps=1, lr=1e-2)
    return RecordingMeta(seed=3, top_p=1.0, init=[0.1 * k for k in range(10)])


def _tiny(cache_dir: str) -> RecordingTiny:
    """A small tiny model without warm-start (random weights, cached under `cache_dir`)."""
    return RecordingTiny(
        hidden_size=32,
        num_layers=2,
        intermediate_size=64,
        warmstart={"steps": 0},
        cache_dir=cache_dir,
    )


def _worker(method: str, run_dir: str, out_dir: str, cache_dir: str, uneven: bool) -> None:
    rank = int(os.environ["RANK"])
    torch.set_num_threads(1)
    try:
        task = RecordingTask()
        tiny = _tiny(cache_dir)
        controller = _method(method)
        parts = RunParts(
            task=task,
            method=controller,
            # uneven: rank 0 learns from 3 micro-batches (8 rows by 3), rank 1 from none
            algorithm=GRPOConfig(group_size=GROUP, lr=1e-2, micro_batch_size=3 if uneven else 8),
            model=tiny,
            rollout=RolloutConfig(PROMPTS, 10),
            evaluation=EvalConfig(every=0, num_problems=4, samples=2, ks=(1, 2), at_start=False),
            reward=UnevenReward() if uneven else RiggedReward(),
            trainer=TrainerConfig(
                max_steps=STEPS, devices=WORLD, strategy="ddp", progress_bar=False
            ),
            logger=LoggerConfig(backend="jsonl"),
            samples=SamplesConfig(every=0),
        )
        summary = run_training(parts, run_dir, 0, "ddp", "test", config={"method": method})
        result = {
            "summary": summary,
            "drawn": task.drawn,
            "policy": {k: v.clone() for k, v in tiny.built.state_dict().items()},
            "controller": {
                k: v.clone()
                for k, v in controller.state_dict().items()
                if isinstance(v, torch.Tensor)
            },
            "temps": getattr(controller, "drawn", None),
            "world": torch.distributed.get_world_size(),
        }
    except BaseException:
        result = {"error": traceback.format_exc()}
    torch.save(result, Path(out_dir) / f"rank{rank}.pt")


def run_ddp(method: str, tmp_path: Path, uneven: bool = False) -> tuple[list[dict], dict]:
    """Start both ranks (environment as torchrun sets it), wait, return their results and the
    starting policy weights (built here first, so the ranks load them from the cache)."""
    cache = str(tmp_path / "cache")
    initial = _tiny(cache).build(ArithmeticTask(num_test=4))[0].state_dict()
    args = (method, str(tmp_path / "run"), str(tmp_path), cache, uneven)
    results = run_ranks(
        _worker, args, lambda rank: tmp_path / f"rank{rank}.pt", WORLD, JOIN_TIMEOUT_S
    )
    return results, initial


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _check_run_directory(run: Path) -> None:
    """Rank 0 wrote the summary, metrics (one line per step) and the final model."""
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["steps"] == STEPS
    assert "train/reward_mean" in summary["final"]  # rank 0's (rank 1's loggers hold nothing)
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert sorted(set(steps)) == list(range(STEPS + 1)) and len(steps) == len(set(steps))
    assert (run / "final_model").is_dir() and (run / "checkpoints" / "last.ckpt").is_file()


@pytest.fixture(scope="module")
def introspective_run(tmp_path_factory) -> tuple[list[dict], dict, Path]:
    tmp = tmp_path_factory.mktemp("ddp_introspective")
    ranks, initial = run_ddp("introspective", tmp)
    return ranks, initial, tmp / "run"


def test_each_rank_draws_its_own_prompts(introspective_run):
    ranks, _, _ = introspective_run
    assert [r["world"] for r in ranks] == [2, 2]
    # The preflight's length check reads the first training prompts of the stream; then
    # rank r, step s: problems (s * 2 + r) * 2 + i (seed 0).
    for rank in ranks:
        assert rank["drawn"][:TRAIN_PROMPTS_CHECKED] == list(range(TRAIN_PROMPTS_CHECKED))
    assert ranks[0]["drawn"][TRAIN_PROMPTS_CHECKED:] == [0, 1, 4, 5]
    assert ranks[1]["drawn"][TRAIN_PROMPTS_CHECKED:] == [2, 3, 6, 7]


def test_policy_and_head_stay_identical_across_ranks_and_learn(introspective_run):
    ranks, initial, run = introspective_run
    assert _same(ranks[0]["policy"], ranks[1]["policy"])
    assert _same(ranks[0]["controller"], ranks[1]["controller"])
    policy = ranks[0]["policy"]
    assert any(not torch.equal(policy[k], initial[k]) for k in initial)  # step 0 moved it
    # The head starts with a zero output layer; step 1 (the head phase) moved it.
    assert float(ranks[0]["controller"]["head.fc2.weight"].abs().sum()) > 0
    _check_run_directory(run)


def test_tampo_draws_the_same_temperatures_on_both_ranks(tmp_path):
    ranks, initial = run_ddp("meta_policy", tmp_path)
    assert ranks[0]["temps"] == ranks[1]["temps"] and len(ranks[0]["temps"]) == STEPS
    assert _same(ranks[0]["controller"], ranks[1]["controller"])
    ema = ranks[0]["controller"]["ema"]
    assert not torch.equal(ema, torch.tensor([0.1 * k for k in range(10)], dtype=torch.float64))
    assert _same(ranks[0]["policy"], ranks[1]["policy"])
    assert any(not torch.equal(ranks[0]["policy"][k], initial[k]) for k in initial)
    _check_run_directory(tmp_path / "run")


def test_a_rank_with_nothing_to_learn_keeps_step_with_the_others(tmp_path):
    ranks, initial = run_ddp("fixed", tmp_path, uneven=True)
    assert _same(ranks[0]["policy"], ranks[1]["policy"])  # rank 1 applied rank 0's gradients
    assert any(not torch.equal(ranks[1]["policy"][k], initial[k]) for k in initial)


@pytest.mark.parametrize(
    ("name", "start"), [("ddp", "popen"), ("ddp_spawn", "spawn"), ("ddp_fork", "fork")]
)
def test_ddp_names_get_find_unused_parameters_only_for_learned_methods(name, start):
    head = IntrospectiveTemperature()
    head.setup(32, 50, 10)  # the runner sets the method up before building the trainer
    for method, unused in ((FixedTemperature(1.0), False), (RecordingMeta(), False), (head, True)):
        strategy = make_strategy(name, method)
        assert strategy._ddp_kwargs["find_unused_parameters"] is unused
        assert strategy._start_method == start


def test_other_strategies_pass_through_unchanged():
    for name in ("auto", "ddp_find_unused_parameters_true", "fsdp", "deepspeed"):
        assert make_strategy(name, FixedTemperature(1.0)) == name


def test_tempo_train_with_two_cpu_processes_through_lightnings_launcher(tmp_path):
    """`tempo-train trainer.devices=2 trainer.strategy=ddp` on CPU: Lightning starts rank 1 by
    running the command again (into the same Hydra run directory); rank 0 alone writes it."""
    run = tmp_path / "run"
    overrides = [
        "trainer.devices=2",
        "trainer.strategy=ddp",
        "trainer.max_steps=2",
        "trainer.progress_bar=false",
        "trainer.threads=1",
        "logger=jsonl",
        "model.warmstart.steps=0",
        "model.hidden_size=32",
        "model.num_layers=2",
        "model.intermediate_size=64",
        "rollout.prompts_per_step=2",
        "rollout.max_new_tokens=10",
        "eval.num_problems=4",
        "eval.samples=2",
        "eval.ks=[1,2]",
        "eval.batch_size=4",
        "eval.at_start=false",
        "samples.every=0",
        f"hydra.run.dir={run}",
    ]
    env = dict(
        os.environ,
        TEMPO_CACHE_DIR=str(tmp_path / "cache"),
        HF_HUB_OFFLINE="1",
        WANDB_MODE="disabled",
    )
    for key in ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK", "NODE_RANK"):
        env.pop(key, None)
    done = subprocess.run(
        [sys.executable, "-m", "tempo.train", *overrides],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in output  # a second process really took part
    _check_run_directory(run)
    assert (run / "run_config.json").is_file()
    assert not list(run.glob("*.before-*"))  # rank 1 set nothing of rank 0's aside
