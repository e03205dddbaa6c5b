"""Find and load run directories: config, metrics.jsonl, summary.json and a status.

Bad files never stop a report: each problem found while reading a run is logged as a warning
(logger ``tempo.reporting.runs``; ``tempo-compare`` prints them on stderr as
``tempo-compare: warning: <file>: ...``) and kept in `Run.notes`, which the report's runs
table shows in its ``notes`` column. Unreadable lines of ``metrics.jsonl`` (torn, binary, not
JSON, not an object, or a ``step`` that is not an integer) are skipped and counted; a
``summary.json`` that cannot be read or parsed leaves the run ``unfinished`` (its final
metrics are lost with it); a run that cannot be read at all (e.g. ``metrics.jsonl`` is not a
readable file) is listed with status ``unreadable`` and the reason, and the others are
reported as usual.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

FINISHED, FAILED, UNFINISHED, UNREADABLE = "finished", "failed", "unfinished", "unreadable"

_SEED_SUFFIX = re.compile(r"-s(\d+)$")
_TIME_SUFFIX = re.compile(r"_\d{8}-\d{6}$")  # outputs/<exp>/<run_name>_<time>
_JOB_PREFIX = re.compile(r"^\d+_")  # multirun/<exp>/<time>/<job>_<run_name>
_ERROR_MARKERS = ("Traceback (most recent call last)", "Error executing job", "Exception")
_INTERPOLATION = re.compile(r"\$\{([A-Za-z_][\w.]*)\}")  # a plain ${a.b}, no resolver
_LISTED_LINES = 10  # line numbers named in a warning; the rest are counted

log = logging.getLogger(__name__)


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
    notes: list[str] = field(default_factory=list)  # problems met reading it (see module doc)

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


def _warn(notes: list[str] | None, path: Path, problem: str, note: str | None = None) -> None:
    """Log ``<path>: <problem>`` as a warning and add ``note`` (default: ``problem``)."""
    log.warning("%s: %s", path, problem)
    if notes is not None:
        notes.append(note or problem)


def _reason(err: BaseException) -> str:
    """A one-line reason for an exception (type and message, bounded)."""
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text[:200]}" if text else type(err).__name__


def _read_yaml(path: Path, notes: list[str] | None = None) -> dict[str, Any]:
    """A YAML mapping, or {} when the file is missing or unreadable (a warning and a note)."""
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, OSError, ValueError) as err:  # ValueError: not UTF-8
        _warn(notes, path, f"unreadable, ignored ({_reason(err)})", f"{path.name} unreadable")
        return {}
    return data if isinstance(data, dict) else {}


def _step(row: dict[str, Any]) -> bool:
    """Is the row's ``step`` (when it has one) an integer? An integral float is made one."""
    if "step" not in row:
        return True
    step = row["step"]
    if isinstance(step, float) and step.is_integer():
        row["step"] = int(step)
        return True
    return isinstance(step, int) and not isinstance(step, bool)


def _line_list(numbers: list[int]) -> str:
    shown = ", ".join(str(n) for n in numbers[:_LISTED_LINES])
    return shown + (", ..." if len(numbers) > _LISTED_LINES else "")


