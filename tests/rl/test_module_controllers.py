"""How the RL step drives controllers: logit statistics, coordinate-ascent phases, own optimiser."""

from __future__ import annotations

import copy

import pytest
import torch

from tempo.models.policy import forward_hidden, lm_head
from tempo.rl.logprobs import token_logprobs
from tempo.temperature.base import (
    HEAD_PHASE,
    POLICY_PHASE,
    TemperatureController,
    TemperatureDecision,
)
from tempo.temperature.fixed import FixedTemperature
from tests.rl.test_module import LengthParityScorer, _fit


class LearnedScale(TemperatureController):
    """A toy learned controller: T = exp(w), one parameter, phases alternate 1:1."""

    name = "toy"

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(0.1))
        self.seen: list[tuple[str, object, torch.Tensor, torch.Tensor | None]] = []
        self.step = 0

    def begin_step(self, step):
        self.step = step
        return {}

    def phase(self, step):
        return POLICY_PHASE if step % 2 == 0 else HEAD_PHASE

    def configure_optimizer(self):
        return torch.optim.SGD([self.w], lr=0.5)

    def temperature(self, logits, hidden, prev_temperature, position):
        return TemperatureDecision(self.w.detach().exp().expand(logits.shape[0]).clone())

    def statistics_temperatures(self):
        return (1.0,)

    def token_statistics(self, candidate_logprobs, mask):
        logp = candidate_logprobs[..., 0]
        return ((logp * mask).sum(-1) / mask.sum(-1).clamp(min=1))[:, None]

    def loss(self, hidden, rollout, advantages, **aggregation):
        assert not hidden.requires_grad
        per_row = (hidden.mean(-1) * rollout.mask).sum(-1)
        loss = -(self.w * advantages * per_row).sum() / aggregation["total_sequences"]
        return loss, {"clip_frac": torch.tensor(0.0)}

    def update(self, rollout, advantages, statistics=None):
        self.seen.append((self.phase(self.step), rollout, advantages, statistics))
        return {"method/w": float(self.w.detach())}


def test_phases_freeze_the_other_side_bit_for_bit(tiny_model, char_tokenizer, tmp_path):
    model = copy.deepcopy(tiny_model).train()
    ctl = LearnedScale()
    snapshots = []

    class Recorder(LengthParityScorer):
        def __call__(self, completions, golds, **row_data):
            snapshots.append(
                ([p.detach().clone() for p in model.parameters()], ctl.w.detach().clone())
            )
            return super().__call__(completions, golds)

    module, log = _fit(model, char_tokenizer, Recorder(), tmp_path, steps=4, controller=ctl)
    snapshots.append(([p.detach().clone() for p in model.parameters()], ctl.w.detach().clone()))
    assert module.rl_step == 4 and [s[0] for s in ctl.seen] == ["policy", "head"] * 2
    for step in range(4):
        (before, w_before), (after, w_after) = snapshots[step], snapshots[step + 1]
        policy_same = all(torch.equal(a, b) for a, b in zip(before, after, strict=True))
        if ctl.seen[step][0] == HEAD_PHASE:
            assert policy_same and not torch.equal(w_before, w_after)
        elif (ctl.seen[step][2] != 0).any():
            assert not policy_same and torch.equal(w_before, w_after)
    assert [s for s, _ in log.history["method/phase_head"]] == [0, 1, 2, 3]
    assert [v for _, v in log.history["method/phase_head"]] == [0.0, 1.0, 0.0, 1.0]
    assert "method/head_loss" in log.history


def test_statistics_come_from_the_pre_update_logits(tiny_model, char_tokenizer, tmp_path):
    model = copy.deepcopy(tiny_model).train()
    initial = copy.deepcopy(tiny_model).eval()
    ctl = LearnedScale()
    _fit(model, char_tokenizer, LengthParityScorer(), tmp_path, steps=1, controller=ctl)
    _, rollout, advantages, statistics = ctl.seen[0]
    assert statistics.shape == (advantages.shape[0], 1)
    skipped = advantages == 0
    assert torch.isnan(statistics[skipped]).all() and not torch.isnan(statistics[~skipped]).any()
    ids, attn = rollout.input_ids()
    with torch.no_grad():
        hidden = forward_hidden(initial, ids, attn)[:, rollout.prompt_ids.shape[1] - 1 : -1]
        logp = torch.log_softmax(lm_head(initial)(hidden), -1)
    rows = (~skipped).nonzero().flatten().tolist()
    for i in rows:
        n = int(rollout.mask[i].sum())
        expected = sum(float(logp[i, t, rollout.tokens[i, t]]) for t in range(n)) / n
        assert abs(float(statistics[i, 0]) - expected) < 1e-4


