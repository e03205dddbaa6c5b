"""`trainer=fsdp`: the preset's settings, the FSDP2 strategy they build, and RL training under it
on 2 CPU processes (gloo), compared with the same run under DDP.

The two ranks are started as `torchrun` starts them (RANK / WORLD_SIZE / MASTER_* in each
process's environment), each running `run_training` (what `tempo-train` calls). The rewards are
rigged so that rank 0 has three micro-batches to learn from and rank 1 none (it must run real
balancing passes through the sharded model); the introspective method updates the policy at
step 0 (mu = 2: a no-grad old-policy pass, two optimiser steps) and its temperature head at
step 1 (head gradients averaged over ranks). The same run under DDP (whose gradient
all-reduce is the reference) must end with the same weights within float tolerance.
"""

from __future__ import annotations

import os
import shutil
import traceback
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from lightning.pytorch.strategies import ModelParallelStrategy
from omegaconf import OmegaConf
from transformers import AutoModelForCausalLM

from tempo.config_error import ConfigError
from tempo.data.arithmetic import ArithmeticTask
from tempo.fsdp import FSDPSettings, TempoFSDPStrategy
from tempo.hydra_cli import build
from tempo.logging.samples import SamplesConfig
from tempo.models.specs import TinyModel
from tempo.rewards.scorer import ScoredBatch
from tempo.rl.grpo import GRPOConfig
from tempo.rl.settings import EvalConfig, LoggerConfig, RewardConfig, RolloutConfig, TrainerConfig
from tempo.runner import RunParts, make_strategy, run_training
from tempo.temperature.fixed import FixedTemperature
from tempo.temperature.introspective import IntrospectiveTemperature
from tests.gloo_ranks import run_ranks

CONF = Path(__file__).resolve().parents[1] / "conf"
WORLD = 2
GROUP = 4
PROMPTS = 2  # per rank and step
STEPS = 2
JOIN_TIMEOUT_S = 180
#: The runs' `trainer.strategy`; fsdp_options also recomputes activations in backward.
STRATEGIES = {
    "fsdp": FSDPSettings(),
    "fsdp_options": FSDPSettings("SHARD_GRAD_OP", cpu_offload=True),
    "ddp": "ddp",
}


def _trainer_node(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=["trainer=fsdp", *overrides]).trainer


def test_fsdp_preset_builds_its_settings():
    trainer = build("trainer", _trainer_node("trainer.strategy.sharding_strategy=SHARD_GRAD_OP"))
    assert isinstance(trainer, TrainerConfig)
    assert (trainer.accelerator, trainer.devices, trainer.precision) == (
        "gpu",
        "auto",
        "bf16-mixed",
    )
    assert trainer.strategy == FSDPSettings(sharding_strategy="SHARD_GRAD_OP")
    assert trainer.strategy.reshard_after_forward is False
    default = build("trainer", _trainer_node()).strategy
    assert (default.sharding_strategy, default.reshard_after_forward) == ("FULL_SHARD", True)
    assert (default.cpu_offload, default.state_dict_type) == (False, "full")


@pytest.mark.parametrize(
    ("key", "value"),
    [("sharding_strategy", "NO_SHARD"), ("cpu_offload", 1), ("state_dict_type", "sharded")],
)
def test_bad_fsdp_values_fail_in_one_line(key, value):
    node = _trainer_node()
    OmegaConf.update(node, f"strategy.{key}", value)
    with pytest.raises(ConfigError) as err:
        build("trainer", node)
    assert err.value.key == f"trainer.strategy.{key}"
    assert "\n" not in str(err.value) and repr(value) in str(err.value)


def test_settings_build_a_full_state_dict_fsdp2_strategy():
    strategy = make_strategy(FSDPSettings("SHARD_GRAD_OP"), FixedTemperature(1.0), GRPOConfig())
    assert isinstance(strategy, TempoFSDPStrategy) and isinstance(strategy, ModelParallelStrategy)
    assert strategy.settings == FSDPSettings("SHARD_GRAD_OP")
    assert strategy._save_distributed_checkpoint is False  # one full file, written by rank 0


def test_fsdp_refuses_a_kl_reference_model_and_lora_in_one_line():
    with pytest.raises(ConfigError) as err:
        make_strategy(FSDPSettings(), FixedTemperature(1.0), GRPOConfig(beta=0.1))
    assert err.value.key == "algorithm.beta" and "\n" not in str(err.value)
    lora_model = TinyModel(hidden_size=32, num_layers=2, intermediate_size=64)
    lora_model.lora = type("Lora", (), {"enabled": True})()
    with pytest.raises(ConfigError) as err:
        make_strategy(FSDPSettings(), FixedTemperature(1.0), GRPOConfig(), lora_model)
    assert err.value.key == "model.lora.enabled" and "\n" not in str(err.value)


