"""User extensions without editing tempo: a folder of the user's own configs (method and task)
found through `hydra.searchpath`, a Python module on PYTHONPATH with their own temperature
controller, and run labels that name the user's class."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig

from tempo.config_error import ConfigError
from tempo.hydra_cli import check_overrides, compose_task, group_options
from tempo.train import CONFIG_DIR, method_label
from tests.test_train_cli import SMALL, offline_env

MY_EXT = '''
"""A user's temperature methods, kept outside tempo."""

import torch

from tempo.temperature.base import TemperatureController, TemperatureDecision, full_temperature
from tempo.temperature.fixed import FixedTemperature


class StepwiseTemperature(TemperatureController):
    """Every token of RL step s at T = start + s * increment."""

    name = "stepwise"

    def __init__(self, start: float = 0.5, increment: float = 0.25) -> None:
        super().__init__()
        self.start, self.increment = start, increment
        self.current = start

    def begin_step(self, step: int) -> dict[str, float]:
        self.current = self.start + step * self.increment
        return {"method/T": self.current}

    def initial_temperature(self, batch_size, device):
        return torch.full((batch_size,), self.current, device=device)

    def temperature(self, logits, hidden, prev_temperature, position):
        return TemperatureDecision(full_temperature(logits, self.current))


class Hotter(FixedTemperature):
    """Inherits tempo's `name` ("fixed") without setting its own."""
