"""scaled_dot_product_attention against torch.nn.functional.scaled_dot_product_attention, plus properties."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from attention_course import (
    attention_scores,
    causal_mask,
    masked_attention,
    qkv_projection,
    scaled_attention_scores,
    scaled_dot_product_attention,
)

# float32: both sides compute the same matmuls and softmax; differences come from summation order
# (~1e-7 relative). 1e-5 absolute is the course's agreement budget; measured max here is ~5e-7.
F32 = dict(atol=1e-5, rtol=1e-5)


def _qkv(seed: int, batch: tuple[int, ...], n_q: int, n_k: int, d: int, d_v: int):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(*batch, n_q, d, generator=g),
        torch.randn(*batch, n_k, d, generator=g),
        torch.randn(*batch, n_k, d_v, generator=g),
    )


shapes = st.fixed_dictionaries(
    {
        "batch": st.sampled_from([(), (3,), (2, 4)]),
        "n_q": st.integers(1, 9),
        "n_k": st.integers(1, 9),
        "d": st.integers(1, 16),
        "d_v": st.integers(1, 16),
        "seed": st.integers(0, 2**16),
    }
)


@settings(max_examples=50, deadline=None)
@given(s=shapes)
def test_no_mask_matches_sdpa(s) -> None:
    q, k, v = _qkv(s["seed"], s["batch"], s["n_q"], s["n_k"], s["d"], s["d_v"])
    torch.testing.assert_close(scaled_dot_product_attention(q, k, v), F.scaled_dot_product_attention(q, k, v), **F32)


@settings(max_examples=50, deadline=None)
@given(s=shapes)
def test_causal_matches_sdpa_including_l_not_equal_s(s) -> None:
    q, k, v = _qkv(s["seed"], s["batch"], s["n_q"], s["n_k"], s["d"], s["d_v"])
    expected = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    # PyTorch gives NaN where a row has no visible key (impossible when causal, row 0 sees key 0).
    torch.testing.assert_close(scaled_dot_product_attention(q, k, v, causal=True), expected, **F32)


@settings(max_examples=50, deadline=None)
@given(s=shapes, density=st.floats(0.3, 1.0), broadcast_batch=st.booleans())
def test_boolean_mask_matches_sdpa_on_rows_with_a_visible_key(s, density, broadcast_batch) -> None:
    q, k, v = _qkv(s["seed"], s["batch"], s["n_q"], s["n_k"], s["d"], s["d_v"])
    mask_shape = (s["n_q"], s["n_k"]) if broadcast_batch else (*s["batch"], s["n_q"], s["n_k"])
    mask = torch.rand(mask_shape, generator=torch.Generator().manual_seed(s["seed"] + 1)) < density
    got = scaled_dot_product_attention(q, k, v, mask)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    visible = mask.any(-1).expand(got.shape[:-1])
    torch.testing.assert_close(got[visible], expected[visible], **F32)
    # Rows with no visible key: the course returns zeros (PyTorch returns NaN there).
    assert (got[~visible] == 0).all()


@settings(max_examples=30, deadline=None)
@given(s=shapes)
def test_additive_mask_and_custom_scale_match_sdpa(s) -> None:
    q, k, v = _qkv(s["seed"], s["batch"], s["n_q"], s["n_k"], s["d"], s["d_v"])
    bias = torch.randn(s["n_q"], s["n_k"], generator=torch.Generator().manual_seed(s["seed"]))
    got = scaled_dot_product_attention(q, k, v, bias, scale=0.3)
    torch.testing.assert_close(got, F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=0.3), **F32)


def test_heads_batch_and_float64() -> None:
    q, k, v = (t.double() for t in _qkv(0, (2, 3), 5, 7, 8, 4))
    # float64 has 1e-16 resolution; 1e-12 is a generous bound for a few matmuls.
    torch.testing.assert_close(
        scaled_dot_product_attention(q, k, v, causal=True),
        F.scaled_dot_product_attention(q, k, v, is_causal=True),
        atol=1e-12,
        rtol=1e-12,
    )


def test_weights_are_a_distribution_and_reproduce_the_output() -> None:
    q, k, v = _qkv(1, (2,), 4, 6, 8, 3)
    out, weights = scaled_dot_product_attention(q, k, v, return_weights=True)
    assert (weights >= 0).all()
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 4))
    torch.testing.assert_close(out, weights @ v)


@settings(max_examples=30, deadline=None)
@given(s=shapes)
def test_permuting_keys_and_values_together_leaves_the_output_unchanged(s) -> None:
    q, k, v = _qkv(s["seed"], s["batch"], s["n_q"], s["n_k"], s["d"], s["d_v"])
    perm = torch.randperm(s["n_k"], generator=torch.Generator().manual_seed(s["seed"]))
    torch.testing.assert_close(
        scaled_dot_product_attention(q, k[..., perm, :], v[..., perm, :]), scaled_dot_product_attention(q, k, v), **F32
    )


@settings(max_examples=30, deadline=None)
@given(n=st.integers(2, 10), position=st.data(), seed=st.integers(0, 2**16))
def test_causal_output_ignores_the_future(n, position, seed) -> None:
    i = position.draw(st.integers(0, n - 2))
    q, k, v = _qkv(seed, (2,), n, n, 4, 3)
    before = scaled_dot_product_attention(q, k, v, causal=True)
    k2, v2 = k.clone(), v.clone()
    k2[:, i + 1 :] += 5.0
    v2[:, i + 1 :] -= 3.0
    after = scaled_dot_product_attention(q, k2, v2, causal=True)
    torch.testing.assert_close(after[:, : i + 1], before[:, : i + 1], **F32)
    assert not torch.allclose(after[:, i + 1 :], before[:, i + 1 :])


def test_masked_attention_equals_sdpa_with_weights() -> None:
    q, k, v = _qkv(2, (2,), 5, 5, 4, 4)
    mask = causal_mask(5)
    out, weights = masked_attention(q, k, v, mask)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=mask), **F32)
    assert (weights.triu(1) == 0).all()


def test_fully_masked_query_gets_zero_weights_and_output() -> None:
    q, k, v = _qkv(3, (), 3, 4, 4, 2)
    mask = torch.tensor([[True, True, False, False], [False] * 4, [True] * 4])
    out, weights = masked_attention(q, k, v, mask)
    scores = (q @ k.T / 2.0).masked_fill(~mask, float("-inf"))
    assert torch.isnan(torch.softmax(scores, -1)[1]).all()  # the plain formula: 0/0 = NaN
    assert (weights[1] == 0).all() and (out[1] == 0).all()  # the course: zeros
    # PyTorch's SDPA (2.13, CPU) also returns zeros for that row.
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=mask), **F32)


def test_scores_and_projection() -> None:
    g = torch.Generator().manual_seed(0)
    x, w_q, w_k, w_v = torch.randn(2, 5, 6, generator=g), *(torch.randn(6, d, generator=g) for d in (4, 4, 3))
    q, k, v = qkv_projection(x, w_q, w_k, w_v)
    assert (q.shape, k.shape, v.shape) == ((2, 5, 4), (2, 5, 4), (2, 5, 3))
    loop = torch.tensor([[[float(q[b, i] @ k[b, j]) for j in range(5)] for i in range(5)] for b in range(2)])
    torch.testing.assert_close(attention_scores(q, k), loop, **F32)
    torch.testing.assert_close(scaled_attention_scores(q, k), loop / 2.0, **F32)  # sqrt(d_k = 4) = 2


def test_no_keys_gives_zeros_like_pytorch() -> None:
    """S = 0: nothing to attend to. PyTorch's SDPA returns a zero output; so does the course (no IndexError)."""
    q, k, v = _qkv(4, (2,), 3, 0, 4, 5)
    out, weights = scaled_dot_product_attention(q, k, v, return_weights=True)
    assert out.shape == (2, 3, 5) and weights.shape == (2, 3, 0)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v), rtol=0, atol=0)
    assert (scaled_dot_product_attention(q, k, v, causal=True) == 0).all()


