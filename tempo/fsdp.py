"""Fully Sharded Data Parallel (`trainer=fsdp`): FSDP2 through Lightning's ModelParallelStrategy.

`trainer.strategy` of the fsdp preset is a node with `_target_: tempo.fsdp.FSDPSettings`, so
its options are checked at config time like every other value. `FSDPSettings.strategy()`
builds `TempoFSDPStrategy`, a `ModelParallelStrategy` (pure data parallel: every rank is one
shard of the data-parallel mesh) that shards the policy with FSDP2's `fully_shard` in the
LightningModule's `configure_model` hook (`shard_policy`):

- every decoder layer (any `GradientCheckpointingLayer`, the base class transformers 5 gives
  them all) is its own unit, all-gathered for its forward and backward only;
- the input embedding and the LM head form one grouped unit (`fully_shard([embed, head])`:
  they are usually the same tied weight, and tempo calls the head on its own, after the
  decoder body, which is the grouped-unit case FSDP2 supports);
- the decoder body (`model.model`: final norm, rotary buffers) is the root unit.

Unlike Lightning's `FSDPStrategy` (FSDP1), ModelParallelStrategy does not run `training_step`
inside a wrapped forward, so the RL step's manual backward over micro-batches works. What the
step does differently under FSDP (`RLVRModule`, wherever its `_fsdp` settings are set):

- sampling, evaluation and every no-grad pass run inside `full_weights`: every unit is
  all-gathered once, in the same order on every rank, and kept whole until the block ends, so
  the fused decoder and transformers' forward read whole tensors and ranks never have to
  line up per decoding step (the peak memory of these passes is the full model);
- training passes run sharded; a rank with fewer micro-batches runs real zero-loss passes
  through the model (`RLVRModule._fsdp_balance_backward`), because FSDP's all-gathers and
  reduce-scatters run in the forward and backward hooks and every rank must run them equally
  often;
- gradients are averaged over ranks by FSDP's reduce-scatter (as DDP's all-reduce would), the
  clipping norm is the global one (`clip_grad_norm`), and a learned temperature head (not
  sharded) has its gradients all-reduced by the module (`average_gradients`);
- checkpoints hold the full state dict, gathered on rank 0 (`save_distributed_checkpoint=
  False`), in the layout of single-process and DDP checkpoints, so resume and `tempo-eval
  checkpoint=` read them as those (and a DDP checkpoint resumes under FSDP).

Not supported under fsdp, refused in one line by `tempo.runner.make_strategy`: a KL reference
model (`algorithm.beta > 0`, a second full copy of the policy) and LoRA adapters.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.core.optimizer import LightningOptimizer
from lightning.pytorch.strategies import ModelParallelStrategy
from torch import nn
from torch.optim import Optimizer

from tempo.config_error import ConfigError

#: What each `sharding_strategy` keeps sharded: FULL_SHARD reshards a layer's weights right
#: after its forward (regathered in backward), SHARD_GRAD_OP keeps them whole until backward.
SHARDING = {"FULL_SHARD": True, "SHARD_GRAD_OP": False}
STATE_DICT_TYPES = ("full",)


def decoder_layer_classes() -> tuple[type[nn.Module], ...]:
    """The module classes that become FSDP units of their own."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    return (GradientCheckpointingLayer,)


@dataclass(frozen=True)
class FSDPSettings:
    """Options of `trainer.strategy` in the fsdp preset (see conf/trainer/fsdp.yaml)."""

    sharding_strategy: str = "FULL_SHARD"  # see SHARDING
    cpu_offload: bool = False  # keep sharded parameters, gradients and optimiser state on CPU
    state_dict_type: str = "full"  # checkpoints: full weights gathered on rank 0

    def __post_init__(self) -> None:
        if self.sharding_strategy not in SHARDING:
            raise ConfigError(
                "strategy.sharding_strategy",
                self.sharding_strategy,
                f"one of {', '.join(SHARDING)} (use trainer=ddp for replicated weights)",
            )
        if not isinstance(self.cpu_offload, bool):
            raise ConfigError("strategy.cpu_offload", self.cpu_offload, "true or false")
        if self.state_dict_type not in STATE_DICT_TYPES:
            raise ConfigError(
                "strategy.state_dict_type",
                self.state_dict_type,
                "full (tempo's resume and tempo-eval read single-file checkpoints)",
            )

    @property
    def reshard_after_forward(self) -> bool:
        return SHARDING[self.sharding_strategy]

    def strategy(self) -> TempoFSDPStrategy:
        """Lightning's ModelParallelStrategy that shards the policy with these settings."""
        return TempoFSDPStrategy(self)


