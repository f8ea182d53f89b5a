"""Masks: causal (top-left aligned like PyTorch), padding, combining them."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from attention_course import (
    causal_mask,
    combine_masks,
    key_mask_to_attention_mask,
    padding_mask,
    scaled_dot_product_attention,
)


@settings(max_examples=40, deadline=None)
@given(n_q=st.integers(0, 12), n_k=st.integers(0, 12))
def test_causal_mask_is_pytorchs_is_causal(n_q, n_k) -> None:
    expected = torch.ones(n_q, n_k, dtype=torch.bool).tril(diagonal=0)  # PyTorch's documented is_causal mask
    mask = causal_mask(n_q, n_k)
    assert mask.dtype == torch.bool and torch.equal(mask, expected)
    for i in range(n_q):
        for j in range(n_k):
            assert bool(mask[i, j]) == (j <= i)


def test_causal_flag_equals_explicit_mask() -> None:
    g = torch.Generator().manual_seed(0)
    q, k, v = torch.randn(2, 4, 8, generator=g), torch.randn(2, 6, 8, generator=g), torch.randn(2, 6, 3, generator=g)
    torch.testing.assert_close(
        scaled_dot_product_attention(q, k, v, causal=True), scaled_dot_product_attention(q, k, v, causal_mask(4, 6))
    )


@settings(max_examples=40, deadline=None)
@given(lengths=st.lists(st.integers(0, 8), min_size=1, max_size=5), extra=st.integers(0, 3))
def test_padding_mask_marks_real_tokens(lengths, extra) -> None:
    max_len = max(lengths) + extra
    mask = padding_mask(torch.tensor(lengths), max_len)
    assert mask.shape == (len(lengths), max_len)
    assert mask.sum(-1).tolist() == lengths
    for row, n in zip(mask, lengths, strict=True):
        assert row[:n].all() and not row[n:].any()


def test_padding_keys_get_no_weight_and_match_sdpa() -> None:
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 2, 5, 4, generator=g) for _ in range(3))
    keys = padding_mask(torch.tensor([3, 5]))  # (B, S)
    mask = key_mask_to_attention_mask(keys)[:, None]  # (B, 1, 1, S): every head, every query
    out, weights = scaled_dot_product_attention(q, k, v, mask, return_weights=True)
    assert (weights[0, ..., 3:] == 0).all()
    # float32, same operations on both sides: 1e-5 is the course's SDPA budget.
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=mask), atol=1e-5, rtol=1e-5)


def test_combine_masks_is_a_broadcast_and() -> None:
    causal = causal_mask(4)
    keys = key_mask_to_attention_mask(padding_mask(torch.tensor([2, 4])))  # (2, 1, 4)
    combined = combine_masks(causal, None, keys)
    assert combined.shape == (2, 4, 4)
    assert torch.equal(combined[1], causal)
    assert torch.equal(combined[0], causal & torch.tensor([True, True, False, False]))
    assert combine_masks(None, None) is None
