"""Runs one `tempo-eval` job from already-built parts: the library side of the entry point.

Build (or load) the policy, pick the evaluation temperature controller, validate every task
with `EvalModule` under Lightning, aggregate with `evaluation_metrics`, and write
`eval_results.json`, `metrics.jsonl` (step 0), optionally `samples.jsonl`, and W&B.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader

from tempo.config_error import ConfigError
from tempo.evaluation.loading import CheckpointSource, read_checkpoint, restore
from tempo.evaluation.metrics import evaluation_metrics
from tempo.evaluation.module import EvalModule
from tempo.evaluation.settings import EvalDevice, EvalOptions
from tempo.logging.jsonl import JsonlLogger
from tempo.logging.progress import StepProgressBar
from tempo.logging.wandb_setup import make_wandb_logger
from tempo.models.preflight import prepare_model_io
from tempo.models.prompting import PromptConfig
from tempo.rl.settings import LoggerConfig, RewardConfig
from tempo.sampling.vllm_engine import VLLMEngine, check_engine
from tempo.temperature.base import TemperatureController
from tempo.temperature.fixed import FixedTemperature

RESULTS_FILE = "eval_results.json"
SAMPLES_FILE = "samples.jsonl"
#: Completion cap when neither `eval.max_new_tokens` nor a checkpoint run says otherwise.
DEFAULT_MAX_NEW_TOKENS = 48


@dataclass
class EvalParts:
    """Everything an evaluation is made of, each already validated.

    With a `checkpoint`, `model` and `method` are the checkpoint run's (rebuilt from its
    config) and `total_steps` its `trainer.max_steps`; without one, `method` is None and
    `model` is built as in training (a warm-started tiny model, or a hub/local model).
    """

    tasks: list[Any]  # each with .name and .test_problems() (and maybe .answer_check)
    model: Any  # TinyModel | PretrainedModel
    options: EvalOptions
    reward: RewardConfig
    device: EvalDevice
    logger: LoggerConfig
    checkpoint: CheckpointSource | None = None
    method: TemperatureController | None = None
    total_steps: int = 1
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    source: dict[str, Any] = field(default_factory=dict)  # how the source is described
    prompt: PromptConfig | None = None  # the prompt path (a checkpoint run's own by default)
    stop_tokens: Sequence[int | str] = ()  # ids / token strings ending completions, besides EOS


def evaluation_controller(
    options: EvalOptions, method: TemperatureController | None
) -> TemperatureController:
    """The method's own evaluation controller when `use_head` and it has one (the
    introspective head), else a fixed `options.temperature`."""
    own = method.for_evaluation() if (options.use_head and method is not None) else None
    return own if own is not None else FixedTemperature(options.temperature)


def run_evaluation(
    parts: EvalParts,
    run_dir: str | os.PathLike,
    seed: int,
    label: str,
    experiment: str,
    config: dict[str, Any] | None = None,
    save_samples: bool = False,
) -> dict[str, Any]:
    """Evaluate every task; write the results files; return the results dict."""
    started = time.time()
    run_dir = Path(run_dir)
    names = [task.name for task in parts.tasks]
    if not names:
        raise ConfigError("tasks", [], "a non-empty list of task names")
    if len(set(names)) != len(names):
        raise ConfigError("tasks", names, "task names without repeats")
    run_dir.mkdir(parents=True, exist_ok=True)
    if parts.device.threads:
        torch.set_num_threads(parts.device.threads)
    L.seed_everything(seed, workers=True, verbose=False)
    opts = parts.options
    # Before anything loads: the evaluation controller and the extra must suit the engine.
    check_engine(
        opts.engine,
        evaluation_controller(opts, parts.method),
        tensor_parallel_size=opts.vllm.tensor_parallel_size,
        key="eval.engine",
    )
    held_out = {task.name: list(task.test_problems())[: opts.num_problems] for task in parts.tasks}
    io = prepare_model_io(  # before the weights load: the prompts fit, completions can end
        parts.model,
        parts.prompt,
        parts.stop_tokens,
        parts.max_new_tokens,
        held_out.items(),
        stop_key="eval.stop_tokens",
        budget_key="eval.max_new_tokens",
    )

    source = dict(parts.source)
    if parts.checkpoint is not None:
        checkpoint = read_checkpoint(parts.checkpoint.path)
        model, tokenizer = parts.model.build_for_checkpoint(
            parts.tasks[0], parts.device.accelerator
        )
        source["step"] = restore(
            checkpoint, parts.checkpoint.path, model, parts.method, parts.total_steps
        )
        del checkpoint
    else:
        model, tokenizer = parts.model.build(parts.tasks[0], parts.device.accelerator)
    model.eval()
    controller = evaluation_controller(parts.options, parts.method)
    sampling = {
        "use_head": opts.use_head,
        "controller": controller.name,
        "temperature": opts.temperature if isinstance(controller, FixedTemperature) else None,
        "samples": opts.samples,
        "ks": list(opts.ks),
        "greedy": opts.greedy,
        "max_new_tokens": parts.max_new_tokens,
        "seed": seed,
        "chat_template": io.prompts.uses_chat,
        "stop_token_ids": io.stop_token_ids,
        "engine": opts.engine,
    }
    engine = None
    if opts.engine == "vllm":
        engine = VLLMEngine(
            opts.vllm,
            parts.max_new_tokens,
            io.stop_token_ids,
            tokenizer.pad_token_id,
            chunk_tokens=256,  # unused: evaluation computes no entropies
            key="eval.engine",
        )
    module = EvalModule(
        model,
        tokenizer,
        controller,
        parts.max_new_tokens,
        opts.samples,
        opts.greedy,
        seed,
        prompts=io.prompts,
        stop_token_ids=io.stop_token_ids,
        engine=engine,
    )
    trainer = _make_trainer(parts.device, run_dir)
    samples_path = run_dir / SAMPLES_FILE
    if save_samples:
        samples_path.write_text("")
    results: dict[str, dict[str, float]] = {}
    counts: dict[str, int] = {}
    logged: dict[str, float] = {}
    for task in parts.tasks:
        problems = held_out[task.name]
        if not problems:
            raise ConfigError("tasks", task.name, "a task with held-out problems (none found)")
        print(f"[tempo] evaluating {task.name}: {len(problems)} problems", flush=True)
        scorer = parts.reward.for_task(task)
        try:
            module.begin_task(scorer)
            loader = DataLoader(problems, batch_size=opts.batch_size, collate_fn=list)
            trainer.validate(module, dataloaders=loader, verbose=False)
        finally:
            scorer.close()
        prefix = f"eval/{task.name}"
        metrics = evaluation_metrics(module.records, opts.ks, opts.samples, opts.greedy, prefix)
        logged.update(metrics)
        results[task.name] = {key[len(prefix) + 1 :]: value for key, value in metrics.items()}
        counts[task.name] = len(problems)
        if save_samples:
            _append_samples(samples_path, task.name, module.records)
    seconds = round(time.time() - started, 2)

    _log(parts.logger, run_dir, logged, label, experiment, names, config)
    summary = {
        "source": source,
        "sampling": sampling,
        "tasks": results,
        "problems": counts,
        "config": config if config is not None else _plain_config(parts),
        "wall_time_s": seconds,
    }
    (run_dir / RESULTS_FILE).write_text(json.dumps(summary, indent=2))
    return summary


def _make_trainer(device: EvalDevice, run_dir: Path) -> L.Trainer:
    return L.Trainer(
        default_root_dir=run_dir,
        accelerator=device.accelerator,
        devices=device.devices,
        precision=device.precision,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=device.progress_bar,
        callbacks=[StepProgressBar()] if device.progress_bar else [],
    )


def _append_samples(path: Path, task: str, records: list[dict]) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        for record in records:
            fh.write(json.dumps({"task": task, **record}) + "\n")


def _log(
    logger: LoggerConfig,
    run_dir: Path,
    metrics: dict[str, float],
    label: str,
    experiment: str,
    tasks: list[str],
    config: dict[str, Any] | None,
) -> None:
    """The same sinks as training: metrics.jsonl always, W&B when `logger=wandb`."""
    jsonl = JsonlLogger(run_dir)
    jsonl.log_metrics(metrics, step=0)
    jsonl.close()
    if logger.backend == "wandb":
        wandb = make_wandb_logger(
            save_dir=str(run_dir),
            project=logger.project,
            name=label,
            group=experiment,
            mode=logger.mode,
            entity=logger.entity,
            tags=[*logger.tags, "eval", *(f"task:{name}" for name in tasks)],
            job_type="eval",
            config=config,
        )
        wandb.log_metrics(metrics, step=0)
        wandb.finalize("success")


def _plain_config(parts: EvalParts) -> dict[str, Any]:
    return {"eval": asdict(parts.options), "tasks": [task.name for task in parts.tasks]}


def format_table(results: dict[str, Any]) -> str:
    """Metrics (rows) by task (columns), four decimals."""
    tasks = list(results["tasks"])
    keys: list[str] = []
    for task in tasks:
        keys += [k for k in results["tasks"][task] if k not in keys]
    rows = [["metric", *tasks], ["problems", *(str(results["problems"][t]) for t in tasks)]]
    for key in keys:
        values = [results["tasks"][t].get(key) for t in tasks]
        rows.append([key, *("-" if v is None else f"{v:.4f}" for v in values)])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
