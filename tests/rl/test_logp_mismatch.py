"""Sampler-vs-trainer log-prob gaps and truncated importance sampling (algorithm.tis_cap)."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from tempo.config_error import ConfigError
from tempo.rewards.scorer import ScoredBatch
from tempo.rl.grpo import GRPOConfig, LogpMismatch, policy_loss, truncated_is_weights
from tempo.rl.module import RLVRModule
from tests.rl import test_module


def test_truncated_is_weights_against_hand_values():
    trainer = torch.tensor([[-1.0, -2.0, -0.1], [-0.7, 5.0, 0.0]])
    sampler = torch.tensor([[-1.5, -0.5, -0.1], [-0.2, float("-inf"), 0.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    w = truncated_is_weights(trainer, sampler, mask, cap=1.5)
    expected = torch.tensor(
        [[min(math.exp(0.5), 1.5), math.exp(-1.5), 1.0], [math.exp(-0.5), 1.0, 1.0]]
    )
    torch.testing.assert_close(w, expected)
    assert not w.requires_grad
    with pytest.raises(ValueError, match=">= 1"):
        truncated_is_weights(trainer, sampler, mask, cap=0.5)


def test_logp_mismatch_accumulates_masked_abs_gaps():
    m = LogpMismatch()
    m.add(
        torch.tensor([[-1.0, -2.0, 9.0]]),
        torch.tensor([[-1.25, -1.0, 0.0]]),
        torch.tensor([[1, 1, 0]]),
    )
    m.add(torch.tensor([[-3.0]]), torch.tensor([[-3.5]]), torch.tensor([[1]]))
    m.add(torch.tensor([[7.0]]), torch.tensor([[0.0]]), torch.tensor([[0]]))  # padding only
    assert m.tokens == 3
    assert m.abs_sum == pytest.approx(0.25 + 1.0 + 0.5)
    assert m.abs_max == pytest.approx(1.0)


def test_policy_loss_weights_each_tokens_surrogate():
    """On-policy (old = logp): loss = -(1/B) sum_i (1/L_i) sum_t w_it A_i, and its gradient in
    logp_it is -w_it A_i / (B L_i); the KL term is not weighted."""
    logp = torch.tensor([[-1.0, -0.5, -2.0], [-0.3, -0.9, -1.1]], requires_grad=True)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    adv = torch.tensor([0.8, -1.2])
    w = torch.tensor([[1.0, 2.0, 0.5], [3.0, 0.25, 7.0]])  # 7.0 sits on padding
    loss, stats = policy_loss(logp, logp.detach(), adv, mask, is_weights=w)
    by_hand = -((1.0 + 2.0 + 0.5) / 3 * 0.8 + (3.0 + 0.25) / 2 * -1.2) / 2
    assert float(loss) == pytest.approx(by_hand)
    loss.backward()
    grad = torch.tensor(
        [[-1.0 * 0.8 / 6, -2.0 * 0.8 / 6, -0.5 * 0.8 / 6], [3.0 * 1.2 / 4, 0.25 * 1.2 / 4, 0.0]]
    )
    torch.testing.assert_close(logp.grad, grad)
    # Off-policy with clipping: the weight multiplies whichever branch is active.
    old = torch.tensor([[-1.0, -1.0, -2.0], [-0.3, -0.9, -1.1]])
    logp2 = logp.detach().clone()
    loss2, _ = policy_loss(logp2, old, adv, mask, is_weights=w, clip_high=0.2)
    rho = math.exp(0.5)  # token (0, 1): clipped at 1.2 for A > 0
    by_hand2 = -((1.0 * 0.8 + 2.0 * 1.2 * 0.8 + 0.5 * 0.8) / 3 + (3.0 + 0.25) / 2 * -1.2) / 2
    assert rho > 1.2 and float(loss2) == pytest.approx(by_hand2)
    # The KL term is added unweighted.
    ref = logp2 - 0.1
    loss3, _ = policy_loss(logp2, logp2, adv, mask, is_weights=w, ref_logp=ref, beta=0.5)
    k3 = math.exp(-0.1) + 0.1 - 1.0
    assert float(loss3) == pytest.approx(
        float(policy_loss(logp2, logp2, adv, mask, is_weights=w)[0]) + 0.5 * k3
    )
    with pytest.raises(ValueError, match="is_weights"):
        policy_loss(logp2, logp2, adv, mask, is_weights=w[:, :2])


@pytest.mark.parametrize("bad", [0.5, 0.0, -1.0, True, "3", float("inf")])
def test_tis_cap_is_validated(bad):
    with pytest.raises(ConfigError, match="tis_cap"):
        GRPOConfig(tis_cap=bad)


def test_tis_cap_accepts_null_and_numbers_from_one():
    assert GRPOConfig().tis_cap is None
    assert GRPOConfig(tis_cap=1).tis_cap == 1
    assert GRPOConfig(tis_cap=3.0).tis_cap == 3.0


class AlternatingScorer(test_module.LengthParityScorer):
    """Rewards 1, 0, 1, 0, ... so every group has spread and every row is recomputed."""

    def __call__(self, completions, golds, **row_data):
        self.seen.append(list(completions))
        rewards = [float(i % 2 == 0) for i in range(len(completions))]
        return ScoredBatch(rewards, [r == 1.0 for r in rewards], ["x"] * len(rewards))


class ShiftedSampler(RLVRModule):
    """A rollout engine whose log-probs are off by `shift` nats on every token."""

    shift = 0.0

    def _sample(self, prompts, controller, **kwargs):
        rollout = super()._sample(prompts, controller, **kwargs)
        rollout.logprobs = rollout.logprobs + self.shift
        return rollout


def _fit_shifted(monkeypatch, tiny_model, tokenizer, tmp_path, shift, **grpo):
    monkeypatch.setattr(ShiftedSampler, "shift", shift)
    monkeypatch.setattr(test_module, "RLVRModule", ShiftedSampler)
    model = copy.deepcopy(tiny_model).train()
    return test_module._fit(model, tokenizer, AlternatingScorer(), tmp_path, **grpo)


@pytest.mark.parametrize("mu", [1, 2])
def test_step_logs_no_gap_for_tempos_own_sampler(tiny_model, char_tokenizer, tmp_path, mu):
    model = copy.deepcopy(tiny_model).train()
    _, log = test_module._fit(model, char_tokenizer, AlternatingScorer(), tmp_path, mu=mu)
    steps = [s for s, _ in log.history["rollout/logp_diff_mean"]]
    assert steps == [0, 1]
    assert 0 <= log.latest["rollout/logp_diff_mean"] <= log.latest["rollout/logp_diff_max"] < 1e-4
    assert "rollout/tis_weight_mean" not in log.latest


@pytest.mark.parametrize("mu", [1, 2])
def test_step_measures_and_corrects_a_shifted_sampler(
    monkeypatch, tiny_model, char_tokenizer, tmp_path, mu
):
    # Sampler log-probs 0.3 nats too high: weights exp(-0.3) < cap, nothing truncated.
    _, log = _fit_shifted(
        monkeypatch, tiny_model, char_tokenizer, tmp_path, 0.3, mu=mu, tis_cap=2.0
    )
    assert log.latest["rollout/logp_diff_mean"] == pytest.approx(0.3, abs=1e-4)
    assert log.latest["rollout/logp_diff_max"] == pytest.approx(0.3, abs=1e-4)
    assert log.latest["rollout/tis_weight_mean"] == pytest.approx(math.exp(-0.3), abs=1e-4)
    assert log.latest["rollout/tis_truncated_frac"] == 0.0


def test_weights_above_the_cap_are_truncated(monkeypatch, tiny_model, char_tokenizer, tmp_path):
    # Sampler log-probs 1 nat too low: exp(1) = 2.72 > cap 2, so every token is truncated.
    _, log = _fit_shifted(
        monkeypatch, tiny_model, char_tokenizer, tmp_path / "a", -1.0, tis_cap=2.0
    )
    assert log.latest["rollout/logp_diff_mean"] == pytest.approx(1.0, abs=1e-4)
    assert log.latest["rollout/tis_weight_mean"] == pytest.approx(2.0)
    assert log.latest["rollout/tis_truncated_frac"] == 1.0


def test_truncated_weights_scale_the_update(monkeypatch, tiny_model, char_tokenizer, tmp_path):
    """With every weight at the cap c, each token's gradient is c times the unweighted one, so
    the step's gradient norm (before clipping) is c times that of the same seeded step."""
    _, plain = _fit_shifted(monkeypatch, tiny_model, char_tokenizer, tmp_path / "p", 0.0, steps=1)
    _, capped = _fit_shifted(
        monkeypatch, tiny_model, char_tokenizer, tmp_path / "c", -1.0, steps=1, tis_cap=1.5
    )
    assert capped.latest["rollout/tis_truncated_frac"] == 1.0
    assert plain.latest["loss/grad_norm"] > 0
    assert capped.latest["loss/grad_norm"] == pytest.approx(
        1.5 * plain.latest["loss/grad_norm"], rel=1e-4
    )
