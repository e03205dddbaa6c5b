"""Runs one training job from already-built parts: the library side of `tempo-train`.

The entry point instantiates the config groups (so every value is validated before any heavy
work) and hands them here; this module builds the model, the Lightning trainer, loggers and
callbacks, evaluates before and after RL, and writes `summary.json`.

Under DDP every rank runs this same code (Lightning starts ranks > 0 by running the command
again with the same run directory); files of the run directory (`run_config.json`,
`summary.json`, `final_model/`) are written by global rank 0 only, as are metrics and
checkpoints (by their loggers and Lightning).
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar
from lightning.pytorch.strategies import DDPStrategy, Strategy
from lightning.pytorch.utilities import rank_zero_only

from tempo.config_error import ConfigError
from tempo.data.datamodule import PromptDataModule
from tempo.fsdp import FSDPSettings, full_state_dict, is_sharded
from tempo.logging.jsonl import JsonlLogger, JsonlState
from tempo.logging.samples import DEFAULT_T_RANGE, SamplesConfig, SampleWriter
from tempo.logging.wandb_setup import make_wandb_logger, run_tags
from tempo.models.preflight import ModelIO, prepare_model_io, training_prompts
from tempo.models.prompting import PromptConfig
from tempo.rl.checkpoint_io import AtomicCheckpointIO
from tempo.rl.grpo import GRPOConfig
from tempo.rl.module import RLVRModule
from tempo.rl.preemption import PreemptionCheckpoint
from tempo.rl.settings import (
    EvalConfig,
    LoggerConfig,
    RewardConfig,
    RolloutConfig,
    TrainerConfig,
    task_checks,
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
    samples: SamplesConfig = field(default_factory=SamplesConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    eval_tasks: list[Any] = field(default_factory=list)  # more held-out tasks (eval.tasks)


class Preempted(Exception):
    """The run stopped on a preemption signal after saving a checkpoint."""

    def __init__(self, signum: int, step: int | None, checkpoint: Path) -> None:
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        super().__init__(
            f"stopped by signal {signum} after RL step {step}; checkpoint {checkpoint}; "
            "run the same command again (same run directory) to resume"
        )


#: Settings a resumed run may change; any other difference means a different experiment.
RESUMABLE_CHANGES = (
    "ckpt_path",
    "trainer.max_steps",
    "trainer.progress_bar",
    "trainer.threads",
    "trainer.gradient_checkpointing",  # same gradients, other memory/compute trade
)

#: Lightning's DDP strategy names and the process start method each stands for.
DDP_START_METHODS = {
    "ddp": "popen",
    "ddp_spawn": "spawn",
    "ddp_fork": "fork",
    "ddp_notebook": "fork",
}


def is_rank_zero() -> bool:
    """True in the process that writes the run directory's files: global rank 0 under DDP
    (known from the launcher's environment before the trainer exists), else always."""
    return getattr(rank_zero_only, "rank", 0) == 0


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest of the run directory's `last.ckpt` and `step<N>.ckpt` files. Saves are atomic
    renames, so the newest file is complete; a job killed between writing `step<N>.ckpt` and
    `last.ckpt` resumes from the former."""
    folder = run_dir / "checkpoints"
    found = [*folder.glob("step*.ckpt"), *folder.glob("last.ckpt")] if folder.is_dir() else []
    return max(found, key=lambda p: (p.stat().st_mtime_ns, p.name == "last.ckpt"), default=None)


def resolve_checkpoint(run_dir: Path, ckpt_path: str | os.PathLike | None) -> Path | None:
    """The checkpoint to resume from: `ckpt_path` itself; for `last`, the run directory's newest
    checkpoint, which must exist; for None that same one when there is one (a re-launched job
    picks up its run)."""
    latest = latest_checkpoint(run_dir)
    if ckpt_path is None:
        return latest
    if str(ckpt_path) == "last":
        if latest is None:
            raise ConfigError(
                "ckpt_path",
                "last",
                f"'last' only when {run_dir / 'checkpoints'} holds a checkpoint "
                "(set hydra.run.dir to the run)",
            )
        return latest
    if not Path(ckpt_path).is_file():
        raise ConfigError("ckpt_path", str(ckpt_path), "an existing checkpoint file")
    return Path(ckpt_path)


def _flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}."""
    if isinstance(config, dict) and config:
        flat: dict[str, Any] = {}
        for key, value in config.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix[:-1]: config}


