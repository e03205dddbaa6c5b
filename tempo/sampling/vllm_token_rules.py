"""Per-token temperature rules inside vLLM's sampler (a V1 logits processor).

vLLM applies one temperature per request; a rule whose T changes token by token (edt, ead,
two_level) runs here instead. Every request of such a rollout is sent at T = 1 and tagged
with `extra_args["tempo_rule"] = [call id, row]`. At each decoding step vLLM hands
`TokenRuleProcessor.apply` the float32 logits of its running batch; for the tagged rows the
processor calls the controller, exactly as tempo's sampler would, with those logits, the
row's previous T and its 0-based completion position (the length of the request's output
so far, which vLLM keeps right under async scheduling), divides the logits by T in place and
writes T into the call's table. vLLM then samples from softmax(z / T) and returns
log softmax(z / T)[token] (`logprobs_mode="processed_logprobs"`), and the engine reads the
temperatures back from the table into `Rollout.temperatures`.

The processor is argmax-invariant (dividing by T > 0 keeps the argmax), so vLLM runs it after
its own temperature (1 here) and only for random sampling; greedy requests are untouched.
The table lives in this process: the engine core must run in it too (tempo sets
`VLLM_ENABLE_V1_MULTIPROCESSING=0`), and tensor-parallel workers, which are other processes,
cannot run a rule (refused with one line in `check_engine`).
"""

from __future__ import annotations

import itertools
import threading
from collections import defaultdict
from typing import Any

import torch
from torch import Tensor

from tempo.temperature.base import TemperatureController

#: The `SamplingParams.extra_args` key that tags a request as driven by a tempo rule.
TAG = "tempo_rule"

_calls: dict[int, RuleCall] = {}
_ids = itertools.count()
_lock = threading.Lock()


class RuleCall:
    """One rollout driven by a per-token rule: the controller and what it decided, per row."""

    def __init__(
        self, controller: TemperatureController, rows: int, steps: int, device: torch.device
    ) -> None:
        self.controller = controller
        self.steps = steps
        self.initial = controller.initial_temperature(rows, device).float()
        self.temperatures = torch.ones(rows, steps, device=device)
        self.records: dict[str, Tensor] = {}
        self.calls = 0  # decoding steps the rule ran at (0 after a rollout: it never ran)

    def decide(self, logits: Tensor, rows: Tensor, position: int) -> Tensor:
        """T [n] for `rows` at completion `position` given their logits [n, V]; recorded.

        The table keeps T as the rule decided it, so a bad value (not a finite number > 0)
        fails the rollout afterwards (`bad_temperature`); vLLM's batch goes on at T = 1 for
        it meanwhile. Nothing here reads a device value back (no sync per decoding step)."""
        device = self.temperatures.device
        rows = rows.to(device)
        prev = self.initial[rows] if position == 0 else self.temperatures[rows, position - 1]
        hidden = logits.new_empty(logits.shape[0], 0)  # rules served here never read it
        decision = self.controller.temperature(logits, hidden, prev.to(logits.device), position)
        temp = decision.temperature.float()
        self.temperatures[rows, position] = temp.to(device)
        for key, value in decision.records.items():
            if key not in self.records:
                shape = (self.temperatures.shape[0], self.steps)
                self.records[key] = torch.zeros(shape, dtype=value.dtype, device=device)
            self.records[key][rows, position] = value.to(device)
        self.calls += 1
        return torch.where(torch.isfinite(temp) & (temp > 0), temp, 1.0)

    def bad_temperature(self, mask: Tensor) -> float | None:
        """The first T (row-major) under `mask` [B, L] that is not a finite number > 0."""
        table = self.temperatures[:, : mask.shape[1]]
        bad = mask.bool() & ~(torch.isfinite(table) & (table > 0))
        if not bool(bad.any()):
            return None
        return float(table[bad][0])


def open_call(
    controller: TemperatureController, rows: int, steps: int, device: torch.device
) -> tuple[int, RuleCall]:
    """Register a rollout; its requests carry `extra_args={TAG: [call id, row]}`."""
    call = RuleCall(controller, rows, steps, device)
    with _lock:
        call_id = next(_ids)
        _calls[call_id] = call
    return call_id, call


def close_call(call_id: int) -> None:
    """Forget a rollout once its table has been read (or it failed)."""
    with _lock:
        _calls.pop(call_id, None)


class TokenRuleProcessor:
    """vLLM V1 logits processor that runs tempo's per-token rules on tagged requests.

    A plain class here so this module imports without vLLM; `processor_class()` makes it a
    subclass of vLLM's `LogitsProcessor` when the engine is built.
    """

    def __init__(self, vllm_config: Any, device: torch.device, is_pin_memory: bool) -> None:
        self.device = device
        #: batch index -> (call id, row, the request's live output-token list)
        self.rows: dict[int, tuple[int, int, list[int]]] = {}

    def is_argmax_invariant(self) -> bool:
        return True  # dividing logits by T > 0 keeps the argmax

    @staticmethod
    def _entry(params: Any, _prompt: Any, output: list[int]) -> tuple[int, int, list[int]] | None:
        tag = (getattr(params, "extra_args", None) or {}).get(TAG)
        if tag is None:
            return None
        return int(tag[0]), int(tag[1]), output

    def update_state(self, batch_update: Any) -> None:
        from vllm.v1.sample.logits_processor.builtin import process_dict_updates

        process_dict_updates(self.rows, batch_update, self._entry)

    def apply(self, logits: Tensor) -> Tensor:
        if not self.rows:
            return logits
        groups: dict[tuple[int, int], tuple[list[int], list[int]]] = defaultdict(lambda: ([], []))
        for index, (call_id, row, output) in self.rows.items():
            indices, rows = groups[(call_id, len(output))]
            indices.append(index)
            rows.append(row)
        for (call_id, position), (indices, rows) in groups.items():
            call = _calls.get(call_id)
            if call is None or position >= call.steps:
                continue  # a closed call's request on its way out: nothing left to record
            index = torch.tensor(indices, device=logits.device)
            temp = call.decide(logits[index], torch.tensor(rows), position)
            logits[index] = logits[index] / temp.to(logits.device, logits.dtype)[:, None]
        return logits


_processor_class: type | None = None


def processor_class() -> type:
    """`TokenRuleProcessor` as a subclass of vLLM's LogitsProcessor (needs vLLM)."""
    global _processor_class
    if _processor_class is None:
        from vllm.v1.sample.logits_processor import LogitsProcessor

        class TempoTokenRuleProcessor(TokenRuleProcessor, LogitsProcessor):
            __doc__ = TokenRuleProcessor.__doc__

        _processor_class = TempoTokenRuleProcessor
    return _processor_class
