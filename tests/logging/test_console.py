"""The console of a run and its copy in train.log: third-party noise filtered, the RL progress
bar in steps, the final report; the pieces of tempo.logging.console one by one."""

from __future__ import annotations

import io
import logging
import re
import sys
import warnings
from pathlib import Path

import pytest

from tempo.logging.console import (
    LIGHTNING_LOGGERS,
    ConsoleFormatter,
    console_to_log_file,
    log_line,
    quiet_wandb_loggers,
    route_lightning_logs,
    silence_third_party_noise,
)
from tests.test_train_cli import SMALL, run_train

NOISE = [
    "litlogger",  # Lightning's "Tip: ... try installing litlogger"
    "LeafSpec",  # torch's deprecation, raised inside Lightning
    "The anonymous setting has no effect",  # wandb, for Lightning's anonymous=None
    "`weights_only` was not set",  # Lightning, at every save_checkpoint
]


@pytest.fixture(scope="module")
def console_run(tmp_path_factory):
    """A two-step run as a user starts it: progress bar on, the default W&B logger."""
    root = tmp_path_factory.mktemp("console")
    small = [o for o in SMALL if not o.startswith(("trainer.progress_bar=", "logger="))]
    proc = run_train(
        *small,
        "trainer.max_steps=2",
        "trainer.progress_bar=true",
        "logger=wandb",
        f"hydra.run.dir={root}",
        cache=root / "cache",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root, proc


def test_run_ends_with_its_status_metrics_and_run_directory(console_run):
    root, proc = console_run
    last = proc.stdout.strip().splitlines()[-4:]
    assert re.fullmatch(r"\[tempo\] finished: 2 RL steps in \d+\.\d s", last[0]), last
    assert last[1].startswith("[tempo] eval arithmetic: greedy accuracy ")
    assert "(start " in last[1] and "avg@2 " in last[1] and "pass@2 " in last[1]
    assert last[2].startswith("[tempo] last RL step: reward ")
    assert "mean T 1.000" in last[2] and "entropy " in last[2]
    assert last[3] == f"[tempo] run directory: {root}"


def test_train_log_holds_the_console(console_run):
    root, proc = console_run
    log = (root / "train.log").read_text()
    for line in proc.stdout.strip().splitlines()[-4:]:  # the final report
        assert f"[stdout][INFO] - {line}\n" in log
    assert "[stdout][INFO] - [tempo] warm-start: 4 SFT steps" in log  # tempo's own lines
    assert "[lightning.pytorch.utilities.rank_zero][INFO] - GPU available" in log
    assert "[stderr][INFO] - step 2/2 " in log  # the bar's final state, not every redraw
    assert "\r" not in log and "\x1b[" not in log  # no redraws, no terminal codes


def test_progress_bar_counts_rl_steps_with_reward_temperature_and_entropy(console_run):
    _, proc = console_run
    frames = proc.stderr.replace("\r", "\n").splitlines()
    bars = [f for f in frames if f.startswith("step ")]
    assert any(f.startswith("step 2/2 ") for f in bars), proc.stderr[-2000:]
    assert all(k in bars[-1] for k in ("reward=", "T=1.00", "entropy=")), bars[-1]
    assert "v_num" not in proc.stderr and "Epoch" not in proc.stderr


def test_no_third_party_noise(console_run):
    _, proc = console_run
    console = proc.stdout + proc.stderr
    assert [noise for noise in NOISE if noise in console] == []
    assert "INFO: GPU available" not in console  # Lightning's own handler: printed once, by Hydra's


# ------------------------------------------------------------------ the pieces, in process
def test_log_line_keeps_what_a_terminal_finally_shows():
    assert log_line("step 1/2 |#  |\rstep 2/2 |###|\r") == "step 2/2 |###|"
    assert log_line("\x1b[32mgreen\x1b[0m text  ") == "green text"
    assert log_line("\r\x1b[2K\x1b[1A\x1b[2KEpoch 0/0 ━━━") is None  # a live redraw
    assert log_line("   \r") is None


def _file_handler(path: Path) -> logging.FileHandler:
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(name)s|%(message)s"))
    return handler


def test_console_copy_of_lines_bars_and_a_failure(tmp_path, monkeypatch):
    out, err = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)
    handler = _file_handler(tmp_path / "job.log")
    with pytest.raises(ValueError), console_to_log_file([handler]):
        print("[tempo] hello")
        sys.stderr.write("bar 1/3\rbar 2/3\r")
        sys.stderr.write("bar 3/3\n")
        kept = sys.stdout
        print("no newline at the end", end="")
        raise ValueError("boom")
    assert sys.stdout is out and sys.stderr is err  # restored
    kept.write("after the job\n")  # a stream kept by a library: written through only
    handler.close()
    log = (tmp_path / "job.log").read_text()
    assert log.startswith("stdout|[tempo] hello\nstderr|bar 3/3\n")
    assert "stdout|no newline at the end\n" in log
    assert "tempo|job failed\nTraceback" in log and "ValueError: boom" in log
    assert "after the job" not in log and out.getvalue().endswith("after the job\n")
    assert err.getvalue() == "bar 1/3\rbar 2/3\rbar 3/3\n"  # the console itself unchanged