class TempoFSDPStrategy(ModelParallelStrategy):
    """ModelParallelStrategy as pure FSDP2: a 1-D data-parallel mesh over all ranks (no tensor
    parallelism), full-state-dict checkpoints written by rank 0, and `shard_module`, which the
    LightningModule's `configure_model` calls to shard its policy.

    Optimiser states are saved as a single process saves them (`Optimizer.state_dict()`:
    parameters numbered within each optimiser), not as Lightning's ModelParallelStrategy numbers
    them (by position among all the LightningModule's parameters, which misplaces the state of
    a second optimiser, the temperature head's, on load). So checkpoints have one layout under
    every strategy, and a run resumes under FSDP from a DDP or single-process checkpoint too.
    """

    def __init__(self, settings: FSDPSettings) -> None:
        super().__init__(save_distributed_checkpoint=False)
        self.settings = settings

    def setup_environment(self) -> None:
        self._data_parallel_size = self.num_nodes * self.num_processes
        self._tensor_parallel_size = 1
        super().setup_environment()

    def shard_module(self, policy: nn.Module) -> None:
        """Shard `policy` over the data-parallel mesh (once: later calls, e.g. `fit` after a
        `validate`, find it sharded and do nothing)."""
        shard_policy(policy, self.device_mesh["data_parallel"], self.settings)

    def optimizer_state(self, optimizer: Optimizer) -> dict[str, Any]:
        """The full state of `optimizer` on rank 0 (empty elsewhere); every rank must call it."""
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_optimizer_state_dict,
        )

        if isinstance(optimizer, LightningOptimizer):
            optimizer = optimizer._optimizer
        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        state = get_optimizer_state_dict(self.model, optimizer, options=options)
        return _numbered(state) if self.global_rank == 0 else {}

    def load_checkpoint(self, checkpoint_path: Any, weights_only: bool | None = None) -> dict:
        """Load a single-file checkpoint into the sharded module and optimisers; returns the
        rest of it (loops, callbacks, tempo's own entries) as ModelParallelStrategy does."""
        from lightning.fabric.strategies.model_parallel import _load_raw_module_state
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_optimizer_state_dict,
        )

        path = Path(self.broadcast(checkpoint_path))
        if path.is_dir():
            raise ConfigError(
                "ckpt_path", str(path), "a single-file checkpoint (state_dict_type=full)"
            )
        checkpoint = torch.load(path, mmap=True, map_location="cpu", weights_only=weights_only)
        strict = self.lightning_module.strict_loading
        _load_raw_module_state(checkpoint.pop("state_dict"), self.model, strict=strict)
        names = {param: name for name, param in self.model.named_parameters()}
        options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True, strict=strict)
        for optimizer, state in zip(self.optimizers, checkpoint["optimizer_states"], strict=True):
            set_optimizer_state_dict(
                self.model, optimizer, _named(state, optimizer, names), options=options
            )
        return checkpoint


def _numbered(state: Mapping[str, Any]) -> dict[str, Any]:
    """An optimiser state keyed by parameter names (torch's distributed state-dict API) keyed
    as `Optimizer.state_dict()` keys it: parameters numbered 0, 1, ... across param groups."""
    index: dict[str, int] = {}
    groups = []
    for group in state["param_groups"]:
        numbers = [index.setdefault(name, len(index)) for name in group["params"]]
        groups.append({**group, "params": numbers})
    return {"state": {index[k]: v for k, v in state["state"].items()}, "param_groups": groups}


def _named(state: Mapping[str, Any], optimizer: Optimizer, names: dict) -> dict[str, Any]:
    """The inverse of `_numbered` for `optimizer`, whose parameters `names` names."""
    order = [names[p] for group in optimizer.param_groups for p in group["params"]]
    groups = [{**g, "params": [order[i] for i in g["params"]]} for g in state["param_groups"]]
    return {"state": {order[k]: v for k, v in state["state"].items()}, "param_groups": groups}


