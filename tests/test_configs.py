"""The shipped config tree: presets, launchers and trainers compose, and SLURM dry-runs."""

from __future__ import annotations

import os
from pathlib import Path

import hydra
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from tempo.rl.settings import TrainerConfig

CONF = Path(__file__).resolve().parents[1] / "conf"


def _compose(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=True)


def test_compare_methods_presets_sweep_five_methods_on_the_testbed():
    cfg = _compose("experiment=compare_methods")
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN"
    params = cfg.hydra.sweeper.params
    assert params.baseline.split(",") == [
        "fixed_t1.0",
        "fixed_t1.3",
        "linear_0.9_1.5",
        "tampo",
        "introspective_tiny",
    ]
    assert params.seed.split(",") == ["0", "1", "2", "3"]
    assert cfg.hydra.launcher._target_.endswith("JoblibLauncher")
    assert cfg.hydra.launcher.n_jobs == 2 and cfg.trainer.threads == 1
    assert cfg.experiment_name == "compare_methods"
    assert cfg.task.unboxed_fraction == 0.9 and cfg.eval.num_problems == 1000  # the testbed
    quick = _compose("experiment=compare_methods_quick")
    assert quick.hydra.sweeper.params.baseline == params.baseline
    assert quick.hydra.sweeper.params.seed == "0,1"
    assert (quick.trainer.max_steps, quick.eval.num_problems) == (60, 500)
    assert quick.experiment_name == "compare_methods_quick"
    assert quick.task.unboxed_fraction == 0.9


@pytest.mark.parametrize(
    ("choice", "target", "label"),
    [
        ("fixed_t1.3", "fixed.FixedTemperature", "fixed-T1.3-s3"),
        ("linear_0.9_1.5", "heuristic.build_heuristic", "linear-0.9-1.5-s3"),
        ("tampo", "meta_policy.MetaPolicyTemperature", "tampo-s3"),
        ("introspective_tiny", "introspective.IntrospectiveTemperature", "introspective-s3"),
    ],
)
def test_each_compared_method_composes_with_its_defaults(choice, target, label):
    cfg = _compose("experiment=compare_methods", f"baseline={choice}", "seed=3")
    assert cfg.method._target_ == f"tempo.temperature.{target}"
    assert cfg.run_name == label
    if choice == "introspective_tiny":  # the method's own (tiny-sized) head settings
        assert cfg.method.lr == _compose("method=introspective").method.lr


def test_temperature_sweep_preset_labels_points_by_temperature():
    cfg = _compose("experiment=temperature_sweep", "method.temperature=1.3", "seed=4")
    params = cfg.hydra.sweeper.params
    assert params["method.temperature"].split(",") == ["0.4", "0.7", "1.0", "1.3", "1.6"]
    assert params.seed.split(",") == ["0", "1", "2", "3", "4"]
    assert cfg.run_name == "fixed-T1.3-s4"
    assert cfg.method._target_ == "tempo.temperature.fixed.FixedTemperature"
    assert (cfg.task.num_test, cfg.eval.num_problems, cfg.eval.every) == (1000, 1000, 0)
    assert cfg.eval.at_start is False and cfg.trainer.max_steps == 100


@pytest.mark.parametrize(
    ("name", "accelerator", "strategy"), [("gpu", "gpu", "auto"), ("ddp", "gpu", "ddp")]
)
def test_gpu_trainers_build(name, accelerator, strategy):
    cfg = _compose(f"trainer={name}")
    trainer = hydra.utils.instantiate(cfg.trainer)
    assert isinstance(trainer, TrainerConfig)
    assert (trainer.accelerator, trainer.strategy, trainer.precision) == (
        accelerator,
        strategy,
        "bf16-mixed",
    )
    assert trainer.max_steps == _compose().trainer.max_steps  # the rest comes from trainer/cpu


def test_slurm_launcher_dry_run_writes_the_sbatch_script(tmp_path, monkeypatch):
    """No cluster here: build the submitit executor the launcher builds and render its script."""
    submitit = pytest.importorskip("submitit")
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    srun = fake_bin / "srun"  # submitit only checks that srun exists
    srun.write_text("#!/bin/sh\nexit 0\n")
    srun.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}{os.pathsep}{os.environ['PATH']}")

    cfg = _compose("hydra/launcher=slurm", "hydra.launcher.partition=gpu", "trainer=gpu")
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=False)
    assert launcher.pop("_target_").endswith("SlurmLauncher")
    executor = submitit.AutoExecutor(
        cluster="slurm",
        folder=str(tmp_path / "submitit"),
        slurm_max_num_timeout=launcher.pop("max_num_timeout"),
    )
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    skip = {"submitit_folder", "name"}  # interpolations of the live Hydra run
    executor.update_parameters(
        **{k if k in base else f"slurm_{k}": v for k, v in launcher.items() if k not in skip}
    )
    script = executor._executor._make_submission_file_text("python -m tempo.train", "uid")
    for line in (
        "#SBATCH --partition=gpu",
        "#SBATCH --gpus-per-node=1",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --mem=64GB",
        "#SBATCH --time=720",
        "#SBATCH --signal=USR2@120",
    ):
        assert line in script, (line, script)


@pytest.mark.parametrize(
    ("name", "scale", "aggregation", "clip_high"),
    [("grpo", True, "grpo", 0.2), ("dr_grpo", False, "dr_grpo", 0.2), ("dapo", True, "dapo", 0.28)],
)
def test_algorithm_variants(name, scale, aggregation, clip_high):
    grpo = hydra.utils.instantiate(_compose(f"algorithm={name}").algorithm)
    assert (grpo.scale_by_std, grpo.aggregation, grpo.clip_high) == (scale, aggregation, clip_high)
    assert grpo.lr == _compose().algorithm.lr  # shared keys come from algorithm/grpo
