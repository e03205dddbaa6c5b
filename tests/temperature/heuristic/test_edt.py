import math

import pytest
import torch

from tempo.config_error import ConfigError
from tempo.temperature.heuristic.edt import EntropyDynamicTemperature

INF = math.inf
ROWS = [
    [0.0, 0.0, 0.0, 0.0],  # uniform: H = ln 4
    [2.0, 1.0, 0.0, -1.0],
    [4.0, 0.0, -2.0, 1.0],
    [0.3, -INF, 0.3, -INF],  # two live tokens: H = ln 2
    [5.0, -INF, -INF, -INF],  # one live token: H = 0 -> t_min
    [60.0, 0.0, 0.0, 0.0],  # H ~ 1e-25: T underflows to the floor
]


def entropy_by_hand(row: list[float]) -> float:
    live = [math.exp(x) for x in row if x != -INF]
    z = sum(live)
    return -sum(p / z * math.log(p / z) for p in live if p > 0)


def edt_by_hand(h: float, t0: float, n: float, theta: float, t_min: float) -> float:
    if h == 0:
        return t_min
    return min(max(t0 * n ** (theta / h), t_min), t0)


@pytest.mark.parametrize("t0, n, theta, t_min", [(1.0, 0.8, 0.5, 0.1), (1.3, 0.8, 0.2, 0.4)])
def test_temperature_follows_the_formula(t0, n, theta, t_min):
    ctl = EntropyDynamicTemperature(t0=t0, base=n, theta=theta, t_min=t_min)
    logits = torch.tensor(ROWS)
    decision = ctl.temperature(logits, torch.zeros(len(ROWS), 3), torch.ones(len(ROWS)), 17)
    expected = [edt_by_hand(entropy_by_hand(r), t0, n, theta, t_min) for r in ROWS]
    got = decision.temperature
    assert got.shape == (len(ROWS),) and got.device == logits.device
    assert got.tolist() == pytest.approx(expected, rel=1e-5)
    assert torch.isfinite(got).all()
    assert got[4].item() == pytest.approx(t_min)
    assert got[0].item() == pytest.approx(t0 * n ** (theta / math.log(4)), rel=1e-6)
    assert decision.records == {}


def test_value_written_out():
    ctl = EntropyDynamicTemperature(t0=1.0, base=0.8, theta=math.log(2))
    got = ctl.temperature(torch.zeros(1, 2), None, torch.ones(1), 0).temperature
    assert got.item() == pytest.approx(0.8)  # H = ln 2, so N ** 1


def test_temperatures_stay_within_bounds_on_random_logits():
    torch.manual_seed(0)
    ctl = EntropyDynamicTemperature(t0=1.2, base=0.8, theta=0.7, t_min=0.3)
    logits = torch.randn(64, 50) * torch.logspace(-2, 2, 64)[:, None]
    got = ctl.temperature(logits, None, torch.ones(64), 0).temperature
    assert torch.isfinite(got).all()
    assert got.min().item() >= 0.3 - 1e-6 and got.max().item() <= 1.2 + 1e-6
    assert got.max().item() - got.min().item() > 0.5  # it really varies with entropy


def test_higher_entropy_never_gets_a_lower_temperature():
    ctl = EntropyDynamicTemperature()
    logits = torch.tensor([[s, 0.0, 0.0, 0.0] for s in (8.0, 4.0, 2.0, 1.0, 0.0)])
    got = ctl.temperature(logits, None, torch.ones(5), 0).temperature.tolist()
    assert got == sorted(got)


def test_bf16_logits():
    ctl = EntropyDynamicTemperature(theta=math.log(2))
    got = ctl.temperature(torch.zeros(2, 2, dtype=torch.bfloat16), None, torch.ones(2), 0)
    assert got.temperature.dtype == torch.float32
    assert got.temperature.tolist() == pytest.approx([0.8, 0.8], rel=1e-6)


def test_checkpoint_round_trip():
    old = EntropyDynamicTemperature(t0=1.1, theta=0.3)
    new = EntropyDynamicTemperature(t0=1.1, theta=0.3)
    new.load_state_dict(old.state_dict())
    logits = torch.randn(5, 9)
    assert torch.equal(
        new.temperature(logits, None, torch.ones(5), 3).temperature,
        old.temperature(logits, None, torch.ones(5), 3).temperature,
    )


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"theta": 0.0}, "theta"),
        ({"theta": -0.5}, "theta"),
        ({"base": 0.0}, "base"),
        ({"base": 1.0}, "base"),
        ({"base": 1.5}, "base"),
        ({"base": -0.2}, "base"),
        ({"t_min": 1.0, "t0": 1.0}, "t_min"),
        ({"t_min": 1.2, "t0": 1.0}, "t_min"),
        ({"t_min": 0.0}, "t_min"),
        ({"t0": 0.0}, "t0"),
        ({"t0": "warm"}, "t0"),
    ],
)
def test_invalid_settings_name_the_key(kwargs, key):
    with pytest.raises(ConfigError) as err:
        EntropyDynamicTemperature(**kwargs)
    assert err.value.key == f"edt.{key}"


def test_flags():
    ctl = EntropyDynamicTemperature()
    assert ctl.name == "heuristic" and ctl.rule == "edt" and ctl.per_token
    assert ctl.begin_step(3) == {} and not ctl.has_loss()
