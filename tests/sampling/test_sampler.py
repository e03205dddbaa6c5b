import pytest
import torch

from tempo.models.policy import forward_hidden, lm_head
from tempo.rl.logprobs import token_entropy, token_logprobs
from tempo.sampling.sampler import Sampler
from tempo.temperature.base import TemperatureController, TemperatureDecision
from tempo.temperature.fixed import FixedTemperature

PROMPTS = ["12+3=", "1+2*3-4=", "7=", "40-2*9="]


class RandomPerToken(TemperatureController):
    """A per-token controller with a recorded extra, to exercise the per-row plumbing."""

    per_token = True

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.gen = torch.Generator().manual_seed(seed)
        self.seen: list[torch.Tensor] = []

    def temperature(self, logits, hidden, prev_temperature, position):
        t = 0.5 + torch.rand(logits.shape[0], generator=self.gen)
        self.seen.append(t)
        return TemperatureDecision(t, {"position": torch.full_like(t, float(position))})


def _encode(tok, prompts):
    enc = tok(prompts, padding=True, return_tensors="pt", add_special_tokens=False)
    return enc["input_ids"], enc["attention_mask"]


def _recomputed_logits(model, rollout):
    ids, attn = rollout.input_ids()
    hidden = forward_hidden(model, ids, attn)
    return lm_head(model)(hidden[:, rollout.prompt_ids.shape[1] - 1 : -1]).float()


@pytest.mark.parametrize(
    ("decoder", "static", "compact"),
    [("fast", True, 0.0), ("fast", True, 1.0), ("hf", True, 0.0), ("hf", False, 0.0)],
)
def test_recorded_logprobs_match_recomputation_with_per_token_temperature(
    tiny_model, char_tokenizer, decoder, static, compact
):
    ids, mask = _encode(char_tokenizer, PROMPTS * 2)
    sampler = Sampler(
        20,
        char_tokenizer.eos_token_id,
        char_tokenizer.pad_token_id,
        static_cache=static,
        decoder=decoder,
        check_every=2,
        compact_below=compact,  # 1.0: finished rows leave the batch at every check
    )
    ctl = RandomPerToken()
    r = sampler.rollout(tiny_model, ids, mask, ctl, generator=torch.Generator().manual_seed(1))
    assert 0 < int(r.finished.sum()) < len(r.finished)  # some rows end early
    if compact == 0.0:  # the controller saw every row at every step
        # the stored temperatures are exactly what the controller returned, step by step
        expected_t = torch.stack(ctl.seen, dim=1)[:, : r.tokens.shape[1]]
        assert torch.equal(r.temperatures, expected_t)
    else:  # the controller's batch shrank as rows finished
        assert len(ctl.seen[-1]) < len(ctl.seen[0])
    columns = torch.arange(r.tokens.shape[1]).float().expand_as(r.mask)
    valid = r.mask.bool()
    assert torch.equal(r.controller_data["position"][valid], columns[valid])
    logits = _recomputed_logits(tiny_model, r)
    with torch.no_grad():
        logp = token_logprobs(logits, r.tokens, r.temperatures) * r.mask
        ent1 = token_entropy(logits) * r.mask
        ent_t = token_entropy(logits, r.temperatures) * r.mask
    torch.testing.assert_close(r.logprobs, logp, atol=2e-5, rtol=0)
    torch.testing.assert_close(r.entropy, ent1, atol=2e-5, rtol=0)
    torch.testing.assert_close(r.entropy_at_T, ent_t, atol=2e-5, rtol=0)
    # and against a direct per-token log_softmax loop
    b, t = 3, 2
    direct = torch.log_softmax(logits[b, t].detach() / r.temperatures[b, t], -1)[r.tokens[b, t]]
    assert abs(float(direct) - float(r.logprobs[b, t])) < 2e-5


def test_eos_ends_rows_and_truncation_is_flagged(tiny_model, char_tokenizer):
    eos, pad = char_tokenizer.eos_token_id, char_tokenizer.pad_token_id
    ids, mask = _encode(char_tokenizer, PROMPTS * 16)
    sampler = Sampler(30, eos, pad)
    r = sampler.rollout(
        tiny_model, ids, mask, FixedTemperature(5.0), generator=torch.Generator().manual_seed(0)
    )
    assert 0 < int(r.finished.sum()) < len(r.finished)  # both cases occur with this seed
    for row in range(len(r.finished)):
        toks, m = r.tokens[row].tolist(), r.mask[row].tolist()
        if r.finished[row]:
            end = toks.index(eos)
            assert m[: end + 1] == [1.0] * (end + 1) and not any(m[end + 1 :])
            assert all(x == pad for x in toks[end + 1 :])
            assert (r.logprobs[row, end + 1 :] == 0).all()
        else:
            assert eos not in toks and all(m) and len(toks) == 30


def test_stops_early_when_every_row_has_finished(tiny_model, char_tokenizer):
    eos = char_tokenizer.eos_token_id
    ids, mask = _encode(char_tokenizer, PROMPTS)
    calls = []

    def favour_eos_from_step_3(module, inputs, output):
        calls.append(1)
        if len(calls) > 3:
            output = output.clone()
            output[..., eos] += 100.0
        return output

    hook = lm_head(tiny_model).register_forward_hook(favour_eos_from_step_3)
    try:
        sampler = Sampler(200, eos, char_tokenizer.pad_token_id, check_every=4)
        r = sampler.rollout(
            tiny_model, ids, mask, FixedTemperature(1.0), generator=torch.Generator().manual_seed(0)
        )
    finally:
        hook.remove()
    assert bool(r.finished.all())
    assert r.lengths.tolist() == [4.0] * len(PROMPTS)  # 3 free tokens, then EOS
    assert r.tokens.shape[1] == 4  # stopped at the first check after everyone finished


def test_greedy_matches_model_generate(tiny_model, char_tokenizer):
    ids, mask = _encode(char_tokenizer, PROMPTS)
    eos, pad = char_tokenizer.eos_token_id, char_tokenizer.pad_token_id
    r = Sampler(16, eos, pad).rollout(tiny_model, ids, mask, None, greedy=True)
    out = tiny_model.generate(
        ids,
        attention_mask=mask,
        do_sample=False,
        max_new_tokens=16,
        pad_token_id=pad,
        eos_token_id=eos,
    )[:, ids.shape[1] :]
    for row in range(len(PROMPTS)):
        n = int(r.lengths[row])
        assert r.tokens[row, :n].tolist() == out[row, :n].tolist()
    assert (r.temperatures == 1).all()


def test_same_generator_seed_gives_same_rollout(tiny_model, char_tokenizer):
    ids, mask = _encode(char_tokenizer, PROMPTS)
    sampler = Sampler(12, char_tokenizer.eos_token_id, char_tokenizer.pad_token_id)
    a = sampler.rollout(
        tiny_model, ids, mask, FixedTemperature(1.0), torch.Generator().manual_seed(3)
    )
    b = sampler.rollout(
        tiny_model, ids, mask, FixedTemperature(1.0), torch.Generator().manual_seed(3)
    )
    c = sampler.rollout(
        tiny_model, ids, mask, FixedTemperature(1.0), torch.Generator().manual_seed(4)
    )
    assert torch.equal(a.tokens, b.tokens)
    assert not torch.equal(a.tokens, c.tokens)


def test_rejects_zero_length():
    with pytest.raises(ValueError, match="max_new_tokens=0"):
        Sampler(0, 2, 0)
