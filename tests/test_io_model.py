"""The IO model's counts against the loops they summarise and the paper's asymptotics."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attention_course.flash import tiled_attention_steps
from attention_course.io_model import (
    IOCount,
    flash_attention_io,
    flash_block_sizes,
    standard_attention_io,
    tiled_attention_io,
    tiled_sram_numbers,
)


def simulate_algorithm_1(n: int, d: int, sram: int) -> IOCount:
    """Walk FlashAttention's Algorithm 1 (Dao et al., 2022) tile by tile and count each HBM access."""
    block_k = math.ceil(sram / (4 * d))
    block_q = min(block_k, d)
    reads, writes = 0, n * d + 2 * n  # line 2: O = 0, l = 0, m = -inf written to HBM
    for k_start in range(0, n, block_k):
        rows_k = min(block_k, n - k_start)
        reads += 2 * rows_k * d  # line 6: load K_j, V_j
        for q_start in range(0, n, block_q):
            rows_q = min(block_q, n - q_start)
            reads += 2 * rows_q * d + 2 * rows_q  # line 8: load Q_i, O_i, l_i, m_i
            writes += rows_q * d + 2 * rows_q  # lines 12-13: write O_i, l_i, m_i
    return IOCount(reads, writes)


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 300), d=st.integers(1, 64), sram=st.integers(1, 5000))
def test_flash_counts_equal_the_algorithm_walked_tile_by_tile(n: int, d: int, sram: int) -> None:
    assert flash_attention_io(n, d, sram) == simulate_algorithm_1(n, d, sram)


def test_standard_attention_is_theta_nd_plus_n_squared() -> None:
    # Algorithm 0: read Q, K; write S; read S; write P; read P, V; write O.
    n, d = 1024, 64
    count = standard_attention_io(n, d)
    assert count == IOCount(reads=2 * n * d + n * n + (n * n + n * d), writes=n * n + n * n + n * d)
    for n, d in [(128, 16), (4096, 64), (16384, 128)]:
        assert standard_attention_io(n, d).total == 4 * (n * d + n * n)


