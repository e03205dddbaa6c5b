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

import contextlib
import errno
import json
import os
import signal
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.strategies import DDPStrategy, Strategy
from lightning.pytorch.utilities import rank_zero_only

from tempo.config_error import ConfigError
from tempo.data.datamodule import PromptDataModule
from tempo.fsdp import FSDPSettings, full_state_dict, is_sharded
from tempo.isolation import ChildDied, in_child, run_in_child
from tempo.logging.console import quiet_wandb_loggers
from tempo.logging.final_report import print_final_report
from tempo.logging.jsonl import JsonlLogger, JsonlState
from tempo.logging.progress import StepProgressBar
from tempo.logging.samples import DEFAULT_T_RANGE, SamplesConfig, SampleWriter
from tempo.logging.wandb_setup import make_wandb_logger, run_tags
from tempo.models.preflight import ModelIO, prepare_model_io, training_prompts
from tempo.models.prompting import PromptConfig
from tempo.rl.checkpoint_io import (
    AtomicCheckpointIO,
    FollowMovedRun,
    RunConfigStamp,
    checkpoint_config,
    checkpoint_problem,
    prune_periodic_checkpoints,
    remove_stale_temp_files,
)
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
from tempo.run_lock import RunLock, is_locked
from tempo.sampling.vllm_engine import check_engine
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
        name = signal.Signals(signum).name if signum in set(signal.Signals) else "?"
        super().__init__(
            f"stopped by signal {signum} ({name}) after RL step {step}; checkpoint "
            f"{checkpoint}; run the same command again (same run directory) to resume"
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


def latest_checkpoint(
    run_dir: Path, unreadable: list[tuple[Path, str]] | None = None
) -> Path | None:
    """The newest of the run directory's `last.ckpt` and `step<N>.ckpt` files that loads. Saves
    are atomic renames, so the newest file is normally complete; a job killed between writing
    `step<N>.ckpt` and `last.ckpt` resumes from the former. A file that does not load (empty,
    truncated, garbage) is passed over for the next newest, and listed in `unreadable` as
    (path, reason)."""
    folder = run_dir / "checkpoints"
    found = [*folder.glob("step*.ckpt"), *folder.glob("last.ckpt")] if folder.is_dir() else []
    found.sort(key=lambda p: (p.stat().st_mtime_ns, p.name == "last.ckpt"), reverse=True)
    for path in found:
        problem = checkpoint_problem(path)
        if problem is None:
            return path
        if unreadable is not None:
            unreadable.append((path, problem))
    return None


def resolve_checkpoint(run_dir: Path, ckpt_path: str | os.PathLike | None) -> Path | None:
    """The checkpoint to resume from: `ckpt_path` itself, which must load; for `last`, the run
    directory's newest checkpoint that loads, which must exist; for None that same one when
    there is one (a re-launched job picks up its run). Each checkpoint passed over because it
    does not load is named in one line on stderr, with the one used instead; when none of the
    run directory's checkpoints loads, that is an error (a fresh start would discard the run)."""
    run_dir = Path(run_dir)
    if ckpt_path is not None and str(ckpt_path) != "last":
        if not Path(ckpt_path).is_file():
            raise ConfigError("ckpt_path", str(ckpt_path), "an existing checkpoint file")
        problem = checkpoint_problem(ckpt_path)
        if problem is not None:
            raise ConfigError(
                "ckpt_path", str(ckpt_path), f"a Lightning checkpoint file (this one: {problem})"
            )
        return Path(ckpt_path)
    unreadable: list[tuple[Path, str]] = []
    latest = latest_checkpoint(run_dir, unreadable)
    if latest is None and unreadable:
        bad = ", ".join(f"{p.name} ({why})" for p, why in unreadable)
        raise ConfigError(
            "ckpt_path" if ckpt_path is not None else "hydra.run.dir",
            str(ckpt_path) if ckpt_path is not None else str(run_dir),
            f"a run directory with a checkpoint that loads (none in {run_dir / 'checkpoints'} "
            f"does: {bad}); move checkpoints/ aside to start the run afresh",
        )
    if unreadable and is_rank_zero():
        for path, why in unreadable:
            print(
                f"[tempo] {path} is unreadable ({why}): resuming from {latest.name} instead",
                file=sys.stderr,
            )
    if latest is None and ckpt_path is not None:
        raise ConfigError(
            "ckpt_path",
            "last",
            f"'last' only when {run_dir / 'checkpoints'} holds a checkpoint "
            "(set hydra.run.dir to the run)",
        )
    return latest


def _flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}."""
    if isinstance(config, dict) and config:
        flat: dict[str, Any] = {}
        for key, value in config.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix[:-1]: config}


def check_same_experiment(
    run_dir: Path,
    config: dict[str, Any] | None,
    write: bool = True,
    checkpoint: Path | None = None,
) -> None:
    """Refuse to continue a run directory's checkpoint under a different config: only
    RESUMABLE_CHANGES may differ. The run's config is taken from the `checkpoint` itself (every
    checkpoint carries it, see `RunConfigStamp`), else from `run_config.json` (the run's first
    config); a missing `run_config.json` is written again (if `write`) from the checkpoint's,
    or from `config` when neither exists."""
    saved_path = run_dir / "run_config.json"
    if config is None:
        return
    stamped = checkpoint_config(checkpoint) if checkpoint is not None else None
    if stamped is None and not saved_path.is_file():
        if write:
            saved_path.write_text(json.dumps(config, indent=2, default=str))
        return
    if stamped is not None and write and not saved_path.is_file():
        saved_path.write_text(json.dumps(stamped, indent=2, default=str))
    saved = _flatten(stamped if stamped is not None else json.loads(saved_path.read_text()))
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
    directory's newest checkpoint that loads: policy, optimisers, temperature controller, RNG
    states, step and the metrics file are restored. One process at a time holds the run
    directory (`tempo.run_lock`); a second start is refused in one line. Any failure still
    writes `summary.json` (status `failed`, with the error) before it propagates; a full disk
    raises RunFailed (one line) with the files of the run left whole.

    In a local sweep (SweepReport sets ISOLATE_ENV) the run trains in a forked child of the
    sweep worker, so that a child killed by a signal (the out-of-memory killer) fails only this
    job: its summary.json then says `failed` with the signal, and the summary is returned.
    """
    args = (parts, run_dir, seed, run_name, experiment, config, ckpt_path)
    labels = (method_label, model_label)
    if os.environ.get(ISOLATE_ENV) == "1" and os.name == "posix" and not in_child():
        try:
            return run_in_child(_run_training, *args, *labels)
        except ChildDied as died:
            return _record_death(Path(run_dir), parts, died)
    return _run_training(*args, *labels)


