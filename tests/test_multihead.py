"""Multi-head attention against torch.nn.MultiheadAttention with the same weights."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attention_course import MultiHeadAttention, merge_heads, padding_mask, split_heads

# float32; the two modules run the same projections and attention in a different order of
# operations, so outputs differ by ~1e-7. 1e-5 is the course's budget against PyTorch.
F32 = dict(atol=1e-5, rtol=1e-5)


@settings(max_examples=30, deadline=None)
@given(
    batch=st.integers(1, 3),
    length=st.integers(1, 7),
    n_heads=st.sampled_from([1, 2, 4]),
    d_head=st.integers(1, 6),
    seed=st.integers(0, 2**16),
)
def test_split_then_merge_is_identity_and_heads_are_column_slices(batch, length, n_heads, d_head, seed) -> None:
    x = torch.randn(batch, length, n_heads * d_head, generator=torch.Generator().manual_seed(seed))
    heads = split_heads(x, n_heads)
    assert heads.shape == (batch, n_heads, length, d_head)
    for h in range(n_heads):
        torch.testing.assert_close(heads[:, h], x[..., h * d_head : (h + 1) * d_head], atol=0, rtol=0)
    torch.testing.assert_close(merge_heads(heads), x, atol=0, rtol=0)


@settings(max_examples=25, deadline=None)
@given(
    n_heads=st.sampled_from([1, 2, 4, 8]),
    length=st.integers(1, 8),
    source_length=st.integers(1, 8),
    bias=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_matches_torch_multihead_attention(n_heads, length, source_length, bias, seed) -> None:
    torch.manual_seed(seed)
    d_model = 16
    reference = torch.nn.MultiheadAttention(d_model, n_heads, bias=bias, batch_first=True)
    ours = MultiHeadAttention.from_torch(reference)
    x, memory = torch.randn(2, length, d_model), torch.randn(2, source_length, d_model)
    lengths = torch.tensor([source_length, max(1, source_length - 2)])
    keys = padding_mask(lengths, source_length)
    with torch.no_grad():
        expected, expected_weights = reference(x, memory, memory, key_padding_mask=~keys)  # True = ignore there
        got, weights = ours(x, memory, key_mask=keys)
    torch.testing.assert_close(got, expected, **F32)
    torch.testing.assert_close(weights.mean(dim=1), expected_weights, **F32)  # PyTorch averages the heads


def test_causal_self_attention_matches_torch() -> None:
    torch.manual_seed(0)
    reference = torch.nn.MultiheadAttention(12, 3, batch_first=True)
    x = torch.randn(2, 5, 12)
    with torch.no_grad():
        expected, _ = reference(x, x, x, attn_mask=~torch.ones(5, 5, dtype=torch.bool).tril(), need_weights=False)
        got, _ = MultiHeadAttention.from_torch(reference)(x, causal=True)
    torch.testing.assert_close(got, expected, **F32)


def test_parameter_count_equals_four_square_projections() -> None:
    module = MultiHeadAttention(64, 8)
    assert sum(p.numel() for p in module.parameters()) == 4 * (64 * 64 + 64)
    assert sum(p.numel() for p in module.parameters()) == sum(
        p.numel() for p in torch.nn.MultiheadAttention(64, 8).parameters()
    )
