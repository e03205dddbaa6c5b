"""LoRA through peft (`model.lora`): config checks, frozen base, the adapter-free KL reference,
sampling, and what `final_model/` holds.

A small random Qwen2 (and Llama) is saved into tmp and loaded through `PretrainedModel`, as
`model=hub model.name_or_path=<dir>` does. Tests that need peft are skipped without it; the
config checks and the no-peft behaviour run either way.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import textwrap

import lightning as L
import pytest
import torch
from omegaconf import OmegaConf
from transformers import AutoModelForCausalLM

import tempo.rl.module as module_file
from tempo.config_error import ConfigError
from tempo.data.arithmetic import ArithmeticTask
from tempo.data.datamodule import PromptDataModule
from tempo.hydra_cli import build
from tempo.logging.jsonl import JsonlLogger
from tempo.models.lora import (
    LoraSettings,
    is_lora,
    merged_weights,
    peft_available,
    reference_model,
)
from tempo.models.policy import forward_hidden, lm_head
from tempo.models.specs import PretrainedModel
from tempo.models.tiny import tiny_config
from tempo.rewards.scorer import ScoredBatch
from tempo.rl.grpo import GRPOConfig
from tempo.rl.module import RLVRModule
from tempo.rl.settings import EvalConfig, RolloutConfig
from tempo.sampling.fast_decoder import supports
from tempo.sampling.sampler import Sampler
from tempo.temperature.fixed import FixedTemperature

needs_peft = pytest.mark.skipif(
    not peft_available(), reason="peft is not installed (pip install 'tempo[peft]')"
)
GROUP = 4
LORA = {"enabled": True, "r": 4, "alpha": 8}


def _save(path, tokenizer, architecture: str = "qwen2"):
    torch.manual_seed(0)
    config = tiny_config(
        tokenizer,
        architecture=architecture,
        hidden_size=32,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        intermediate_size=64,
    )
    AutoModelForCausalLM.from_config(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture
def saved_model(tmp_path, char_tokenizer):
    return _save(tmp_path / "model", char_tokenizer)


def _load(path, lora=None):
    """(model, tokenizer) through PretrainedModel, as `model=hub` loads them."""
    return PretrainedModel(str(path), dtype="float32", lora=lora).build(ArithmeticTask())


def _perturb(model, seed: int = 1) -> None:
    """Give every adapter a non-zero up-projection (peft starts them at zero)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)


def _merged(model):
    """A plain transformers model with W + (alpha / r) B A folded into each adapted weight."""
    return copy.deepcopy(model).merge_and_unload()


def _logprobs(model, rollout) -> torch.Tensor:
    """log softmax(z / T)[token] of the completion tokens from a plain full forward of `model`
    (left padding handled with explicit positions), computed without tempo's helpers."""
    ids = torch.cat([rollout.prompt_ids, rollout.tokens], 1)
    attn = torch.cat([rollout.prompt_mask, rollout.mask.long()], 1)
    positions = (attn.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=attn, position_ids=positions).logits
    start = rollout.prompt_ids.shape[1] - 1
    scaled = logits[:, start:-1].float() / rollout.temperatures[..., None]
    return scaled.log_softmax(-1).gather(-1, rollout.tokens[..., None])[..., 0]


# ---------------------------------------------------------------- config checks (no peft needed)
@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("r", 0),
        ("r", 2.5),
        ("alpha", 0),
        ("alpha", "big"),
        ("dropout", 1.0),
        ("dropout", -0.1),
        ("target_modules", []),
        ("target_modules", ""),
        ("target_modules", ["q_proj", 3]),
        ("bias", "some"),
        ("enabled", "yes"),
        ("rank", 8),
    ],
)
def test_bad_lora_values_fail_in_one_line_naming_the_key(saved_model, key, value):
    node = OmegaConf.create(
        {
            "_target_": "tempo.models.specs.PretrainedModel",
            "name_or_path": str(saved_model),
            "lora": {key: value},
        }
    )
    with pytest.raises(ConfigError) as err:
        build("model", node)
    assert err.value.key == f"model.lora.{key}"
    assert "\n" not in str(err.value) and repr(value) in str(err.value)


