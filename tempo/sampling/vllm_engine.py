"""vLLM as the rollout engine (`rollout.engine=vllm`) for every method that does not read the
hidden state.

vLLM applies one temperature per request, which serves every method whose temperature is one
number per training step (`StepTemperature`: fixed, the heuristic schedules and
entropy_target, meta_policy). Per-token rules that read only the logits and the position
(`uses_hidden = False`: edt, ead, two_level) run inside vLLM's sampler as a logits processor
(`tempo.sampling.vllm_token_rules`). A method that needs the hidden state at every decoding
step (introspective) stays on tempo's sampler; `check_engine` refuses it with one line.

The engine is colocated: built once per run, in this process, on the policy's device, from the
policy's config alone (`load_format="dummy"`, nothing written but config.json), and the
policy's weights are pushed into it with vLLM's in-place `reload_weights` before the first
rollout and after every policy update, without a disk round trip (a LoRA policy's adapters
are folded into the pushed weights, `tempo.models.lora.merged_weights`). vLLM returns the tokens and
the log-probs of the processed distribution, log softmax(z / T)[token]
(`logprobs_mode="processed_logprobs"`); the entropies at T = 1 and at T, which vLLM does not
compute, come from one chunked no-grad pass of the policy over the sampled tokens. The result
is the same `Rollout` tempo's sampler returns.

vLLM is an optional extra (`pip install -e '.[vllm]'`); this module imports without it.
"""

from __future__ import annotations

import atexit
import importlib.util
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import Tensor

from tempo.config_error import ConfigError
from tempo.models.lora import merged_weights
from tempo.models.policy import completion_hidden, lm_head
from tempo.ops.chunked_logprobs import hidden_token_stats
from tempo.sampling import vllm_token_rules
from tempo.sampling.rollout import Rollout
from tempo.sampling.sampler import InvalidTemperature
from tempo.temperature.base import StepTemperature, TemperatureController

ENGINES = ("tempo", "vllm")
DTYPES = ("auto", "float32", "bfloat16", "float16")
MAX_TEMPERATURE = 2.0  # vLLM's SamplingParams accept temperatures in [0, 2]
_SERVES = (
    "per-step methods (fixed, heuristic schedules and entropy_target, meta_policy) and "
    "per-token rules that read only the logits and the position (edt, ead, two_level)"
)


@dataclass
class VLLMSettings:
    """Engine options of `rollout.vllm` (used only with `rollout.engine=vllm`)."""

    gpu_memory_utilization: float = 0.3  # device memory vLLM may take (weights + KV cache)
    kv_cache_memory_bytes: int | None = None  # exact KV-cache size; overrides the fraction
    tensor_parallel_size: int = 1  # devices one engine spans
    max_model_len: int | None = None  # prompt + completion tokens; null = the model's context
    dtype: str = "auto"  # auto (vLLM picks: bf16 for float32 models) | float32 | bfloat16 | float16
    enforce_eager: bool = False  # true: no CUDA graphs / compilation (faster start-up)
    enable_prefix_caching: bool = True  # the G copies of a prompt share its KV cache
    entropy_batch_size: int = 16  # rows per no-grad pass that computes the entropies

    def __post_init__(self) -> None:
        frac = self.gpu_memory_utilization
        if isinstance(frac, bool) or not isinstance(frac, (int, float)) or not 0 < frac <= 1:
            raise ConfigError("vllm.gpu_memory_utilization", frac, "a fraction in (0, 1]")
        for key, minimum, nullable in [
            ("kv_cache_memory_bytes", 1, True),
            ("tensor_parallel_size", 1, False),
            ("max_model_len", 1, True),
            ("entropy_batch_size", 1, False),
        ]:
            value = getattr(self, key)
            if value is None and nullable:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                allowed = f"{'null or ' if nullable else ''}an integer >= {minimum}"
                raise ConfigError(f"vllm.{key}", value, allowed)
        if self.dtype not in DTYPES:
            raise ConfigError("vllm.dtype", self.dtype, f"one of {', '.join(DTYPES)}")
        for key in ("enforce_eager", "enable_prefix_caching"):
            if not isinstance(getattr(self, key), bool):
                raise ConfigError(f"vllm.{key}", getattr(self, key), "true or false")

    @classmethod
    def from_value(cls, value: VLLMSettings | Mapping[str, Any] | None) -> VLLMSettings:
        """Settings from a mapping (the YAML block); unknown keys are a one-line error."""
        if isinstance(value, VLLMSettings):
            return value
        if value is None:
            return cls()
        if not isinstance(value, Mapping):
            raise ConfigError("vllm", value, "a mapping of engine options")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ConfigError(f"vllm.{unknown[0]}", value[unknown[0]], f"one of {sorted(known)}")
        return cls(**dict(value))


