"""Sliding-window attention that skips the work vs dense attention, N = 1k ... 16k, in one run.

    .venv/bin/python benchmarks/bench_sparse.py [--window 256 --lengths 1024 2048 ... --causal]

Shapes: batch 1, 8 heads, d_head 64, float32 (change with --heads/--d-head). For each N it times

- dense SDPA: ``torch.nn.functional.scaled_dot_product_attention`` over all N² pairs (its fused
  CPU flash kernel; with ``--causal``, ``is_causal=True``, which already skips the upper triangle);
- dense + mask: the same call with the boolean ``sliding_window_mask(N, w)``: same answer as the
  sparse paths, still N² work;
- sliding window: ``attention_course.sparse.sliding_window_attention``, O(N (B + 2w)) work: each
  query block's band of keys goes to the fused kernel, with the band's corners masked;
- block-sparse: ``block_sparse_attention`` over the window's tile layout (precomputed, as a kernel
  would), visiting only those tiles;

checks that the sparse outputs equal dense + mask, prints each time relative to dense SDPA, and
fits the growth exponent p of time ~ N^p by least squares on log-log axes.

Each time is the best of ``--repeats`` runs, wall-clock; CPU seconds of this process are printed
too, because on a machine shared with other jobs they move far less than wall-clock time does.
Compare the ratios; absolute times depend on the machine.

OpenMP threads wait passively (``OMP_WAIT_POLICY=PASSIVE`` unless already set): the sparse paths
make one or a few operator calls per block, and on a machine shared with other jobs a spinning
OpenMP thread that waits for its descheduled partner at each of them can make them several times
slower. Every method gets the same setting. (On a quiet machine the policy hardly matters: the
sliding window measured 0.123x dense SDPA at N = 8192 with ``OMP_WAIT_POLICY=ACTIVE``.)
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts its OpenMP runtime

import argparse  # noqa: E402
import math  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from attention_course.measure import growth_exponent  # noqa: E402
from attention_course.sparse import (  # noqa: E402
    block_sparse_attention,
    sliding_window_attention,
    sliding_window_mask,
    sliding_window_pattern,
)

METHODS = ("dense SDPA", "dense + mask", "sliding window", "block-sparse")
TARGET_EXPONENT, TARGET_RATIO, TARGET_N = 1.15, 0.15, 8192


def best_time(fn: Callable[[], torch.Tensor], repeats: int) -> tuple[float, float, torch.Tensor]:
    """Best wall-clock and best CPU seconds over ``repeats`` calls (after one warm-up call)."""
    out = fn()
    wall, cpu = math.inf, math.inf
    for _ in range(repeats):
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        out = fn()
        wall, cpu = min(wall, time.perf_counter() - start_wall), min(cpu, time.process_time() - start_cpu)
    return wall, cpu, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 2048, 4096, 8192, 16384])
    parser.add_argument("--window", type=int, default=256, help="w: keys with |i - j| <= w are attended")
    parser.add_argument("--block-size", type=int, default=64, help="query block of the sparse paths")
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--d-head", type=int, default=64)
    parser.add_argument("--causal", action="store_true", help="causal window, vs causal dense SDPA")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the course machines have 2 cores)")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    print(
        f"batch 1, {args.heads} heads, d_head {args.d_head}, float32, window w={args.window} "
        f"({'causal' if args.causal else 'both sides'}), block {args.block_size}; torch {torch.__version__}, "
        f"{torch.get_num_threads()} thread(s), OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}, "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    header = (
        f"{'N':>6} | " + " | ".join(f"{m:>14}" for m in METHODS) + " | sparse/dense SDPA (wall, cpu) | "
        "max |sparse - dense+mask|"
    )
    print(header)
    print("-" * len(header))
    walls: dict[str, list[float]] = {m: [] for m in METHODS}
    cpus: dict[str, list[float]] = {m: [] for m in METHODS}
    for n in args.lengths:
        q, k, v = (torch.randn(1, args.heads, n, args.d_head, generator=generator) for _ in range(3))
        mask = sliding_window_mask(n, args.window, args.causal)
        pattern = sliding_window_pattern(n, args.window, args.causal)
        layout = pattern.layout(args.block_size)
        runs = {
            "dense SDPA": lambda q=q, k=k, v=v: F.scaled_dot_product_attention(q, k, v, is_causal=args.causal),
            "dense + mask": lambda q=q, k=k, v=v, mask=mask: F.scaled_dot_product_attention(q, k, v, attn_mask=mask),
            "sliding window": lambda q=q, k=k, v=v: sliding_window_attention(
                q, k, v, args.window, causal=args.causal, block_size=args.block_size
            ),
            "block-sparse": lambda q=q, k=k, v=v, layout=layout, pattern=pattern: block_sparse_attention(
                q, k, v, layout, args.block_size, mask_fn=pattern.allows
            ),
        }
        outputs = {}
        with torch.inference_mode():
            for method, fn in runs.items():
                wall, cpu, outputs[method] = best_time(fn, args.repeats)
                walls[method].append(wall)
                cpus[method].append(cpu)
        error = max(
            float((outputs[m] - outputs["dense + mask"]).abs().max()) for m in ("sliding window", "block-sparse")
        )
        ratio_wall = walls["sliding window"][-1] / walls["dense SDPA"][-1]
        ratio_cpu = cpus["sliding window"][-1] / cpus["dense SDPA"][-1]
        print(
            f"{n:>6} | "
            + " | ".join(f"{walls[m][-1]:>12.3f} s" for m in METHODS)
            + f" | {ratio_wall:>10.3f} x, {ratio_cpu:>5.3f} x{'':>8} | {error:.1e}"
        )
        del mask, layout, outputs

    print("-" * len(header))
    print("growth exponent p (time ~ N^p), wall-clock / CPU time:")
    for method in METHODS:
        print(
            f"  {method:>14}: {growth_exponent(args.lengths, walls[method]):.2f} / "
            f"{growth_exponent(args.lengths, cpus[method]):.2f}"
        )
    print(
        "sliding window / dense SDPA time, per N (wall / cpu): "
        + ", ".join(
            f"{n}: {w_s / w_d:.3f} / {c_s / c_d:.3f}"
            for n, w_s, w_d, c_s, c_d in zip(
                args.lengths,
                walls["sliding window"],
                walls["dense SDPA"],
                cpus["sliding window"],
                cpus["dense SDPA"],
                strict=True,
            )
        )
    )
    if TARGET_N in args.lengths and args.window == 256:
        at = args.lengths.index(TARGET_N)
        exponent = growth_exponent(args.lengths, walls["sliding window"])
        ratio = walls["sliding window"][at] / walls["dense SDPA"][at]
        verdict = "met" if exponent <= TARGET_EXPONENT and ratio <= TARGET_RATIO else "NOT met"
        print(
            f"target (exponent <= {TARGET_EXPONENT}, <= {TARGET_RATIO} x dense SDPA at N={TARGET_N}, w=256, "
            f"wall-clock): exponent {exponent:.2f}, ratio {ratio:.3f}: {verdict}"
        )


if __name__ == "__main__":
    main()
