"""PNG figures (matplotlib, Agg): curves per method with a min..max seed band, heat maps."""

from __future__ import annotations

import math
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from tempo.reporting.paired import PairedDifference  # noqa: E402
from tempo.reporting.runs import Run  # noqa: E402
from tempo.reporting.tables import Figure, finished  # noqa: E402

PROB_PREFIX = "method/prob_T="
POSITION_PREFIX = "method/T_pos="
CLASS_PREFIX = "method/T_class="
LATE_FRACTION = 0.2  # "what a method learned": the mean over the last 20% of logged steps


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "x"


def seed_curve(
    runs: list[Run], key: str
) -> tuple[list[int], list[float], list[float], list[float]]:
    """(steps, mean, min, max) of `key` across `runs` at every step any of them logged."""
    by_step: dict[int, list[float]] = {}
    for run in runs:
        for step, value in zip(*run.series(key), strict=True):
            if math.isfinite(value):
                by_step.setdefault(step, []).append(value)
    steps = sorted(by_step)
    means = [sum(by_step[s]) / len(by_step[s]) for s in steps]
    return steps, means, [min(by_step[s]) for s in steps], [max(by_step[s]) for s in steps]


def _by_label(runs: list[Run]) -> dict[str, list[Run]]:
    grouped: dict[str, list[Run]] = {}
    for run in finished(runs):
        grouped.setdefault(run.label, []).append(run)
    return dict(sorted(grouped.items()))


