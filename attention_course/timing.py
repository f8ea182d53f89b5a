"""Measuring how time grows: the lessons' timing experiments and the benchmarks share these."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence


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


def growth_exponent(sizes: Sequence[float], values: Sequence[float]) -> float:
    """p in ``value ~ size^p``: the slope of the least-squares line through the points on log-log axes."""
    if len(sizes) != len(values) or len(set(sizes)) < 2:
        raise ValueError(f"need two or more distinct sizes, each with one value; got sizes {list(sizes)} "
                         f"and {len(values)} values")
    xs, ys = [math.log(s) for s in sizes], [math.log(v) for v in values]
    x_mean, y_mean = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - x_mean) * (y - y_mean) for x, y in zip(xs, ys, strict=True)) / sum((x - x_mean) ** 2 for x in xs)
