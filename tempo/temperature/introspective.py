"""`introspective` (Introspective LLM, arXiv 2602.13035): the model picks each token's temperature.

A small head phi (see `temperature_head`) reads the policy's last-layer hidden state h_t at
every decoding step and takes a hybrid action: a gate c_t ~ Bernoulli(sigmoid(u_c)) keeps the
previous temperature (c_t = 0) or draws a new one, T_t = T_min + z_t (T_max - T_min) with
z_t ~ Beta(a_t, b_t) (c_t = 1). The head is trained with its own clipped GRPO surrogate on the
same advantages as the tokens, alternating with the policy by coordinate ascent (`phase`), and
stays on at evaluation. h_t is always detached: the head never sends gradients into the policy.
"""

from __future__ import annotations

from typing import Any

import torch

from tempo.config_error import ConfigError
from tempo.rl.grpo import policy_loss
from tempo.temperature.base import (
    HEAD_PHASE,
    POLICY_PHASE,
    TemperatureController,
    TemperatureDecision,
)
from tempo.temperature.checks import (
    check_choice,
    check_int,
    check_number,
    check_open_unit,
    check_positive,
    check_temperature_range,
)
from tempo.temperature.temperature_head import (
    ACTIVATIONS,
    Z_BOUND,
    TemperatureHead,
    hybrid_logprob,
    sample_action,
)

OPTIMIZERS = ("adamw", "adam", "sgd")
PHASES = (POLICY_PHASE, HEAD_PHASE)
#: Keys `loss` accepts in its **aggregation (the GRPO aggregation and full-batch totals).
AGGREGATION_KEYS = ("aggregation", "total_sequences", "total_tokens", "max_length")
#: The Beta mean at initialisation is kept this far inside (0, 1) (T_init may equal a bound).
_MEAN_MARGIN = 0.01


