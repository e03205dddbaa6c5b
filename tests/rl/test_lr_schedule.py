"""The RL learning-rate schedule: values at chosen steps, logging, and resume."""

from __future__ import annotations

import copy
import math

import lightning as L
import pytest

from tempo.config_error import ConfigError
from tempo.data.arithmetic import ArithmeticTask
from tempo.data.datamodule import PromptDataModule
from tempo.logging.jsonl import JsonlLogger
from tempo.rl.grpo import GRPOConfig
from tempo.rl.lr_schedule import lr_factor
from tempo.rl.module import RLVRModule
from tempo.rl.settings import EvalConfig, RolloutConfig
from tempo.temperature.fixed import FixedTemperature
from tests.rl.test_module import LengthParityScorer


def test_warmup_then_cosine_to_the_minimum_ratio():
    # 100 steps, 10 of warm-up, cosine to 0.1 (TAMPO's paper setting).
    f = [lr_factor(s, 100, "cosine", 10, 0.1) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[4] == pytest.approx(0.5) and f[9] == 1.0
    assert f[10] == pytest.approx(1.0)
    # Half-way through the decay (step 55): 0.1 + 0.9 * (1 + cos(pi/2)) / 2 = 0.55.
    assert f[55] == pytest.approx(0.55)
    assert f[99] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 89 / 90)))
    assert all(a >= b for a, b in zip(f[10:], f[11:], strict=False))  # decays monotonically


def test_linear_and_constant():
    assert [lr_factor(s, 5, "linear") for s in range(5)] == pytest.approx([1, 0.8, 0.6, 0.4, 0.2])
    assert lr_factor(3, 5, "linear", 0, 0.5) == pytest.approx(1 - 0.5 * 3 / 5)
    assert [lr_factor(s, 5, "constant", 2) for s in range(4)] == [0.5, 1.0, 1.0, 1.0]


@pytest.mark.parametrize(
    ("key", "value"),
    [("lr_schedule", "step"), ("warmup_steps", -1), ("min_lr_ratio", 1.5), ("warmup_steps", 1.5)],
)
def test_bad_schedule_settings(key, value):
    with pytest.raises(ConfigError) as err:
        GRPOConfig(**{key: value})
    assert err.value.key == key


def _trainer(tmp_path, steps, log):
    return L.Trainer(
        max_steps=steps,
        max_epochs=-1,
        logger=[log],
        accelerator="cpu",
        default_root_dir=tmp_path,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )


def _module(model, tokenizer, total):
    grpo = GRPOConfig(
        group_size=4,
        lr=1e-3,
        micro_batch_size=8,
        lr_schedule="cosine",
        warmup_steps=2,
        min_lr_ratio=0.1,
    )
    return RLVRModule(
        model,
        tokenizer,
        FixedTemperature(1.0),
        grpo,
        RolloutConfig(2, 8),
        EvalConfig(every=0, num_problems=4, samples=2, ks=(1, 2)),
        LengthParityScorer(),
        "arithmetic",
        total_steps=total,
    )


def test_the_policy_lr_follows_the_schedule_is_logged_and_resumes(
    tiny_model, char_tokenizer, tmp_path
):
    total = 6
    expected = [1e-3 * lr_factor(s, total, "cosine", 2, 0.1) for s in range(total)]
    task = ArithmeticTask(num_test=4)
    module = _module(copy.deepcopy(tiny_model).train(), char_tokenizer, total)
    log = JsonlLogger(tmp_path / "a")
    trainer = _trainer(tmp_path, total, log)
    trainer.fit(module, datamodule=PromptDataModule(task, 2, total, 4, 4))
    log.close()
    assert [v for _, v in log.history["train/lr"]] == pytest.approx(expected)

    # Stop after 3 steps, save, resume in a fresh module: the schedule goes on from step 3.
    first = _module(copy.deepcopy(tiny_model).train(), char_tokenizer, total)
    log = JsonlLogger(tmp_path / "b")
    part = _trainer(tmp_path, 3, log)
    part.fit(first, datamodule=PromptDataModule(task, 2, total, 4, 4))
    part.save_checkpoint(tmp_path / "mid.ckpt")
    log.close()
    again = _module(copy.deepcopy(tiny_model).train(), char_tokenizer, total)
    log = JsonlLogger(tmp_path / "c")
    rest = _trainer(tmp_path, total, log)
    rest.fit(
        again, datamodule=PromptDataModule(task, 2, total, 4, 4), ckpt_path=tmp_path / "mid.ckpt"
    )
    log.close()
    assert [v for _, v in log.history["train/lr"]] == pytest.approx(expected[3:])
