"""Lesson 06 exercises: split heads, merge heads, multi-head attention forward."""

from __future__ import annotations

import math

import torch

from ...multihead import merge_heads, multi_head_attention, split_heads
from ..registry import register
from ..spec import Case, Exercise, Mistake

LESSON = "06_multi_head_attention"

# ---------------------------------------------------------------- split_heads


def _split_cases() -> list[Case]:
    generator = torch.Generator().manual_seed(6)
    return [
        Case((torch.arange(12.0).reshape(1, 3, 4), 2), label="x = torch.arange(12.).reshape(1, 3, 4), n_heads=2"),
        Case((torch.randn(2, 5, 8, generator=generator), 4), label="x of shape (2, 5, 8), n_heads=4"),
        Case((torch.randn(3, 4, 6, generator=generator), 3), label="x of shape (3, 4, 6), n_heads=3"),
        Case((torch.randn(2, 3, 4, generator=generator), 1), label="x of shape (2, 3, 4), n_heads=1"),
    ]


def _split_reshape_only(x, n_heads):
    batch, length, d_model = x.shape
    return x.reshape(batch, n_heads, length, d_model // n_heads)


def _split_strided(x, n_heads):
    batch, length, d_model = x.shape
    return x.reshape(batch, length, d_model // n_heads, n_heads).permute(0, 3, 1, 2)


def _split_no_transpose(x, n_heads):
    batch, length, d_model = x.shape
    return x.reshape(batch, length, n_heads, d_model // n_heads)


register(Exercise(
    name="split_heads",
    lesson=LESSON,
    reference=split_heads,
    cases=_split_cases,
    mistakes=(
        Mistake("reshape_without_transpose",
                "reshape to (B, L, n_heads, d_head) and then transpose(1, 2); reshaping straight to "
                "(B, n_heads, L, d_head) cuts the sequence into pieces instead of cutting each token's vector.",
                _split_reshape_only),
        Mistake("strided_columns",
                "head h owns the contiguous columns h*d_head:(h+1)*d_head: reshape the last axis as "
                "(n_heads, d_head), not (d_head, n_heads).",
                _split_strided),
        Mistake("heads_not_moved_forward",
                "after the reshape to (B, L, n_heads, d_head), transpose(1, 2) so the heads come before the "
                "positions: (B, n_heads, L, d_head).",
                _split_no_transpose),
    ),
))

# ---------------------------------------------------------------- merge_heads


def _merge_cases() -> list[Case]:
    generator = torch.Generator().manual_seed(16)
    return [
        Case((torch.arange(12.0).reshape(1, 2, 2, 3),),
             label="x = torch.arange(12.).reshape(1, 2, 2, 3)  (2 heads, 2 tokens, d_head=3)"),
        Case((torch.randn(2, 4, 5, 2, generator=generator),), label="x of shape (2, 4, 5, 2)"),
        Case((torch.randn(1, 3, 4, 4, generator=generator),), label="x of shape (1, 3, 4, 4)"),
    ]


def _merge_reshape_only(x):
    batch, n_heads, length, d_head = x.shape
    return x.reshape(batch, length, n_heads * d_head)


def _merge_interleaved(x):
    batch, n_heads, length, d_head = x.shape
    return x.permute(0, 2, 3, 1).reshape(batch, length, n_heads * d_head)


register(Exercise(
    name="merge_heads",
    lesson=LESSON,
    reference=merge_heads,
    cases=_merge_cases,
    mistakes=(
        Mistake("reshape_without_transpose",
                "transpose(1, 2) back to (B, L, n_heads, d_head) before the reshape: reshaping (B, n_heads, L, d_head) "
                "directly concatenates the heads in the wrong order (pieces of different tokens end up in one row).",
                _merge_reshape_only),
        Mistake("interleaved_heads",
                "put head h's d_head values side by side in columns h*d_head:(h+1)*d_head (transpose(1, 2), then "
                "reshape); moving d_head before n_heads interleaves the heads column by column.",
                _merge_interleaved),
    ),
))

# ---------------------------------------------------------------- multi_head_attention


def _mha_cases() -> list[Case]:
    generator = torch.Generator().manual_seed(60)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator)

    def weights(d_model: int) -> tuple[torch.Tensor, ...]:
        return tuple(randn(d_model, d_model) / math.sqrt(d_model) for _ in range(4))

    x3 = randn(1, 3, 4)
    x5 = randn(2, 5, 8)
    biases = {f"b_{name}": randn(8) for name in "qkvo"}
    x4 = randn(2, 4, 6)
    queries, memory = randn(2, 3, 8), randn(2, 5, 8)
    keys_real = torch.tensor([[True, True, True, False, False], [True, True, True, True, True]])
    return [
        Case((x3, x3, x3, *weights(4), 2), label="self-attention, 1 sequence of 3 tokens, d_model=4, n_heads=2"),
        Case((x5, x5, x5, *weights(8), 2), biases, label="self-attention, x of shape (2, 5, 8), n_heads=2, with biases"),
        Case((x4, x4, x4, *weights(6), 3), {"causal": True}, label="x of shape (2, 4, 6), n_heads=3, causal=True"),
        Case((queries, memory, memory, *weights(8), 4), {"mask": keys_real[:, None, None, :]},
             label="query (2, 3, 8), key = value (2, 5, 8), n_heads=4, padding mask of shape (2, 1, 1, 5)"),
    ]


def _mha_split_without_transpose(query, key, value, w_q, w_k, w_v, w_o, n_heads, *,
                                 b_q=None, b_k=None, b_v=None, b_o=None, mask=None, causal=False):
    from attention_course import merge_heads, scaled_dot_product_attention

    def split(x):
        batch, length, d_model = x.shape
        return x.reshape(batch, n_heads, length, d_model // n_heads)

    def project(x, w, b):
        return x @ w if b is None else x @ w + b

    q, k, v = split(project(query, w_q, b_q)), split(project(key, w_k, b_k)), split(project(value, w_v, b_v))
    heads, weights = scaled_dot_product_attention(q, k, v, mask, causal=causal, return_weights=True)
    return project(merge_heads(heads), w_o, b_o), weights


def _mha_merge_without_transpose(query, key, value, w_q, w_k, w_v, w_o, n_heads, *,
                                 b_q=None, b_k=None, b_v=None, b_o=None, mask=None, causal=False):
    from attention_course import scaled_dot_product_attention, split_heads

    def project(x, w, b):
        return x @ w if b is None else x @ w + b

    q = split_heads(project(query, w_q, b_q), n_heads)
    k, v = split_heads(project(key, w_k, b_k), n_heads), split_heads(project(value, w_v, b_v), n_heads)
    heads, weights = scaled_dot_product_attention(q, k, v, mask, causal=causal, return_weights=True)
    return project(heads.reshape(query.shape), w_o, b_o), weights


def _mha_no_output_projection(query, key, value, w_q, w_k, w_v, w_o, n_heads, *,
                              b_q=None, b_k=None, b_v=None, b_o=None, mask=None, causal=False):
    from attention_course import merge_heads, scaled_dot_product_attention, split_heads

    def project(x, w, b):
        return x @ w if b is None else x @ w + b

    q = split_heads(project(query, w_q, b_q), n_heads)
    k, v = split_heads(project(key, w_k, b_k), n_heads), split_heads(project(value, w_v, b_v), n_heads)
    heads, weights = scaled_dot_product_attention(q, k, v, mask, causal=causal, return_weights=True)
    return merge_heads(heads), weights


def _mha_scale_by_d_model(query, key, value, w_q, w_k, w_v, w_o, n_heads, *,
                          b_q=None, b_k=None, b_v=None, b_o=None, mask=None, causal=False):
    from attention_course import merge_heads, scaled_dot_product_attention, split_heads

    def project(x, w, b):
        return x @ w if b is None else x @ w + b

    q = split_heads(project(query, w_q, b_q), n_heads)
    k, v = split_heads(project(key, w_k, b_k), n_heads), split_heads(project(value, w_v, b_v), n_heads)
    heads, weights = scaled_dot_product_attention(q, k, v, mask, causal=causal, return_weights=True,
                                                  scale=1 / math.sqrt(query.shape[-1]))
    return project(merge_heads(heads), w_o, b_o), weights


def _mha_biases_ignored(query, key, value, w_q, w_k, w_v, w_o, n_heads, *,
                        b_q=None, b_k=None, b_v=None, b_o=None, mask=None, causal=False):
    from attention_course import merge_heads, scaled_dot_product_attention, split_heads

    q, k, v = (split_heads(x @ w, n_heads) for x, w in ((query, w_q), (key, w_k), (value, w_v)))
    heads, weights = scaled_dot_product_attention(q, k, v, mask, causal=causal, return_weights=True)
    return merge_heads(heads) @ w_o, weights


def _mha_causal_ignored(query, key, value, w_q, w_k, w_v, w_o, n_heads, *,
                        b_q=None, b_k=None, b_v=None, b_o=None, mask=None, causal=False):
    from attention_course import merge_heads, scaled_dot_product_attention, split_heads

    def project(x, w, b):
        return x @ w if b is None else x @ w + b

    q = split_heads(project(query, w_q, b_q), n_heads)
    k, v = split_heads(project(key, w_k, b_k), n_heads), split_heads(project(value, w_v, b_v), n_heads)
    heads, weights = scaled_dot_product_attention(q, k, v, mask, return_weights=True)
    return project(merge_heads(heads), w_o, b_o), weights


def _mha_mask_ignored(query, key, value, w_q, w_k, w_v, w_o, n_heads, *,
                      b_q=None, b_k=None, b_v=None, b_o=None, mask=None, causal=False):
    from attention_course import merge_heads, scaled_dot_product_attention, split_heads

    def project(x, w, b):
        return x @ w if b is None else x @ w + b

    q = split_heads(project(query, w_q, b_q), n_heads)
    k, v = split_heads(project(key, w_k, b_k), n_heads), split_heads(project(value, w_v, b_v), n_heads)
    heads, weights = scaled_dot_product_attention(q, k, v, causal=causal, return_weights=True)
    return project(merge_heads(heads), w_o, b_o), weights


register(Exercise(
    name="multi_head_attention",
    lesson=LESSON,
    reference=multi_head_attention,
    cases=_mha_cases,
    mistakes=(
        Mistake("split_without_transpose",
                "split the projected q, k, v with a reshape to (B, L, n_heads, d_head) and a transpose(1, 2); "
                "a reshape alone mixes different tokens into one head.",
                _mha_split_without_transpose),
        Mistake("merge_without_transpose",
                "merge the heads with transpose(1, 2) before the reshape; reshaping (B, n_heads, L, d_head) straight "
                "to (B, L, d_model) concatenates the heads in the wrong order.",
                _mha_merge_without_transpose),
        Mistake("no_output_projection",
                "after merging the heads, apply the output projection: output = merged @ w_o (+ b_o).",
                _mha_no_output_projection),
        Mistake("scale_by_d_model",
                "each head compares d_head-wide vectors: divide its scores by sqrt(d_head) = sqrt(d_model / n_heads), "
                "not by sqrt(d_model).",
                _mha_scale_by_d_model),
        Mistake("biases_ignored",
                "when b_q, b_k, b_v or b_o are given, add them after their projection (x @ w + b).",
                _mha_biases_ignored),
        Mistake("causal_ignored",
                "with causal=True, hide the keys j > i from query i (pass causal on to the attention).",
                _mha_causal_ignored),
        Mistake("mask_ignored",
                "pass the mask on to the attention: it hides keys (False = may not attend) in every head.",
                _mha_mask_ignored),
    ),
))
