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
