"""`score_problems` record layout, and training's validation and `EvalModule` agreeing."""

from __future__ import annotations

import copy

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from tempo.data.arithmetic import ArithmeticTask
from tempo.data.datamodule import PromptDataModule
from tempo.data.problem import Problem
from tempo.evaluation.metrics import evaluation_metrics
from tempo.evaluation.module import EvalModule
from tempo.evaluation.scoring import Samples, score_problems
from tempo.logging.jsonl import JsonlLogger
from tempo.rewards.scorer import ScoredBatch
from tempo.rl.grpo import GRPOConfig
from tempo.rl.module import RLVRModule
from tempo.rl.settings import EvalConfig, RolloutConfig
from tempo.temperature.fixed import FixedTemperature


def problem(i: int) -> Problem:
    return Problem(f"t/{i}", str(i), f"P{i}=", str(i), f"\\boxed{{{i}}}")


class EchoScorer:
    """Correct iff the completion equals the gold; the answer is the completion itself."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[str], list[str]]] = []

    def __call__(self, completions, golds):
        self.calls.append((list(completions), list(golds)))
        correct = [c == g for c, g in zip(completions, golds, strict=True)]
        return ScoredBatch([float(x) for x in correct], correct, [c or None for c in completions])


def test_records_are_problem_major_with_greedy_first():
    calls = []

    def sample_fn(prompts, greedy):
        calls.append((list(prompts), greedy))
        if greedy:  # right for P0 only
            texts = ["0" if p == "P0=" else "x" for p in prompts]
        else:  # row j of problem i answers (j % 3) % 2 + i: right for rows 0 and 2 of 3
            texts = [str((j % 3) % 2 + int(p[1:-1])) for j, p in enumerate(prompts)]
        return Samples(texts, [0.5 + j for j in range(len(prompts))], [1] * len(prompts))

    scorer = EchoScorer()
    records = score_problems(sample_fn, scorer, [problem(0), problem(1)], 3, greedy=True)
    assert calls[0] == (["P0=", "P1="], True)
    assert calls[1] == (["P0=", "P0=", "P0=", "P1=", "P1=", "P1="], False)
    assert [r["id"] for r in records] == ["t/0", "t/1"]
    assert [r["greedy"] for r in records] == [True, False]
    assert records[0]["greedy_completion"] == "0" and records[1]["greedy_answer"] == "x"
    # rows j = 0..5: (j % 3) % 2 + i -> problem 0: 0 1 0, problem 1: 1 2 1
    assert records[0]["completions"] == ["0", "1", "0"]
    assert records[1]["completions"] == ["1", "2", "1"]
    assert records[0]["correct"] == [True, False, True]
    assert records[1]["correct"] == [True, False, True]
    assert records[1]["temperatures"] == [3.5, 4.5, 5.5] and records[1]["lengths"] == [1, 1, 1]
    assert records[0]["prompt"] == "P0=" and records[1]["gold"] == "1"


def test_without_greedy_no_greedy_decode_happens():
    calls = []

    def sample_fn(prompts, greedy):
        calls.append(greedy)
        return Samples(["1"] * len(prompts), [1.0] * len(prompts), [1] * len(prompts))

    records = score_problems(sample_fn, EchoScorer(), [problem(1)], 2, greedy=False)
    assert calls == [False]
    assert records[0]["greedy"] is False and records[0]["greedy_completion"] is None


class CheckOnlyScorer(EchoScorer):
    """A `RewardScorer`-like double: `check` is correctness only; a full call must not happen."""

    def __call__(self, completions, golds):
        raise AssertionError("evaluation ran the reward functions")

    def check(self, completions, golds):
        return super().__call__(completions, golds)


def test_scoring_uses_the_scorers_check_when_it_has_one():
    def sample_fn(prompts, greedy):
        return Samples(["1", "x"] * (len(prompts) // 2), [1.0] * len(prompts), [1] * len(prompts))

    scorer = CheckOnlyScorer()
    records = score_problems(sample_fn, scorer, [problem(1)], 2, greedy=False)
    assert records[0]["correct"] == [True, False] and records[0]["answers"] == ["1", "x"]
    assert scorer.calls == [(["1", "x"], ["1", "1"])]


def test_scoring_with_a_real_scorer_runs_no_user_function(tmp_path):
    from tempo.rewards.scorer import RewardScorer
    from tests.rewards.reward_fns import exact_check

    functions = [{"_target_": "tests.rewards.reward_fns.crash", "weight": 1.0}]
    scorer = RewardScorer(functions=functions, check=exact_check)
    try:

        def sample_fn(prompts, greedy):
            return Samples(["\\boxed{1}"] * len(prompts), [1.0] * len(prompts), [2] * len(prompts))

        records = score_problems(sample_fn, scorer, [problem(1), problem(2)], 2, greedy=True)
        assert [r["greedy"] for r in records] == [True, False]
        assert [r["correct"] for r in records] == [[True, True], [False, False]]
        assert records[1]["answers"] == ["1", "1"]
        assert scorer.stats()["reward/crash_errors"] == 0  # never called
    finally:
        scorer.close()


class ParityScorer:
    """Correct iff the completion has an even length; the answer is its last character."""

    def __call__(self, completions, golds):
        correct = [len(c) % 2 == 0 for c in completions]
        return ScoredBatch(
            [float(x) for x in correct], correct, [c[-1:] or None for c in completions]
        )

    def stats(self):
        return {}

    def close(self):
        pass


def test_training_validation_and_eval_module_give_the_same_numbers(
    tiny_model, char_tokenizer, tmp_path
):
    """Both run `score_problems` + `evaluation_metrics`: same model, seed and T, same result."""
    task = ArithmeticTask(num_test=6)
    cfg = EvalConfig(every=0, num_problems=6, samples=3, temperature=0.8, ks=(1, 2, 3))
    module = RLVRModule(
        copy.deepcopy(tiny_model),
        char_tokenizer,
        FixedTemperature(1.0),
        GRPOConfig(group_size=2),
        RolloutConfig(2, 10),
        cfg,
        ParityScorer(),
        "arithmetic",
        seed=3,
    )
    log = JsonlLogger(tmp_path)
    trainer_args = dict(
        accelerator="cpu",
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    L.Trainer(logger=[log], **trainer_args).validate(
        module, datamodule=PromptDataModule(task, 2, 1, 6, 4), verbose=False
    )
    log.close()
    during_training = {k: v for k, v in log.latest.items() if k.startswith("eval/")}

    evaluator = EvalModule(
        copy.deepcopy(tiny_model), char_tokenizer, FixedTemperature(0.8), 10, 3, True, seed=3
    )
    evaluator.begin_task(ParityScorer())
    loader = DataLoader(task.test_problems()[:6], batch_size=4, collate_fn=list)
    L.Trainer(logger=False, **trainer_args).validate(evaluator, dataloaders=loader, verbose=False)
    standalone = evaluation_metrics(evaluator.records, (1, 2, 3), 3, True, "eval/arithmetic")
    assert standalone == during_training
    assert standalone["eval/arithmetic/temperature_mean"] == pytest.approx(0.8)
    assert len(evaluator.records) == 6

    # a second validate starts from the seed again: the same records
    first = [r["completions"] for r in evaluator.records]
    evaluator.begin_task(ParityScorer())
    torch.manual_seed(999)
    L.Trainer(logger=False, **trainer_args).validate(evaluator, dataloaders=loader, verbose=False)
    assert [r["completions"] for r in evaluator.records] == first
