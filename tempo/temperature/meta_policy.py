"""`meta_policy` (TAMPO, arXiv 2602.11779): a learned distribution over candidate temperatures.

One temperature T_s per RL step, shared by every prompt, is drawn from pi_{s-1}, a distribution
over K candidate temperatures. After the rollout, without generating anything new, every
completion i scores each candidate by its length-normalised log-likelihood

    l_k(i) = (1/L_i) sum_t log softmax(z_{i,t} / T_k)[o_{i,t}]

(from the logits of a forward pass the policy update already makes). The sparsemax of l(i)
spreads completion i's advantage A_i over the temperatures that explain it best:

    w(i) = sparsemax(l(i)),   a_k = (1/B) sum_i w_k(i) A_i,   Abar <- (1 - alpha) Abar + alpha a,

and pi_s = minmax(Abar) / sum(minmax(Abar)) (uniform when every Abar_k is equal). The state is
the K-vector Abar: no neural parameters, no extra rollouts.

Choices of ours (the paper leaves them open), each a constructor argument:
- nucleus draw: sort pi descending, keep the smallest prefix whose mass is >= top_p (up to
  1e-9 rounding; at least one candidate) plus every candidate tied with the last one kept
  (so the uniform initial pi draws from all K, not the K * top_p lowest), renormalise, draw;
- rows whose statistics are NaN (the loop skipped their forward pass; their advantage is 0,
  or their completion is empty) add nothing to a_k but still count in the batch size B;
- `warmup_steps`: T is drawn uniformly over all candidates for the first n steps while Abar
  keeps learning; `init`: the starting Abar; `likelihood_logits`: which logits l_k uses.
  The paper's defaults are warm-up 0 and init 0. With sparse early rewards a warm-up of about
  1/alpha steps lets Abar average before it steers; a peak in `init` far above alpha * |a_k|
  acts as a prior that decays as (1 - alpha)^s (experiments/temperature_testbed/README.md).

Under DDP (one process per device) B is the global batch: the sum of w_k(i) A_i and the row
count are all-reduced before the division (`tempo.distributed`), so Abar and pi
are identical on every rank; the draw uses the controller's own generator seeded by `seed`,
not by the rank, so every rank also draws the same T_s at every step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from tempo.config_error import ConfigError
from tempo.distributed import global_sum
from tempo.temperature.base import StepTemperature
from tempo.temperature.checks import check_choice, check_int, check_number, check_unit_interval

#: The paper's grid {0.6, 0.7, ..., 1.5}, K = 10.
DEFAULT_CANDIDATES: tuple[float, ...] = (0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.4, 1.5)
SAMPLING_MODES = ("nucleus", "greedy", "full")
STATISTICS_SOURCES = ("rollout", "post_update")
#: Slack on the nucleus mass test, so that e.g. 0.4 + 0.3 counts as reaching top_p = 0.7.
_NUCLEUS_SLACK = 1e-9


def sparsemax(x: Tensor, dim: int = -1) -> Tensor:
    """Euclidean projection of x onto the probability simplex along `dim` (Martins & Astudillo
    2016): argmin_w ||w - x||^2 with w >= 0, sum w = 1.

    Unlike softmax, entries more than a threshold below the largest get exactly 0. Batched
    over every other dim; half precision is computed in float32. Shift-invariant, so the
    maximum is subtracted first for stability.
    """
    work = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    work = work.movedim(dim, -1)
    z = work - work.max(dim=-1, keepdim=True).values
    z_sorted = z.sort(dim=-1, descending=True).values
    cumulative = z_sorted.cumsum(dim=-1)
    k = torch.arange(1, z.shape[-1] + 1, device=z.device, dtype=z.dtype)
    # The support is the largest prefix of the sorted entries with 1 + k z_(k) > sum_{j<=k} z_(j).
    in_support = 1 + k * z_sorted > cumulative
    support = in_support.sum(dim=-1, keepdim=True).clamp(min=1)
    tau = (cumulative.gather(-1, support - 1) - 1) / support.to(z.dtype)
    out = (z - tau).clamp(min=0)
    return out.movedim(-1, dim).to(x.dtype)


def _label(t: float) -> str:
    """Short stable metric label of a candidate: 0.6 -> '0.6', 1.0 -> '1.0', 0.7000001 -> '0.7'."""
    text = f"{t:g}"
    return text + ".0" if text.lstrip("-").isdigit() else text


def _check_candidates(value: object) -> list[float]:
    allowed = "a non-empty list of distinct finite temperatures > 0"
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) == 0:
        raise ConfigError("candidates", value, allowed)
    temps = []
    for t in value:
        if isinstance(t, bool) or not isinstance(t, (int, float)):
            raise ConfigError("candidates", value, allowed)
        if not (math.isfinite(t) and t > 0):
            raise ConfigError("candidates", value, allowed)
        temps.append(float(t))
    labels = [_label(t) for t in temps]
    if len(set(labels)) != len(labels):  # also catches values that would share a metric key
        raise ConfigError("candidates", value, allowed)
    return temps


def _check_init(value: object, size: int) -> list[float]:
    allowed = f"a finite number or a list of {size} finite numbers"
    if isinstance(value, (str, bytes)) or isinstance(value, bool):
        raise ConfigError("init", value, allowed)
    if isinstance(value, Sequence):
        if len(value) != size:
            raise ConfigError("init", value, allowed)
        return [check_number("init", v, allowed) for v in value]
    return [check_number("init", value, allowed)] * size


def minmax_distribution(values: Tensor) -> Tensor:
    """pi_k = (v_k - min) / (max - min), divided by its sum; uniform when all v_k are equal."""
    span = values.max() - values.min()
    if not bool(span > 0):
        return torch.full_like(values, 1.0 / values.numel())
    scaled = (values - values.min()) / span
    return scaled / scaled.sum()


def nucleus_support(probs: Sequence[float], top_p: float) -> list[int]:
    """Indices of the nucleus: probs sorted descending, the smallest prefix whose mass reaches
    top_p, plus every candidate tied with the last one kept (so equal probabilities are
    treated alike: a uniform pi keeps all candidates, not the first few by index); always at
    least one index, in descending-probability order (ties in index order)."""
    order = sorted(range(len(probs)), key=lambda k: -probs[k])  # sorted() is stable
    kept, mass = [], 0.0
    for k in order:
        if mass >= top_p - _NUCLEUS_SLACK and probs[k] != probs[kept[-1]]:
            break
        kept.append(k)
        mass += probs[k]
    return kept


class MetaPolicyTemperature(StepTemperature):
    """TAMPO: one temperature per step, drawn from a distribution learned from advantages."""

    name = "meta_policy"
    per_token = False

    def __init__(
        self,
        candidates: Sequence[float] = DEFAULT_CANDIDATES,
        top_p: float = 0.7,
        alpha: float = 0.05,
        sampling: str = "nucleus",
        warmup_steps: int = 0,
        init: float | Sequence[float] = 0.0,
        likelihood_logits: str = "rollout",
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.candidates = _check_candidates(candidates)
        self.labels = [_label(t) for t in self.candidates]
        self.top_p = check_unit_interval("top_p", top_p)
        self.alpha = check_unit_interval("alpha", alpha)
        self.sampling = check_choice("sampling", sampling, SAMPLING_MODES)
        self.warmup_steps = check_int("warmup_steps", warmup_steps, minimum=0)
        start = _check_init(init, len(self.candidates))
        #: When the loop calls `token_statistics`: on the update's pre-update forward pass
        #: ("rollout") or on a forward pass after the policy update ("post_update").
        self.statistics_source = check_choice(
            "likelihood_logits", likelihood_logits, STATISTICS_SOURCES
        )
        self.seed = check_int("seed", seed, minimum=0)
        self.generator = torch.Generator().manual_seed(self.seed)
        ema = torch.tensor(start, dtype=torch.float64)
        self.register_buffer("ema", ema)  # Abar
        self.register_buffer("probs", minmax_distribution(ema))  # pi
        self.step: int | None = None  # the step of the last draw
        self.index: int | None = None  # index of the last sampled candidate

    # ------------------------------------------------------------------ state
    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> MetaPolicyTemperature:
        """Device moves apply to Abar and pi, dtype casts (e.g. to bf16) do not: keep float64."""
        kept = {name: getattr(self, name).detach().clone() for name in ("ema", "probs")}
        super()._apply(fn, recurse)
        for name, value in kept.items():
            setattr(self, name, value.to(getattr(self, name).device))
        return self

    def extra_state(self) -> dict[str, Any]:
        return {
            "candidates": list(self.candidates),
            "step": self.step,
            "index": self.index,
            "generator": self.generator.get_state().clone(),
        }

    def load_extra_state(self, state: dict[str, Any]) -> None:
        if [float(t) for t in state["candidates"]] != self.candidates:
            raise ValueError(
                f"checkpoint candidates {state['candidates']} differ from {self.candidates}"
            )
        self.step, self.index = state["step"], state["index"]
        self.generator.set_state(state["generator"].detach().to("cpu", torch.uint8))

    @property
    def current_temperature(self) -> float | None:
        """T_s of the last draw (None before the first `begin_step`)."""
        return None if self.index is None else self.candidates[self.index]

    # ------------------------------------------------------------------ drawing T_s
    def _draw(self, probs: list[float], warmup: bool) -> int:
        """Index of T_s: uniform in warm-up, else greedy / full / nucleus over `probs`."""
        if self.sampling == "greedy" and not warmup:
            return max(range(len(probs)), key=lambda k: (probs[k], -k))  # ties: lowest index
        if warmup:
            kept = list(range(len(probs)))
            weights = [1.0] * len(probs)
        else:
            kept = nucleus_support(probs, 1.0 if self.sampling == "full" else self.top_p)
            weights = [probs[k] for k in kept]
        total = sum(weights)
        u = float(torch.rand((), generator=self.generator, dtype=torch.float64)) * total
        cumulative = 0.0
        for k, weight in zip(kept, weights, strict=True):
            cumulative += weight
            if u < cumulative and weight > 0:
                return k
        return next(k for k, w in zip(reversed(kept), reversed(weights), strict=True) if w > 0)

    def _state_metrics(self, prefix: str, values: Tensor | list[float]) -> dict[str, float]:
        """One `method/<prefix>_T=<candidate>` entry per candidate."""
        pairs = zip(self.labels, values, strict=True)
        return {f"method/{prefix}_T={lab}": float(v) for lab, v in pairs}

    def begin_step(self, step: int) -> dict[str, float]:
        """Draws T_s from pi_{s-1}; logs T_s, pi before the draw and Abar."""
        probs = self.probs.detach().cpu().tolist()
        self.step = int(step)
        self.index = self._draw(probs, warmup=self.step < self.warmup_steps)
        metrics = {"method/T": self.candidates[self.index]}
        metrics.update(self._state_metrics("prob", probs))
        metrics.update(self._state_metrics("ema", self.ema.detach().cpu()))
        return metrics

    def step_temperature(self) -> float:
        """T_s, the candidate drawn by the last `begin_step`."""
        value = self.current_temperature
        if value is None:
            raise RuntimeError("meta_policy: begin_step(step) must draw T_s before sampling")
        return value

    # ------------------------------------------------------------------ learning pi
    def statistics_temperatures(self) -> tuple[float, ...]:
        """The candidates: l_k(i) needs each token's log-likelihood under every T_k."""
        return tuple(self.candidates)

    def token_statistics(self, candidate_logprobs: Tensor, mask: Tensor) -> Tensor:
        """l_k(i) [b, K]: mean over valid tokens of log softmax(z / T_k)[token].

        Empty completions (no valid token) get a NaN row, so `update` treats them like rows
        the loop skipped. Stays on the input's device.
        """
        with torch.no_grad():
            valid = mask.to(device=candidate_logprobs.device) > 0
            summed = torch.where(valid.unsqueeze(-1), candidate_logprobs, 0.0).sum(dim=1)
            lengths = valid.sum(dim=1, keepdim=True)
            mean = summed / lengths.clamp(min=1)
            return torch.where(lengths > 0, mean, torch.full_like(mean, float("nan")))

    def temperature_advantages(
        self, advantages: Tensor, statistics: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """a [K] (float64, CPU), the sparsemax weights [n, K] of the n contributing rows
        (finite statistics) and a mask [B] of those rows.

        a is taken over the global batch: under DDP the sum of w_k(i) A_i and the batch size
        B are summed over every rank before the division (a collective: every rank calls
        this once per step, also with `statistics` None), so a, and with it Abar, pi and the
        next draw of T_s, are the same on every rank. The weights and the mask stay local.
        """
        adv = advantages.detach().to("cpu", torch.float64).reshape(-1)
        size, k = adv.numel(), len(self.candidates)
        if statistics is None:
            rows = torch.zeros(size, dtype=torch.bool)
            weights = torch.zeros(0, k, dtype=torch.float64)
        else:
            stats = statistics.detach().to("cpu", torch.float64)
            if stats.shape != (size, k):
                raise ValueError(f"statistics shape {tuple(stats.shape)} != ({size}, {k})")
            rows = torch.isfinite(stats).all(dim=1)
            weights = sparsemax(stats[rows], dim=-1)
        local = (weights * adv[rows].unsqueeze(1)).sum(dim=0)
        total = global_sum(torch.cat([local, torch.tensor([float(size)], dtype=torch.float64)]))
        a = total[:k] / max(float(total[k]), 1.0)
        return a, weights, rows

    def update(
        self, rollout: Any, advantages: Tensor, statistics: Tensor | None = None
    ) -> dict[str, float]:
        """EMA of the temperature advantages a_k, then pi = minmax(Abar) / sum.

        Every logged statistic (support size, argmax shares) is over the global batch too.
        """
        a, weights, rows = self.temperature_advantages(advantages, statistics)
        ema = (1 - self.alpha) * self.ema.detach().cpu() + self.alpha * a
        self.ema.copy_(ema)
        self.probs.copy_(minmax_distribution(ema))

        metrics = self._state_metrics("temp_adv", a)
        metrics.update(self._state_metrics("ema", ema))
        k = len(self.candidates)
        adv = advantages.detach().to("cpu", torch.float64).reshape(-1)
        best = torch.full_like(adv, -1, dtype=torch.long)
        if statistics is not None and bool(rows.any()):
            best[rows] = statistics.detach().to("cpu", torch.float64)[rows].argmax(dim=1)
        # One reduce of [support sum, rows, (argmax counts [K], total) for A > 0 and A < 0].
        support = (weights > 0).sum(dim=1).double()
        packed = [torch.tensor([float(support.sum()), float(len(support))], dtype=torch.float64)]
        signs = (("pos", rows & (adv > 0)), ("neg", rows & (adv < 0)))
        for _, chosen in signs:
            counts = torch.bincount(best[chosen], minlength=k).double()
            packed.append(torch.cat([counts, torch.tensor([float(chosen.sum())])]))
        total = global_sum(torch.cat(packed))
        support_sum, support_rows = float(total[0]), float(total[1])
        metrics["method/support_size"] = support_sum / support_rows if support_rows else 0.0
        for j, (sign, _) in enumerate(signs):
            block = total[2 + j * (k + 1) : 2 + (j + 1) * (k + 1)]
            count = max(float(block[k]), 1.0)
            for index, lab in enumerate(self.labels):
                metrics[f"method/argmax_{sign}_T={lab}"] = float(block[index]) / count
        return metrics
