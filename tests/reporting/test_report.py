"""Aggregation, markdown tables, plots and the HTML page, from synthetic runs."""

from __future__ import annotations

import math

import pytest

from tempo.reporting import compare
from tempo.reporting.runs import load_runs
from tempo.reporting.tables import MetricSpec, method_values, metric_table
from tests.reporting.synth import ACC, make_run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def mixed(tmp_path):
    """fixed: 3 finished seeds (0.3, 0.4, 0.5), 1 failed, 1 unfinished; heuristic-edt: 1 seed."""
    root = tmp_path / "runs"
    for seed, acc in enumerate([0.3, 0.4, 0.5]):
        make_run(root, "fixed", seed, acc)
    make_run(root, "fixed", 3, 0.99, status="failed")
    make_run(root, "fixed", 4, 0.99, status="unfinished")
    make_run(root, "heuristic", 0, 0.6, rule="edt")
    return root


def _expected_cell() -> str:
    half = 4.303 * 0.1 / math.sqrt(3)
    return f"{0.4:.4f} ± {half:.4f}"


def test_mean_from_finished_seeds_only(mixed) -> None:
    runs = load_runs([mixed])
    values = method_values(runs, MetricSpec(ACC, "final"))
    assert sorted(values["fixed"]) == pytest.approx([0.3, 0.4, 0.5])
    table = metric_table(runs, MetricSpec(ACC, "final"))
    assert table is not None
    rows = {row[0]: row for row in table.rows}
    assert rows["fixed"][1] == _expected_cell()
    assert rows["fixed"][2] == "3"
    assert rows["heuristic-edt"][1] == "0.6000 ± n/a"


def test_run_means_and_wall_time(mixed) -> None:
    runs = load_runs([mixed])
    entropy = method_values(runs, MetricSpec("explore/entropy", "mean"))
    assert entropy["fixed"] == pytest.approx([0.8, 0.8, 0.8])  # mean of 1.0 .. 0.6
    wall = method_values(runs, MetricSpec("wall_time_s", "value"))
    assert sorted(wall["fixed"]) == [10.0, 11.0, 12.0]


def test_report_markdown_lists_all_runs(mixed, tmp_path) -> None:
    out = tmp_path / "out"
    written = compare([mixed], out)
    assert out / "report.md" in written and out / "report.html" in written
    text = (out / "report.md").read_text()
    assert _expected_cell() in text
    assert "| fixed | 3 | failed |" in text
    assert "| fixed | 4 | unfinished |" in text
    assert "2 failed or unfinished run(s)" in text and "excluded" in text
    for title in ("accuracy (final)", "accuracy (best)", "pass@4 (final)", "avg@4", "maj@4"):
        assert title in text
    assert "explore/temperature_mean (mean over steps)" in text
    assert "wall_time_s" in text
    assert "![Training reward](reward.png)" in text


def test_plots_are_pngs_and_heatmap_only_for_meta_policy(mixed, tmp_path) -> None:
    out = tmp_path / "out"
    written = compare([mixed], out)
    pngs = [p for p in written if p.suffix == ".png"]
    names = {p.name for p in pngs}
    assert {"reward.png", "accuracy_arithmetic.png", "temperature.png", "entropy.png"} <= names
    assert not any(name.startswith("heatmap") for name in names)
    for png in pngs:
        assert png.read_bytes()[:8] == PNG_MAGIC

    for seed in (0, 1):
        make_run(mixed, "meta_policy", seed, 0.5, prob_temps=(0.6, 1.0, 1.2), interpolated=True)
    written = compare([mixed], tmp_path / "out2")
    heat = tmp_path / "out2" / "heatmap_meta_policy.png"
    assert heat in written and heat.read_bytes()[:8] == PNG_MAGIC


def test_html_is_self_contained(mixed, tmp_path) -> None:
    out = tmp_path / "out"
    compare([mixed], out)
    html = (out / "report.html").read_text()
    assert _expected_cell() in html
    assert html.count("data:image/png;base64,") == 4
    assert "unfinished" in html and "failed" in html
    assert 'src="reward.png"' not in html


def test_custom_metrics(mixed, tmp_path) -> None:
    out = tmp_path / "out"
    compare([mixed], out, metrics=["train/reward_mean"])
    text = (out / "report.md").read_text()
    assert "train/reward_mean (mean over steps)" in text
    assert "train/reward_mean (final)" in text
    assert "accuracy (final)" not in text
