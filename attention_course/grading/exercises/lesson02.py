"""Lesson 02 exercises: project embeddings to queries, keys and values; score queries against keys."""

from __future__ import annotations

import math

import torch

from ...qkv import attention_scores, qkv_projection
from ..registry import register
from ..spec import Case, Exercise, Mistake


def _qkv_cases() -> list[Case]:
    generator = torch.Generator().manual_seed(2)
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 2.0]])  # L=3 tokens, d_model=2
    w_q = torch.tensor([[1.0, 2.0], [0.0, 1.0]])
    w_k = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    w_v = torch.tensor([[2.0, 0.0], [1.0, 1.0]])
    batch = torch.randn(2, 4, 8, generator=generator)  # (B, L, d_model)
    return [
        # Square, asymmetric weights: x @ w.T gives the right shape but the wrong numbers.
        Case((x, w_q, w_k, w_v), label="x of shape (3, 2) and 2×2 weights w_q, w_k, w_v"),
        Case((batch, torch.randn(8, 4, generator=generator), torch.randn(8, 4, generator=generator),
              torch.randn(8, 6, generator=generator)),
             label="a batch x of shape (2, 4, 8), w_q and w_k (8, 4), w_v (8, 6)"),
    ]


def _transposed_weights(x, w_q, w_k, w_v):
    return x @ w_q.T, x @ w_k.T, x @ w_v.T


def _keys_from_w_q(x, w_q, w_k, w_v):
    return x @ w_q, x @ w_q, x @ w_v


def _values_from_w_k(x, w_q, w_k, w_v):
    return x @ w_q, x @ w_k, x @ w_k


register(Exercise(
    name="qkv_projection",
    lesson="02_queries_keys_values",
    reference=qkv_projection,
    cases=_qkv_cases,
    mistakes=(
        Mistake("transposed_weights",
                "the weights are stored as in the equations, w_q: (d_model, d_k), so q = x @ w_q without a .T "
                "(torch.nn.Linear stores the transpose; these matrices are not a Linear's weight).",
                _transposed_weights),
        Mistake("keys_from_w_q",
                "the keys come from w_k (k = x @ w_k); the code uses w_q for them, so every key equals its query.",
                _keys_from_w_q),
        Mistake("values_from_w_k",
                "the values come from w_v (v = x @ w_v); the code uses w_k for them.",
                _values_from_w_k),
    ),
))


def _scores_cases() -> list[Case]:
    generator = torch.Generator().manual_seed(20)
    return [
        Case((torch.tensor([[1.0, 0.0], [1.0, 2.0]]), torch.tensor([[1.0, 1.0], [0.0, 1.0], [2.0, 0.0]])),
             label="2 queries q = [[1, 0], [1, 2]] and 3 keys k = [[1, 1], [0, 1], [2, 0]]"),
        # B = S = d_k = 2: here k.T (which reverses all three axes) still multiplies, giving wrong numbers.
        Case((torch.randn(2, 3, 2, generator=generator), torch.randn(2, 2, 2, generator=generator)),
             label="a batch: q of shape (2, 3, 2) and k of shape (2, 2, 2)"),
        Case((torch.randn(2, 4, 5, 8, generator=generator), torch.randn(1, 4, 6, 8, generator=generator)),
             label="q of shape (2, 4, 5, 8) and k of shape (1, 4, 6, 8) (k broadcasts over the batch)"),
    ]


def _q_and_k_swapped(q, k):
    return k @ q.transpose(-2, -1)


def _k_dot_t(q, k):
    return q @ k.T


def _scaled_too_early(q, k):
    return q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])


register(Exercise(
    name="attention_scores",
    lesson="02_queries_keys_values",
    reference=attention_scores,
    cases=_scores_cases,
    mistakes=(
        Mistake("q_and_k_swapped",
                "row i of the scores belongs to query i: compute q @ k^T (shape (..., L, S)), not k @ q^T.",
                _q_and_k_swapped),
        Mistake("k_dot_t",
                "k.T reverses all axes of a batched tensor; transpose only the last two: k.transpose(-2, -1).",
                _k_dot_t),
        Mistake("scaled_too_early",
                "attention_scores returns the raw scores q @ k^T; dividing by sqrt(d_k) is lesson 03's "
                "scaled_attention_scores.",
                _scaled_too_early),
    ),
))
