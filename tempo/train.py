"""`tempo-train`: compose the config with Hydra, validate every group, run one training job."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from tempo.config_error import ConfigError
from tempo.runner import RunParts, run_training


def method_label(choice: str, rule: str | None = None) -> str:
    """Run-name part for a method: `heuristic-edt` for a heuristic rule, else the choice."""
    return f"{choice}-{rule}" if rule else choice


OmegaConf.register_new_resolver("method_label", method_label, replace=True)

# An absolute path, so the console script finds conf/ as `python -m tempo.train` does.
CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "conf")

GROUPS = ("task", "method", "algorithm", "model", "rollout", "eval", "reward", "trainer", "logger")


def build(key: str, node: DictConfig) -> Any:
    """Instantiate one config group; a bad value becomes a ConfigError naming `key.field`."""
    try:
        return hydra.utils.instantiate(node, _convert_="all")
    except Exception as err:  # Hydra wraps constructor errors; find ours in the chain
        cause: BaseException | None = err
        while cause is not None and not isinstance(cause, ConfigError):
            cause = cause.__cause__ or cause.__context__
        if cause is None:
            raise
        raise ConfigError(f"{key}.{cause.key}", cause.value, cause.allowed) from None


def parts_from_config(cfg: DictConfig) -> RunParts:
    built = {key: build(key, cfg[key]) for key in GROUPS}
    built["evaluation"] = built.pop("eval")
    return RunParts(**built)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> dict | None:
    try:
        parts = parts_from_config(cfg)
        run_dir = HydraConfig.get().runtime.output_dir
        return run_training(
            parts,
            run_dir=run_dir,
            seed=cfg.seed,
            run_name=cfg.run_name,
            experiment=cfg.experiment_name,
            config=OmegaConf.to_container(cfg, resolve=True),
            ckpt_path=cfg.ckpt_path,
        )
    except ConfigError as err:
        print(f"tempo-train: invalid config: {err}", file=sys.stderr)
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise  # let the sweep record this job's failure
        sys.exit(2)


if __name__ == "__main__":
    main()
