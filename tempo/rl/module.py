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

import lightning as L
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from tempo.data.problem import Problem
from tempo.metrics import (
    avg_at_k,
    maj_at_k,
    masked_mean,
    masked_std,
    pass_at_k,
    unique_answers,
)
from tempo.models.policy import forward_hidden, lm_head
from tempo.rewards.scorer import RewardScorer
from tempo.rl.grpo import GRPOConfig, group_advantages, policy_loss, zero_std_fraction
from tempo.rl.logprobs import token_logprobs
from tempo.rl.settings import EvalConfig, RolloutConfig
from tempo.sampling.rollout import Rollout
from tempo.sampling.sampler import Sampler
from tempo.temperature.base import TemperatureController
from tempo.temperature.fixed import FixedTemperature


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
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.model = model
        self.controller = controller
        self.tokenizer = tokenizer
        self.grpo, self.rollout_cfg, self.eval_cfg = grpo, rollout, evaluation
        self.scorer = scorer
        self.task_name = task_name
        self.seed = seed
        self.sampler = Sampler(
            rollout.max_new_tokens, tokenizer.eos_token_id, tokenizer.pad_token_id
        )
        self.eval_controller = FixedTemperature(evaluation.temperature)
        self.ref_model = None
        if grpo.beta > 0:
            self.ref_model = copy.deepcopy(model).eval().requires_grad_(False)
        self.generator: torch.Generator | None = None
        self._eval_records: list[dict] = []
        self.last_eval_step = -1

    # ------------------------------------------------------------------ set-up
    def setup(self, stage: str) -> None:
        if self.generator is None or self.generator.device != self.device:
            self.generator = torch.Generator(device=self.device).manual_seed(self.seed)

    def configure_optimizers(self):
        return torch.optim.AdamW(
            self.model.parameters(), lr=self.grpo.lr, weight_decay=self.grpo.weight_decay
        )

    @property
    def rl_step(self) -> int:
        """Number of completed RL steps (policy updates come `mu` per step)."""
        return self.global_step // self.grpo.mu

    # ------------------------------------------------------------------ helpers
    def _encode(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        enc = self.tokenizer(
            list(prompts), padding=True, return_tensors="pt", add_special_tokens=False
        )
        return enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device)

    def _decode(self, rollout: Rollout) -> list[str]:
        return self.tokenizer.batch_decode(rollout.tokens.tolist(), skip_special_tokens=True)

    def _sample(
        self, prompts: Sequence[str], controller: TemperatureController | None, greedy: bool = False
    ) -> Rollout:
        ids, mask = self._encode(prompts)
        was_training = self.model.training
        self.model.eval()
        try:
            return self.sampler.rollout(
                self.model, ids, mask, controller, generator=self.generator, greedy=greedy
            )
        finally:
            self.model.train(was_training)

    def _completion_logprobs(self, model: PreTrainedModel, rollout: Rollout) -> torch.Tensor:
        """log softmax(z / T[b, t])[token] for every completion token, under `model`."""
        ids, attn = rollout.input_ids()
        hidden = forward_hidden(model, ids, attn)
        start = rollout.prompt_ids.shape[1] - 1
        logits = lm_head(model)(hidden[:, start:-1])
        return token_logprobs(logits, rollout.tokens, rollout.temperatures)

    def _emit(self, metrics: dict[str, float], step: int) -> None:
        for logger in self.loggers:
            logger.log_metrics(metrics, step=step)

    # ------------------------------------------------------------------ training
    def training_step(self, batch: list[Problem], batch_idx: int) -> None:
        started = time.perf_counter()
        step, group = self.rl_step, self.grpo.group_size
        metrics: dict[str, float] = {}
        metrics.update(self.controller.begin_step(step))

        prompts = [p.prompt for p in batch for _ in range(group)]
        golds = [p.answer for p in batch for _ in range(group)]
        rollout = self._sample(prompts, self.controller)
        rollout_seconds = time.perf_counter() - started

        scored = self.scorer(self._decode(rollout), golds)
        rewards = torch.tensor(scored.rewards, device=self.device)
        advantages = group_advantages(
            rewards,
            group,
            scale_by_std=self.grpo.scale_by_std,
            eps=self.grpo.eps,
            unbiased_std=self.grpo.unbiased_std,
        )
        metrics.update(self.controller.update(rollout, advantages))
        metrics.update(self._update_policy(rollout, advantages))

        mask = rollout.mask
        metrics.update(
            {
                "train/reward_mean": float(rewards.mean()),
                "train/accuracy": sum(scored.correct) / len(scored.correct),
                "train/frac_zero_std_groups": float(zero_std_fraction(rewards, group)),
                "train/response_length": float(rollout.lengths.mean()),
                "train/truncated_frac": float((~rollout.finished).float().mean()),
                "train/no_answer_frac": sum(a is None for a in scored.answers) / len(batch) / group,
                "explore/entropy": masked_mean(rollout.entropy, mask),
                "explore/entropy_at_T": masked_mean(rollout.entropy_at_T, mask),
                "explore/temperature_mean": masked_mean(rollout.temperatures, mask),
                "explore/temperature_std": masked_std(rollout.temperatures, mask),
                "explore/unique_answers": unique_answers(scored.answers, group),
                "time/rollout_s": rollout_seconds,
                "time/step_s": time.perf_counter() - started,
            }
        )
        metrics.update(self.scorer.stats())
        self._emit(metrics, step)
        self.log_dict(
            {"reward": metrics["train/reward_mean"], "acc": metrics["train/accuracy"]},
            prog_bar=True,
            logger=False,
            batch_size=len(prompts),
        )

    def _update_policy(self, rollout: Rollout, advantages: torch.Tensor) -> dict[str, float]:
        """`mu` optimiser steps on the clipped surrogate over micro-batches of the rollout."""
        cfg = self.grpo
        opt = self.optimizers()
        total_sequences = rollout.tokens.shape[0]
        total_tokens = max(1, int(rollout.mask.sum()))
        # Rows with zero advantage add exactly zero to the loss when there is no KL term.
        rows = torch.arange(total_sequences, device=self.device)
        if cfg.beta == 0:
            rows = rows[advantages != 0]
        if len(rows) == 0:  # nothing to learn from this batch; the step still counts
            for _ in range(cfg.mu):
                opt.zero_grad()
                opt.step()
            return {
                "loss/policy": 0.0,
                "loss/kl": 0.0,
                "loss/clip_frac": 0.0,
                "loss/grad_norm": 0.0,
            }
        chunks = [
            rows[i : i + cfg.micro_batch_size] for i in range(0, len(rows), cfg.micro_batch_size)
        ]
        old = {}
        ref = {}
        with torch.no_grad():
            for i, idx in enumerate(chunks):
                part = rollout.select(idx)
                if cfg.mu > 1:
                    old[i] = self._completion_logprobs(self.model, part)
                if self.ref_model is not None:
                    ref[i] = self._completion_logprobs(self.ref_model, part)
        sums: dict[str, float] = defaultdict(float)
        for _ in range(cfg.mu):
            opt.zero_grad()
            pass_loss = 0.0
            for i, idx in enumerate(chunks):
                part = rollout.select(idx)
                logp = self._completion_logprobs(self.model, part)
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
                )
                self.manual_backward(loss)
                pass_loss += float(loss.detach())
                weight = float(part.mask.sum()) / total_tokens
                sums["loss/clip_frac"] += float(stats["clip_frac"]) * weight / cfg.mu
                sums["loss/kl"] += float(stats["kl"]) * weight / cfg.mu
            norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
            opt.step()
            sums["loss/policy"] += pass_loss / cfg.mu
            sums["loss/grad_norm"] += float(norm) / cfg.mu
        return dict(sums)

    # ------------------------------------------------------------------ evaluation
    def validation_step(self, batch: list[Problem], batch_idx: int) -> None:
        cfg = self.eval_cfg
        golds = [p.answer for p in batch]
        greedy_correct: list[bool] = [False] * len(batch)
        if cfg.greedy:
            greedy = self._sample([p.prompt for p in batch], None, greedy=True)
            greedy_correct = self.scorer(self._decode(greedy), golds).correct
        prompts = [p.prompt for p in batch for _ in range(cfg.samples)]
        sampled = self._sample(prompts, self.eval_controller)
        scored = self.scorer(self._decode(sampled), [g for g in golds for _ in range(cfg.samples)])
        n = cfg.samples
        for i, _ in enumerate(batch):
            self._eval_records.append(
                {
                    "greedy": greedy_correct[i],
                    "correct": scored.correct[i * n : (i + 1) * n],
                    "answers": scored.answers[i * n : (i + 1) * n],
                }
            )

    def on_validation_epoch_end(self) -> None:
        records, self._eval_records = self._eval_records, []
        if not records or self.trainer.sanity_checking:
            return
        metrics = evaluation_metrics(records, self.eval_cfg, f"eval/{self.task_name}")
        self.last_eval_step = self.rl_step
        self._emit(metrics, self.rl_step)
        key = f"eval/{self.task_name}/accuracy" if self.eval_cfg.greedy else None
        if key:
            self.log("val_acc", metrics[key], prog_bar=True, logger=False)

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self.generator is not None:
            checkpoint["tempo_sampler_rng"] = self.generator.get_state()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("tempo_sampler_rng")
        if state is not None:
            self.setup("fit")
            self.generator.set_state(state)


def evaluation_metrics(records: list[dict], cfg: EvalConfig, prefix: str) -> dict[str, float]:
    """Aggregate per-problem records into accuracy, avg@n, pass@k and maj@k."""
    n = cfg.samples
    count = len(records)
    metrics = {f"{prefix}/avg@{n}": sum(avg_at_k(r["correct"]) for r in records) / count}
    if cfg.greedy:
        metrics[f"{prefix}/accuracy"] = sum(r["greedy"] for r in records) / count
    for k in cfg.ks:
        total = sum(pass_at_k(n, sum(r["correct"]), k) for r in records)
        metrics[f"{prefix}/pass@{k}"] = total / count
    metrics[f"{prefix}/maj@{n}"] = (
        sum(maj_at_k(r["answers"], r["correct"]) for r in records) / count
    )
    return metrics
