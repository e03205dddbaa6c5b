"""Shared helpers of the benchmarks in this folder: FLOP counts, timing, memory, tables.

Scripts run as `python experiments/bench/<script>.py` have this folder on `sys.path` (Python
puts the script's folder first), so they import these as `from common import ...`.
"""

from __future__ import annotations

import importlib
import multiprocessing as mp
import os
import resource
import statistics
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import torch

__all__ = [
    "MODELS",
    "format_bytes",
    "forward_flops_per_token",
    "matmul_flops_per_second",
    "median",
    "median_times",
    "peak_memory",
    "peak_rss_during",
    "print_table",
    "sequence_forward_flops",
    "train_flops_per_token",
]


#: `tempo.models.tiny.tiny_config` keyword arguments of the benchmarked model sizes: "1m" is the
#: embedded default (~0.8M parameters), "10m" a ~10M-parameter model of the same family.
MODELS: dict[str, dict[str, int]] = {
    "1m": {},
    "10m": {
        "hidden_size": 384,
        "num_layers": 6,
        "num_heads": 6,
        "num_kv_heads": 2,
        "intermediate_size": 1152,
    },
}


# ---------------------------------------------------------------------------- FLOP counts
def _text_config(config: Any) -> Any:
    """The decoder part of a (possibly multimodal) HF config."""
    getter = getattr(config, "get_text_config", None)
    return getter() if callable(getter) else config


def _flop_terms(config: Any) -> tuple[float, float]:
    """(FLOPs per token independent of context, FLOPs per token per context position)."""
    cfg = _text_config(config)
    hidden = cfg.hidden_size
    heads = cfg.num_attention_heads
    kv_heads = getattr(cfg, "num_key_value_heads", None) or heads
    head_dim = getattr(cfg, "head_dim", None) or hidden // heads
    layers = cfg.num_hidden_layers
    inter = cfg.intermediate_size
    per_layer = (
        hidden * heads * head_dim  # q projection
        + 2 * hidden * kv_heads * head_dim  # k and v projections
        + heads * head_dim * hidden  # o projection
        + 3 * hidden * inter  # gate, up and down of the MLP
    )
    multiply_adds = layers * per_layer + hidden * cfg.vocab_size  # + the LM head
    attention = 2 * 2 * layers * heads * head_dim  # scores q.k and the weighted sum of v
    return 2.0 * multiply_adds, float(attention)


def forward_flops_per_token(config: Any, context: int) -> float:
    """Forward FLOPs of one token that attends to `context` positions, for a Qwen2/Llama-like
    HF decoder config.

    Convention (matmul FLOPs only; norms, softmax, rotary embeddings, activations and the
    embedding lookup are ignored): 2 x the multiply-adds of the q, k, v, o projections, the
    three MLP matrices and the LM head, plus 2 x 2 x layers x heads x head_dim x context for
    the attention score and value matmuls. Grouped-query attention shrinks only k and v.
    """
    fixed, per_context = _flop_terms(config)
    return fixed + per_context * context


def train_flops_per_token(config: Any, context: int) -> float:
    """Training FLOPs of one token: forward + backward = 3 x forward (the usual convention)."""
    return 3.0 * forward_flops_per_token(config, context)


def sequence_forward_flops(config: Any, length: float, start: float = 0.0) -> float:
    """Forward FLOPs of `length` consecutive tokens whose first attends to `start` positions
    (token i attends to start + i), e.g. a prompt (start 0) or a KV-cached completion
    (start = prompt length). Closed form of the sum of `forward_flops_per_token`; `length`
    may be a mean (fractional)."""
    fixed, per_context = _flop_terms(config)
    if length <= 0:
        return 0.0
    return length * fixed + per_context * (length * start + length * (length - 1) / 2.0)


