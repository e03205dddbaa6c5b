# ruff: noqa: E501  (the table keeps one bad setting and its full expected line per row)
"""Every invalid setting fails before any heavy work with one line naming key, value and what is
allowed: the same path `tempo-train` takes (override check, then every group's validation)."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir

from tempo.config_error import ConfigError
from tempo.hydra_cli import check_overrides
from tempo.train import CONFIG_DIR, parts_from_config


def cli_error(overrides: list[str], capsys) -> str | None:
    """The one line tempo-train prints for `overrides`, or None when they are valid."""
    try:
        check_overrides(CONFIG_DIR, "train", "tempo-train", overrides)
    except SystemExit as stop:
        assert stop.code == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1, lines
        return lines[0]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    try:
        parts_from_config(cfg)
    except ConfigError as err:
        assert "\n" not in str(err)
        return f"tempo-train: invalid config: {err}"
    return None


BAD = [
    # wrong type
    ("trainer.max_steps=abc", "invalid config: trainer.max_steps='abc' is invalid: allowed an integer >= 1"),
    ("method.temperature=hot", "invalid config: method.temperature='hot' is invalid: allowed a finite number > 0"),
    ("rollout.max_new_tokens=1.5", "invalid config: rollout.max_new_tokens=1.5 is invalid: allowed an integer >= 1"),
    # out of range
    ("method.temperature=-1", "invalid config: method.temperature=-1 is invalid: allowed a finite number > 0"),
    ("algorithm.group_size=1", "invalid config: algorithm.group_size=1 is invalid: allowed int >= 2"),
    ("eval.ks=[1,16]", "invalid config: eval.ks=[1, 16] is invalid: allowed a non-empty list of integers in [1, 8]"),
    ("eval.num_problems=500", "invalid config: eval.num_problems=500 is invalid: allowed at most the 200 held-out problems of task 'arithmetic'"),
    ("rollout.decoder=vllm", "invalid config: rollout.decoder='vllm' is invalid: allowed one of auto, fast, hf"),
    ("rollout.compact_below=1.5", "invalid config: rollout.compact_below=1.5 is invalid: allowed a fraction in [0, 1]"),
    ("reward.timeout=0", "invalid config: reward.timeout=0 is invalid: allowed a number of seconds > 0"),
    ("method=meta_policy method.top_p=0", "invalid config: method.top_p=0 is invalid"),
    ("method=introspective method.t_min=2.0", "invalid config: method.t_min=2.0 is invalid"),
    ("method=heuristic method.rule=edt method.edt.t0=-1", "invalid config: method.edt.t0=-1 is invalid"),
    ("method=heuristic method.edt.theta=0.2", "invalid config: method.edt.theta=0.2 is invalid: allowed its default 0.5 only: the selected rule is linear"),
    ("eval.temperature=inf", "invalid config: eval.temperature=inf is invalid: allowed a finite number > 0"),
    ("seed=abc", "invalid config: seed='abc' is invalid: allowed an integer in [0, 4294967295]"),
    ("seed=-1", "invalid config: seed=-1 is invalid: allowed an integer in [0, 4294967295]"),
    ("model.attn_implementation=flash", "invalid config: model.attn_implementation='flash' is invalid: allowed one of eager, sdpa, "),
    ("trainer.precision=fp7", "invalid config: trainer.precision='fp7' is invalid: allowed one of 32-true"),
    ("logger.mode=loud", "invalid config: logger.mode='loud' is invalid: allowed one of auto, online, offline, disabled"),
    # unknown option, rule or key
    ("method=foo", "invalid override: method=foo is invalid: allowed one of fixed, heuristic, introspective, meta_policy"),
    ("algorithm=ppo", "invalid override: algorithm=ppo is invalid: allowed one of dapo, dr_grpo, grpo"),
    ("method=heuristic method.rule=magic", "invalid config: method.rule='magic' is invalid: allowed one of"),
    ("trainer.foo=1", "invalid override: trainer.foo does not exist: allowed the keys already in trainer (add a new one with +trainer.foo=...)"),
    ("+method.foo=1", "invalid config: method.foo=1 is invalid: allowed keys of tempo.temperature.fixed.FixedTemperature"),
    ("seed=[1", "invalid override: 'seed=[1' is not an override key=value"),
    # missing model path or value
    ("model=hub model.name_or_path=/no/such/dir", "invalid config: model.name_or_path='/no/such/dir' is invalid: allowed a directory holding config.json"),
    ("model=hub", "invalid config: model.name_or_path='???' is invalid: allowed a value: it has no default, set it"),
]  # fmt: skip


@pytest.mark.parametrize(("overrides", "expected"), BAD, ids=[b[0] for b in BAD])
def test_each_bad_setting_fails_with_one_line_naming_it(overrides, expected, capsys):
    line = cli_error(overrides.split(), capsys)
    assert line is not None and line.startswith("tempo-train: " + expected), line


def test_the_default_config_is_valid(capsys):
    assert cli_error([], capsys) is None
