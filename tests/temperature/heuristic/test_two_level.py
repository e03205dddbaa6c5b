import math

import numpy as np
import pytest
import torch

from tempo.config_error import ConfigError
from tempo.temperature.heuristic.two_level import TwoLevelTemperature, quantile

from .conftest import make_rollout


def entropy_by_hand(row: list[float]) -> float:
    z = sum(math.exp(x) for x in row)
    return -sum(math.exp(x) / z * math.log(math.exp(x) / z) for x in row)


ROWS = [
    [0.0, 0.0, 0.0, 0.0],  # ln 4 = 1.386
    [3.0, 0.0, 0.0, 0.0],  # ~0.53
    [1.0, 0.0, 0.0, 0.0],  # ~1.31
    [0.0, 0.0, -9.0, -9.0],  # ~0.69
    [9.0, 0.0, 0.0, 0.0],  # ~0.004
]


def run(ctl, rows=ROWS) -> torch.Tensor:
    logits = torch.tensor(rows)
    decision = ctl.temperature(logits, torch.zeros(len(rows), 2), torch.ones(len(rows)), 6)
    assert decision.temperature.shape == (len(rows),) and decision.records == {}
    return decision.temperature


@pytest.mark.parametrize("threshold", [0.0, 0.6, 1.0, 1.35, 2.0])
def test_absolute_threshold(threshold):
    ctl = TwoLevelTemperature(t_low=0.7, t_high=1.4, mode="absolute", threshold=threshold)
    expected = [1.4 if entropy_by_hand(r) > threshold else 0.7 for r in ROWS]
    assert run(ctl).tolist() == pytest.approx(expected)
    assert ctl.begin_step(0) == {"method/threshold": threshold}


def test_absolute_mode_never_moves_the_threshold_but_logs_frac_high():
    ctl = TwoLevelTemperature(t_low=1.0, t_high=1.3, mode="absolute", threshold=0.9)
    rollout = make_rollout(
        entropy=[[0.1, 2.0, 3.0], [0.2, 0.3, 4.0]],
        mask=[[1, 1, 1], [1, 1, 0]],
        temperatures=[[1.0, 1.3, 1.3], [1.0, 1.0, 1.3]],
    )
    assert ctl.update(rollout, torch.zeros(2)) == {"method/frac_high": pytest.approx(2 / 5)}
    assert ctl.threshold == 0.9 and ctl.begin_step(1) == {"method/threshold": 0.9}


def quantile_by_hand(values: list[float], q: float) -> float:
    v = sorted(values)
    pos = q * (len(v) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


def test_quantile_mode_uses_absolute_threshold_until_the_first_update():
    ctl = TwoLevelTemperature(t_low=1.0, t_high=1.3, mode="quantile", threshold=1.35, quantile=0.8)
    assert ctl.begin_step(0) == {"method/threshold": 1.35}
    before = [1.3 if entropy_by_hand(r) > 1.35 else 1.0 for r in ROWS]
    assert run(ctl).tolist() == pytest.approx(before)

    # masked tokens (9.0, 8.0) must not enter the quantile
    rollout = make_rollout(
        entropy=[[0.1, 0.5, 0.2, 9.0], [0.9, 0.3, 8.0, 8.0]],
        mask=[[1, 1, 1, 0], [1, 1, 0, 0]],
        temperatures=[[1.0, 1.3, 1.0, 1.0], [1.3, 1.0, 1.0, 1.0]],
    )
    metrics = ctl.update(rollout, torch.zeros(2))
    # sorted 0.1 0.2 0.3 0.5 0.9, position 0.8 * 4 = 3.2 -> 0.5 + 0.2 * (0.9 - 0.5) = 0.58
    assert ctl.threshold == pytest.approx(0.58)
    assert ctl.threshold == pytest.approx(quantile_by_hand([0.1, 0.5, 0.2, 0.9, 0.3], 0.8))
    assert metrics == {"method/frac_high": pytest.approx(2 / 5)}
    assert ctl.begin_step(1) == {"method/threshold": pytest.approx(0.58)}
    after = [1.3 if entropy_by_hand(r) > 0.58 else 1.0 for r in ROWS]
    assert after != before
    assert run(ctl).tolist() == pytest.approx(after)


def test_quantile_helper_matches_numpy():
    gen = torch.Generator().manual_seed(0)
    values = torch.rand(1001, generator=gen) * 3
    for q in (0.05, 0.5, 0.8, 0.99):
        assert quantile(values, q) == pytest.approx(float(np.quantile(values.numpy(), q)), rel=1e-6)


def test_recorded_temperatures_are_one_of_the_two_levels():
    torch.manual_seed(1)
    ctl = TwoLevelTemperature(t_low=0.8, t_high=1.2, mode="absolute", threshold=2.0)
    got = run(ctl, (torch.randn(32, 20) * 2).tolist())
    assert {round(x, 4) for x in got.tolist()} == {0.8, 1.2}


def test_checkpoint_round_trip():
    old = TwoLevelTemperature(mode="quantile", threshold=5.0, quantile=0.5)
    rollout = make_rollout(entropy=[[0.4, 0.8, 1.2]], mask=[[1, 1, 1]])
    old.update(rollout, torch.zeros(1))
    assert old.threshold == pytest.approx(0.8) and old.estimated
    new = TwoLevelTemperature(mode="quantile", threshold=5.0, quantile=0.5)
    new.load_state_dict(old.state_dict())
    assert new.threshold == old.threshold and new.estimated
    assert new.begin_step(1) == old.begin_step(1)
    assert torch.equal(run(new), run(old))
    assert run(new).tolist() != run(TwoLevelTemperature(mode="quantile", threshold=5.0)).tolist()


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"t_low": 1.3, "t_high": 1.3}, "t_low"),
        ({"t_low": 1.5, "t_high": 1.0}, "t_low"),
        ({"t_low": 0.0}, "t_low"),
        ({"t_high": -2.0}, "t_high"),
        ({"mode": "median"}, "mode"),
        ({"mode": None}, "mode"),
        ({"threshold": -0.1}, "threshold"),
        ({"threshold": math.nan}, "threshold"),
        ({"quantile": 0.0}, "quantile"),
        ({"quantile": 1.0}, "quantile"),
        ({"quantile": 1.2}, "quantile"),
    ],
)
def test_invalid_settings_name_the_key(kwargs, key):
    with pytest.raises(ConfigError) as err:
        TwoLevelTemperature(**kwargs)
    assert err.value.key == f"two_level.{key}"


def test_flags():
    ctl = TwoLevelTemperature()
    assert ctl.name == "heuristic" and ctl.rule == "two_level" and ctl.per_token
