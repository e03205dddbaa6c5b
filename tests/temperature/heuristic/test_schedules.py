import math

import pytest
import torch

from tempo.config_error import ConfigError
from tempo.temperature.heuristic.schedules import (
    CosineSchedule,
    ExponentialSchedule,
    LinearSchedule,
)

S = 100


def linear_ref(a: float, b: float, s: int, total: int) -> float:
    return a + (b - a) * s / total


def cosine_ref(a: float, b: float, s: int, total: int) -> float:
    return b + (a - b) * (1 + math.cos(math.pi * s / total)) / 2


def exponential_ref(a: float, b: float, s: int, total: int) -> float:
    return a * (b / a) ** (s / total)


CASES = [
    (LinearSchedule, linear_ref),
    (CosineSchedule, cosine_ref),
    (ExponentialSchedule, exponential_ref),
]


def at_step(ctl, step: int, batch: int = 3) -> torch.Tensor:
    metrics = ctl.begin_step(step)
    decision = ctl.temperature(torch.zeros(batch, 7), torch.zeros(batch, 4), torch.ones(batch), 5)
    assert decision.records == {}
    assert metrics == {"method/temperature": pytest.approx(decision.temperature[0].item())}
    return decision.temperature


@pytest.mark.parametrize("cls, ref", CASES)
@pytest.mark.parametrize("a, b", [(0.9, 1.5), (1.5, 0.6)])
def test_schedule_follows_its_formula(cls, ref, a, b):
    ctl = cls(t_start=a, t_end=b)
    ctl.setup(hidden_size=4, vocab_size=7, total_steps=S)
    for s in (0, 1, 25, 50, 73, 99, 100):
        temps = at_step(ctl, s)
        assert temps.shape == (3,)
        assert temps.tolist() == pytest.approx([ref(a, b, s, S)] * 3, rel=1e-6)
        assert min(a, b) - 1e-6 <= temps.min().item() <= temps.max().item() <= max(a, b) + 1e-6


def test_landmarks_of_the_paper_baseline():
    """0.9 -> 1.5 over 100 steps: written-out values at s = 0, S/2, S."""
    expected = {
        LinearSchedule: (0.9, 1.2, 1.5),
        CosineSchedule: (0.9, 1.2, 1.5),
        ExponentialSchedule: (0.9, math.sqrt(0.9 * 1.5), 1.5),
    }
    for cls, values in expected.items():
        ctl = cls(0.9, 1.5)
        ctl.setup(4, 7, S)
        got = [at_step(ctl, s)[0].item() for s in (0, 50, 100)]
        assert got == pytest.approx(list(values), rel=1e-6), cls.rule


def test_cosine_moves_slowly_at_the_ends_and_fast_in_the_middle():
    ctl = CosineSchedule(0.9, 1.5)
    ctl.setup(4, 7, S)
    t = [at_step(ctl, s)[0].item() for s in (0, 5, 45, 50)]
    assert t[1] - t[0] < t[3] - t[2]


@pytest.mark.parametrize("cls, ref", CASES)
def test_schedule_holds_t_end_after_total_steps(cls, ref):
    ctl = cls(0.9, 1.5)
    ctl.setup(4, 7, S)
    assert at_step(ctl, 250)[0].item() == pytest.approx(1.5)


def test_total_steps_knob_overrides_the_trainer_length():
    ctl = LinearSchedule(1.0, 2.0, total_steps=10)
    ctl.setup(4, 7, total_steps=S)
    assert at_step(ctl, 5)[0].item() == pytest.approx(1.5)
    assert at_step(ctl, 10)[0].item() == pytest.approx(2.0)


def test_initial_temperature_is_the_current_step_value():
    ctl = LinearSchedule(0.9, 1.5)
    ctl.setup(4, 7, S)
    ctl.begin_step(50)
    got = ctl.initial_temperature(2, torch.device("cpu"))
    assert got.tolist() == pytest.approx([1.2, 1.2])


def test_bf16_logits_still_get_float32_temperatures():
    ctl = LinearSchedule(0.9, 1.5)
    ctl.setup(4, 7, S)
    ctl.begin_step(1)
    decision = ctl.temperature(torch.zeros(2, 7, dtype=torch.bfloat16), None, torch.ones(2), 0)
    assert decision.temperature.dtype == torch.float32
    assert decision.temperature[0].item() == pytest.approx(0.906, abs=1e-6)


@pytest.mark.parametrize("cls, ref", CASES)
def test_checkpoint_round_trip(cls, ref):
    old = cls(0.8, 1.4)
    old.setup(4, 7, 40)
    old.begin_step(17)
    new = cls(0.8, 1.4)  # fresh: no setup, no begin_step
    new.load_state_dict(old.state_dict())
    logits = torch.randn(4, 7)
    assert torch.equal(
        new.temperature(logits, None, torch.ones(4), 0).temperature,
        old.temperature(logits, None, torch.ones(4), 0).temperature,
    )
    assert new.temperature(logits, None, torch.ones(4), 0).temperature[0].item() == pytest.approx(
        ref(0.8, 1.4, 17, 40), rel=1e-6
    )
    assert new.begin_step(18) == old.begin_step(18)


def test_unbounded_trainer_needs_total_steps():
    ctl = CosineSchedule()
    with pytest.raises(ConfigError) as err:
        ctl.setup(4, 7, total_steps=-1)
    assert err.value.key == "trainer.max_steps"
    assert "method.cosine.total_steps" in str(err.value)


@pytest.mark.parametrize("cls", [LinearSchedule, CosineSchedule, ExponentialSchedule])
@pytest.mark.parametrize(
    "kwargs, knob",
    [
        ({"t_start": 0}, "t_start"),
        ({"t_start": -0.5}, "t_start"),
        ({"t_end": 0.0}, "t_end"),
        ({"t_end": math.nan}, "t_end"),
        ({"t_end": "hot"}, "t_end"),
        ({"total_steps": 0}, "total_steps"),
        ({"total_steps": 2.5}, "total_steps"),
        ({"total_steps": True}, "total_steps"),
    ],
)
def test_invalid_settings_name_the_key(cls, kwargs, knob):
    with pytest.raises(ConfigError) as err:
        cls(**kwargs)
    assert err.value.key == f"{cls.rule}.{knob}"


def test_flags():
    for cls in (LinearSchedule, CosineSchedule, ExponentialSchedule):
        ctl = cls()
        assert ctl.name == "heuristic" and not ctl.per_token and not ctl.has_loss()
