"""Compare training runs: load run directories, aggregate seeds, write markdown/HTML/PNGs.

Library code for `tempo-compare`; it reads files only (no Hydra).
"""

from __future__ import annotations

import os
from pathlib import Path

from tempo.reporting.runs import ReportError, Run, load_runs
from tempo.reporting.stats import Estimate, mean_ci, t_quantile_975
from tempo.reporting.tables import (
    Report,
    custom_specs,
    default_specs,
    finished,
    metric_table,
    paired_table,
    runs_table,
    to_markdown,
)

__all__ = [
    "Estimate",
    "Report",
    "ReportError",
    "Run",
    "build_report",
    "compare",
    "load_runs",
    "mean_ci",
    "t_quantile_975",
]

CI_NOTE = (
    "Each cell is the mean over a method's finished seeds ± the half-width of a 95% "
    "confidence interval, t(0.975, n-1) · s / √n with the sample standard deviation s "
    "(n/a when n = 1). Runs with the same label (run name without `-s<seed>`) are seeds "
    "of one method."
)


def build_report(
    runs: list[Run],
    sources: list[str],
    metrics: list[str] | None,
    baseline: str | None = None,
) -> Report:
    """Runs table, per-metric tables and, with a `baseline` label, paired differences against
    it (figures are added by `compare`). An unknown baseline is a ReportError naming the
    labels there are."""
    usable = finished(runs)
    specs = custom_specs(metrics) if metrics else default_specs(usable)
    tables = [table for spec in specs if (table := metric_table(runs, spec)) is not None]
    notes = [CI_NOTE]
    seeds: dict[str, list[int | None]] = {}
    for run in usable:
        seeds.setdefault(run.label, []).append(run.seed)
    for label, found in sorted(seeds.items()):
        repeated = sorted({str(s) for s in found if found.count(s) > 1})
        if repeated:
            notes.append(
                f"Warning: method `{label}` has several finished runs with seed "
                f"{', '.join(repeated)}; they are averaged as if they were different seeds "
                "(compare one experiment at a time if their settings differ)."
            )
    report = Report(sources=sources, runs=runs_table(runs), metrics=tables, notes=notes)
    if baseline is not None:
        labels = sorted({run.label for run in usable})
        if baseline not in labels:
            raise ReportError(
                f"--baseline {baseline!r} is not a method with finished runs here; "
                f"one of: {', '.join(labels) or '(none)'}"
            )
        report.baseline = baseline
        for spec in specs:
            found = paired_table(runs, spec, baseline)
            if found is not None:
                table, diffs = found
                report.paired.append(table)
                report.differences[table.title] = diffs
    return report


def compare(
    dirs: list[str | os.PathLike],
    out: str | os.PathLike,
    metrics: list[str] | None = None,
    baseline: str | None = None,
) -> list[Path]:
    """Load the runs below `dirs`, write report.md, PNGs and report.html to `out`; return paths."""
    from tempo.reporting.html import to_html
    from tempo.reporting.plots import make_plots, paired_plot

    runs = load_runs(dirs)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = build_report(runs, [str(d) for d in dirs], metrics, baseline)
    report.figures = make_plots(runs, out_dir)
    if report.baseline is not None:
        figure = paired_plot(report.differences, report.baseline, out_dir / "paired.png")
        if figure is not None:
            report.figures.append(figure)
    md_path = out_dir / "report.md"
    md_path.write_text(to_markdown(report, out_dir), encoding="utf-8")
    html_path = out_dir / "report.html"
    html_path.write_text(to_html(report), encoding="utf-8")
    return [md_path, *(figure.path for figure in report.figures), html_path]
