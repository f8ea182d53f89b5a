"""Lesson 05 exercises: causal mask, padding mask, masked attention."""

from __future__ import annotations

import math

import torch

from ...attention import masked_attention
from ...masking import causal_mask, padding_mask
from ..registry import register
from ..spec import Case, Exercise, Mistake

# ---------------------------------------------------------------- causal_mask


def _causal_cases() -> list[Case]:
    return [
        Case((4,), label="causal_mask(4)"),
        Case((1,), label="causal_mask(1)"),
        Case((3, 5), label="causal_mask(3, 5)  (3 queries, 5 keys)"),
        Case((5, 3), label="causal_mask(5, 3)  (5 queries, 3 keys)"),
    ]


def _causal_no_diagonal(n_queries, n_keys=None):
    n_keys = n_queries if n_keys is None else n_keys
    return torch.ones(n_queries, n_keys, dtype=torch.bool).tril(diagonal=-1)


def _causal_transposed(n_queries, n_keys=None):
    n_keys = n_queries if n_keys is None else n_keys
    return torch.ones(n_queries, n_keys, dtype=torch.bool).triu()


def _causal_inverted(n_queries, n_keys=None):
    n_keys = n_queries if n_keys is None else n_keys
    return torch.ones(n_queries, n_keys, dtype=torch.bool).triu(diagonal=1)


def _causal_square_only(n_queries, n_keys=None):
    return torch.ones(n_queries, n_queries, dtype=torch.bool).tril()


def _causal_bottom_right(n_queries, n_keys=None):
    n_keys = n_queries if n_keys is None else n_keys
    return torch.ones(n_queries, n_keys, dtype=torch.bool).tril(diagonal=n_keys - n_queries)


def _causal_float(n_queries, n_keys=None):
    n_keys = n_queries if n_keys is None else n_keys
    return torch.ones(n_queries, n_keys).tril()


register(Exercise(
    name="causal_mask",
    lesson="05_masking",
    reference=causal_mask,
    cases=_causal_cases,
    mistakes=(
        Mistake("diagonal_excluded",
                "a token may attend to itself: keep the diagonal (key j <= query i, not j < i).",
                _causal_no_diagonal),
        Mistake("inverted",
                "True marks the keys a query MAY attend to; the code returns the future positions to hide.",
                _causal_inverted),
        Mistake("transposed",
                "rows are queries and columns are keys: row i must be True up to column i (lower triangle, tril), "
                "the upper triangle lets each token see the future.",
                _causal_transposed),
        Mistake("square_only",
                "the mask has shape (n_queries, n_keys): use n_keys when it is given.",
                _causal_square_only),
        Mistake("bottom_right_aligned",
                "align the triangle at the top-left like PyTorch's is_causal: query i sees keys 0..i "
                "(tril with diagonal=0), whatever n_keys is.",
                _causal_bottom_right),
        Mistake("float_mask",
                "return a boolean mask (dtype=torch.bool), not 0/1 numbers.",
                _causal_float),
    ),
))

# ---------------------------------------------------------------- padding_mask


def _padding_cases() -> list[Case]:
    return [
        Case((torch.tensor([3, 1, 4]),), label="lengths = tensor([3, 1, 4])"),
        Case((torch.tensor([2, 5]),), {"max_len": 6}, label="lengths = tensor([2, 5]), max_len=6"),
        Case((torch.tensor([0, 2]),), {"max_len": 3}, label="lengths = tensor([0, 2]), max_len=3"),
    ]


def _padding_inverted(lengths, max_len=None):
    max_len = int(lengths.max()) if max_len is None else max_len
    return torch.arange(max_len) >= lengths[:, None]


def _padding_off_by_one(lengths, max_len=None):
    max_len = int(lengths.max()) if max_len is None else max_len
    return torch.arange(max_len) <= lengths[:, None]


def _padding_ignores_max_len(lengths, max_len=None):
    return torch.arange(int(lengths.max())) < lengths[:, None]


def _padding_transposed(lengths, max_len=None):
    max_len = int(lengths.max()) if max_len is None else max_len
    return (torch.arange(max_len) < lengths[:, None]).T


