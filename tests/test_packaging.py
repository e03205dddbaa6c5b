"""A non-editable install: the wheel carries conf/ as tempo/conf, and every entry point finds
its configs there when the checkout is not importable. Builds one wheel (about 2 s) and runs
three commands of the installed copy from outside the repository (about 20 s in all)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tempo.hydra_cli import config_dir

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"


def pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_package_folder_is_listed_for_the_wheel():
    """setuptools gets an explicit package list (tempo.conf is mapped to conf/): a new
    subpackage that is not listed would be missing from the wheel."""
    tool = pyproject()["tool"]["setuptools"]
    folders = {
        ".".join(path.parent.relative_to(ROOT).parts)
        for path in (ROOT / "tempo").rglob("*.py")
        if "__pycache__" not in path.parts
    }
    assert set(tool["packages"]) == folders | {"tempo.conf"}, "edit [tool.setuptools] packages"
    assert tool["package-dir"] == {"tempo.conf": "conf"}


def test_the_checkout_reads_its_top_level_conf():
    assert Path(config_dir()) == CONF
    from tempo.evaluate import CONFIG_DIR as EVAL_DIR
    from tempo.train import CONFIG_DIR as TRAIN_DIR

    assert TRAIN_DIR == EVAL_DIR == str(CONF)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path]:
    """(wheel, target folder): the package built from a copy of the sources (the checkout
    is left untouched) and installed with `pip install --target`, no dependencies."""
    root = tmp_path_factory.mktemp("packaging")
    source = root / "source"
    source.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for name in ("tempo", "conf"):
        shutil.copytree(ROOT / name, source / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    build = [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(root / "dist")]
    subprocess.run([*build, str(source)], check=True, cwd=source, timeout=120)
    (wheel,) = (root / "dist").glob("tempo-*.whl")
    target = root / "site"
    install = [*pip, "install", "--no-deps", "--no-index", "--target", str(target), str(wheel)]
    subprocess.run(install, check=True, timeout=120)
    return wheel, target


def installed_env(target: Path) -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(target), HF_HUB_OFFLINE="1", WANDB_MODE="disabled")


def run_installed(target: Path, cwd: Path, *command: str) -> subprocess.CompletedProcess:
    """A command of the installed copy from `cwd`, outside the repository."""
    return subprocess.run(
        list(command),
        cwd=cwd,
        env=installed_env(target),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_wheel_carries_every_config(installed):
    wheel, _ = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    configs = {f"tempo/conf/{p.relative_to(CONF).as_posix()}" for p in CONF.rglob("*.yaml")}
    assert configs and configs <= names
    assert "tempo/conf/task/local.yaml" in names
    assert not any(name.startswith("conf/") for name in names)  # nothing at the top level


def test_installed_copy_is_imported_and_reads_its_own_configs(installed, tmp_path):
    _, target = installed
    proc = run_installed(
        target,
        tmp_path,
        sys.executable,
        "-c",
        "import tempo, tempo.hydra_cli as h; print(tempo.__file__); print(h.config_dir())",
    )
    assert proc.returncode == 0, proc.stderr
    module, folder = proc.stdout.split()
    assert Path(module) == target / "tempo" / "__init__.py"
    assert Path(folder) == target / "tempo" / "conf"


def test_installed_train_composes_its_config(installed, tmp_path):
    _, target = installed
    proc = run_installed(
        target, tmp_path, sys.executable, "-m", "tempo.train", "task=local", "--cfg", "job"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert {"task:", "method:", "model:", "algorithm:", "trainer:"} <= set(lines)
    assert "  name: local" in lines  # the task=local choice came from the installed tree
    assert not (tmp_path / "outputs").exists()  # --cfg only prints


def test_installed_eval_console_script_composes_its_config(installed, tmp_path):
    _, target = installed
    proc = run_installed(target, tmp_path, str(target / "bin" / "tempo-eval"), "--cfg", "job")
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert {"model:", "logger:", "eval:", "reward:", "trainer:"} <= set(lines)
    assert "tasks: null" in lines and "checkpoint: null" in lines


def test_installed_train_checks_overrides_against_its_configs(installed, tmp_path):
    _, target = installed
    proc = run_installed(target, tmp_path, str(target / "bin" / "tempo-train"), "method=nosuch")
    methods = ", ".join(sorted(p.stem for p in (CONF / "method").glob("*.yaml")))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"tempo-train: invalid override: method=nosuch is invalid: allowed one of {methods}"
    ]
