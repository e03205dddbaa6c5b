"""The RL step inside a real Lightning loop, with a fake scorer whose rewards we control."""

from __future__ import annotations

import copy

import lightning as L
import pytest
import torch

from tempo.data.arithmetic import ArithmeticTask
from tempo.data.datamodule import PromptDataModule
from tempo.logging.jsonl import JsonlLogger
from tempo.rewards.scorer import ScoredBatch
from tempo.rl.grpo import GRPOConfig
from tempo.rl.module import RLVRModule, evaluation_metrics
from tempo.rl.settings import EvalConfig, RolloutConfig
from tempo.temperature.fixed import FixedTemperature


class LengthParityScorer:
    """Reward 1 for completions of even length (or a constant), and remember what it saw."""

    def __init__(self, constant: float | None = None) -> None:
        self.constant = constant
        self.seen: list[list[str]] = []

    def __call__(self, completions, golds, **row_data):
        self.seen.append(list(completions))
        if self.constant is not None:
            rewards = [self.constant] * len(completions)
        else:
            rewards = [float(len(c) % 2 == 0) for c in completions]
        return ScoredBatch(
            rewards, [r == 1.0 for r in rewards], [c[-1:] or None for c in completions]
        )

    def check(self, completions, golds):
        return self(completions, golds)

    def stats(self):
        return {}

    def close(self):
        pass


def _fit(model, tokenizer, scorer, tmp_path, steps=2, mu=1, lr=1e-2, controller=None, **grpo):
    """`steps` RL steps of a real Lightning loop; `grpo` overrides GRPOConfig fields."""
    task = ArithmeticTask(num_test=4)
    grpo = GRPOConfig(group_size=4, mu=mu, lr=lr, **{"micro_batch_size": 5, **grpo})
    module = RLVRModule(
        model,
        tokenizer,
        controller or FixedTemperature(1.0),
        grpo,
        RolloutConfig(2, 12),
        EvalConfig(every=0, num_problems=4, samples=2, ks=(1, 2)),
        scorer,
        "arithmetic",
    )
    data = PromptDataModule(task, 2, steps, 4, 4)
    log = JsonlLogger(tmp_path)
    trainer = L.Trainer(
        max_steps=steps,
        max_epochs=1,
        logger=[log],
        accelerator="cpu",
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    trainer.fit(module, datamodule=data)
    log.close()
    return module, log


@pytest.mark.parametrize("mu", [1, 2])
def test_step_updates_policy_and_logs_what_it_saw(tiny_model, char_tokenizer, tmp_path, mu):
    model = copy.deepcopy(tiny_model).train()
    before = [p.detach().clone() for p in model.parameters()]
    scorer = LengthParityScorer()
    module, log = _fit(model, char_tokenizer, scorer, tmp_path, mu=mu)
    assert module.global_step == 2 and module.rl_step == 2  # one counted step per RL step
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    first = scorer.seen[0]
    assert len(first) == 8  # 2 prompts x group of 4
    expected_acc = sum(len(c) % 2 == 0 for c in first) / 8
    assert log.history["train/accuracy"][0] == (0, expected_acc)
    for key in [
        "loss/policy",
        "loss/kl",
        "loss/clip_frac",
        "explore/entropy",
        "explore/temperature_mean",
        "train/frac_zero_std_groups",
    ]:
        assert [s for s, _ in log.history[key]] == [0, 1]
    assert log.latest["explore/temperature_mean"] == pytest.approx(1.0)
    assert log.latest["explore/temperature_std"] == pytest.approx(0.0)


def test_equal_rewards_leave_the_policy_unchanged(tiny_model, char_tokenizer, tmp_path):
    model = copy.deepcopy(tiny_model).train()
    before = [p.detach().clone() for p in model.parameters()]
    module, log = _fit(model, char_tokenizer, LengthParityScorer(constant=1.0), tmp_path)
    assert module.rl_step == 2  # the steps still count
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert log.latest["train/frac_zero_std_groups"] == 1.0


def test_evaluation_metrics_against_hand_computed_values():
    records = [
        {"greedy": True, "correct": [True, False, False, False], "answers": ["1", "2", "2", "3"]},
        {"greedy": False, "correct": [True, True, False, False], "answers": ["5", "5", "6", None]},
    ]
    cfg = EvalConfig(samples=4, ks=(1, 2, 4))
    m = evaluation_metrics(records, cfg, "eval/t")
    assert m["eval/t/accuracy"] == 0.5
    assert m["eval/t/avg@4"] == pytest.approx((0.25 + 0.5) / 2)
    # pass@2: problem 1: 1 - C(3,2)/C(4,2) = 1 - 3/6; problem 2: 1 - C(2,2)/C(4,2) = 1 - 1/6
    assert m["eval/t/pass@2"] == pytest.approx(((1 - 3 / 6) + (1 - 1 / 6)) / 2)
    assert m["eval/t/pass@1"] == pytest.approx(m["eval/t/avg@4"])
    assert m["eval/t/pass@4"] == 1.0
    # majority: problem 1 votes "2" (wrong), problem 2 votes "5" (right)
    assert m["eval/t/maj@4"] == 0.5
