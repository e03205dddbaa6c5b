"""Batch statistics over every rank of a DDP run, for state that must agree across ranks.

Under DDP each rank holds only its own completions, but a controller's state (TAMPO's EMA of
temperature advantages, E3's entropy target and temperature, the two-level quantile
threshold) must be the one a single process would compute on the whole global batch, and
identical on every rank, so that every rank samples the next step at the same temperature.
These helpers reduce sums and counts (never means of per-rank means: ranks may hold different
numbers of valid tokens or completions) and gather variable-length values. Outside an
initialised process group of more than one rank they return their input unchanged, so a
single process runs exactly the arithmetic it ran before.

Every rank must call the same helpers in the same order (they are collectives), including a
rank whose local batch contributes nothing.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def world_size() -> int:
    """Processes in the default group (1 without an initialised process group)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def is_distributed() -> bool:
    """True inside an initialised process group of more than one rank."""
    return world_size() > 1


def _comm_device() -> torch.device:
    """NCCL reduces CUDA tensors only; gloo (and mixed `cpu:gloo,cuda:nccl`) takes CPU ones."""
    if str(dist.get_backend()) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def global_sum(tensor: Tensor) -> Tensor:
    """Element-wise sum of `tensor` over all ranks, on the input's device and dtype.

    The input is not modified. In one process the input itself is returned.
    """
    if not is_distributed():
        return tensor
    work = tensor.detach().to(_comm_device(), copy=True)
    dist.all_reduce(work, op=dist.ReduceOp.SUM)
    return work.to(tensor.device)


def global_sum_count(total: float, count: float) -> tuple[float, float]:
    """(sum, count) of a masked mean over all ranks, reduced together in float64."""
    if not is_distributed():
        return total, count
    reduced = global_sum(torch.tensor([total, count], dtype=torch.float64))
    return float(reduced[0]), float(reduced[1])


def _global_maximum(value: float, dtype: torch.dtype) -> float:
    work = torch.tensor([value], dtype=dtype, device=_comm_device())
    dist.all_reduce(work, op=dist.ReduceOp.MAX)
    return work.item()


def global_max(value: int) -> int:
    """The largest of every rank's `value` (e.g. micro-batch counts, which must match)."""
    return int(_global_maximum(value, torch.long)) if is_distributed() else value


def global_fmax(value: float) -> float:
    """The largest of every rank's float `value` (e.g. a per-rank maximum gap)."""
    return float(_global_maximum(value, torch.float64)) if is_distributed() else value


def global_mean(total: float, count: float) -> float | None:
    """sum over ranks of `total` / sum over ranks of `count`; None when the count is 0."""
    total, count = global_sum_count(total, count)
    return total / count if count > 0 else None


def global_cat(values: Tensor) -> Tensor:
    """The 1-D concatenation of every rank's `values` (flattened) in rank order.

    Ranks may hold different numbers of values (zero included): the lengths are gathered
    first and every rank pads to the longest before the all-gather.
    """
    flat = values.detach().reshape(-1)
    if not is_distributed():
        return flat
    device = _comm_device()
    size = torch.tensor([flat.numel()], dtype=torch.long, device=device)
    sizes = [torch.zeros_like(size) for _ in range(world_size())]
    dist.all_gather(sizes, size)
    lengths = [int(s) for s in sizes]
    longest = max(lengths)
    if longest == 0:  # nothing anywhere (every rank knows it: no further collective)
        return flat
    padded = torch.zeros(longest, dtype=flat.dtype, device=device)
    padded[: flat.numel()] = flat.to(device)
    parts = [torch.empty_like(padded) for _ in lengths]
    dist.all_gather(parts, padded)
    return torch.cat([p[:n] for p, n in zip(parts, lengths, strict=True)]).to(values.device)
