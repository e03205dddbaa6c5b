import math

import pytest
import torch

from tempo.config_error import ConfigError
from tempo.temperature.heuristic.entropy_target import EntropyTargetController

from .conftest import make_rollout

V = 50
D = math.log(V) + math.log(math.log(V))  # ln V + ln ln V
ADV = torch.zeros(2)


def e3_step(t: float, target: float, measured: float, lo: float, hi: float) -> float:
    return min(max(t * (1 + t * math.log(target / measured) / D), lo), hi)


def batch(values: list[float], extra_masked: float = 9.0):
    """Two rows: the given entropies as row 0 and 1 (split in half) plus one padded token each."""
    half = len(values) // 2
    rows = [values[:half] + [extra_masked], values[half:] + [extra_masked]]
    mask = [[1.0] * half + [0.0], [1.0] * (len(values) - half) + [0.0]]
    width = max(len(r) for r in rows)
    rows = [r + [0.0] * (width - len(r)) for r in rows]
    mask = [m + [0.0] * (width - len(m)) for m in mask]
    return make_rollout(entropy=[[0.0] * width] * 2, entropy_at_T=rows, mask=mask)


def controller(**kwargs) -> EntropyTargetController:
    ctl = EntropyTargetController(**{"t_init": 1.0, "t_min": 0.5, "t_max": 1.5, **kwargs})
    ctl.setup(hidden_size=8, vocab_size=V, total_steps=100)
    return ctl


def temperature_now(ctl) -> float:
    temps = ctl.temperature(torch.zeros(3, V), torch.zeros(3, 8), torch.ones(3), 4).temperature
    assert torch.all(temps == temps[0])
    return temps[0].item()


def test_target_is_the_pooled_token_mean_of_the_first_steps_and_T_then_moves():
    ctl = controller(target_steps=2)
    # step 0: tokens 1, 2 (mean 1.5); step 1: four tokens of 3 (mean 3) -> pooled 15 / 6 = 2.5
    assert ctl.begin_step(0) == {"method/temperature": 1.0}
    m0 = ctl.update(batch([1.0, 2.0]), ADV)
    assert m0 == {"method/entropy_measured": pytest.approx(1.5)}
    assert ctl.begin_step(1) == {"method/temperature": 1.0}
    m1 = ctl.update(batch([3.0, 3.0, 3.0, 3.0]), ADV)
    assert m1["method/entropy_target"] == pytest.approx(2.5)  # not the mean of means (2.25)
    assert temperature_now(ctl) == 1.0  # T untouched while the target forms

    t = 1.0
    for measured in (2.0, 3.5, 2.5, 1.0):
        assert ctl.begin_step(2)["method/temperature"] == pytest.approx(t, rel=1e-9)
        metrics = ctl.update(batch([measured] * 4), ADV)
        t = e3_step(t, 2.5, measured, 0.5, 1.5)
        assert metrics["method/entropy_measured"] == pytest.approx(measured)
        assert metrics["method/entropy_target"] == pytest.approx(2.5)
        assert temperature_now(ctl) == pytest.approx(t, rel=1e-6)
    # below-target entropy raised T, above-target lowered it
    assert e3_step(1.0, 2.5, 2.0, 0.5, 1.5) > 1.0 > e3_step(1.0, 2.5, 3.5, 0.5, 1.5)


def test_first_update_value_written_out():
    ctl = controller(target_steps=1)
    ctl.update(batch([2.0, 2.0]), ADV)  # H* = 2
    ctl.update(batch([1.0, 1.0]), ADV)  # T = 1 * (1 + ln 2 / D)
    assert temperature_now(ctl) == pytest.approx(1 + math.log(2) / D, rel=1e-6)


def test_T_is_clipped_and_zero_entropy_gives_t_max_not_nan():
    ctl = controller(target_steps=1, t_min=0.7, t_max=1.2)
    ctl.update(batch([2.0, 2.0]), ADV)
    ctl.update(batch([0.0, 0.0]), ADV)
    assert ctl.current == 1.2 and temperature_now(ctl) == pytest.approx(1.2)
    ctl.update(batch([1e6, 1e6]), ADV)  # factor goes negative -> floor
    assert ctl.current == 0.7 and temperature_now(ctl) == pytest.approx(0.7)


