"""W&B through Lightning's WandbLogger: online when the user is logged in, else offline.

W&B raises at once when it has no API key and no mode, so tempo picks the mode itself:
`auto` means online if a key is found (env var or netrc), offline otherwise. Offline runs can
be uploaded later with `wandb sync`.

Runs are laid out for comparing methods without dashboard set-up: the caller passes
group = experiment name, job_type = method label, and tags from `run_tags` (`task:...`,
`model:...`, `method:...` plus the user's own), so W&B can group by experiment, split by job
type and filter by tag.
"""

from __future__ import annotations

import netrc
import os
from collections.abc import Sequence
from typing import Any

from lightning.pytorch.loggers import WandbLogger

from tempo.config_error import ConfigError

MODES = ("auto", "online", "offline", "disabled")
MAX_TAG_LENGTH = 64  # W&B refuses longer (or empty) tags when the run starts


def has_wandb_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        auth = netrc.netrc().authenticators(os.environ.get("WANDB_HOST", "api.wandb.ai"))
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False
    return bool(auth and auth[2])


def resolve_mode(mode: str) -> str:
    """`auto` -> online/offline by credentials; WANDB_MODE in the environment wins."""
    if mode not in MODES:
        raise ConfigError("logger.mode", mode, f"one of {', '.join(MODES)}")
    env = os.environ.get("WANDB_MODE")
    if env in ("online", "offline", "disabled"):
        return env
    if mode == "auto":
        return "online" if has_wandb_credentials() else "offline"
    return mode


def _fit_tag(key: str, value: str) -> str:
    """`key:value`, with a value too long for a tag cut to its end (a model path's tail)."""
    tag = f"{key}:{value}"
    if len(tag) <= MAX_TAG_LENGTH:
        return tag
    keep = MAX_TAG_LENGTH - len(key) - 2  # room for "key:" and the ellipsis
    return f"{key}:\u2026{value[-keep:]}"


def run_tags(
    task_name: str | None,
    model_name: str | None,
    method_label: str | None,
    extra_tags: Sequence[str] = (),
) -> list[str]:
    """W&B tags of a run: `task:<task>`, `model:<model>`, `method:<label>`, then `extra_tags`;
    duplicates dropped (first kept), empty parts skipped.

    Generated tags longer than W&B allows keep the end of the value; a user tag that W&B would
    refuse (empty or over 64 characters) is a ConfigError of `logger.tags` now, not a failure
    when the run starts.
    """
    tags = [
        _fit_tag(key, str(value).strip())
        for key, value in (("task", task_name), ("model", model_name), ("method", method_label))
        if value is not None and str(value).strip()
    ]
    for tag in extra_tags:
        tag = str(tag).strip()
        if not 1 <= len(tag) <= MAX_TAG_LENGTH:
            raise ConfigError("logger.tags", tag, f"tags of 1 to {MAX_TAG_LENGTH} characters")
        tags.append(tag)
    return list(dict.fromkeys(tags))


def make_wandb_logger(
    save_dir: str,
    project: str,
    name: str,
    group: str | None,
    mode: str = "auto",
    entity: str | None = None,
    tags: Sequence[str] = (),
    job_type: str | None = None,
    config: dict[str, Any] | None = None,
) -> WandbLogger:
    """A WandbLogger with the resolved mode and the full config attached (no run starts until
    the logger is first used). `group` is the experiment, `job_type` the method label, `tags`
    e.g. from `run_tags`."""
    logger = WandbLogger(
        save_dir=save_dir,
        project=project,
        name=name,
        group=group,
        entity=entity,
        tags=list(tags),
        job_type=job_type,
        mode=resolve_mode(mode),
        config=config,
    )
    return logger
