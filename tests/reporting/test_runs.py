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


def test_a_run_name_interpolating_config_values_is_resolved_from_the_config(tmp_path):
    """A sweep preset's ``fixed-T${method.temperature}-s${seed}`` labels each point by its
    temperature; a key the config lacks, or a resolver call, stays as written."""
    import yaml

    from tempo.reporting.runs import load_run
    from tests.reporting.synth import make_run

    labels = []
    for temperature, name in [
        (0.7, "fixed-T${method.temperature}-s${seed}"),
        (1.3, "fixed-T${method.nope}-s${seed}"),
    ]:
        run = make_run(tmp_path / str(temperature), "fixed", 3)
        config_path = run / ".hydra" / "config.yaml"
        config = yaml.safe_load(config_path.read_text())
        config["run_name"] = name
        config["method"] = {"temperature": temperature}
        config_path.write_text(yaml.safe_dump(config))
        loaded = load_run(run)
        labels.append((loaded.label, loaded.seed))
    assert labels[0] == ("fixed-T0.7", 3)
    assert labels[1][0] != "fixed-T1.3" and labels[1][1] == 3


def _damage_metrics(run_dir, *, binary: bool = True) -> None:
    """Insert a torn line (3), a binary line (5), a non-integer step (7) and a non-object (8)
    between a finished run's rows; 5 rows stay readable."""
    lines = (run_dir / "metrics.jsonl").read_bytes().splitlines(keepends=True)
    torn = b'{"step": 9, "train/rew\n'
    junk = b"\xff\xfe\x00\x81garbage\x9c\n" if binary else b"not json\n"
    five = b'{"step": "five", "train/reward_mean": 9.0}\n'
    damaged = lines[:2] + [torn] + lines[2:3] + [junk] + lines[3:4] + [five, b"[1, 2]\n"]
    (run_dir / "metrics.jsonl").write_bytes(b"".join(damaged + lines[4:]))


def test_unreadable_metrics_lines_are_counted_named_and_noted(tmp_path, caplog) -> None:
    run_dir = make_run(tmp_path, "fixed", 0)
    _damage_metrics(run_dir)
    with caplog.at_level("WARNING", logger="tempo.reporting"):
        run = load_run(run_dir)
    assert run.status == "finished" and run.steps == 4
    assert [row["step"] for row in run.history] == [0, 1, 2, 3, 4]
    assert run.series("train/reward_mean")[0] == [0, 1, 2, 3, 4]  # "five" did not crash it
    assert run.notes == ["4 bad lines in metrics.jsonl"]
    assert caplog.messages == [
        f"{run_dir / 'metrics.jsonl'}: 4 unreadable lines (3, 5, 7, 8) skipped"
    ]


def test_integral_float_steps_are_read_as_integers(tmp_path) -> None:
    run_dir = tmp_path / "0_fixed-s1"
    run_dir.mkdir()
    (run_dir / "metrics.jsonl").write_text('{"step": 2.0, "a": 1}\n{"step": true, "a": 2}\n')
    run = load_run(run_dir)
    assert [row["step"] for row in run.history] == [2] and type(run.history[0]["step"]) is int
    assert run.notes == ["1 bad line in metrics.jsonl"]


def test_a_truncated_summary_leaves_the_run_unfinished_and_says_why(tmp_path, caplog) -> None:
    run_dir = make_run(tmp_path, "fixed", 0)
    text = (run_dir / "summary.json").read_text()
    (run_dir / "summary.json").write_text(text[: len(text) // 2])
    with caplog.at_level("WARNING", logger="tempo.reporting"):
        run = load_run(run_dir)
    assert run.status == "unfinished" and run.summary is None and run.steps == 4
    assert run.notes == ["summary.json unreadable"]
    (message,) = caplog.messages
    assert message.startswith(f"{run_dir / 'summary.json'}: unreadable (JSONDecodeError: ")
    assert message.endswith("; the run counts as unfinished")


def test_ill_shaped_summary_sections_and_a_binary_config_are_notes(tmp_path) -> None:
    run_dir = make_run(tmp_path, "heuristic", 3, rule="edt")
    summary = json.loads((run_dir / "summary.json").read_text())
    summary["final"] = 7  # would break Run.keys() and the tables
    (run_dir / "summary.json").write_text(json.dumps(summary))
    (run_dir / ".hydra" / "config.yaml").write_bytes(b"\xff\xfe seed: [\n")
    run = load_run(run_dir)
    assert run.status == "finished" and "final" not in run.summary
    assert run.notes == ["config.yaml unreadable", "bad summary final"]
    assert (run.label, run.seed) == ("heuristic-edt", 3)  # from the directory name
    assert "explore/entropy" in run.keys()


def test_one_unreadable_run_does_not_stop_the_others(tmp_path, caplog) -> None:
    good = make_run(tmp_path, "fixed", 0)
    bad = make_run(tmp_path, "meta_policy", 1)
    (bad / "metrics.jsonl").unlink()
    (bad / "metrics.jsonl").mkdir()  # exists, cannot be read as a file
    with caplog.at_level("WARNING", logger="tempo.reporting"):
        runs = load_runs([tmp_path])
    by_path = {run.path: run for run in runs}
    assert by_path[good].status == "finished" and not by_path[good].notes
    broken = by_path[bad]
    assert (broken.label, broken.seed, broken.status) == ("meta_policy", 1, "unreadable")
    assert broken.notes == [f"IsADirectoryError: [Errno 21] Is a directory: '{bad}/metrics.jsonl'"]
    assert caplog.messages == [f"{bad}: run unreadable, left out ({broken.notes[0]})"]