class RecordingFixed(FixedTemperature):
    """Fixed T that keeps what `update` was given."""

    def __init__(self, value: float) -> None:
        super().__init__(value)
        self.seen = []

    def update(self, rollout, advantages, statistics=None):
        self.seen.append((rollout, advantages))
        return {}


def _sequence_logp(model, rollout):
    ids, attn = rollout.input_ids()
    with torch.no_grad():
        hidden = forward_hidden(model, ids, attn)[:, rollout.prompt_ids.shape[1] - 1 : -1]
        logits = lm_head(model)(hidden)
    return (token_logprobs(logits, rollout.tokens, rollout.temperatures) * rollout.mask).sum(-1)


def test_one_step_moves_log_probs_in_the_direction_of_the_advantage(
    tiny_model, char_tokenizer, tmp_path
):
    model = copy.deepcopy(tiny_model).train()
    initial = copy.deepcopy(tiny_model).eval()
    ctl = RecordingFixed(0.8)  # a T != 1 also checks that the update uses the stored T
    _fit(model, char_tokenizer, LengthParityScorer(), tmp_path, steps=1, lr=1e-3, controller=ctl)
    rollout, advantages = ctl.seen[0]
    assert (advantages > 0).any() and (advantages < 0).any()
    delta = _sequence_logp(model.eval(), rollout) - _sequence_logp(initial, rollout)
    assert delta[advantages > 0].mean() > 0 > delta[advantages < 0].mean()
    assert torch.equal(rollout.temperatures[rollout.mask.bool()].unique(), torch.tensor([0.8]))


def test_post_update_statistics_use_the_updated_policy(tiny_model, char_tokenizer, tmp_path):
    model = copy.deepcopy(tiny_model).train()
    ctl = LearnedScale()
    ctl.statistics_source = "post_update"
    _fit(model, char_tokenizer, LengthParityScorer(), tmp_path, steps=1, controller=ctl)
    _, rollout, advantages, statistics = ctl.seen[0]
    rows = (advantages != 0).nonzero().flatten()
    assert torch.isnan(statistics[advantages == 0]).all()
    part = rollout.select(rows)
    per_token = token_logprobs_at_one(model.eval(), part)
    expected = (per_token * part.mask).sum(-1) / part.mask.sum(-1)
    torch.testing.assert_close(statistics[rows, 0], expected, atol=1e-4, rtol=0)


def token_logprobs_at_one(model, rollout):
    ids, attn = rollout.input_ids()
    with torch.no_grad():
        hidden = forward_hidden(model, ids, attn)[:, rollout.prompt_ids.shape[1] - 1 : -1]
        return token_logprobs(lm_head(model)(hidden), rollout.tokens)


class OldLogpSpy(LearnedScale):
    """Returns a distinct `action_logp` per call and records the `old_logp` it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[torch.Tensor | None, torch.Tensor]] = []
        self.token_share: list[float] = []  # each call's tokens / the whole batch's tokens

    def phase(self, step):
        return HEAD_PHASE

    def loss(self, hidden, rollout, advantages, *, old_logp=None, **aggregation):
        loss, stats = super().loss(hidden, rollout, advantages, **aggregation)
        mine = torch.full(rollout.mask.shape, -float(len(self.calls) + 1))
        self.calls.append((old_logp, mine))
        self.token_share.append(float(rollout.mask.sum()) / aggregation["total_tokens"])
        return loss, {**stats, "action_logp": mine}


def test_later_head_passes_get_the_first_passs_log_probs_as_old(
    tiny_model, char_tokenizer, tmp_path
):
    ctl = OldLogpSpy()
    _, log = _fit(
        copy.deepcopy(tiny_model).train(),
        char_tokenizer,
        LengthParityScorer(),
        tmp_path,
        steps=1,
        mu=3,
        controller=ctl,
    )
    chunks = len(ctl.calls) // 3
    assert chunks >= 1 and len(ctl.calls) == 3 * chunks
    first = ctl.calls[:chunks]
    assert all(old is None for old, _ in first)  # pass 0: the head has not moved yet
    for later in range(1, 3):
        for i in range(chunks):
            old, _ = ctl.calls[later * chunks + i]
            assert old is first[i][1]  # the same chunk's pass-0 log-probs, not a later one
    # The logged mean is pass 0's token-weighted action log-prob (-1 on chunk 0, -2 on 1...).
    expected = sum(-(i + 1) * ctl.token_share[i] for i in range(chunks))
    [(step, logged)] = log.history["method/head_logp_mean"]
    assert step == 0 and logged == pytest.approx(expected)