def is_sharded(model: nn.Module) -> bool:
    """True when FSDP2 manages `model`'s parameters (its decoder body is an FSDP unit)."""
    from torch.distributed.fsdp import FSDPModule

    return any(isinstance(m, FSDPModule) for m in model.modules())


def shard_policy(model: nn.Module, mesh: Any, settings: FSDPSettings) -> None:
    """Apply `fully_shard` bottom-up: decoder layers, [input embedding, LM head], decoder body
    (the root); then one no-grad forward on every rank, which makes the body FSDP's root
    before the sampler calls the LM head on its own."""
    from torch.distributed.fsdp import CPUOffloadPolicy, OffloadPolicy, fully_shard

    from tempo.models.policy import decoder_body

    if is_sharded(model):
        return
    pinned = mesh.device_type != "cpu"  # page-locked host memory needs an accelerator
    offload = CPUOffloadPolicy(pin_memory=pinned) if settings.cpu_offload else OffloadPolicy()
    kwargs = {"mesh": mesh, "offload_policy": offload}
    layers = decoder_layer_classes()
    for module in list(model.modules()):
        if isinstance(module, layers):
            fully_shard(module, reshard_after_forward=settings.reshard_after_forward, **kwargs)
    embed, head = model.get_input_embeddings(), model.get_output_embeddings()
    group = [embed] if head is None or head is embed else [embed, head]
    fully_shard(group, reshard_after_forward=settings.reshard_after_forward, **kwargs)
    body = decoder_body(model)
    fully_shard(body, **kwargs)  # the root: kept whole after forward (needed in backward)
    device = mesh.device_type
    if device == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())
    with torch.no_grad():
        body(input_ids=torch.zeros(1, 1, dtype=torch.long, device=device), use_cache=False)


def _units(model: nn.Module) -> list[nn.Module]:
    from torch.distributed.fsdp import FSDPModule

    return [m for m in model.modules() if isinstance(m, FSDPModule)]


@contextmanager
def full_weights(model: nn.Module, reshard_after_forward: bool = True) -> Iterator[None]:
    """Keep every FSDP unit of `model` all-gathered for the block (a no-op when unsharded).

    All ranks gather the units in the same order (`model.modules()`) once on entry; inside,
    forward passes neither gather nor free anything, so ranks may run different numbers of
    them (sampling stops when a rank's completions are done). On exit every unit is sharded
    again and FSDP's per-iteration trackers are reset (`reset_iter_state` on the root);
    `reshard_after_forward` is what the non-root units go back to.
    """
    from tempo.models.policy import decoder_body

    units = _units(model)
    if not units:
        yield
        return
    body = decoder_body(model)
    for unit in units:
        unit.unshard()
        unit.set_reshard_after_forward(False, recurse=False)
    try:
        yield
    finally:
        for unit in units:
            unit.set_reshard_after_forward(
                reshard_after_forward and unit is not body, recurse=False
            )
        body.reset_iter_state()  # reshards every unit, clears FSDP's per-pass state


def clip_grad_norm(parameters: Iterable[nn.Parameter], max_norm: float) -> torch.Tensor:
    """`torch.nn.utils.clip_grad_norm_` over sharded (DTensor) gradients, its norm as a plain
    tensor. On FSDP2's DTensors torch's own clipping already reduces over every rank's shard:
    the norm is the global one (measured on 2 CPU ranks: 0.3087, as for the whole gradient in
    one process, where the two shards alone have 0.253 and 0.176), the same on every rank,
    returned as a replicated DTensor."""
    from torch.distributed.tensor import DTensor

    norm = torch.nn.utils.clip_grad_norm_(parameters, max_norm)
    return norm.full_tensor() if isinstance(norm, DTensor) else norm


def average_gradients(parameters: Iterable[nn.Parameter]) -> None:
    """Average replicated (unsharded) parameters' gradients over ranks, as DDP would: for a
    learned temperature head, which FSDP does not manage. Missing gradients count as zero."""
    from tempo.distributed import global_sum, world_size

    world = world_size()
    if world == 1:
        return
    for p in parameters:
        grad = p.grad if p.grad is not None else torch.zeros_like(p)
        p.grad = global_sum(grad) / world


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The full (gathered) weights of a sharded model on rank 0, empty elsewhere; every rank
    must call it. An unsharded model's own state dict."""
    if not is_sharded(model):
        return model.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_model_state_dict(model, options=options)