def check_same_experiment(run_dir: Path, config: dict[str, Any] | None, write: bool = True) -> None:
    """Refuse to continue a run directory's checkpoint under a different config: the run's first
    config is kept in `run_config.json` (written here when missing, if `write`), and only
    RESUMABLE_CHANGES may differ."""
    saved_path = run_dir / "run_config.json"
    if config is None:
        return
    if not saved_path.is_file():
        if write:
            saved_path.write_text(json.dumps(config, indent=2, default=str))
        return
    saved = _flatten(json.loads(saved_path.read_text()))
    now = _flatten(json.loads(json.dumps(config, default=str)))
    changed = sorted(
        key
        for key in saved.keys() | now.keys()
        if saved.get(key) != now.get(key)
        and not any(key == k or key.startswith(k + ".") for k in RESUMABLE_CHANGES)
    )
    if changed:
        key = changed[0]
        raise ConfigError(
            "hydra.run.dir",
            str(run_dir),
            f"a run directory of this same config (it holds a run with {key}="
            f"{saved.get(key)!r}, not {now.get(key)!r}; {len(changed)} setting(s) differ): "
            "use a new directory to start a new run",
        )


def run_training(
    parts: RunParts,
    run_dir: str | os.PathLike,
    seed: int,
    run_name: str,
    experiment: str,
    config: dict[str, Any] | None = None,
    ckpt_path: str | os.PathLike | None = None,
    method_label: str | None = None,
    model_label: str | None = None,
) -> dict[str, Any]:
    """Warm-start/load the model, evaluate, train with GRPO, evaluate, write summary.json.

    Resumes from `ckpt_path` (a Lightning checkpoint, or `last`), or by itself from the run
    directory's `checkpoints/last.ckpt` when one exists: policy, optimisers, temperature
    controller, RNG states, step and the metrics file's position are restored. Any failure
    still writes `summary.json` (status `failed`, with the error) before it propagates.
    """
    started = time.time()
    run_dir = Path(run_dir)
    resume_from = resolve_checkpoint(run_dir, ckpt_path)
    run_dir.mkdir(parents=True, exist_ok=True)
    if resume_from is not None and ckpt_path is None:
        print(f"[tempo] resuming from {resume_from}", file=sys.stderr)
    writer = is_rank_zero()
    if (
        resume_from is not None
        and resume_from.resolve().parent == (run_dir / "checkpoints").resolve()
    ):
        check_same_experiment(run_dir, config, write=writer)
    elif writer:
        _set_aside_stale_files(run_dir)
        if config is not None:
            (run_dir / "run_config.json").write_text(json.dumps(config, indent=2, default=str))
    guard = PreemptionCheckpoint(run_dir / "checkpoints" / "last.ckpt")
    guard.install()
    jsonl = JsonlLogger(run_dir)
    module = None
    try:
        labels = {"method": method_label or parts.method.name, "model": model_label or "model"}
        module, status = _train(
            parts, run_dir, seed, run_name, experiment, config, resume_from, guard, jsonl, labels
        )
    except BaseException as err:
        if not isinstance(err, KeyboardInterrupt) and is_rank_zero():
            jsonl.close()
            steps = module.rl_step if module is not None else None
            summary = _summary(jsonl, parts, "failed", time.time() - started, steps)
            summary["error"] = f"{type(err).__name__}: {err}".splitlines()[0]
            _write_summary(run_dir, summary)
        raise
    finally:
        guard.uninstall()
    jsonl.close()
    summary = _summary(jsonl, parts, status, time.time() - started, module.rl_step)
    if is_rank_zero():  # other ranks' loggers hold nothing: their summary would be empty
        _write_summary(run_dir, summary)
    if status == "preempted":
        guard.chain()  # e.g. submitit's requeue, which may exit here
        raise Preempted(guard.signum, guard.saved_step, guard.path)
    return summary


def record_failure(run_dir: str | os.PathLike, error: str) -> None:
    """Mark a run that failed before training started (e.g. a bad value in one sweep job), so
    `tempo-compare` lists it; an existing summary (an earlier run's result) is never replaced.
    Under DDP only global rank 0 writes it."""
    run_dir = Path(run_dir)
    if not is_rank_zero() or (run_dir / "summary.json").exists():
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    _write_summary(run_dir, {"status": "failed", "error": error.splitlines()[0] if error else ""})


