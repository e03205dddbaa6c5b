import math

import pytest
import torch

from tempo.config_error import ConfigError
from tempo.temperature.heuristic.ead import ExploratoryAnnealedDecoding


def ead_by_hand(t: int, s: int, c: int, t_max: float, t_min: float, d0, d_growth, d_max) -> float:
    if t < c:
        return 1.0
    d = min(d0 + d_growth * s, d_max)
    grown = math.exp(t / d) if t / d < 700 else math.inf  # math.exp overflows past ~709
    return max(1 + t_max - grown, t_min)


KNOBS = {"c": 3, "t_max": 1.2, "t_min": 0.1, "d0": 10.0, "d_growth": 5.0, "d_max": 40.0}


def temps_at(ctl, position: int, batch: int = 4) -> torch.Tensor:
    logits = torch.randn(batch, 11)
    decision = ctl.temperature(logits, torch.zeros(batch, 2), torch.ones(batch), position)
    assert decision.temperature.shape == (batch,) and decision.records == {}
    assert torch.all(decision.temperature == decision.temperature[0])
    return decision.temperature


def test_first_c_tokens_are_at_one_then_annealing_starts_at_t_max_ish():
    ctl = ExploratoryAnnealedDecoding(**KNOBS)
    ctl.begin_step(0)
    assert [temps_at(ctl, t)[0].item() for t in (0, 1, 2)] == [1.0, 1.0, 1.0]
    # t = 3, d = 10: 2.2 - e^0.3
    assert temps_at(ctl, 3)[0].item() == pytest.approx(2.2 - math.exp(0.3), rel=1e-6)


@pytest.mark.parametrize("step", [0, 1, 2, 5, 6, 100])
def test_schedule_matches_the_formula_with_decay_growing_with_step(step):
    ctl = ExploratoryAnnealedDecoding(**KNOBS)
    metrics = ctl.begin_step(step)
    assert metrics == {"method/decay": pytest.approx(min(10.0 + 5.0 * step, 40.0))}
    for t in (0, 2, 3, 5, 8, 12, 20, 35, 60, 10_000, 10**9):
        expected = ead_by_hand(t, step, **KNOBS)
        got = temps_at(ctl, t)
        assert got.tolist() == pytest.approx([expected] * 4, rel=1e-6), (step, t)
        assert 0.1 - 1e-6 <= got[0].item() <= 1.2 + 1e-6


def test_values_written_out():
    ctl = ExploratoryAnnealedDecoding(**KNOBS)
    ctl.begin_step(0)  # d = 10
    assert temps_at(ctl, 8)[0].item() == pytest.approx(0.1)  # 2.2 - e^0.8 < 0.1
    ctl.begin_step(2)  # d = 20
    assert temps_at(ctl, 8)[0].item() == pytest.approx(2.2 - math.exp(0.4), rel=1e-6)
    ctl.begin_step(7)  # d = min(45, 40) = 40
    assert ctl.decay == 40.0
    assert temps_at(ctl, 8)[0].item() == pytest.approx(2.2 - math.exp(0.2), rel=1e-6)


def test_paper_growth_and_cap_defaults():
    ctl = ExploratoryAnnealedDecoding(d0=1000.0)
    ctl.begin_step(100)
    assert ctl.decay == 1500.0
    ctl.begin_step(10**6)
    assert ctl.decay == 40000.0


def test_c_zero_starts_hot():
    ctl = ExploratoryAnnealedDecoding(**{**KNOBS, "c": 0})
    assert temps_at(ctl, 0)[0].item() == pytest.approx(1.2)


def test_checkpoint_round_trip():
    old = ExploratoryAnnealedDecoding(**KNOBS)
    old.begin_step(3)
    new = ExploratoryAnnealedDecoding(**KNOBS)
    new.load_state_dict(old.state_dict())
    for t in (0, 3, 9, 17, 30):
        assert torch.equal(temps_at(new, t), temps_at(old, t))
    assert temps_at(new, 9)[0].item() == pytest.approx(ead_by_hand(9, 3, **KNOBS), rel=1e-6)


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"c": -1}, "c"),
        ({"c": 2.5}, "c"),
        ({"t_min": 1.2, "t_max": 1.2}, "t_min"),
        ({"t_min": 0.0}, "t_min"),
        ({"t_max": -1.0}, "t_max"),
        ({"d0": 0.0}, "d0"),
        ({"d0": -5.0}, "d0"),
        ({"d_growth": -1.0}, "d_growth"),
        ({"d_growth": math.inf}, "d_growth"),
        ({"d_max": 0.0}, "d_max"),
        ({"d0": 500.0, "d_max": 100.0}, "d_max"),
    ],
)
def test_invalid_settings_name_the_key(kwargs, key):
    with pytest.raises(ConfigError) as err:
        ExploratoryAnnealedDecoding(**kwargs)
    assert err.value.key == f"ead.{key}"


def test_flags():
    ctl = ExploratoryAnnealedDecoding()
    assert ctl.name == "heuristic" and ctl.rule == "ead" and ctl.per_token
