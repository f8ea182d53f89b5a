"""Lesson 02 exercises: project embeddings to queries, keys and values; score queries against keys."""

from __future__ import annotations

import torch

from ...qkv import attention_scores, qkv_projection
from ..casegen import column_major, generator, randn
from ..edits import DETACHED_HINT, catalogue, edit
from ..registry import register
from ..spec import Case, Exercise

LESSON = "02_queries_keys_values"


def _qkv_cases() -> list[Case]:
    g = generator(2)
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 2.0]])  # L=3 tokens, d_model=2
    w_q = torch.tensor([[1.0, 2.0], [0.0, 1.0]])
    w_k = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    w_v = torch.tensor([[2.0, 0.0], [1.0, 1.0]])
    return [
        # Square, asymmetric weights: x @ w.T gives the right shape but the wrong numbers.
        Case((x, w_q, w_k, w_v), label="x of shape (3, 2) and 2×2 weights w_q, w_k, w_v"),
        Case(
            (randn(g, 2, 4, 8), randn(g, 8, 4), randn(g, 8, 4), randn(g, 8, 6)),
            label="a batch x of shape (2, 4, 8), w_q and w_k (8, 4), w_v (8, 6)",
        ),
        Case(
            (randn(g, 1, 1, 6), randn(g, 6, 5), randn(g, 6, 5), randn(g, 6, 3)),
            label="a batch of 1 sequence of 1 token: x (1, 1, 6), w_q and w_k (6, 5), w_v (6, 3)",
        ),
        Case(
            (column_major(randn(g, 2, 3, 5, 7)), column_major(randn(g, 7, 3)), randn(g, 7, 3), randn(g, 7, 2)),
            label="x of shape (2, 3, 5, 7) stored column-major, w_q (7, 3) too, w_v (7, 2)",
        ),
        Case(
            (randn(g, 4, 3, dtype=torch.float64), *(randn(g, 3, 3, dtype=torch.float64) for _ in range(3))),
            label="float64 x (4, 3) and weights (3, 3)",
        ),
        Case(
            (randn(g, 2, 3, 4), randn(g, 4, 3), randn(g, 4, 3), randn(g, 4, 2)),
            check_grad=True,
            label="gradients: x (2, 3, 4), w_q and w_k (4, 3), w_v (4, 2)",
        ),
    ]


SOLUTION = "return x @ w_q, x @ w_k, x @ w_v"

register(
    Exercise(
        name="qkv_projection",
        lesson=LESSON,
        reference=qkv_projection,
        cases=_qkv_cases,
        mistakes=catalogue(
            LESSON,
            "qkv_projection",
            (
                "transposed_weights",
                "the weights are stored as in the equations, w_q: (d_model, d_k), so q = x @ w_q without a .T "
                "(torch.nn.Linear stores the transpose; these matrices are not a Linear's weight).",
                edit(SOLUTION, "return x @ w_q.T, x @ w_k.T, x @ w_v.T"),
            ),
            (
                "keys_from_w_q",
                "the keys come from w_k (k = x @ w_k); the code uses w_q for them, so every key equals its query.",
                edit(SOLUTION, "return x @ w_q, x @ w_q, x @ w_v"),
            ),
            (
                "values_from_w_k",
                "the values come from w_v (v = x @ w_v); the code uses w_k for them.",
                edit(SOLUTION, "return x @ w_q, x @ w_k, x @ w_k"),
            ),
            (
                "squeezed",
                "keep every axis of x: a batch of one sequence of one token still gives (1, 1, d); .squeeze() drops "
                "those size-1 axes.",
                edit(SOLUTION, "return (x @ w_q).squeeze(), (x @ w_k).squeeze(), (x @ w_v).squeeze()"),
            ),
            (
                "three_axes_assumed",
                "x has any number of leading axes (the first case is a plain (L, d_model) matrix): x @ w_q works "
                "for all of them; unpacking `batch, length, d_model = x.shape` (or torch.bmm) assumes exactly three.",
                edit(SOLUTION, "batch, length, d_model = x.shape\nreturn x @ w_q, x @ w_k, x @ w_v"),
            ),
            (
                "queries_scaled",
                "the projections are plain products, q = x @ w_q; dividing by sqrt(d_k) belongs to the scores "
                "(lesson 03), not to q.",
                edit(SOLUTION, "return x @ w_q / w_q.shape[-1] ** 0.5, x @ w_k, x @ w_v"),
            ),
            (
                "float32_forced",
                "keep the input's dtype: a float64 x and float64 weights give float64 q, k, v (no .float()).",
                edit(SOLUTION, "return x.float() @ w_q.float(), x.float() @ w_k.float(), x.float() @ w_v.float()"),
            ),
            (
                "detached_output",
                DETACHED_HINT,
                edit(SOLUTION, "return (x @ w_q).detach(), (x @ w_k).detach(), (x @ w_v).detach()"),
            ),
        ),
    )
)