def _set_aside_stale_files(run_dir: Path) -> None:
    """A fresh start in a directory that holds an earlier attempt without a checkpoint (it
    died before the first one): keep its files under a new name instead of appending to them."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for name in ("metrics.jsonl", "summary.json"):
        path = run_dir / name
        if path.is_file():
            path.rename(run_dir / f"{path.stem}.before-{stamp}{path.suffix}")


def _write_summary(run_dir: Path, summary: dict[str, Any]) -> None:
    tmp = run_dir / ".summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2))
    os.replace(tmp, run_dir / "summary.json")


def _train(
    parts: RunParts,
    run_dir: Path,
    seed: int,
    run_name: str,
    experiment: str,
    config: dict[str, Any] | None,
    resume_from: Path | None,
    guard: PreemptionCheckpoint,
    jsonl: JsonlLogger,
    labels: dict[str, str],
) -> tuple[RLVRModule, str]:
    if parts.trainer.threads:
        torch.set_num_threads(parts.trainer.threads)
    io = preflight(parts)
    model, tokenizer = build_policy(parts)
    # Seeded after the build: a warm-start that trains (cache miss) draws from torch's RNG and
    # one loaded from the cache does not, and the run must not depend on which happened.
    L.seed_everything(seed, workers=True, verbose=False)
    parts.method.setup(model.config.hidden_size, model.config.vocab_size, parts.trainer.max_steps)
    scorer = parts.reward.for_task(parts.task)
    eval_scorers = _eval_scorers(parts, scorer)
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
        samples=SampleWriter.from_config(
            run_dir,
            parts.samples,
            per_token=parts.method.per_token,
            t_range=_colour_range(parts.method),
            title=f"{run_name}: sample completions",
        ),
        prompts=io.prompts,
        stop_token_ids=io.stop_token_ids,
        eval_tasks=[(task.name, eval_scorers[id(task)]) for task in parts.eval_tasks],
        total_steps=parts.trainer.max_steps,
    )
    data = PromptDataModule(
        parts.task,
        parts.rollout.prompts_per_step,
        parts.trainer.max_steps,
        parts.evaluation.num_problems,
        parts.evaluation.batch_size,
        seed=seed,
        eval_tasks=parts.eval_tasks,
    )
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
                tags=run_tags(
                    parts.task.name, labels["model"], labels["method"], parts.logger.tags
                ),
                job_type=labels["method"],
                config=config,
            )
        )
    trainer = _make_trainer(parts, run_dir, loggers, [JsonlState(jsonl), guard])
    try:
        if parts.evaluation.at_start and resume_from is None:
            trainer.validate(module, datamodule=data, verbose=False)
        if guard.signum is None:
            trainer.fit(module, datamodule=data, ckpt_path=resume_from)
        if guard.signum is not None:
            if guard.saved_step is None:  # signalled before the first step ended
                trainer.save_checkpoint(guard.path)
                guard.saved_step = module.rl_step
            status = "preempted"
        else:
            trainer.save_checkpoint(run_dir / "checkpoints" / "last.ckpt")  # the final state
            if module.last_eval_step != module.rl_step:
                trainer.validate(module, datamodule=data, verbose=False)
            status = "finished"
    finally:
        for each in {id(s): s for s in [scorer, *eval_scorers.values()]}.values():
            each.close()
    if status == "finished":
        save_final_model(model, tokenizer, run_dir / "final_model")
    for logger in loggers[1:]:
        logger.finalize("success" if status == "finished" else status)
    return module, status


def preflight(parts: RunParts) -> ModelIO:
    """The prompt path and stop ids, with every held-out prompt and the first training prompts
    checked against the model's context, before the weights load or the warm-start runs."""
    num_eval = parts.evaluation.num_problems
    held_out = [(t.name, t.test_problems()[:num_eval]) for t in [parts.task, *parts.eval_tasks]]
    return prepare_model_io(
        parts.model,
        parts.prompt,
        parts.rollout.stop_tokens,
        parts.rollout.max_new_tokens,
        [(f"{parts.task.name} (train)", training_prompts(parts.task)), *held_out],
    )


def _eval_scorers(parts: RunParts, training_scorer: Any) -> dict[int, Any]:
    """A scorer per extra held-out task: the training task's when the answer check and
    extraction are the same (one verifier pool), else one of its own."""
    by_checks: dict[Any, Any] = {task_checks(parts.task): training_scorer}
    scorers = {}
    for task in parts.eval_tasks:
        checks = task_checks(task)
        if checks not in by_checks:
            by_checks[checks] = parts.reward.for_task(task)
        scorers[id(task)] = by_checks[checks]
    return scorers


def build_policy(parts: RunParts) -> tuple[Any, Any]:
    """The policy (in training mode) and its tokenizer, with the trainer's memory options.

    Gradient checkpointing (`trainer.gradient_checkpointing`) recomputes each decoder layer's
    activations in the backward pass. transformers applies it only to modules in training
    mode, so the policy's training forward passes use it and the sampler, which decodes with
    the model in eval mode and a KV cache, does not.
    """
    model, tokenizer = parts.model.build(parts.task, parts.trainer.accelerator)
    model.train()
    if parts.trainer.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    return model, tokenizer


