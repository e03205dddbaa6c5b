"""`tempo-train`: compose the config with Hydra, validate every group, run one training job."""

from __future__ import annotations

import sys
import traceback
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from tempo.config_error import ConfigError
from tempo.hydra_cli import build, check_overrides
from tempo.rl.nonfinite import NonFiniteError
from tempo.runner import Preempted, RunParts, record_failure, run_training


def method_label(choice: str, rule: str | None = None) -> str:
    """Run-name part for a method: `heuristic-edt` for a heuristic rule, else the choice."""
    return f"{choice}-{rule}" if rule else choice


OmegaConf.register_new_resolver("method_label", method_label, replace=True)

# An absolute path, so the console script finds conf/ as `python -m tempo.train` does.
CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "conf")

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
)


def parts_from_config(cfg: DictConfig) -> RunParts:
    """Instantiate every group (validating each value), then the checks that span groups."""
    built = {key: build(key, cfg[key]) for key in GROUPS}
    built["evaluation"] = built.pop("eval")
    parts = RunParts(**built)
    available = len(parts.task.test_problems())
    if parts.evaluation.num_problems > available:
        raise ConfigError(
            "eval.num_problems",
            parts.evaluation.num_problems,
            f"at most the {available} held-out problems of task {parts.task.name!r}",
        )
    return parts


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def train(cfg: DictConfig) -> dict | None:
    """One training job (or one job of a `-m` sweep)."""
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
            method_label=method_label(choices["method"], OmegaConf.select(cfg, "method.rule")),
            model_label=OmegaConf.select(cfg, "model.name_or_path") or choices["model"],
        )
    except ConfigError as err:
        record_failure(run_dir, f"invalid config: {err}")
        print(f"tempo-train: invalid config: {err}", file=sys.stderr)
        if multirun:
            return None  # recorded; the other jobs go on, SweepReport sets the exit code
        sys.exit(2)
    except Preempted as err:
        print(f"tempo-train: {err}", file=sys.stderr)
        sys.exit(128 + err.signum)
    except NonFiniteError as err:  # the runner wrote summary.json and the checkpoint
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
