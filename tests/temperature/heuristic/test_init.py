import re
from pathlib import Path

import hydra
import pytest
import torch
from omegaconf import OmegaConf

from tempo.config_error import ConfigError
from tempo.temperature.base import TemperatureController
from tempo.temperature.heuristic import (
    RULES,
    CosineSchedule,
    EntropyDynamicTemperature,
    EntropyTargetController,
    ExploratoryAnnealedDecoding,
    ExponentialSchedule,
    LinearSchedule,
    TwoLevelTemperature,
    build_heuristic,
    knobs,
)

CONF = Path(__file__).resolve().parents[3] / "conf"
YAML = CONF / "method" / "heuristic.yaml"
EXPECTED = {
    "linear": (LinearSchedule, False),
    "cosine": (CosineSchedule, False),
    "exponential": (ExponentialSchedule, False),
    "entropy_target": (EntropyTargetController, False),
    "edt": (EntropyDynamicTemperature, True),
    "ead": (ExploratoryAnnealedDecoding, True),
    "two_level": (TwoLevelTemperature, True),
}


def test_registry_holds_every_rule_with_its_flags():
    assert set(RULES) == set(EXPECTED)
    for rule, (cls, per_token) in EXPECTED.items():
        assert RULES[rule] is cls
        assert issubclass(cls, TemperatureController)
        ctl = cls()
        assert (ctl.name, ctl.rule, ctl.per_token) == ("heuristic", rule, per_token)


def test_build_reads_the_chosen_block_and_accepts_other_blocks_at_their_defaults():
    ctl = build_heuristic(
        rule="edt", edt={"theta": 0.2, "t0": 1.1}, linear={"t_start": 0.9}, ead=None
    )
    assert isinstance(ctl, EntropyDynamicTemperature)
    assert (ctl.theta, ctl.t0, ctl.base) == (0.2, 1.1, 0.8)
    assert isinstance(build_heuristic(), LinearSchedule)  # default rule, default knobs
    cfg = OmegaConf.to_container(OmegaConf.load(YAML))  # every block as shipped
    blocks = {rule: cfg[rule] for rule in RULES}
    for rule in RULES:
        assert build_heuristic(rule=rule, **blocks).rule == rule


@pytest.mark.parametrize(
    ("rule", "block", "knob", "value"),
    [
        ("linear", "edt", "theta", 0.2),  # a valid value, but never read
        ("linear", "ead", "d0", 40.0),
        ("edt", "linear", "t_start", 0.5),
        ("ead", "two_level", "quantile", 1.5),  # invalid too: still refused as unread
        ("linear", "two_level", "threshold", True),  # True == 1.0, still a change
    ],
)
def test_a_changed_knob_of_a_rule_not_selected_is_refused(rule, block, knob, value):
    with pytest.raises(ConfigError) as err:
        build_heuristic(rule=rule, **{block: {knob: value}})
    assert err.value.key == f"{block}.{knob}" and err.value.value == value
    assert f"the selected rule is {rule}" in err.value.allowed
    assert f"read only with rule={block}" in err.value.allowed


def test_an_unknown_knob_of_a_rule_not_selected_is_refused():
    with pytest.raises(ConfigError) as err:
        build_heuristic(rule="linear", ead={"tmax": 2})
    assert err.value.key == "ead.tmax" and "t_max" in err.value.allowed


@pytest.mark.parametrize("bad", ["sigmoid", "EDT", "", None, 3])
def test_unknown_rule(bad):
    with pytest.raises(ConfigError) as err:
        build_heuristic(rule=bad)
    assert err.value.key == "rule"
    assert "linear, cosine, exponential, entropy_target, edt, ead, two_level" in str(err.value)


def test_unknown_knob_is_named_with_its_rule():
    with pytest.raises(ConfigError) as err:
        build_heuristic(rule="ead", ead={"c": 2, "tmax": 1.5})
    assert err.value.key == "ead.tmax"
    assert "t_max" in err.value.allowed


def test_invalid_knob_value_is_named_with_its_rule():
    with pytest.raises(ConfigError) as err:
        build_heuristic(rule="edt", edt={"theta": -1})
    assert err.value.key == "edt.theta"