def read_metrics(path: Path) -> tuple[list[dict[str, Any]], list[int]]:
    """(rows of ``metrics.jsonl``, 1-based numbers of its unreadable lines).

    A line is unreadable when it is not UTF-8, not JSON, not a JSON object, or has a ``step``
    that is not an integer. A missing file has no rows; one that cannot be read raises OSError.
    """
    rows: list[dict[str, Any]] = []
    bad: list[int] = []
    if not path.exists():
        return rows, bad
    with open(path, "rb") as stream:
        for number, raw in enumerate(stream, start=1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
                bad.append(number)
                continue
            if isinstance(row, dict) and _step(row):
                rows.append(row)
            else:
                bad.append(number)
    return rows, bad


def read_history(path: Path, notes: list[str] | None = None) -> list[dict[str, Any]]:
    """Rows of `metrics.jsonl`; unreadable lines (e.g. a killed run's torn last line) are
    skipped, with a warning naming them and a note ``N bad lines in metrics.jsonl``."""
    rows, bad = read_metrics(path)
    if bad:
        lines = "line" if len(bad) == 1 else "lines"
        _warn(
            notes,
            path,
            f"{len(bad)} unreadable {lines} ({_line_list(bad)}) skipped",
            f"{len(bad)} bad {lines} in {path.name}",
        )
    return rows


def _name_from_dir(path: Path) -> str:
    return _JOB_PREFIX.sub("", _TIME_SUFFIX.sub("", path.name))


def _mapping_path(data: dict[str, Any], *keys: str) -> dict[str, Any]:
    """``data[k1][k2]...`` where each level is a mapping, else {}."""
    for key in keys:
        data = data.get(key) if isinstance(data, dict) else None
        if not isinstance(data, dict):
            return {}
    return data


def _scalar_at(config: dict[str, Any], dotted: str, default: str) -> str:
    """The config's scalar value at ``a.b.c`` as text, else `default` (left unresolved)."""
    value: Any = config
    for key in dotted.split("."):
        value = value.get(key) if isinstance(value, dict) else None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return default
    return str(value)


def _run_name(path: Path, config: dict[str, Any]) -> str:
    """The run name; Hydra saves `run_name` unresolved, so rebuild it from the method choice."""
    raw = config.get("run_name")
    if isinstance(raw, str):  # e.g. a preset's fixed-T${method.temperature}-s${seed}
        raw = _INTERPOLATION.sub(lambda m: _scalar_at(config, m.group(1), m.group(0)), raw)
    if isinstance(raw, str) and "${" not in raw:
        return raw
    choice = _mapping_path(
        _read_yaml(path / ".hydra" / "hydra.yaml"), "hydra", "runtime", "choices"
    )
    choice = choice.get("method")
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
    for job_log in path.glob("*.log"):
        try:
            text = job_log.read_text(encoding="utf-8", errors="replace")
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


def _read_summary(path: Path, notes: list[str]) -> dict[str, Any] | None:
    """``summary.json`` as a mapping, or None when missing; an unreadable, unparsable or
    ill-shaped file is None too, with a warning and a note (the run then counts as
    unfinished: its final metrics are lost)."""
    if not path.exists():
        return None
    try:
        loaded = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, ValueError, RecursionError) as err:  # ValueError: JSON or UTF-8
        _warn(
            notes,
            path,
            f"unreadable ({_reason(err)}); the run counts as unfinished",
            f"{path.name} unreadable",
        )
        return None
    if not isinstance(loaded, dict):
        _warn(notes, path, "not a JSON object; the run counts as unfinished", "bad summary.json")
        return None
    for section in ("final", "best"):
        if section in loaded and not isinstance(loaded[section], dict):
            _warn(notes, path, f"{section!r} is not an object, ignored", f"bad summary {section}")
            del loaded[section]
    return loaded


def load_run(path: Path) -> Run:
    """Read one run directory (problems become warnings and `Run.notes`, see the module doc);
    raises OSError when ``metrics.jsonl`` exists but cannot be read."""
    notes: list[str] = []
    config = _read_yaml(path / ".hydra" / "config.yaml", notes)
    name = _run_name(path, config)
    match = _SEED_SUFFIX.search(name)
    label = _SEED_SUFFIX.sub("", name) or name
    seed = config.get("seed")
    if not isinstance(seed, int) or isinstance(seed, bool):
        seed = int(match.group(1)) if match else None
    summary = _read_summary(path / "summary.json", notes)
    history = read_history(path / "metrics.jsonl", notes)
    steps = summary.get("steps") if summary else None
    if not isinstance(steps, int) or isinstance(steps, bool):
        logged = [row["step"] for row in history if "step" in row]
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
        notes=notes,
    )


def unreadable_run(path: Path, err: BaseException) -> Run:
    """The stand-in for a run that could not be read: status ``unreadable``, the reason as
    its note, labelled by its directory name."""
    reason = _reason(err)
    log.warning("%s: run unreadable, left out (%s)", path, reason)
    name = _name_from_dir(path)
    match = _SEED_SUFFIX.search(name)
    return Run(
        path=path,
        label=_SEED_SUFFIX.sub("", name) or name,
        seed=int(match.group(1)) if match else None,
        status=UNREADABLE,
        steps=None,
        task=None,
        notes=[reason],
    )


def load_runs(dirs: list[str | os.PathLike]) -> list[Run]:
    """Every run below each of `dirs`; a missing directory or one without runs is an error.

    A run that cannot be read is listed as `unreadable_run` (status ``unreadable``)."""
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
                try:
                    runs.append(load_run(path))
                except Exception as err:  # one bad run never stops the report of the others
                    runs.append(unreadable_run(path, err))
    runs.sort(key=lambda r: (r.label, r.seed if r.seed is not None else -1, str(r.path)))
    return runs


def finite(values: list[float | None]) -> list[float]:
    """The finite numbers among `values`."""
    return [v for v in values if v is not None and math.isfinite(v)]