def test_flash_attention_is_theta_n2_d2_over_m() -> None:
    # Theorem 2 of the paper: Θ(N² d² / M) for d <= M <= N d. With M >= 4d there are T_c = ceil(4 N d / M)
    # key tiles, each costing about 3 N d accesses: about 12 N² d² / M, plus lower-order terms
    # (2 N per key tile for l and m, one pass over Q, K, V, O) that add at most ~35%. Below 4d a
    # key tile cannot shrink under one row, so T_c = N < 4 N d / M and the constant drops to >= 3.
    ratios = {}
    for n in (256, 1024, 4096):
        for d in (16, 64, 128):
            for sram in (d, 2 * d, 4 * d, 64 * d, n * d // 4, n * d):
                ratios[n, d, sram] = flash_attention_io(n, d, sram).total / (n * n * d * d / sram)
    assert 3 <= min(ratios.values()) and max(ratios.values()) <= 20, ratios
    assert min(r for (n, d, sram), r in ratios.items() if sram >= 4 * d) >= 12, ratios


def test_doubling_sram_halves_the_traffic_until_it_holds_everything() -> None:
    n, d = 4096, 64
    counts = [flash_attention_io(n, d, 2**p).total for p in range(10, 16)]
    for small, large in zip(counts, counts[1:], strict=False):
        assert 1.8 < small / large <= 2.0
    # With M = 4 N d everything is one tile: one pass over Q, K, V, O.
    assert flash_attention_io(n, d, 4 * n * d).total == 2 * n * d + 2 * n * d + 2 * n + n * d + 2 * n + n * d + 2 * n


def test_flash_moves_fewer_numbers_than_standard_attention_when_m_exceeds_3_d_squared() -> None:
    # A100: 192 KB of SRAM per SM, ~100 KB usable for the tiles: M = 24576 float32 numbers (paper, §3.2).
    for n in (1024, 4096, 16384):
        assert flash_attention_io(n, 64, 24576).total < standard_attention_io(n, 64).total
    # In general ~12 N² d² / M against ~4 N²: Algorithm 1 wins once M > 3 d² (d = 128 needs M > 49152).
    n = 16384
    for d in (32, 64, 128):
        for sram in (d * d, 2 * d * d, 4 * d * d, 8 * d * d):
            assert (flash_attention_io(n, d, sram).total < standard_attention_io(n, d).total) == (sram > 3 * d * d)


def test_block_sizes_follow_the_paper() -> None:
    assert flash_block_sizes(64, 24576) == (64, 96)
    assert flash_block_sizes(64, 1000) == (4, 4)
    assert flash_block_sizes(1, 1) == (1, 1)


@pytest.mark.parametrize(
    ("n", "block_q", "block_k", "causal"), [(23, 5, 7, False), (23, 5, 7, True), (30, 8, 3, True), (16, 16, 16, True)]
)
def test_tiled_counts_match_the_tiles_tiled_attention_visits(n: int, block_q: int, block_k: int, causal: bool) -> None:
    d = 4
    x = torch.zeros(n, d)
    steps = tiled_attention_steps(x, x, x, causal, block_q, block_k)
    query_tiles = {(s.q_start, s.q_stop) for s in steps}
    reads = sum((stop - start) * d for start, stop in query_tiles)  # each query tile read once
    reads += sum(2 * (s.k_stop - s.k_start) * d for s in steps)  # K_j and V_j per visited tile
    assert tiled_attention_io(n, d, block_q, block_k, causal) == IOCount(reads, writes=n * d + n)


def test_larger_query_tiles_mean_fewer_passes_over_k_and_v() -> None:
    n, d = 4096, 64
    assert tiled_attention_io(n, d, 64, 64).reads == n * d + 2 * n * d * (n // 64)
    assert tiled_attention_io(n, d, 256, 64).reads == n * d + 2 * n * d * (n // 256)
    assert tiled_attention_io(n, d, 256, 64) == tiled_attention_io(n, d, 256, 512)  # block_k: SRAM, not traffic
    causal, full = tiled_attention_io(n, d, 64, 64, causal=True), tiled_attention_io(n, d, 64, 64)
    assert 0.5 < (causal.reads - n * d) / (full.reads - n * d) < 0.52  # about half the tiles are skipped


def test_sram_of_one_tile() -> None:
    assert tiled_sram_numbers(64, 128, 64) == 2 * 128 * 64 + 2 * 64 * 64 + 128 * 64 + 2 * 128


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: standard_attention_io(0, 64), ValueError, "n must be >= 1, got 0"),
        (lambda: standard_attention_io(10, 6.0), TypeError, "d must be an int, got float"),
        (lambda: flash_attention_io(10, 8, -1), ValueError, "sram must be >= 1, got -1"),
        (lambda: tiled_attention_io(10, 8, 0, 4), ValueError, "block_q must be >= 1, got 0"),
        (lambda: tiled_sram_numbers(8, 4, True), TypeError, "block_k must be an int, got bool"),
    ],
)
def test_bad_inputs_are_named(call, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        call()


def test_lesson_11_claims_with_consistent_units() -> None:
    # Lesson 11 counts SRAM and traffic in the same unit (float16 numbers, 2 bytes each). With 100 KB
    # of an A100 SM's on-chip memory the model's saving is about M / 3d^2 = 4x at large N; with all
    # 192 KB about 7x. (Counting SRAM in float32 numbers against float16 bytes would halve M: ~2x.)
    d, n = 64, 4096
    sram_100k, sram_192k = 100 * 1024 // 2, 192 * 1024 // 2
    ratio_100k = standard_attention_io(n, d).total / flash_attention_io(n, d, sram_100k).total
    ratio_192k = standard_attention_io(n, d).total / flash_attention_io(n, d, sram_192k).total
    assert 3.5 < ratio_100k < 4.5 and 6.5 < ratio_192k < 7.5
    assert standard_attention_io(n, d).total / flash_attention_io(n, d, 100 * 1024 // 4).total < 2.5


@pytest.mark.parametrize("block_q", [64, 128, 256])
def test_fa2_arithmetic_intensity_is_about_the_query_tile_size(block_q: int) -> None:
    # 4 N^2 d FLOPs over 2 bytes per number moved: K and V are re-read once per query tile, so the
    # FLOPs per byte approach B_q (within 10% at N = 4096, where the O(Nd) terms still count).
    n, d = 4096, 64
    intensity = 4 * n * n * d / (2 * tiled_attention_io(n, d, block_q, 64).total)
    assert block_q * 0.9 < intensity <= block_q
