"""Calibration table of a fixed-temperature sweep: is there an interior optimum in T?

    python experiments/temperature_testbed/calibrate.py multirun/temperature_sweep \
        --out experiments/temperature_testbed/results

Reads every run below the given folders (labels ``fixed-T<temperature>``, as
`conf/experiment/temperature_sweep.yaml` names them), and writes ``calibration.md`` (per metric:
mean ± 95% CI at every T, the best T, the coolest and the hottest T minus the best as paired
per-seed differences, the verdict) and ``calibration.png`` (each metric against T).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tempo.reporting import ReportError
from tempo.reporting.calibration import Calibration, calibrate, calibration_table
from tempo.reporting.runs import load_runs
from tempo.reporting.tables import MetricSpec, finished, markdown_table

HEADLINE = ("accuracy", "avg@8", "pass@8", "maj@8")


def headline_specs(task: str) -> list[MetricSpec]:
    """Final greedy accuracy, avg@8, pass@8 and maj@8 of `task`."""
    return [MetricSpec(f"eval/{task}/{name}", "final") for name in HEADLINE]


def plot(results: list[Calibration], path: Path) -> None:
    """One panel per metric: mean ± 95% CI against T, every seed as a faint line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(3.6 * len(results), 3.4), squeeze=False)
    for ax, cal in zip(axes[0], results, strict=True):
        temps = [p.temperature for p in cal.points]
        means = [p.estimate.mean for p in cal.points]
        errs = [p.estimate.half_width or 0.0 for p in cal.points]
        seeds = sorted({s for p in cal.points for s in p.values})
        for seed in seeds:
            xs = [p.temperature for p in cal.points if seed in p.values]
            ys = [p.values[seed] for p in cal.points if seed in p.values]
            ax.plot(xs, ys, color="0.75", linewidth=0.8)
        ax.errorbar(temps, means, yerr=errs, marker="o", capsize=3, color="C0")
        ax.axvline(cal.best.temperature, color="C3", linestyle=":", linewidth=1)
        ax.set_title(cal.metric.split("/")[-1].replace(" (final)", ""))
        ax.set_xlabel("training temperature T")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="+", help="sweep folders or run directories")
    parser.add_argument("--out", default="calibration", help="output folder")
    parser.add_argument("--task", default=None, help="task name (default: the runs' task)")
    args = parser.parse_args(argv)
    try:
        runs = load_runs(args.dirs)
    except ReportError as err:
        print(f"calibrate: {err}", file=sys.stderr)
        return 2
    done = finished(runs)
    task = args.task or next((r.task for r in done if r.task), None)
    if task is None:
        print("calibrate: no finished run with held-out metrics", file=sys.stderr)
        return 2
    results = [c for spec in headline_specs(task) if (c := calibrate(runs, spec)) is not None]
    if not results:
        print("calibrate: fewer than 3 swept temperatures have finished runs", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    seeds = sorted({r.seed for r in done if r.seed is not None})
    header = (
        f"# Calibration: fixed-temperature sweep on `{task}`\n\n"
        f"{len(done)} finished runs ({len(runs) - len(done)} not finished), seeds {seeds}.\n\n"
    )
    table = calibration_table(results)
    body = markdown_table(table) + "\n\n" + table.note + "\n"
    (out / "calibration.md").write_text(header + body, encoding="utf-8")
    plot(results, out / "calibration.png")
    print(body)
    print(out / "calibration.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
