"""Every EOS id ends a completion (fused and HF paths); a method's bad temperature fails."""

from __future__ import annotations

import pytest
import torch

from tempo.sampling.sampler import InvalidTemperature, Sampler
from tempo.temperature.base import StepTemperature, TemperatureController, TemperatureDecision
from tempo.temperature.fixed import FixedTemperature

PROMPTS = ["12+3=", "1+2*3-4=", "7=", "40-2*9="]
NEVER = 3  # <unk>: the random model's greedy completions never produce it here


def _encode(tok):
    enc = tok(PROMPTS, padding=True, return_tensors="pt", add_special_tokens=False)
    return enc["input_ids"], enc["attention_mask"]


@pytest.mark.parametrize("decoder", ["fast", "hf"])
def test_each_stop_id_ends_the_row_where_it_first_appears(tiny_model, char_tokenizer, decoder):
    ids, mask = _encode(char_tokenizer)
    free = Sampler(16, NEVER, char_tokenizer.pad_token_id, decoder=decoder)
    base = free.rollout(tiny_model, ids, mask, None, greedy=True)
    assert not base.finished.any()  # nothing stops: the full 16 tokens of every row
    # Two stop ids taken from what rows 0 and 1 emit (at positions 2 and 5 of their own text).
    first, second = int(base.tokens[0, 2]), int(base.tokens[1, 5])
    stops = [NEVER, first, second]
    out = Sampler(16, stops, char_tokenizer.pad_token_id, decoder=decoder).rollout(
        tiny_model, ids, mask, None, greedy=True
    )
    for row in range(len(PROMPTS)):
        tokens = base.tokens[row].tolist()
        ends = [i for i, t in enumerate(tokens) if t in stops]
        length = ends[0] + 1 if ends else len(tokens)
        assert int(out.lengths[row]) == length
        assert out.tokens[row, :length].tolist() == tokens[:length]
        assert bool(out.finished[row]) == bool(ends)
        assert (out.tokens[row, length:] == char_tokenizer.pad_token_id).all()
        assert (out.mask[row, length:] == 0).all() and (out.mask[row, :length] == 1).all()
    assert int(out.lengths[0]) <= 3 and int(out.lengths[1]) <= 6


class Constant(TemperatureController):
    per_token = True

    def __init__(self, value: float, at: int = 0) -> None:
        super().__init__()
        self.value, self.at = value, at

    def temperature(self, logits, hidden, prev_temperature, position):
        t = torch.full((logits.shape[0],), 0.9)
        if position == self.at:
            t[1] = self.value
        return TemperatureDecision(t)


class StepAt(StepTemperature):
    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def step_temperature(self) -> float:
        return self.value


@pytest.mark.parametrize(
    "controller",
    [
        Constant(-98.0),
        Constant(float("nan"), at=3),
        Constant(0.0),
        StepAt(0.0),
        StepAt(float("inf")),
    ],
)
def test_a_temperature_that_is_not_finite_and_positive_stops_the_rollout(
    tiny_model, char_tokenizer, controller
):
    ids, mask = _encode(char_tokenizer)
    sampler = Sampler(8, NEVER, char_tokenizer.pad_token_id)
    with pytest.raises(InvalidTemperature) as err:
        sampler.rollout(tiny_model, ids, mask, controller, generator=torch.Generator())
    message = str(err.value)
    assert err.value.key == "method" and type(controller).__qualname__ in message
    assert "finite numbers > 0" in message and "\n" not in message


def test_valid_temperatures_pass(tiny_model, char_tokenizer):
    ids, mask = _encode(char_tokenizer)
    sampler = Sampler(8, NEVER, char_tokenizer.pad_token_id)
    out = sampler.rollout(tiny_model, ids, mask, Constant(2.0), generator=torch.Generator())
    assert float(out.temperatures[1, 0]) == 2.0
    out = sampler.rollout(tiny_model, ids, mask, FixedTemperature(0.7), generator=torch.Generator())
    assert torch.allclose(out.temperatures, torch.full_like(out.temperatures, 0.7))
