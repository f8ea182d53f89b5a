"""Tiled (flash) attention against PyTorch's fused SDPA and dense attention: time, peak memory, backward, load.

In one run prints, for batch 1, 8 heads, d = 64, float32:

1. the forward pass for N = 1k ... 16k, causal and not: the time of
   ``torch.nn.functional.scaled_dot_product_attention`` (a fused C++ flash kernel on CPU), of
   ``attention_course.flash.tiled_attention`` and (N <= 4096) of dense attention
   (``attention_course.scaled_dot_product_attention``, which builds the N × N matrices); the
   tiled / SDPA ratio; the peak memory of tiled (and dense) attention (``peak_memory_bytes``);
2. the backward pass at N = 4096 (``--backward-size``): autograd's backward through
   ``flash_attention`` (``tiled_attention_backward``) against SDPA's, and the ratio;
3. with ``--load``, every forward ratio again while a second process keeps one core busy with a
   one-thread matrix-multiply loop (what a neighbour on a shared machine does), beside the quiet one.

Each time is the fastest of several runs of consecutive calls of one implementation
(``measure.best_seconds``, what lesson 11 times with), the implementations taking turns run by
run, so a burst of load from other processes hurts all alike; the ratios are what to compare across
machines. The machine's load average is in the header line.

The tiled pass runs its query tiles on a pool of Python threads, one per torch thread, each with
single-threaded operations (its calling thread's operations too). Right after a multi-threaded
PyTorch operation, OpenMP's idle thread keeps spinning on a core (the script first prints for how
long: ``measure.background_cpu_ms``), beside the tile threads. The column ``alternating`` times the
two call by call, each tiled call right after an SDPA call, and shows what that costs the short
calls; ``OMP_WAIT_POLICY=PASSIVE`` (set before Python starts) makes idle OpenMP threads sleep at once.

    .venv/bin/python benchmarks/bench_flash.py                         # the whole table
    .venv/bin/python benchmarks/bench_flash.py --load --threads 1      # one thread, quiet and loaded
    .venv/bin/python benchmarks/bench_flash.py --sizes 4096 --repeats 9 --block-q 256 --block-k 256
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_flash.py --sizes 1024 2048 4096
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from attention_course import scaled_dot_product_attention
from attention_course.flash import BLOCK_K, BLOCK_Q, flash_attention, tiled_attention
from attention_course.measure import background_cpu_ms, best_seconds, peak_memory_bytes

DENSE_MAX_N = 4096  # dense attention at N = 8192 needs 8 heads x 3 x N^2 floats = 6 GiB


def fastest_times(fns: dict[str, Callable[[], object]], repeats: int, rounds: int) -> dict[str, float]:
    """Best wall time of each function: in each of ``rounds`` rounds, every function runs ``repeats`` times in a row."""
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(rounds):
        for name, fn in fns.items():
            best[name] = min(best[name], best_seconds(fn, repeats))
    return best


def alternating_times(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Best wall time of each function over ``repeats`` rounds of one call each: every call follows another function's."""
    for fn in fns.values():  # warm-up: first-call allocations, thread pool start
        fn()
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def _busy_core(stop: multiprocessing.synchronize.Event) -> None:
    """The neighbour: one thread multiplying 256 x 256 matrices until told to stop."""
    torch.set_num_threads(1)
    a = torch.randn(256, 256)
    while not stop.is_set():
        for _ in range(50):
            a = torch.tanh(a @ a)


class OneCoreBusy:
    """Context manager: a second process keeps one core busy while the block runs."""

    def __enter__(self) -> OneCoreBusy:
        context = multiprocessing.get_context("spawn")
        self.stop = context.Event()
        self.process = context.Process(target=_busy_core, args=(self.stop,), daemon=True)
        self.process.start()
        time.sleep(1.0)  # let it start spinning
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.process.join(timeout=10)
        if self.process.is_alive():
            self.process.terminate()


def forward_times(
    n: int, causal: bool, args: argparse.Namespace, with_dense: bool, alternating: bool = False
) -> dict[str, float]:
    """Times (s) of SDPA, tiled (and dense) at length ``n``; with ``alternating``, of SDPA and tiled taking turns call by call."""
    generator = torch.Generator().manual_seed(n)
    q, k, v = (torch.randn(1, args.heads, n, args.d, generator=generator) for _ in range(3))
    fns: dict[str, Callable[[], object]] = {
        "sdpa": lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal),
        "tiled": lambda: tiled_attention(q, k, v, causal, args.block_q, args.block_k),
    }
    if with_dense:
        fns["dense"] = lambda: scaled_dot_product_attention(q, k, v, causal=causal)
    long = n > 4096
    if alternating:
        return alternating_times(fns, 2 if long else 2 * args.repeats)
    return fastest_times(fns, 2 if long else args.repeats, 2 if long else args.rounds)


