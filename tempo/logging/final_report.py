"""The lines a training run ends with: its status, headline metrics and run directory.

Printed by the runner right after it writes `summary.json` (rank 0 only), from that same
summary, so the console, the job log (`train.log`) and the file agree:

    [tempo] finished: 200 RL steps in 312.4 s
    [tempo] eval arithmetic: greedy accuracy 0.412 (start 0.180), avg@8 0.395, pass@8 0.720
    [tempo] last RL step: reward 0.406, mean T 0.981, entropy 0.734
    [tempo] run directory: /abs/outputs/default/fixed-s0_20250101-120000
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

PREFIX = "[tempo]"

#: The last training step's headline values: (summary key, label).
TRAIN_HEADLINES = (
    ("train/reward_mean", "reward"),
    ("explore/temperature_mean", "mean T"),
    ("explore/entropy", "entropy"),
)


def _number(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "n/a"
    return f"{value:.3f}"


def _largest(metrics: Mapping[str, Any], name: str) -> str | None:
    """The `<name>@k` metric with the largest k (e.g. pass@8 of pass@1, pass@4, pass@8)."""
    found = [(int(m[1]), key) for key in metrics if (m := re.fullmatch(rf"{name}@(\d+)", key))]
    return max(found)[1] if found else None


def _eval_line(task: str, final: Mapping[str, Any], initial: Mapping[str, Any]) -> str | None:
    prefix = f"eval/{task}/"
    metrics = {k[len(prefix) :]: v for k, v in final.items() if k.startswith(prefix)}
    parts = []
    if "accuracy" in metrics:
        start = initial.get(prefix + "accuracy")
        shown = f"greedy accuracy {_number(metrics['accuracy'])}"
        parts.append(shown + (f" (start {_number(start)})" if start is not None else ""))
    for name in ("avg", "pass"):
        key = _largest(metrics, name)
        if key is not None:
            parts.append(f"{key} {_number(metrics[key])}")
    return f"eval {task}: {', '.join(parts)}" if parts else None


def _status_line(summary: Mapping[str, Any]) -> str:
    status = str(summary.get("status", "unknown"))
    steps, seconds = summary.get("steps"), summary.get("wall_time_s")
    count = f"{steps} RL step{'' if steps == 1 else 's'}" if isinstance(steps, int) else None
    took = f" in {seconds:.1f} s" if isinstance(seconds, (int, float)) else ""
    when = (f"after {count}" if count else "before the first RL step") + took
    if status == "failed":
        return f"failed: {summary.get('error') or 'unknown error'} ({when})"
    if status == "preempted":
        return f"preempted {when}: run the same command again (same run directory) to resume"
    return f"{status}: {count or 'no RL step'}{took}"


def report_lines(run_dir: str | os.PathLike, summary: Mapping[str, Any]) -> list[str]:
    """The final report of a run from its summary (as `summary.json` holds it)."""
    final = summary.get("final") or {}
    initial = summary.get("initial") or {}
    lines = [_status_line(summary)]
    tasks = sorted({key.split("/")[1] for key in final if re.match(r"eval/[^/]+/", key)})
    training = summary.get("task")
    for task in sorted(tasks, key=lambda name: name != training):  # the training task first
        line = _eval_line(task, final, initial)
        if line is not None:
            lines.append(line)
    train = [f"{label} {_number(final[key])}" for key, label in TRAIN_HEADLINES if key in final]
    if train:
        lines.append(f"last RL step: {', '.join(train)}")
    lines.append(f"run directory: {Path(run_dir).absolute()}")
    return [f"{PREFIX} {line}" for line in lines]


def print_final_report(
    run_dir: str | os.PathLike, summary: Mapping[str, Any], file: TextIO | None = None
) -> None:
    """Print `report_lines` to `file` (default stdout, which the job log copies)."""
    stream = sys.stdout if file is None else file
    print("\n".join(report_lines(run_dir, summary)), file=stream, flush=True)
