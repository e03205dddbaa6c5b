"""The `introspective` controller: action distribution, sampling, init, loss, phases, state."""

from __future__ import annotations

import math
from pathlib import Path

import hydra
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch.distributions import Bernoulli, Beta

from tempo.config_error import ConfigError
from tempo.sampling.rollout import Rollout
from tempo.temperature.base import HEAD_PHASE, POLICY_PHASE
from tempo.temperature.introspective import IntrospectiveTemperature

CONF = Path(__file__).resolve().parents[2] / "conf" / "method" / "introspective.yaml"
D = 16


def make(d: int = D, randomise: bool = True, seed: int = 0, **kwargs) -> IntrospectiveTemperature:
    """A set-up controller; `randomise` gives the last layer non-zero weights so that the
    action distribution depends on h (at init it does not)."""
    ctl = IntrospectiveTemperature(**kwargs)
    ctl.setup(d, 100, 10)
    if randomise:
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            ctl.head.fc2.weight.copy_(torch.randn(ctl.head.fc2.weight.shape, generator=gen))
            ctl.head.fc2.bias.copy_(torch.randn(3, generator=gen))
    return ctl


def reference_params(ctl: IntrospectiveTemperature, hidden: torch.Tensor):
    """(u_c, a, b) written out from the head's weights, independently of its forward."""
    h = ctl.head
    x = F.silu(hidden.float() @ h.fc1.weight.T + h.fc1.bias)
    u = x @ h.fc2.weight.T + h.fc2.bias
    return u[..., 0], F.softplus(u[..., 1]) + ctl.eps, F.softplus(u[..., 2]) + ctl.eps


def reference_logprob(ctl, hidden, gate, z) -> torch.Tensor:
    """log P(c) + c * log Beta(z; a, b) with torch.distributions."""
    u_c, a, b = reference_params(ctl, hidden)
    log_beta = Beta(a, b).log_prob(z)
    return Bernoulli(logits=u_c).log_prob(gate) + gate * log_beta


def make_rollout(gate, z, head_logp, mask, a=None, b=None) -> Rollout:
    rows, length = gate.shape
    zeros = torch.zeros(rows, length)
    data = {"gate": gate, "beta_z": z, "head_logp": head_logp}
    data["beta_a"] = torch.ones(rows, length) if a is None else a
    data["beta_b"] = torch.ones(rows, length) if b is None else b
    return Rollout(
        prompt_ids=torch.zeros(rows, 2, dtype=torch.long),
        prompt_mask=torch.ones(rows, 2, dtype=torch.long),
        tokens=torch.zeros(rows, length, dtype=torch.long),
        mask=mask,
        temperatures=torch.ones(rows, length),
        logprobs=zeros,
        entropy=zeros,
        entropy_at_T=zeros,
        finished=torch.ones(rows, dtype=torch.bool),
        controller_data=data,
    )


# ---------------------------------------------------------------- action distribution
@pytest.mark.parametrize("gate_value", [0.0, 1.0, None])
def test_action_logprob_matches_torch_distributions(gate_value):
    torch.manual_seed(1)
    ctl = make()
    hidden = torch.randn(3, 5, D) * 2
    if gate_value is None:  # a mix of both gate values
        gate = torch.bernoulli(torch.full((3, 5), 0.5))
    else:
        gate = torch.full((3, 5), gate_value)
    z = torch.rand(3, 5) * 0.98 + 0.01
    got = ctl.action_logprob(hidden, gate, z)
    assert got.shape == (3, 5) and got.dtype == torch.float32
    torch.testing.assert_close(got, reference_logprob(ctl, hidden, gate, z), atol=1e-5, rtol=1e-5)


def test_action_logprob_finite_at_extreme_z():
    ctl = make()
    hidden = torch.randn(4, D)
    z = torch.tensor([0.0, 1.0, 1e-12, 1 - 1e-12])
    assert torch.isfinite(ctl.action_logprob(hidden, torch.ones(4), z)).all()


