"""`tempo-eval`: evaluate a tempo-train checkpoint or any causal LM on held-out problems.

Composes `conf/eval.yaml`, instantiates and validates every part (a checkpoint's model and
method come from its run's `.hydra/config.yaml`, each task as `task=<name>` composes it, so a
task file in a `hydra.searchpath` folder works like tempo's own), then hands them to
`tempo.evaluation.runner.run_evaluation`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from tempo.config_error import ConfigError
from tempo.hydra_cli import (
    build,
    build_extra_task,
    check_overrides,
    compose_task,
    config_dir,
    group_options,
)
from tempo.logging.console import route_lightning_logs, silence_third_party_noise

# Torch, Lightning and the evaluation code are imported where they are used, so that
# `tempo-eval --help` and bad overrides answer in well under two seconds.
if TYPE_CHECKING:
    from tempo.evaluation.runner import EvalParts
    from tempo.models.prompting import PromptConfig


def eval_label(checkpoint: str | None, name_or_path: str | None) -> str:
    """Run-directory / W&B name: the checkpoint's run directory, else the model's name."""
    from tempo.evaluation.loading import checkpoint_label, model_label

    return checkpoint_label(checkpoint) if checkpoint else model_label(name_or_path)


OmegaConf.register_new_resolver("eval_label", eval_label, replace=True)
# `--help` lists the options of the groups tempo-eval reads (conf/eval.yaml hydra.help), not
# every group of the config tree as Hydra's $APP_CONFIG_GROUPS would (most are training's).
OmegaConf.register_new_resolver(
    "group_options", lambda group: ", ".join(group_options(group)), replace=True
)

# The absolute path of the config tree, in a checkout and in an installed wheel alike.
CONFIG_DIR = config_dir()

DEFAULT_TASK = "arithmetic"


def task_node(name: Any, run_cfg: DictConfig | None, overrides: DictConfig | None) -> DictConfig:
    """The config of task `name`: the checkpoint run's own task settings when it trained on a
    task of that name, else `task=<name>` composed from every config search path entry; then
    `task_overrides.<name>` on top."""
    extra = overrides.get(name) if overrides is not None and isinstance(name, str) else None
    if run_cfg is None or run_cfg.task.get("name") != name:
        return compose_task(name, extra, key="tasks", overrides_key=f"task_overrides.{name}")
    return OmegaConf.merge(run_cfg.task, extra) if extra is not None else run_cfg.task


def task_names(cfg: DictConfig, run_cfg: DictConfig | None) -> list[Any]:
    names = cfg.tasks
    if names is None:
        return [run_cfg.task.name if run_cfg is not None else DEFAULT_TASK]
    if isinstance(names, str):
        return [names]
    names = list(names)
    if not names or len(set(map(str, names))) != len(names):
        raise ConfigError("tasks", names, "a non-empty list of task names without repeats")
    return names


def eval_prompt(node: DictConfig | None, run_cfg: DictConfig | None) -> PromptConfig:
    """The prompt settings: the checkpoint run's `prompt` block (runs from before it existed:
    the defaults), with every non-null field of this config's `prompt` on top."""
    from tempo.models.prompting import PromptConfig

    base = {}
    if run_cfg is not None and run_cfg.get("prompt") is not None:
        base = OmegaConf.to_container(run_cfg.prompt, resolve=True)
        base.pop("_target_", None)
    for key, value in (OmegaConf.to_container(node, resolve=True) if node else {}).items():
        if value is not None:
            base[key] = value
    try:
        return PromptConfig(**base)
    except ConfigError as err:
        raise ConfigError(f"prompt.{err.key}", err.value, err.allowed) from None
    except TypeError as err:
        raise ConfigError("prompt", base, f"keys of PromptConfig ({err})") from None