def matmul_flops_per_second(
    size: int = 1024,
    dtype: torch.dtype = torch.float32,
    repeats: int = 5,
    device: str | torch.device = "cpu",
) -> float:
    """Measured throughput (FLOPs/s) of a square `size` matmul: 2 size^3 FLOPs over the
    median wall time of `repeats` runs after one warm-up. It is the peak-ish reference that
    a model's achieved FLOPs/s is compared against, measured on the same machine and threads.
    """
    device = torch.device(device)
    a = torch.randn(size, size, dtype=dtype, device=device)
    b = torch.randn(size, size, dtype=dtype, device=device)
    out = torch.empty(size, size, dtype=dtype, device=device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    torch.matmul(a, b, out=out)  # warm-up: allocations, kernel selection, thread pool
    sync()
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        torch.matmul(a, b, out=out)
        sync()
        times.append(time.perf_counter() - start)
    return 2.0 * size**3 / statistics.median(times)


# ---------------------------------------------------------------------------- timing
def median(xs: Sequence[float]) -> float:
    """Median of a non-empty sequence (NaN when empty, so a table still prints)."""
    return statistics.median(xs) if len(xs) else float("nan")


def median_times(
    fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 1
) -> dict[str, list[float]]:
    """Wall seconds of each run of each function: `warmup` untimed rounds, then `repeats`
    timed rounds. Rounds are interleaved (every function once per round, round-robin), so
    slow phases of a shared, noisy machine hit every case alike. Take the median of each list.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


# ---------------------------------------------------------------------------- memory
def _rss_bytes() -> int:
    """Current resident set size of this process (Linux /proc; ru_maxrss elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return _max_rss_bytes()


def _max_rss_bytes() -> int:
    """Peak resident set size of this process so far (ru_maxrss: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if os.uname().sysname == "Darwin" else peak * 1024


def _peak_rss_bytes() -> int:
    """VmHWM: this process's peak resident set since start or the last `_reset_peak_rss`."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise OSError("no VmHWM in /proc/self/status")


def peak_rss_during(fn: Callable[[], Any]) -> tuple[Any, int]:
    """(fn(), the peak resident memory growth while it ran, in bytes).

    On Linux the kernel's high-water mark is reset first (`/proc/self/clear_refs`), so
    earlier peaks (imports, building the model) do not hide the call's own; elsewhere it
    falls back to ru_maxrss, which they can. Call it in a fresh process (`peak_memory`) so
    that memory freed by earlier work and reused by the allocator is not counted as free.
    """
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        peak = _peak_rss_bytes
    except OSError:
        peak = _max_rss_bytes
    base = _rss_bytes()
    value = fn()
    return value, max(0, peak() - base)


def _resolve(target: str | Callable[..., Any]) -> Callable[..., Any]:
    if callable(target):
        return target
    module, sep, name = target.partition(":")
    if not sep or not module or not name:
        raise ValueError(f"expected 'module:function' or a callable, got {target!r}")
    return getattr(importlib.import_module(module), name)


def _child(conn, target, args: tuple, kwargs: dict, device: str) -> None:
    """Entry point of the measuring child process: sends ("ok", value, bytes) or ("error", text)."""
    try:
        fn = _resolve(target)
        cuda_base = 0
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
            cuda_base = torch.cuda.memory_allocated()
        base = _rss_bytes()
        value = fn(*args, **kwargs)
        # "auto": CUDA when the call used it (nothing touched CUDA before it, so its peak is
        # the call's), else host RSS.
        if device == "cuda" or (device == "auto" and torch.cuda.is_initialized()):
            torch.cuda.synchronize()
            grown = torch.cuda.max_memory_allocated() - cuda_base
        else:
            grown = _max_rss_bytes() - base
        conn.send(("ok", value, max(0, int(grown))))
    except BaseException as err:  # report everything, including SystemExit, to the parent
        text = "".join(traceback.format_exception(type(err), err, err.__traceback__))
        try:
            conn.send(("error", text))
        except Exception:  # the value or the pipe itself failed; the exit code says the rest
            pass
    finally:
        conn.close()


def peak_memory(
    fn_path: str | Callable[..., Any],
    *args: Any,
    timeout: float = 600.0,
    device: str = "auto",
    **kwargs: Any,
) -> tuple[Any, int]:
    """Run `fn_path` ("module:function", or a picklable module-level callable) with `args` and
    `kwargs` in a fresh spawned process and return (its return value, peak memory growth).

    Growth is measured in the child, so no state is shared with the parent or other cases:
    ru_maxrss after the call minus the RSS just before it (imports done by loading the module
    are excluded); with `device` "cuda" (or "auto" when the call used CUDA),
    `torch.cuda.max_memory_allocated` over the call instead. The child is not a daemon, so the
    function may start processes of its own. Raises RuntimeError with the child's traceback
    when it fails or dies, TimeoutError (after killing it) when it runs past `timeout` seconds.
    """
    ctx = mp.get_context("spawn")
    parent_end, child_end = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child_end, fn_path, args, kwargs, device), daemon=False)
    proc.start()
    child_end.close()
    name = fn_path if isinstance(fn_path, str) else getattr(fn_path, "__qualname__", fn_path)
    try:
        deadline = time.monotonic() + timeout
        message = None
        while message is None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{name} ran past {timeout:.0f} s in its child process")
            if parent_end.poll(min(left, 1.0)):
                try:
                    message = parent_end.recv()
                except EOFError:  # the child closed the pipe without a message
                    break
            elif not proc.is_alive():
                if parent_end.poll(0):  # it sent the message just before exiting
                    continue
                break
        proc.join(timeout=30)
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join()
        parent_end.close()
    if message is None:
        raise RuntimeError(f"{name} died in its child process (exit code {proc.exitcode})")
    if message[0] == "error":
        raise RuntimeError(f"{name} failed in its child process:\n{message[1]}")
    _, value, grown = message
    return value, grown


# ---------------------------------------------------------------------------- output
def format_bytes(n: float) -> str:
    """1536 -> '1.5 KiB' (binary units; negative values keep their sign)."""
    if n != n:  # NaN
        return "n/a"
    size, sign = abs(float(n)), "-" if n < 0 else ""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{sign}{size:.0f} {unit}" if unit == "B" else f"{sign}{size:.1f} {unit}"
        size /= 1024
    return f"{sign}{size:.1f} TiB"  # unreachable; keeps type checkers content


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if value != value:
            return "n/a"
        if value == 0 or 0.01 <= abs(value) < 1e6:
            return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
        return f"{value:.3g}"
    return "" if value is None else str(value)


def print_table(rows: list[dict], columns: list[str]) -> None:
    """Print `rows` as an aligned plain-text table of `columns` (missing cells are blank).
    Text is left-aligned, numbers right-aligned; floats get 3 significant digits."""
    cells = [[_cell(row.get(col)) for col in columns] for row in rows]
    widths = [max([len(col), *(len(r[i]) for r in cells)]) for i, col in enumerate(columns)]
    numeric = [
        all(isinstance(row.get(col), (int, float)) for row in rows if row.get(col) is not None)
        for col in columns
    ]

    def line(values: list[str]) -> str:
        parts = [
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        ]
        return "  ".join(parts).rstrip()

    print(line(list(columns)))
    print(line(["-" * w for w in widths]))
    for r in cells:
        print(line(r))
