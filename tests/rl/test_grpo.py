"""GRPO advantages, aggregation, clipped loss and KL against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from tempo.config_error import ConfigError
from tempo.rl.grpo import (
    GRPOConfig,
    aggregate,
    group_advantages,
    kl_k3,
    policy_loss,
    zero_std_fraction,
    zero_std_groups,
)

# Two groups of 4. Group 0: mean 0.5, centred +-0.5, unbiased std sqrt(1/3), biased std 0.5.
# Group 1: mean 0.75, centred (-0.75, -0.75, -0.75, 2.25), unbiased std 1.5, biased 0.75*sqrt(3).
REWARDS = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 3.0])
R3 = math.sqrt(3.0)


def _close(got: torch.Tensor, want: list[float], tol: float = 1e-5) -> None:
    assert got.tolist() == pytest.approx(want, abs=tol)


def test_advantages_scaled_unbiased_std():
    a = R3 / 2  # 0.5 / sqrt(1/3)
    _close(group_advantages(REWARDS, 4, eps=0.0), [a, -a, -a, a, -0.5, -0.5, -0.5, 1.5])


def test_advantages_scaled_biased_std():
    got = group_advantages(REWARDS, 4, eps=0.0, unbiased_std=False)
    _close(got, [1, -1, -1, 1, -1 / R3, -1 / R3, -1 / R3, R3])


def test_advantages_eps_in_denominator():
    got = group_advantages(REWARDS, 4, eps=0.5)
    _close(got[4:], [-0.75 / 2, -0.75 / 2, -0.75 / 2, 2.25 / 2])


def test_advantages_unscaled_dr_grpo():
    got = group_advantages(REWARDS, 4, scale_by_std=False)
    _close(got, [0.5, -0.5, -0.5, 0.5, -0.75, -0.75, -0.75, 2.25])


def test_zero_std_groups_give_zero_advantages():
    # 0.1 is not exactly representable; the group mean differs from 0.1 by rounding noise,
    # which must not be blown up by 1 / eps.
    rewards = torch.tensor([0.1, 0.1, 0.1, 1.0, 0.0, 1.0, 2.0, 2.0, 2.0])
    for scale in (True, False):
        got = group_advantages(rewards, 3, scale_by_std=scale)
        assert got[:3].tolist() == [0.0, 0.0, 0.0]
        assert got[6:].tolist() == [0.0, 0.0, 0.0]
        assert got[3:6].abs().sum() > 0
    assert zero_std_groups(rewards, 3).tolist() == [True, False, True]
    assert zero_std_fraction(rewards, 3).item() == pytest.approx(2 / 3)


def test_advantages_integer_rewards_and_bad_group_size():
    _close(group_advantages(torch.tensor([1, 0]), 2, scale_by_std=False), [0.5, -0.5])
    with pytest.raises(ValueError, match=r"\b10\b.*\b4\b"):
        group_advantages(torch.zeros(10), 4)


# Hand-made batch: 3 sequences, max length 4. Masked positions hold NaN / junk on purpose.
PER_TOKEN = torch.tensor(
    [[1.0, 2.0, 3.0, float("nan")], [5.0, 6.0, 100.0, 100.0], [7.0, 0.0, 0.0, 0.0]]
)
MASK = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [0, 0, 0, 0]], dtype=torch.bool)


def test_aggregate_grpo_sequence_mean_token_mean():
    # Sequence means 2, 5.5 and 0 (empty sequence) over 3 sequences.
    assert aggregate(PER_TOKEN, MASK, "grpo").item() == pytest.approx(7.5 / 3)


def test_aggregate_dapo_token_mean():
    assert aggregate(PER_TOKEN, MASK, "dapo").item() == pytest.approx(17 / 5)


def test_aggregate_dr_grpo_sum_over_max_length():
    assert aggregate(PER_TOKEN, MASK, "dr_grpo", max_length=4).item() == pytest.approx(17 / 12)
    assert aggregate(PER_TOKEN, MASK, "dr_grpo", max_length=10).item() == pytest.approx(17 / 30)


def test_aggregate_empty_batch_and_errors():
    empty = torch.zeros(2, 3, dtype=torch.bool)
    for mode in ("grpo", "dapo", "dr_grpo"):
        assert aggregate(torch.ones(2, 3), empty, mode, max_length=3).item() == 0.0
    with pytest.raises(ValueError, match="grpo.*dapo.*dr_grpo"):
        aggregate(PER_TOKEN, MASK, "mean")
    with pytest.raises(ValueError, match="max_length"):
        aggregate(PER_TOKEN, MASK, "dr_grpo")


def _random_batch(seed: int, b: int = 6, length: int = 5):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([5, 1, 3, 0, 4, 2])[:b]
    mask = torch.arange(length)[None, :] < lengths[:, None]
    old = -torch.rand(b, length, generator=g) * 3
    logp = old + 0.4 * torch.randn(b, length, generator=g)
    ref = old + 0.2 * torch.randn(b, length, generator=g)
    adv = torch.randn(b, generator=g)
    return logp, old, ref, adv, mask


@pytest.mark.parametrize("mode", ["grpo", "dapo", "dr_grpo"])
def test_micro_batches_sum_to_full_batch(mode):
    logp, old, ref, adv, mask = _random_batch(1)
    per_token = logp.clone()
    full = aggregate(per_token, mask, mode, max_length=7)
    totals = dict(total_sequences=6, total_tokens=int(mask.sum()), max_length=7)
    parts = [aggregate(per_token[i : i + 2], mask[i : i + 2], mode, **totals) for i in (0, 2, 4)]
    assert sum(p.item() for p in parts) == pytest.approx(full.item(), abs=1e-6)

    # Same for the full loss (with KL) and its gradient w.r.t. logp.
    kw = dict(aggregation=mode, ref_logp=ref, beta=0.1)
    x = logp.clone().requires_grad_(True)
    loss_full, _ = policy_loss(x, old, adv, mask, max_length=7, **kw)
    (g_full,) = torch.autograd.grad(loss_full, x)
    x = logp.clone().requires_grad_(True)
    total = 0.0
    for i in (0, 2, 4):
        sl = slice(i, i + 2)
        kw["ref_logp"] = ref[sl]
        loss, _ = policy_loss(x[sl], old[sl], adv[sl], mask[sl], **totals, **kw)
        loss.backward()
        total += loss.item()
    assert total == pytest.approx(loss_full.item(), abs=1e-6)
    torch.testing.assert_close(x.grad, g_full)


# Ratios per token; sequence 0 has A = +2, sequence 1 has A = -1; clip band (0.8, 1.2).
RATIOS = [1.5, 0.5, 1.1, 0.7]
# -min(rho*A, clip(rho)*A): A=+2 -> (-2.4 clipped, -1.0, -2.2, -1.4)
#                          A=-1 -> (+1.5, +0.8 clipped, +1.1, +0.8 clipped)
WANT_PER_TOKEN = [[-2.4, -1.0, -2.2, -1.4], [1.5, 0.8, 1.1, 0.8]]
# d loss_t / d logp_t = -A * rho where the unclipped branch is active, 0 where clipped.
WANT_GRAD = [[0.0, -1.0, -2.2, -1.4], [1.5, 0.0, 1.1, 0.0]]


def _clip_inputs():
    old = torch.full((2, 4), -1.3)
    logp = (old + torch.log(torch.tensor([RATIOS, RATIOS]))).requires_grad_(True)
    return logp, old, torch.tensor([2.0, -1.0]), torch.ones(2, 4, dtype=torch.bool)


def test_clipped_surrogate_value_gradient_and_clip_frac():
    logp, old, adv, mask = _clip_inputs()
    loss, stats = policy_loss(logp, old, adv, mask, aggregation="dapo")
    want = sum(sum(row) for row in WANT_PER_TOKEN) / 8
    assert loss.item() == pytest.approx(want, abs=1e-5)
    loss.backward()
    _close(logp.grad.flatten(), [g / 8 for row in WANT_GRAD for g in row])
    assert stats["clip_frac"].item() == pytest.approx(3 / 8)
    assert stats["clip_frac_high"].item() == pytest.approx(1 / 8)
    assert stats["clip_frac_low"].item() == pytest.approx(2 / 8)
    assert stats["ratio_mean"].item() == pytest.approx(sum(RATIOS) / 4, abs=1e-5)
    assert stats["kl"].item() == 0.0
    assert all(not v.requires_grad and v.dim() == 0 for v in stats.values())


def test_clip_high_asymmetric_and_masked_tokens():
    logp, old, adv, mask = _clip_inputs()
    mask[1, 2:] = False  # drop (1.1, 0.7) of sequence 1: one clipped token goes with them
    loss, stats = policy_loss(logp, old, adv, mask, clip_high=0.6, aggregation="grpo")
    # With clip_high 0.6 the ratio 1.5 is inside the band for A > 0: -3.0 instead of -2.4.
    seq0 = (-3.0 - 1.0 - 2.2 - 1.4) / 4
    seq1 = (1.5 + 0.8) / 2
    assert loss.item() == pytest.approx((seq0 + seq1) / 2, abs=1e-5)
    assert stats["clip_frac"].item() == pytest.approx(1 / 6)


def test_junk_at_padding_gives_finite_loss_and_gradient():
    logp, old, adv, mask = _clip_inputs()
    mask[:, 3] = False
    old = old.clone()
    old[0, 3] = float("-inf")
    ref = old.clone()
    ref[1, 3] = float("nan")
    for mode in ("grpo", "dapo", "dr_grpo"):
        logp.grad = None
        loss, stats = policy_loss(
            logp, old, adv, mask, aggregation=mode, ref_logp=ref, beta=0.1, max_length=4
        )
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(logp.grad).all()
        assert (logp.grad[:, 3] == 0).all()
        assert all(torch.isfinite(v) for v in stats.values())


def test_kl_k3_values():
    logp = torch.tensor([-1.0, -2.0, -0.5])
    ref = logp + torch.tensor([math.log(2), -math.log(2), 0.0])
    _close(kl_k3(logp, ref), [1 - math.log(2), math.log(2) - 0.5, 0.0], tol=1e-6)
    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(1000, generator=g) * 3, torch.randn(1000, generator=g) * 3
    assert (kl_k3(a, b) >= 0).all()
    assert (kl_k3(a, a) == 0).all()


def test_policy_loss_kl_penalty():
    logp = torch.tensor([[-1.0, -2.0, -0.5]])
    ref = logp + torch.tensor([[math.log(2), -math.log(2), 5.0]])
    mask = torch.tensor([[True, True, False]])
    adv = torch.zeros(1)  # on-policy with A = 0: only the KL term remains
    kl_mean = (1 - math.log(2) + math.log(2) - 0.5) / 2
    loss, stats = policy_loss(logp, logp, adv, mask, ref_logp=ref, beta=0.1)
    assert loss.item() == pytest.approx(0.1 * kl_mean, abs=1e-6)
    assert stats["kl"].item() == pytest.approx(kl_mean, abs=1e-6)
    assert stats["pg_loss"].item() == 0.0
    loss0, stats0 = policy_loss(logp, logp, adv, mask, ref_logp=ref)  # beta 0: logged only
    assert loss0.item() == 0.0 and stats0["kl"].item() == pytest.approx(kl_mean, abs=1e-6)
    with pytest.raises(ValueError, match="ref_logp"):
        policy_loss(logp, logp, adv, mask, beta=0.1)


def test_grpo_config_defaults_and_validation():
    cfg = GRPOConfig()
    assert cfg.aggregation == "grpo" and cfg.beta == 0.0 and cfg.mu == 1
    GRPOConfig(group_size=2, aggregation="dr_grpo", scale_by_std=False, clip_high=0.28)
    bad = [
        ("group_size", 1),
        ("group_size", 2.5),
        ("clip_low", 0.0),
        ("clip_low", 1.0),
        ("clip_high", 0.0),
        ("aggregation", "token_mean"),
        ("beta", -0.1),
        ("mu", 0),
        ("lr", 0.0),
        ("lr", None),
        ("micro_batch_size", 0),
    ]
    for key, value in bad:
        with pytest.raises(ConfigError) as info:
            GRPOConfig(**{key: value})
        assert info.value.key == key and info.value.value == value
