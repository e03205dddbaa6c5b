"""Run-directory rules of the runner: which checkpoint resumes, same-config guard, failures."""

from __future__ import annotations

import json
import os

import pytest
import torch

from tempo.config_error import ConfigError
from tempo.runner import check_same_experiment, record_failure, resolve_checkpoint


def test_resume_is_automatic_when_the_run_directory_has_a_last_checkpoint(tmp_path):
    assert resolve_checkpoint(tmp_path, None) is None  # a new run
    last = tmp_path / "checkpoints" / "last.ckpt"
    last.parent.mkdir()
    torch.save({"state_dict": {}, "global_step": 2}, last)
    assert resolve_checkpoint(tmp_path, None) == last
    assert resolve_checkpoint(tmp_path, "last") == last
    other = tmp_path / "other.ckpt"
    torch.save({"state_dict": {}, "global_step": 1}, other)
    assert resolve_checkpoint(tmp_path, str(other)) == other
    newer = last.parent / "step4.ckpt"  # killed after step4.ckpt, before last.ckpt was written
    torch.save({"state_dict": {}, "global_step": 4}, newer)
    os.utime(newer, ns=(last.stat().st_mtime_ns + 10**9,) * 2)
    assert resolve_checkpoint(tmp_path, None) == newer == resolve_checkpoint(tmp_path, "last")


def test_last_without_a_checkpoint_and_a_missing_file_fail_clearly(tmp_path):
    with pytest.raises(ConfigError, match=r"ckpt_path='last' is invalid: allowed 'last' only"):
        resolve_checkpoint(tmp_path, "last")
    with pytest.raises(ConfigError, match=r"ckpt_path='.*nope.ckpt' is invalid: allowed an exist"):
        resolve_checkpoint(tmp_path, str(tmp_path / "nope.ckpt"))


def test_a_run_directory_only_resumes_under_the_same_config(tmp_path):
    config = {"seed": 0, "algorithm": {"lr": 3e-5}, "trainer": {"max_steps": 10}}
    check_same_experiment(tmp_path, config)  # first start: remembered
    assert json.loads((tmp_path / "run_config.json").read_text()) == config
    longer = {**config, "trainer": {"max_steps": 20}, "ckpt_path": "last"}
    check_same_experiment(tmp_path, longer)  # more steps: allowed
    changed = {**config, "algorithm": {"lr": 1e-4}}
    with pytest.raises(ConfigError, match=r"algorithm.lr=3e-05, not 0.0001; 1 setting"):
        check_same_experiment(tmp_path, changed)


def test_a_failure_is_recorded_without_replacing_an_earlier_result(tmp_path):
    record_failure(tmp_path / "new", "invalid config: x=1\nmore")
    summary = json.loads((tmp_path / "new" / "summary.json").read_text())
    assert summary == {"status": "failed", "error": "invalid config: x=1"}
    done = tmp_path / "done"
    done.mkdir()
    (done / "summary.json").write_text('{"status": "finished"}')
    record_failure(done, "boom")
    assert json.loads((done / "summary.json").read_text()) == {"status": "finished"}
