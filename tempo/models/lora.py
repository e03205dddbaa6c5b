"""LoRA adapters on a hub/local causal LM through peft (the optional `tempo[peft]` extra).

`apply_lora` wraps the loaded model in a `peft.PeftModel`: the base weights are frozen and
only the low-rank adapters train, so the optimiser holds state for the adapters alone. peft
is imported only when LoRA is asked for; without it tempo imports and runs as before, and a
config with `lora.enabled=true` fails at config time in one line.

The KL reference of a LoRA run is the same model with its adapters switched off
(`reference_model`): no second copy of the weights. `final_model/` of a LoRA run holds the
adapter (peft's `adapter_config.json` + `adapter_model.safetensors`, loadable with
`peft.PeftModel.from_pretrained(base, path)`); Lightning checkpoints hold the whole module (base
weights included), so that resuming and `tempo-eval` load them like any other run's.
"""

from __future__ import annotations

import importlib.util
import sys
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import Tensor, nn

from tempo.config_error import ConfigError

INSTALL_HINT = "pip install 'tempo[peft]'"
ALL_LINEAR = "all-linear"  # peft's wildcard: every linear layer except the output layer
BIASES = ("none", "all", "lora_only")


_TARGETS = (
    f"{ALL_LINEAR}, a regex over module names, or a non-empty list of module names "
    "(e.g. [q_proj, v_proj])"
)


def peft_available() -> bool:
    """True when peft can be imported (checked without importing it)."""
    return importlib.util.find_spec("peft") is not None


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class LoraSettings:
    """The `model.lora` block; every value is checked here, at config time."""

    enabled: bool = False  # wrap the model in LoRA adapters (needs peft)
    r: int = 16  # adapter rank (our default)
    alpha: float = 32.0  # scale alpha / r of the adapter's output (our default: 2 r)
    dropout: float = 0.0  # dropout on the adapter's input (our default: none, see conf)
    target_modules: str | Sequence[str] = ALL_LINEAR  # peft's target_modules
    bias: str = "none"  # none | all | lora_only: which biases train too

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            raise ConfigError("lora.enabled", self.enabled, "true or false")
        if isinstance(self.r, bool) or not isinstance(self.r, int) or self.r < 1:
            raise ConfigError("lora.r", self.r, "an integer >= 1")
        if not _number(self.alpha) or not self.alpha > 0:
            raise ConfigError("lora.alpha", self.alpha, "a number > 0")
        if not _number(self.dropout) or not 0 <= self.dropout < 1:
            raise ConfigError("lora.dropout", self.dropout, "a number in [0, 1)")
        targets = self.target_modules
        if isinstance(targets, str):
            if not targets:
                raise ConfigError("lora.target_modules", targets, _TARGETS)
        elif (
            not isinstance(targets, Sequence)
            or not targets
            or not all(isinstance(t, str) and t for t in targets)
        ):
            raise ConfigError("lora.target_modules", targets, _TARGETS)
        else:
            object.__setattr__(self, "target_modules", tuple(targets))
        if self.bias not in BIASES:
            raise ConfigError("lora.bias", self.bias, f"one of {', '.join(BIASES)}")
        if self.enabled and not peft_available():
            raise ConfigError(
                "lora.enabled", True, f"false unless peft is installed ({INSTALL_HINT})"
            )

    @classmethod
    def from_config(cls, lora: Mapping[str, Any] | None) -> LoraSettings:
        """Settings from the config's `lora:` mapping (None = LoRA off)."""
        values = dict(lora or {})
        known = [f.name for f in fields(cls)]
        for key in values:
            if key not in known:
                raise ConfigError(f"lora.{key}", values[key], f"keys of lora: {', '.join(known)}")
        return cls(**values)


def apply_lora(model: nn.Module, settings: LoraSettings | None) -> nn.Module:
    """`model` wrapped in fresh LoRA adapters (a `peft.PeftModel`), or `model` itself when
    LoRA is off. peft initialises the adapters' up-projections to zero, so the wrapped model
    computes exactly what `model` did until the first update."""
    if settings is None or not settings.enabled:
        return model
    from peft import LoraConfig, get_peft_model

    targets = settings.target_modules
    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=targets if isinstance(targets, str) else list(targets),
        bias=settings.bias,
        task_type="CAUSAL_LM",
    )
    with warnings.catch_warnings():  # peft 0.21 asks transformers 5 a deprecated question
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated")
        try:
            return get_peft_model(model, config)
        except ValueError as err:  # e.g. "Target modules {...} not found in the base model"
            raise ConfigError(
                "model.lora.target_modules",
                targets if isinstance(targets, str) else list(targets),
                f"modules of {type(model).__name__} ({str(err).splitlines()[0][:200]})",
            ) from None


def is_lora(model: object) -> bool:
    """True for a model wrapped by `apply_lora` (a `peft.PeftModel`). Never imports peft: a
    model can only be a PeftModel once peft has been imported."""
    if sys.modules.get("peft") is None:
        return False
    from peft import PeftModel

    return isinstance(model, PeftModel)


@contextmanager
def reference_model(model: nn.Module) -> Iterator[nn.Module]:
    """The KL reference of a LoRA policy: the policy itself with its adapters disabled (the
    base weights, no copy), in eval mode like a frozen reference copy; both are restored on
    exit."""
    if not is_lora(model):
        raise TypeError(f"reference_model needs a LoRA (peft) model, got {type(model).__name__}")
    was_training = model.training
    model.eval()
    try:
        with model.disable_adapter():
            yield model
    finally:
        model.train(was_training)


def merged_weights(model: nn.Module) -> Iterator[tuple[str, Tensor]]:
    """The policy's weights under the plain model's checkpoint names, one tensor at a time.

    For a LoRA policy every adapted layer's weight is W + delta (peft's `get_delta_weight`:
    the scaled B A of each active adapter), computed as it is yielded, so at most one
    layer's merged copy exists at a time; the adapter tensors themselves are left out and the
    model is not changed (no `merge_and_unload`). Any other model yields its `state_dict()`.
    This is what an inference engine that knows nothing of adapters (vLLM) loads.
    """
    if not is_lora(model):
        yield from model.state_dict().items()
        return
    from peft.tuners.lora import LoraLayer

    base = model.get_base_model()
    adapted = {
        name: module
        for name, module in base.named_modules()
        if isinstance(module, LoraLayer) and not module.merged
    }
    with torch.no_grad():
        for key, value in base.state_dict().items():
            if ".lora_" in key:  # lora_A / lora_B / lora_embedding_* of an adapter
                continue
            key = key.replace(".base_layer.", ".")
            owner, _, leaf = key.rpartition(".")
            module = adapted.get(owner)
            if module is not None and leaf == "weight":
                for adapter in module.active_adapters:
                    if adapter in module.lora_A or adapter in module.lora_embedding_A:
                        value = value + module.get_delta_weight(adapter).to(value.dtype)
            yield key, value
