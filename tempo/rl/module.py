"""The LightningModule that runs one RLVR step: rollout, reward, advantages, GRPO updates.

One training batch is one RL step (`prompts_per_step` problems). Each step samples every
prompt `group_size` times under the temperature controller, scores the completions, and
takes `mu` optimiser steps on the clipped surrogate, recomputing log-probs with the stored
per-token temperatures. Validation batches are held-out problems scored greedily and with
`samples` draws at the evaluation temperature.
"""

from __future__ import annotations

import copy
import time
from collections import defaultdict
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import lightning as L
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from tempo.config_error import ConfigError
from tempo.data.problem import Problem
from tempo.distributed import global_fmax, global_max, global_sum, global_sum_count, world_size
from tempo.evaluation.metrics import evaluation_metrics as shared_evaluation_metrics
from tempo.evaluation.scoring import Samples, rollout_samples, score_problems
from tempo.fsdp import FSDPSettings, average_gradients, clip_grad_norm, full_weights
from tempo.logging.samples import SampleWriter, log_to_wandb, sample_rows
from tempo.metrics import masked_mean, masked_std, unique_answers
from tempo.metrics.temperature_profile import (
    temperature_by_class,
    temperature_by_position,
    token_classes,
    token_pieces,
)
from tempo.models.lora import is_lora, reference_model
from tempo.models.policy import completion_hidden, lm_head
from tempo.models.prompting import PromptBuilder
from tempo.models.special_tokens import check_fits_context, context_length
from tempo.ops.chunked_logprobs import TokenStats, hidden_token_stats
from tempo.rewards.scorer import RewardScorer
from tempo.rl.grpo import (
    GRPOConfig,
    LogpMismatch,
    group_advantages,
    policy_loss,
    truncated_is_weights,
    zero_std_fraction,
)
from tempo.rl.lr_schedule import make_scheduler
from tempo.rl.micro_batches import micro_batches
from tempo.rl.nonfinite import NonFiniteError, require_finite
from tempo.rl.settings import EvalConfig, RolloutConfig
from tempo.sampling.rollout import Rollout
from tempo.sampling.sampler import Sampler
from tempo.sampling.vllm_engine import VLLMEngine, check_engine
from tempo.temperature.base import HEAD_PHASE, TemperatureController
from tempo.temperature.fixed import FixedTemperature

#: Seed offset between DDP ranks' sampling streams (far from the evaluation seeds' offsets).
RANK_SEED_STRIDE = 2**40


