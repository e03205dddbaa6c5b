"""`tempo-compare` as a subprocess: outputs, exit codes, one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.reporting.synth import make_run

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tempo.compare", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "MPLBACKEND": "Agg"},
    )


def test_cli_writes_report(tmp_path) -> None:
    runs = tmp_path / "runs"
    for seed in range(2):
        make_run(runs, "fixed", seed, 0.4 + 0.1 * seed)
        make_run(runs, "meta_policy", seed, 0.5, prob_temps=(0.6, 1.0))
    make_run(runs, "fixed", 5, status="failed")
    out = tmp_path / "cmp"
    proc = _run(str(runs), "--out", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    printed = proc.stdout.split()
    for name in ("report.md", "report.html", "reward.png", "heatmap_meta_policy.png"):
        assert (out / name).is_file()
        assert str(out / name) in printed
    assert "| fixed | 5 | failed |" in (out / "report.md").read_text()


def test_cli_default_out_dir(tmp_path) -> None:
    run_dir = make_run(tmp_path / "runs", "fixed", 0)
    proc = _run(str(run_dir), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "comparison" / "report.html").is_file()


def test_cli_missing_dir_exits_2_with_one_line(tmp_path) -> None:
    run_dir = make_run(tmp_path / "runs", "fixed", 0)
    missing = tmp_path / "does-not-exist"
    proc = _run(str(run_dir), str(missing), "--out", str(tmp_path / "o"), cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(missing) in lines[0]
    assert "Traceback" not in proc.stderr


def test_cli_dir_without_runs_exits_2(tmp_path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = _run(str(empty), cwd=tmp_path)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and str(empty) in proc.stderr


def test_cli_reports_bad_files_per_run_and_the_other_runs(tmp_path) -> None:
    runs = tmp_path / "runs"
    clean = make_run(runs, "fixed", 0, 0.4)
    torn = make_run(runs, "fixed", 1, 0.6)
    with open(torn / "metrics.jsonl", "ab") as f:  # a binary line, a torn one, a bad step
        f.write(
            b"\x00\xff\xfe\x9c\n" + b'{"step": "five", "train/reward_mean": 1}\n{"step": 5, "tr'
        )
    truncated = make_run(runs, "meta_policy", 0)
    text = (truncated / "summary.json").read_text()
    (truncated / "summary.json").write_text(text[:40])
    broken = make_run(runs, "meta_policy", 1)
    (broken / "metrics.jsonl").unlink()
    (broken / "metrics.jsonl").mkdir()
    out = tmp_path / "cmp"
    proc = _run("runs", "--out", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    rel = {p: p.relative_to(tmp_path) for p in (torn, truncated, broken)}
    warnings = proc.stderr.strip().splitlines()
    assert len(warnings) == 3 and all(w.startswith("tempo-compare: warning: ") for w in warnings)
    assert f"{rel[broken]}: run unreadable, left out (IsADirectoryError: " in warnings[2]
    assert warnings[0] == (
        f"tempo-compare: warning: {rel[torn]}/metrics.jsonl: 3 unreadable lines (6, 7, 8) skipped"
    )
    assert warnings[1].startswith(
        f"tempo-compare: warning: {rel[truncated]}/summary.json: unreadable (JSONDecodeError"
    )
    report = (out / "report.md").read_text()
    assert f"| fixed | 0 | finished | 4 | {os.path.relpath(clean, tmp_path)} |  |" in report
    assert f"| fixed | 1 | finished | 4 | {rel[torn]} | 3 bad lines in metrics.jsonl |" in report
    assert f"| meta_policy | 0 | unfinished | 4 | {rel[truncated]} | summary.json unreadable |" in (
        report
    )
    assert f"| meta_policy | 1 | unreadable | - | {rel[broken]} | IsADirectoryError: " in report
    # Both finished fixed seeds are aggregated (the torn one's 5 good rows count).
    assert "| fixed | 0.5000 ± " in report and "| 2 |" in report
    assert "2 failed, unfinished or unreadable run(s)" in report
    assert "3 bad lines in metrics.jsonl" in (out / "report.html").read_text()


def test_cli_baseline_reports_paired_differences(tmp_path) -> None:
    """Per-seed differences vs the baseline, checked against the hand computation."""
    runs = tmp_path / "runs"
    fixed = {0: 0.40, 1: 0.42, 2: 0.38}
    tampo = {0: 0.45, 1: 0.46, 2: 0.44, 3: 0.9}  # seed 3 has no baseline partner
    for seed, acc in fixed.items():
        make_run(runs, "fixed", seed, acc)
    for seed, acc in tampo.items():
        make_run(runs, "meta_policy", seed, acc)
    out = tmp_path / "cmp"
    proc = _run(str(runs), "--out", str(out), "--baseline", "fixed", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    text = (out / "report.md").read_text()
    assert "## Paired differences vs `fixed`" in text
    diffs = [tampo[s] - fixed[s] for s in range(3)]  # 0.05, 0.04, 0.06
    mean = sum(diffs) / 3
    std = (sum((d - mean) ** 2 for d in diffs) / 2) ** 0.5
    half = 4.302653 * std / 3**0.5  # t_{0.975, 2}
    row = next(
        line
        for line in text.split("### eval/arithmetic/accuracy (final)")[-1].splitlines()
        if line.startswith("| meta_policy |")
    )
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "3" and cells[5] == "3/0/0"
    assert float(cells[2]) == round(mean, 4)
    lo, hi = (float(x) for x in cells[3].strip("[]").split(","))
    assert lo == round(mean - half, 4) and hi == round(mean + half, 4)
    assert (out / "paired.png").is_file() and str(out / "paired.png") in proc.stdout.split()
    assert "Paired differences vs" in (out / "report.html").read_text()


def test_cli_unknown_baseline_is_one_line(tmp_path) -> None:
    runs = tmp_path / "runs"
    make_run(runs, "fixed", 0)
    make_run(runs, "meta_policy", 0)
    proc = _run(str(runs), "--out", str(tmp_path / "cmp"), "--baseline", "fixd", cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "'fixd'" in lines[0] and "fixed, meta_policy" in lines[0]