register(Exercise(
    name="padding_mask",
    lesson="05_masking",
    reference=padding_mask,
    cases=_padding_cases,
    mistakes=(
        Mistake("inverted",
                "True marks real tokens (attention allowed); the code marks the padding, which is the opposite "
                "convention (the one of nn.MultiheadAttention's key_padding_mask).",
                _padding_inverted),
        Mistake("off_by_one",
                "a sequence of length n has real tokens at positions 0..n-1: compare with <, not <=.",
                _padding_off_by_one),
        Mistake("ignores_max_len",
                "when max_len is given, the mask has max_len columns even if every sequence is shorter.",
                _padding_ignores_max_len),
        Mistake("transposed",
                "the mask has one row per sequence and one column per position: shape (B, max_len).",
                _padding_transposed),
    ),
))

# ---------------------------------------------------------------- masked_attention


def _attention_cases() -> list[Case]:
    generator = torch.Generator().manual_seed(5)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator)

    tiny = (randn(3, 2), randn(3, 2), randn(3, 2))
    causal = torch.ones(3, 3, dtype=torch.bool).tril()
    keys_real = torch.tensor([[True, True, True, False, False], [True, True, True, True, True]])
    padding = keys_real[:, None, None, :]  # (B, 1, 1, S): hide padded keys for every head and query
    rows = torch.tensor([[True, False, True, True], [False, False, False, False], [True, True, False, False]])
    return [
        Case(tiny, {"mask": causal}, label="3 tokens, d=2, causal mask"),
        Case(tiny, {"mask": None}, label="3 tokens, d=2, no mask"),
        Case((randn(2, 2, 5, 4), randn(2, 2, 5, 4), randn(2, 2, 5, 3)), {"mask": padding},
             label="batch 2, 2 heads, 5 tokens, key padding mask of shape (2, 1, 1, 5)"),
        Case((randn(3, 4), randn(4, 4), randn(4, 2)), {"mask": rows},
             label="3 queries, 4 keys, a mask whose second row is all False (no key to attend to)"),
    ]


def _after_softmax(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    weights = torch.softmax(scores, dim=-1)
    if mask is not None:
        weights = weights.masked_fill(~mask, 0.0)
    return weights @ v, weights


def _zero_instead_of_neg_inf(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, 0.0)
    weights = torch.softmax(scores, dim=-1)
    return weights @ v, weights


def _mask_transposed(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask.transpose(-2, -1), float("-inf"))
    weights = torch.softmax(scores, dim=-1).nan_to_num(0.0)
    return weights @ v, weights


def _nan_on_fully_masked(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    return weights @ v, weights


def _large_negative(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, -1e9)
    weights = torch.softmax(scores, dim=-1)
    return weights @ v, weights


def _unscaled(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1).nan_to_num(0.0)
    return weights @ v, weights


register(Exercise(
    name="masked_attention",
    lesson="05_masking",
    reference=masked_attention,
    cases=_attention_cases,
    mistakes=(
        Mistake("mask_after_softmax",
                "mask the scores before the softmax; zeroing weights afterwards leaves rows that no longer sum to 1.",
                _after_softmax),
        Mistake("zero_instead_of_neg_inf",
                "fill masked scores with -inf, not 0: exp(0) = 1 still gives a masked key weight.",
                _zero_instead_of_neg_inf),
        Mistake("mask_transposed",
                "apply the mask as given, rows = queries and columns = keys; a transposed mask hides queries "
                "instead of keys (a padding mask must act on the keys).",
                _mask_transposed),
        Mistake("nan_on_fully_masked",
                "a query whose keys are all masked gets NaN from torch.softmax (0/0); give it zero weights and a "
                "zero output instead (the course's softmax does this).",
                _nan_on_fully_masked),
        Mistake("large_negative_instead_of_inf",
                "a query whose keys are all masked must get zero weights: with -1e9 instead of -inf its weights "
                "become uniform over the masked keys.",
                _large_negative),
        Mistake("unscaled",
                "divide the scores by sqrt(d_k) (the last dimension of q) before the softmax.",
                _unscaled),
    ),
))
