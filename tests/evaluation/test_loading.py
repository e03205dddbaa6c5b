"""Loading a tempo-train checkpoint: weights and the introspective head restored, clear errors."""

from __future__ import annotations

import hydra
import pytest
import torch
from omegaconf import OmegaConf

from tempo.config_error import ConfigError
from tempo.evaluation.loading import (
    checkpoint_label,
    find_checkpoint,
    model_label,
    read_checkpoint,
    read_run_config,
    restore,
)
from tempo.models.specs import TinyModel
from tempo.temperature.fixed import FixedTemperature
from tempo.temperature.introspective import IntrospectiveTemperature

MODEL = {
    "_target_": "tempo.models.specs.TinyModel",
    "hidden_size": 32,
    "num_layers": 2,
    "intermediate_size": 64,
    "cache_dir": "/nonexistent/never-used",
    "warmstart": {"steps": 4, "batch_size": 8},
}
INTROSPECTIVE = {
    "_target_": "tempo.temperature.introspective.IntrospectiveTemperature",
    "t_min": 0.5,
    "t_max": 1.5,
}


def write_run(root, method=None, model=None, step=7, seed=0):
    """A run directory as tempo-train leaves it: .hydra/config.yaml and checkpoints/last.ckpt,
    the checkpoint made here from a known state (random weights, a perturbed head)."""
    config = {
        "task": {"_target_": "tempo.data.arithmetic.ArithmeticTask", "name": "arithmetic"},
        "model": model or MODEL,
        "method": method or INTROSPECTIVE,
        "trainer": {"max_steps": 10},
        "rollout": {"max_new_tokens": 16},
    }
    (root / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(config), root / ".hydra" / "config.yaml")
    torch.manual_seed(seed)
    spec = TinyModel(**{k: v for k, v in MODEL.items() if k != "_target_"})
    policy, _ = spec.build_for_checkpoint()
    controller = hydra.utils.instantiate(config["method"])
    controller.setup(policy.config.hidden_size, policy.config.vocab_size, 10)
    with torch.no_grad():
        for p in controller.parameters():
            p.add_(torch.randn_like(p))  # no longer the initial head
    state = {f"model.{k}": v.clone() for k, v in policy.state_dict().items()}
    state.update({f"controller.{k}": v for k, v in controller.state_dict().items()})
    state.update({f"eval_controller.{k}": v for k, v in FixedTemperature().state_dict().items()})
    state["ref_model.model.norm.weight"] = torch.zeros(3)  # skipped: not this model's shape
    (root / "checkpoints").mkdir()
    path = root / "checkpoints" / "last.ckpt"
    torch.save({"state_dict": state, "global_step": step, "epoch": 0}, path)
    return path, policy, controller


def load(source):
    config = read_run_config(source)
    spec = hydra.utils.instantiate(config.model)
    controller = hydra.utils.instantiate(config.method)
    model, tokenizer = spec.build_for_checkpoint()
    step = restore(read_checkpoint(source.path), source.path, model, controller, 10)
    return model, tokenizer, controller, step


def test_policy_and_head_weights_are_the_checkpoints(tmp_path):
    path, policy, head = write_run(tmp_path / "run")
    torch.manual_seed(123)  # the rebuilt model starts from other random weights
    model, tokenizer, controller, step = load(find_checkpoint(tmp_path / "run"))
    assert step == 7
    expected = policy.state_dict()
    loaded = model.state_dict()
    assert set(loaded) == set(expected)
    for name, value in expected.items():
        assert torch.equal(loaded[name], value), name
    assert isinstance(controller, IntrospectiveTemperature)
    assert controller.t_min == 0.5 and controller.t_max == 1.5
    for (name, a), (_, b) in zip(
        controller.state_dict().items(), head.state_dict().items(), strict=True
    ):
        if isinstance(a, torch.Tensor):
            assert torch.equal(a, b), name
    assert tokenizer.padding_side == "left"
    assert not (tmp_path / "never-used").exists()


def test_a_file_and_its_run_directory_resolve_to_the_same_checkpoint(tmp_path):
    path, *_ = write_run(tmp_path / "run")
    by_dir, by_file = find_checkpoint(tmp_path / "run"), find_checkpoint(path)
    assert by_dir == by_file
    assert by_file.path == path.resolve() and by_file.run_dir == (tmp_path / "run").resolve()
    assert checkpoint_label(tmp_path / "run") == checkpoint_label(path) == "run"
    assert checkpoint_label(tmp_path / "run" / "checkpoints" / "step4.ckpt") == "run-step4"
    assert model_label("Qwen/Qwen2.5-0.5B") == "Qwen2.5-0.5B"
    assert model_label("/some/dir/") == "dir" and model_label(None) == "tiny"


def test_missing_file_fails_with_one_line_naming_it(tmp_path):
    with pytest.raises(ConfigError) as err:
        find_checkpoint(tmp_path / "nope.ckpt")
    assert err.value.key == "checkpoint" and err.value.value == str(tmp_path / "nope.ckpt")
    assert "an existing .ckpt file" in str(err.value) and "\n" not in str(err.value)


def test_directory_without_last_checkpoint(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="none in that directory"):
        find_checkpoint(tmp_path / "empty")


def test_checkpoint_outside_a_run_directory(tmp_path):
    path, *_ = write_run(tmp_path / "run")
    loose = tmp_path / "loose.ckpt"
    loose.write_bytes(path.read_bytes())
    with pytest.raises(ConfigError) as err:
        find_checkpoint(loose)
    assert "config.yaml not found" in str(err.value) and "\n" not in str(err.value)


def test_unreadable_checkpoint(tmp_path):
    path, *_ = write_run(tmp_path / "run")
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="a readable Lightning checkpoint"):
        read_checkpoint(find_checkpoint(path).path)


def test_a_model_config_that_does_not_match_the_weights(tmp_path):
    bigger = dict(MODEL, hidden_size=64, intermediate_size=128)
    write_run(tmp_path / "run", model=bigger)
    with pytest.raises(ConfigError) as err:
        load(find_checkpoint(tmp_path / "run"))
    message = str(err.value)
    assert "policy weights matching the run's config" in message and "other shapes" in message
    assert "\n" not in message


def test_a_method_config_that_does_not_match_the_controller_state(tmp_path):
    fixed = {"_target_": "tempo.temperature.fixed.FixedTemperature", "temperature": 0.7}
    path, *_ = write_run(tmp_path / "run")
    config = OmegaConf.load(tmp_path / "run" / ".hydra" / "config.yaml")
    config.method = fixed  # a run config saying "fixed" next to a checkpoint with a head
    OmegaConf.save(config, tmp_path / "run" / ".hydra" / "config.yaml")
    with pytest.raises(ConfigError) as err:
        load(find_checkpoint(path))
    assert "temperature-controller weights" in str(err.value)
    assert "unexpected head." in str(err.value)
