"""The per-token temperature profile figure and the late-training means behind it."""

from __future__ import annotations

import json

import pytest

from tempo.reporting import compare
from tempo.reporting.plots import _late_mean
from tempo.reporting.runs import load_runs
from tests.reporting.synth import make_run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _add_profile(run_dir, by_step):
    """Give every logged step of a run `method/T_pos=...` and `method/T_class=...` values."""
    path = run_dir / "metrics.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for row in rows:
        row.update(by_step(row["step"]))
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_late_mean_is_the_seed_mean_of_each_runs_last_fifth(tmp_path):
    # 10 logged steps (0..9): the last 20% are steps 8 and 9
    for seed, offset in ((0, 0.0), (1, 0.2)):
        run = make_run(tmp_path, "introspective", seed, steps=9)
        _add_profile(run, lambda s, o=offset: {"method/T_pos=0-5": 1.0 + 0.1 * s + o})
    runs = load_runs([tmp_path])
    expected = ((1.8 + 1.9) / 2 + (2.0 + 2.1) / 2) / 2
    assert _late_mean(runs, "method/T_pos=0-5") == pytest.approx(expected)
    assert _late_mean(runs, "method/absent") is None


def test_profile_figure_only_for_runs_that_log_per_token_temperatures(tmp_path):
    make_run(tmp_path / "runs", "fixed", 0)
    written = compare([tmp_path / "runs"], tmp_path / "a")
    assert not any(p.name == "temperature_profile.png" for p in written)
    run = make_run(tmp_path / "runs", "introspective", 0)
    _add_profile(
        run,
        lambda s: {
            "method/T_pos=0-5": 1.0,
            "method/T_pos=6-11": 0.8,
            "method/T_class=digit_op": 0.9,
            "method/T_class=answer": 0.7,
        },
    )
    written = compare([tmp_path / "runs"], tmp_path / "b")
    profile = tmp_path / "b" / "temperature_profile.png"
    assert profile in written and profile.read_bytes()[:8] == PNG_MAGIC
    assert "temperature_profile.png" in (tmp_path / "b" / "report.md").read_text()