class RunFailed(RuntimeError):
    """The run stopped on a fault it has recorded in summary.json (e.g. a full disk); the
    message is one line for the entry point to print."""


#: Set to "1" (by `tempo.hydra_cli.SweepReport` for local launchers) to train each run in a
#: child process of the caller (see `run_training`).
ISOLATE_ENV = "TEMPO_ISOLATE_JOBS"

#: errno values that mean "no space left": ENOSPC, and EDQUOT (a quota) where it exists.
_DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


def _describe_failure(err: BaseException) -> str:
    """One line for summary.json's `error`."""
    if isinstance(err, OSError) and err.errno in _DISK_FULL:
        where = err.filename or "a file of the run"
        return f"disk full (OSError {err.errno}) while writing {where}"
    return f"{type(err).__name__}: {err}".splitlines()[0]


def _record_death(run_dir: Path, parts: RunParts, died: ChildDied) -> dict[str, Any]:
    """summary.json (and one line on stderr) for a run whose process died without one."""
    error = f"{died.describe()}; start it again in its directory to resume from its last checkpoint"
    summary: dict[str, Any] = {
        "status": "failed",
        "method": parts.method.name,
        "task": parts.task.name,
        "error": error,
    }
    print(f"[tempo] {run_dir}: the training process (PID {died.pid}) {error}", file=sys.stderr)
    with contextlib.suppress(OSError):
        _write_summary(run_dir, summary)
    return summary


