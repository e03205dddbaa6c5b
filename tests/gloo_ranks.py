"""Start the ranks of a CPU (gloo) multi-process run as torchrun would, and collect results.

Each rank is a spawned process running `worker(*args)` with MASTER_ADDR/PORT, WORLD_SIZE,
RANK, LOCAL_RANK and NODE_RANK set; the worker writes its results to `result_path(rank)` with
`torch.save` (a dict; an "error" entry holds a traceback). A rank that hangs is killed.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

KEYS = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK", "NODE_RANK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ranks(
    worker: Callable[..., None],
    args: tuple[Any, ...],
    result_path: Callable[[int], Path],
    world: int = 2,
    timeout_s: float = 150,
    check_exit: bool = True,
) -> list[dict]:
    """Run `world` ranks of `worker(*args)`; their result dicts, each checked for an error
    (and, with `check_exit`, every rank's exit code for 0)."""
    ctx = mp.get_context("spawn")
    port, procs = free_port(), []
    saved = {k: os.environ.get(k) for k in KEYS}
    try:
        for rank in range(world):
            os.environ.update(
                MASTER_ADDR="127.0.0.1",
                MASTER_PORT=str(port),
                WORLD_SIZE=str(world),
                RANK=str(rank),
                LOCAL_RANK=str(rank),
                NODE_RANK="0",
            )
            proc = ctx.Process(target=worker, args=args)
            proc.start()  # the child inherits this environment
            procs.append(proc)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    for proc in procs:
        proc.join(timeout_s)
    for proc in procs:
        if proc.is_alive():
            proc.kill()
            proc.join(5)
    results = []
    for rank in range(world):
        path = result_path(rank)
        assert path.is_file(), f"rank {rank} hung or died (exit code {procs[rank].exitcode})"
        results.append(torch.load(path, weights_only=False))
        assert "error" not in results[-1], f"rank {rank} failed:\n{results[-1]['error']}"
    if check_exit:
        assert [p.exitcode for p in procs] == [0] * world
    return results
