"""`tempo-compare` as a subprocess: outputs, exit codes, one-line errors."""

from __future__ import annotations

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