def vllm_missing() -> str | None:
    """Why vLLM cannot be used here (None when it is installed)."""
    if importlib.util.find_spec("vllm") is None:
        return "vllm is not installed (pip install -e '.[vllm]', or make test-vllm)"
    return None


def check_engine(
    engine: str,
    controller: TemperatureController,
    eval_controller: TemperatureController | None = None,
    *,
    world_size: int = 1,
    tensor_parallel_size: int = 1,
    key: str = "rollout.engine",
) -> None:
    """One-line errors for what `rollout.engine=vllm` cannot serve; nothing for `tempo`.

    `key` names the option in the errors (`eval.engine` for tempo-eval); the engine options
    sit beside it (`rollout.vllm.*`, `eval.vllm.*`)."""
    tp_key = f"{key.rsplit('.', 1)[0]}.vllm.tensor_parallel_size"
    if engine not in ENGINES:
        raise ConfigError(key, engine, f"one of {', '.join(ENGINES)}")
    if engine == "tempo":
        return
    for which, each in [("method", controller), ("the method's evaluation", eval_controller)]:
        if each is None or isinstance(each, StepTemperature):
            continue
        name = getattr(each, "name", type(each).__name__)
        if getattr(each, "rule", None):
            name = f"{name} (rule {each.rule})"
        if each.uses_hidden:
            raise ConfigError(
                key,
                engine,
                f"tempo for {which} {name!r}: its temperature reads the hidden state at every "
                f"token, which needs tempo's sampler (vllm serves {_SERVES})",
            )
        if tensor_parallel_size > 1:
            raise ConfigError(
                tp_key,
                tensor_parallel_size,
                f"1 for {which} {name!r}: a per-token rule runs in this process, and "
                "tensor-parallel vLLM samples in its worker processes",
            )
    if world_size > 1 and tensor_parallel_size > 1:
        raise ConfigError(
            tp_key,
            tensor_parallel_size,
            f"1 with {world_size} processes (each rank samples its own prompts with its own "
            "engine; an engine spanning ranks would need the same prompts on all of them)",
        )
    reason = vllm_missing()
    if reason is not None:
        raise ConfigError(key, engine, f"tempo ({reason})")


def _not_chat_warmup(record: logging.LogRecord) -> bool:
    """Drops vLLM's 'Chat template warmup failed' traceback: tempo tokenizes its prompts
    itself and builds the engine without a tokenizer, so there is no template to warm up."""
    return record.getMessage() != "Chat template warmup failed"


def _not_rotary_reload(record: logging.LogRecord) -> bool:
    """Drops vLLM's 'RotaryEmbedding: Failed to load weights' at every push: the rotary
    cos/sin cache is computed from the config and is in no checkpoint, so vLLM keeps its own
    (any other layer that fails to load is still reported)."""
    return not record.getMessage().endswith("RotaryEmbedding: Failed to load weights")