# ---------------------------------------------------------------- sampling
def test_temperature_keeps_or_draws_and_records_consistently():
    torch.manual_seed(2)
    ctl = make(t_min=0.5, t_max=1.5, record_logprob=True)
    rows = 512
    hidden = torch.randn(rows, D)
    prev = torch.rand(rows) + 0.5
    decision = ctl.temperature(torch.zeros(rows, 7), hidden, prev, 3)
    rec, temp = decision.records, decision.temperature
    assert set(rec) == {"gate", "beta_z", "head_logp", "beta_a", "beta_b"}
    assert all(v.shape == (rows,) for v in rec.values())
    gate, z = rec["gate"], rec["beta_z"]
    assert set(gate.unique().tolist()) == {0.0, 1.0}  # both branches exercised
    keep = gate == 0
    assert torch.equal(temp[keep], prev[keep])
    torch.testing.assert_close(temp[~keep], 0.5 + z[~keep] * 1.0)
    assert ((temp >= 0.5) & (temp <= 1.5)).all()
    assert ((z > 0) & (z < 1)).all()
    _, a, b = reference_params(ctl, hidden)
    torch.testing.assert_close(rec["beta_a"], a)
    torch.testing.assert_close(rec["beta_b"], b)
    # The recorded old log-prob is what the loss recomputes on the same h: ratio exactly 1.
    assert torch.equal(rec["head_logp"], ctl.action_logprob(hidden, gate, z))
    expected = reference_logprob(ctl, hidden, gate, z)
    torch.testing.assert_close(rec["head_logp"], expected, atol=1e-5, rtol=1e-5)
    # By default the log-prob is left to the update, and the draws are the same.
    torch.manual_seed(2)  # the same head (its first layer is drawn from the global RNG)
    lazy = make(t_min=0.5, t_max=1.5)
    hidden = torch.randn(rows, D)
    prev = torch.rand(rows) + 0.5
    again = lazy.temperature(torch.zeros(rows, 7), hidden, prev, 3)
    assert set(again.records) == {"gate", "beta_z", "beta_a", "beta_b"}
    assert torch.equal(again.temperature, temp) and torch.equal(again.records["gate"], gate)


def test_gate_rate_and_beta_draws_follow_the_head():
    ctl = make(randomise=False)
    with torch.no_grad():  # every h: sigmoid(u_c) = sigmoid(0.3); Beta(2, 6) (mean 0.25)
        ctl.head.fc2.bias.copy_(torch.tensor([0.3, 0.0, 0.0]))
        a, b = 2.0 - ctl.eps, 6.0 - ctl.eps
        ctl.head.fc2.bias[1:] = torch.tensor([math.log(math.expm1(a)), math.log(math.expm1(b))])
    n = 20000
    torch.manual_seed(3)
    rec = ctl.temperature(torch.zeros(n, 3), torch.randn(n, D), torch.ones(n), 0).records
    p = 1 / (1 + math.exp(-0.3))
    assert abs(float(rec["gate"].mean()) - p) < 4 * math.sqrt(p * (1 - p) / n)
    z = rec["beta_z"]
    sd = math.sqrt(2 * 6 / (8**2 * 9))
    assert abs(float(z.mean()) - 0.25) < 4 * sd / math.sqrt(n)
    assert abs(float(z.std()) - sd) < 0.01
    # The global RNG makes the draws reproducible.
    torch.manual_seed(3)
    again = ctl.temperature(torch.zeros(n, 3), torch.randn(n, D), torch.ones(n), 0).records
    assert torch.equal(again["gate"], rec["gate"]) and torch.equal(again["beta_z"], z)


def test_bf16_hidden_runs_the_head_in_float32():
    ctl = make()
    hidden = torch.randn(6, D)
    decision = ctl.temperature(torch.zeros(6, 3), hidden.bfloat16(), torch.ones(6), 0)
    assert decision.temperature.dtype == torch.float32
    assert decision.records["beta_z"].dtype == torch.float32
    recorded = make(record_logprob=True).temperature(
        torch.zeros(6, 3), hidden.bfloat16(), torch.ones(6), 0
    )
    assert recorded.records["head_logp"].dtype == torch.float32
    ctl.to(torch.bfloat16)  # even with bf16 weights (bf16-true precision) it computes in fp32
    assert ctl.action_logprob(hidden, torch.ones(6), torch.full((6,), 0.5)).dtype == torch.float32