class RLVRModule(L.LightningModule):
    """Wraps the LLM policy and the temperature controller; manual optimisation."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        controller: TemperatureController,
        grpo: GRPOConfig,
        rollout: RolloutConfig,
        evaluation: EvalConfig,
        scorer: RewardScorer,
        task_name: str,
        seed: int = 0,
        samples: SampleWriter | None = None,
        prompts: PromptBuilder | None = None,
        stop_token_ids: Sequence[int] | None = None,
        eval_tasks: Sequence[tuple[str, RewardScorer]] = (),
        total_steps: int | None = None,
    ) -> None:
        """`prompts` turns task prompts into model input (chat template, BOS; default: the
        tokenizer's plain encoding), `stop_token_ids` end completions (default: the tokenizer's
        EOS), `eval_tasks` are (name, scorer) of held-out tasks evaluated after the training
        task's own, in the order of the data module's validation loaders, and `total_steps`
        (trainer.max_steps) is the length of the learning-rate schedule."""
        super().__init__()
        self.automatic_optimization = False
        self.model = model
        if hasattr(controller, "logit_statistics"):
            raise ConfigError(
                "method",
                type(controller).__name__,
                "a controller with statistics_temperatures() and token_statistics("
                "candidate_logprobs, mask): logit_statistics(logits, tokens, mask) was replaced, "
                "methods no longer receive [b, L, V] logits (see tempo/temperature/base.py)",
            )
        self.controller = controller
        self.tokenizer = tokenizer
        self.grpo, self.rollout_cfg, self.eval_cfg = grpo, rollout, evaluation
        self.scorer = scorer
        self.task_name = task_name
        self.eval_names = [task_name, *(name for name, _ in eval_tasks)]
        self.eval_scorers = [scorer, *(task_scorer for _, task_scorer in eval_tasks)]
        self.seed = seed
        self.samples = samples
        self.total_steps = total_steps
        self.prompts = prompts or PromptBuilder(tokenizer)
        self.context = context_length(model.config)
        self.sampler = Sampler(
            rollout.max_new_tokens,
            list(stop_token_ids or [tokenizer.eos_token_id]),
            tokenizer.pad_token_id,
            check_every=rollout.check_every,
            decoder=rollout.decoder,
            compact_below=rollout.compact_below,
        )
        self.eval_controller = controller.for_evaluation() or FixedTemperature(
            evaluation.temperature
        )
        self.vllm: VLLMEngine | None = None  # rollout.engine=vllm: built at the first rollout
        if rollout.engine == "vllm":
            check_engine(
                "vllm",
                controller,
                self.eval_controller,
                tensor_parallel_size=rollout.vllm.tensor_parallel_size,
            )
            self.vllm = VLLMEngine(
                rollout.vllm,
                rollout.max_new_tokens,
                self.sampler.eos_token_ids,
                tokenizer.pad_token_id,
                grpo.logprob_chunk_tokens,
            )
        self._engine_stale = True  # the engine's weights lag the policy's (push before use)
        self.ref_model = None  # the KL reference: a frozen copy (LoRA: the adapter-free policy)
        if grpo.beta > 0 and not is_lora(model):
            self.ref_model = copy.deepcopy(model).eval().requires_grad_(False)
        self.generator: torch.Generator | None = None
        self._eval_records: dict[int, list[dict]] = defaultdict(list)
        self._token_pieces: list[str] | None = None
        self.last_eval_step = -1
        self._resumed = False
        self._reward_base: dict[str, float] = {}  # verifier counters up to the checkpoint
        self._train_rng: tuple | None = None
        self._fsdp: FSDPSettings | None = None  # set when trainer=fsdp has sharded the policy

    # ------------------------------------------------------------------ set-up
    def setup(self, stage: str) -> None:
        if self.vllm is not None and self.trainer.world_size > 1:
            check_engine(
                "vllm",
                self.controller,
                world_size=self.trainer.world_size,
                tensor_parallel_size=self.vllm.settings.tensor_parallel_size,
            )
        if self.generator is None or self.generator.device != self.device:
            self.generator = torch.Generator(device=self.device)
            self._seed_streams(self.seed)

    def _seed_streams(self, seed: int) -> None:
        """Seed the sampler's stream: each DDP rank its own (rank 0 the single-process one),
        and on ranks > 0 also torch's global stream, which controllers draw from (the head)."""
        seed += self.global_rank * RANK_SEED_STRIDE
        self.generator.manual_seed(seed)
        if self.global_rank > 0:
            torch.manual_seed(seed)

    # ------------------------------------------------------------------ FSDP (trainer=fsdp)
    def configure_model(self) -> None:
        """Under `trainer=fsdp` the strategy shards the policy here (tempo/fsdp.py); under any
        other strategy this does nothing."""
        strategy = self.trainer.strategy
        shard = getattr(strategy, "shard_module", None)
        if shard is not None:
            shard(self.model)
            self._fsdp = strategy.settings

    def _full_weights(self) -> AbstractContextManager:
        """FSDP: the policy's weights gathered whole for a block of sampling or no-grad passes
        (`tempo.fsdp.full_weights`); otherwise nothing."""
        if self._fsdp is None:
            return nullcontext()
        return full_weights(self.model, self._fsdp.reshard_after_forward)

    def _fsdp_balance_backward(self, done: int, most: int, rollout: Rollout) -> None:
        """FSDP's `_balance_backward`: real zero-loss forward and backward passes through the
        sharded policy (one completion of the rollout), whose hooks run the same all-gathers and
        reduce-scatters as the other ranks' micro-batches."""
        part = rollout.select(torch.arange(1, device=rollout.tokens.device)).trimmed()
        for _ in range(most - done):
            self.manual_backward(self._completion_stats(self.model, part).logprobs.sum() * 0)

    def on_fit_start(self) -> None:
        prestart = getattr(self.scorer, "prestart", None)
        if prestart is not None:  # the verifier's start-up overlaps the first rollout
            prestart()

    def configure_optimizers(self):
        # foreach: one kernel per op over all tensors (torch picks it by itself on GPU only)
        policy = torch.optim.AdamW(
            self.model.parameters(),
            lr=self.grpo.lr,
            weight_decay=self.grpo.weight_decay,
            foreach=True,
        )
        head = self.controller.configure_optimizer()
        optimizers = [policy] if head is None else [policy, head]
        cfg = self.grpo
        if cfg.lr_schedule == "constant" and cfg.warmup_steps == 0:
            return optimizers
        total = self.total_steps or self.trainer.max_steps
        schedule = make_scheduler(
            policy, total, cfg.lr_schedule, cfg.warmup_steps, cfg.min_lr_ratio
        )
        return optimizers, [schedule]

    @property
    def rl_step(self) -> int:
        """Number of completed RL steps (Lightning counts one optimiser step per RL step)."""
        return self.global_step

    # ------------------------------------------------------------------ helpers
    def _encode(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        ids, mask = self.prompts.encode(prompts, self.device)
        if (
            self.context is not None
            and ids.shape[1] + self.rollout_cfg.max_new_tokens > self.context
        ):
            longest = int(mask.sum(-1).argmax())
            check_fits_context(
                [(int(mask[longest].sum()), f"{prompts[longest][:60]!r}...")],
                self.rollout_cfg.max_new_tokens,
                self.context,
                type(self.model).__name__,
            )
        return ids, mask

    def _decode(self, rollout: Rollout) -> list[str]:
        return self.tokenizer.batch_decode(rollout.tokens.tolist(), skip_special_tokens=True)

    def _sample(
        self,
        prompts: Sequence[str],
        controller: TemperatureController | None,
        greedy: bool = False,
        training: bool = True,
    ) -> Rollout:
        ids, mask = self._encode(prompts)
        was_training = self.model.training
        self.model.eval()
        try:
            with self._full_weights():
                if self.vllm is not None:
                    if self._engine_stale:
                        self.vllm.push_weights(self.model)
                        self._engine_stale = False
                    return self.vllm.rollout(
                        self.model,
                        ids,
                        mask,
                        controller,
                        generator=self.generator,
                        greedy=greedy,
                        entropies=training,
                    )
                return self.sampler.rollout(
                    self.model, ids, mask, controller, generator=self.generator, greedy=greedy
                )
        finally:
            self.model.train(was_training)

    def _completion_hidden(self, model: PreTrainedModel, rollout: Rollout) -> torch.Tensor:
        """Last-layer states [b, L, d] that preceded each completion token."""
        return completion_hidden(model, rollout)

    def _completion_stats(
        self,
        model: PreTrainedModel,
        rollout: Rollout,
        statistics: bool = False,
        hidden: torch.Tensor | None = None,
    ) -> TokenStats:
        """log softmax(z / T[b, t])[token] of every completion token under `model`, chunk by
        chunk from the hidden states (`hidden`, else computed here; never the [b, L, V]
        logits); with `statistics`, also the log-likelihoods under the controller's
        `statistics_temperatures()`."""
        if hidden is None:
            hidden = self._completion_hidden(model, rollout)
        return hidden_token_stats(
            hidden,
            lm_head(model),
            rollout.tokens,
            rollout.temperatures,
            mask=rollout.mask,
            chunk_tokens=self.grpo.logprob_chunk_tokens,
            candidates=self.controller.statistics_temperatures() if statistics else None,
        )

    def _emit(self, metrics: dict[str, float], step: int) -> None:
        for logger in self.loggers:
            logger.log_metrics(metrics, step=step)

    # ------------------------------------------------------------------ training
    def training_step(self, batch: list[Problem], batch_idx: int) -> None:
        started = time.perf_counter()
        step, group = self.rl_step, self.grpo.group_size
        metrics: dict[str, float] = {}
        metrics.update(self.controller.begin_step(step))
        phase = self.controller.phase(step)

        prompts = [p.prompt for p in batch for _ in range(group)]
        golds = [p.answer for p in batch for _ in range(group)]
        lr = self._policy_lr()
        rollout = self._sample(prompts, self.controller)
        if not bool(torch.isfinite(rollout.logprobs).all()):  # NaN/inf logits reach these
            self._stop_nonfinite(
                NonFiniteError(f"the policy's logits are not finite at RL step {step}"), None
            )
        rollout_seconds = time.perf_counter() - started

        texts = self._decode(rollout)
        columns = [p.columns for p in batch for _ in range(group)]
        scored = self.scorer(texts, golds, prompts=prompts, columns=columns)
        rewards = torch.tensor(scored.rewards, device=self.device)
        advantages = group_advantages(
            rewards,
            group,
            scale_by_std=self.grpo.scale_by_std,
            eps=self.grpo.eps,
            unbiased_std=self.grpo.unbiased_std,
        )
        policy_opt, *head_opt = self._optimizers()
        if phase == HEAD_PHASE:
            with self._full_weights():  # the policy is frozen: no-grad passes only
                update_metrics, statistics = self._update_head(rollout, advantages, head_opt[0])
        else:
            update_metrics, statistics = self._update_policy(rollout, advantages, policy_opt)
            self._engine_stale = True
        metrics.update(update_metrics)
        if self.controller.statistics_source == "post_update":
            statistics = self._statistics(rollout, self._signal_rows(advantages))
        metrics.update(self.controller.update(rollout, advantages, statistics))

        mask = rollout.mask
        metrics.update(
            {
                "train/reward_mean": float(rewards.mean()),
                "train/accuracy": sum(scored.correct) / len(scored.correct),
                "train/frac_zero_std_groups": float(zero_std_fraction(rewards, group)),
                "train/response_length": float(rollout.lengths.mean()),
                "train/truncated_frac": float((~rollout.finished).float().mean()),
                # finished at the first token: nothing but EOS
                "train/empty_frac": float(
                    (rollout.finished & (rollout.lengths <= 1)).float().mean()
                ),
                "train/no_answer_frac": sum(a is None for a in scored.answers) / len(batch) / group,
                "explore/entropy": masked_mean(rollout.entropy, mask),
                "explore/entropy_at_T": masked_mean(rollout.entropy_at_T, mask),
                "explore/temperature_mean": masked_mean(rollout.temperatures, mask),
                "explore/temperature_std": masked_std(rollout.temperatures, mask),
                "explore/unique_answers": unique_answers(scored.answers, group),
                "method/phase_head": float(phase == HEAD_PHASE),
                "train/lr": lr,
                "time/rollout_s": rollout_seconds,
                "time/step_s": time.perf_counter() - started,
            }
        )
        if self.controller.per_token:
            metrics.update(self._temperature_profile(rollout))
        if self.samples is not None and self.samples.due(step) and self.trainer.is_global_zero:
            shown = self.prompts.shown(rollout.prompt_ids, rollout.prompt_mask)
            self._save_samples(rollout, texts, shown, golds, scored, step)
        metrics.update(scored.component_means())
        metrics.update(self._reward_stats())
        self._advance_schedule()
        self._emit(metrics, step)
        self.log_dict(
            {
                "reward": metrics["train/reward_mean"],
                "T": metrics["explore/temperature_mean"],
                "entropy": metrics["explore/entropy"],
            },
            prog_bar=True,
            logger=False,
            batch_size=len(prompts),
        )

    def _save_samples(self, rollout: Rollout, texts, prompts, golds, scored, step: int) -> None:
        """A few of this step's completions: JSONL + temperature-coloured HTML, and W&B."""
        if self._token_pieces is None:
            self._token_pieces = token_pieces(self.tokenizer)
        rows = sample_rows(
            rollout,
            texts,
            prompts,
            golds,
            scored.answers,
            scored.rewards,
            scored.correct,
            step=step,
            limit=self.samples.limit,
            group_size=self.grpo.group_size,
            per_token=self.samples.per_token,
            pieces_table=self._token_pieces,
        )
        page = self.samples.write(rows, step)
        log_to_wandb(self.loggers, rows, page, step, t_range=self.samples.t_range)

    def _optimizers(self) -> list:
        opts = self.optimizers()
        return list(opts) if isinstance(opts, (list, tuple)) else [opts]

    def _policy_lr(self) -> float:
        """The policy's learning rate for this step's update (the schedule's current value)."""
        return float(self._optimizers()[0].optimizer.param_groups[0]["lr"])

    def _advance_schedule(self) -> None:
        """Step the learning-rate schedule once per RL step (after the step's updates)."""
        schedule = self.lr_schedulers()
        if schedule is not None:
            schedule.step()

    def _temperature_profile(self, rollout: Rollout) -> dict[str, float]:
        """Mean T by position bucket and by token class (per-token methods only)."""
        if self._token_pieces is None:
            self._token_pieces = token_pieces(self.tokenizer)
        classes = token_classes(rollout.tokens, rollout.mask, self._token_pieces)
        profile = temperature_by_class(rollout.temperatures, classes, rollout.mask)
        profile.update(
            temperature_by_position(
                rollout.temperatures, rollout.mask, self.rollout_cfg.max_new_tokens
            )
        )
        return profile

    def _signal_rows(self, advantages: torch.Tensor, with_kl: bool = False) -> torch.Tensor:
        """Rows that can move the loss: all with a KL term, else those with A != 0."""
        rows = torch.arange(advantages.shape[0], device=self.device)
        return rows if with_kl and self.grpo.beta > 0 else rows[advantages != 0]

    def _global_totals(self, rollout: Rollout) -> tuple[int, int]:
        """Completions and completion tokens of the whole step, over every DDP rank: the loss
        is normalised by these, so that DDP's mean over ranks is the global batch's gradient."""
        local = torch.tensor([rollout.tokens.shape[0], float(rollout.mask.sum())])
        sequences, tokens = global_sum(local.double()).tolist()
        return int(sequences), max(1, int(tokens))

    def _balance_backward(self, done: int, most: int, params: list[torch.nn.Parameter]) -> None:
        """Under DDP every `manual_backward` is a gradient all-reduce, so every rank must call
        it equally often: a rank with fewer micro-batches (or none to learn from) adds
        zero-gradient passes. A no-op in one process, where `most == done`."""
        for _ in range(most - done):
            self.manual_backward(sum((p * 0).sum() for p in params))

    def _chunks(self, rollout: Rollout, rows: torch.Tensor) -> list[torch.Tensor]:
        """Micro-batches of `rows`: by `micro_batch_size` rows, and by `micro_batch_tokens`
        padded tokens when set (see `tempo.rl.micro_batches`)."""
        cfg = self.grpo
        return micro_batches(
            rows,
            rollout.prompt_mask.sum(-1),
            rollout.mask.sum(-1),
            cfg.micro_batch_size,
            cfg.micro_batch_tokens,
        )

    def _wants_statistics(self) -> bool:
        return (
            self.controller.statistics_source == "rollout"
            and self.controller.statistics_temperatures() is not None
        )

    def _collect(
        self,
        store: torch.Tensor | None,
        rows: torch.Tensor,
        stats: TokenStats,
        part: Rollout,
        batch_rows: int,
    ) -> torch.Tensor | None:
        """Add the controller's per-completion statistics of `rows` to `store`.

        `store` is [batch_rows, K'], created at the first call; rows never added stay NaN.
        """
        if stats.candidates is None:
            return store
        with torch.no_grad():
            values = self.controller.token_statistics(stats.candidates, part.mask)
        if values is None:
            return store
        if store is None:
            size = (batch_rows, values.shape[-1])
            store = torch.full(size, float("nan"), device=values.device, dtype=values.dtype)
        store[rows] = values
        return store

    @torch.no_grad()
    def _statistics(self, rollout: Rollout, rows: torch.Tensor) -> torch.Tensor | None:
        """A separate no-grad pass for controllers that want post-update statistics."""
        if self.controller.statistics_temperatures() is None:
            return None
        store = None
        with self._full_weights():
            for idx in self._chunks(rollout, rows):
                part = rollout.select(idx).trimmed()
                stats = self._completion_stats(self.model, part, statistics=True)
                store = self._collect(store, idx, stats, part, rollout.tokens.shape[0])
        return store

    @staticmethod
    def _tick(opt) -> None:
        """Count an RL step that has nothing to learn: a step with no gradients is a no-op."""
        opt.zero_grad(set_to_none=True)
        opt.step()

    def _update_policy(
        self, rollout: Rollout, advantages: torch.Tensor, opt
    ) -> tuple[dict[str, float], torch.Tensor | None]:
        """`mu` optimiser steps on the clipped surrogate over micro-batches of the rollout.

        The controller's logit statistics are taken from the pre-update logits: the old-policy
        pass when mu > 1, else the first (and only) pass. Only the last pass's optimiser step
        is counted by Lightning, so `global_step` counts RL steps.
        """
        cfg = self.grpo
        world = world_size()
        total_sequences, total_tokens = self._global_totals(rollout)
        local_rows, local_tokens = rollout.tokens.shape[0], max(1, int(rollout.mask.sum()))
        rows = self._signal_rows(advantages, with_kl=True)
        zero = {"loss/policy": 0.0, "loss/kl": 0.0, "loss/clip_frac": 0.0, "loss/grad_norm": 0.0}
        chunks = self._chunks(rollout, rows)
        most = global_max(len(chunks))
        if most == 0:  # nothing to learn from this batch (on any rank); the step still counts
            self._tick(opt)
            return zero, None
        params = list(self.model.parameters())
        wants_stats = self._wants_statistics()
        statistics = None
        old, ref, tis = {}, {}, {}
        mismatch = LogpMismatch()
        parts = [rollout.select(idx).trimmed() for idx in chunks]
        with torch.no_grad(), self._full_weights():
            for i, (idx, part) in enumerate(zip(chunks, parts, strict=True)):
                if cfg.mu > 1:
                    token_stats = self._completion_stats(self.model, part, statistics=wants_stats)
                    old[i] = token_stats.logprobs
                    self._against_sampler(old[i], part, i, mismatch, tis)
                    if wants_stats:
                        statistics = self._collect(statistics, idx, token_stats, part, local_rows)
                if self.ref_model is not None:
                    ref[i] = self._completion_stats(self.ref_model, part).logprobs
                elif cfg.beta > 0:  # LoRA: the policy itself with its adapters disabled
                    with reference_model(self.model) as base:
                        ref[i] = self._completion_stats(base, part).logprobs
        sums: dict[str, float] = defaultdict(float)
        for pass_ in range(cfg.mu):
            opt.zero_grad()
            pass_loss = 0.0
            for i, (idx, part) in enumerate(zip(chunks, parts, strict=True)):
                first = cfg.mu == 1 and wants_stats
                token_stats = self._completion_stats(self.model, part, statistics=first)
                logp = token_stats.logprobs
                if first:
                    statistics = self._collect(statistics, idx, token_stats, part, local_rows)
                if cfg.mu == 1:  # this pass's log-probs are pi_old's
                    self._against_sampler(logp, part, i, mismatch, tis)
                loss, stats = policy_loss(
                    logp,
                    old.get(i, logp.detach()),
                    advantages[idx],
                    part.mask,
                    clip_low=cfg.clip_low,
                    clip_high=cfg.clip_high,
                    aggregation=cfg.aggregation,
                    ref_logp=ref.get(i),
                    beta=cfg.beta,
                    total_sequences=total_sequences,
                    total_tokens=total_tokens,
                    max_length=self.rollout_cfg.max_new_tokens,
                    is_weights=tis.get(i),
                )
                self._require_finite(loss, "loss/policy", opt)
                self.manual_backward(loss * world)  # DDP averages over ranks
                pass_loss += float(loss.detach()) * world
                weight = float(part.mask.sum()) / local_tokens
                sums["loss/clip_frac"] += float(stats["clip_frac"]) * weight / cfg.mu
                sums["loss/kl"] += float(stats["kl"]) * weight / cfg.mu
            if self._fsdp is None:
                self._balance_backward(len(chunks), most, params)
                norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
            else:  # sharded gradients: real balancing passes, the global norm
                self._fsdp_balance_backward(len(chunks), most, rollout)
                norm = clip_grad_norm(self.model.parameters(), cfg.max_grad_norm)
            self._require_finite(norm, "the policy's gradient norm", opt)
            self._step(opt, counted=pass_ == cfg.mu - 1)
            sums["loss/policy"] += pass_loss / cfg.mu
            sums["loss/grad_norm"] += float(norm) / cfg.mu
        sums.update(self._mismatch_metrics(mismatch, tis, parts))
        return dict(sums), statistics

    def _against_sampler(
        self,
        pi_old: torch.Tensor,
        part: Rollout,
        i: int,
        mismatch: LogpMismatch,
        tis: dict[int, torch.Tensor],
    ) -> None:
        """Measure pi_old against the sampler's log-probs; with `tis_cap`, keep micro-batch
        i's truncated importance weights."""
        mismatch.add(pi_old, part.logprobs, part.mask)
        if self.grpo.tis_cap is not None:
            tis[i] = truncated_is_weights(pi_old, part.logprobs, part.mask, self.grpo.tis_cap)

    def _mismatch_metrics(
        self, mismatch: LogpMismatch, tis: dict[int, torch.Tensor], parts: list[Rollout]
    ) -> dict[str, float]:
        """The sampler-vs-trainer log-prob gap over the tokens this step recomputed (every
        rank's), and the truncated importance weights' mean and truncated share when on."""
        total, tokens = global_sum_count(mismatch.abs_sum, mismatch.tokens)
        gap_max = global_fmax(mismatch.abs_max)
        if tokens == 0:
            return {}
        out = {"rollout/logp_diff_mean": total / tokens, "rollout/logp_diff_max": gap_max}
        if self.grpo.tis_cap is not None:
            w_sum = cut = torch.zeros((), device=self.device)
            for i, w in tis.items():
                valid = parts[i].mask.bool()
                w_sum = w_sum + w[valid].sum()
                cut = cut + (w[valid] >= w.new_tensor(self.grpo.tis_cap)).sum()
            w_sum, cut = global_sum_count(float(w_sum), float(cut))
            out["rollout/tis_weight_mean"] = w_sum / tokens
            out["rollout/tis_truncated_frac"] = cut / tokens
        return out

    def _require_finite(self, value: torch.Tensor, what: str, opt) -> None:
        try:
            require_finite(value, what, self.rl_step)
        except NonFiniteError as err:
            self._stop_nonfinite(err, opt)

    def _stop_nonfinite(self, err: NonFiniteError, opt) -> None:
        """Drop this step's gradients, save the state it started from, and stop the run."""
        if opt is not None:
            opt.zero_grad(set_to_none=True)
        path = Path(
            self.trainer.default_root_dir, "checkpoints", f"nonfinite-step{self.rl_step}.ckpt"
        )
        self.trainer.save_checkpoint(path)
        raise NonFiniteError(f"{err}; the state before it is saved in {path}") from None

    @staticmethod
    def _step(opt, counted: bool) -> None:
        """Lightning counts `opt.step()`; earlier passes of one RL step step the raw optimiser."""
        if counted:
            opt.step()
        else:
            opt.optimizer.step()

    def _update_head(
        self, rollout: Rollout, advantages: torch.Tensor, opt
    ) -> tuple[dict[str, float], torch.Tensor | None]:
        """`mu` optimiser steps of the temperature head with the policy frozen.

        The policy's hidden states are recomputed under no_grad in every pass (the policy does
        not change inside the phase), so only one micro-batch of them is alive at a time.
        """
        cfg = self.grpo
        world = world_size()
        total_sequences, total_tokens = self._global_totals(rollout)
        local_rows, local_tokens = rollout.tokens.shape[0], max(1, int(rollout.mask.sum()))
        rows = self._signal_rows(advantages)
        zero = {"method/head_loss": 0.0, "method/head_clip_frac": 0.0, "method/head_grad_norm": 0.0}
        chunks = self._chunks(rollout, rows)
        most = global_max(len(chunks))
        if most == 0:
            self._tick(opt)
            return zero, None
        params = [p for p in self.controller.parameters() if p.requires_grad]
        max_norm = self.controller.max_grad_norm or cfg.max_grad_norm
        aggregation = {
            "aggregation": cfg.aggregation,
            "total_sequences": total_sequences,
            "total_tokens": total_tokens,
            "max_length": self.rollout_cfg.max_new_tokens,
        }
        statistics = None
        sums: dict[str, float] = defaultdict(float)
        old: dict[int, torch.Tensor] = {}  # the head's pre-update log-probs, from pass 0
        for pass_ in range(cfg.mu):
            opt.zero_grad()
            for i, idx in enumerate(chunks):
                part = rollout.select(idx).trimmed()
                with torch.no_grad():
                    hidden = self._completion_hidden(self.model, part)
                    if pass_ == 0 and self._wants_statistics():
                        token_stats = self._completion_stats(
                            self.model, part, statistics=True, hidden=hidden
                        )
                        statistics = self._collect(statistics, idx, token_stats, part, local_rows)
                loss, stats = self.controller.loss(
                    hidden, part, advantages[idx], old_logp=old.get(i), **aggregation
                )
                self._require_finite(loss, "method/head_loss", opt)
                self.manual_backward(loss * world)  # DDP averages over ranks
                weight = float(part.mask.sum()) / local_tokens
                if pass_ == 0 and "action_logp" in stats:
                    old[i] = stats["action_logp"]
                    logp_sum = float((stats["action_logp"] * part.mask).sum())
                    sums["method/head_logp_mean"] += logp_sum / local_tokens
                sums["method/head_loss"] += float(loss.detach()) * world / cfg.mu
                sums["method/head_clip_frac"] += float(stats["clip_frac"]) * weight / cfg.mu
            self._balance_backward(len(chunks), most, params)
            if self._fsdp is not None:  # the head is not sharded: average it as DDP would
                average_gradients(params)
            norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
            self._require_finite(norm, "the temperature head's gradient norm", opt)
            self._step(opt, counted=pass_ == cfg.mu - 1)
            sums["method/head_grad_norm"] += float(norm) / cfg.mu
        return dict(sums), statistics

    # ------------------------------------------------------------------ evaluation
    def on_train_start(self) -> None:
        """A run resumed from a checkpoint taken just before an evaluation (checkpoints are
        saved at the end of the step, evaluation follows) runs that evaluation first, which
        Lightning's own resume would skip: the metrics match an uninterrupted run's."""
        if self._resumed and self._evaluation_due(self.rl_step):
            self.evaluate_now()

    def _evaluation_due(self, step: int) -> bool:
        every = self.eval_cfg.every
        interval = min(every, self.trainer.max_steps) if every else 0
        return bool(interval) and step > 0 and step % interval == 0 and self.last_eval_step < step

    @torch.no_grad()
    def evaluate_now(self) -> None:
        """One held-out evaluation outside Lightning's validation loop."""
        self.on_validation_epoch_start()
        loaders = self.trainer.datamodule.val_dataloader()
        for task_index, loader in enumerate(loaders if isinstance(loaders, list) else [loaders]):
            for index, batch in enumerate(loader):
                self.validation_step(batch, index, task_index)
        self._finish_evaluation()

    def on_validation_epoch_start(self) -> None:
        """Evaluation samples from its own streams, seeded by (seed, step), and gives the
        training streams back untouched afterwards: an evaluation does not change what the
        run samples next, so a resumed run that repeats or skips one trains identically."""
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
        self._train_rng = (self.generator, torch.get_rng_state(), cuda)
        seed = (self.seed + self.rl_step * 1_000_003) % 2**63  # = seed at step 0, as tempo-eval
        torch.manual_seed(seed)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)

    def _restore_training_rng(self) -> None:
        if self._train_rng is None:
            return
        self.generator, cpu, cuda = self._train_rng
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
        self._train_rng = None

    def validation_step(
        self, batch: list[Problem], batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        """Score one batch of held-out task `dataloader_idx` (0 = the training task)."""
        cfg = self.eval_cfg
        self._eval_records[dataloader_idx] += score_problems(
            self._eval_sample, self.eval_scorers[dataloader_idx], batch, cfg.samples, cfg.greedy
        )

    def _eval_sample(self, prompts: list[str], greedy: bool) -> Samples:
        """Held-out completions: greedy, or sampled under the evaluation controller."""
        controller = None if greedy else self.eval_controller
        rollout = self._sample(prompts, controller, greedy=greedy, training=False)
        return rollout_samples(rollout, self.tokenizer)

    def on_validation_epoch_end(self) -> None:
        metrics = self._finish_evaluation()
        key = f"eval/{self.task_name}/accuracy"
        if metrics and key in metrics:
            self.log("val_acc", metrics[key], prog_bar=True, logger=False)

    def _finish_evaluation(self) -> dict[str, float] | None:
        self._restore_training_rng()
        records, self._eval_records = self._eval_records, defaultdict(list)
        if not records or self.trainer.sanity_checking:
            return None
        metrics: dict[str, float] = {}
        for index, task_records in sorted(records.items()):
            prefix = f"eval/{self.eval_names[index]}"
            metrics.update(evaluation_metrics(task_records, self.eval_cfg, prefix))
        self.last_eval_step = self.rl_step
        self._emit(metrics, self.rl_step)
        return metrics

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self.generator is not None:
            checkpoint["tempo_sampler_rng"] = self.generator.get_state()
        # Controllers that draw from torch's global RNG (e.g. the introspective head).
        checkpoint["tempo_torch_rng"] = torch.get_rng_state()
        if torch.cuda.is_available():
            checkpoint["tempo_cuda_rng"] = torch.cuda.get_rng_state_all()
        checkpoint["tempo_last_eval_step"] = self.last_eval_step
        checkpoint["tempo_reward_stats"] = self._reward_stats()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self._engine_stale = True  # the policy's weights are about to change under the engine
        state = checkpoint.get("tempo_sampler_rng")
        if state is not None:
            self.setup("fit")
            self.generator.set_state(state)
        if "tempo_torch_rng" in checkpoint:
            torch.set_rng_state(checkpoint["tempo_torch_rng"])
        if self._trainer is not None and self.global_rank > 0:
            # Checkpoints hold rank 0's streams; other ranks go on from fresh streams of their
            # own (valid sampling, but not the uninterrupted run's draws on those ranks).
            self.setup("fit")
            self._seed_streams(self.seed + checkpoint.get("global_step", 0))
        if "tempo_cuda_rng" in checkpoint and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(checkpoint["tempo_cuda_rng"])
        self.last_eval_step = checkpoint.get("tempo_last_eval_step", self.last_eval_step)
        self._reward_base = dict(checkpoint.get("tempo_reward_stats", {}))
        self._resumed = True

    def _reward_stats(self) -> dict[str, float]:
        """The verifier's counters over the whole run, across resumes."""
        stats = self.scorer.stats()
        return {key: value + self._reward_base.get(key, 0.0) for key, value in stats.items()}


def evaluation_metrics(records: list[dict], cfg: EvalConfig, prefix: str) -> dict[str, float]:
    """Training's held-out metrics: `tempo.evaluation.metrics.evaluation_metrics` at `cfg`."""
    return shared_evaluation_metrics(records, cfg.ks, cfg.samples, cfg.greedy, prefix)