def test_target_decays_from_decay_start():
    ctl = controller(target_steps=2, decay_start=3, decay_rate=0.5)
    ctl.update(batch([2.0, 2.0]), ADV)
    ctl.update(batch([2.0, 2.0]), ADV)  # H* = 2 after step 1
    t = 1.0
    targets = []
    for _step in (2, 3, 4):
        metrics = ctl.update(batch([1.5, 1.5]), ADV)
        targets.append(metrics["method/entropy_target"])
        t = e3_step(t, targets[-1], 1.5, 0.5, 1.5)
        assert temperature_now(ctl) == pytest.approx(t, rel=1e-6)
    assert targets == pytest.approx([2.0, 1.0, 0.5])


@pytest.mark.parametrize("source, expected", [("sampled", 2.0), ("unit", 0.5)])
def test_entropy_source_selects_the_measured_entropy(source, expected):
    ctl = controller(entropy_source=source)
    rollout = make_rollout(
        entropy=[[0.5, 0.5, 7.0]],
        entropy_at_T=[[2.0, 2.0, 7.0]],
        mask=[[1.0, 1.0, 0.0]],
    )
    assert ctl.update(rollout, ADV)["method/entropy_measured"] == pytest.approx(expected)


@pytest.mark.parametrize("split_after", [1, 3])
def test_checkpoint_round_trip(split_after):
    sequence = [[1.0, 3.0], [2.0, 2.0], [1.2, 1.4], [3.0, 2.6], [0.4, 0.6], [2.2, 2.2]]
    old = controller(target_steps=2, decay_start=4, decay_rate=0.9)
    for values in sequence[:split_after]:
        old.update(batch(values), ADV)
    new = EntropyTargetController(
        t_init=1.0, t_min=0.5, t_max=1.5, target_steps=2, decay_start=4, decay_rate=0.9
    )  # fresh: no setup
    new.load_state_dict(old.state_dict())
    assert temperature_now(new) == temperature_now(old)
    for values in sequence[split_after:]:
        assert new.begin_step(9) == old.begin_step(9)
        assert new.update(batch(values), ADV) == old.update(batch(values), ADV)
        assert temperature_now(new) == temperature_now(old)
    assert temperature_now(old) != 1.0


def test_update_before_setup_is_an_error_once_T_moves():
    ctl = EntropyTargetController(target_steps=1)
    ctl.update(batch([1.0, 1.0]), ADV)
    with pytest.raises(RuntimeError, match="setup"):
        ctl.update(batch([1.0, 1.0]), ADV)


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"t_min": 1.5, "t_max": 1.5}, "t_min"),
        ({"t_min": 2.0, "t_max": 1.0, "t_init": 1.5}, "t_min"),
        ({"t_min": 0.0}, "t_min"),
        ({"t_max": -1.0}, "t_max"),
        ({"t_init": 0.0}, "t_init"),
        ({"t_init": 1.6}, "t_init"),
        ({"target_steps": 0}, "target_steps"),
        ({"target_steps": -3}, "target_steps"),
        ({"entropy_source": "logits"}, "entropy_source"),
        ({"decay_start": -1}, "decay_start"),
        ({"decay_rate": 0.0}, "decay_rate"),
        ({"decay_rate": 1.5}, "decay_rate"),
    ],
)
def test_invalid_settings_name_the_key(kwargs, key):
    with pytest.raises(ConfigError) as err:
        EntropyTargetController(**kwargs)
    assert err.value.key == f"entropy_target.{key}"


def test_flags():
    ctl = EntropyTargetController()
    assert ctl.name == "heuristic" and ctl.rule == "entropy_target" and not ctl.per_token
    assert ctl.initial_temperature(2, torch.device("cpu")).tolist() == [1.0, 1.0]