def line_plot(runs: list[Run], key: str, title: str, path: Path) -> Figure | None:
    """Mean over seeds per method as a line, min..max over seeds as a band; None if no data."""
    fig, ax = plt.subplots(figsize=(7, 4.2))
    drawn = False
    for label, group in _by_label(runs).items():
        steps, mean, low, high = seed_curve(group, key)
        if not steps:
            continue
        drawn = True
        marker = "." if len(steps) < 30 else None
        (line,) = ax.plot(steps, mean, label=f"{label} (n={len(group)})", marker=marker)
        if len(group) > 1:
            ax.fill_between(steps, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xlabel("step")
    ax.set_ylabel(key)
    ax.set_title(f"{title} (band: min..max over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Figure(title, path)


def _candidate(key: str) -> float:
    try:
        return float(key[len(PROB_PREFIX) :])
    except ValueError:
        return math.inf


def heatmap(label: str, group: list[Run], path: Path) -> Figure | None:
    """Mean over seeds of `method/prob_T=<t>`: candidates on y, steps on x; None if none."""
    keys = sorted(
        {k for run in group for k in run.keys() if k.startswith(PROB_PREFIX)}, key=_candidate
    )
    if not keys:
        return None
    curves = {key: dict(zip(*seed_curve(group, key)[:2], strict=True)) for key in keys}
    steps = sorted({s for curve in curves.values() for s in curve})
    if not steps:
        return None
    grid = [[curves[key].get(s, math.nan) for s in steps] for key in keys]
    fig, ax = plt.subplots(figsize=(7, 0.4 * len(keys) + 2.2))
    mids = [(a + b) / 2 for a, b in zip(steps, steps[1:], strict=False)]
    x_edges = [steps[0] - 0.5, *mids, steps[-1] + 0.5]  # steps need not be evenly spaced
    y_edges = [i - 0.5 for i in range(len(keys) + 1)]
    image = ax.pcolormesh(x_edges, y_edges, grid, cmap="viridis", shading="flat")
    ax.set_yticks(range(len(keys)))
    ax.set_yticklabels([k[len(PROB_PREFIX) :] for k in keys])
    ax.set_xlabel("step")
    ax.set_ylabel("candidate temperature")
    title = f"{label}: temperature probabilities"
    ax.set_title(f"{title} (mean over {len(group)} seed(s))")
    fig.colorbar(image, ax=ax, label="probability")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Figure(title, path)


def _position_start(key: str) -> int:
    try:
        return int(key[len(POSITION_PREFIX) :].split("-")[0])
    except ValueError:
        return 10**9


def _late_mean(group: list[Run], key: str) -> float | None:
    """Mean over seeds of each run's mean of `key` over its last LATE_FRACTION of steps."""
    per_run = []
    for run in group:
        values = [v for v in run.series(key)[1] if math.isfinite(v)]
        if values:
            tail = values[-max(1, math.ceil(LATE_FRACTION * len(values))) :]
            per_run.append(sum(tail) / len(tail))
    return sum(per_run) / len(per_run) if per_run else None


def temperature_profile(runs: list[Run], path: Path) -> Figure | None:
    """Where per-token methods put T: late-training mean T by position in the completion
    (left) and mean T per token class over training (right); None when no run logs them."""
    groups = {
        label: group
        for label, group in _by_label(runs).items()
        if any(k.startswith(POSITION_PREFIX) for run in group for k in run.keys())
    }
    if not groups:
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for index, (label, group) in enumerate(groups.items()):
        colour = f"C{index % 10}"
        keys = sorted(
            {k for run in group for k in run.keys() if k.startswith(POSITION_PREFIX)},
            key=_position_start,
        )
        points = [(k[len(POSITION_PREFIX) :], _late_mean(group, k)) for k in keys]
        points = [(name, value) for name, value in points if value is not None]
        left.plot(
            [name for name, _ in points],
            [value for _, value in points],
            marker="o",
            color=colour,
            label=f"{label} (n={len(group)})",
        )
        classes = sorted({k for run in group for k in run.keys() if k.startswith(CLASS_PREFIX)})
        for style, key in zip(("-", "--", ":"), classes, strict=False):
            steps, mean, _, _ = seed_curve(group, key)
            name = key[len(CLASS_PREFIX) :]
            right.plot(steps, mean, style, color=colour, label=f"{label}: {name}")
    left.set_xlabel("token position in the completion")
    left.set_ylabel("mean T (last 20% of steps)")
    left.tick_params(axis="x", labelrotation=45)
    left.set_title("T by position")
    right.set_xlabel("step")
    right.set_ylabel("mean T")
    right.set_title("T by token class (mean over seeds)")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize="x-small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Figure("Per-token temperature: by position and token class", path)


def paired_plot(
    differences: dict[str, list[PairedDifference]], baseline: str, path: Path
) -> Figure | None:
    """Mean paired difference vs `baseline` with its 95% t-interval, one panel per metric."""
    panels = [(title, diffs) for title, diffs in differences.items() if diffs]
    if not panels:
        return None
    fig, axes = plt.subplots(
        len(panels), 1, figsize=(7, sum(0.45 * len(d) + 1.0 for _, d in panels)), squeeze=False
    )
    for ax, (title, diffs) in zip(axes[:, 0], panels, strict=True):
        ys = list(range(len(diffs)))
        for y, d in zip(ys, diffs, strict=True):
            lo, hi = d.t_interval if d.t_interval is not None else (d.mean, d.mean)
            colour = (
                "tab:green"
                if d.resolved and d.mean > 0
                else ("tab:red" if d.resolved else "tab:gray")
            )
            ax.errorbar(
                d.mean, y, xerr=[[d.mean - lo], [hi - d.mean]], fmt="o", color=colour, capsize=3
            )
        ax.axvline(0.0, color="black", linewidth=0.8)
        ax.set_yticks(ys)
        ax.set_yticklabels([f"{d.method} (n={d.n})" for d in diffs])
        ax.set_title(title, fontsize="small")
        ax.grid(alpha=0.3, axis="x")
    axes[-1, 0].set_xlabel(f"difference vs {baseline} (95% paired t-interval)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Figure(f"Paired differences vs {baseline}", path)


def make_plots(runs: list[Run], out: Path) -> list[Figure]:
    """Write every figure the finished runs have data for into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    figures: list[Figure | None] = [
        line_plot(runs, "train/reward_mean", "Training reward", out / "reward.png")
    ]
    for task in sorted({run.task for run in finished(runs) if run.task}):
        key = f"eval/{task}/accuracy"
        figures.append(
            line_plot(runs, key, f"Held-out accuracy ({task})", out / f"accuracy_{_slug(task)}.png")
        )
    figures.append(
        line_plot(runs, "explore/temperature_mean", "Mean temperature", out / "temperature.png")
    )
    figures.append(line_plot(runs, "explore/entropy", "Entropy at T=1", out / "entropy.png"))
    for label, group in _by_label(runs).items():
        if label.startswith("meta_policy") or any(
            k.startswith(PROB_PREFIX) for run in group for k in run.keys()
        ):
            figures.append(heatmap(label, group, out / f"heatmap_{_slug(label)}.png"))
    figures.append(temperature_profile(runs, out / "temperature_profile.png"))
    return [figure for figure in figures if figure is not None]
