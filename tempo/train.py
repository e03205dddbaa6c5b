"""`tempo-train`: compose the config with Hydra, validate every group, run one training job.

Torch, Lightning and the runner are imported inside the job, so `tempo-train --help` and bad
overrides answer in well under two seconds.
"""

from __future__ import annotations

import importlib
import signal
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from tempo.config_error import ConfigError
from tempo.hydra_cli import build, build_extra_task, check_overrides, compose_task, config_dir
from tempo.logging.console import (
    console_to_log_file,
    route_lightning_logs,
    silence_third_party_noise,
)

if TYPE_CHECKING:
    from tempo.runner import RunParts

# The absolute path of the config tree, in a checkout and in an installed wheel alike.
CONFIG_DIR = config_dir()


def target_label(target: str) -> str:
    """The label of a method class (or factory) named by a dotted path: the `name` it or a
    non-tempo base class defines, else its Python name (the path's last part if the import
    fails; instantiating it later reports that failure properly)."""
    parts = target.split(".")
    obj = None
    for cut in range(len(parts) - 1, 0, -1):  # the longest importable module prefix
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
            for attr in parts[cut:]:
                obj = getattr(obj, attr)
            break
        except Exception:  # noqa: BLE001 - a label must not fail; instantiation reports it
            obj = None
    if obj is None:
        return parts[-1]
    for klass in getattr(obj, "__mro__", (obj,)):
        if klass is not obj and klass.__module__.partition(".")[0] == "tempo":
            break  # tempo's own base classes name tempo's methods, not this one
        value = getattr(klass, "__dict__", {}).get("name")
        if isinstance(value, str) and value:
            return value
    return getattr(obj, "__name__", target.rsplit(".", 1)[-1])


def method_label(choice: str, rule: str | None = None, target: str | None = None) -> str:
    """Run-name part for a method: `heuristic-edt` for a heuristic rule, else the choice; but
    when `target` (method._target_) replaces the class of tempo's own option `choice`, the
    replacing class's own label (`target_label`), so `method=fixed method._target_=my.Cls`
    is not labelled "fixed". A user's own option (a hydra.searchpath file) keeps its name."""
    own = Path(CONFIG_DIR) / "method" / f"{choice}.yaml"
    if target and own.is_file() and target != OmegaConf.load(own).get("_target_"):
        return target_label(target)
    return f"{choice}-{rule}" if rule else choice


OmegaConf.register_new_resolver("method_label", method_label, replace=True)

GROUPS = (
    "task",
    "method",
    "algorithm",
    "model",
    "rollout",
    "eval",
    "reward",
    "trainer",
    "logger",
    "samples",
    "prompt",
)


def parts_from_config(cfg: DictConfig) -> RunParts:
    """Instantiate every group (validating each value), then the checks that span groups."""
    from tempo.rl.settings import check_accelerator_available
    from tempo.runner import RunParts

    check_seed("seed", cfg.seed)
    built = {key: build(key, cfg[key]) for key in GROUPS}
    built["evaluation"] = built.pop("eval")
    built["eval_tasks"] = eval_tasks(built["evaluation"], built["task"].name)
    parts = RunParts(**built)
    check_accelerator_available(parts.trainer)
    available = len(parts.task.test_problems())
    if parts.evaluation.num_problems > available:
        raise ConfigError(
            "eval.num_problems",
            parts.evaluation.num_problems,
            f"at most the {available} held-out problems of task {parts.task.name!r}",
        )
    return parts


#: The seeds torch, numpy and Lightning's `seed_everything` all take.
MAX_SEED = 2**32 - 1


def check_seed(key: str, value: object) -> int:
    """An integer seed in [0, 2**32 - 1] (bools and strings refused)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEED:
        raise ConfigError(key, value, f"an integer in [0, {MAX_SEED}]")
    return value


def eval_tasks(evaluation, training_task: str) -> list:
    """The extra held-out tasks of `eval.tasks`, each composed as `task=<name>` would be (from
    tempo's configs or a hydra.searchpath folder) with `eval.task_overrides.<name>` on top."""
    tasks = []
    for name in evaluation.tasks:
        if name == training_task:
            raise ConfigError(
                "eval.tasks", name, "tasks other than the training task (it is always evaluated)"
            )
        key = f"eval.task_overrides.{name}"
        node = compose_task(
            name, evaluation.task_overrides.get(name), key="eval.tasks", overrides_key=key
        )
        task = build_extra_task(name, node, evaluation.task_overrides.get(name), key)
        if not task.test_problems():
            raise ConfigError("eval.tasks", name, "a task with held-out problems (none found)")
        tasks.append(task)
    return tasks


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def train(cfg: DictConfig) -> dict | None:
    """One training job (or one job of a `-m` sweep), its console copied into the job log
    (`train.log` in the run directory)."""
    silence_third_party_noise()
    with console_to_log_file():
        return _train_job(cfg)


def _train_job(cfg: DictConfig) -> dict | None:
    from tempo.rl.nonfinite import NonFiniteError
    from tempo.runner import Preempted, RunFailed, record_failure, run_training

    route_lightning_logs()  # imported just now: its log lines through Hydra's job logging
    run_dir = HydraConfig.get().runtime.output_dir
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    choices = HydraConfig.get().runtime.choices
    try:
        parts = parts_from_config(cfg)
        return run_training(
            parts,
            run_dir=run_dir,
            seed=cfg.seed,
            run_name=cfg.run_name,
            experiment=cfg.experiment_name,
            config=OmegaConf.to_container(cfg, resolve=True),
            ckpt_path=cfg.ckpt_path,
            method_label=method_label(
                choices["method"],
                OmegaConf.select(cfg, "method.rule"),
                OmegaConf.select(cfg, "method._target_"),
            ),
            model_label=OmegaConf.select(cfg, "model.name_or_path") or choices["model"],
        )
    except ConfigError as err:
        record_failure(run_dir, f"invalid config: {err}")
        print(f"tempo-train: invalid config: {err}", file=sys.stderr)
        if multirun:
            return None  # recorded; the other jobs go on, SweepReport sets the exit code
        sys.exit(2)
    except Preempted as err:
        # The checkpoint and summary are written: more stop signals (a scheduler's second
        # SIGTERM, Ctrl-C again) must not kill the exit with the default action (-15, not 143).
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2):
            signal.signal(sig, signal.SIG_IGN)
        print(f"tempo-train: {err}", file=sys.stderr)
        sys.exit(128 + err.signum)
    except (NonFiniteError, RunFailed) as err:  # the runner wrote summary.json (if it could)
        print(f"tempo-train: {err}", file=sys.stderr)
        if multirun:
            return None
        sys.exit(1)
    except Exception as err:
        record_failure(run_dir, f"{type(err).__name__}: {err}")
        if multirun:
            traceback.print_exc()
            return None
        raise


def main() -> None:
    """`tempo-train [overrides]`: bad overrides fail in one line before Hydra starts the job."""
    check_overrides(CONFIG_DIR, "train", "tempo-train", sys.argv[1:])
    train()


if __name__ == "__main__":
    main()
