import math

import pytest
import torch

from tempo.config_error import ConfigError
from tempo.temperature.fixed import FixedTemperature


@pytest.mark.parametrize("bad", [-1, 0, 0.0, math.nan, math.inf, "abc", True, None])
def test_rejects_non_positive_or_non_numeric(bad):
    with pytest.raises(ConfigError) as err:
        FixedTemperature(bad)
    assert err.value.key == "temperature"
    assert "> 0" in str(err.value)


def test_returns_the_constant_for_every_row():
    ctl = FixedTemperature(0.7)
    prev = ctl.initial_temperature(3, torch.device("cpu"))
    decision = ctl.temperature(torch.zeros(3, 5), torch.zeros(3, 4), prev, 0)
    assert torch.equal(decision.temperature, torch.full((3,), 0.7))
    assert decision.records == {}
    assert not ctl.has_loss() and not ctl.per_token
