"""Damaged run-directory state, in process: unreadable checkpoints, a cut or missing metrics
file, a deleted run_config.json, stale temporary files, a full disk, the run lock, signals."""

from __future__ import annotations

import errno
import json
import os
import signal
import zlib

import lightning as L
import pytest
import torch

from tempo.config_error import ConfigError
from tempo.logging.jsonl import JsonlLogger
from tempo.rl.checkpoint_io import (
    CONFIG_KEY,
    atomic_torch_save,
    checkpoint_config,
    prune_periodic_checkpoints,
    remove_stale_temp_files,
)
from tempo.rl.preemption import PreemptionCheckpoint
from tempo.run_lock import RunLock, is_locked
from tempo.runner import check_same_experiment, record_failure, resolve_checkpoint

CONFIG = {"seed": 0, "algorithm": {"lr": 3e-5}, "trainer": {"max_steps": 10}}


def _checkpoints(run):
    """A run directory with an older step4.ckpt and a newer, intact last.ckpt."""
    folder = run / "checkpoints"
    folder.mkdir(parents=True)
    step = folder / "step4.ckpt"
    torch.save({"state_dict": {}, "global_step": 4, CONFIG_KEY: json.dumps(CONFIG)}, step)
    last = folder / "last.ckpt"
    torch.save({"state_dict": {}, "global_step": 6}, last)
    os.utime(step, ns=(last.stat().st_mtime_ns - 10**9,) * 2)
    return step, last


