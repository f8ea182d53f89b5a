"""Lesson 05 exercises: causal mask, padding mask, masked attention."""

from __future__ import annotations

import torch

from ...attention import masked_attention
from ...masking import causal_mask, padding_mask
from ..casegen import column_major, generator, randn
from ..edits import DETACHED_HINT, catalogue, edit
from ..registry import register
from ..spec import Case, Exercise

LESSON = "05_masking"

# ---------------------------------------------------------------- causal_mask


def _causal_cases() -> list[Case]:
    return [
        Case((4,), label="causal_mask(4)"),
        Case((1,), label="causal_mask(1)"),
        Case((3, 5), label="causal_mask(3, 5)  (3 queries, 5 keys)"),
        Case((5, 3), label="causal_mask(5, 3)  (5 queries, 3 keys)"),
        Case((2,), {"n_keys": 6}, label="causal_mask(2, n_keys=6)"),
        Case((1, 4), label="causal_mask(1, 4)  (one query, 4 keys)"),
        Case((7,), label="causal_mask(7)"),
    ]


CAUSAL = "return torch.ones(n_queries, n_keys, dtype=torch.bool).tril()"

register(
    Exercise(
        name="causal_mask",
        lesson=LESSON,
        reference=causal_mask,
        cases=_causal_cases,
        mistakes=catalogue(
            LESSON,
            "causal_mask",
            (
                "diagonal_excluded",
                "a token may attend to itself: keep the diagonal (key j <= query i, not j < i).",
                edit(CAUSAL, "return torch.ones(n_queries, n_keys, dtype=torch.bool).tril(diagonal=-1)"),
            ),
            (
                "inverted",
                "True marks the keys a query MAY attend to; the code returns the future positions to hide.",
                edit(CAUSAL, "return torch.ones(n_queries, n_keys, dtype=torch.bool).triu(diagonal=1)"),
            ),
            (
                "transposed",
                "rows are queries and columns are keys: row i must be True up to column i (lower triangle, tril), "
                "the upper triangle lets each token see the future.",
                edit(CAUSAL, "return torch.ones(n_queries, n_keys, dtype=torch.bool).triu()"),
            ),
            (
                "square_only",
                "the mask has shape (n_queries, n_keys): use n_keys when it is given.",
                edit(CAUSAL, "return torch.ones(n_queries, n_queries, dtype=torch.bool).tril()"),
            ),
            (
                "bottom_right_aligned",
                "align the triangle at the top-left like PyTorch's is_causal: query i sees keys 0..i "
                "(tril with diagonal=0), whatever n_keys is.",
                edit(
                    CAUSAL, "return torch.ones(n_queries, n_keys, dtype=torch.bool).tril(diagonal=n_keys - n_queries)"
                ),
            ),
            (
                "float_mask",
                "return a boolean mask (dtype=torch.bool), not 0/1 numbers.",
                edit(CAUSAL, "return torch.ones(n_queries, n_keys).tril()"),
            ),
            (
                "integer_mask",
                "return a boolean mask (dtype=torch.bool), not 0/1 integers: ~ on an integer mask flips bits, not truth.",
                edit(CAUSAL, "return torch.ones(n_queries, n_keys, dtype=torch.long).tril()"),
            ),
        ),
    )
)

# ---------------------------------------------------------------- padding_mask


def _padding_cases() -> list[Case]:
    return [
        Case((torch.tensor([3, 1, 4]),), label="lengths = tensor([3, 1, 4])"),
        Case((torch.tensor([2, 5]),), {"max_len": 6}, label="lengths = tensor([2, 5]), max_len=6"),
        Case((torch.tensor([0, 2]),), {"max_len": 3}, label="lengths = tensor([0, 2]), max_len=3"),
        Case((torch.tensor([5]),), label="one sequence: lengths = tensor([5])"),
        Case((torch.tensor([1, 4]),), {"max_len": 4}, label="lengths = tensor([1, 4]), max_len=4"),
        Case((torch.tensor([2, 6, 3, 1, 6], dtype=torch.int32),), label="int32 lengths = tensor([2, 6, 3, 1, 6])"),
    ]


DEFAULT_LEN = "max_len = int(lengths.max()) if max_len is None else max_len"
PADDING = "return torch.arange(max_len) < lengths[:, None]"

