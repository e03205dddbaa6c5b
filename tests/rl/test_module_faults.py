"""Non-finite losses and logits stop the step (no update), save a checkpoint and say why."""

from __future__ import annotations

import copy

import lightning as L
import pytest
import torch

from tempo.data.arithmetic import ArithmeticTask
from tempo.data.datamodule import PromptDataModule
from tempo.rewards.scorer import ScoredBatch
from tempo.rl.grpo import GRPOConfig
from tempo.rl.module import RLVRModule
from tempo.rl.nonfinite import NonFiniteError
from tempo.rl.settings import EvalConfig, RolloutConfig
from tempo.temperature.fixed import FixedTemperature


class RewardList:
    """Rewards 0, 1, 0, 1, ... except that one completion gets `bad` (e.g. NaN)."""

    def __init__(self, bad: float | None = None) -> None:
        self.bad = bad

    def __call__(self, completions, golds, **row_data):
        rewards = [float(i % 2) for i in range(len(completions))]
        if self.bad is not None:
            rewards[0] = self.bad
        return ScoredBatch(rewards, [r == 1.0 for r in rewards], [None] * len(completions))

    def stats(self):
        return {}


def _fit(model, tokenizer, scorer, root):
    module = RLVRModule(
        model,
        tokenizer,
        FixedTemperature(1.0),
        GRPOConfig(group_size=4, lr=1e-2),
        RolloutConfig(2, 8),
        EvalConfig(every=0, num_problems=4, samples=2, ks=(1, 2)),
        scorer,
        "arithmetic",
    )
    trainer = L.Trainer(
        default_root_dir=root,
        max_steps=2,
        max_epochs=1,
        logger=False,
        accelerator="cpu",
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    trainer.fit(module, datamodule=PromptDataModule(ArithmeticTask(num_test=4), 2, 2, 4, 4))


def test_a_nan_reward_stops_before_the_update_and_saves_the_state(
    tiny_model, char_tokenizer, tmp_path
):
    model = copy.deepcopy(tiny_model).train()
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(NonFiniteError, match=r"loss/policy is nan at RL step 0; .*not applied"):
        _fit(model, char_tokenizer, RewardList(bad=float("nan")), tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    saved = torch.load(tmp_path / "checkpoints" / "nonfinite-step0.ckpt", weights_only=False)
    for name, value in model.state_dict().items():
        assert torch.equal(saved["state_dict"][f"model.{name}"], value)


def test_non_finite_logits_stop_the_rollout_with_a_clear_message(
    tiny_model, char_tokenizer, tmp_path
):
    model = copy.deepcopy(tiny_model).train()
    with torch.no_grad():
        model.get_output_embeddings().weight[0, 0] = float("nan")
    with pytest.raises(NonFiniteError, match=r"logits are not finite at RL step 0"):
        _fit(model, char_tokenizer, RewardList(), tmp_path)
    assert (tmp_path / "checkpoints" / "nonfinite-step0.ckpt").is_file()
