"""Reward functions as config: weighted sums, arguments, failures, config errors.

The user functions live in ``tests/rewards/reward_fns.py`` so the spawned workers can import
them by path. Most scorers here use ``exact_check`` (string equality) as the task's check, so
their workers start without Math-Verify; expected rewards are recomputed in each test.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tempo.config_error import ConfigError
from tempo.hydra_cli import build
from tempo.rewards import RewardFunction, RewardScorer, ScoredBatch
from tempo.rewards.boxed import extract_boxed
from tempo.rewards.math_rewards import format_reward
from tempo.rl.settings import RewardConfig
from tests.rewards import reward_fns

FNS = "tests.rewards.reward_fns"
ACCURACY = {"_target_": "tempo.rewards.builtin.accuracy", "weight": 1.0}
CONF = Path(__file__).resolve().parents[2] / "conf"

COMPLETIONS = ["so \\boxed{7}", "\\boxed{8}", "no answer", "\\boxed{12} or \\boxed{13"]
GOLDS = ["7", "7", "7", "12"]


def entry(fn: str, weight: float = 1.0, **extra) -> dict:
    return {"_target_": f"{FNS}.{fn}", "weight": weight, **extra}


def expected_partial(completions: list[str], golds: list[str]) -> list[float]:
    """`partial_credit` recomputed here: 1 for the gold, 0.25 for another answer, 0 for none."""
    out = []
    for completion, gold in zip(completions, golds, strict=True):
        answer = extract_boxed(completion)
        out.append(0.0 if answer is None else 1.0 if answer == gold else 0.25)
    return out


@pytest.fixture(scope="module")
def failing() -> Iterator[RewardScorer]:
    """One scorer holding every kind of misbehaving function (two workers share the calls)."""
    functions = [
        ACCURACY,
        entry("slow", 1.0, timeout=1.0),
        entry("crash"),
        entry("wrong_length"),
        entry("nan_reward"),
        entry("not_numbers"),
        entry("die"),
        entry("partial_credit", 0.5),
    ]
    scorer = RewardScorer(timeout=5.0, workers=2, functions=functions, check=reward_fns.exact_check)
    yield scorer
    scorer.close()


def test_partial_credit_changes_rewards_by_exactly_its_weighted_amount() -> None:
    with_partial = [ACCURACY, entry("partial_credit", 0.5), entry("boxed_format", 0.0)]
    with_partial[2]["_target_"] = "tempo.rewards.builtin.boxed_format"
    scorer = RewardScorer(functions=with_partial, check=reward_fns.exact_check)
    try:
        out = scorer(COMPLETIONS, GOLDS)
    finally:
        scorer.close()
    correct = [extract_boxed(c) == g for c, g in zip(COMPLETIONS, GOLDS, strict=True)]
    partial = expected_partial(COMPLETIONS, GOLDS)
    assert partial == [1.0, 0.25, 0.0, 0.0]  # the last box is unclosed: no answer
    assert out.correct == correct == [True, False, False, False]
    assert out.components == {
        "accuracy": [float(c) for c in correct],
        "partial_credit": partial,
        "boxed_format": [format_reward(c) for c in COMPLETIONS],
    }
    assert out.rewards == [float(c) + 0.5 * p for c, p in zip(correct, partial, strict=True)]
    assert out.rewards == [1.5, 0.125, 0.0, 0.0]
    assert scorer.names == ["accuracy", "partial_credit", "boxed_format"]
    means = out.component_means()
    assert means["reward/partial_credit"] == pytest.approx(sum(partial) / 4)
    assert means["reward/accuracy"] == 0.25 and means["reward/boxed_format"] == 0.5
    stats = scorer.stats()
    assert (
        stats["reward/partial_credit_errors"] == 0 and stats["reward/partial_credit_timeouts"] == 0
    )


def test_columns_prompts_and_extra_keys_reach_the_functions() -> None:
    prompts = ["P=", "Prompt two=", "", "xyz"]
    columns = [
        {"difficulty": 3, "source": "a"},
        {"difficulty": 1, "source": "b"},
        {"difficulty": 0, "source": "a"},
        {"difficulty": 7},  # a row without a column gets None for it
    ]
    functions = [
        ACCURACY,
        entry("column_reward", 0.25, scale=2.0),
        entry("argument_names", 2.0, bonus=0.5, name="probe"),
    ]
    scorer = RewardScorer(functions=functions, check=reward_fns.exact_check)
    try:
        out = scorer(COMPLETIONS, GOLDS, prompts=prompts, columns=columns)
        without_columns = scorer(COMPLETIONS, GOLDS, prompts=prompts)
    finally:
        scorer.close()
    column = [2.0 * row["difficulty"] + len(p) for row, p in zip(columns, prompts, strict=True)]
    assert column == [8.0, 13.0, 0.0, 17.0]
    assert out.components["column_reward"] == column
    assert out.components["probe"] == [1.5] * 4  # exactly the expected argument names arrived
    accuracy = [1.0, 0.0, 0.0, 0.0]
    assert out.rewards == [a + 0.25 * c + 2.0 * 1.5 for a, c in zip(accuracy, column, strict=True)]
    # Without columns, column_reward misses its `difficulty` argument: a TypeError, zeros.
    assert without_columns.components["column_reward"] == [0.0] * 4
    assert without_columns.components["probe"] == [0.5] * 4  # 0 (names differ) + bonus
    assert scorer.stats()["reward/column_reward_errors"] == 1


def test_failing_functions_score_zero_are_counted_and_warned_once(
    failing: RewardScorer, caplog: pytest.LogCaptureFixture
) -> None:
    bad = ["slow", "crash", "wrong_length", "nan_reward", "not_numbers", "die"]
    caplog.set_level(logging.WARNING, logger="tempo.rewards.scorer")
    start = time.perf_counter()
    out = failing(COMPLETIONS, GOLDS)
    elapsed = time.perf_counter() - start
    assert elapsed < 1.0 + 10.0  # the 60 s sleeper was cut off at its 1 s timeout
    for name in bad:
        assert out.components[name] == [0.0] * 4, name
    partial = expected_partial(COMPLETIONS, GOLDS)
    assert out.components["partial_credit"] == partial  # the pool kept working around them
    assert out.rewards == [float(c) + 0.5 * p for c, p in zip(out.correct, partial, strict=True)]
    stats = failing.stats()
    assert stats["reward/slow_timeouts"] == 1 and stats["reward/slow_errors"] == 0
    for name in ("crash", "wrong_length", "nan_reward", "not_numbers", "die"):
        assert stats[f"reward/{name}_errors"] == 1 and stats[f"reward/{name}_timeouts"] == 0
    assert stats["reward/verifier_errors"] == 0 and stats["reward/verifier_timeouts"] == 0
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == len(bad) and all("\n" not in line for line in lines)
    for name, words in {
        "slow": "overran its 1 s timeout",
        "crash": "ValueError: boom",
        "wrong_length": "WrongLength: returned 5 values for 4 completions",
        "nan_reward": "NotFinite",
        "not_numbers": "NotANumber: value [0] is str",
        "die": "killed its worker process",
    }.items():
        assert any(f"'{name}'" in line and words in line for line in lines), (name, lines)

    # Again: same zeros, counters doubled, nothing logged a second time.
    caplog.clear()
    again = failing(COMPLETIONS, GOLDS)
    assert again.rewards == out.rewards and again.correct == out.correct
    stats = failing.stats()
    assert stats["reward/slow_timeouts"] == 2 and stats["reward/crash_errors"] == 2
    assert stats["reward/die_errors"] == 2
    assert caplog.records == []


def test_check_runs_no_reward_function(failing: RewardScorer) -> None:
    before = failing.stats()
    checked = failing.check(COMPLETIONS, GOLDS)
    assert checked.correct == [True, False, False, False]
    assert checked.answers == [extract_boxed(c) for c in COMPLETIONS]
    assert checked.rewards == [1.0, 0.0, 0.0, 0.0] and checked.components == {}
    after = failing.stats()
    assert after["reward/verifier_calls"] == before["reward/verifier_calls"] + 2  # 7 and 8
    user = {k: v for k, v in after.items() if not k.startswith("reward/verifier_")}
    assert user == {k: v for k, v in before.items() if not k.startswith("reward/verifier_")}


def test_memory_blowup_scores_zero_and_the_pool_recovers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    functions = [ACCURACY, entry("allocate", 1.0, mib=4096), entry("partial_credit", 1.0)]
    scorer = RewardScorer(
        functions=functions, check=reward_fns.exact_check, memory_limit_mb=256, timeout=30.0
    )
    caplog.set_level(logging.WARNING, logger="tempo.rewards.scorer")
    try:
        out = scorer(COMPLETIONS, GOLDS)
        assert out.components["allocate"] == [0.0] * 4
        assert out.components["partial_credit"] == expected_partial(COMPLETIONS, GOLDS)
        stats = scorer.stats()
        assert stats["reward/allocate_errors"] == 1 and stats["reward/allocate_timeouts"] == 0
        assert any("memory limit" in r.getMessage() for r in caplog.records)
        # The worker that hit its cap was replaced; the next call still scores.
        again = scorer(["\\boxed{7}"], ["7"])
        assert again.rewards == [1.0 + 0.0 + 1.0]
        assert scorer.stats()["reward/allocate_errors"] == 2
    finally:
        scorer.close()


def test_numpy_results_are_accepted() -> None:
    scorer = RewardScorer(functions=[entry("numpy_reward", 2.0)], check=reward_fns.exact_check)
    try:
        out = scorer(COMPLETIONS, GOLDS)
    finally:
        scorer.close()
    assert out.components == {"numpy_reward": [0.0, 0.25, 0.5, 0.75]}
    assert out.rewards == [0.0, 0.5, 1.0, 1.5]
    assert out.correct == [True, False, False, False]  # correctness without an accuracy entry


def test_math_verify_extraction_reaches_answers_and_user_functions() -> None:
    completions = ["The answer is $\\frac{1}{2}$.", "x = 3", "\\boxed{4}", "nothing here"]
    golds = ["0.5", "4", "4", "1"]
    scorer = RewardScorer(
        functions=[ACCURACY, entry("partial_credit", 0.5)], extraction="math_verify"
    )
    try:
        out = scorer(completions, golds)
        boxed = RewardScorer(functions=[ACCURACY]).check(completions, golds)
    finally:
        scorer.close()
    assert out.correct == [True, False, True, False]
    assert out.answers == ["\\frac{1}{2}", "3", "4", None]
    # partial_credit compares answers as strings: "\frac{1}{2}" != "0.5" gets 0.25
    assert out.components["partial_credit"] == [0.25, 0.25, 1.0, 0.0]
    assert out.rewards == [1.125, 0.125, 1.5, 0.0]
    assert boxed.correct == [False, False, True, False]
    assert boxed.answers == [None, None, "4", None]


def test_a_task_check_with_math_verify_extraction() -> None:
    """Math-Verify extracts the answer text, then the task's own check judges it."""
    scorer = RewardScorer(check=reward_fns.exact_check, extraction="math_verify")
    try:
        out = scorer(["so x = 12", "we get 0.5", "$\\frac{1}{2}$"], ["12", "1/2", "\\frac{1}{2}"])
    finally:
        scorer.close()
    assert out.answers == ["12", "0.5", "\\frac{1}{2}"]
    assert out.correct == [True, False, True]  # string equality, not equivalence


