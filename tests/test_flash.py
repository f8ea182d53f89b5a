"""Tiled (flash) attention against PyTorch's scaled_dot_product_attention, autograd and its own memory bound."""

from __future__ import annotations

import math
import os
import threading
import time

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from attention_course import flash, scaled_dot_product_attention, softmax
from attention_course.flash import (
    flash_attention,
    flash_decoding,
    merge_attention_partials,
    online_softmax,
    tiled_attention,
    tiled_attention_backward,
    tiled_attention_steps,
    visited_tiles,
)
from attention_course.measure import peak_memory_bytes

# float32: the tiled path sums the same terms in another order and rescales partial sums by
# e^{m - m'}; each step costs a few ulp (1.2e-7) of values of order 1, and a row has at most a
# few hundred terms here, so errors stay below ~1e-6 (observed ~6e-7). 1e-5 leaves room, and
# is still 100x smaller than what any of the bugs in lesson 11's catalogue produces.
ATOL = RTOL = 1e-5


def dense_lse(q: torch.Tensor, k: torch.Tensor, causal: bool) -> torch.Tensor:
    """log-sum-exp of the scaled (and causally masked) scores, through the dense N×N matrix."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if causal:
        allowed = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool).tril()
        scores = scores.masked_fill(~allowed, float("-inf"))
    return torch.logsumexp(scores, dim=-1)


@st.composite
def attention_problems(draw: st.DrawFn) -> dict:
    batch = draw(st.lists(st.integers(1, 3), min_size=0, max_size=2))
    n_queries, n_keys = draw(st.integers(1, 70)), draw(st.integers(1, 70))
    d_k, d_v = draw(st.integers(1, 16)), draw(st.integers(1, 16))
    seed = draw(st.integers(0, 2**16))
    generator = torch.Generator().manual_seed(seed)
    q = torch.randn(*batch, n_queries, d_k, generator=generator) * draw(st.sampled_from([0.5, 1.0, 4.0]))
    k = torch.randn(*batch, n_keys, d_k, generator=generator)
    v = torch.randn(*batch, n_keys, d_v, generator=generator)
    return dict(
        q=q, k=k, v=v, causal=draw(st.booleans()), block_q=draw(st.integers(1, 40)), block_k=draw(st.integers(1, 40))
    )


@settings(max_examples=150, deadline=None)
@given(attention_problems())
def test_tiled_equals_dense_attention(problem: dict) -> None:
    q, k, v, causal = problem["q"], problem["k"], problem["v"], problem["causal"]
    out, lse = tiled_attention(q, k, v, causal, problem["block_q"], problem["block_k"])
    expected = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    torch.testing.assert_close(out, expected, atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(lse, dense_lse(q, k, causal), atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("causal", [False, True])
def test_default_blocks_on_a_long_ragged_sequence(causal: bool) -> None:
    # N = 1100 is not a multiple of the default tile sizes (BLOCK_Q, BLOCK_K): the last tiles are short.
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, 1100, 32, generator=generator) for _ in range(3))
    out, lse = tiled_attention(q, k, v, causal=causal)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, is_causal=causal), atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(lse, dense_lse(q, k, causal), atol=ATOL, rtol=RTOL)


def test_huge_scores_do_not_overflow() -> None:
    # Scores of several hundred: e^s overflows float32 (max ~e^88) unless every exponent is
    # taken relative to the running maximum. The keys are sorted so that the maximum keeps
    # rising from tile to tile (every tile rescales the state). Compared with float64 (1e-4:
    # rounding of scores of magnitude 1000 in float32 is ~1e-4 absolute before the softmax).
    generator = torch.Generator().manual_seed(1)
    q = torch.randn(3, 40, 8, generator=generator, dtype=torch.float64) * 30
    k = torch.randn(3, 50, 8, generator=generator, dtype=torch.float64) * 30
    k = k[:, k[0].norm(dim=-1).argsort()]
    v = torch.randn(3, 50, 5, generator=generator, dtype=torch.float64)
    out, lse = tiled_attention(q.float(), k.float(), v.float(), block_q=16, block_k=7)
    assert torch.isfinite(out).all() and torch.isfinite(lse).all()
    torch.testing.assert_close(out.double(), F.scaled_dot_product_attention(q, k, v), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(lse.double(), dense_lse(q, k, False), atol=1e-3, rtol=1e-5)


def test_leading_dimensions_broadcast() -> None:
    generator = torch.Generator().manual_seed(2)
    q = torch.randn(2, 3, 9, 4, generator=generator)
    k = torch.randn(1, 3, 11, 4, generator=generator)
    v = torch.randn(11, 6, generator=generator)
    out, lse = tiled_attention(q, k, v, block_q=4, block_k=4)
    assert out.shape == (2, 3, 9, 6) and lse.shape == (2, 3, 9)
    torch.testing.assert_close(out, scaled_dot_product_attention(q, k, v), atol=ATOL, rtol=RTOL)


def test_inputs_are_not_modified() -> None:
    generator = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(2, 20, 8, generator=generator) for _ in range(3))
    copies = [t.clone() for t in (q, k, v)]
    tiled_attention(q, k, v, causal=True, block_q=8, block_k=8)
    for original, copy in zip((q, k, v), copies, strict=True):
        assert torch.equal(original, copy)


@settings(max_examples=100, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 12), min_size=1, max_size=6),
    rows=st.integers(1, 4),
    spread=st.sampled_from([1.0, 10.0, 100.0]),
    seed=st.integers(0, 2**16),
)
def test_online_softmax_equals_softmax_of_the_concatenation(
    sizes: list[int], rows: int, spread: float, seed: int
) -> None:
    generator = torch.Generator().manual_seed(seed)
    blocks = [torch.randn(rows, n, generator=generator) * spread for n in sizes]
    expected = torch.softmax(torch.cat(blocks, dim=-1), dim=-1)
    torch.testing.assert_close(online_softmax(blocks), expected, atol=ATOL, rtol=RTOL)


def test_online_softmax_rising_maximum_and_masked_rows() -> None:
    # Row 0: the maximum rises in every block (every step must rescale the sum).
    # Row 1: every score is -inf (fully masked): zero weights, as the core softmax gives.
    # Row 2: -inf in the first block only (the running max starts at -inf, then becomes finite).
    ninf = float("-inf")
    blocks = [
        torch.tensor([[0.0, 1.0], [ninf, ninf], [ninf, ninf]]),
        torch.tensor([[2.0], [ninf], [3.0]]),
        torch.tensor([[5.0, 4.0, 9.0], [ninf, ninf, ninf], [1.0, 2.0, 0.0]]),
    ]
    result = online_softmax(blocks)
    torch.testing.assert_close(result, softmax(torch.cat(blocks, dim=-1)), atol=ATOL, rtol=RTOL)
    assert torch.equal(result[1], torch.zeros(6))


@settings(max_examples=60, deadline=None)
@given(n_keys=st.integers(2, 60), cut=st.floats(0, 1), seed=st.integers(0, 2**16))
def test_merging_two_halves_of_the_keys_gives_attention_over_all(n_keys: int, cut: float, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    q = torch.randn(2, 12, 8, generator=generator)
    k, v = torch.randn(2, n_keys, 8, generator=generator), torch.randn(2, n_keys, 3, generator=generator)
    split = int(cut * n_keys)  # may leave one side empty: its lse is -inf, its weight 0
    part_a = tiled_attention(q, k[:, :split], v[:, :split], block_q=5, block_k=5)
    part_b = tiled_attention(q, k[:, split:], v[:, split:], block_q=5, block_k=5)
    out, lse = merge_attention_partials(*part_a, *part_b)
    expected_out, expected_lse = tiled_attention(q, k, v)
    torch.testing.assert_close(out, expected_out, atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(lse, expected_lse, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("causal", [False, True])
def test_tiled_backward_matches_autograd(causal: bool) -> None:
    # float64, so that the comparison is against autograd through the dense formula at 1e-10.
    generator = torch.Generator().manual_seed(4)
    q, k, v = (torch.randn(2, 3, n, 8, generator=generator, dtype=torch.float64) for n in (29, 29, 29))
    grad_out = torch.randn(2, 3, 29, 8, generator=generator, dtype=torch.float64)
    grads = []
    for attend in (
        lambda a, b, c: flash_attention(a, b, c, causal, 8, 5),
        lambda a, b, c: scaled_dot_product_attention(a, b, c, causal=causal),
    ):
        inputs = [t.clone().requires_grad_() for t in (q, k, v)]
        out = attend(*inputs)
        out.backward(grad_out)
        grads.append([out.detach(), *(t.grad for t in inputs)])
    for tiled, dense in zip(*grads, strict=True):
        torch.testing.assert_close(tiled, dense, atol=1e-10, rtol=1e-10)


def test_tiled_backward_passes_gradcheck() -> None:
    generator = torch.Generator().manual_seed(5)
    q = torch.randn(1, 7, 4, generator=generator, dtype=torch.float64, requires_grad=True)
    k = torch.randn(1, 9, 4, generator=generator, dtype=torch.float64, requires_grad=True)
    v = torch.randn(1, 9, 3, generator=generator, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b, c: flash_attention(a, b, c, True, 3, 4), (q, k, v))


@pytest.mark.parametrize(("causal", "block_q", "block_k"), [(False, 4, 3), (True, 4, 3), (True, 3, 5)])
def test_steps_walk_the_tiles_and_end_at_the_output(causal: bool, block_q: int, block_k: int) -> None:
    generator = torch.Generator().manual_seed(6)
    q, k, v = torch.randn(10, 4, generator=generator), torch.randn(11, 4, generator=generator), torch.randn(11, 2)
    steps = tiled_attention_steps(q, k, v, causal, block_q, block_k)
    # Causal: query tile [a, b) visits the key tiles that start before b (the rest are skipped).
    expected_tiles = [
        (a, min(a + block_q, 10), c, min(c + block_k, 11))
        for a in range(0, 10, block_q)
        for c in range(0, 11, block_k)
        if not causal or c < min(a + block_q, 10)
    ]
    assert [(s.q_start, s.q_stop, s.k_start, s.k_stop) for s in steps] == expected_tiles
    out, _ = tiled_attention(q, k, v, causal, block_q, block_k)
    for before, after in zip(steps, steps[1:], strict=False):
        if after.q_start == before.q_start:
            assert (after.running_max >= before.running_max).all()
        else:  # the query tile is done: its partial output is the final output
            torch.testing.assert_close(before.partial_output, out[before.q_start : before.q_stop])
    torch.testing.assert_close(steps[-1].partial_output, out[steps[-1].q_start :])


def test_peak_memory_bytes_counts_what_is_allocated() -> None:
    # Two 1000x1000 float32 tensors alive at once (4 MB each), then freed.
    def two_buffers() -> None:
        a = torch.ones(1000, 1000)
        b = a.clone()
        del a, b

    assert peak_memory_bytes(two_buffers) == 8_000_000
    assert peak_memory_bytes(lambda: None) == 0


def test_tiled_memory_grows_linearly_and_stays_far_below_dense() -> None:
    # One head, d = 64. Dense attention holds several 8192 x 8192 float32 matrices (256 MiB each);
    # the tiled path holds O(N d) (the output, the scaled queries) plus one tile of scores.
    generator = torch.Generator().manual_seed(7)
    peaks = {}
    for n in (4096, 8192):
        q, k, v = (torch.randn(1, n, 64, generator=generator) for _ in range(3))
        peaks[n] = peak_memory_bytes(lambda q=q, k=k, v=v: tiled_attention(q, k, v))
    dense = peak_memory_bytes(lambda: scaled_dot_product_attention(q, k, v))
    assert dense >= 8192 * 8192 * 4  # at least one N x N float32 matrix
    assert peaks[8192] <= dense / 50, (peaks, dense)
    assert peaks[8192] <= 2.2 * peaks[4096], peaks  # linear: x2 when N doubles (quadratic would be x4)


def test_bad_inputs_are_named() -> None:
    q = torch.randn(5, 4)
    with pytest.raises(ValueError, match="block_q must be >= 1, got 0"):
        tiled_attention(q, q, q, block_q=0)
    with pytest.raises(TypeError, match="block_k must be an int, got float"):
        tiled_attention(q, q, q, block_k=2.5)
    with pytest.raises(ValueError, match=r"q and k must share the last dimension, got q \(5, 4\) and k \(5, 3\)"):
        tiled_attention(q, torch.randn(5, 3), q)
    with pytest.raises(TypeError, match="q must be a floating-point tensor"):
        tiled_attention(torch.ones(5, 4, dtype=torch.long), q, q)
    with pytest.raises(ValueError, match=r"leading dimensions of q, k and v must broadcast"):
        tiled_attention(torch.randn(2, 5, 4), torch.randn(3, 5, 4), torch.randn(3, 5, 4))
    with pytest.raises(TypeError, match="blocks must be a non-empty list"):
        online_softmax([])
    with pytest.raises(TypeError, match="blocks must be a non-empty list"):
        online_softmax(torch.randn(3, 4))
    with pytest.raises(ValueError, match=r"blocks\[1\] \(2, 3\)"):
        online_softmax([torch.randn(3, 4), torch.randn(2, 3)])
    with pytest.raises(ValueError, match=r"out_a \(5, 4\), lse_a \(4,\)"):
        merge_attention_partials(q, torch.randn(4), q, torch.randn(5))
    with pytest.raises(ValueError, match=r"q must be one head's 2-D .* got shape \(1, 5, 4\)"):
        tiled_attention_steps(q[None], q, q)
    with pytest.raises(TypeError, match="fn must be a function"):
        peak_memory_bytes(3)


@pytest.mark.parametrize(
    ("n_queries", "n_keys", "block_q", "block_k"),
    [(10, 10, 4, 4), (10, 11, 4, 3), (9, 13, 3, 5), (13, 7, 5, 2), (16, 16, 8, 4), (1, 5, 2, 2)],
)
def test_causal_loop_visits_exactly_the_tiles_on_or_below_the_diagonal(
    n_queries: int, n_keys: int, block_q: int, block_k: int
) -> None:
    allowed = torch.ones(n_queries, n_keys, dtype=torch.bool).tril()  # query i sees keys j <= i
    expected = []
    for i, q_start in enumerate(range(0, n_queries, block_q)):
        for j, k_start in enumerate(range(0, n_keys, block_k)):
            tile = allowed[q_start : q_start + block_q, k_start : k_start + block_k]
            if tile.any():  # some key on or below the diagonal: visited, masked if some key is above it
                expected.append((i, j, not bool(tile.all())))
    assert visited_tiles(n_queries, n_keys, block_q, block_k, causal=True) == expected
    n_tiles = math.ceil(n_queries / block_q) * math.ceil(n_keys / block_k)
    assert [masked for *_, masked in visited_tiles(n_queries, n_keys, block_q, block_k, False)] == [False] * n_tiles


@pytest.mark.parametrize("causal", [False, True])
def test_forward_and_backward_compute_the_tiles_visited_tiles_lists(causal: bool, monkeypatch) -> None:
    # Record every tile of scores the real loops compute, with whether it was masked. Query tiles run
    # concurrently (one per thread, longest first), so the order is free; each tile is computed once.
    computed = []
    original = flash._tile_scores

    def recording(q_tile, k, q_start, k_start, k_stop, masked):
        computed.append((q_start, k_start, masked))
        return original(q_tile, k, q_start, k_start, k_stop, masked)

    monkeypatch.setattr(flash, "_tile_scores", recording)
    q, k, v = torch.randn(2, 23, 4), torch.randn(2, 23, 4), torch.randn(2, 23, 4)
    out, lse = tiled_attention(q, k, v, causal, 6, 4)
    expected = [(i * 6, j * 4, masked) for i, j, masked in visited_tiles(23, 23, 6, 4, causal)]
    assert sorted(computed) == sorted(expected)
    computed.clear()
    tiled_attention_backward(q, k, v, out, lse, torch.randn(2, 23, 4), causal, 6, 4)
    assert sorted(computed) == sorted(expected)


@pytest.mark.parametrize(("n_keys", "n_splits"), [(1000, 1), (1000, 7), (1000, 64), (5, 9), (0, 3)])
def test_flash_decoding_equals_full_attention(n_keys: int, n_splits: int) -> None:
    generator = torch.Generator().manual_seed(18)
    q = torch.randn(3, 4, 1, 16, generator=generator)  # one new token, 4 heads
    k, v = torch.randn(3, 4, n_keys, 16, generator=generator) * 2, torch.randn(3, 4, n_keys, 8, generator=generator)
    out, lse = flash_decoding(q, k, v, n_splits)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v), atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(lse, dense_lse(q, k, causal=False), atol=ATOL, rtol=RTOL)


def test_tile_stepper_walks_the_tiles() -> None:
    from attention_course.teaching.widgets import tile_stepper

    generator = torch.Generator().manual_seed(7)
    q, k, v = (torch.randn(n, 2, generator=generator) for n in (8, 12, 12))
    widget = tile_stepper(q, k, v, block_q=4, block_k=4)
    slider, causal_box = widget.children[:2]
    assert widget.readout["tiles"] == 6 and widget.readout["distance"] > 0
    slider.value = 3  # the first query tile has seen every key: its partial output is final
    assert widget.readout["distance"] < 1e-5
    causal_box.value = True
    assert widget.readout["tiles"] == 3 and slider.max == 3


@pytest.fixture
def two_threads():
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("causal", [False, True])
def test_query_tiles_run_one_per_thread_with_single_threaded_operations(causal, two_threads, monkeypatch) -> None:
    # Each tile of scores is computed on one of two worker threads, with torch limited to one thread
    # there; the caller's thread count is back afterwards, and the result is still exact.
    seen = []
    original = flash._tile_scores

    def recording(*args):
        seen.append((threading.get_ident(), torch.get_num_threads()))
        time.sleep(0.005)  # a slow tile: the second thread surely takes some of the work
        return original(*args)

    monkeypatch.setattr(flash, "_tile_scores", recording)
    q, k, v = (torch.randn(2, 3, 40, 8) for _ in range(3))
    out, _ = tiled_attention(q, k, v, causal, 8, 8)
    assert torch.get_num_threads() == 2
    assert {threads for _, threads in seen} == {1}
    assert len({ident for ident, _ in seen}) == 2 and threading.get_ident() not in {ident for ident, _ in seen}
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, is_causal=causal), atol=ATOL, rtol=RTOL)
    grad_out = torch.randn(2, 3, 40, 8)
    qg, kg, vg = (t.clone().requires_grad_() for t in (q, k, v))
    saved = tiled_attention(q, k, v, causal, 8, 8)
    seen.clear()
    grads = tiled_attention_backward(q, k, v, *saved, grad_out, causal, 8, 8)
    expected = torch.autograd.grad(F.scaled_dot_product_attention(qg, kg, vg, is_causal=causal), (qg, kg, vg), grad_out)
    assert len({ident for ident, _ in seen}) == 2
    for ours, theirs in zip(grads, expected, strict=True):
        torch.testing.assert_close(ours, theirs, atol=ATOL, rtol=RTOL)


def test_the_calling_threads_operations_are_single_threaded_too(two_threads, monkeypatch) -> None:
    # A multi-threaded operation in the caller (checking or flattening the inputs) would leave
    # OpenMP's idle thread spinning beside the tile threads; every entry point checks its inputs
    # with one torch thread, still hands the tiles to two threads, and gives the caller its two back.
    callers, tiles = [], []
    flatten, scores = flash._flatten_qkv, flash._tile_scores

    def recording_flatten(*args):
        callers.append(torch.get_num_threads())
        return flatten(*args)

    def recording_scores(*args):
        tiles.append(threading.get_ident())
        return scores(*args)

    monkeypatch.setattr(flash, "_flatten_qkv", recording_flatten)
    monkeypatch.setattr(flash, "_tile_scores", recording_scores)
    q, k, v = (torch.randn(2, 64, 8, requires_grad=True) for _ in range(3))
    out, lse = tiled_attention(q.detach(), k.detach(), v.detach(), True, 8, 8)
    tiled_attention_backward(q.detach(), k.detach(), v.detach(), out, lse, torch.ones_like(out), True, 8, 8)
    flash_attention(q, k, v, True, 8, 8).sum().backward()
    assert callers == [1, 1, 1] and torch.get_num_threads() == 2
    assert tiles and threading.get_ident() not in tiles  # the tiles still went to the pool


@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="counts threads in Linux's /proc")
def test_tile_threads_start_no_openmp_threads_of_their_own(two_threads, monkeypatch) -> None:
    # A small tile's first operation is a matrix product; were it multi-threaded, each tile thread
    # would start its own OpenMP team (oversubscribing the cores).
    torch.randn(512, 512).exp().sum()  # the caller's own OpenMP team exists before counting
    before = set(os.listdir("/proc/self/task"))
    monkeypatch.setattr(flash, "_pool", None)  # a fresh pool of two tile threads
    q, k, v = (torch.randn(3, 40, 8) for _ in range(3))
    tiled_attention(q, k, v, block_q=8, block_k=8)
    assert len(set(os.listdir("/proc/self/task")) - before) == 2


def test_a_failing_query_tile_raises_in_the_caller_and_restores_the_threads(two_threads, monkeypatch) -> None:
    def broken(*args):
        raise ArithmeticError("tile failed")

    monkeypatch.setattr(flash, "_tile_scores", broken)
    with pytest.raises(ArithmeticError, match="tile failed"):
        tiled_attention(*(torch.randn(1, 32, 4) for _ in range(3)), block_q=8, block_k=8)
    assert torch.get_num_threads() == 2


def test_flash_attention_backward_through_worker_threads_keeps_grad_mode(two_threads) -> None:
    # autograd.Function.forward runs without gradients; its worker threads must too (out= ops refuse them).
    q, k, v = (torch.randn(2, 50, 8, requires_grad=True) for _ in range(3))
    flash_attention(q, k, v, True, 16, 16).sum().backward()
    assert q.grad is not None and k.grad is not None and v.grad is not None


def test_peak_memory_sees_the_tiles_of_worker_threads(two_threads) -> None:
    # The profiler records the calling thread only; peak_memory_bytes runs fn on one thread, so the
    # tiles of scores count whatever the caller's thread count (one 8 x 128 x 256 float32 tile = 1 MiB).
    q, k, v = (torch.randn(8, 1024, 64) for _ in range(3))
    with_two = peak_memory_bytes(lambda: tiled_attention(q, k, v, block_q=128, block_k=256))
    torch.set_num_threads(1)
    assert with_two == peak_memory_bytes(lambda: tiled_attention(q, k, v, block_q=128, block_k=256))
    assert with_two >= 8 * 128 * 256 * 4 + q.numel() * 4  # a tile, plus the output