def _run_training(
    parts: RunParts,
    run_dir: str | os.PathLike,
    seed: int,
    run_name: str,
    experiment: str,
    config: dict[str, Any] | None,
    ckpt_path: str | os.PathLike | None,
    method_label: str | None,
    model_label: str | None,
) -> dict[str, Any]:
    """`run_training` in this process."""
    started = time.time()
    run_dir = Path(run_dir)
    writer = is_rank_zero()
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = RunLock(run_dir).acquire() if writer else None  # DDP ranks > 0 share rank 0's
    guard = PreemptionCheckpoint(run_dir / "checkpoints" / "last.ckpt")
    try:
        if writer:  # saves of a killed process leave temporary files behind
            for folder in (run_dir, run_dir / "checkpoints"):
                remove_stale_temp_files(folder)
        resume_from = resolve_checkpoint(run_dir, ckpt_path)
        if resume_from is not None and ckpt_path is None:
            print(f"[tempo] resuming from {resume_from}", file=sys.stderr)
        if (
            resume_from is not None
            and resume_from.resolve().parent == (run_dir / "checkpoints").resolve()
        ):
            check_same_experiment(run_dir, config, write=writer, checkpoint=resume_from)
        elif writer:
            _set_aside_stale_files(run_dir)
            if config is not None:
                (run_dir / "run_config.json").write_text(json.dumps(config, indent=2, default=str))
        guard.install()
        jsonl = JsonlLogger(run_dir)
        module = None
        labels = {"method": method_label or parts.method.name, "model": model_label or "model"}
        try:
            module, status = _train(
                parts,
                run_dir,
                seed,
                run_name,
                experiment,
                config,
                resume_from,
                guard,
                jsonl,
                labels,
            )
            jsonl.close()
        except BaseException as err:
            error = _describe_failure(err)
            steps = module.rl_step if module is not None else jsonl.current_step
            written = False
            if not isinstance(err, KeyboardInterrupt) and writer:
                with contextlib.suppress(OSError):
                    jsonl.close()  # the open step, unless the disk is still full
                summary = _summary(jsonl, parts, "failed", time.time() - started, steps)
                summary["error"] = error
                with contextlib.suppress(OSError):
                    _write_summary(run_dir, summary)
                    written = True
                print_final_report(run_dir, summary)
            if isinstance(err, OSError) and err.errno in _DISK_FULL:
                note = "summary.json says so" if written else "summary.json could not be written"
                raise RunFailed(
                    f"{error} at RL step {steps}; {note}; metrics.jsonl and the checkpoints are "
                    "whole: free some space and run the same command again to resume"
                ) from err
            raise
        summary = _summary(jsonl, parts, status, time.time() - started, module.rl_step)
        if writer:  # other ranks' loggers hold nothing: their summary would be empty
            try:
                _write_summary(run_dir, summary)
            except OSError as err:
                if err.errno not in _DISK_FULL:
                    raise
                raise RunFailed(
                    f"{_describe_failure(err)} after the run {status}; the checkpoints and "
                    "metrics.jsonl are whole"
                ) from err
            print_final_report(run_dir, summary)
        if status in ("preempted", "interrupted"):
            guard.uninstall()
            guard.chain()  # e.g. submitit's requeue, which may exit here
            raise Preempted(guard.signum, guard.saved_step, guard.path)
        return summary
    finally:
        guard.uninstall()
        if lock is not None:
            lock.release()