# --------------------------------------------------------------------------- config errors

BAD_ENTRIES = [
    (
        [ACCURACY, {"_target_": "x.y", "weight": 1}],
        "reward.functions[1]._target_='x.y' is invalid: allowed an importable function",
    ),
    (
        [{"_target_": f"{FNS}.NotAFunction"}],
        f"reward.functions[0]._target_='{FNS}.NotAFunction' is invalid: allowed an importable",
    ),
    (
        [{"_target_": f"{FNS}.no_such_function"}],
        f"reward.functions[0]._target_='{FNS}.no_such_function' is invalid",
    ),
    (
        [{"_target_": f"{FNS}.no_completions"}],
        "reward.functions[0]._target_='tests.rewards.reward_fns.no_completions' is invalid: "
        "allowed a reward function taking completions=",
    ),
    ([{**ACCURACY, "weight": "heavy"}], "reward.functions[0].weight='heavy' is invalid: allowed"),
    ([{**ACCURACY, "weight": math.nan}], "reward.functions[0].weight=nan is invalid: allowed a"),
    ([{**ACCURACY, "weight": True}], "reward.functions[0].weight=True is invalid"),
    (
        [ACCURACY, ACCURACY],
        "reward.functions[1].name='accuracy' is invalid: allowed a name not used by functions[0]",
    ),
    (
        [entry("column_reward", scal=2.0)],
        "reward.functions[0].scal=2.0 is invalid: allowed _target_, weight, name, timeout or an "
        "argument of tests.rewards.reward_fns.column_reward: difficulty, scale",
    ),
    ([{**ACCURACY, "strict": True}], "reward.functions[0].strict=True is invalid"),
    ([entry("crash", completions=1)], "reward.functions[0].completions=1 is invalid"),
    ([{**ACCURACY, "timeout": 3}], "reward.functions[0].timeout=3 is invalid: allowed no timeout"),
    ([entry("crash", timeout=0)], "reward.functions[0].timeout=0 is invalid"),
    ([entry("crash", name="a/b")], "reward.functions[0].name='a/b' is invalid"),
    ([entry("crash", name="verifier_errors")], "reward.functions[0].name='verifier_errors'"),
    (
        [entry("crash", name="x"), entry("slow", name="x_timeouts")],
        "reward.functions[1].name='x_timeouts' is invalid",
    ),
    (["tempo.rewards.builtin.accuracy"], "reward.functions[0]='tempo.rewards.builtin.accuracy'"),
    ([{"weight": 1.0}], "reward.functions[0]._target_=None is invalid"),
    ([], "reward.functions=[] is invalid: allowed a non-empty list"),
]