def test_without_a_log_file_nothing_is_replaced(monkeypatch):
    monkeypatch.setattr(logging.getLogger(), "handlers", [])
    before = sys.stdout
    with console_to_log_file():
        assert sys.stdout is before


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_noise_filters_are_targeted(monkeypatch):
    silence_third_party_noise()
    silence_third_party_noise()  # idempotent
    tip = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    assert len(tip.filters) == len({f.prefix for f in tip.filters})
    seen = _Collect()
    monkeypatch.setattr(tip, "handlers", [seen])
    monkeypatch.setattr(tip, "level", logging.INFO)
    tip.info("\N{ELECTRIC LIGHT BULB} Tip: try installing litlogger")
    tip.info("GPU available: False, used: False")
    assert seen.messages == ["GPU available: False, used: False"]
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        silence_third_party_noise()  # its filters go in front of "always"
        leaf = "`isinstance(treespec, LeafSpec)` is deprecated, use ... instead."
        warnings.warn(leaf, FutureWarning, stacklevel=1)
        warnings.warn("something else is deprecated", FutureWarning, stacklevel=1)
    assert [str(w.message) for w in seen] == ["something else is deprecated"]


def test_wandb_logger_loses_only_the_inert_anonymous_key(tmp_path):
    from lightning.pytorch.loggers import WandbLogger

    logger = WandbLogger(save_dir=str(tmp_path), project="p", mode="disabled")
    assert "anonymous" in logger._wandb_init  # Lightning sets it to None
    quiet_wandb_loggers([logger, object()])
    assert "anonymous" not in logger._wandb_init and logger._wandb_init["project"] == "p"
    allowed = WandbLogger(save_dir=str(tmp_path), project="p", anonymous=True, mode="disabled")
    quiet_wandb_loggers([allowed])
    assert allowed._wandb_init["anonymous"] == "allow"


def test_lightning_records_print_once_through_the_root_handlers(monkeypatch):
    import lightning  # noqa: F401 - attaches Lightning's own stderr handler

    root_stream = io.StringIO()
    root_handler = logging.StreamHandler(root_stream)
    root_handler.setFormatter(ConsoleFormatter())
    top = logging.getLogger("lightning")
    monkeypatch.setattr(logging.getLogger(), "handlers", [root_handler])
    for name in LIGHTNING_LOGGERS:  # put back as they were after the test
        logger = logging.getLogger(name)
        monkeypatch.setattr(logger, "handlers", list(logger.handlers))
        monkeypatch.setattr(logger, "propagate", logger.propagate)
    assert any(type(h) is logging.StreamHandler for h in top.handlers)
    route_lightning_logs()
    assert not any(type(h) is logging.StreamHandler for h in top.handlers)
    logging.getLogger("lightning.pytorch.utilities.rank_zero").info("GPU available: False")
    logging.getLogger("lightning.pytorch.x").warning("careful")
    assert root_stream.getvalue() == (
        "GPU available: False\n[lightning.pytorch.x][WARNING] - careful\n"
    )
