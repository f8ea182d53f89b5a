"""Every bad input the reference core refuses, and the message that names the argument and shapes.

Each row: a call that must fail, the exception type, and words the message must contain.
"""

from __future__ import annotations

import pytest
import torch

import attention_course as ac

f32 = torch.randn
BAD_INPUTS = [
    (
        "q/k last dims differ",
        lambda: ac.scaled_dot_product_attention(f32(2, 5, 64), f32(2, 7, 32), f32(2, 7, 32)),
        ValueError,
        "q and k must share the last dimension, got q (2, 5, 64) and k (2, 7, 32)",
    ),
    (
        "k/v lengths differ",
        lambda: ac.scaled_dot_product_attention(f32(5, 4), f32(6, 4), f32(7, 4)),
        ValueError,
        "k and v must have the same number of positions S (dim -2), got k (6, 4) and v (7, 4)",
    ),
    (
        "mask cannot broadcast",
        lambda: ac.scaled_dot_product_attention(
            f32(2, 5, 4), f32(2, 6, 4), f32(2, 6, 4), torch.ones(5, 5, dtype=torch.bool)
        ),
        ValueError,
        "mask of shape (5, 5) cannot broadcast to the scores' shape (2, 5, 6)",
    ),
    (
        "mask has too many dims",
        lambda: ac.scaled_dot_product_attention(f32(5, 4), f32(6, 4), f32(6, 4), torch.ones(2, 5, 6, dtype=torch.bool)),
        ValueError,
        "mask of shape (2, 5, 6) has more dimensions than the scores (5, 6)",
    ),
    (
        "integer mask",
        lambda: ac.scaled_dot_product_attention(f32(5, 4), f32(6, 4), f32(6, 4), torch.ones(5, 6, dtype=torch.int64)),
        TypeError,
        "mask must be boolean or floating point, got dtype torch.int64",
    ),
    (
        "integer q",
        lambda: ac.scaled_dot_product_attention(torch.ones(5, 4, dtype=torch.int64), f32(6, 4), f32(6, 4)),
        TypeError,
        "q must be a floating-point tensor, got dtype torch.int64 with shape (5, 4)",
    ),
    (
        "q is a list",
        lambda: ac.scaled_dot_product_attention([[1.0]], f32(6, 1), f32(6, 1)),
        TypeError,
        "q must be a torch.Tensor, got list",
    ),
    (
        "rank-1 k",
        lambda: ac.scaled_dot_product_attention(f32(5, 4), f32(4), f32(6, 4)),
        ValueError,
        "k must have at least 2 dimensions (..., S, d_k), got shape (4,)",
    ),
    (
        "NaN in v",
        lambda: ac.scaled_dot_product_attention(f32(5, 4), f32(6, 4), torch.full((6, 4), float("nan"))),
        ValueError,
        "v contains NaN (shape (6, 4))",
    ),
    (
        "mixed dtypes",
        lambda: ac.scaled_dot_product_attention(f32(5, 4), f32(6, 4).double(), f32(6, 4)),
        TypeError,
        "q, k and v must share a dtype, got torch.float32, torch.float64 and torch.float32",
    ),
    (
        "n_heads does not divide d_model",
        lambda: ac.split_heads(f32(2, 5, 12), 5),
        ValueError,
        "n_heads=5 must be positive and divide d_model=12",
    ),
    (
        "module n_heads does not divide",
        lambda: ac.MultiHeadAttention(10, 3),
        ValueError,
        "n_heads=3 must be positive and divide d_model=10",
    ),
    (
        "split_heads wrong rank",
        lambda: ac.split_heads(f32(5, 12), 3),
        ValueError,
        "x must have exactly 3 dimensions (B, L, d_model), got shape (5, 12)",
    ),
    (
        "merge_heads wrong rank",
        lambda: ac.merge_heads(f32(2, 5, 12)),
        ValueError,
        "x must have exactly 4 dimensions (B, n_heads, L, d_head), got shape (2, 5, 12)",
    ),
    (
        "MHA weight wrong shape",
        lambda: ac.multi_head_attention(
            f32(1, 3, 8), f32(1, 3, 8), f32(1, 3, 8), f32(8, 4), f32(8, 8), f32(8, 8), f32(8, 8), 2
        ),
        ValueError,
        "w_q must be (d_model, d_model) = (8, 8), got (8, 4)",
    ),
    (
        "qkv weight rows",
        lambda: ac.qkv_projection(f32(2, 5, 6), f32(5, 4), f32(6, 4), f32(6, 4)),
        ValueError,
        "w_q must have d_model=6 rows to multiply x (2, 5, 6), got w_q (5, 4)",
    ),
    (
        "qkv d_k differ",
        lambda: ac.qkv_projection(f32(2, 5, 6), f32(6, 4), f32(6, 3), f32(6, 4)),
        ValueError,
        "w_q and w_k must give queries and keys the same width d_k, got w_q (6, 4) and w_k (6, 3)",
    ),
    (
        "scores last dims differ",
        lambda: ac.attention_scores(f32(3, 4), f32(3, 5)),
        ValueError,
        "q and k must share the last dimension, got q (3, 4) and k (3, 5)",
    ),
    (
        "softmax integer",
        lambda: ac.softmax(torch.arange(3)),
        TypeError,
        "x must be a floating-point tensor, got dtype torch.int64 with shape (3,)",
    ),
    (
        "softmax temperature 0",
        lambda: ac.softmax(f32(3), temperature=0.0),
        ValueError,
        "temperature must be positive, got 0.0",
    ),
    (
        "padding float lengths",
        lambda: ac.padding_mask(torch.tensor([1.0, 2.0])),
        TypeError,
        "lengths must be an integer tensor, got dtype torch.float32",
    ),
    (
        "padding length > max_len",
        lambda: ac.padding_mask(torch.tensor([3, 9]), 5),
        ValueError,
        "lengths must lie in [0, max_len=5], got [3, 9]",
    ),
    (
        "padding 2-D lengths",
        lambda: ac.padding_mask(torch.ones(2, 2, dtype=torch.int64)),
        ValueError,
        "lengths must have exactly 1 dimensions (B,), got shape (2, 2)",
    ),
    (
        "combine non-bool",
        lambda: ac.combine_masks(torch.ones(2, 2)),
        TypeError,
        "masks[0] must be boolean, got dtype torch.float32 with shape (2, 2)",
    ),
    ("causal negative", lambda: ac.causal_mask(-1), ValueError, "n_queries and n_keys must be >= 0, got -1 and -1"),
    (
        "masked_attention float mask",
        lambda: ac.masked_attention(f32(3, 2), f32(3, 2), f32(3, 2), torch.zeros(3, 3)),
        TypeError,
        "mask must be boolean (True = may attend), got dtype torch.float32",
    ),
    (
        "sinusoidal odd width",
        lambda: ac.sinusoidal_table(10, 7),
        ValueError,
        "d_model must be a positive even number, got 7",
    ),
    (
        "rope odd width",
        lambda: ac.apply_rope(f32(4, 5)),
        ValueError,
        "d_head (last dimension of x) must be a positive even number, got 5",
    ),
    (
        "rope positions shape",
        lambda: ac.apply_rope(f32(4, 6), torch.arange(3)),
        ValueError,
        "positions must have shape (L,) = (4,) to match x (4, 6), got (3,)",
    ),
]


@pytest.mark.parametrize(
    ("call", "error", "words"), [row[1:] for row in BAD_INPUTS], ids=[row[0] for row in BAD_INPUTS]
)
def test_bad_input_is_refused_with_a_message_naming_argument_and_shapes(call, error, words) -> None:
    with pytest.raises(error) as raised:
        call()
    assert words in str(raised.value)