def _scores_cases() -> list[Case]:
    g = generator(20)
    return [
        Case(
            (torch.tensor([[1.0, 0.0], [1.0, 2.0]]), torch.tensor([[1.0, 1.0], [0.0, 1.0], [2.0, 0.0]])),
            label="2 queries q = [[1, 0], [1, 2]] and 3 keys k = [[1, 1], [0, 1], [2, 0]]",
        ),
        # B = S = d_k = 2: here k.T (which reverses all three axes) still multiplies, giving wrong numbers.
        Case((randn(g, 2, 3, 2), randn(g, 2, 2, 2)), label="a batch: q of shape (2, 3, 2) and k of shape (2, 2, 2)"),
        Case(
            (randn(g, 2, 4, 5, 8), randn(g, 1, 4, 6, 8)),
            label="q of shape (2, 4, 5, 8) and k of shape (1, 4, 6, 8) (k broadcasts over the batch)",
        ),
        Case((randn(g, 1, 1, 5), randn(g, 1, 3, 5)), label="a batch of one: q (1, 1, 5), k (1, 3, 5)"),
        Case(
            (column_major(randn(g, 3, 4, 7)), column_major(randn(g, 3, 6, 7))),
            label="q (3, 4, 7) and k (3, 6, 7) stored column-major",
        ),
        Case(
            (randn(g, 3, 3, dtype=torch.float64), randn(g, 4, 3, dtype=torch.float64)),
            label="float64 q (3, 3), k (4, 3)",
        ),
        Case((randn(g, 2, 3, 4), randn(g, 2, 5, 4)), check_grad=True, label="gradients: q (2, 3, 4), k (2, 5, 4)"),
    ]


SCORES = "return q @ k.transpose(-2, -1)"

register(
    Exercise(
        name="attention_scores",
        lesson=LESSON,
        reference=attention_scores,
        cases=_scores_cases,
        mistakes=catalogue(
            LESSON,
            "attention_scores",
            (
                "q_and_k_swapped",
                "row i of the scores belongs to query i: compute q @ k^T (shape (..., L, S)), not k @ q^T.",
                edit(SCORES, "return k @ q.transpose(-2, -1)"),
            ),
            (
                "k_dot_t",
                "k.T reverses all axes of a batched tensor; transpose only the last two: k.transpose(-2, -1).",
                edit(SCORES, "return q @ k.T"),
            ),
            (
                "fixed_axes_transpose",
                "transpose the last two axes, k.transpose(-2, -1): a fixed pair like transpose(1, 2) (or torch.bmm) "
                "assumes a 3-D k, and q and k may have any number of leading axes.",
                edit(SCORES, "return q @ k.transpose(1, 2)"),
            ),
            (
                "scaled_too_early",
                "attention_scores returns the raw scores q @ k^T; dividing by sqrt(d_k) is lesson 03's "
                "scaled_attention_scores.",
                edit(SCORES, "return q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5"),
            ),
            (
                "squeezed",
                "keep every axis: with a batch of one (or one query) the scores are still (1, 1, S); .squeeze() drops them.",
                edit(SCORES, "return (q @ k.transpose(-2, -1)).squeeze()"),
            ),
            ("detached_output", DETACHED_HINT, edit(SCORES, "return (q @ k.transpose(-2, -1)).detach()")),
        ),
    )
)
