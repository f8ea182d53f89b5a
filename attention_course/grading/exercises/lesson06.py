"""Lesson 06 exercises: split heads, merge heads, multi-head attention forward."""

from __future__ import annotations

import math

import torch

from ...multihead import merge_heads, multi_head_attention, split_heads
from ..casegen import column_major, generator, randn
from ..edits import DETACHED_HINT, catalogue, edit
from ..registry import register
from ..spec import Case, Exercise

LESSON = "06_multi_head_attention"

# ---------------------------------------------------------------- split_heads


def _split_cases() -> list[Case]:
    g = generator(6)
    return [
        Case((torch.arange(12.0).reshape(1, 3, 4), 2), label="x = torch.arange(12.).reshape(1, 3, 4), n_heads=2"),
        Case((randn(g, 2, 5, 8), 4), label="x of shape (2, 5, 8), n_heads=4"),
        Case((randn(g, 3, 4, 6), 3), label="x of shape (3, 4, 6), n_heads=3"),
        Case((randn(g, 2, 3, 4), 1), label="x of shape (2, 3, 4), n_heads=1"),
        Case((randn(g, 1, 1, 6), 2), label="one sequence of one token: x of shape (1, 1, 6), n_heads=2"),
        Case((randn(g, 2, 3, 5), 5), label="x of shape (2, 3, 5), n_heads=5 (d_head=1)"),
        Case((column_major(randn(g, 2, 4, 6)), 2), label="x of shape (2, 4, 6) stored column-major, n_heads=2"),
        Case((randn(g, 2, 3, 4, dtype=torch.float64), 2), label="float64 x of shape (2, 3, 4), n_heads=2"),
        Case((randn(g, 2, 3, 6), 3), check_grad=True, label="gradients: x of shape (2, 3, 6), n_heads=3"),
    ]


SPLIT = "return x.reshape(batch, length, n_heads, d_model // n_heads).transpose(1, 2)"

register(
    Exercise(
        name="split_heads",
        lesson=LESSON,
        reference=split_heads,
        cases=_split_cases,
        mistakes=catalogue(
            LESSON,
            "split_heads",
            (
                "reshape_without_transpose",
                "reshape to (B, L, n_heads, d_head) and then transpose(1, 2); reshaping straight to "
                "(B, n_heads, L, d_head) cuts the sequence into pieces instead of cutting each token's vector.",
                edit(SPLIT, "return x.reshape(batch, n_heads, length, d_model // n_heads)"),
            ),
            (
                "strided_columns",
                "head h owns the contiguous columns h*d_head:(h+1)*d_head: reshape the last axis as "
                "(n_heads, d_head), not (d_head, n_heads).",
                edit(SPLIT, "return x.reshape(batch, length, d_model // n_heads, n_heads).permute(0, 3, 1, 2)"),
            ),
            (
                "heads_not_moved_forward",
                "after the reshape to (B, L, n_heads, d_head), transpose(1, 2) so the heads come before the "
                "positions: (B, n_heads, L, d_head).",
                edit(SPLIT, "return x.reshape(batch, length, n_heads, d_model // n_heads)"),
            ),
            (
                "transpose_before_reshape",
                "reshape first, then transpose: x.transpose(1, 2) before the reshape moves the features, not the heads, "
                "in front of the positions.",
                edit(SPLIT, "return x.transpose(1, 2).reshape(batch, n_heads, length, d_model // n_heads)"),
            ),
            (
                "squeezed",
                "keep every axis: one sequence of one token still gives (1, n_heads, 1, d_head); .squeeze() drops them.",
                edit(SPLIT, "return x.reshape(batch, length, n_heads, d_model // n_heads).transpose(1, 2).squeeze()"),
            ),
            (
                "detached_output",
                DETACHED_HINT,
                edit(SPLIT, "return x.reshape(batch, length, n_heads, d_model // n_heads).transpose(1, 2).detach()"),
            ),
        ),
    )
)

# ---------------------------------------------------------------- merge_heads