def test_initial_temperature_and_evaluation_controller():
    ctl = make(t_init=0.8)
    assert torch.equal(ctl.initial_temperature(3, torch.device("cpu")), torch.full((3,), 0.8))
    assert ctl.for_evaluation() is ctl
    assert make(eval_with_head=False).for_evaluation() is None
    assert ctl.per_token and ctl.name == "introspective" and ctl.has_loss()


# ---------------------------------------------------------------- initialisation
@pytest.mark.parametrize(
    "t_min,t_max,t_init,gate_prob,conc",
    [(0.4, 1.6, 1.0, 0.05, 10.0), (0.5, 1.5, 0.7, 0.2, 4.0), (0.6, 1.4, 1.3, 0.01, 50.0)],
)
def test_init_gate_prob_and_beta_mean_for_any_hidden(t_min, t_max, t_init, gate_prob, conc):
    ctl = IntrospectiveTemperature(
        t_min=t_min, t_max=t_max, t_init=t_init, init_gate_prob=gate_prob, init_concentration=conc
    )
    ctl.setup(D, 100, 10)
    hidden = torch.cat([torch.randn(20, D), 100 * torch.randn(5, D), torch.zeros(1, D)])
    u_c, a, b = reference_params(ctl, hidden)
    torch.testing.assert_close(torch.sigmoid(u_c), torch.full((26,), gate_prob))
    mean = (t_init - t_min) / (t_max - t_min)
    torch.testing.assert_close(a / (a + b), torch.full((26,), mean))
    torch.testing.assert_close(a + b, torch.full((26,), conc))


def test_t_init_at_a_bound_keeps_the_beta_proper():
    ctl = make(randomise=False, t_init=0.4)
    _, a, b = reference_params(ctl, torch.randn(4, D))
    torch.testing.assert_close(a / (a + b), torch.full((4,), 0.01))
    assert (a > ctl.eps).all()


def test_head_size_and_repeated_setup():
    ctl = IntrospectiveTemperature()
    ctl.setup(128, 100, 10)
    assert sum(p.numel() for p in ctl.parameters()) == 128 * 64 + 64 + 64 * 3 + 3  # 8451
    head = ctl.head
    ctl.setup(128, 100, 10)
    assert ctl.head is head  # a repeated call keeps trained weights
    assert {k for k in ctl.state_dict() if k.startswith("head.")} == {
        "head.fc1.weight",
        "head.fc1.bias",
        "head.fc2.weight",
        "head.fc2.bias",
    }


def test_methods_need_setup():
    assert IntrospectiveTemperature().has_loss()
    with pytest.raises(RuntimeError, match="setup"):
        IntrospectiveTemperature().action_logprob(torch.zeros(1, 4), torch.ones(1), torch.ones(1))


# ---------------------------------------------------------------- loss
def _clipped_surrogate(new, old, adv, mask, low, high):
    ratio = torch.exp(new - old)
    a = adv[:, None]
    per_token = -torch.minimum(ratio * a, ratio.clamp(1 - low, 1 + high) * a)
    clipped = ((ratio > 1 + high) & (a > 0)) | ((ratio < 1 - low) & (a < 0))
    return per_token, clipped