# ---------------------------------------------------------------- two CPU processes
class UnevenScorer:
    """Rank 0: reward 1 for the first completion of each group; rank 1: all 0 (nothing to learn)."""

    def __call__(self, completions, golds, **row_data):
        n = len(completions)
        if torch.distributed.get_rank() == 0:
            rewards = [float(i % GROUP == 0) for i in range(n)]
        else:
            rewards = [0.0] * n
        return ScoredBatch(rewards, [r == 1.0 for r in rewards], [None] * n)

    def stats(self):
        return {}

    def close(self):
        pass


class UnevenReward(RewardConfig):
    def scorer(self, check=None, extract=None):
        return UnevenScorer()


class RecordingTiny(TinyModel):
    """Keeps the model it built, so the test can read the trained weights of every rank."""

    def build(self, task, accelerator: str = "cpu"):
        self.built, tokenizer = super().build(task, accelerator)
        return self.built, tokenizer


def _tiny(cache_dir: str) -> RecordingTiny:
    return RecordingTiny(
        hidden_size=32,
        num_layers=2,
        intermediate_size=64,
        warmstart={"steps": 0},
        cache_dir=cache_dir,
    )


def _full(tensors: dict) -> dict:
    """Every tensor whole (sharded ones gathered: a collective, same order on every rank)."""
    from torch.distributed.tensor import DTensor

    return {
        k: (v.full_tensor() if isinstance(v, DTensor) else v).detach().clone()
        for k, v in tensors.items()
    }


def _worker(strategy: str, run_dir: str, out: str, cache: str, steps: int, resume: bool) -> None:
    rank = int(os.environ["RANK"])
    torch.set_num_threads(1)
    try:
        tiny = _tiny(cache)
        controller = IntrospectiveTemperature(policy_steps=1, head_steps=1, lr=1e-2)
        parts = RunParts(
            task=ArithmeticTask(num_test=4),
            method=controller,
            # rank 0 learns from 3 micro-batches (8 rows by 3), rank 1 from none
            algorithm=GRPOConfig(group_size=GROUP, lr=1e-2, micro_batch_size=3, mu=2),
            model=tiny,
            rollout=RolloutConfig(PROMPTS, 10),
            evaluation=EvalConfig(every=0, num_problems=4, samples=2, ks=(1, 2), at_start=True),
            reward=UnevenReward(),
            trainer=TrainerConfig(
                max_steps=steps,
                devices=WORLD,
                strategy=STRATEGIES[strategy],
                progress_bar=False,
                gradient_checkpointing=strategy == "fsdp_options",
            ),
            logger=LoggerConfig(backend="jsonl"),
            samples=SamplesConfig(every=0),
        )
        config = None if resume else {"strategy": strategy}  # a resume may switch strategy
        summary = run_training(parts, run_dir, 0, strategy, "test", config=config)
        result = {
            "summary": summary,
            "policy": _full(tiny.built.state_dict()),
            "local_numel": sum(p.to_local().numel() for p in tiny.built.parameters())
            if strategy != "ddp"
            else None,
            "controller": {
                k: v.clone()
                for k, v in controller.state_dict().items()
                if isinstance(v, torch.Tensor)
            },
        }
    except BaseException:
        result = {"error": traceback.format_exc()}
    torch.save(result, f"{out}-rank{rank}.pt")


def _run(
    strategy: str, run: Path, steps: int = STEPS, resume: bool = False, out: Path | None = None
) -> list[dict]:
    """Both ranks of one run in `run` (results beside it, or at `out`); a checkpoint there is
    resumed."""
    out = out or run
    args = (strategy, str(run), str(out), str(run.parent / "cache"), steps, resume)
    return run_ranks(
        _worker,
        args,
        lambda rank: Path(f"{out}-rank{rank}.pt"),
        WORLD,
        JOIN_TIMEOUT_S,
        check_exit=False,
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[dict, list[dict], list[dict], Path]:
    """The starting weights, the FSDP ranks' results, the DDP ranks' results, the folder."""
    tmp = tmp_path_factory.mktemp("fsdp")
    initial = _tiny(str(tmp / "cache")).build(ArithmeticTask(num_test=4))[0].state_dict()
    return initial, _run("fsdp", tmp / "fsdp"), _run("ddp", tmp / "ddp"), tmp


def _close(a: dict, b: dict, atol: float = 1e-5) -> bool:
    return a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=atol) for k in a)


def test_fsdp_shards_the_policy_and_both_ranks_end_with_the_same_weights(runs):
    initial, fsdp, _, _ = runs
    first, second = fsdp
    full = sum(v.numel() for k, v in initial.items() if k != "lm_head.weight")  # tied
    assert first["local_numel"] + second["local_numel"] == full  # the shards partition it
    assert 0 < first["local_numel"] < full
    assert first["policy"].keys() == initial.keys()
    assert all(torch.equal(first["policy"][k], second["policy"][k]) for k in initial)
    assert any(not torch.equal(first["policy"][k], initial[k]) for k in initial)  # it learned
    assert all(
        torch.equal(a, b) for a, b in zip(*(r["controller"].values() for r in fsdp), strict=True)
    )
    assert float(first["controller"]["head.fc2.weight"].abs().sum()) > 0  # step 1 moved it
    summary = first["summary"]
    assert summary["status"] == "finished" and summary["steps"] == STEPS
    losses = [summary["final"][k] for k in ("method/head_loss", "train/reward_mean")]
    assert all(torch.isfinite(torch.tensor(losses)))