'''

MY_METHOD = """\
# mymethod: the user's stepwise schedule
_target_: my_ext.StepwiseTemperature
start: 0.5        # T of step 0
increment: 0.25   # added per RL step
"""

MY_TASK = """\
# mytask: single-digit additions, 8 held-out problems
_target_: tempo.data.arithmetic.ArithmeticTask
name: mytask
operations: ["+"]
max_ops: 1
operand_max: 9
test_fraction: 0.3
num_test: 8
"""


@pytest.fixture(scope="module")
def ext(tmp_path_factory) -> Path:
    """The user's folder: conf/method/mymethod.yaml, conf/task/mytask.yaml, my_ext.py."""
    root = tmp_path_factory.mktemp("my-ext")
    (root / "conf" / "method").mkdir(parents=True)
    (root / "conf" / "task").mkdir()
    (root / "conf" / "method" / "mymethod.yaml").write_text(MY_METHOD)
    (root / "conf" / "task" / "mytask.yaml").write_text(MY_TASK)
    (root / "my_ext.py").write_text(textwrap.dedent(MY_EXT))
    return root


def searchpath(ext: Path) -> str:
    return f"hydra.searchpath=[file://{ext / 'conf'}]"


@pytest.fixture
def importable(ext, monkeypatch):
    """my_ext on sys.path (as PYTHONPATH puts it), and no Hydra job config left behind."""
    monkeypatch.syspath_prepend(str(ext))
    yield
    HydraConfig.instance().cfg = None
    sys.modules.pop("my_ext", None)


def run(args: list[str], ext: Path, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    """`python -m <args>` from `cwd` with the user's folder on PYTHONPATH, offline."""
    env = offline_env(cwd / "cache")
    env["PYTHONPATH"] = str(ext)
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# ------------------------------------------------------------------ composition (in-process)


def test_check_overrides_composes_with_the_users_searchpath(ext):
    check_overrides(CONFIG_DIR, "train", "tempo-train", [searchpath(ext), "method=mymethod"])
    check_overrides(CONFIG_DIR, "train", "tempo-train", [searchpath(ext), "task=mytask"])


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["method=nosuch"], "method=nosuch is invalid: allowed one of fixed, heuristic,"),
        (["method=mymethod", "method.nosuch=1"], "method.nosuch does not exist"),
    ],
)
def test_check_overrides_errors_know_the_users_options(ext, capsys, args, expected):
    with pytest.raises(SystemExit) as stop:
        check_overrides(CONFIG_DIR, "train", "tempo-train", [searchpath(ext), *args])
    assert stop.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], lines
    if args == ["method=nosuch"]:
        assert "mymethod" in lines[0] and "meta_policy" in lines[0]


def test_without_the_searchpath_the_users_option_is_unknown(ext, capsys):
    with pytest.raises(SystemExit):
        check_overrides(CONFIG_DIR, "train", "tempo-train", ["method=mymethod"])
    assert "method=mymethod is invalid" in capsys.readouterr().err


def test_compose_task_searches_every_searchpath_entry(ext):
    uri = [f"file://{ext / 'conf'}"]
    assert "mytask" in group_options("task", uri) and "arithmetic" in group_options("task", uri)
    assert "mytask" not in group_options("task")
    node = compose_task("mytask", {"num_test": 3}, searchpath=uri)
    assert node.name == "mytask" and node.num_test == 3 and node.operations == ["+"]
    with pytest.raises(ConfigError) as err:
        compose_task("nosuch", searchpath=uri, key="eval.tasks")
    assert err.value.key == "eval.tasks" and "mytask" in str(err.value)
    assert "local" in str(err.value)  # tempo's own options are listed too
    with pytest.raises(ConfigError, match="allowed one of"):
        compose_task("mytask")


def test_compose_task_uses_the_running_jobs_searchpath(ext, importable):
    """Inside a job (HydraConfig set), the job's own hydra.searchpath is searched."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("eval", overrides=[searchpath(ext)], return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        assert compose_task("mytask").name == "mytask"


# ------------------------------------------------------------------ run labels


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], "fixed-s0"),
        (["method=heuristic", "method.rule=edt"], "heuristic-edt-s0"),
        (["method=mymethod", "seed=3"], "mymethod-s3"),  # the user's own option: its name
        (["method._target_=my_ext.StepwiseTemperature"], "stepwise-s0"),  # the class's name
        (["method._target_=my_ext.Hotter"], "Hotter-s0"),  # no name of its own: class name
        (
            ["method=meta_policy", "method._target_=tempo.temperature.fixed.FixedTemperature"],
            "fixed-s0",
        ),
    ],
)
def test_run_name_names_the_class_that_runs(ext, importable, args, expected):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[searchpath(ext), *args], return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    assert cfg.run_name == expected


def test_method_label_without_an_importable_target(importable):
    assert method_label("fixed", None, "no_such_module.Thing") == "Thing"
    assert method_label("fixed", None, "tempo.temperature.fixed.FixedTemperature") == "fixed"
    assert method_label("mymethod", None, "my_ext.Hotter") == "mymethod"  # the user's option
    assert method_label("heuristic", "ead", None) == "heuristic-ead"


# ------------------------------------------------------------------ the command lines


def test_tempo_train_runs_the_users_method_and_task(ext, tmp_path):
    proc = run(
        [
            "tempo.train",
            searchpath(ext),
            "method=mymethod",
            "task=mytask",
            *SMALL,
            "trainer.max_steps=2",
            "eval.at_start=false",
            "eval.every=0",
        ],
        ext,
        cwd=tmp_path,  # default run directory: ./outputs/default/<run_name>_<time>
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir,) = (tmp_path / "outputs" / "default").iterdir()
    assert run_dir.name.startswith("mymethod-s0_")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["task"] == "mytask"
    assert summary["method"] == "stepwise"
    assert {"eval/mytask/pass@2", "eval/mytask/accuracy"} <= set(summary["final"])
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    trained = [line for line in lines if "train/accuracy" in line]
    assert [line["step"] for line in trained] == [0, 1]
    for line in trained:  # T = 0.5 + 0.25 s for every token of step s
        expected = 0.5 + 0.25 * line["step"]
        assert line["method/T"] == pytest.approx(expected)
        assert line["explore/temperature_mean"] == pytest.approx(expected)
        assert line["explore/temperature_std"] == pytest.approx(0.0, abs=1e-6)


def test_tempo_eval_finds_a_task_in_the_searchpath(ext, tmp_path, tiny_model, char_tokenizer):
    tiny_model.save_pretrained(tmp_path / "model")
    char_tokenizer.save_pretrained(tmp_path / "model")
    proc = run(
        [
            "tempo.evaluate",
            searchpath(ext),
            "tasks=[mytask,arithmetic]",
            "+task_overrides.arithmetic.num_test=3",
            "model=hub",
            f"model.name_or_path={tmp_path / 'model'}",
            "eval.samples=2",
            "eval.max_new_tokens=6",
            "trainer.threads=1",
            "trainer.progress_bar=false",
            f"hydra.run.dir={tmp_path / 'out'}",
        ],
        ext,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "out" / "eval_results.json").read_text())
    assert results["problems"] == {"mytask": 8, "arithmetic": 3}
    assert "pass@2" in results["tasks"]["mytask"]
