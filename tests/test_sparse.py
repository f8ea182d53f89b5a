"""Sparse attention (lesson 10): every sparse path equals dense attention under the same mask, and
never builds the N × N matrix.

Tolerance: float32 with atol 1e-5 (the course standard). The sparse paths add exactly the same
products as the dense path (masked pairs contribute an exact 0), only in a different order, so
they differ by a few float32 roundings (~1e-7 for unit-scale inputs).
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.flop_counter import FlopCounterMode

from attention_course import scaled_dot_product_attention
from attention_course.measure import largest_allocation
from attention_course.sparse import (
    SparsePattern,
    attention_flops,
    bigbird_pattern,
    block_sparse_attention,
    dilated_window_pattern,
    fixed_pattern,
    global_local_mask,
    longformer_pattern,
    receptive_field,
    sliding_window_attention,
    sliding_window_mask,
    sliding_window_pattern,
    strided_pattern,
)

ATOL = 1e-5


def _qkv(n: int, *, lead: tuple[int, ...] = (2, 3), d: int = 8, seed: int = 0) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(*lead, n, d, generator=generator) for _ in range(3))


def _patterns(n: int, causal: bool) -> list[SparsePattern]:
    return [
        sliding_window_pattern(n, 3, causal),
        dilated_window_pattern(n, 2, 3, causal),
        strided_pattern(n, 5, causal),
        fixed_pattern(n, 6, 2, causal),
        longformer_pattern(n, 2, [0, n // 2], causal),
        bigbird_pattern(n, 1, [0], min(2, -(-n // 8)), 8, seed=3, causal=causal),
    ]


def _dense_layout(mask: torch.Tensor, block_size: int) -> torch.Tensor:
    """The layout computed the obvious O(N²) way, as an oracle for SparsePattern.layout."""
    n = mask.shape[0]
    n_blocks = -(-n // block_size)
    padded = F.pad(mask, (0, n_blocks * block_size - n, 0, n_blocks * block_size - n))
    return padded.reshape(n_blocks, block_size, n_blocks, block_size).any(dim=3).any(dim=1)


# --- masks ---------------------------------------------------------------------------------------


def test_sliding_window_mask_small_case_by_hand() -> None:
    expected = torch.tensor(
        [
            [1, 1, 0, 0, 0],
            [1, 1, 1, 0, 0],
            [0, 1, 1, 1, 0],
            [0, 0, 1, 1, 1],
            [0, 0, 0, 1, 1],
        ],
        dtype=torch.bool,
    )
    assert torch.equal(sliding_window_mask(5, 1), expected)
    assert torch.equal(sliding_window_mask(5, 1, causal=True), expected.tril())


@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 40), window=st.integers(0, 45), causal=st.booleans())
def test_sliding_window_mask_counts_keys(n: int, window: int, causal: bool) -> None:
    mask = sliding_window_mask(n, window, causal)
    assert mask.dtype == torch.bool and mask.shape == (n, n)
    i = torch.arange(n)
    # Keys per row: the window clipped at both ends of the sequence.
    after = 0 if causal else torch.clamp(n - 1 - i, max=window)
    expected = torch.clamp(i, max=window) + after + 1
    assert torch.equal(mask.sum(dim=1), expected if n else mask.sum(dim=1))
    if not causal:
        assert torch.equal(mask, mask.T)
    else:
        assert not mask.triu(1).any()


def test_global_local_mask_global_rows_and_columns() -> None:
    mask = global_local_mask(12, 1, [0, 7])
    assert mask[[0, 7]].all() and mask[:, [0, 7]].all()  # global tokens read all and are read by all
    others = [i for i in range(12) if i not in (0, 7)]
    local = sliding_window_mask(12, 1)
    assert torch.equal(mask[others][:, others], local[others][:, others])
    causal = global_local_mask(12, 1, [0, 7], causal=True)
    assert torch.equal(causal, mask.tril())


def test_dilated_strided_fixed_by_formula() -> None:
    i, j = torch.arange(20)[:, None], torch.arange(20)[None, :]
    dilated = dilated_window_pattern(20, 2, 3).mask()
    assert torch.equal(dilated, ((i - j).abs() <= 6) & ((i - j) % 3 == 0))
    strided = strided_pattern(20, 4).mask()
    assert torch.equal(strided, (((i - j) < 4) | ((i - j) % 4 == 0)) & (j <= i))
    fixed = fixed_pattern(20, 5, 2).mask()
    assert torch.equal(fixed, ((i // 5 == j // 5) | (j % 5 >= 3)) & (j <= i))
    assert torch.equal(dilated_window_pattern(20, 4, 1).mask(), sliding_window_mask(20, 4))


def test_bigbird_is_seeded_and_adds_random_blocks() -> None:
    a = bigbird_pattern(64, 1, [0], 2, 8, seed=1).mask()
    assert torch.equal(a, bigbird_pattern(64, 1, [0], 2, 8, seed=1).mask())
    assert not torch.equal(a, bigbird_pattern(64, 1, [0], 2, 8, seed=2).mask())
    local_global = global_local_mask(64, 1, [0])
    assert (a >= local_global).all()  # everything Longformer allows, BigBird allows too
    extra = _dense_layout(a & ~local_global, 8)
    assert (extra.sum(dim=1) <= 2).all() and extra.any()  # at most n_random new key blocks per row


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("block_size", [1, 4, 7, 16, 64])
def test_layout_matches_dense_oracle(causal: bool, block_size: int) -> None:
    for pattern in _patterns(45, causal):
        assert torch.equal(pattern.layout(block_size), _dense_layout(pattern.mask(), block_size)), pattern.name


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 70),
    window=st.integers(0, 9),
    block_size=st.integers(1, 12),
    causal=st.booleans(),
    globals_=st.lists(st.integers(0, 69), max_size=3),
    n_random=st.integers(0, 3),
    seed=st.integers(0, 99),
)
def test_block_bound_layouts_match_the_dense_oracle(n, window, block_size, causal, globals_, n_random, seed) -> None:
    """Window, Longformer and BigBird layouts built from block bounds equal the pair-by-pair layout."""
    globals_ = sorted({g % n for g in globals_})
    n_random = min(n_random, -(-n // block_size))
    patterns = [
        sliding_window_pattern(n, window, causal),
        longformer_pattern(n, window, globals_, causal),
        bigbird_pattern(n, window, globals_, n_random, block_size, seed=seed, causal=causal),
    ]
    for pattern in patterns:
        assert pattern.block_layout is not None, pattern.name
        expected = _dense_layout(pattern.mask(), block_size)
        assert torch.equal(pattern.layout(block_size), expected), pattern.name
        assert torch.equal(pattern.scan_layout(block_size), expected), pattern.name


def test_block_bound_layouts_visit_no_pair() -> None:
    """At N = 8192 the layout of a window, Longformer or BigBird pattern never calls the pair predicate."""

    def refuse(i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        raise AssertionError("the layout visited pairs")

    n = 8192
    for pattern in (
        sliding_window_pattern(n, 128, True),
        longformer_pattern(n, 64, [0, 100]),
        bigbird_pattern(n, 64, [0], 3, 64, seed=0),
    ):
        fast = dataclasses.replace(pattern, allows=refuse)
        assert fast.layout(64).shape == (128, 128)
        assert torch.equal(fast.layout(64), pattern.scan_layout(64)), pattern.name


def test_density_and_flops() -> None:
    pattern = sliding_window_pattern(100, 3)
    assert pattern.n_pairs() == int(sliding_window_mask(100, 3).sum())
    assert math.isclose(pattern.density(), pattern.n_pairs() / 100**2)
    assert attention_flops(10, 64) == 4 * 64 * 10


# --- sparse == dense -----------------------------------------------------------------------------


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("n", [1, 37, 64])
@pytest.mark.parametrize("block_size", [1, 5, 16, 33])
def test_block_sparse_equals_dense_for_every_pattern(causal: bool, n: int, block_size: int) -> None:
    q, k, v = _qkv(n)
    for pattern in _patterns(n, causal):
        mask = pattern.mask()
        expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # PyTorch as the oracle
        got = block_sparse_attention(q, k, v, pattern.layout(block_size), block_size, mask_fn=pattern.allows)
        torch.testing.assert_close(got, expected, atol=ATOL, rtol=0, msg=lambda m, p=pattern: f"{p.name}: {m}")


@settings(max_examples=30, deadline=None)
@given(
    n_queries=st.integers(1, 30),
    n_keys=st.integers(1, 30),
    block_size=st.integers(1, 12),
    causal=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_block_sparse_random_layout_equals_dense(
    n_queries: int, n_keys: int, block_size: int, causal: bool, seed: int
) -> None:
    """Any layout, cross-attention shapes, rows left empty: the same as dense under the expanded layout."""
    generator = torch.Generator().manual_seed(seed)
    layout = torch.rand(-(-n_queries // block_size), -(-n_keys // block_size), generator=generator) < 0.5
    mask = layout.repeat_interleave(block_size, 0)[:n_queries].repeat_interleave(block_size, 1)[:, :n_keys]
    q = torch.randn(2, n_queries, 4, generator=generator)
    k, v = (torch.randn(2, n_keys, 4, generator=generator) for _ in range(2))
    got = block_sparse_attention(q, k, v, layout, block_size, causal=causal)
    expected = scaled_dot_product_attention(q, k, v, mask, causal=causal)  # zero rows where nothing is allowed
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 80),
    window=st.integers(0, 90),
    block_size=st.integers(1, 40),
    causal=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_sliding_window_attention_equals_dense(n: int, window: int, block_size: int, causal: bool, seed: int) -> None:
    q, k, v = _qkv(n, lead=(2,), seed=seed)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=sliding_window_mask(n, window, causal))
    got = sliding_window_attention(q, k, v, window, causal=causal, block_size=block_size)
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)


def test_sliding_window_attention_default_block_scale_and_broadcast() -> None:
    q, k, v = _qkv(150, lead=(2, 3))
    mask = sliding_window_mask(150, 20, causal=True)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=0.3)
    torch.testing.assert_close(
        sliding_window_attention(q, k, v, 20, causal=True, scale=0.3), expected, atol=ATOL, rtol=0
    )
    # keys and values shared by every query batch (broadcast over the leading dimension)
    shared = sliding_window_attention(q, k[:1], v[:1], 20)
    torch.testing.assert_close(
        shared,
        F.scaled_dot_product_attention(
            q, k[:1].expand_as(k), v[:1].expand_as(v), attn_mask=sliding_window_mask(150, 20)
        ),
        atol=ATOL,
        rtol=0,
    )
    assert sliding_window_attention(q[..., :0, :], k[..., :0, :], v[..., :0, :], 3).shape == (2, 3, 0, 8)


def test_sparse_gradients_match_dense() -> None:
    """Autograd through the sparse paths gives the dense gradients (same tolerance as the outputs)."""
    pattern = longformer_pattern(40, 3, [0, 21], causal=True)
    grads = []
    for run in ("dense", "block", "window"):
        q, k, v = (t.requires_grad_() for t in _qkv(40))
        if run == "dense":
            out = scaled_dot_product_attention(q, k, v, pattern.mask())
        elif run == "block":
            out = block_sparse_attention(q, k, v, pattern.layout(8), 8, mask_fn=pattern.allows)
        else:
            out = sliding_window_attention(q, k, v, 3, causal=True, block_size=8)
        out.square().sum().backward()
        grads.append([t.grad for t in (q, k, v)])
    for got, expected in zip(grads[1], grads[0], strict=True):
        torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)
    q, k, v = (t.requires_grad_() for t in _qkv(40))
    scaled_dot_product_attention(q, k, v, sliding_window_mask(40, 3, causal=True)).square().sum().backward()
    for got, expected in zip(grads[2], (q.grad, k.grad, v.grad), strict=True):
        torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)


def test_block_sparse_skips_tiles_not_in_layout() -> None:
    """Keys in tiles the layout leaves out are never read: changing them changes nothing."""
    q, k, v = _qkv(32)
    layout = sliding_window_pattern(32, 3).layout(8)
    out = block_sparse_attention(q, k, v, layout, 8)
    k2, v2 = k.clone(), v.clone()
    k2[..., 24:, :] = 1e3  # key block 3 is not in query block 0's row
    v2[..., 24:, :] = 1e3
    torch.testing.assert_close(block_sparse_attention(q, k2, v2, layout, 8)[..., :8, :], out[..., :8, :])


# --- never N × N ---------------------------------------------------------------------------------


def test_allocation_spy_sees_the_dense_matrix() -> None:
    """The spy itself works: the dense reference allocates an N × N float32 score matrix."""
    n = 512
    q, k, v = _qkv(n, lead=(1,), d=4)
    _, largest = largest_allocation(scaled_dot_product_attention, q, k, v, sliding_window_mask(n, 8))
    assert largest >= n * n * 4


def test_sparse_paths_never_allocate_n_by_n() -> None:
    """An N × N float32 matrix is 4 N² bytes; the sparse paths' largest tensor (a block's scores,
    or q scaled) is O(N · max(B, d)): below a quarter of that, and growing no faster than N."""
    largest = {}
    for n in (512, 1024):
        q, k, v = _qkv(n, lead=(1,), d=16)
        pattern = longformer_pattern(n, 32, [0], causal=True)
        layout = pattern.layout(64)
        for name, fn, args, kwargs in (
            ("window", sliding_window_attention, (q, k, v, 32), {"causal": True}),
            ("block", block_sparse_attention, (q, k, v, layout, 64), {"mask_fn": pattern.allows, "causal": True}),
        ):
            _, largest[name, n] = largest_allocation(fn, *args, **kwargs)
            assert largest[name, n] <= n * n * 4 / 4, (name, n, largest[name, n])
    for name in ("window", "block"):
        assert largest[name, 1024] <= 2.2 * largest[name, 512], largest


def test_sparse_paths_skip_the_work_outside_the_pattern() -> None:
    """Counted matrix-product FLOPs: block-sparse does exactly the visited tiles' work, the sliding
    window O(N (B + 2w)) work, and both double (not quadruple) when N doubles."""
    d, block, window = 16, 64, 32
    flops = {}
    for n in (1024, 2048):
        q, k, v = _qkv(n, lead=(1,), d=d)
        layout = sliding_window_pattern(n, window).layout(block)
        for name, call in (
            ("window", lambda q=q, k=k, v=v: sliding_window_attention(q, k, v, window, block_size=block)),
            ("block", lambda q=q, k=k, v=v, layout=layout: block_sparse_attention(q, k, v, layout, block)),
        ):
            with FlopCounterMode(display=False) as counter:
                call()
            flops[name, n] = counter.get_total_flops()
        assert flops["block", n] == attention_flops(int(layout.sum()) * block * block, d)
        assert flops["window", n] <= attention_flops(n * (block + 2 * window), d)
    for name in ("window", "block"):
        assert flops[name, 2048] <= 2.1 * flops[name, 1024], flops


# --- receptive field ------------------------------------------------------------------------------


def test_receptive_field_grows_by_the_window_per_layer() -> None:
    n, window = 40, 3
    reach = receptive_field(sliding_window_mask(n, window, causal=True), 4)
    assert reach.shape == (4, n, n)
    assert torch.equal(reach[0], sliding_window_mask(n, window, causal=True))
    for layer in range(4):
        assert torch.equal(reach[layer], sliding_window_mask(n, window * (layer + 1), causal=True))
    # one global token links everything in two layers
    assert receptive_field(global_local_mask(n, 1, [0]), 2)[1].all()


# --- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "error", "words"),
    [
        (lambda: sliding_window_mask(5, -1), ValueError, "window must be >= 0"),
        (lambda: sliding_window_mask(5, 1.5), TypeError, "window must be an int"),
        (lambda: sliding_window_mask(-2, 1), ValueError, "n must be >= 0"),
        (lambda: dilated_window_pattern(5, 1, 0), ValueError, "dilation must be >= 1"),
        (lambda: fixed_pattern(10, 3, 4), ValueError, "n_summary must be <= stride"),
        (lambda: global_local_mask(5, 1, [5]), ValueError, "global_tokens must lie in [0, n=5)"),
        (lambda: bigbird_pattern(16, 1, [0], 5, 4), ValueError, "n_random must be <= the number of blocks"),
        (lambda: sliding_window_pattern(8, 1).layout(0), ValueError, "block_size must be >= 1"),
        (lambda: receptive_field(torch.ones(3, 4, dtype=torch.bool), 1), ValueError, "square bool"),
        (lambda: receptive_field(torch.ones(3, 3, dtype=torch.bool), 0), ValueError, "n_layers must be >= 1"),
    ],
)
def test_bad_pattern_arguments(call, error: type[Exception], words: str) -> None:
    with pytest.raises(error, match=words.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        call()


def test_bad_attention_arguments() -> None:
    q, k, v = _qkv(10, lead=(2,))
    layout = torch.ones(2, 2, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"layout must be bool \(2, 2\) for L=10, S=10 and block_size=5, got"):
        block_sparse_attention(q, k, v, torch.ones(3, 2, dtype=torch.bool), 5)
    with pytest.raises(ValueError, match="got torch.int64"):
        block_sparse_attention(q, k, v, layout.long(), 5)
    with pytest.raises(ValueError, match="layout must have exactly 2 dimensions"):
        block_sparse_attention(q, k, v, layout[None], 5)
    with pytest.raises(TypeError, match="layout must be a torch.Tensor"):
        block_sparse_attention(q, k, v, [[True]], 10)
    with pytest.raises(ValueError, match="block_size must be >= 1"):
        block_sparse_attention(q, k, v, layout, 0)
    with pytest.raises(ValueError, match="q and k must share the last dimension"):
        block_sparse_attention(q, k[..., :3], v, layout, 5)
    with pytest.raises(ValueError, match=r"q and k need the same length, got q \(2, 10, 8\) and k \(2, 9, 8\)"):
        sliding_window_attention(q, k[:, :9], v[:, :9], 2)
    with pytest.raises(TypeError, match="q must be a floating-point tensor"):
        sliding_window_attention(q.long(), k, v, 2)
    with pytest.raises(ValueError, match="window must be >= 0"):
        sliding_window_attention(q, k, v, -1)


def test_block_sparse_checks_its_inputs_once_not_once_per_block(monkeypatch: pytest.MonkeyPatch) -> None:
    """The NaN scan of q, k and v runs at the public call; the per-block loop uses the unchecked core."""
    import attention_course._validation as validation

    scanned: list[tuple[int, ...]] = []
    original = validation.require_no_nan
    monkeypatch.setattr(
        validation, "require_no_nan", lambda name, x: (scanned.append(tuple(x.shape)), original(name, x))
    )
    q = k = v = torch.randn(1, 64, 8)
    layout = sliding_window_pattern(64, 8).layout(8)  # 8 query blocks
    out = block_sparse_attention(q, k, v, layout, 8)
    assert out.shape == (1, 64, 8) and scanned == [(1, 64, 8)] * 3  # q, k and v, once each
    with pytest.raises(ValueError, match="v contains NaN"):
        block_sparse_attention(q, k, torch.full_like(v, float("nan")), layout, 8)
