"""The update's log-prob passes (policy, old policy, reference, statistics) are chunked and
micro-batched; the trained weights and the controller's statistics must not depend on how."""

from __future__ import annotations

import copy

import pytest
import torch

from tempo.models.policy import forward_hidden, lm_head
from tempo.ops.chunked_logprobs import TokenStats
from tempo.rl.grpo import GRPOConfig
from tempo.rl.module import RLVRModule
from tempo.rl.settings import EvalConfig, RolloutConfig
from tempo.temperature.fixed import FixedTemperature
from tempo.temperature.meta_policy import MetaPolicyTemperature
from tests.rl.test_module import LengthParityScorer
from tests.rl.test_module import _fit as fit_module


def _full_logits_stats(self, model, rollout, statistics=False):
    """An independent, unchunked version of RLVRModule._completion_stats: full [b, L, V]
    logits and log_softmax, written here."""
    ids, attn = rollout.input_ids()
    hidden = forward_hidden(model, ids, attn)[:, rollout.prompt_ids.shape[1] - 1 : -1]
    z = lm_head(model)(hidden).float()
    tok = rollout.tokens.unsqueeze(-1)
    logp = torch.log_softmax(z / rollout.temperatures.unsqueeze(-1), -1).gather(-1, tok)[..., 0]
    cands = None
    temps = self.controller.statistics_temperatures() if statistics else None
    if temps is not None:
        cands = torch.stack(
            [torch.log_softmax(z / t, -1).gather(-1, tok)[..., 0] for t in temps], -1
        ).detach()
    return TokenStats(logprobs=logp * rollout.mask, candidates=cands)


def _sgd(self):
    """Plain SGD: Adam's first steps are sign-like and would blow float rounding up to lr."""
    return torch.optim.SGD(self.model.parameters(), lr=self.grpo.lr)


def _fit(model, tokenizer, tmp_path, controller, **grpo):
    """test_module's loop with a fixed torch seed and lr 0.5; the trained weights and log."""
    torch.manual_seed(0)
    _, log = fit_module(
        model, tokenizer, LengthParityScorer(), tmp_path, lr=0.5, controller=controller, **grpo
    )
    return [p.detach().clone() for p in model.parameters()], log


@pytest.mark.parametrize(
    "layout",
    [
        {"micro_batch_size": 3, "logprob_chunk_tokens": 5},
        {"micro_batch_size": 8, "micro_batch_tokens": 30, "logprob_chunk_tokens": 1},
        {"micro_batch_size": 2, "micro_batch_tokens": 1000, "logprob_chunk_tokens": 7},
    ],
)
def test_weights_do_not_depend_on_chunks_or_micro_batches(
    tiny_model, char_tokenizer, tmp_path, monkeypatch, layout
):
    """beta > 0 (reference pass) and mu = 2 (old-policy pass): every pass is exercised."""
    monkeypatch.setattr(RLVRModule, "configure_optimizers", _sgd)
    common = {"beta": 0.1, "mu": 2}
    chunked, log = _fit(
        copy.deepcopy(tiny_model).train(),
        char_tokenizer,
        tmp_path / "a",
        FixedTemperature(0.8),
        **common,
        **layout,
    )
    monkeypatch.setattr(RLVRModule, "_completion_stats", _full_logits_stats)
    reference, ref_log = _fit(
        copy.deepcopy(tiny_model).train(),
        char_tokenizer,
        tmp_path / "b",
        FixedTemperature(0.8),
        **common,
        micro_batch_size=64,
    )
    assert any(not torch.equal(a, b) for a, b in zip(chunked, tiny_model.parameters(), strict=True))
    for got, want in zip(chunked, reference, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    for key in ("loss/policy", "loss/kl", "loss/clip_frac"):
        assert log.latest[key] == pytest.approx(ref_log.latest[key], rel=1e-4, abs=1e-6)


def test_tampo_statistics_equal_full_logits(tiny_model, char_tokenizer, tmp_path, monkeypatch):
    """TAMPO's distribution after two steps: chunked statistics vs full-logits ones."""

    def run(folder, **grpo):
        ctl = MetaPolicyTemperature(candidates=[0.5, 1.0, 1.5], alpha=0.5, seed=3)
        _fit(copy.deepcopy(tiny_model).train(), char_tokenizer, tmp_path / folder, ctl, **grpo)
        return ctl.ema.clone()

    chunked = run("a", micro_batch_size=3, micro_batch_tokens=25, logprob_chunk_tokens=2)
    monkeypatch.setattr(RLVRModule, "_completion_stats", _full_logits_stats)
    full = run("b", micro_batch_size=64)
    assert bool((chunked != 0).any())
    torch.testing.assert_close(chunked, full, rtol=1e-5, atol=1e-7)


def test_old_interface_is_refused_in_one_line(tiny_model, char_tokenizer):
    class Old(FixedTemperature):
        def logit_statistics(self, logits, tokens, mask):
            return None

    with pytest.raises(Exception, match="token_statistics") as err:
        RLVRModule(
            copy.deepcopy(tiny_model),
            char_tokenizer,
            Old(1.0),
            GRPOConfig(group_size=2),
            RolloutConfig(2, 4),
            EvalConfig(every=0),
            LengthParityScorer(),
            "arithmetic",
        )
    assert "\n" not in str(err.value)