@pytest.mark.parametrize("aggregation", ["grpo", "dapo", "dr_grpo"])
def test_loss_equals_hand_computed_clipped_surrogate(aggregation):
    torch.manual_seed(4)
    ctl = make(clip_low=0.1, clip_high=0.3)
    rows, length = 4, 5
    hidden = torch.randn(rows, length, D)
    gate = torch.bernoulli(torch.full((rows, length), 0.5))
    z = torch.rand(rows, length) * 0.9 + 0.05
    old = reference_logprob(ctl, hidden, gate, z)
    with torch.no_grad():  # the head moves on (as after mu > 1 passes): ratios leave 1
        ctl.head.fc2.weight.add_(0.3 * torch.randn_like(ctl.head.fc2.weight))
    new = reference_logprob(ctl, hidden, gate, z)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 0]])
    mask = mask.float()
    adv = torch.tensor([1.0, -1.0, 0.5, -2.0])
    rollout = make_rollout(gate, z, old, mask)
    totals = dict(total_sequences=8, total_tokens=30, max_length=6)
    loss, stats = ctl.loss(hidden, rollout, adv, aggregation=aggregation, **totals)

    per_token, clipped = _clipped_surrogate(new, old, adv, mask, 0.1, 0.3)
    valid = mask.bool()
    assert clipped[valid].any() and not clipped[valid].all()  # the clip is exercised
    masked = per_token * mask
    if aggregation == "grpo":
        expected = (masked.sum(1) / mask.sum(1)).sum() / 8
    elif aggregation == "dapo":
        expected = masked.sum() / 30
    else:
        expected = masked.sum() / (8 * 6)
    torch.testing.assert_close(loss, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(stats["pg_loss"], expected, atol=1e-5, rtol=1e-5)
    frac = clipped[valid].float().mean()
    torch.testing.assert_close(stats["clip_frac"], frac)
    assert "kl" not in stats


def test_loss_starts_at_ratio_one_and_accepts_an_old_logp_override():
    torch.manual_seed(5)
    ctl = make()
    hidden = torch.randn(2, 3, D)
    gate, z = torch.ones(2, 3), torch.full((2, 3), 0.4)
    old = ctl.action_logprob(hidden, gate, z).detach()
    rollout = make_rollout(gate, z, old, torch.ones(2, 3))
    _, stats = ctl.loss(hidden, rollout, torch.tensor([1.0, -1.0]))
    torch.testing.assert_close(stats["ratio_mean"], torch.tensor(1.0))
    shifted = old - 0.5  # ratio e^0.5 > 1.2: every positive-advantage token is clipped
    _, stats = ctl.loss(hidden, rollout, torch.tensor([1.0, 1.0]), old_logp=shifted)
    torch.testing.assert_close(stats["clip_frac"], torch.tensor(1.0))
    # Without a recorded log-prob the first pass is its own old policy: ratio 1, and the
    # log-prob it used comes back for later passes.
    del rollout.controller_data["head_logp"]
    _, stats = ctl.loss(hidden, rollout, torch.tensor([1.0, -1.0]))
    torch.testing.assert_close(stats["ratio_mean"], torch.tensor(1.0))
    assert torch.equal(stats["action_logp"], old)
    with pytest.raises(TypeError, match="unexpected"):
        ctl.loss(hidden, rollout, torch.tensor([1.0, -1.0]), beta=0.1)
    with pytest.raises(ValueError, match="align"):
        ctl.loss(hidden[:, :2], rollout, torch.tensor([1.0, -1.0]))


def test_loss_gradient_reaches_only_the_head():
    torch.manual_seed(6)
    ctl = make()
    policy_layer = torch.nn.Linear(D, D)  # stands in for the policy producing h
    hidden = policy_layer(torch.randn(2, 4, D))
    gate = torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 1.0, 1.0]])
    z = torch.full((2, 4), 0.3)
    old = ctl.action_logprob(hidden, gate, z).detach() - 0.05
    rollout = make_rollout(gate, z, old, torch.ones(2, 4))
    loss, _ = ctl.loss(hidden, rollout, torch.tensor([1.0, -0.5]))
    loss.backward()
    assert all(p.grad is None for p in policy_layer.parameters())
    grads = [p.grad for p in ctl.head.parameters()]
    assert all(g is not None for g in grads)
    assert ctl.head.fc2.weight.grad.abs().sum() > 0


def test_optimizer_choices():
    for name, cls in [("adamw", torch.optim.AdamW), ("adam", torch.optim.Adam)]:
        opt = make(optimizer=name, lr=0.01, weight_decay=0.1).configure_optimizer()
        assert type(opt) is cls
        assert opt.param_groups[0]["lr"] == 0.01 and opt.param_groups[0]["weight_decay"] == 0.1
    ctl = make(optimizer="sgd")
    opt = ctl.configure_optimizer()
    assert type(opt) is torch.optim.SGD
    assert {id(p) for p in opt.param_groups[0]["params"]} == {id(p) for p in ctl.parameters()}


# ---------------------------------------------------------------- phases
P, H = POLICY_PHASE, HEAD_PHASE


