import json
import math

from tempo.logging.jsonl import JsonlLogger


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_metrics_of_one_step_merge_into_one_line(tmp_path):
    log = JsonlLogger(tmp_path)
    log.log_metrics({"train/reward_mean": 0.5}, step=0)
    log.log_metrics({"eval/x/accuracy": 0.25}, step=0)
    assert not log.path.exists()  # step 0 is still open
    log.log_metrics({"train/reward_mean": 0.75}, step=1)
    assert _lines(log.path) == [{"step": 0, "train/reward_mean": 0.5, "eval/x/accuracy": 0.25}]
    log.finalize("success")  # Lightning calls this after fit/validate: the step stays open
    assert len(_lines(log.path)) == 1
    log.close()
    assert _lines(log.path)[1] == {"step": 1, "train/reward_mean": 0.75}


def test_latest_history_and_non_finite_values(tmp_path):
    log = JsonlLogger(tmp_path)
    log.log_metrics({"a": 1.0}, step=0)
    log.log_metrics({"a": math.nan, "b": 2}, step=3)
    log.close()
    assert log.latest == {"a": "nan", "b": 2}
    assert log.history["a"] == [(0, 1.0), (3, "nan")]
    assert _lines(log.path)[1]["a"] == "nan"  # valid JSON, value still visible


def test_restore_cuts_the_file_back_to_the_checkpoint_and_reopens_its_step(tmp_path):
    log = JsonlLogger(tmp_path)
    log.log_metrics({"a": 1.0}, step=0)
    log.log_metrics({"a": 2.0}, step=1)  # writes step 0
    state = log.state()  # checkpoint: step 0 on disk, step 1 open
    log.log_metrics({"e": 9.0}, step=2)  # after the checkpoint: written lines to be dropped
    log.log_metrics({"a": 3.0}, step=3)
    with open(log.path, "a") as fh:
        fh.write('{"step": 4, "a": ')  # a line half-written by a killed process
    resumed = JsonlLogger(tmp_path)
    resumed.restore(state)
    assert _lines(resumed.path) == [{"step": 0, "a": 1.0}]
    assert resumed.history["a"] == [(0, 1.0), (1, 2.0)] and resumed.latest == {"a": 2.0}
    resumed.log_metrics({"a": 5.0}, step=2)
    resumed.close()
    expected = [{"step": 0, "a": 1.0}, {"step": 1, "a": 2.0}, {"step": 2, "a": 5.0}]
    assert _lines(resumed.path) == expected


def test_restore_from_another_run_directory_copies_that_runs_lines(tmp_path):
    first = JsonlLogger(tmp_path / "first")
    first.log_metrics({"a": 1.0}, step=0)
    first.log_metrics({"a": 2.0}, step=1)
    state = first.state()
    first.log_metrics({"a": 3.0}, step=2)
    first.close()
    second = JsonlLogger(tmp_path / "second")
    second.restore(state)
    second.close()
    assert _lines(second.path) == [{"step": 0, "a": 1.0}, {"step": 1, "a": 2.0}]
    assert len(_lines(first.path)) == 3  # the source run is left alone
