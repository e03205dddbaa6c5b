"""Checkpoint files that are either the old one or the complete new one, never half-written.

Lightning's own save writes through a temporary file in the system temp folder and moves it,
which is a copy (not an atomic rename) when that folder is on another filesystem, and it does
not fsync. Here the bytes go to a hidden file beside the target (`.<name>.tmp-<pid>`), are
fsynced, and replace the target with one `os.replace`; a crash at any moment leaves the
previous checkpoint intact. A failed write (e.g. a full disk) removes the temporary file and
raises the OSError with the target's path; a process killed mid-save leaves its temporary
file behind, which `remove_stale_temp_files` clears at the next start.

Every checkpoint also carries the run's resolved config (`RunConfigStamp`), so a resume can
check it is the same experiment even when `run_config.json` is gone.
"""

from __future__ import annotations

import errno
import json
import os
import re
import zipfile
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch.callbacks import Callback

#: The key of the run's config (a JSON string) in every checkpoint tempo writes.
CONFIG_KEY = "tempo_run_config"

_TEMP_NAME = re.compile(r"^\..+\.tmp-(\d+)$")


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """`torch.save` to `path` through a same-folder temporary file and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except Exception as err:  # name the checkpoint, not the temporary file (or no file)
        cause = _os_error(err, path.parent)
        if cause is None:
            raise
        raise OSError(cause.errno, cause.strerror or str(cause), str(path)) from err
    finally:
        tmp.unlink(missing_ok=True)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)


def _os_error(err: BaseException, folder: Path) -> OSError | None:
    """The OSError behind a failed save: `err` itself, one in its chain (torch's zip writer
    turns a failed `write` into a RuntimeError), or ENOSPC when the folder's disk is full."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno is not None:
            return seen
        seen = seen.__cause__ or seen.__context__
    try:
        if os.statvfs(folder).f_bavail == 0:
            return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    except OSError:
        pass
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def remove_stale_temp_files(folder: str | os.PathLike) -> list[Path]:
    """Delete the `.<name>.tmp-<pid>` files in `folder` whose process is gone (it was killed
    while saving); a live process's file is left alone. Returns the files removed."""
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        match = _TEMP_NAME.match(entry.name)
        if match and entry.is_file() and not _alive(int(match[1])):
            entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def prune_periodic_checkpoints(folder: str | os.PathLike, keep: int) -> list[Path]:
    """Delete the `step<N>.ckpt` files of `folder` beyond the newest `keep` (by N; keep < 0:
    none). Lightning's own pruning misses files left by a process killed between saving a
    new one and deleting the old one, and never deletes the checkpoint a run resumed from.
    Returns the files removed."""
    if keep < 0:
        return []
    numbered = []
    for path in Path(folder).glob("step*.ckpt"):
        number = path.name[len("step") : -len(".ckpt")]
        if number.isdigit():
            numbered.append((int(number), path))
    numbered.sort(reverse=True)
    removed = [path for _, path in numbered[keep:]]
    for path in removed:
        path.unlink(missing_ok=True)
    return removed


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """A checkpoint's contents without reading its tensors into memory (memory-mapped);
    raises when the file is not a complete checkpoint (empty, truncated, garbage)."""
    loaded = torch.load(Path(path), map_location="cpu", mmap=True, weights_only=False)
    if not isinstance(loaded, dict):
        raise ValueError(f"holds a {type(loaded).__name__}, not a checkpoint dict")
    return loaded


def _has(content: Any, key: str) -> bool:
    return isinstance(content, dict) and key in content


def checkpoint_problem(path: str | os.PathLike) -> str | None:
    """None when `path` loads as a checkpoint, else a short reason why not."""
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            return "an empty file"
        if not zipfile.is_zipfile(path):  # torch.save writes a zip archive; its index is last
            return "not a complete checkpoint: truncated, or another kind of file"
        content = read_checkpoint(path)
        missing = [k for k in ("state_dict", "global_step") if not _has(content, k)]
        if missing:
            return f"not a Lightning checkpoint (no {', '.join(missing)})"
    except Exception as err:  # noqa: BLE001 - any failure to load means "unreadable"
        text = str(err).strip().splitlines()
        reason = f"{type(err).__name__}: {text[0][:120]}" if text else type(err).__name__
        return f"does not load ({reason})"
    return None


def checkpoint_config(path: str | os.PathLike) -> dict[str, Any] | None:
    """The run config stamped into a checkpoint by `RunConfigStamp`, or None (an older
    checkpoint, or one written elsewhere)."""
    stamp = read_checkpoint(path).get(CONFIG_KEY)
    return json.loads(stamp) if isinstance(stamp, str) else None


class RunConfigStamp(Callback):
    """Puts the run's resolved config into every checkpoint (as JSON, under CONFIG_KEY)."""

    def __init__(self, config: dict[str, Any] | None) -> None:
        self.stamp = None if config is None else json.dumps(config, default=str)

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if self.stamp is not None:
            checkpoint[CONFIG_KEY] = self.stamp


class FollowMovedRun(Callback):
    """A run directory moved or copied since its checkpoint was written: Lightning's
    ModelCheckpoint state names files under the old absolute folder (and ignores its top-k
    list when the folder differs), so on resume from this run's own checkpoints folder those
    paths are moved to the folder the checkpoint is in now."""

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        saver = trainer.checkpoint_callback
        current = getattr(saver, "dirpath", None)
        if current is None or trainer.ckpt_path is None:
            return
        if Path(trainer.ckpt_path).resolve().parent != Path(current).resolve():
            return  # another run's checkpoint: its paths are not this run's files
        for state in checkpoint.get("callbacks", {}).values():
            old = state.get("dirpath") if isinstance(state, dict) else None
            if isinstance(old, str) and old != current:
                state.update(_moved(state, old, str(current)))


def _moved(state: dict[str, Any], old: str, new: str) -> dict[str, Any]:
    def move(value: Any) -> Any:
        if isinstance(value, str) and (value == old or value.startswith(old + os.sep)):
            return new + value[len(old) :]
        return value

    moved = {key: move(value) for key, value in state.items()}
    if isinstance(state.get("best_k_models"), dict):
        moved["best_k_models"] = {move(k): v for k, v in state["best_k_models"].items()}
    return moved


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint I/O for local paths with crash-safe saves."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None
    ) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        atomic_torch_save(checkpoint, path)
