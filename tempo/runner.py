"""Runs one training job from already-built parts: the library side of `tempo-train`.

The entry point instantiates the config groups (so every value is validated before any heavy
work) and hands them here; this module builds the model, the Lightning trainer, loggers and
callbacks, evaluates before and after RL, and writes `summary.json`.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar

from tempo.config_error import ConfigError
from tempo.data.datamodule import PromptDataModule
from tempo.logging.jsonl import JsonlLogger
from tempo.logging.wandb_setup import make_wandb_logger
from tempo.rewards.scorer import RewardScorer
from tempo.rl.grpo import GRPOConfig
from tempo.rl.module import RLVRModule
from tempo.rl.settings import (
    EvalConfig,
    LoggerConfig,
    RewardConfig,
    RolloutConfig,
    TrainerConfig,
)
from tempo.temperature.base import TemperatureController


@dataclass
class RunParts:
    """Everything a run is made of, each already validated."""

    task: Any
    method: TemperatureController
    algorithm: GRPOConfig
    model: Any  # TinyModel | PretrainedModel (has .build(task, accelerator))
    rollout: RolloutConfig
    evaluation: EvalConfig
    reward: RewardConfig
    trainer: TrainerConfig
    logger: LoggerConfig


def run_training(
    parts: RunParts,
    run_dir: str | os.PathLike,
    seed: int,
    run_name: str,
    experiment: str,
    config: dict[str, Any] | None = None,
    ckpt_path: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Warm-start/load the model, evaluate, train with GRPO, evaluate, write summary.json.

    `ckpt_path` resumes from a Lightning checkpoint of an earlier run (policy, optimisers,
    temperature controller, RNG states, step); the evaluation at start is then skipped.
    """
    started = time.time()
    run_dir = Path(run_dir)
    if ckpt_path is not None and not Path(ckpt_path).is_file():
        raise ConfigError("ckpt_path", str(ckpt_path), "an existing checkpoint file")
    run_dir.mkdir(parents=True, exist_ok=True)
    if parts.trainer.threads:
        torch.set_num_threads(parts.trainer.threads)
    L.seed_everything(seed, workers=True, verbose=False)

    model, tokenizer = parts.model.build(parts.task, parts.trainer.accelerator)
    model.train()
    parts.method.setup(model.config.hidden_size, model.config.vocab_size, parts.trainer.max_steps)
    scorer = RewardScorer(
        parts.reward.timeout,
        parts.reward.workers,
        parts.reward.format_weight,
        check=getattr(parts.task, "answer_check", None),  # a task's own verifier, if any
    )
    module = RLVRModule(
        model,
        tokenizer,
        parts.method,
        parts.algorithm,
        parts.rollout,
        parts.evaluation,
        scorer,
        task_name=parts.task.name,
        seed=seed,
    )
    data = PromptDataModule(
        parts.task,
        parts.rollout.prompts_per_step,
        parts.trainer.max_steps,
        parts.evaluation.num_problems,
        parts.evaluation.batch_size,
        seed=seed,
    )
    jsonl = JsonlLogger(run_dir)
    loggers: list = [jsonl]
    if parts.logger.backend == "wandb":
        loggers.append(
            make_wandb_logger(
                save_dir=str(run_dir),
                project=parts.logger.project,
                name=run_name,
                group=experiment,
                mode=parts.logger.mode,
                entity=parts.logger.entity,
                tags=[*parts.logger.tags, f"task:{parts.task.name}"],
                job_type=parts.method.name,
                config=config,
            )
        )
    trainer = _make_trainer(parts, run_dir, loggers)
    try:
        if parts.evaluation.at_start and ckpt_path is None:
            trainer.validate(module, datamodule=data, verbose=False)
        trainer.fit(module, datamodule=data, ckpt_path=ckpt_path)
        trainer.save_checkpoint(run_dir / "checkpoints" / "last.ckpt")  # the final state
        if module.last_eval_step != module.rl_step:
            trainer.validate(module, datamodule=data, verbose=False)
        status = "finished"
    finally:
        scorer.close()
    final_dir = run_dir / "final_model"
    model.save_pretrained(final_dir)
    tokenizer.save_pretrained(final_dir)
    jsonl.close()
    for logger in loggers[1:]:
        logger.finalize("success")
    summary = _summary(jsonl, parts, status, time.time() - started, module.rl_step)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _make_trainer(parts: RunParts, run_dir: Path, loggers: list) -> L.Trainer:
    # Lightning warns (with a page of example code) that manual-optimisation checkpoints hold
    # the state after the step's update: that is exactly the state a resume continues from.
    warnings.filterwarnings(
        "ignore", message="Using ModelCheckpoint with manual optimization", category=UserWarning
    )
    steps = parts.trainer.max_steps  # Lightning counts one optimiser step per RL step
    every = parts.evaluation.every
    callbacks: list = [
        ModelCheckpoint(
            dirpath=run_dir / "checkpoints",
            filename="step{step}",
            auto_insert_metric_name=False,
            every_n_train_steps=parts.trainer.checkpoint_every,
            save_top_k=parts.trainer.keep_checkpoints,
            save_last=True,
        )
    ]
    if parts.trainer.progress_bar:
        callbacks.append(RichProgressBar())
    return L.Trainer(
        default_root_dir=run_dir,
        max_steps=steps,
        max_epochs=-1,  # `max_steps` ends the run; a resumed, finished run starts a new epoch
        accelerator=parts.trainer.accelerator,
        devices=parts.trainer.devices,
        strategy=parts.trainer.strategy,
        precision=parts.trainer.precision,
        logger=loggers,
        callbacks=callbacks,
        val_check_interval=min(every, steps) if every else None,
        check_val_every_n_epoch=None if every else 1,
        num_sanity_val_steps=0,
        enable_progress_bar=parts.trainer.progress_bar,
        enable_model_summary=False,
        log_every_n_steps=1,
    )


def _summary(jsonl: JsonlLogger, parts: RunParts, status: str, seconds: float, steps: int) -> dict:
    prefix = f"eval/{parts.task.name}/"
    summary: dict[str, Any] = {
        "status": status,
        "method": parts.method.name,
        "task": parts.task.name,
        "steps": steps,
        "wall_time_s": round(seconds, 2),
        "final": dict(jsonl.latest),
    }
    for key, series in jsonl.history.items():
        if key.startswith(prefix):
            values = [v for _, v in series if isinstance(v, (int, float))]
            summary.setdefault("initial", {})[key] = values[0] if values else None
            summary.setdefault("best", {})[key] = max(values) if values else None
    return summary