class IntrospectiveTemperature(TemperatureController):
    """Per-token temperatures from a learned head on the hidden state (see module docstring).

    Args:
        t_min, t_max: range of the temperatures the Beta draw maps to (T_min < T_max).
        t_init: T before the first token, and where the Beta mean starts (in [t_min, t_max]).
        hidden_ratio: the head's inner width as a fraction of d (0.5 = the paper's d/2).
        activation: the head's nonlinearity (silu, gelu, relu, tanh).
        eps: floor added to softplus outputs so the Beta parameters stay > 0.
        init_gate_prob: sigmoid(u_c) at initialisation, for every h (in (0, 1)).
        init_concentration: a + b of the initial Beta.
        clip_low, clip_high: the head's own ratio clip band (1 - clip_low, 1 + clip_high).
        optimizer, lr, weight_decay, max_grad_norm: the head's optimiser; the training loop
            clips the head's gradient norm with `max_grad_norm`.
        policy_steps, head_steps, first_phase: coordinate ascent, `policy_steps` RL steps that
            update the policy then `head_steps` that update the head, starting with
            `first_phase`.
        eval_with_head: evaluate with the head choosing temperatures (else at eval.temperature).
        record_logprob: also compute log pi_phi of every action while sampling (as
            `controller_data["head_logp"]`). Off by default: the head does not change between
            the rollout and the first pass of its update, so that pass's own log-prob is the
            behaviour log-prob and the decoding loop skips a dozen ops per token.
    """

    name = "introspective"
    per_token = True

    def __init__(
        self,
        t_min: float = 0.4,
        t_max: float = 1.6,
        t_init: float = 1.0,
        hidden_ratio: float = 0.5,
        activation: str = "silu",
        eps: float = 0.01,
        init_gate_prob: float = 0.05,
        init_concentration: float = 10.0,
        clip_low: float = 0.2,
        clip_high: float = 0.2,
        optimizer: str = "adamw",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        max_grad_norm: float = 1.0,
        policy_steps: int = 1,
        head_steps: int = 1,
        first_phase: str = POLICY_PHASE,
        eval_with_head: bool = True,
        record_logprob: bool = False,
    ) -> None:
        super().__init__()
        self.t_min, self.t_max = check_temperature_range("t_min", t_min, "t_max", t_max)
        init = check_number("t_init", t_init)
        if not self.t_min <= init <= self.t_max:
            raise ConfigError("t_init", t_init, f"a number in [t_min, t_max] = [{t_min}, {t_max}]")
        self.t_init = init
        self.hidden_ratio = check_positive("hidden_ratio", hidden_ratio)
        self.activation = check_choice("activation", activation, tuple(ACTIVATIONS))
        self.eps = check_positive("eps", eps)
        self.init_gate_prob = check_open_unit("init_gate_prob", init_gate_prob)
        self.init_concentration = check_positive("init_concentration", init_concentration)
        mean = (init - self.t_min) / (self.t_max - self.t_min)
        self.init_beta_mean = min(max(mean, _MEAN_MARGIN), 1.0 - _MEAN_MARGIN)
        smaller = min(self.init_beta_mean, 1.0 - self.init_beta_mean) * self.init_concentration
        if smaller <= self.eps:
            allowed = f"large enough that both Beta parameters exceed eps={eps}"
            raise ConfigError("init_concentration", init_concentration, allowed)
        self.clip_low = check_open_unit("clip_low", clip_low)
        self.clip_high = check_positive("clip_high", clip_high)
        self.optimizer = check_choice("optimizer", optimizer, OPTIMIZERS)
        self.lr = check_positive("lr", lr)
        decay = check_number("weight_decay", weight_decay, "a number >= 0")
        if decay < 0:
            raise ConfigError("weight_decay", weight_decay, "a number >= 0")
        self.weight_decay = decay
        self.max_grad_norm = check_positive("max_grad_norm", max_grad_norm)
        self.policy_steps = check_int("policy_steps", policy_steps, 1)
        self.head_steps = check_int("head_steps", head_steps, 1)
        self.first_phase = check_choice("first_phase", first_phase, PHASES)
        if not isinstance(eval_with_head, bool):
            raise ConfigError("eval_with_head", eval_with_head, "true or false")
        self.eval_with_head = eval_with_head
        if not isinstance(record_logprob, bool):
            raise ConfigError("record_logprob", record_logprob, "true or false")
        self.record_logprob = record_logprob
        self.head: TemperatureHead | None = None

    # ------------------------------------------------------------------ set-up
    def setup(self, hidden_size: int, vocab_size: int, total_steps: int) -> None:
        """Build and initialise the head (a no-op if one of this size exists, so trained
        weights survive a repeated call). Call before moving the owner to its device."""
        if self.head is not None and self.head.hidden_size == hidden_size:
            return
        inner = max(1, round(hidden_size * self.hidden_ratio))
        self.head = TemperatureHead(hidden_size, inner, self.activation, self.eps)
        self.head.init_output(self.init_gate_prob, self.init_beta_mean, self.init_concentration)

    def has_loss(self) -> bool:
        return True  # also before `setup` builds the head's parameters

    def _head(self) -> TemperatureHead:
        if self.head is None:
            raise RuntimeError("IntrospectiveTemperature.setup(hidden_size, ...) was not called")
        return self.head

    # ------------------------------------------------------------------ sampling
    def initial_temperature(self, batch_size: int, device: torch.device) -> torch.Tensor:
        return torch.full((batch_size,), self.t_init, device=device)

    @torch.no_grad()
    def temperature(
        self,
        logits: torch.Tensor,
        hidden: torch.Tensor,
        prev_temperature: torch.Tensor,
        position: int,
    ) -> TemperatureDecision:
        """Gate, maybe draw a new T, record the action (and its log-prob if asked); no syncs."""
        gate_logit, ab = self._head()(hidden)
        gate, z = sample_action(gate_logit, ab)
        fresh = self.t_min + z * (self.t_max - self.t_min)
        temp = torch.where(gate > 0.5, fresh, prev_temperature).clamp(self.t_min, self.t_max)
        if temp.dtype != prev_temperature.dtype:
            temp = temp.to(prev_temperature.dtype)
        records = {"gate": gate, "beta_z": z, "beta_a": ab[..., 0], "beta_b": ab[..., 1]}
        if self.record_logprob:
            records["head_logp"] = hybrid_logprob(gate_logit, ab, gate, z)
        return TemperatureDecision(temp, records)

    # ------------------------------------------------------------------ learning
    def action_logprob(
        self, hidden: torch.Tensor, gate: torch.Tensor, beta_z: torch.Tensor
    ) -> torch.Tensor:
        """log pi_phi(c, z | h) under the current head: hidden [..., d] -> [...] (float32)."""
        gate_logit, ab = self._head()(hidden)
        z = beta_z.float().clamp(Z_BOUND, 1.0 - Z_BOUND)
        return hybrid_logprob(gate_logit, ab, gate.float(), z)

    def loss(
        self,
        hidden: torch.Tensor,
        rollout: Any,
        advantages: torch.Tensor,
        *,
        old_logp: torch.Tensor | None = None,
        **aggregation: Any,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Clipped GRPO surrogate of the head over every completion token.

        The ratio is pi_phi(action | h) / old. old = `old_logp` [b, L] when given, else the
        recorded `head_logp` (`record_logprob`), else this call's own log-prob, detached: right
        for the first pass of a head update, since the head has not moved since sampling
        (later passes must pass `old_logp`; `stats["action_logp"]` returns it). Aggregation
        as the policy's.
        """
        unknown = set(aggregation) - set(AGGREGATION_KEYS)
        if unknown:
            raise TypeError(f"unexpected aggregation keys {sorted(unknown)}")
        data = rollout.controller_data
        if hidden.shape[:-1] != rollout.tokens.shape:
            raise ValueError(
                f"hidden {tuple(hidden.shape)} does not align with tokens "
                f"{tuple(rollout.tokens.shape)}"
            )
        logp = self.action_logprob(hidden.detach(), data["gate"], data["beta_z"])
        if old_logp is not None:
            old = old_logp
        else:
            old = data["head_logp"] if "head_logp" in data else logp.detach()
        loss, stats = policy_loss(
            logp,
            old.float(),
            advantages.float(),
            rollout.mask,
            clip_low=self.clip_low,
            clip_high=self.clip_high,
            aggregation=aggregation.get("aggregation", "grpo"),
            total_sequences=aggregation.get("total_sequences"),
            total_tokens=aggregation.get("total_tokens"),
            max_length=aggregation.get("max_length"),
        )
        stats.pop("kl", None)  # no KL term at the head level
        stats["action_logp"] = logp.detach()
        return loss, stats

    def configure_optimizer(self) -> torch.optim.Optimizer:
        params = self._head().parameters()
        if self.optimizer == "adamw":
            return torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        if self.optimizer == "adam":
            return torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)
        return torch.optim.SGD(params, lr=self.lr, weight_decay=self.weight_decay)

    def phase(self, step: int) -> str:
        """Coordinate ascent: cycles of `policy_steps` + `head_steps` RL steps."""
        lengths = {POLICY_PHASE: self.policy_steps, HEAD_PHASE: self.head_steps}
        first = self.first_phase
        second = HEAD_PHASE if first == POLICY_PHASE else POLICY_PHASE
        position = step % (self.policy_steps + self.head_steps)
        return first if position < lengths[first] else second

    def for_evaluation(self) -> TemperatureController | None:
        return self if self.eval_with_head else None

    # ------------------------------------------------------------------ metrics
    def update(
        self,
        rollout: Any,
        advantages: torch.Tensor,
        statistics: torch.Tensor | None = None,
    ) -> dict[str, float]:
        """Gate and Beta statistics of the rollout's temperature actions (masked means)."""
        data = rollout.controller_data
        if "gate" not in data:
            return {}
        mask = rollout.mask.float()
        tokens = mask.sum().clamp(min=1)

        def mean(x: torch.Tensor) -> float:
            return float((x.float() * mask).sum() / tokens)

        gate, a, b = data["gate"].float(), data["beta_a"].float(), data["beta_b"].float()
        span = self.t_max - self.t_min
        fired = (gate * mask).sum()
        sampled_t = self.t_min + data["beta_z"].float() * span
        metrics = {
            "method/gate_rate": mean(gate),
            "method/gates_per_completion": float(fired / max(1, mask.shape[0])),
            "method/beta_a_mean": mean(a),
            "method/beta_b_mean": mean(b),
            "method/beta_concentration_mean": mean(a + b),
            "method/beta_mean_T": mean(self.t_min + a / (a + b) * span),
        }
        if "head_logp" in data:
            metrics["method/head_logp_mean"] = mean(data["head_logp"])
        if float(fired) > 0:
            metrics["method/sampled_T_mean"] = float((sampled_t * gate * mask).sum() / fired)
        return metrics
