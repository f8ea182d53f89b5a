"""Measurement, in one place: wall-clock time, how time grows with size, peak memory, the
largest single allocation, and the CPU that idle threads burn. Lessons, benchmarks, tests and the grader all use these.

The two memory measurements see what PyTorch allocates in the calling thread only (the profiler's
and a dispatch mode's hooks are per thread), so they run the function with one torch thread:
code that would hand work to other threads (``tiled_attention``'s query tiles) then runs it here.
"""

from __future__ import annotations

import glob
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from torch import Tensor
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from ._environment import scoped_environ, scoped_torch_threads


def best_seconds(fn: Callable[[], object], repeats: int = 3) -> float:
    """Fastest wall-clock time of ``repeats`` calls of ``fn()``, after one untimed warm-up call.

    The fastest run is the one least disturbed by other programs; the warm-up pays for first-call
    costs (allocations, starting the thread pool) that later calls do not have.
    """
    fn()
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def background_cpu_ms(fn: Callable[[], object], window_s: float = 0.05) -> float:
    """CPU time (ms) the process's other threads use while the caller sleeps ``window_s`` right after ``fn()``.

    After a multi-threaded PyTorch operation, that is OpenMP's idle threads spinning, waiting for
    the next parallel region, on cores that other threads could use. Reads each thread's run time
    in ``/proc/self/task/*/schedstat`` (Linux); NaN where there is none. The median of three tries,
    after one untimed call.
    """
    caller = f"/proc/self/task/{threading.get_native_id()}/schedstat"
    if not os.path.exists(caller):
        return math.nan

    def run_ns() -> dict[str, int]:
        times = {}
        for path in glob.glob("/proc/self/task/*/schedstat"):
            try:
                with open(path) as stats:
                    times[path] = int(stats.read().split()[0])
            except OSError:  # the thread ended meanwhile
                pass
        return times

    fn()
    tries = []
    for _ in range(3):
        fn()
        before = run_ns()
        time.sleep(window_s)
        after = run_ns()
        tries.append(sum(ns - before.get(path, 0) for path, ns in after.items() if path != caller) / 1e6)
    return sorted(tries)[1]


def growth_exponent(sizes: Sequence[float], values: Sequence[float]) -> float:
    """p in ``value ~ size^p``: the slope of the least-squares line through the points on log-log axes."""
    if len(sizes) != len(values) or len(set(sizes)) < 2:
        raise ValueError(
            f"need two or more distinct sizes, each with one value; got sizes {list(sizes)} and {len(values)} values"
        )
    xs, ys = [math.log(s) for s in sizes], [math.log(v) for v in values]
    x_mean, y_mean = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - x_mean) * (y - y_mean) for x, y in zip(xs, ys, strict=True)) / sum((x - x_mean) ** 2 for x in xs)


def peak_memory_bytes(fn: Callable[[], object]) -> int:
    """Largest number of bytes that ``fn()`` held allocated at once, on top of what existed before.

    Replays the CPU allocator's allocation and free events recorded by ``torch.profiler`` (with
    ``profile_memory=True``) in time order and returns the highest running total. Counts every
    tensor ``fn`` allocates, including its result and buffers inside PyTorch's kernels; ``fn`` runs
    with one torch thread (see the module's docstring).

    Args:
        fn: a function of no arguments, e.g. ``lambda: tiled_attention(q, k, v)``.

    Returns:
        bytes, >= 0.
    """
    if not callable(fn):
        raise TypeError(f"fn must be a function of no arguments, got {type(fn).__name__}")
    # Kineto (the profiler's backend) otherwise prints timestamped start/stop lines on stderr,
    # which would land in notebook outputs; 6 keeps it quiet unless the caller chose a level.
    with (
        scoped_environ(KINETO_LOG_LEVEL=os.environ.get("KINETO_LOG_LEVEL", "6")),
        scoped_torch_threads(1),
        profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof,
    ):
        fn()
    events = [
        e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]" and e.device_type() == DeviceType.CPU
    ]
    live = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        live += event.nbytes()
        peak = max(peak, live)
    return peak


class _AllocationSpy(TorchDispatchMode):
    """Records the largest fresh tensor storage created by any ATen operator."""

    def __init__(self) -> None:
        super().__init__()
        self.largest_bytes = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage().data_ptr() for t in tree_leaves((args, kwargs)) if isinstance(t, Tensor)}
        for t in tree_leaves(out):
            if isinstance(t, Tensor) and t.untyped_storage().data_ptr() not in inputs:  # skip views, in-place
                self.largest_bytes = max(self.largest_bytes, t.untyped_storage().nbytes())
        return out


def largest_allocation(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, int]:
    """Run ``fn(*args, **kwargs)`` and measure the largest tensor any PyTorch operator allocated in it.

    Dense attention's largest tensor is the ``(..., N, N)`` score matrix; a sparse kernel's is a
    block's scores, ``(..., B, visited keys)``. Fused kernels (``torch.nn.functional.
    scaled_dot_product_attention``) hide their internal buffers, so this measures the course's own code.
    ``fn`` runs with one torch thread (see the module's docstring).

    Returns:
        ``(fn's result, size in bytes of the largest storage allocated)``.
    """
    with scoped_torch_threads(1), _AllocationSpy() as spy:
        result = fn(*args, **kwargs)
    return result, spy.largest_bytes
