"""Find and load run directories: config, metrics.jsonl, summary.json and a status."""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

FINISHED, FAILED, UNFINISHED = "finished", "failed", "unfinished"

_SEED_SUFFIX = re.compile(r"-s(\d+)$")
_TIME_SUFFIX = re.compile(r"_\d{8}-\d{6}$")  # outputs/<exp>/<run_name>_<time>
_JOB_PREFIX = re.compile(r"^\d+_")  # multirun/<exp>/<time>/<job>_<run_name>
_ERROR_MARKERS = ("Traceback (most recent call last)", "Error executing job", "Exception")


class ReportError(Exception):
    """A problem with the user's input (missing directory, no runs); shown as one line."""


@dataclass
class Run:
    """One training run as read from its directory."""

    path: Path
    label: str
    seed: int | None
    status: str
    steps: int | None
    task: str | None
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] | None = None

    def series(self, key: str) -> tuple[list[int], list[float]]:
        """(steps, values) of `key` over the run, skipping rows without a numeric value."""
        steps, values = [], []
        for row in self.history:
            value = to_float(row.get(key))
            if value is not None and "step" in row:
                steps.append(int(row["step"]))
                values.append(value)
        return steps, values

    def keys(self) -> set[str]:
        """Every metric name the run logged or summarised."""
        found = {key for row in self.history for key in row if key != "step"}
        if self.summary:
            found |= set(self.summary.get("final") or {})
        return found


def to_float(value: Any) -> float | None:
    """A metric value as float; JSONL writes non-finite floats as strings ("nan", "inf")."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def is_run_dir(path: Path) -> bool:
    """A run directory holds `.hydra/config.yaml` or `metrics.jsonl`."""
    return (path / ".hydra" / "config.yaml").is_file() or (path / "metrics.jsonl").is_file()


def find_run_dirs(root: Path) -> list[Path]:
    """Run directories at or below `root` (a run's own subfolders are not searched)."""
    found: list[Path] = []
    for current, dirs, _files in os.walk(root):
        here = Path(current)
        if is_run_dir(here):
            found.append(here)
            dirs[:] = []
            continue
        dirs[:] = sorted(d for d in dirs if d not in {".hydra", "wandb", "checkpoints"})
    return sorted(found)


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, OSError):
        return {}
    return data if isinstance(data, dict) else {}


def read_history(path: Path) -> list[dict[str, Any]]:
    """Rows of `metrics.jsonl`; a torn last line (a killed run) is skipped."""
    rows: list[dict[str, Any]] = []
    if not path.is_file():
        return rows
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def _name_from_dir(path: Path) -> str:
    return _JOB_PREFIX.sub("", _TIME_SUFFIX.sub("", path.name))


def _run_name(path: Path, config: dict[str, Any]) -> str:
    """The run name; Hydra saves `run_name` unresolved, so rebuild it from the method choice."""
    raw = config.get("run_name")
    if isinstance(raw, str) and isinstance(config.get("seed"), int):
        raw = raw.replace("${seed}", str(config["seed"]))  # e.g. a preset's fixed-T0.9-s${seed}
    if isinstance(raw, str) and "${" not in raw:
        return raw
    hydra_cfg = _read_yaml(path / ".hydra" / "hydra.yaml").get("hydra") or {}
    choice = ((hydra_cfg.get("runtime") or {}).get("choices") or {}).get("method")
    method = config.get("method") or {}
    if not choice and isinstance(method, dict) and isinstance(method.get("_target_"), str):
        parts = method["_target_"].split(".")
        choice = parts[-2] if len(parts) >= 2 else None
    if not choice:
        return _name_from_dir(path)
    rule = method.get("rule") if isinstance(method, dict) else None
    label = f"{choice}-{rule}" if rule else str(choice)
    seed = config.get("seed")
    return f"{label}-s{seed}" if seed is not None else label


def _failed_by_log(path: Path) -> bool:
    for log in path.glob("*.log"):
        try:
            text = log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        if any(marker in text for marker in _ERROR_MARKERS):
            return True
    return False


def _status(path: Path, summary: dict[str, Any] | None) -> str:
    if summary is not None:
        status = str(summary.get("status", "")).lower()
        if status == FINISHED:
            return FINISHED
        if status == FAILED:
            return FAILED
    elif _failed_by_log(path):
        return FAILED
    return UNFINISHED


def _task(summary: dict[str, Any] | None, history: list[dict[str, Any]]) -> str | None:
    if summary and summary.get("task"):
        return str(summary["task"])
    for row in history:
        for key in row:
            if key.startswith("eval/") and key.count("/") >= 2:
                return key.split("/")[1]
    return None


def load_run(path: Path) -> Run:
    """Read one run directory."""
    config = _read_yaml(path / ".hydra" / "config.yaml")
    name = _run_name(path, config)
    match = _SEED_SUFFIX.search(name)
    label = _SEED_SUFFIX.sub("", name) or name
    seed = config.get("seed")
    if not isinstance(seed, int):
        seed = int(match.group(1)) if match else None
    summary: dict[str, Any] | None = None
    summary_path = path / "summary.json"
    if summary_path.is_file():
        try:
            loaded = json.loads(summary_path.read_text(encoding="utf-8"))
            summary = loaded if isinstance(loaded, dict) else None
        except (json.JSONDecodeError, OSError):
            summary = None
    history = read_history(path / "metrics.jsonl")
    steps = summary.get("steps") if summary else None
    if not isinstance(steps, int):
        logged = [int(row["step"]) for row in history if isinstance(row.get("step"), int)]
        steps = max(logged) if logged else None
    return Run(
        path=path,
        label=label,
        seed=seed,
        status=_status(path, summary),
        steps=steps,
        task=_task(summary, history),
        history=history,
        summary=summary,
    )


def load_runs(dirs: list[str | os.PathLike]) -> list[Run]:
    """Every run below each of `dirs`; a missing directory or one without runs is an error."""
    runs: list[Run] = []
    seen: set[Path] = set()
    for entry in dirs:
        root = Path(entry)
        if not root.is_dir():
            raise ReportError(f"{entry}: no such directory")
        found = find_run_dirs(root)
        if not found:
            raise ReportError(f"{entry}: no run directories found (no .hydra/ or metrics.jsonl)")
        for path in found:
            resolved = path.resolve()
            if resolved not in seen:
                seen.add(resolved)
                runs.append(load_run(path))
    runs.sort(key=lambda r: (r.label, r.seed if r.seed is not None else -1, str(r.path)))
    return runs


def finite(values: list[float | None]) -> list[float]:
    """The finite numbers among `values`."""
    return [v for v in values if v is not None and math.isfinite(v)]
