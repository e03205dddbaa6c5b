"""`trainer.gradient_checkpointing`: same gradients and rollouts, reached through the runner."""

from __future__ import annotations

import copy
from pathlib import Path
from types import SimpleNamespace

import hydra
import lightning as L
import pytest
import torch
from omegaconf import OmegaConf

from tempo.config_error import ConfigError
from tempo.data.arithmetic import ArithmeticTask
from tempo.data.datamodule import PromptDataModule
from tempo.models.policy import forward_hidden, lm_head
from tempo.models.specs import TinyModel
from tempo.rl.grpo import GRPOConfig, policy_loss
from tempo.rl.logprobs import token_logprobs
from tempo.rl.module import RLVRModule
from tempo.rl.settings import EvalConfig, RolloutConfig, TrainerConfig
from tempo.runner import build_policy, enable_gradient_checkpointing
from tempo.sampling.sampler import Sampler
from tempo.temperature.fixed import FixedTemperature

from .test_module import LengthParityScorer

CPU_YAML = Path(__file__).resolve().parents[2] / "conf" / "trainer" / "cpu.yaml"


def checkpointed(model) -> bool:
    """Whether any decoder layer has checkpointing switched on."""
    return any(getattr(m, "gradient_checkpointing", False) for m in model.modules())


def count_mlp_calls(model) -> list[int]:
    """A counter of calls of layer 0's MLP (recomputed in backward when checkpointed; a pre-hook,
    since the recomputation stops early once it has every tensor the backward needs)."""
    calls = [0]
    layer = model.model.layers[0]
    layer.mlp.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def grpo_loss(model, char_tokenizer):
    """One clipped-surrogate loss on fixed prompt + completion tokens (train mode)."""
    gen = torch.Generator().manual_seed(0)
    vocab = model.config.vocab_size
    ids = torch.randint(3, vocab, (4, 14), generator=gen)
    attn = torch.ones_like(ids)
    attn[0, :2] = 0  # a left-padded row
    temps = 0.6 + torch.rand(4, 6, generator=gen)  # per-token stored temperatures
    mask = torch.ones(4, 6)
    mask[1, 4:] = 0
    hidden = forward_hidden(model, ids, attn)[:, 7:-1]
    logp = token_logprobs(lm_head(model)(hidden), ids[:, 8:], temps)
    old = logp.detach() + 0.05 * torch.randn(4, 6, generator=gen)
    loss, _ = policy_loss(logp, old, torch.tensor([1.0, -0.5, 0.3, -0.8]), mask)
    return loss


def test_checkpointing_gives_the_same_loss_and_gradients(tiny_model, char_tokenizer):
    plain = copy.deepcopy(tiny_model).train()
    ckpt = copy.deepcopy(tiny_model).train()
    enable_gradient_checkpointing(ckpt)
    assert checkpointed(ckpt) and not checkpointed(plain)
    calls_plain, calls_ckpt = count_mlp_calls(plain), count_mlp_calls(ckpt)
    loss_plain, loss_ckpt = grpo_loss(plain, char_tokenizer), grpo_loss(ckpt, char_tokenizer)
    loss_plain.backward()
    loss_ckpt.backward()
    assert calls_plain[0] == 1 and calls_ckpt[0] == 2  # the layer really was recomputed
    assert torch.allclose(loss_plain, loss_ckpt, atol=1e-6)
    named = dict(ckpt.named_parameters())
    for name, p in plain.named_parameters():
        assert p.grad is not None and named[name].grad is not None, name
        assert torch.allclose(p.grad, named[name].grad, atol=1e-6, rtol=1e-5), name
    assert any(float(p.grad.abs().sum()) > 0 for p in plain.parameters())


def test_sampler_decodes_the_same_with_checkpointing_on(tiny_model, char_tokenizer):
    """Decoding runs in eval mode (as RLVRModule._sample does), where checkpointing is off,
    so the KV cache is kept and the rollout is unchanged."""
    ckpt = copy.deepcopy(tiny_model)
    enable_gradient_checkpointing(ckpt)
    ckpt.eval()
    enc = char_tokenizer(["1+2=", "13*4-5="], padding=True, return_tensors="pt")
    sampler = Sampler(10, char_tokenizer.eos_token_id, char_tokenizer.pad_token_id)
    outs = []
    for model in (tiny_model, ckpt):
        gen = torch.Generator().manual_seed(3)
        ids, mask = enc["input_ids"], enc["attention_mask"]
        outs.append(sampler.rollout(model, ids, mask, FixedTemperature(1.2), generator=gen))
    assert torch.equal(outs[0].tokens, outs[1].tokens)
    assert torch.allclose(outs[0].logprobs, outs[1].logprobs, atol=1e-6)


def _one_step(model, tokenizer, steps: int = 1):
    module = RLVRModule(
        model,
        tokenizer,
        FixedTemperature(1.0),
        GRPOConfig(group_size=4, lr=1e-2, micro_batch_size=3),
        RolloutConfig(2, 10),
        EvalConfig(every=0, num_problems=4, samples=2, ks=(1, 2)),
        LengthParityScorer(),
        "arithmetic",
    )
    trainer = L.Trainer(
        max_steps=steps,
        max_epochs=1,
        logger=False,
        accelerator="cpu",
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    trainer.fit(module, datamodule=PromptDataModule(ArithmeticTask(num_test=4), 2, steps, 4, 4))
    return module


def test_a_training_step_updates_the_policy_identically(tiny_model, char_tokenizer):
    before = copy.deepcopy(tiny_model).train()
    plain = _one_step(copy.deepcopy(before), char_tokenizer).model
    ckpt_model = copy.deepcopy(before)
    enable_gradient_checkpointing(ckpt_model)
    ckpt = _one_step(ckpt_model, char_tokenizer).model
    moved = [
        not torch.equal(a, b) for a, b in zip(before.parameters(), plain.parameters(), strict=True)
    ]
    assert any(moved)
    for a, b in zip(plain.parameters(), ckpt.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-5)


def _parts(checkpointing: bool) -> SimpleNamespace:
    """The parts `build_policy` reads, as tempo-train builds them (random tiny weights)."""
    tiny = TinyModel(hidden_size=32, num_layers=2, intermediate_size=64, warmstart={"steps": 0})
    trainer = TrainerConfig(gradient_checkpointing=checkpointing)
    return SimpleNamespace(model=tiny, task=ArithmeticTask(num_test=4), trainer=trainer)


@pytest.mark.parametrize("checkpointing", [False, True])
def test_the_option_reaches_the_model_through_the_runner(checkpointing):
    model, _ = build_policy(_parts(checkpointing))
    assert model.training
    assert checkpointed(model) is checkpointing


def test_the_option_is_in_the_trainer_config_and_validated():
    cfg = OmegaConf.load(CPU_YAML)
    assert cfg.gradient_checkpointing is False
    assert hydra.utils.instantiate(cfg).gradient_checkpointing is False
    on = OmegaConf.merge(cfg, {"gradient_checkpointing": True})
    assert hydra.utils.instantiate(on).gradient_checkpointing is True
    with pytest.raises(ConfigError, match="gradient_checkpointing='yes' is invalid"):
        TrainerConfig(gradient_checkpointing="yes")


def test_a_model_without_support_is_a_config_error():
    class Plain(torch.nn.Module):
        supports_gradient_checkpointing = False

    with pytest.raises(ConfigError, match="trainer.gradient_checkpointing"):
        enable_gradient_checkpointing(Plain())