def _max_error(out: torch.Tensor, exact: torch.Tensor) -> float:
    return float((out.double() - exact).abs().max())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_is_as_accurate_as_pytorch(dtype: torch.dtype) -> None:
    """bf16/fp16 inputs: scores and softmax in float32, as PyTorch's kernels do, cast back at the end.

    The exact answer is float64 attention on the same (rounded) inputs. Scores of size ~10 (inputs
    scaled by 3, d = 64) make rounding QKᵀ to the half type before the softmax visible: that costs
    about 10x PyTorch's error (measured: bf16 0.30-0.36 vs 0.031, fp16 0.04-0.05 vs 0.0044), while
    float32 inside gives at most PyTorch's error, which is about one rounding of the output. 1.1x
    leaves room for the two summation orders.
    """
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(4, 8, 64, 64, generator=g).mul(3).to(dtype) for _ in range(3))
    exact = F.scaled_dot_product_attention(q.double(), k.double(), v.double(), is_causal=True)
    ours = scaled_dot_product_attention(q, k, v, causal=True)
    theirs = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert ours.dtype == dtype
    rounded_scores = torch.softmax(
        (q @ k.transpose(-2, -1) / 8).masked_fill(~causal_mask(64), float("-inf")).float(), -1
    )
    assert _max_error(rounded_scores.to(dtype) @ v, exact) > 3 * _max_error(theirs, exact)  # the old way, visibly worse
    assert _max_error(ours, exact) <= 1.1 * _max_error(theirs, exact)