def parts_from_config(cfg: DictConfig) -> EvalParts:
    """Instantiate and validate everything before any model is loaded."""
    from tempo.evaluation.loading import find_checkpoint, read_run_config
    from tempo.evaluation.runner import DEFAULT_MAX_NEW_TOKENS, EvalParts

    options = build("eval", cfg.eval)
    common = {
        "options": options,
        "reward": build("reward", cfg.reward),
        "device": build("trainer", cfg.trainer),
        "logger": build("logger", cfg.logger),
    }
    run_cfg = None
    if cfg.checkpoint is not None:
        source = find_checkpoint(cfg.checkpoint)
        run_cfg = read_run_config(source)
    common["prompt"] = eval_prompt(cfg.get("prompt"), run_cfg)
    run_stops = OmegaConf.select(run_cfg, "rollout.stop_tokens", default=None) if run_cfg else None
    common["stop_tokens"] = (*options.stop_tokens, *(run_stops or ()))
    overrides = cfg.get("task_overrides")
    tasks = [
        build_extra_task(
            name,
            task_node(name, run_cfg, overrides),
            overrides.get(name) if overrides is not None and isinstance(name, str) else None,
            f"task_overrides.{name}",
            list_key="tasks",
        )
        for name in task_names(cfg, run_cfg)
    ]
    for task in tasks:  # loads benchmark data now, so a missing file fails before the model
        if not task.test_problems():
            raise ConfigError("tasks", task.name, "a task with held-out problems (none found)")
    if run_cfg is None:
        model = build("model", cfg.model)
        return EvalParts(
            tasks=tasks,
            model=model,
            max_new_tokens=options.max_new_tokens or DEFAULT_MAX_NEW_TOKENS,
            source={
                "kind": "model",
                "model": OmegaConf.select(cfg, "model.name_or_path")
                or cfg.model._target_.rsplit(".", 1)[-1],
            },
            **common,
        )
    rollout = run_cfg.get("rollout") or {}
    return EvalParts(
        tasks=tasks,
        model=build("run.model", run_cfg.model),
        method=build("run.method", run_cfg.method),
        checkpoint=source,
        total_steps=int(OmegaConf.select(run_cfg, "trainer.max_steps", default=1) or 1),
        max_new_tokens=options.max_new_tokens
        or rollout.get("max_new_tokens", DEFAULT_MAX_NEW_TOKENS),
        source={
            "kind": "checkpoint",
            "checkpoint": str(source.path),
            "run_dir": str(source.run_dir),
            "method": run_cfg.method._target_.rsplit(".", 1)[-1],
            "model": OmegaConf.select(run_cfg, "model.name_or_path")
            or run_cfg.model._target_.rsplit(".", 1)[-1],
        },
        **common,
    )


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="eval")
def evaluate(cfg: DictConfig) -> dict | None:
    """One evaluation job (or one job of a `-m` sweep)."""
    silence_third_party_noise()
    from tempo.evaluation.runner import format_table, run_evaluation

    route_lightning_logs()  # imported just now: its log lines through Hydra's job logging
    try:
        parts = parts_from_config(cfg)
        config = OmegaConf.to_container(cfg, resolve=True)
        if parts.checkpoint is not None:
            config.pop("model", None)  # the checkpoint run's model is evaluated, not this one
        results = run_evaluation(
            parts,
            run_dir=HydraConfig.get().runtime.output_dir,
            seed=cfg.seed,
            label=cfg.label,
            experiment=cfg.experiment_name,
            config=config,
            save_samples=cfg.save_samples,
        )
    except ConfigError as err:
        print(f"tempo-eval: invalid config: {err}", file=sys.stderr)
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise  # let the sweep record this job's failure
        sys.exit(2)
    print(format_table(results))
    print(f"results: {Path(HydraConfig.get().runtime.output_dir) / 'eval_results.json'}")
    return results


def main() -> None:
    """`tempo-eval [overrides]`: bad overrides fail in one line before Hydra starts the job."""
    check_overrides(CONFIG_DIR, "eval", "tempo-eval", sys.argv[1:])
    evaluate()


if __name__ == "__main__":
    main()
