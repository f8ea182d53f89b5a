"""Tiled (flash) attention against PyTorch's fused SDPA and dense attention: time and peak memory.

For N = 1k ... 8k (batch 1, 8 heads, d = 64, float32 by default) prints, measured in this one run:
the time of ``torch.nn.functional.scaled_dot_product_attention`` (a fused C++ flash kernel on
CPU), of dense attention (``attention_course.scaled_dot_product_attention``, which builds the
N × N matrices) and of ``attention_course.flash.tiled_attention``; the tiled / SDPA time ratio;
and the peak memory of dense and tiled attention (``peak_memory_bytes``).

Timings interleave the three implementations and keep each one's fastest run, so a burst of load
from other processes hurts all three alike; the ratios are what to compare across machines.

    .venv/bin/python benchmarks/bench_flash.py                     # the table
    .venv/bin/python benchmarks/bench_flash.py --sizes 4096 --repeats 9
    .venv/bin/python benchmarks/bench_flash.py --causal --block-q 256 --block-k 256
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from attention_course import scaled_dot_product_attention
from attention_course.flash import BLOCK_K, BLOCK_Q, tiled_attention
from attention_course.measure import peak_memory_bytes


def fastest_times(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Best wall time of each function over ``repeats`` rounds, the functions taking turns in each round."""
    for fn in fns.values():  # warm-up: first-call allocations, thread pool start
        fn()
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def implementations(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                    args: argparse.Namespace) -> dict[str, Callable[[], object]]:
    """The calls to time, each a function of no arguments."""
    fns: dict[str, Callable[[], object]] = {
        "sdpa": lambda: F.scaled_dot_product_attention(q, k, v, is_causal=args.causal),
        "tiled": lambda: tiled_attention(q, k, v, args.causal, args.block_q, args.block_k),
    }
    if not args.no_dense:
        fns["dense"] = lambda: scaled_dot_product_attention(q, k, v, causal=args.causal)
    return fns


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 4096, 8192], help="sequence lengths N")
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--d", type=int, default=64, help="head dimension")
    parser.add_argument("--block-q", type=int, default=BLOCK_Q)
    parser.add_argument("--block-k", type=int, default=BLOCK_K)
    parser.add_argument("--causal", action="store_true")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the course's budget: 2 cores)")
    parser.add_argument("--no-dense", action="store_true", help="skip dense attention (needs ~4 N² heads floats)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    print(f"batch 1, {args.heads} heads, d = {args.d}, float32, causal={args.causal}, "
          f"tiles {args.block_q} x {args.block_k}, {args.threads} threads, best of {args.repeats}")
    print(f"{'N':>6} {'SDPA ms':>9} {'dense ms':>9} {'tiled ms':>9} {'tiled/SDPA':>11} "
          f"{'dense MiB':>10} {'tiled MiB':>10} {'dense/tiled mem':>16}")
    for n in args.sizes:
        q, k, v = (torch.randn(1, args.heads, n, args.d) for _ in range(3))
        fns = implementations(q, k, v, args)
        times = fastest_times(fns, args.repeats if n < 8192 else max(2, args.repeats // 2))
        tiled_mib = peak_memory_bytes(fns["tiled"]) / 2**20
        dense_mib = peak_memory_bytes(fns["dense"]) / 2**20 if "dense" in fns else float("nan")
        dense_ms = times.get("dense", float("nan")) * 1e3
        print(f"{n:>6} {times['sdpa'] * 1e3:>9.1f} {dense_ms:>9.1f} {times['tiled'] * 1e3:>9.1f} "
              f"{times['tiled'] / times['sdpa']:>10.2f}x {dense_mib:>10.1f} {tiled_mib:>10.1f} "
              f"{dense_mib / tiled_mib:>15.0f}x", flush=True)


if __name__ == "__main__":
    main()