def record_failure(run_dir: str | os.PathLike, error: str) -> None:
    """Mark a run that failed before training started (e.g. a bad value in one sweep job), so
    `tempo-compare` lists it; an existing summary (an earlier run's result) is never replaced,
    nor is anything written while another process holds the run directory (a second start
    refused by the lock). Under DDP only global rank 0 writes it."""
    run_dir = Path(run_dir)
    if not is_rank_zero() or (run_dir / "summary.json").exists() or is_locked(run_dir):
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
    """Replace summary.json atomically; on a failed write (OSError naming the file) the old
    one, if any, stays."""
    path = run_dir / "summary.json"
    tmp = run_dir / f".summary.json.tmp-{os.getpid()}"
    try:
        tmp.write_text(json.dumps(summary, indent=2))
        os.replace(tmp, path)
    except OSError as err:
        raise OSError(err.errno, err.strerror or str(err), str(path)) from err
    finally:
        tmp.unlink(missing_ok=True)


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
    # Before the weights load or the warm-start runs: the method and the extra must fit.
    check_engine(
        parts.rollout.engine,
        parts.method,
        tensor_parallel_size=parts.rollout.vllm.tensor_parallel_size,
    )
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
    stamp = RunConfigStamp(config)  # the check of a resume's config needs no other file
    moved = FollowMovedRun()  # a moved run directory keeps its checkpoint bookkeeping
    trainer = _make_trainer(parts, run_dir, loggers, [JsonlState(jsonl), stamp, moved, guard])
    try:
        if parts.evaluation.at_start and resume_from is None:
            trainer.validate(module, datamodule=data, verbose=False)
        if guard.signum is None:
            trainer.fit(module, datamodule=data, ckpt_path=resume_from)
        if guard.signum is not None:
            if guard.saved_step is None:  # signalled before the first step ended
                trainer.save_checkpoint(guard.path)
                guard.saved_step = module.rl_step
            status = guard.status  # preempted, or interrupted (Ctrl-C)
        else:
            trainer.save_checkpoint(run_dir / "checkpoints" / "last.ckpt")  # the final state
            if module.last_eval_step != module.rl_step:
                trainer.validate(module, datamodule=data, verbose=False)
            status = "finished"
    finally:
        for each in {id(s): s for s in [scorer, *eval_scorers.values()]}.values():
            each.close()
    if is_rank_zero():  # files of killed saves or of the checkpoint resumed from
        prune_periodic_checkpoints(run_dir / "checkpoints", parts.trainer.keep_checkpoints)
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
        decoder=parts.rollout.decoder,
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
    rollout: RolloutConfig | None = None,
) -> str | Strategy:
    """Lightning's strategy for `trainer.strategy`; DDP names get an explicit `DDPStrategy`,
    the fsdp preset's settings (`tempo.fsdp.FSDPSettings`) tempo's FSDP2 strategy, after the
    run's `algorithm`, `model` spec and `rollout` are checked for what FSDP does not support
    yet (a KL reference model, LoRA adapters, the vLLM engine), each refused in one line.

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
        check_fsdp_run(algorithm, model, rollout)
        return strategy.strategy()
    name = str(strategy)
    if name not in DDP_START_METHODS:
        return name
    return DDPStrategy(
        start_method=DDP_START_METHODS[name], find_unused_parameters=method.has_loss()
    )


def check_fsdp_run(
    algorithm: GRPOConfig | None, model: Any, rollout: RolloutConfig | None = None
) -> None:
    """Refuse, in one line each, the parts of a run that `trainer=fsdp` does not shard."""
    if rollout is not None and rollout.engine == "vllm":
        raise ConfigError(
            "rollout.engine",
            "vllm",
            "tempo under trainer=fsdp (pushing sharded weights into vLLM is not built; use "
            "trainer=ddp, one engine per rank)",
        )
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
            enable_version_counter=False,  # overwrite last.ckpt, never last-v1.ckpt
        ),
        *extra_callbacks,
    ]
    if parts.trainer.progress_bar:
        callbacks.append(StepProgressBar())  # `step s/N` with reward, mean T, entropy
    quiet_wandb_loggers(loggers)  # before the W&B run starts
    return L.Trainer(
        default_root_dir=run_dir,
        max_steps=steps,
        max_epochs=-1,  # `max_steps` ends the run; a resumed, finished run starts a new epoch
        accelerator=parts.trainer.accelerator,
        devices=parts.trainer.devices,
        strategy=make_strategy(
            parts.trainer.strategy, parts.method, parts.algorithm, parts.model, parts.rollout
        ),
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