def test_fsdp_trains_to_the_same_weights_as_ddp(runs):
    initial, fsdp, ddp, _ = runs
    assert _close(fsdp[0]["policy"], ddp[0]["policy"])
    assert _close(fsdp[0]["controller"], ddp[0]["controller"])
    # ...and the comparison is not vacuous: both moved the weights well beyond the tolerance.
    moved = max(float((ddp[0]["policy"][k] - initial[k]).abs().max()) for k in initial)
    assert moved > 1e-3
    for key in ("train/reward_mean", "loss/policy", "loss/grad_norm"):
        a, b = fsdp[0]["summary"]["final"].get(key), ddp[0]["summary"]["final"].get(key)
        assert a == pytest.approx(b, rel=1e-4, abs=1e-6), key


def test_fsdp_options_with_gradient_checkpointing_train_to_the_same_weights(runs):
    """Layers kept whole from forward to backward (SHARD_GRAD_OP), sharded state offloaded to
    CPU memory (here the same memory, but FSDP's offload code path), and activations recomputed
    in backward (FSDP2 hooks and transformers' checkpointing together): still DDP's weights."""
    _, _, ddp, tmp = runs
    ranks = _run("fsdp_options", tmp / "fsdp_options")
    assert _close(ranks[0]["policy"], ddp[0]["policy"])
    assert _close(ranks[0]["controller"], ddp[0]["controller"])
    assert all(torch.equal(v, ranks[1]["policy"][k]) for k, v in ranks[0]["policy"].items())


def test_fsdp_checkpoint_and_final_model_hold_the_full_weights(runs):
    _, fsdp, _, tmp = runs
    policy = fsdp[0]["policy"]
    ckpt = torch.load(tmp / "fsdp" / "checkpoints" / "last.ckpt", weights_only=False)
    ddp_ckpt = torch.load(tmp / "ddp" / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == ddp_ckpt["global_step"] == STEPS
    # The same layout as a DDP checkpoint (what resume and tempo-eval read), full tensors.
    assert ckpt["state_dict"].keys() == ddp_ckpt["state_dict"].keys()
    for key, value in policy.items():
        assert torch.equal(ckpt["state_dict"][f"model.{key}"], value), key
    assert len(ckpt["optimizer_states"]) == 2  # the policy's and the head's AdamW
    for mine, reference in zip(ckpt["optimizer_states"], ddp_ckpt["optimizer_states"], strict=True):
        assert mine["param_groups"][0]["params"] == reference["param_groups"][0]["params"]
        assert mine["state"].keys() == reference["state"].keys() and mine["state"]
        for index, state in mine["state"].items():
            for name in ("exp_avg", "exp_avg_sq"):  # whole tensors, not one rank's shard
                assert state[name].shape == reference["state"][index][name].shape
                assert torch.allclose(state[name], reference["state"][index][name], atol=1e-6)
    final = AutoModelForCausalLM.from_pretrained(tmp / "fsdp" / "final_model")
    assert all(torch.equal(final.state_dict()[k], v) for k, v in policy.items())


def test_fsdp_resumes_a_checkpoint_as_ddp_does(runs):
    """One more RL step from the DDP run's checkpoint, under FSDP and under DDP: the weights,
    Adam moments and RNG streams loaded by FSDP give the same update as DDP's resume. (Both
    resume in the DDP run's own directory, from its saved last.ckpt.)"""
    initial, _, _, tmp = runs
    last = tmp / "ddp" / "checkpoints" / "last.ckpt"
    saved = tmp / "start.ckpt"
    shutil.copy2(last, saved)
    resumed = {}
    try:
        for strategy in ("fsdp", "ddp"):
            shutil.copy2(saved, last)
            out = tmp / f"resume-{strategy}"
            resumed[strategy] = _run(strategy, tmp / "ddp", STEPS + 1, resume=True, out=out)
            assert resumed[strategy][0]["summary"]["steps"] == STEPS + 1
    finally:
        shutil.copy2(saved, last)
    before = torch.load(saved, weights_only=False)
    start = {k[len("model.") :]: v for k, v in before["state_dict"].items() if k[:6] == "model."}
    fsdp, ddp = resumed["fsdp"][0]["policy"], resumed["ddp"][0]["policy"]
    assert _close(fsdp, ddp)
    assert all(torch.equal(fsdp[k], resumed["fsdp"][1]["policy"][k]) for k in fsdp)
    assert max(float((ddp[k] - start[k]).abs().max()) for k in initial) > 1e-3  # it moved