register(
    Exercise(
        name="padding_mask",
        lesson=LESSON,
        reference=padding_mask,
        cases=_padding_cases,
        mistakes=catalogue(
            LESSON,
            "padding_mask",
            (
                "inverted",
                "True marks real tokens (attention allowed); the code marks the padding, which is the opposite "
                "convention (the one of nn.MultiheadAttention's key_padding_mask).",
                edit(PADDING, "return torch.arange(max_len) >= lengths[:, None]"),
            ),
            (
                "off_by_one",
                "a sequence of length n has real tokens at positions 0..n-1: compare with <, not <=.",
                edit(PADDING, "return torch.arange(max_len) <= lengths[:, None]"),
            ),
            (
                "left_padded",
                "the real tokens come first: True at positions 0 .. length-1 and the padding at the end, not the "
                "padding first (left padding).",
                edit(PADDING, "return torch.arange(max_len) >= max_len - lengths[:, None]"),
            ),
            (
                "ignores_max_len",
                "when max_len is given, the mask has max_len columns even if every sequence is shorter.",
                edit(DEFAULT_LEN, "max_len = int(lengths.max())"),
            ),
            (
                "transposed",
                "the mask has one row per sequence and one column per position: shape (B, max_len).",
                edit(PADDING, "return (torch.arange(max_len) < lengths[:, None]).T"),
            ),
            (
                "max_len_from_batch_size",
                "max_len defaults to the longest sequence, lengths.max(), not the number of sequences len(lengths).",
                edit(DEFAULT_LEN, "max_len = len(lengths) if max_len is None else max_len"),
            ),
            (
                "squeezed",
                "keep the batch axis: one sequence still gives a mask of shape (1, max_len).",
                edit(PADDING, "return (torch.arange(max_len) < lengths[:, None]).squeeze()"),
            ),
        ),
    )
)

# ---------------------------------------------------------------- masked_attention


def _attention_cases() -> list[Case]:
    g = generator(5)
    tiny = (randn(g, 3, 2), randn(g, 3, 2), randn(g, 3, 2))
    causal = torch.ones(3, 3, dtype=torch.bool).tril()
    keys_real = torch.tensor([[True, True, True, False, False], [True, True, True, True, True]])
    rows = torch.tensor([[True, False, True, True], [False, False, False, False], [True, True, False, False]])
    left_padded = torch.tensor([[False, False, True, True, True, True], [True, True, True, True, True, True]])
    causal_and_padding = torch.ones(6, 6, dtype=torch.bool).tril() & left_padded[:, None, None, :]  # (2, 1, 6, 6)
    return [
        Case(tiny, {"mask": causal}, label="3 tokens, d=2, causal mask"),
        Case(tiny, {"mask": None}, label="3 tokens, d=2, no mask"),
        Case(
            (randn(g, 2, 2, 5, 4), randn(g, 2, 2, 5, 4), randn(g, 2, 2, 5, 3)),
            {"mask": keys_real[:, None, None, :]},
            label="batch 2, 2 heads, 5 tokens, key padding mask of shape (2, 1, 1, 5), d_v=3 != d_k=4",
        ),
        Case(
            (randn(g, 3, 4), randn(g, 4, 4), randn(g, 4, 2)),
            {"mask": rows},
            label="3 queries, 4 keys, a mask whose second row is all False (no key to attend to)",
        ),
        Case(
            (randn(g, 2, 3, 6, 5), randn(g, 2, 3, 6, 5), randn(g, 2, 3, 6, 5)),
            {"mask": causal_and_padding},
            label="batch 2, 3 heads, causal AND left padding combined in one mask (2, 1, 6, 6), d_k=5: "
            "queries 0 and 1 of sequence 0 see no key",
        ),
        Case(
            (randn(g, 1, 1, 5), randn(g, 1, 7, 5), randn(g, 1, 7, 3)),
            {"mask": torch.tensor([True] * 5 + [False] * 2)},
            label="one query over 7 keys (batch of 1), a mask of shape (7,) hiding the last 2 keys",
        ),
        Case(
            (randn(g, 4, 3, scale=20.0), randn(g, 5, 3, scale=20.0), randn(g, 5, 3)),
            {"mask": torch.ones(4, 5, dtype=torch.bool).tril(1)},
            label="large scores (q, k of size ~20), 4 queries, 5 keys",
        ),
        Case(
            (column_major(randn(g, 2, 4, 6)), column_major(randn(g, 2, 5, 6)), column_major(randn(g, 2, 5, 4))),
            {"mask": None},
            label="q (2, 4, 6), k (2, 5, 6), v (2, 5, 4) stored column-major, no mask",
        ),
        Case(
            (
                randn(g, 3, 4, dtype=torch.float64),
                randn(g, 3, 4, dtype=torch.float64),
                randn(g, 3, 2, dtype=torch.float64),
            ),
            {"mask": causal},
            label="float64 q, k (3, 4), v (3, 2), causal mask",
        ),
        Case(
            (randn(g, 2, 3, 4), randn(g, 2, 5, 4), randn(g, 2, 5, 3)),
            {"mask": keys_real[:, None, :]},
            check_grad=True,
            label="gradients: q (2, 3, 4), k (2, 5, 4), v (2, 5, 3), key padding mask (2, 1, 5)",
        ),
    ]


