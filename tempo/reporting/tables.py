"""The report's tables (runs, per-metric mean and 95% CI by method) and their markdown form."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from tempo.reporting.paired import PairedDifference, paired_difference
from tempo.reporting.runs import FINISHED, UNREADABLE, Run, finite, to_float
from tempo.reporting.stats import mean_ci

_SAMPLE_METRIC = re.compile(r"^(pass|avg|maj)@(\d+)$")
_HOW_TEXT = {"final": "final", "best": "best", "mean": "mean over steps", "value": ""}


@dataclass(frozen=True)
class MetricSpec:
    """A per-run scalar: `how` is final | best | mean (over logged steps) | value (summary)."""

    key: str
    how: str

    @property
    def title(self) -> str:
        suffix = _HOW_TEXT[self.how]
        return f"{self.key} ({suffix})" if suffix else self.key


@dataclass
class Table:
    """A titled table of strings."""

    title: str
    headers: list[str]
    rows: list[list[str]]
    note: str = ""


@dataclass
class Figure:
    """A written image and its caption."""

    title: str
    path: Path


@dataclass
class Report:
    """Everything a report shows, rendered by `to_markdown` and `html.to_html`."""

    sources: list[str]
    runs: Table
    metrics: list[Table]
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    baseline: str | None = None
    paired: list[Table] = field(default_factory=list)  # one per metric, vs `baseline`
    differences: dict[str, list[PairedDifference]] = field(default_factory=dict)  # by title


PAIRED_NOTE = (
    "Runs with the same seed see the same prompts, so each method is compared with the "
    "baseline seed by seed: d_s = method_s - baseline_s. The mean of d over the seeds both "
    "ran, its 95% t-interval (mean ± t(0.975, n-1) · s_d / √n), a 95% bootstrap percentile "
    "interval (10,000 resamples of the seeds, seeded), how many seeds the method won, tied "
    "and lost, and the seeds a paired t-test would need to resolve the observed mean "
    "difference at 95% confidence with 80% power (with s_d as the true spread)."
)


def fmt(value: float) -> str:
    """Numbers in tables: four decimals (one above 1000)."""
    return f"{value:.1f}" if abs(value) >= 1000 else f"{value:.4f}"


def finished(runs: list[Run]) -> list[Run]:
    """The runs that enter aggregate statistics."""
    return [run for run in runs if run.status == FINISHED]


def _sample_order(key: str) -> tuple[int, int]:
    match = _SAMPLE_METRIC.match(key.rsplit("/", 1)[-1])
    assert match is not None
    return (["pass", "avg", "maj"].index(match.group(1)), int(match.group(2)))


def default_specs(runs: list[Run]) -> list[MetricSpec]:
    """Held-out accuracy (final, best), pass@k/avg@n/maj@n, exploration, wall time."""
    specs: list[MetricSpec] = []
    keys = set().union(*(run.keys() for run in runs)) if runs else set()
    for task in sorted({run.task for run in runs if run.task}):
        prefix = f"eval/{task}/"
        specs += [MetricSpec(f"{prefix}accuracy", "final"), MetricSpec(f"{prefix}accuracy", "best")]
        sampled = [
            k for k in keys if k.startswith(prefix) and _SAMPLE_METRIC.match(k[len(prefix) :])
        ]
        specs += [MetricSpec(k, "final") for k in sorted(sampled, key=_sample_order)]
    for key in ("explore/entropy", "explore/temperature_mean"):
        specs += [MetricSpec(key, "mean"), MetricSpec(key, "final")]
    specs.append(MetricSpec("wall_time_s", "value"))
    return specs


def custom_specs(keys: list[str]) -> list[MetricSpec]:
    """Specs for `--metrics`: eval keys final and best, other logged keys mean and final."""
    specs: list[MetricSpec] = []
    for key in keys:
        if key in {"wall_time_s", "steps"}:
            specs.append(MetricSpec(key, "value"))
        elif key.startswith("eval/"):
            specs += [MetricSpec(key, "final"), MetricSpec(key, "best")]
        else:
            specs += [MetricSpec(key, "mean"), MetricSpec(key, "final")]
    return specs


def run_value(run: Run, spec: MetricSpec) -> float | None:
    """One run's number for `spec`, from summary.json where it has it, else from metrics.jsonl."""
    summary = run.summary or {}
    if spec.how == "value":
        return to_float(summary.get(spec.key))
    _, series = run.series(spec.key)
    values = finite(series)
    if spec.how == "mean":
        return sum(values) / len(values) if values else None
    section = summary.get(spec.how) or {}
    if spec.key in section:
        return to_float(section[spec.key])
    if not values:
        return None
    return values[-1] if spec.how == "final" else max(values)


def method_values(runs: list[Run], spec: MetricSpec) -> dict[str, list[float]]:
    """Per method label, the finite values of `spec` over its finished seeds."""
    grouped: dict[str, list[float]] = {}
    for run in finished(runs):
        value = run_value(run, spec)
        if value is not None:
            grouped.setdefault(run.label, []).extend(finite([value]))
    return grouped