def _merge_cases() -> list[Case]:
    g = generator(16)
    return [
        Case(
            (torch.arange(12.0).reshape(1, 2, 2, 3),),
            label="x = torch.arange(12.).reshape(1, 2, 2, 3)  (2 heads, 2 tokens, d_head=3)",
        ),
        Case((randn(g, 2, 4, 5, 2),), label="x of shape (2, 4, 5, 2)"),
        Case((randn(g, 1, 3, 4, 4),), label="x of shape (1, 3, 4, 4)"),
        Case((randn(g, 1, 2, 1, 3),), label="one sequence of one token: x of shape (1, 2, 1, 3)"),
        Case((randn(g, 3, 1, 4, 5),), label="one head: x of shape (3, 1, 4, 5)"),
        Case((column_major(randn(g, 2, 3, 4, 2)),), label="x of shape (2, 3, 4, 2) stored column-major"),
        Case((randn(g, 2, 2, 3, 2, dtype=torch.float64),), label="float64 x of shape (2, 2, 3, 2)"),
        Case((randn(g, 2, 3, 4, 2),), check_grad=True, label="gradients: x of shape (2, 3, 4, 2)"),
    ]


MERGE = "return x.transpose(1, 2).reshape(batch, length, n_heads * d_head)"

register(
    Exercise(
        name="merge_heads",
        lesson=LESSON,
        reference=merge_heads,
        cases=_merge_cases,
        mistakes=catalogue(
            LESSON,
            "merge_heads",
            (
                "reshape_without_transpose",
                "transpose(1, 2) back to (B, L, n_heads, d_head) before the reshape: reshaping (B, n_heads, L, d_head) "
                "directly concatenates the heads in the wrong order (pieces of different tokens end up in one row).",
                edit(MERGE, "return x.reshape(batch, length, n_heads * d_head)"),
            ),
            (
                "interleaved_heads",
                "put head h's d_head values side by side in columns h*d_head:(h+1)*d_head (transpose(1, 2), then "
                "reshape); moving d_head before n_heads interleaves the heads column by column.",
                edit(MERGE, "return x.permute(0, 2, 3, 1).reshape(batch, length, n_heads * d_head)"),
            ),
            (
                "view_after_transpose",
                "a transposed tensor is not contiguous, so .view cannot merge its axes: use .reshape "
                "(or .contiguous().view).",
                edit(MERGE, "return x.transpose(1, 2).view(batch, length, n_heads * d_head)"),
            ),
            (
                "squeezed",
                "keep every axis: one sequence of one token still gives (1, 1, d_model); .squeeze() drops them.",
                edit(MERGE, "return x.transpose(1, 2).reshape(batch, length, n_heads * d_head).squeeze()"),
            ),
            (
                "detached_output",
                DETACHED_HINT,
                edit(MERGE, "return x.transpose(1, 2).reshape(batch, length, n_heads * d_head).detach()"),
            ),
        ),
    )
)

# ---------------------------------------------------------------- multi_head_attention


