"""W&B through Lightning's WandbLogger: online when the user is logged in, else offline.

W&B raises at once when it has no API key and no mode, so tempo picks the mode itself:
`auto` means online if a key is found (env var or netrc), offline otherwise. Offline runs can
be uploaded later with `wandb sync`.
"""

from __future__ import annotations

import netrc
import os
from collections.abc import Sequence
from typing import Any

from lightning.pytorch.loggers import WandbLogger

from tempo.config_error import ConfigError

MODES = ("auto", "online", "offline", "disabled")


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
    """A WandbLogger with the resolved mode and the full config attached."""
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