def _external_launcher(device: torch.device) -> dict[str, Any]:
    """Engine arguments for a multi-process run (DDP): one engine per rank, in the rank's own
    process, beside the process group the trainer started (vLLM's `external_launcher`, as
    TRL's colocate mode runs it). vLLM reads the rank and device from the environment."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return {}
    os.environ.setdefault("RANK", str(dist.get_rank()))
    os.environ.setdefault("WORLD_SIZE", str(dist.get_world_size()))
    local = device.index if device.type == "cuda" and device.index is not None else None
    os.environ.setdefault("LOCAL_RANK", str(dist.get_rank() if local is None else local))
    return {"distributed_executor_backend": "external_launcher"}


class VLLMEngine:
    """A colocated vLLM engine that samples `Rollout`s for the methods `check_engine` allows."""

    def __init__(
        self,
        settings: VLLMSettings,
        max_new_tokens: int,
        eos_token_ids: Sequence[int],
        pad_token_id: int,
        chunk_tokens: int,
        key: str = "rollout.engine",
    ) -> None:
        self.settings = settings
        self.key = key  # the option named in errors (eval.engine for tempo-eval)
        self.max_new_tokens = max_new_tokens
        self.eos_token_ids = list(dict.fromkeys(int(i) for i in eos_token_ids))
        self.pad_token_id = pad_token_id
        self.chunk_tokens = chunk_tokens
        self.llm: Any = None
        self._config_dir: str | None = None
        self.pushes = 0  # weight pushes so far

    # ------------------------------------------------------------------ engine life
    def build(self, model: torch.nn.Module) -> None:
        """Start the engine with the policy's architecture and dummy weights (push next)."""
        if self.llm is not None:
            return
        # The engine core runs in this process, so pushed tensors are passed by reference.
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        device = next(model.parameters()).device
        if device.type == "cpu":  # leave the trainer's thread settings alone
            os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
        from vllm import LLM

        logging.getLogger("vllm.renderers.base").addFilter(_not_chat_warmup)
        reload_log = "vllm.model_executor.model_loader.reload.layerwise"
        logging.getLogger(reload_log).addFilter(_not_rotary_reload)
        self._config_dir = tempfile.mkdtemp(prefix="tempo-vllm-")
        atexit.register(shutil.rmtree, self._config_dir, True)  # the run ends without close()
        model.config.save_pretrained(self._config_dir)
        s = self.settings
        max_len = s.max_model_len or getattr(model.config, "max_position_embeddings", None)
        # vLLM sets torch's intra-op threads to 1 for serving (unless OMP_NUM_THREADS is set),
        # and its CPU worker replaces torch.set_num_threads with a no-op: in this process both
        # are the trainer's (trainer.threads), so both are restored after the build.
        threads, set_threads = torch.get_num_threads(), torch.set_num_threads
        # Inference mode always (Lightning validates under it): the engine's weights are then
        # inference tensors, which later pushes may only update under inference mode too.
        with torch.inference_mode():
            self.llm = LLM(
                model=self._config_dir,
                skip_tokenizer_init=True,
                load_format="dummy",
                dtype=s.dtype,
                max_model_len=max_len,
                gpu_memory_utilization=s.gpu_memory_utilization,
                kv_cache_memory_bytes=s.kv_cache_memory_bytes,
                tensor_parallel_size=s.tensor_parallel_size,
                enforce_eager=s.enforce_eager,
                enable_prefix_caching=s.enable_prefix_caching,
                logprobs_mode="processed_logprobs",
                logits_processors=[vllm_token_rules.processor_class()],  # per-token rules
                seed=0,
                # On CPU a seeded request whose prefill is split over steps crashes vLLM 0.32
                # ("CPU Generator does not use offset"): whole prefills only there.
                enable_chunked_prefill=device.type != "cpu",
                **_external_launcher(device),
            )
        torch.set_num_threads = set_threads
        torch.set_num_threads(threads)

    def push_weights(self, model: torch.nn.Module) -> None:
        """Load the policy's current weights into the engine in place (HF checkpoint names;
        a LoRA policy's adapters folded into its weights, layer by layer)."""
        self.build(model)
        state = merged_weights(model)
        dtype = self.llm.model_config.dtype  # e.g. bf16 for a float32 policy under dtype=auto
        if self.settings.tensor_parallel_size > 1:  # other processes: through host memory
            weights: Any = [(k, v.detach().to("cpu", dtype)) for k, v in state]
        else:  # one tensor at a time, cast only where the dtypes differ
            weights = ((k, v.detach().to(dtype)) for k, v in state)
        with torch.inference_mode():  # see `build`
            self.llm.collective_rpc(
                "reload_weights",
                kwargs={"weights_iterator": weights, "is_checkpoint_format": True},
            )
        self.llm.reset_prefix_cache()  # cached prompt KV came from the old weights
        self.pushes += 1

    def close(self) -> None:
        """Drop the engine. vLLM's parallel state is process-wide: dropping one engine breaks
        any other in the same process, so a process holds one engine at a time."""
        if self._config_dir is not None:
            shutil.rmtree(self._config_dir, ignore_errors=True)
            self._config_dir = None
        self.llm = None

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def rollout(
        self,
        model: torch.nn.Module,
        prompt_ids: Tensor,
        prompt_mask: Tensor,
        controller: TemperatureController | None,
        generator: torch.Generator | None = None,
        greedy: bool = False,
        entropies: bool = True,
    ) -> Rollout:
        """One completion per prompt row, as tempo's sampler would return it.

        Each row is one request with its own seed drawn from `generator`, so a run is
        reproducible from its seed. `greedy` takes the argmax (T recorded as 1); no
        controller samples at T = 1; a per-token rule decides T token by token inside vLLM.
        Without `entropies` (evaluation), the entropy fields are 0 and the extra pass is
        skipped.
        """
        batch = prompt_ids.shape[0]
        seeds = torch.randint(0, 2**31 - 1, (batch,), generator=generator, device=prompt_ids.device)
        if controller is not None and not greedy and not isinstance(controller, StepTemperature):
            check_engine(
                "vllm",
                controller,
                tensor_parallel_size=self.settings.tensor_parallel_size,
                key=self.key,
            )
            rollout = self.sample_rule(prompt_ids, prompt_mask, controller, seeds.tolist())
        else:
            temperature = 1.0
            if controller is not None and not greedy:
                temperature = float(controller.step_temperature())
                if not (math.isfinite(temperature) and temperature > 0):
                    raise InvalidTemperature(controller, temperature)
            temps = [temperature] * batch
            rollout = self.sample(prompt_ids, prompt_mask, temps, seeds.tolist(), greedy)
        if entropies:
            self._fill_entropies(model, rollout)
        return rollout

    def sample(
        self,
        prompt_ids: Tensor,
        prompt_mask: Tensor,
        temperatures: Sequence[float],
        seeds: Sequence[int],
        greedy: bool = False,
    ) -> Rollout:
        """One request per row, row i at `temperatures[i]` with `seeds[i]` (entropies 0)."""
        hottest = max(temperatures, default=0.0)
        if not greedy and hottest > MAX_TEMPERATURE:
            raise ConfigError(
                self.key,
                "vllm",
                f"tempo for temperatures above {MAX_TEMPERATURE} (vLLM samples at T in "
                f"(0, {MAX_TEMPERATURE}]; the method asked for T = {hottest})",
            )
        temps = [0.0 if greedy else float(t) for t in temperatures]
        rollout = self._generate(prompt_ids, prompt_mask, temps, seeds, tags=None)
        if not greedy:
            rollout.temperatures[:] = torch.tensor(temperatures, dtype=torch.float)[:, None]
        return rollout

    def sample_rule(
        self,
        prompt_ids: Tensor,
        prompt_mask: Tensor,
        controller: TemperatureController,
        seeds: Sequence[int],
    ) -> Rollout:
        """One request per row, its T decided token by token by `controller` (a per-token
        rule that reads only the logits and the position) inside vLLM's sampler."""
        rows = prompt_ids.shape[0]
        device = prompt_ids.device
        call_id, call = vllm_token_rules.open_call(controller, rows, self.max_new_tokens, device)
        try:
            tags = [{vllm_token_rules.TAG: [call_id, row]} for row in range(rows)]
            rollout = self._generate(prompt_ids, prompt_mask, [1.0] * rows, seeds, tags=tags)
        finally:
            vllm_token_rules.close_call(call_id)
        if call.calls == 0:
            raise RuntimeError(
                "vLLM sampled without tempo's per-token rule: its engine core runs in another "
                "process (is VLLM_ENABLE_V1_MULTIPROCESSING=1 set?), where the rule cannot run"
            )
        bad = call.bad_temperature(rollout.mask)
        if bad is not None:
            raise InvalidTemperature(controller, bad)
        width = rollout.tokens.shape[1]
        rollout.temperatures = torch.where(
            rollout.mask.bool(), call.temperatures[:, :width], 1.0
        ).to(rollout.logprobs.dtype)
        rollout.controller_data = {k: v[:, :width] for k, v in call.records.items()}
        return rollout

    def _generate(
        self,
        prompt_ids: Tensor,
        prompt_mask: Tensor,
        temperatures: Sequence[float],
        seeds: Sequence[int],
        tags: Sequence[dict[str, Any]] | None,
    ) -> Rollout:
        """One request per row at vLLM temperature `temperatures[i]` (0 = greedy); the
        Rollout's temperatures are 1 and its entropies 0 (callers fill them)."""
        from vllm import SamplingParams

        if self.llm is None:
            raise RuntimeError("VLLMEngine sampled before push_weights: the engine has no weights")
        requests = [
            {"prompt_token_ids": row[keep.bool()].tolist()}
            for row, keep in zip(prompt_ids, prompt_mask, strict=True)
        ]
        params = [
            SamplingParams(
                n=1,
                temperature=float(t),
                seed=int(seed),
                max_tokens=self.max_new_tokens,
                stop_token_ids=self.eos_token_ids,
                logprobs=0,
                detokenize=False,
                extra_args=None if tags is None else tags[i],
            )
            for i, (t, seed) in enumerate(zip(temperatures, seeds, strict=True))
        ]
        outputs = self.llm.generate(requests, params, use_tqdm=False)
        completions = [out.outputs[0] for out in outputs]
        device = prompt_ids.device
        batch = len(completions)
        length = max(1, max(len(c.token_ids) for c in completions))
        tokens = torch.full((batch, length), self.pad_token_id, dtype=torch.long)
        logprobs = torch.zeros(batch, length)
        mask = torch.zeros(batch, length)
        for i, c in enumerate(completions):
            ids = list(c.token_ids)
            n = len(ids)
            tokens[i, :n] = torch.tensor(ids, dtype=torch.long)
            mask[i, :n] = 1.0
            logprobs[i, :n] = torch.tensor(
                [step[token].logprob for step, token in zip(c.logprobs, ids, strict=True)]
            )
        finished = torch.tensor([c.finish_reason == "stop" for c in completions])
        return Rollout(
            prompt_ids=prompt_ids,
            prompt_mask=prompt_mask,
            tokens=tokens.to(device),
            mask=mask.to(device),
            temperatures=torch.ones(batch, length, device=device),
            logprobs=logprobs.to(device),
            entropy=torch.zeros(batch, length, device=device),
            entropy_at_T=torch.zeros(batch, length, device=device),
            finished=finished.to(device),
        )

    def _fill_entropies(self, model: torch.nn.Module, rollout: Rollout) -> None:
        """Entropy at T = 1 and at the sampled T of every completion token, chunked."""
        rows = rollout.tokens.shape[0]
        step = self.settings.entropy_batch_size
        for start in range(0, rows, step):
            idx = slice(start, min(rows, start + step))
            part = rollout.select(idx).trimmed()
            stats = hidden_token_stats(
                completion_hidden(model, part),
                lm_head(model),
                part.tokens,
                part.temperatures,
                mask=part.mask,
                chunk_tokens=self.chunk_tokens,
                entropy=True,
                entropy_at_T=True,
            )
            width = part.tokens.shape[1]
            rollout.entropy[idx, :width] = stats.entropy
            rollout.entropy_at_T[idx, :width] = stats.entropy_at_T