@pytest.mark.parametrize("damage", ["truncated", "empty", "garbage"])
def test_an_unreadable_last_checkpoint_falls_back_to_the_newest_that_loads(
    tmp_path, capsys, damage
):
    step, last = _checkpoints(tmp_path)
    data = last.read_bytes()
    last.write_bytes(
        {"truncated": data[: len(data) // 2], "empty": b"", "garbage": b"x" * 99}[damage]
    )
    assert resolve_checkpoint(tmp_path, None) == step == resolve_checkpoint(tmp_path, "last")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2  # one line per resolve
    assert f"{last} is unreadable (" in lines[0] and "resuming from step4.ckpt" in lines[0]


def test_an_explicit_or_only_checkpoint_that_does_not_load_is_a_one_line_error(tmp_path):
    bad = tmp_path / "notes.ckpt"
    bad.write_text("not a checkpoint")
    with pytest.raises(ConfigError, match=r"^ckpt_path='.*notes.ckpt' is invalid: allowed a Li"):
        resolve_checkpoint(tmp_path, str(bad))
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"hydra.run.dir=.*last.ckpt \(an empty file\)") as err:
        resolve_checkpoint(tmp_path, None)  # never a silent fresh start over the run
    assert "\n" not in str(err.value)


def _logged(tmp_path):
    """A metrics file of steps 0-2 and a checkpoint state taken with steps 0-1 on disk."""
    log = JsonlLogger(tmp_path)
    for step in range(3):
        log.log_metrics({"eval/x/acc": float(step)}, step=step)
    state = log.state()
    log.close()
    return log, state


@pytest.mark.parametrize("damage", ["missing", "cut", "torn", "different"])
def test_a_damaged_metrics_file_is_rewritten_from_the_checkpoint(tmp_path, capsys, damage):
    log, state = _logged(tmp_path)
    data = log.path.read_bytes()
    if damage == "missing":
        log.path.unlink()
    elif damage == "cut":
        log.path.write_bytes(b"")
    elif damage == "torn":  # the checkpoint's last line half there
        log.path.write_bytes(data[: state["offset"] - 5])
    else:
        log.path.write_bytes(data.replace(b"0.0", b"7.0"))
    resumed = JsonlLogger(tmp_path)
    resumed.restore(state)
    lines = [json.loads(x) for x in resumed.path.read_text().splitlines()]
    assert lines == [{"step": 0, "eval/x/acc": 0.0}, {"step": 1, "eval/x/acc": 1.0}]
    assert resumed.history["eval/x/acc"][0] == (0, 0.0)  # summary.initial stays right
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "rewritten from the checkpoint (2 lines, steps 0-1)" in err[0]
    if damage == "different":
        assert list(tmp_path.glob("metrics.before-*.jsonl"))  # the odd file is kept


def test_a_checkpoint_without_the_copy_keeps_the_whole_lines_and_says_what_is_lost(
    tmp_path, capsys
):
    log, state = _logged(tmp_path)
    del state["data"]  # a checkpoint written before the copy existed
    state["path"] = str(log.path)
    log.path.write_bytes(log.path.read_bytes()[: state["offset"] - 5])  # torn line 1
    resumed = JsonlLogger(tmp_path)
    resumed.restore(state)
    assert [json.loads(x)["step"] for x in resumed.path.read_text().splitlines()] == [0]
    assert "the lines after them are lost" in capsys.readouterr().err


def test_a_moved_run_directory_restores_in_place(tmp_path):
    log, state = _logged(tmp_path / "run1")
    (tmp_path / "run1").rename(tmp_path / "run2")
    resumed = JsonlLogger(tmp_path / "run2")
    resumed.restore(state)  # the state names no path; the moved file is cut back in place
    assert len(resumed.path.read_text().splitlines()) == 2
    assert not (tmp_path / "run1").exists()


def test_the_checkpoint_carries_the_config_when_run_config_json_is_gone(tmp_path):
    step, _ = _checkpoints(tmp_path)
    assert checkpoint_config(step) == CONFIG
    changed = {**CONFIG, "algorithm": {"lr": 1e-4}}
    with pytest.raises(ConfigError, match=r"algorithm.lr=3e-05, not 0.0001"):
        check_same_experiment(tmp_path, changed, checkpoint=step)  # no run_config.json
    longer = {**CONFIG, "trainer": {"max_steps": 20}}
    check_same_experiment(tmp_path, longer, checkpoint=step)
    assert json.loads((tmp_path / "run_config.json").read_text()) == CONFIG  # written back


def test_stale_temporary_files_of_dead_processes_are_removed(tmp_path):
    dead = tmp_path / ".step4.ckpt.tmp-999999999"
    alive = tmp_path / f".step6.ckpt.tmp-{os.getpid()}"
    other = tmp_path / "step2.ckpt"
    for path in (dead, alive, other):
        path.write_bytes(b"x")
    assert remove_stale_temp_files(tmp_path) == [dead]
    assert alive.exists() and other.exists() and not dead.exists()


def test_a_full_disk_leaves_the_metrics_file_and_the_checkpoint_whole(tmp_path, monkeypatch):
    log = JsonlLogger(tmp_path)
    log.log_metrics({"a": 1.0}, step=0)
    log.log_metrics({"a": 2.0}, step=1)
    before = log.path.read_bytes()

    def fsync_full(fd):  # the bytes are in the file, then the disk turns out full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", fsync_full)
    with pytest.raises(OSError, match="No space left") as err:
        log.log_metrics({"a": 3.0}, step=2)
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(log.path)
    assert log.path.read_bytes() == before  # cut back to its last whole line

    target = tmp_path / "last.ckpt"
    monkeypatch.undo()
    atomic_torch_save({"v": 1}, target)
    monkeypatch.setattr(os, "fsync", fsync_full)
    with pytest.raises(OSError) as err:
        atomic_torch_save({"v": 2}, target)
    assert err.value.filename == str(target)
    assert torch.load(target)["v"] == 1 and sorted(p.name for p in tmp_path.iterdir()) == [
        "last.ckpt",
        "metrics.jsonl",
    ]  # no temporary file left


def test_a_second_process_is_refused_and_the_lock_dies_with_its_holder(tmp_path):
    held = RunLock(tmp_path).acquire()
    assert is_locked(tmp_path)
    with pytest.raises(ConfigError, match=rf"hydra.run.dir='{tmp_path}'.*PID {os.getpid()} is"):
        RunLock(tmp_path).acquire()
    record_failure(tmp_path, "refused")  # the live run's directory gets no failed summary
    assert not (tmp_path / "summary.json").exists()
    held.release()
    assert not is_locked(tmp_path)
    RunLock(tmp_path).acquire().release()  # a stale .lock file (holder gone) does not block


def test_signals_around_lightnings_handler_are_recorded_once_and_never_end_the_run(tmp_path):
    guard = PreemptionCheckpoint(tmp_path / "last.ckpt")
    guard.install()
    try:
        trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
        guard.setup(trainer, None, "fit")
        trainer._signal_connector.register_signal_handlers()  # what fit/validate do at start
        os.kill(os.getpid(), signal.SIGTERM)  # before the guard's hook takes the signal back
        os.kill(os.getpid(), signal.SIGTERM)
        guard.on_train_start(trainer, None)
        assert signal.getsignal(signal.SIGTERM) == guard._record
        assert not trainer.received_sigterm  # Lightning would raise SystemExit at step end
        os.kill(os.getpid(), signal.SIGUSR1)  # a later, other signal changes nothing
        assert guard.signum == signal.SIGTERM and guard.signals_seen == 3
        assert guard.status == "preempted"
        trainer._signal_connector.teardown()
        guard.install()  # idempotent: the handlers recorded first stay the ones restored
    finally:
        guard.uninstall()
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_ctrl_c_is_recorded_as_an_interruption(tmp_path):
    guard = PreemptionCheckpoint(tmp_path / "last.ckpt")
    guard.install()
    try:
        os.kill(os.getpid(), signal.SIGINT)  # no KeyboardInterrupt
        assert guard.signum == signal.SIGINT and guard.status == "interrupted"
    finally:
        guard.uninstall()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_state_carries_a_compressed_copy_of_the_file(tmp_path):
    log, state = _logged(tmp_path)
    assert zlib.decompress(state["data"]) == log.path.read_bytes()[: state["offset"]]
    assert "path" not in state  # nothing absolute: a moved directory resumes


def test_periodic_checkpoints_beyond_keep_are_pruned(tmp_path):
    for name in ("step2.ckpt", "step4.ckpt", "step10.ckpt", "last.ckpt", "nonfinite-step3.ckpt"):
        (tmp_path / name).write_bytes(b"x")
    assert prune_periodic_checkpoints(tmp_path, -1) == []
    removed = prune_periodic_checkpoints(tmp_path, 1)  # by step number, not by name
    assert sorted(p.name for p in removed) == ["step2.ckpt", "step4.ckpt"]
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["last.ckpt", "nonfinite-step3.ckpt", "step10.ckpt"]


def test_a_save_that_torch_fails_on_a_full_disk_raises_an_oserror_naming_the_file(
    tmp_path, monkeypatch
):
    target = tmp_path / "step4.ckpt"

    def full_save(obj, fh):  # torch's zip writer turns the write's OSError into this
        try:
            fh.write(b"PK")
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as err:
            raise RuntimeError("[enforce fail at inline_container.cc] unexpected pos") from err

    monkeypatch.setattr(torch, "save", full_save)
    with pytest.raises(OSError) as err:
        atomic_torch_save({"v": 1}, target)
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(target)
    assert list(tmp_path.iterdir()) == []