@pytest.mark.parametrize(("functions", "expected"), BAD_ENTRIES)
def test_bad_functions_give_one_line_config_errors(functions: list, expected: str) -> None:
    node = OmegaConf.load(CONF / "train.yaml").reward
    node.functions = functions
    with pytest.raises(ConfigError) as err:
        build("reward", node)
    message = str(err.value)
    assert message.startswith(expected), message
    assert "\n" not in message


def test_bad_extraction_and_unknown_reward_keys() -> None:
    node = OmegaConf.load(CONF / "eval.yaml").reward
    node.extraction = "regex"
    with pytest.raises(ConfigError, match=r"^reward.extraction='regex' is invalid: allowed one of"):
        build("reward", node)
    with pytest.raises(ConfigError, match="extraction"):
        RewardConfig(extraction="last_number")


def test_the_yaml_builds_plain_entries_that_hydra_did_not_call() -> None:
    """`_recursive_: false`: Hydra hands the entries over as dicts (calling `crash` would raise)."""
    for name in ("train.yaml", "eval.yaml"):
        node = OmegaConf.load(CONF / name).reward
        built = build("reward", node)
        assert built.functions == [ACCURACY] and built.extraction == "boxed"
        node.functions = [ACCURACY, entry("crash", 0.5, name="boom")]
        built = build("reward", node)
        assert built.functions[1] == {"_target_": f"{FNS}.crash", "weight": 0.5, "name": "boom"}
        assert [f.name for f in built.resolved] == ["accuracy", "boom"]
        assert built.resolved[1].fn is reward_fns.crash
    assert RewardConfig().functions == [ACCURACY]


def test_a_command_line_override_of_the_list() -> None:
    from hydra import compose, initialize_config_dir

    override = f"reward.functions=[{{_target_: {FNS}.partial_credit, weight: 0.5, name: pc}}]"
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=[override, "reward.extraction=math_verify"])
    built = build("reward", cfg.reward)
    (function,) = built.resolved
    assert (function.name, function.weight, function.fn) == ("pc", 0.5, reward_fns.partial_credit)
    assert built.extraction == "math_verify"


def test_reward_function_python_api() -> None:
    function = RewardFunction(f"{FNS}:column_reward", 0.5, kwargs={"scale": 1})
    assert function.name == "column_reward" and function.fn is reward_fns.column_reward
    builtin = RewardFunction("tempo.rewards.builtin:boxed_format")
    assert builtin.builtin == "boxed_format" and builtin.weight == 1.0
    with pytest.raises(ConfigError, match=r"^_target_='tests.rewards.reward_fns:nope'"):
        RewardFunction(f"{FNS}:nope")
    assert isinstance(ScoredBatch([1.0], [True], ["1"]).components, dict)
