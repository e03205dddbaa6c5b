"""Finding run directories, labels, seeds and statuses."""

from __future__ import annotations

import json
import math

import pytest

from tempo.reporting.runs import ReportError, find_run_dirs, load_run, load_runs
from tests.reporting.synth import make_run


def test_labels_and_seeds_from_config(tmp_path) -> None:
    make_run(tmp_path / "exp" / "a", "fixed", 3)
    make_run(tmp_path / "exp" / "b", "heuristic", 1, rule="edt")
    make_run(tmp_path / "exp" / "c", "meta_policy", 2, interpolated=True)
    runs = load_runs([tmp_path])
    assert [(r.label, r.seed, r.status) for r in runs] == [
        ("fixed", 3, "finished"),
        ("heuristic-edt", 1, "finished"),
        ("meta_policy", 2, "finished"),
    ]
    assert all(r.task == "arithmetic" and r.steps == 4 for r in runs)


def test_run_dir_itself_and_no_descent_into_runs(tmp_path) -> None:
    run_dir = make_run(tmp_path, "fixed", 0)
    (run_dir / "wandb" / "nested").mkdir(parents=True)
    (run_dir / "wandb" / "nested" / "metrics.jsonl").write_text("{}\n")
    assert find_run_dirs(run_dir) == [run_dir]
    assert find_run_dirs(tmp_path) == [run_dir]


def test_status_failed_unfinished_finished(tmp_path) -> None:
    failed = load_run(make_run(tmp_path, "fixed", 1, status="failed"))
    unfinished = load_run(make_run(tmp_path, "fixed", 2, status="unfinished"))
    done = load_run(make_run(tmp_path, "fixed", 3))
    assert (failed.status, unfinished.status, done.status) == ("failed", "unfinished", "finished")
    assert unfinished.steps == 1  # the last step it logged
    summary = json.loads((done.path / "summary.json").read_text())
    summary["status"] = "failed"
    (done.path / "summary.json").write_text(json.dumps(summary))
    assert load_run(done.path).status == "failed"


def test_metrics_only_dir_and_torn_line(tmp_path) -> None:
    run_dir = tmp_path / "multirun" / "0_fixed-s7"
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.jsonl").write_text(
        '{"step": 0, "explore/entropy": "nan"}\n'
        '{"step": 1, "explore/entropy": 0.5}\n'
        '{"step": 2, "ex'
    )
    run = load_run(run_dir)
    assert (run.label, run.seed, run.status, run.steps) == ("fixed", 7, "unfinished", 1)
    steps, values = run.series("explore/entropy")
    assert steps == [0, 1] and math.isnan(values[0]) and values[1] == 0.5


def test_missing_and_empty_dirs_raise(tmp_path) -> None:
    with pytest.raises(ReportError, match="nope"):
        load_runs([tmp_path / "nope"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReportError, match="empty"):
        load_runs([tmp_path / "empty"])


def test_a_preset_run_name_with_only_the_seed_interpolated_labels_the_run(tmp_path):
    import yaml

    from tempo.reporting.runs import load_run
    from tests.reporting.synth import make_run

    run = make_run(tmp_path, "fixed", 2)
    config_path = run / ".hydra" / "config.yaml"
    config = yaml.safe_load(config_path.read_text())
    config["run_name"] = "fixed-T0.9-s${seed}"  # conf/baseline/fixed_t0.9.yaml's name
    config_path.write_text(yaml.safe_dump(config))
    loaded = load_run(run)
    assert loaded.label == "fixed-T0.9" and loaded.seed == 2
