"""The warm-start cache is keyed by the SFT data a task yields, not by the task's name."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest

from tempo.data.arithmetic import ArithmeticTask
from tempo.data.countdown import CountdownTask
from tempo.models import warmstart
from tempo.models.tiny import tiny_config
from tempo.models.tokenizer import build_char_tokenizer
from tempo.models.warmstart import WarmStartConfig, cache_key, task_fingerprint, warm_started

RECIPE = WarmStartConfig(steps=1, batch_size=2, warmup_steps=0)  # trains in about a second
DEFAULT = WarmStartConfig()  # the default recipe: 256 problems fingerprinted


def _key(task, recipe: WarmStartConfig = DEFAULT) -> str:
    return cache_key({"model": 1}, {"a": 0}, task_fingerprint(task, recipe), asdict(recipe))


def test_tasks_that_differ_only_by_name_share_a_key() -> None:
    assert _key(ArithmeticTask(name="arithmetic")) == _key(ArithmeticTask(name="my_sums"))
    assert _key(CountdownTask(name="countdown")) == _key(CountdownTask(name="cd"))


@pytest.mark.parametrize(
    "change",
    [
        {"max_ops": 3},
        {"operand_max": 99},
        {"operations": ["+", "-"]},
        {"seed": 1},
        {"prompt_template": "Q: {question}="},
    ],
)
def test_a_change_in_the_problems_changes_the_key(change) -> None:
    assert _key(ArithmeticTask(**change)) != _key(ArithmeticTask())


def test_fingerprint_follows_the_data_the_recipe_draws() -> None:
    task = ArithmeticTask()
    # Another recipe seed trains on other problems; no SFT step uses no problem at all.
    assert task_fingerprint(task, WarmStartConfig(seed=1)) != task_fingerprint(task, DEFAULT)
    no_sft = WarmStartConfig(steps=0)
    assert task_fingerprint(task, no_sft) == task_fingerprint(CountdownTask(), no_sft)
    assert task_fingerprint(task, DEFAULT) != task_fingerprint(CountdownTask(), DEFAULT)
    # Only the problems the SFT sees count: 2 problems with no "*" are the same SFT data.
    plus_minus = ArithmeticTask(operations=["+", "-"])
    assert task_fingerprint(plus_minus, RECIPE) == task_fingerprint(task, RECIPE)


@pytest.fixture
def tiny():
    tokenizer = build_char_tokenizer()
    config = tiny_config(
        tokenizer, hidden_size=16, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=32
    )
    return config, tokenizer


def _count_builds(monkeypatch) -> list[Path]:
    built: list[Path] = []
    real = warmstart._train_and_save

    def counting(model_config, tokenizer, task, recipe, target, accelerator):
        built.append(target)
        real(model_config, tokenizer, task, recipe, target, accelerator)

    monkeypatch.setattr(warmstart, "_train_and_save", counting)
    return built


def test_renamed_task_reuses_the_cached_warm_start(tiny, tmp_path, monkeypatch) -> None:
    config, tokenizer = tiny
    built = _count_builds(monkeypatch)
    _, first = warm_started(config, tokenizer, ArithmeticTask(), RECIPE, tmp_path)
    _, renamed = warm_started(config, tokenizer, ArithmeticTask(name="renamed"), RECIPE, tmp_path)
    assert renamed == first and built == [first]
    meta = json.loads((first / "meta.json").read_text())
    assert meta["task_fingerprint"] == task_fingerprint(ArithmeticTask(name="x"), RECIPE)
    _, harder = warm_started(config, tokenizer, ArithmeticTask(max_ops=3), RECIPE, tmp_path)
    assert harder != first and built == [first, harder]


def test_an_entry_under_the_old_name_based_key_is_still_loaded(tiny, tmp_path, monkeypatch):
    config, tokenizer = tiny
    task, recipe = ArithmeticTask(name="old_name"), WarmStartConfig(steps=0)
    config_dict = config.to_dict()
    config_dict.pop("transformers_version", None)
    old_key = cache_key(config_dict, tokenizer.get_vocab(), repr(task), asdict(recipe), 1)
    legacy = tmp_path / f"warmstart-{old_key}"
    warmstart._train_and_save(config, tokenizer, task, recipe, legacy, "cpu")
    built = _count_builds(monkeypatch)
    model, path = warm_started(config, tokenizer, task, recipe, tmp_path)
    assert path == legacy and built == [] and model.config.hidden_size == 16
    # Another name has no legacy entry: it gets (and builds) the new-format key.
    _, fresh = warm_started(config, tokenizer, ArithmeticTask(name="new"), recipe, tmp_path)
    assert fresh != legacy and built == [fresh]
