"""Several held-out tasks evaluated during training, each under its own eval/<task>/ keys."""

from __future__ import annotations

import copy

import lightning as L
import pytest

from tempo.data.arithmetic import ArithmeticTask
from tempo.data.countdown import CountdownTask
from tempo.data.datamodule import PromptDataModule
from tempo.logging.jsonl import JsonlLogger
from tempo.rl.grpo import GRPOConfig
from tempo.rl.module import RLVRModule
from tempo.rl.settings import EvalConfig, RolloutConfig
from tempo.temperature.fixed import FixedTemperature
from tests.rl.test_module import LengthParityScorer


class Always:
    """A scorer that marks every completion correct (or none), to tell the tasks apart."""

    def __init__(self, value: bool) -> None:
        self.value, self.golds = value, []

    def check(self, completions, golds):
        self.golds += list(golds)
        return LengthParityScorer(constant=float(self.value)).check(completions, golds)

    __call__ = check


def test_each_eval_task_is_scored_by_its_scorer_and_logged_under_its_name(
    tiny_model, char_tokenizer, tmp_path
):
    main, extra = ArithmeticTask(num_test=4), CountdownTask(num_test=3)
    right, wrong = Always(True), Always(False)
    module = RLVRModule(
        copy.deepcopy(tiny_model).train(),
        char_tokenizer,
        FixedTemperature(1.0),
        GRPOConfig(group_size=4, micro_batch_size=8),
        RolloutConfig(2, 8),
        EvalConfig(every=0, num_problems=4, samples=2, ks=(1, 2), tasks=("countdown",)),
        right,
        "arithmetic",
        eval_tasks=[("countdown", wrong)],
    )
    data = PromptDataModule(main, 2, 1, 4, 2, eval_tasks=[extra])
    log = JsonlLogger(tmp_path)
    trainer = L.Trainer(
        max_steps=1,
        logger=[log],
        accelerator="cpu",
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.validate(module, datamodule=data, verbose=False)
    log.close()
    assert log.latest["eval/arithmetic/accuracy"] == 1.0
    assert log.latest["eval/countdown/accuracy"] == 0.0
    assert (
        log.latest["eval/countdown/pass@2"] == 0.0 and log.latest["eval/arithmetic/pass@2"] == 1.0
    )
    # Batches of 2 problems: their greedy completions, then 2 samples each; all 3 countdown
    # problems are used (fewer than eval.num_problems = 4).
    golds = [p.answer for p in main.test_problems()]
    assert right.golds == [
        g for i in (0, 2) for g in golds[i : i + 2] + [x for x in golds[i : i + 2] for _ in (0, 1)]
    ]
    assert len(wrong.golds) == 3 * 3
    assert set(wrong.golds) == {p.answer for p in extra.test_problems()}


def test_eval_task_settings_are_checked():
    from tempo.config_error import ConfigError

    with pytest.raises(ConfigError) as err:
        EvalConfig(tasks=("math500", "math500"))
    assert err.value.key == "tasks"
    with pytest.raises(ConfigError) as err:
        EvalConfig(tasks=("math500",), task_overrides={"aime24": {"num_test": 3}})
    assert err.value.key == "task_overrides.aime24"