def test_unknown_or_malformed_block():
    with pytest.raises(ConfigError) as err:
        build_heuristic(rule="linear", lineer={"t_start": 1.0})
    assert err.value.key == "lineer"
    with pytest.raises(ConfigError) as err:
        build_heuristic(rule="linear", edt=0.3)
    assert err.value.key == "edt"


def test_knobs_reflect_constructor_arguments():
    assert knobs(ExploratoryAnnealedDecoding) == ("c", "t_max", "t_min", "d0", "d_growth", "d_max")


# ------------------------------------------------------------------ the YAML config
def test_yaml_has_one_block_per_rule_with_every_knob():
    cfg = OmegaConf.load(YAML)
    assert cfg._target_ == "tempo.temperature.heuristic.build_heuristic"
    assert cfg.rule == "linear"
    blocks = set(cfg) - {"_target_", "rule"}
    assert blocks == set(RULES)
    for rule, cls in RULES.items():
        assert tuple(cfg[rule]) == knobs(cls), rule


def test_yaml_defaults_equal_the_constructor_defaults():
    import inspect

    cfg = OmegaConf.load(YAML)
    for rule, cls in RULES.items():
        params = inspect.signature(cls.__init__).parameters
        for knob, value in cfg[rule].items():
            assert params[knob].default == value, f"{rule}.{knob}"


def test_every_yaml_knob_is_commented():
    lines = YAML.read_text().splitlines()
    knob_lines = [line for line in lines if re.match(r"^\s+\w+:\s*\S", line)]
    assert len(knob_lines) == sum(len(knobs(cls)) for cls in RULES.values())
    for line in knob_lines:
        assert "#" in line, line
    assert "(ours)" in YAML.read_text()


@pytest.mark.parametrize("rule", list(EXPECTED))
def test_yaml_instantiates_every_rule(rule):
    cfg = OmegaConf.load(YAML)
    cfg.rule = rule
    ctl = hydra.utils.instantiate(cfg, _convert_="all")
    cls, _ = EXPECTED[rule]
    assert type(ctl) is cls and ctl.rule == rule
    ctl.setup(hidden_size=8, vocab_size=16, total_steps=20)
    ctl.begin_step(0)
    decision = ctl.temperature(torch.randn(3, 16), torch.zeros(3, 8), torch.ones(3), 0)
    assert decision.temperature.shape == (3,)
    assert torch.all(decision.temperature > 0)


def test_yaml_override_reaches_the_rule():
    cfg = OmegaConf.merge(
        OmegaConf.load(YAML), OmegaConf.from_dotlist(["rule=edt", "edt.theta=0.2"])
    )
    ctl = hydra.utils.instantiate(cfg, _convert_="all")
    assert isinstance(ctl, EntropyDynamicTemperature) and ctl.theta == 0.2


def test_bad_yaml_value_surfaces_as_a_config_error_in_the_exception_chain():
    """tempo.train.build walks the chain to print `method.<rule>.<knob>`."""
    cfg = OmegaConf.merge(
        OmegaConf.load(YAML), OmegaConf.from_dotlist(["rule=two_level", "two_level.quantile=1.5"])
    )
    with pytest.raises(Exception) as err:
        hydra.utils.instantiate(cfg, _convert_="all")
    cause: BaseException | None = err.value
    while cause is not None and not isinstance(cause, ConfigError):
        cause = cause.__cause__ or cause.__context__
    assert cause is not None and cause.key == "two_level.quantile"


def test_hydra_compose_selects_a_rule_from_the_command_line():
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=["method=heuristic", "method.rule=ead", "method.ead.c=3"])
    ctl = hydra.utils.instantiate(cfg.method, _convert_="all")
    assert isinstance(ctl, ExploratoryAnnealedDecoding) and ctl.c == 3


@pytest.mark.parametrize("rule", list(EXPECTED))
def test_temperature_stays_on_the_logits_device_without_reading_values(rule):
    """Meta tensors have no data: any .item()/host read inside temperature() would raise."""
    ctl = build_heuristic(rule=rule)
    ctl.setup(hidden_size=8, vocab_size=16, total_steps=20)
    ctl.begin_step(3)
    meta = torch.device("meta")
    decision = ctl.temperature(
        torch.empty(5, 16, device=meta),
        torch.empty(5, 8, device=meta),
        torch.empty(5, device=meta),
        12,
    )
    assert decision.temperature.device == meta and decision.temperature.shape == (5,)