def metric_table(runs: list[Run], spec: MetricSpec) -> Table | None:
    """Mean +- 95% CI and n per method for one metric; None when no finished run has it."""
    grouped = method_values(runs, spec)
    rows = []
    for label in sorted(grouped):
        est = mean_ci(grouped[label])
        if est is None:
            continue
        half = fmt(est.half_width) if est.half_width is not None else "n/a"
        rows.append([label, f"{fmt(est.mean)} ± {half}", str(est.n)])
    if not rows:
        return None
    return Table(spec.title, ["method", "mean ± 95% CI", "n"], rows)


def seed_values(runs: list[Run], spec: MetricSpec) -> dict[str, dict[int, float]]:
    """Per method label, seed -> value of `spec` over its finished runs with a known seed
    (a seed seen twice keeps the mean of its runs)."""
    sums: dict[str, dict[int, list[float]]] = {}
    for run in finished(runs):
        value = run_value(run, spec)
        if run.seed is None or value is None or not finite([value]):
            continue
        sums.setdefault(run.label, {}).setdefault(run.seed, []).append(value)
    return {
        label: {seed: sum(v) / len(v) for seed, v in by_seed.items()}
        for label, by_seed in sums.items()
    }


def _interval(pair: tuple[float, float] | None) -> str:
    return "n/a" if pair is None else f"[{fmt(pair[0])}, {fmt(pair[1])}]"


def _needed(diff: PairedDifference) -> str:
    if diff.seeds_needed is None:
        return "n/a"
    return f"> {diff.seeds_needed - 1}" if diff.seeds_needed > 10_000 else str(diff.seeds_needed)


def paired_table(
    runs: list[Run], spec: MetricSpec, baseline: str
) -> tuple[Table, list[PairedDifference]] | None:
    """Every other method minus `baseline` on `spec`, over the seeds both ran; None when no
    method shares a seed with the baseline."""
    values = seed_values(runs, spec)
    if baseline not in values:
        return None
    diffs = [
        diff
        for label in sorted(values)
        if label != baseline
        and (diff := paired_difference(label, baseline, values[label], values[baseline]))
    ]
    if not diffs:
        return None
    rows = [
        [
            d.method,
            str(d.n),
            fmt(d.mean),
            _interval(d.t_interval),
            _interval(d.bootstrap_interval),
            f"{d.wins}/{d.ties}/{d.losses}",
            _needed(d),
        ]
        for d in diffs
    ]
    headers = [
        "method",
        "paired seeds",
        f"mean difference vs {baseline}",
        "95% t-interval",
        "95% bootstrap",
        "wins/ties/losses",
        "seeds needed",
    ]
    return Table(spec.title, headers, rows), diffs


def _display_path(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:  # another drive on Windows
        return str(path)


def runs_table(runs: list[Run]) -> Table:
    """Every run found, whatever its status; ``notes`` names the problems met reading it
    (``2 bad lines in metrics.jsonl``, ``summary.json unreadable``, an unreadable run's
    reason), empty for a clean run."""
    statuses = {run.status for run in runs}
    rows = [
        [
            run.label,
            str(run.seed) if run.seed is not None else "?",
            run.status,
            str(run.steps) if run.steps is not None else "-",
            _display_path(run.path),
            "; ".join(run.notes),
        ]
        for run in runs
    ]
    excluded = len(runs) - len(finished(runs))
    kinds = "failed, unfinished or unreadable" if UNREADABLE in statuses else "failed or unfinished"
    note = (
        f"{excluded} {kinds} run(s) are listed here but excluded from the statistics and "
        "plots below (their partial metrics are not used)."
        if excluded
        else "All runs finished."
    )
    return Table("Runs", ["method", "seed", "status", "steps", "path", "notes"], rows, note)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(table: Table) -> str:
    """A GitHub-flavoured markdown table."""
    lines = [
        "| " + " | ".join(_cell(h) for h in table.headers) + " |",
        "| " + " | ".join("---" for _ in table.headers) + " |",
    ]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in table.rows]
    return "\n".join(lines)


def to_markdown(report: Report, image_dir: Path) -> str:
    """The whole report as markdown; images are linked relative to `image_dir`."""
    parts = ["# Run comparison", "", "Sources: " + ", ".join(f"`{s}`" for s in report.sources)]
    parts += ["", "## Runs", "", markdown_table(report.runs), "", report.runs.note]
    parts += ["", "## Metrics", ""]
    parts += [note + "\n" for note in report.notes]
    if not report.metrics:
        parts.append("No finished runs: nothing to aggregate.")
    for table in report.metrics:
        parts += [f"### {table.title}", "", markdown_table(table), ""]
    if report.baseline is not None:
        parts += [f"## Paired differences vs `{report.baseline}`", "", PAIRED_NOTE, ""]
        if not report.paired:
            parts += [f"No method shares a seed with `{report.baseline}`.", ""]
        for table in report.paired:
            parts += [f"### {table.title}", "", markdown_table(table), ""]
    if report.figures:
        parts += ["## Plots", ""]
        for figure in report.figures:
            link = os.path.relpath(figure.path, image_dir)
            parts += [f"### {figure.title}", "", f"![{figure.title}]({link})", ""]
    return "\n".join(parts).rstrip() + "\n"
