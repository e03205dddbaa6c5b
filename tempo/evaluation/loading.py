"""What `tempo-eval` evaluates: a tempo-train checkpoint (with its run's config) or a model.

A checkpoint is a Lightning `.ckpt` inside `<run dir>/checkpoints/`, or a run directory (then
its `checkpoints/last.ckpt`). The run's `.hydra/config.yaml` says how to rebuild the model
and the temperature controller; the entry point instantiates them (this module never imports
hydra), the model is built without warm-start or pretrained weights where it can be
(`build_for_checkpoint`), and the checkpoint's `state_dict` is loaded into both, strictly.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from tempo.config_error import ConfigError
from tempo.temperature.base import TemperatureController

CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"
RUN_CONFIG = Path(".hydra") / "config.yaml"
#: LightningModule attributes whose weights a checkpoint holds but evaluation does not use:
#: the frozen KL reference and the evaluation controller (the controller itself, or a
#: parameter-free fixed temperature).
SKIPPED_PREFIXES = ("ref_model.", "eval_controller.")


@dataclass
class CheckpointSource:
    """A checkpoint file and the run directory whose config describes it."""

    path: Path  # the .ckpt file
    run_dir: Path

    @property
    def config_path(self) -> Path:
        return self.run_dir / RUN_CONFIG


def run_dir_of(checkpoint: Path) -> Path:
    """`<run dir>` of `<run dir>/checkpoints/<name>.ckpt` (else the file's own folder)."""
    parent = checkpoint.parent
    return parent.parent if parent.name == CHECKPOINT_DIR else parent


def find_checkpoint(path: str | os.PathLike) -> CheckpointSource:
    """Resolve `checkpoint=`: a .ckpt file, or a run directory holding checkpoints/last.ckpt.

    Raises a ConfigError (key `checkpoint`) naming what is missing.
    """
    given = str(path)
    where = Path(given).expanduser()
    if where.is_dir():
        ckpt = where / CHECKPOINT_DIR / LAST_CHECKPOINT
        if not ckpt.is_file():
            raise ConfigError(
                "checkpoint",
                given,
                f"a .ckpt file or a run directory holding {CHECKPOINT_DIR}/{LAST_CHECKPOINT} "
                "(none in that directory)",
            )
        source = CheckpointSource(ckpt.resolve(), where.resolve())
    elif where.is_file():
        source = CheckpointSource(where.resolve(), run_dir_of(where.resolve()))
    else:
        raise ConfigError(
            "checkpoint",
            given,
            f"an existing .ckpt file or a run directory holding {CHECKPOINT_DIR}/{LAST_CHECKPOINT}",
        )
    if not source.config_path.is_file():
        raise ConfigError(
            "checkpoint",
            given,
            f"a checkpoint of a tempo-train run ({source.config_path} not found)",
        )
    return source


def checkpoint_label(path: str | os.PathLike) -> str:
    """A short name for a checkpoint: the run directory's name, plus `-<stem>` unless the
    checkpoint is the run's last one."""
    where = Path(str(path)).expanduser()
    if where.suffix != ".ckpt":
        return where.resolve().name or "checkpoint"
    name = run_dir_of(where.resolve()).name or "checkpoint"
    return name if where.name == LAST_CHECKPOINT else f"{name}-{where.stem}"


def model_label(name_or_path: str | None) -> str:
    """A short name for a model: the last part of its hub id or path (`tiny` for none)."""
    if not name_or_path:
        return "tiny"
    return Path(str(name_or_path).rstrip("/")).name or "model"


def read_run_config(source: CheckpointSource) -> DictConfig:
    """The run's composed config (unresolved: the caller resolves what it instantiates)."""
    config = OmegaConf.load(source.config_path)
    if not isinstance(config, DictConfig) or "model" not in config or "method" not in config:
        raise ConfigError(
            "checkpoint", str(source.path), f"a run whose {source.config_path} has model and method"
        )
    return config


def read_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint dict, on the CPU. Lightning checkpoints hold Python objects (RNG and
    controller states), so this unpickles: load only checkpoints you trust."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # corrupt, truncated or not a torch file
        raise ConfigError(
            "checkpoint", str(path), f"a readable Lightning checkpoint ({type(err).__name__})"
        ) from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise ConfigError("checkpoint", str(path), "a Lightning checkpoint with a state_dict")
    return checkpoint


def split_state(state_dict: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(`model.*` weights, `controller.*` state) with the prefixes removed; the weights of
    `SKIPPED_PREFIXES` and any other attribute are left out."""
    model, controller = {}, {}
    for key, value in state_dict.items():
        if key.startswith("model."):
            model[key[len("model.") :]] = value
        elif key.startswith("controller."):
            controller[key[len("controller.") :]] = value
    return model, controller


def _names(keys: list[str], limit: int = 3) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def load_strict(target: nn.Module, state: dict[str, Any], what: str, path: Path) -> None:
    """`target.load_state_dict(state, strict=True)`, with a one-line ConfigError on mismatch."""
    expected = target.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    resized = sorted(
        key
        for key in set(expected) & set(state)
        if isinstance(expected[key], torch.Tensor)
        and isinstance(state[key], torch.Tensor)
        and expected[key].shape != state[key].shape
    )
    problems = []
    if missing:
        problems.append(f"missing {_names(missing)}")
    if unexpected:
        problems.append(f"unexpected {_names(unexpected)}")
    if resized:
        problems.append(f"other shapes for {_names(resized)}")
    if problems:
        raise ConfigError(
            "checkpoint",
            str(path),
            f"{what} weights matching the run's config ({'; '.join(problems)})",
        )
    target.load_state_dict(state, strict=True)


def restore(
    checkpoint: dict[str, Any],
    path: Path,
    model: nn.Module,
    controller: TemperatureController,
    total_steps: int,
) -> int:
    """Load a checkpoint's policy and controller state; returns its RL step (global_step).

    The controller is set up first (`setup(hidden, vocab, total_steps)`, which builds learned
    heads), exactly as training did before its first step.
    """
    controller.setup(model.config.hidden_size, model.config.vocab_size, total_steps)
    model_state, controller_state = split_state(checkpoint["state_dict"])
    load_strict(model, model_state, "policy", path)
    load_strict(controller, controller_state, "temperature-controller", path)
    return int(checkpoint.get("global_step", 0))