def _mha_cases() -> list[Case]:
    g = generator(60)

    def weights(d_model: int) -> tuple[torch.Tensor, ...]:
        return tuple(randn(g, d_model, d_model) / math.sqrt(d_model) for _ in range(4))

    x3, x5, x4 = randn(g, 1, 3, 4), randn(g, 2, 5, 8), randn(g, 2, 4, 6)
    biases = {f"b_{name}": randn(g, 8) for name in "qkvo"}
    queries, memory = randn(g, 2, 3, 8), randn(g, 2, 5, 8)
    keys_real = torch.tensor([[True, True, True, False, False], [True, True, True, True, True]])
    left_real = torch.tensor([[False, False, True, True], [True, True, True, True]])
    query, key, value = randn(g, 2, 3, 6), randn(g, 2, 5, 6), randn(g, 2, 5, 6)
    return [
        Case((x3, x3, x3, *weights(4), 2), label="self-attention, 1 sequence of 3 tokens, d_model=4, n_heads=2"),
        Case(
            (x5, x5, x5, *weights(8), 2), biases, label="self-attention, x of shape (2, 5, 8), n_heads=2, with biases"
        ),
        Case((x4, x4, x4, *weights(6), 3), {"causal": True}, label="x of shape (2, 4, 6), n_heads=3, causal=True"),
        Case(
            (queries, memory, memory, *weights(8), 4),
            {"mask": keys_real[:, None, None, :]},
            label="query (2, 3, 8), key = value (2, 5, 8), n_heads=4, padding mask of shape (2, 1, 1, 5)",
        ),
        Case(
            (query, key, value, *weights(6), 2),
            label="three different inputs: query (2, 3, 6), key (2, 5, 6), value (2, 5, 6), n_heads=2 (d_head=3)",
        ),
        Case(
            (x4, x4, x4, *weights(6), 2),
            {"causal": True, "mask": left_real[:, None, None, :]},
            label="x (2, 4, 6), n_heads=2, causal=True AND a left-padding mask (2, 1, 1, 4): both must apply",
        ),
        Case(
            (randn(g, 1, 1, 6), key[:1], value[:1], *weights(6), 3),
            {"b_v": randn(g, 6), "b_o": randn(g, 6)},
            label="one query (1, 1, 6) over key, value (1, 5, 6), n_heads=3, biases b_v and b_o only",
        ),
        Case((query, key, value, *weights(6), 1), label="query (2, 3, 6), key, value (2, 5, 6), n_heads=1"),
        Case(
            (query[:, :2], key[:, :3], value[:, :3], *weights(6), 2),
            {"b_q": randn(g, 6), "b_k": randn(g, 6)},
            check_grad=True,
            label="gradients: query (2, 2, 6), key, value (2, 3, 6), n_heads=2, biases b_q and b_k",
        ),
        # causal with fewer queries than keys: aligned at the top-left as in lesson 05 (query i sees keys
        # 0..i), so a bottom-right triangle or a square (L, L) causal mask is caught.
        Case(
            (query, key, value, *weights(6), 2),
            {"causal": True},
            label="query (2, 3, 6), key, value (2, 5, 6), n_heads=2, causal=True: query i sees keys 0..i",
        ),
    ]


Q = "ac.split_heads(project(query, w_q, b_q), n_heads)"
K = "ac.split_heads(project(key, w_k, b_k), n_heads)"
V = "ac.split_heads(project(value, w_v, b_v), n_heads)"
ATTEND = "ac.scaled_dot_product_attention(q, k, v, mask, causal=causal, return_weights=True)"
RESULT = "return project(ac.merge_heads(heads), w_o, b_o), weights"


def _no_transpose(x: str) -> str:
    return f"project({x}, w_{x[0]}, b_{x[0]}).reshape({x}.shape[0], n_heads, {x}.shape[1], -1)"