SCORES = "scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])"
MASKING = "if mask is not None:\n    scores = scores.masked_fill(~mask, float('-inf'))"
FILL = "scores.masked_fill(~mask, float('-inf'))"
WEIGHTS = "weights = torch.softmax(scores, dim=-1).nan_to_num(nan=0.0)"
RESULT = "return weights @ v, weights"

register(
    Exercise(
        name="masked_attention",
        lesson=LESSON,
        reference=masked_attention,
        cases=_attention_cases,
        mistakes=catalogue(
            LESSON,
            "masked_attention",
            (
                "mask_after_softmax",
                "mask the scores before the softmax; zeroing weights afterwards leaves rows that no longer sum to 1.",
                edit(MASKING, ""),
                edit(
                    WEIGHTS,
                    "weights = torch.softmax(scores, dim=-1)\nif mask is not None:\n"
                    "    weights = weights.masked_fill(~mask, 0.0)",
                ),
            ),
            (
                "zero_instead_of_neg_inf",
                "fill masked scores with -inf, not 0: exp(0) = 1 still gives a masked key weight.",
                edit(FILL, "scores.masked_fill(~mask, 0.0)"),
            ),
            (
                "mask_inverted",
                "True in the mask means 'may attend': hide the keys where the mask is False (masked_fill(~mask, ...)), "
                "not where it is True.",
                edit(FILL, "scores.masked_fill(mask, float('-inf'))"),
            ),
            (
                "mask_transposed",
                "apply the mask as given, rows = queries and columns = keys; a transposed mask hides queries "
                "instead of keys (a padding mask must act on the keys).",
                edit(FILL, "scores.masked_fill(~mask.transpose(-2, -1), float('-inf'))"),
            ),
            (
                "mask_ignored",
                "apply the mask: set the scores of hidden keys (mask False) to -inf before the softmax.",
                edit(MASKING, ""),
            ),
            (
                "nan_on_fully_masked",
                "a query whose keys are all masked gets NaN from torch.softmax (0/0); give it zero weights and a "
                "zero output instead (torch.nan_to_num(weights, nan=0.0), or the course's attention_course.softmax, "
                "which returns zeros there).",
                edit(WEIGHTS, "weights = torch.softmax(scores, dim=-1)"),
            ),
            (
                "nan_zeroed_in_place",
                "the check also takes gradients through your attention, and softmax's backward needs its output: "
                "zeroing its NaN in place (weights[weights.isnan()] = 0, .nan_to_num_()) breaks autograd; use "
                "torch.nan_to_num(weights, nan=0.0), which returns a new tensor.",
                edit(WEIGHTS, "weights = torch.softmax(scores, dim=-1)\nweights[weights.isnan()] = 0.0"),
            ),
            (
                "exp_divided_in_place",
                "the check also takes gradients through your attention, and exp's backward needs its output: "
                "dividing the exponentials in place (weights /= weights.sum(...)) breaks autograd; write "
                "weights = weights / weights.sum(dim=-1, keepdim=True).",
                edit(
                    WEIGHTS,
                    "weights = torch.exp(scores - scores.amax(dim=-1, keepdim=True))\n"
                    "weights /= weights.sum(dim=-1, keepdim=True)\n"
                    "weights = weights.nan_to_num(nan=0.0)",
                ),
            ),
            (
                "large_negative_instead_of_inf",
                "a query whose keys are all masked must get zero weights: with -1e9 instead of -inf its weights "
                "become uniform over the masked keys.",
                edit(FILL, "scores.masked_fill(~mask, -1e9)"),
                edit(WEIGHTS, "weights = torch.softmax(scores, dim=-1)"),
            ),
            (
                "unscaled",
                "divide the scores by sqrt(d_k) (the last dimension of q) before the softmax.",
                edit(SCORES, "scores = q @ k.transpose(-2, -1)"),
            ),
            (
                "scaled_by_length",
                "d_k is the last dimension of q (q.shape[-1]), not the number of queries or keys.",
                edit(SCORES, "scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-2])"),
            ),
            (
                "softmax_over_queries",
                "each query's weights sum to 1 over the keys: take the softmax over the last axis (dim=-1), not dim=-2.",
                edit(WEIGHTS, "weights = torch.softmax(scores, dim=-2).nan_to_num(nan=0.0)"),
            ),
            (
                "weights_times_keys",
                "the output mixes the values: weights @ v, not weights @ k.",
                edit(RESULT, "return weights @ k, weights"),
            ),
            (
                "output_only",
                "return the pair (output, weights), not the output alone.",
                edit(RESULT, "return weights @ v"),
            ),
            ("detached_output", DETACHED_HINT, edit(RESULT, "return (weights @ v).detach(), weights.detach()")),
        ),
    )
)