def enable_gradient_checkpointing(model: Any) -> None:
    """Non-reentrant activation checkpointing of every decoder layer of an HF model."""
    if not getattr(model, "supports_gradient_checkpointing", False):
        raise ConfigError(
            "trainer.gradient_checkpointing",
            True,
            f"false for {type(model).__name__}, which does not support gradient checkpointing",
        )
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # the newer name (transformers 5.x)
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def make_strategy(
    strategy: str | FSDPSettings,
    method: TemperatureController,
    algorithm: GRPOConfig | None = None,
    model: Any = None,
) -> str | Strategy:
    """Lightning's strategy for `trainer.strategy`; DDP names get an explicit `DDPStrategy`,
    the fsdp preset's settings (`tempo.fsdp.FSDPSettings`) tempo's FSDP2 strategy, after the
    run's `algorithm` and `model` spec are checked for what FSDP does not support yet (a KL
    reference model, LoRA adapters), each refused in one line.

    The temperature controller is a submodule of the LightningModule, so DDP wraps the
    policy and a learned controller's parameters (the introspective head) alike and
    all-reduces the gradients of both in every `manual_backward`. A method with trainable
    parameters alternates phases that each leave one side without gradients (the head in
    policy phases, the policy in head phases), which DDP only accepts with
    `find_unused_parameters=True`; for every other method the whole policy takes part in
    every backward and the cheaper default (False) holds. Any other strategy name (also
    Lightning's `ddp_find_unused_parameters_true` etc.) is passed on unchanged.
    """
    if isinstance(strategy, FSDPSettings):  # see tempo/fsdp.py for what the step does under it
        check_fsdp_run(algorithm, model)
        return strategy.strategy()
    name = str(strategy)
    if name not in DDP_START_METHODS:
        return name
    return DDPStrategy(
        start_method=DDP_START_METHODS[name], find_unused_parameters=method.has_loss()
    )


def check_fsdp_run(algorithm: GRPOConfig | None, model: Any) -> None:
    """Refuse, in one line each, the parts of a run that `trainer=fsdp` does not shard."""
    if algorithm is not None and algorithm.beta > 0:
        raise ConfigError(
            "algorithm.beta",
            algorithm.beta,
            "0 under trainer=fsdp (the KL reference model, a second full copy of the policy, "
            "is not sharded; use trainer=ddp for a KL term)",
        )
    lora = getattr(model, "lora", None)
    if lora is not None and getattr(lora, "enabled", False):
        raise ConfigError(
            "model.lora.enabled", True, "false under trainer=fsdp (use trainer=ddp for LoRA)"
        )


def save_final_model(model: Any, tokenizer: Any, final_dir: Path) -> None:
    """`save_pretrained` of the trained policy by global rank 0; a policy sharded by FSDP is
    gathered first, which every rank must take part in."""
    if is_sharded(model):
        state = full_state_dict(model)  # collective: on every rank
        if is_rank_zero():
            model.save_pretrained(final_dir, state_dict=state)
            tokenizer.save_pretrained(final_dir)
        return
    if is_rank_zero():
        model.save_pretrained(final_dir)
        tokenizer.save_pretrained(final_dir)


def _colour_range(method: TemperatureController) -> tuple[float, float]:
    """The temperature scale of the sample pages: the method's own range, widened to hold 1."""
    t_min, t_max = getattr(method, "t_min", None), getattr(method, "t_max", None)
    if isinstance(t_min, (int, float)) and isinstance(t_max, (int, float)) and t_min < t_max:
        return min(float(t_min), 1.0), max(float(t_max), 1.0)
    return DEFAULT_T_RANGE


def _make_trainer(
    parts: RunParts, run_dir: Path, loggers: list, extra_callbacks: list
) -> L.Trainer:
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
            # Keeping the newest N > 1 needs a quantity to rank by: the step, highest first.
            monitor="step" if parts.trainer.keep_checkpoints > 1 else None,
            mode="max",
            save_last=True,
        ),
        *extra_callbacks,
    ]
    if parts.trainer.progress_bar:
        callbacks.append(RichProgressBar())
    return L.Trainer(
        default_root_dir=run_dir,
        max_steps=steps,
        max_epochs=-1,  # `max_steps` ends the run; a resumed, finished run starts a new epoch
        accelerator=parts.trainer.accelerator,
        devices=parts.trainer.devices,
        strategy=make_strategy(parts.trainer.strategy, parts.method, parts.algorithm, parts.model),
        precision=parts.trainer.precision,
        logger=loggers,
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
        val_check_interval=min(every, steps) if every else None,
        check_val_every_n_epoch=None if every else 1,
        num_sanity_val_steps=0,
        enable_progress_bar=parts.trainer.progress_bar,
        enable_model_summary=False,
        log_every_n_steps=1,
    )


def _summary(
    jsonl: JsonlLogger, parts: RunParts, status: str, seconds: float, steps: int | None
) -> dict:
    prefix = "eval/"
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