register(
    Exercise(
        name="multi_head_attention",
        lesson=LESSON,
        reference=multi_head_attention,
        cases=_mha_cases,
        mistakes=catalogue(
            LESSON,
            "multi_head_attention",
            (
                "split_without_transpose",
                "split the projected q, k, v with a reshape to (B, L, n_heads, d_head) and a transpose(1, 2); "
                "a reshape alone mixes different tokens into one head.",
                edit(Q, _no_transpose("query")),
                edit(K, _no_transpose("key")),
                edit(V, _no_transpose("value")),
            ),
            (
                "merge_without_transpose",
                "merge the heads with transpose(1, 2) before the reshape; reshaping (B, n_heads, L, d_head) straight "
                "to (B, L, d_model) concatenates the heads in the wrong order.",
                edit("ac.merge_heads(heads)", "heads.reshape(query.shape[0], query.shape[1], -1)"),
            ),
            (
                "no_output_projection",
                "after merging the heads, apply the output projection: output = merged @ w_o (+ b_o).",
                edit(RESULT, "return ac.merge_heads(heads), weights"),
            ),
            (
                "scale_by_d_model",
                "each head compares d_head-wide vectors: divide its scores by sqrt(d_head) = sqrt(d_model / n_heads), "
                "not by sqrt(d_model).",
                edit(
                    ATTEND,
                    "ac.scaled_dot_product_attention(q, k, v, mask, causal=causal, return_weights=True, "
                    "scale=query.shape[-1] ** -0.5)",
                ),
            ),
            (
                "weights_transposed",
                "the weights are stored as in the equations, q = query @ w_q: no .T, and not F.linear(x, w), which "
                "multiplies by w.T (torch.nn.Linear stores its weight as (out, in)).",
                edit("return x @ w if b is None else x @ w + b", "return x @ w.T if b is None else x @ w.T + b"),
            ),
            (
                "biases_ignored",
                "when b_q, b_k, b_v or b_o are given, add them after their projection (x @ w + b).",
                edit("return x @ w if b is None else x @ w + b", "return x @ w"),
            ),
            (
                "key_bias_ignored",
                "add b_k to the projected keys too (key @ w_k + b_k): it shifts all of a query's scores by the same "
                "amount, so the output hardly changes, but no gradient reaches b_k without it.",
                edit(K, "ac.split_heads(key @ w_k, n_heads)"),
            ),
            (
                "mask_or_causal",
                "with a mask AND causal=True, apply both (a key is visible only if the mask allows it and it is not in "
                "the future), not one or the other.",
                edit(
                    ATTEND,
                    "ac.scaled_dot_product_attention(q, k, v, mask, causal=causal and mask is None, "
                    "return_weights=True)",
                ),
            ),
            (
                "causal_bottom_right",
                "causal=True hides keys j > i from query i, with the triangle at the top-left as in lesson 05 "
                "(causal_mask(L, S)), also when there are more keys than queries; not aligned at the bottom-right.",
                edit(
                    f"heads, weights = {ATTEND}",
                    "if causal:\n"
                    "    future = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool).tril(k.shape[-2] - q.shape[-2])\n"
                    "    mask = future if mask is None else mask & future\n"
                    "heads, weights = ac.scaled_dot_product_attention(q, k, v, mask, return_weights=True)",
                ),
            ),
            (
                "causal_mask_square",
                "the causal mask has one row per query and one column per key: ac.causal_mask(L, S) (or causal=True), "
                "not a square (L, L) mask, when key and value are longer than query.",
                edit(
                    f"heads, weights = {ATTEND}",
                    "if causal:\n"
                    "    future = ac.causal_mask(q.shape[-2])\n"
                    "    mask = future if mask is None else mask & future\n"
                    "heads, weights = ac.scaled_dot_product_attention(q, k, v, mask, return_weights=True)",
                ),
            ),
            (
                "causal_ignored",
                "with causal=True, hide the keys j > i from query i (pass causal on to the attention).",
                edit(ATTEND, "ac.scaled_dot_product_attention(q, k, v, mask, return_weights=True)"),
            ),
            (
                "mask_ignored",
                "pass the mask on to the attention: it hides keys (False = may not attend) in every head.",
                edit(ATTEND, "ac.scaled_dot_product_attention(q, k, v, causal=causal, return_weights=True)"),
            ),
            (
                "values_from_key",
                "the values are projected from the `value` input (value @ w_v), not from `key`: the two inputs may differ.",
                edit(V, "ac.split_heads(project(key, w_v, b_v), n_heads)"),
            ),
            (
                "keys_from_query",
                "the keys are projected from the `key` input (key @ w_k), not from `query`.",
                edit(K, "ac.split_heads(project(query, w_k, b_k), n_heads)"),
            ),
            (
                "output_bias_before_projection",
                "add b_o after the output projection, merged @ w_o + b_o, not (merged + b_o) @ w_o.",
                edit(RESULT, "return project(ac.merge_heads(heads) + (0 if b_o is None else b_o), w_o, None), weights"),
            ),
            (
                "weights_averaged_over_heads",
                "return every head's weights, shape (B, n_heads, L, S), not their average over the heads.",
                edit(RESULT, "return project(ac.merge_heads(heads), w_o, b_o), weights.mean(dim=1)"),
            ),
            (
                "detached_output",
                DETACHED_HINT,
                edit(RESULT, "return project(ac.merge_heads(heads), w_o, b_o).detach(), weights.detach()"),
            ),
        ),
    )
)