@pytest.mark.parametrize(
    "policy_steps,head_steps,first,expected",
    [
        (1, 1, "policy", [P, H, P, H, P, H, P, H, P, H]),
        (2, 1, "policy", [P, P, H, P, P, H, P, P, H, P]),
        (1, 3, "head", [H, H, H, P, H, H, H, P, H, H]),
        (3, 2, "head", [H, H, P, P, P, H, H, P, P, P]),
        (1, 2, "policy", [P, H, H, P, H, H, P, H, H, P]),
    ],
)
def test_phase_schedule(policy_steps, head_steps, first, expected):
    ctl = IntrospectiveTemperature(
        policy_steps=policy_steps, head_steps=head_steps, first_phase=first
    )
    assert [ctl.phase(s) for s in range(10)] == expected
    assert [ctl.phase(s) for s in range(600, 610)] == expected  # 600: a multiple of every cycle


# ---------------------------------------------------------------- metrics
def test_update_metrics_are_masked_means():
    ctl = make(t_min=0.5, t_max=1.5)
    gate = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]])
    z = torch.tensor([[0.2, 0.9, 0.6], [0.5, 0.4, 0.8]])
    a = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    b = torch.tensor([[1.0, 2.0, 1.0], [4.0, 5.0, 2.0]])
    logp = torch.tensor([[-1.0, -2.0, -3.0], [-4.0, -5.0, -6.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])  # the last entry is padding
    metrics = ctl.update(make_rollout(gate, z, logp, mask, a, b), torch.zeros(2))
    assert metrics["method/gate_rate"] == pytest.approx(3 / 5)
    assert metrics["method/gates_per_completion"] == pytest.approx(3 / 2)
    assert metrics["method/beta_a_mean"] == pytest.approx(15 / 5)
    assert metrics["method/beta_b_mean"] == pytest.approx(13 / 5)
    assert metrics["method/beta_concentration_mean"] == pytest.approx(28 / 5)
    means = [0.5, 0.5, 0.75, 0.5, 0.5]
    assert metrics["method/beta_mean_T"] == pytest.approx(sum(0.5 + m for m in means) / 5)
    assert metrics["method/head_logp_mean"] == pytest.approx(-15 / 5)
    assert metrics["method/sampled_T_mean"] == pytest.approx((0.7 + 1.1 + 0.9) / 3)
    assert all(k.startswith("method/") for k in metrics)
    none_fired = ctl.update(make_rollout(gate * 0, z, logp, mask, a, b), torch.zeros(2))
    assert none_fired["method/gate_rate"] == 0 and "method/sampled_T_mean" not in none_fired


# ---------------------------------------------------------------- checkpoints
def test_state_dict_round_trip():
    ctl = make(seed=7)
    with torch.no_grad():
        ctl.head.fc1.weight.mul_(1.5)  # differs from a fresh head everywhere
    state = ctl.state_dict()
    fresh = IntrospectiveTemperature()
    fresh.setup(D, 100, 10)
    fresh.load_state_dict(state)
    hidden, gate, z = torch.randn(3, 4, D), torch.ones(3, 4), torch.full((3, 4), 0.3)
    assert torch.equal(fresh.action_logprob(hidden, gate, z), ctl.action_logprob(hidden, gate, z))
    h, prev = torch.randn(64, D), torch.ones(64)
    torch.manual_seed(8)
    first = ctl.temperature(torch.zeros(64, 2), h, prev, 0)
    torch.manual_seed(8)
    second = fresh.temperature(torch.zeros(64, 2), h, prev, 0)
    assert torch.equal(first.temperature, second.temperature)
    for key in first.records:
        assert torch.equal(first.records[key], second.records[key])


# ---------------------------------------------------------------- validation
@pytest.mark.parametrize(
    "kwargs,key",
    [
        (dict(t_min=1.6, t_max=0.4), "t_min"),
        (dict(t_min=1.0, t_max=1.0, t_init=1.0), "t_min"),
        (dict(t_min=0.0), "t_min"),
        (dict(t_init=1.7), "t_init"),
        (dict(t_init=0.3), "t_init"),
        (dict(t_init="hot"), "t_init"),
        (dict(lr=0.0), "lr"),
        (dict(lr=-1e-3), "lr"),
        (dict(policy_steps=0), "policy_steps"),
        (dict(head_steps=0), "head_steps"),
        (dict(policy_steps=1.5), "policy_steps"),
        (dict(clip_low=1.0), "clip_low"),
        (dict(clip_low=-0.1), "clip_low"),
        (dict(clip_low=0.0), "clip_low"),
        (dict(clip_high=0.0), "clip_high"),
        (dict(optimizer="rmsprop"), "optimizer"),
        (dict(init_gate_prob=0.0), "init_gate_prob"),
        (dict(init_gate_prob=1.0), "init_gate_prob"),
        (dict(init_gate_prob=1.5), "init_gate_prob"),
        (dict(first_phase="both"), "first_phase"),
        (dict(activation="swish"), "activation"),
        (dict(eps=0.0), "eps"),
        (dict(hidden_ratio=0.0), "hidden_ratio"),
        (dict(max_grad_norm=0.0), "max_grad_norm"),
        (dict(weight_decay=-0.1), "weight_decay"),
        (dict(eval_with_head="yes"), "eval_with_head"),
        (dict(init_concentration=0.0), "init_concentration"),
        (dict(init_concentration=0.01), "init_concentration"),  # Beta parameters below eps
    ],
)
def test_invalid_settings_raise_config_error(kwargs, key):
    with pytest.raises(ConfigError) as err:
        IntrospectiveTemperature(**kwargs)
    assert err.value.key == key


# ---------------------------------------------------------------- config and sampler
def test_yaml_instantiates_with_documented_defaults():
    cfg = OmegaConf.load(CONF)
    ctl = hydra.utils.instantiate(cfg, _convert_="all")
    assert isinstance(ctl, IntrospectiveTemperature)
    ctl.setup(32, 100, 10)
    default = IntrospectiveTemperature()
    for key in cfg:
        if key != "_target_":
            assert getattr(ctl, key) == getattr(default, key), key
    decision = ctl.temperature(torch.zeros(4, 100), torch.randn(4, 32), torch.ones(4), 0)
    assert decision.temperature.shape == (4,)
    assert type(ctl.configure_optimizer()) is torch.optim.AdamW


def test_with_the_sampler_records_align_with_full_forward_hidden(tiny_model, char_tokenizer):
    """End to end: per-token records from decoding, and the loss recomputing them from a full
    forward pass of the same completions (how the training loop feeds `loss`)."""
    from tempo.models.policy import forward_hidden
    from tempo.sampling.sampler import Sampler

    hidden_size = tiny_model.config.hidden_size
    ctl = make(d=hidden_size, t_min=0.5, t_max=1.5, t_init=0.9, record_logprob=True)
    with torch.no_grad():
        ctl.head.fc2.bias[0] = 0.0  # gate fires about half the time
    enc = char_tokenizer(["1+2=", "13*4="], padding=True, return_tensors="pt")
    sampler = Sampler(12, char_tokenizer.eos_token_id, char_tokenizer.pad_token_id)
    torch.manual_seed(9)
    gen = torch.Generator().manual_seed(0)
    ids, attn = enc["input_ids"].repeat(4, 1), enc["attention_mask"].repeat(4, 1)
    rollout = sampler.rollout(tiny_model, ids, attn, ctl, generator=gen)
    data, temps = rollout.controller_data, rollout.temperatures
    assert data["gate"].shape == rollout.tokens.shape
    prev = torch.cat([torch.full((8, 1), 0.9), temps[:, :-1]], dim=1)
    fired = data["gate"] == 1
    assert fired.any() and (~fired).any()
    assert torch.equal(temps[~fired], prev[~fired])
    torch.testing.assert_close(temps[fired], 0.5 + data["beta_z"][fired])

    full_ids, full_attn = rollout.input_ids()
    with torch.no_grad():
        hidden = forward_hidden(tiny_model, full_ids, full_attn)
    hidden = hidden[:, rollout.prompt_ids.shape[1] - 1 : -1]
    logp = ctl.action_logprob(hidden, data["gate"], data["beta_z"])
    valid = rollout.mask.bool()
    torch.testing.assert_close(logp[valid], data["head_logp"][valid], atol=1e-4, rtol=1e-4)
    adv = torch.linspace(-1, 1, 8)
    _, stats = ctl.loss(hidden, rollout, adv, aggregation="dapo")
    torch.testing.assert_close(stats["ratio_mean"], torch.tensor(1.0), atol=1e-4, rtol=0)