def test_defaults_are_off_and_all_linear():
    settings = LoraSettings.from_config(None)
    assert not settings.enabled and settings.target_modules == "all-linear"
    assert (settings.r, settings.alpha, settings.dropout, settings.bias) == (16, 32.0, 0.0, "none")
    listed = LoraSettings.from_config({"target_modules": ["q_proj", "v_proj"]})
    assert listed.target_modules == ("q_proj", "v_proj")


def test_lora_without_peft_fails_at_config_time_with_the_install_hint(saved_model, monkeypatch):
    monkeypatch.setitem(sys.modules, "peft", None)  # what `import peft` sees when it is absent
    assert not peft_available()
    with pytest.raises(ConfigError) as err:
        PretrainedModel(str(saved_model), lora={"enabled": True})
    assert err.value.key == "lora.enabled" and "pip install 'tempo[peft]'" in str(err.value)
    model, _ = _load(saved_model, lora={"enabled": False, "r": 8})  # LoRA off: a plain model
    assert not is_lora(model) and type(model).__name__ == "Qwen2ForCausalLM"


def test_tempo_imports_and_loads_models_without_peft(saved_model):
    """In a fresh interpreter where `import peft` fails, tempo's modules import, a hub model
    loads and samples, and none of that imports peft."""
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["peft"] = None  # any `import peft` raises ImportError
        import tempo.train, tempo.evaluate, tempo.rl.module, tempo.runner
        from tempo.data.arithmetic import ArithmeticTask
        from tempo.models.lora import is_lora
        from tempo.models.specs import PretrainedModel
        from tempo.sampling.sampler import Sampler
        model, tok = PretrainedModel({str(saved_model)!r}).build(ArithmeticTask())
        ids = tok(["1+2="], return_tensors="pt", add_special_tokens=False)
        out = Sampler(4, tok.eos_token_id, tok.pad_token_id).rollout(
            model.eval(), ids["input_ids"], ids["attention_mask"], None, greedy=True
        )
        assert not is_lora(model) and out.tokens.shape == (1, 4)
        assert sys.modules["peft"] is None
        print("ok")
        """
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", WANDB_MODE="disabled")
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-2000:]


# ---------------------------------------------------------------- with peft
@needs_peft
def test_only_adapters_train_and_start_as_the_base_model(saved_model):
    base, tokenizer = _load(saved_model)
    model, _ = _load(saved_model, lora=LORA)
    assert is_lora(model) and not is_lora(base)
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    # all-linear: q, k, v, o, gate, up, down of both layers (not lm_head), an A and a B each
    assert len(trainable) == 2 * 7 * 2 and all(
        ".lora_A." in n or ".lora_B." in n for n in trainable
    )
    assert not any("lm_head" in n for n in trainable)
    ids = tokenizer(["12+30=", "7*8="], padding=True, return_tensors="pt", add_special_tokens=False)
    args = (ids["input_ids"], ids["attention_mask"])
    assert torch.equal(forward_hidden(model, *args), forward_hidden(base, *args))  # B = 0


@needs_peft
def test_unknown_target_module_fails_in_one_line(saved_model):
    with pytest.raises(ConfigError) as err:
        _load(saved_model, lora={**LORA, "target_modules": ["attn_qkv"]})
    assert err.value.key == "model.lora.target_modules" and "\n" not in str(err.value)


@needs_peft
@pytest.mark.parametrize("architecture", ["qwen2", "llama"])
def test_greedy_sampling_of_a_lora_model_equals_the_merged_model(
    tmp_path, char_tokenizer, architecture
):
    path = _save(tmp_path / architecture, char_tokenizer, architecture)
    model, tokenizer = _load(path, lora=LORA)
    _perturb(model)
    model.eval()
    merged = _merged(model).eval()
    assert supports(model) is not None and supports(merged) is None  # LoRA: the HF path
    prompts = ["12+30=", "7*8=", "100-1=", "5+5="]
    enc = tokenizer(prompts, padding=True, return_tensors="pt", add_special_tokens=False)
    args = (enc["input_ids"], enc["attention_mask"])
    hidden, hidden_merged = forward_hidden(model, *args), forward_hidden(merged, *args)
    torch.testing.assert_close(hidden, hidden_merged, rtol=1e-4, atol=1e-5)
    base, _ = _load(path)
    assert (hidden - forward_hidden(base, *args)).abs().max() > 1e-2  # the adapter matters
    assert lm_head(model) is model.get_base_model().lm_head
    sampler = Sampler(12, tokenizer.eos_token_id, tokenizer.pad_token_id)
    lora_out = sampler.rollout(model, *args, None, greedy=True)
    merged_out = sampler.rollout(merged, *args, None, greedy=True)  # the fused fast step
    assert torch.equal(lora_out.tokens, merged_out.tokens)
    assert torch.equal(lora_out.mask, merged_out.mask)
    with pytest.raises(ConfigError, match="LoRA"):
        Sampler(4, tokenizer.eos_token_id, tokenizer.pad_token_id, decoder="fast").rollout(
            model, *args, None, greedy=True
        )


class FirstOfGroupScorer:
    """Reward 1 for the first completion of each group: every group has a spread."""

    def __call__(self, completions, golds, **row_data):
        rewards = [float(i % GROUP == 0) for i in range(len(completions))]
        return ScoredBatch(rewards, [r == 1.0 for r in rewards], [None] * len(completions))

    def stats(self):
        return {}

    def close(self):
        pass


@needs_peft
def test_grpo_step_trains_adapters_only_against_the_adapter_free_reference(
    saved_model, tmp_path, monkeypatch
):
    model, tokenizer = _load(saved_model, lora=LORA)
    _perturb(model)
    model.train()
    base, _ = _load(saved_model)
    merged = _merged(model).eval()  # the policy before the update
    before = {name: p.detach().clone() for name, p in model.named_parameters()}

    calls, rollouts = [], []
    real_loss = module_file.policy_loss

    def recording_loss(logp, old_logp, advantages, mask, **kwargs):
        calls.append((logp.detach().clone(), kwargs["ref_logp"], mask.clone()))
        return real_loss(logp, old_logp, advantages, mask, **kwargs)

    monkeypatch.setattr(module_file, "policy_loss", recording_loss)
    grpo = GRPOConfig(group_size=GROUP, lr=1e-2, beta=0.1, micro_batch_size=16)
    module = RLVRModule(
        model,
        tokenizer,
        FixedTemperature(1.0),
        grpo,
        RolloutConfig(2, 10),
        EvalConfig(every=0, num_problems=4, samples=2, ks=(1, 2)),
        FirstOfGroupScorer(),
        "arithmetic",
    )
    assert module.ref_model is None  # no second copy of the weights
    assert sum(1 for _ in module.parameters()) == sum(1 for _ in model.parameters())
    sample = module._sample

    def recording_sample(*args, **kwargs):
        rollouts.append(sample(*args, **kwargs))
        return rollouts[-1]

    module._sample = recording_sample
    trainer = L.Trainer(
        max_steps=1,
        max_epochs=1,
        logger=[JsonlLogger(tmp_path)],
        accelerator="cpu",
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    trainer.fit(module, datamodule=PromptDataModule(ArithmeticTask(num_test=4), 2, 1, 4, 4))

    # The reference log-probs are the base model's; the policy's are the adapted model's.
    (logp, ref, mask), rollout = calls[0], rollouts[0]
    assert len(calls) == 1 and ref is not None and rollout.tokens.shape[0] == 2 * GROUP
    real = mask.bool()
    torch.testing.assert_close(ref[real], _logprobs(base, rollout)[real], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(logp[real], _logprobs(merged, rollout)[real], rtol=1e-4, atol=1e-5)
    assert (ref[real] - logp[real]).abs().max() > 1e-2
    assert model.training and all(  # the reference context restored train mode and adapters
        not layer.disable_adapters for layer in model.modules() if hasattr(layer, "lora_A")
    )

    # One update moved the adapters and nothing else.
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all(".lora_A." in n or ".lora_B." in n for n in changed)
    assert any(".lora_B." in n for n in changed)
    for name, p in model.named_parameters():
        if not p.requires_grad:
            assert torch.equal(p, before[name]), name


@needs_peft
def test_reference_model_context_disables_adapters_and_restores_them(saved_model):
    model, tokenizer = _load(saved_model, lora=LORA)
    _perturb(model)
    base, _ = _load(saved_model)
    model.train()
    enc = tokenizer(["3+4="], return_tensors="pt", add_special_tokens=False)
    args = (enc["input_ids"], enc["attention_mask"])
    adapted = forward_hidden(model, *args).detach()
    with torch.no_grad(), reference_model(model) as ref:
        assert not ref.training
        torch.testing.assert_close(forward_hidden(ref, *args), forward_hidden(base, *args))
    assert model.training
    torch.testing.assert_close(forward_hidden(model, *args), adapted)
    with pytest.raises(TypeError):
        with reference_model(base):
            pass


@needs_peft
def test_final_model_directory_holds_the_adapter(saved_model, tmp_path):
    """`final_model/` is `model.save_pretrained(dir)`: for LoRA, peft's adapter files only,
    which rebuild the trained policy on top of the base model."""
    from peft import PeftModel

    model, tokenizer = _load(saved_model, lora=LORA)
    _perturb(model)
    model.save_pretrained(tmp_path / "final_model")
    files = set(os.listdir(tmp_path / "final_model"))
    assert {"adapter_config.json", "adapter_model.safetensors"} <= files
    assert "model.safetensors" not in files
    restored = PeftModel.from_pretrained(_load(saved_model)[0], tmp_path / "final_model").eval()
    enc = tokenizer(["9-2="], return_tensors="pt", add_special_tokens=False)
    args = (enc["input_ids"], enc["attention_mask"])
    torch.testing.assert_close(forward_hidden(restored, *args), forward_hidden(model.eval(), *args))


@needs_peft
@pytest.mark.parametrize("bias", ["none", "all"])
def test_merged_weights_are_peft_merge_without_changing_the_policy(saved_model, bias):
    model, _ = _load(saved_model, {**LORA, "bias": bias})
    _perturb(model)
    ids = torch.tensor([[5, 6, 7, 8]])
    before = model(input_ids=ids).logits.detach()
    merged = dict(merged_weights(model))
    expected = _merged(model).state_dict()  # peft's own merge, on a copy
    assert merged.keys() == expected.keys()
    assert not any("lora" in k or "base_layer" in k for k in merged)
    for key, value in expected.items():
        torch.testing.assert_close(merged[key], value, atol=1e-6, rtol=1e-6)
    q = "model.layers.0.self_attn.q_proj"
    frozen = model.get_base_model().state_dict()[f"{q}.base_layer.weight"]
    assert (merged[f"{q}.weight"] - frozen).abs().max() > 1e-3  # the delta was folded in
    torch.testing.assert_close(model(input_ids=ids).logits, before)  # the policy is unchanged
    assert is_lora(model) and not any(m.merged for m in model.modules() if hasattr(m, "merged"))
    plain = AutoModelForCausalLM.from_config(model.config)
    assert dict(merged_weights(plain)).keys() == plain.state_dict().keys()
