"""bf16 autocast (`trainer.precision=bf16-mixed`, the GPU trainers' setting) on CPU.

Lightning's bf16-mixed runs the step under torch.autocast, on CPU as on GPU, so the same code
path the GPU trainers take (bf16 matmuls, float32 weights, float32 log-prob maths) runs here.
"""

from __future__ import annotations

import copy

import lightning as L
import pytest
import torch

from tempo.data.arithmetic import ArithmeticTask
from tempo.data.datamodule import PromptDataModule
from tempo.logging.jsonl import JsonlLogger
from tempo.rl.grpo import GRPOConfig
from tempo.rl.module import RLVRModule
from tempo.rl.settings import EvalConfig, RolloutConfig
from tempo.temperature.fixed import FixedTemperature
from tempo.temperature.introspective import IntrospectiveTemperature
from tempo.temperature.meta_policy import MetaPolicyTemperature

from .test_module import LengthParityScorer


class RecordingModule(RLVRModule):
    """Keeps every training rollout, and whether autocast was on while it was sampled."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.rollouts: list = []
        self.autocast: list[bool] = []

    def _sample(self, prompts, controller, greedy=False):
        rollout = super()._sample(prompts, controller, greedy=greedy)
        if self.trainer.training:
            self.rollouts.append(rollout)
            self.autocast.append(torch.is_autocast_enabled("cpu"))
        return rollout


def controllers() -> dict:
    return {
        "fixed": lambda: FixedTemperature(1.0),
        "meta_policy": lambda: MetaPolicyTemperature(seed=1),
        # policy phase then head phase: both updates run under autocast
        "introspective": lambda: IntrospectiveTemperature(policy_steps=1, head_steps=1),
    }


@pytest.mark.parametrize("method", ["fixed", "meta_policy", "introspective"])
def test_bf16_mixed_training_steps_on_cpu(tiny_model, char_tokenizer, tmp_path, method):
    model = copy.deepcopy(tiny_model).train()
    before = [p.detach().clone() for p in model.parameters()]
    controller = controllers()[method]()
    controller.setup(model.config.hidden_size, model.config.vocab_size, 2)
    head_before = [p.detach().clone() for p in controller.parameters()]
    module = RecordingModule(
        model,
        char_tokenizer,
        controller,
        GRPOConfig(group_size=4, lr=1e-2, micro_batch_size=5),
        RolloutConfig(2, 12),
        EvalConfig(every=0, num_problems=4, samples=2, ks=(1, 2)),
        LengthParityScorer(),
        "arithmetic",
    )
    log = JsonlLogger(tmp_path)
    trainer = L.Trainer(
        max_steps=2,
        max_epochs=1,
        precision="bf16-mixed",
        logger=[log],
        accelerator="cpu",
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    trainer.fit(module, datamodule=PromptDataModule(ArithmeticTask(num_test=4), 2, 2, 4, 4))
    log.close()

    assert module.rl_step == 2
    assert module.autocast == [True, True]  # the rollouts really ran under bf16 autocast
    for rollout in module.rollouts:
        for name in ("temperatures", "logprobs", "entropy", "entropy_at_T"):
            assert getattr(rollout, name).dtype == torch.float32, name
        assert torch.isfinite(rollout.logprobs).all() and (rollout.temperatures > 0).all()
    assert all(p.dtype == torch.float32 for p in model.parameters())  # fp32 master weights
    losses = [value for _, value in log.history["loss/policy"]]
    policy_steps = 1 if method == "introspective" else 2  # step 1 is then the head's phase
    assert len(losses) == policy_steps and all(torch.isfinite(torch.tensor(v)) for v in losses)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    if method == "introspective":  # step 1 was the head phase: the head moved, in float32
        heads = [value for _, value in log.history["method/head_loss"]]
        assert heads and all(torch.isfinite(torch.tensor(v)) for v in heads)
        after = list(controller.parameters())
        assert all(p.dtype == torch.float32 for p in after)
        assert any(not torch.equal(a, b) for a, b in zip(head_before, after, strict=True))
    if method == "meta_policy":  # the EMA saw finite float64 statistics
        assert controller.ema.dtype == torch.float64 and torch.isfinite(controller.ema).all()
        assert bool((controller.ema != 0).any())