def peak_mib(n: int, causal: bool, args: argparse.Namespace, with_dense: bool) -> tuple[float, float]:
    """Peak memory (MiB) of one tiled and one dense call (NaN for dense when skipped)."""
    q, k, v = (torch.randn(1, args.heads, n, args.d) for _ in range(3))
    tiled = peak_memory_bytes(lambda: tiled_attention(q, k, v, causal, args.block_q, args.block_k)) / 2**20
    dense = (
        peak_memory_bytes(lambda: scaled_dot_product_attention(q, k, v, causal=causal)) / 2**20
        if with_dense
        else float("nan")
    )
    return tiled, dense


def backward_times(n: int, causal: bool, args: argparse.Namespace) -> dict[str, float]:
    """Times (s) of the backward pass alone, through SDPA and through ``flash_attention``."""
    generator = torch.Generator().manual_seed(n + 1)
    q, k, v = (torch.randn(1, args.heads, n, args.d, generator=generator, requires_grad=True) for _ in range(3))
    grad_out = torch.randn(1, args.heads, n, args.d, generator=generator)
    out_sdpa = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    out_tiled = flash_attention(q, k, v, causal, args.block_q, args.block_k)
    fns: dict[str, Callable[[], object]] = {
        "sdpa": lambda: torch.autograd.grad(out_sdpa, (q, k, v), grad_out, retain_graph=True),
        "tiled": lambda: torch.autograd.grad(out_tiled, (q, k, v), grad_out, retain_graph=True),
    }
    return fastest_times(fns, 2, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[1024, 2048, 4096, 8192, 16384], help="sequence lengths N"
    )
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--d", type=int, default=64, help="head dimension")
    parser.add_argument("--block-q", type=int, default=BLOCK_Q)
    parser.add_argument("--block-k", type=int, default=BLOCK_K)
    parser.add_argument("--causal", choices=["both", "yes", "no"], default="both")
    parser.add_argument("--repeats", type=int, default=3, help="calls in a row per timed run (2 above N = 4096)")
    parser.add_argument(
        "--rounds", type=int, default=3, help="runs per implementation, taking turns (2 above N = 4096)"
    )
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the course's budget: 2 cores)")
    parser.add_argument("--no-dense", action="store_true", help="skip dense attention")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory columns")
    parser.add_argument("--backward-size", type=int, default=4096, help="N for the backward timing (0: skip)")
    parser.add_argument("--load", action="store_true", help="also time every forward with one core kept busy")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    causal_modes = {"both": (False, True), "yes": (True,), "no": (False,)}[args.causal]

    print(
        f"batch 1, {args.heads} heads, d = {args.d}, float32, tiles {args.block_q} x {args.block_k}, "
        f"{args.threads} threads, best of {args.rounds} runs of {args.repeats} calls; "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')};"
        f" load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    x = torch.randn(1, args.heads, 1024, args.d)
    spin = background_cpu_ms(lambda: F.scaled_dot_product_attention(x, x, x))
    print(f"OpenMP's idle threads after one SDPA call at N = 1024: {spin:.1f} ms of CPU in the next 50 ms")
    print(
        f"{'causal':>6} {'N':>6} {'SDPA ms':>9} {'tiled ms':>9} {'tiled/SDPA':>11} {'alternating':>12}"
        f" {'dense/SDPA':>11} {'tiled MiB':>10} {'dense MiB':>10}"
        + (f" {'loaded tiled/SDPA':>18}" if args.load else "")
    )
    for causal in causal_modes:
        for n in args.sizes:
            with_dense = not args.no_dense and n <= DENSE_MAX_N
            times = forward_times(n, causal, args, with_dense)
            turns = forward_times(n, causal, args, with_dense=False, alternating=True)
            dense = times["dense"] / times["sdpa"] if with_dense else float("nan")
            tiled_mib, dense_mib = (
                (float("nan"), float("nan")) if args.no_memory else peak_mib(n, causal, args, with_dense)
            )
            line = (
                f"{causal!s:>6} {n:>6} {times['sdpa'] * 1e3:>9.1f} {times['tiled'] * 1e3:>9.1f} "
                f"{times['tiled'] / times['sdpa']:>10.2f}x {turns['tiled'] / turns['sdpa']:>11.2f}x"
                f" {dense:>10.2f}x {tiled_mib:>10.1f} {dense_mib:>10.1f}"
            )
            if args.load:
                with OneCoreBusy():
                    loaded = forward_times(n, causal, args, with_dense=False)
                line += f" {loaded['tiled'] / loaded['sdpa']:>17.2f}x"
            print(line, flush=True)
    if args.backward_size:
        for causal in causal_modes:
            times = backward_times(args.backward_size, causal, args)
            print(
                f"backward, N = {args.backward_size}, causal={causal}: SDPA {times['sdpa'] * 1e3:.1f} ms, "
                f"tiled {times['tiled'] * 1e3:.1f} ms, tiled/SDPA {times['tiled'] / times['sdpa']:.2f}x",
                flush=True,
            )
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
