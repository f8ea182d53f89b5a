"""Lesson 07 exercise: the cross-attention forward pass."""

from __future__ import annotations

import math

import torch

from ...cross_attention import cross_attention
from ..casegen import column_major, generator, randn
from ..edits import DETACHED_HINT, catalogue, edit
from ..registry import register
from ..spec import Case, Exercise

LESSON = "07_cross_attention"


def _cases() -> list[Case]:
    g = generator(7)

    def weights(d_model: int, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, ...]:
        return tuple(randn(g, d_model, d_model, dtype=dtype) / math.sqrt(d_model) for _ in range(4))

    source_real = torch.tensor([[True, True, True, True, False, False], [True, True, True, True, True, True]])
    left_real = torch.tensor([[False, False, True, True], [True, True, True, True], [False, True, True, True]])
    return [
        Case(
            (randn(g, 1, 2, 4), randn(g, 1, 3, 4), *weights(4), 2),
            label="2 decoder positions, 3 encoder positions, d_model=4, n_heads=2",
        ),
        Case(
            (randn(g, 3, 4, 8), randn(g, 3, 4, 8), *weights(8), 2),
            {"encoder_mask": left_real},
            label="decoder and encoder (3, 4, 8), encoder_mask with LEFT padding [[F, F, T, T], [T, T, T, T], "
            "[F, T, T, T]]",
        ),
        Case(
            (randn(g, 2, 4, 8), randn(g, 2, 6, 8), *weights(8), 2),
            {"encoder_mask": source_real},
            label="decoder (2, 4, 8), encoder (2, 6, 8), n_heads=2, encoder_mask hiding the last 2 source tokens "
            "of sequence 0",
        ),
        Case(
            (randn(g, 2, 5, 6), randn(g, 2, 3, 6), *weights(6), 3),
            label="decoder (2, 5, 6) longer than encoder (2, 3, 6), n_heads=3",
        ),
        Case(
            (randn(g, 3, 1, 8), randn(g, 3, 7, 8), *weights(8), 4),
            label="one decoding step: decoder (3, 1, 8), encoder (3, 7, 8), n_heads=4",
        ),
        Case(
            (randn(g, 2, 4, 6), randn(g, 2, 4, 6), *weights(6), 2),
            label="as many decoder as encoder positions (2, 4, 6), different states, n_heads=2 (d_head=3)",
        ),
        Case(
            (randn(g, 1, 1, 6), randn(g, 1, 5, 6), *weights(6), 1),
            label="batch of 1, one decoder position, encoder (1, 5, 6), n_heads=1",
        ),
        Case(
            (column_major(randn(g, 2, 3, 4)), column_major(randn(g, 2, 5, 4)), *weights(4), 2),
            label="decoder (2, 3, 4) and encoder (2, 5, 4) stored column-major",
        ),
        Case(
            (
                randn(g, 2, 3, 4, dtype=torch.float64),
                randn(g, 2, 2, 4, dtype=torch.float64),
                *weights(4, torch.float64),
                2,
            ),
            label="float64 decoder (2, 3, 4), encoder (2, 2, 4)",
        ),
        Case(
            (randn(g, 2, 2, 4), randn(g, 2, 3, 4), *weights(4), 2),
            {"encoder_mask": torch.tensor([[True, True, False], [True, True, True]])},
            check_grad=True,
            label="gradients: decoder (2, 2, 4), encoder (2, 3, 4), encoder_mask",
        ),
        # Scores above ~88 overflow exp in float32 unless each row's maximum is subtracted first. The weights
        # are then nearly one-hot, so float32 rounding of the scores (~1e-5 at 150) moves them by far less
        # than the default tolerances.
        Case(
            (randn(g, 2, 3, 8, scale=40.0), randn(g, 2, 5, 8), *weights(8), 2),
            {"encoder_mask": torch.tensor([[True] * 5, [True, True, True, False, False]])},
            label="large scores (decoder states x 40, scores beyond +-100): decoder (2, 3, 8), encoder (2, 5, 8), "
            "encoder_mask",
        ),
    ]


Q = "q = ac.split_heads(decoder_states @ w_q, n_heads)"
K = "k = ac.split_heads(encoder_states @ w_k, n_heads)"
V = "v = ac.split_heads(encoder_states @ w_v, n_heads)"
MASK = "mask = None if encoder_mask is None else encoder_mask[:, None, None, :]"
ATTEND = "ac.scaled_dot_product_attention(q, k, v, mask, return_weights=True)"
RESULT = "return ac.merge_heads(heads) @ w_o, weights"

register(
    Exercise(
        name="cross_attention",
        lesson=LESSON,
        reference=cross_attention,
        cases=_cases,
        mistakes=catalogue(
            LESSON,
            "cross_attention",
            (
                "causal_mask_applied",
                "no causal mask in cross-attention: the encoder's positions are the source sentence, not the "
                "decoder's future, so every decoder position may read all of them.",
                edit(ATTEND, "ac.scaled_dot_product_attention(q, k, v, mask, causal=True, return_weights=True)"),
            ),
            (
                "roles_swapped",
                "queries come from the decoder (decoder_states @ w_q), keys and values from the encoder "
                "(encoder_states @ w_k, encoder_states @ w_v); the output has one row per decoder position.",
                edit(Q, "q = ac.split_heads(encoder_states @ w_q, n_heads)"),
                edit(K, "k = ac.split_heads(decoder_states @ w_k, n_heads)"),
                edit(V, "v = ac.split_heads(decoder_states @ w_v, n_heads)"),
                edit(MASK, "mask = None"),
            ),
            (
                "keys_and_values_from_decoder",
                "keys and values come from the encoder (encoder_states @ w_k, encoder_states @ w_v): the decoder only "
                "asks the questions (queries).",
                edit(K, "k = ac.split_heads(decoder_states @ w_k, n_heads)"),
                edit(V, "v = ac.split_heads(decoder_states @ w_v, n_heads)"),
            ),
            (
                "values_from_decoder",
                "the values come from the encoder too (encoder_states @ w_v): what a decoder position reads is the "
                "source sentence's content.",
                edit(V, "v = ac.split_heads(decoder_states @ w_v, n_heads)"),
            ),
            (
                "no_output_projection",
                "after merging the heads, apply the output projection: output = merged @ w_o.",
                edit(RESULT, "return ac.merge_heads(heads), weights"),
            ),
            (
                "scale_by_d_model",
                "each head compares d_head-wide vectors: divide its scores by sqrt(d_head) = sqrt(d_model / n_heads), "
                "not by sqrt(d_model).",
                edit(
                    ATTEND,
                    "ac.scaled_dot_product_attention(q, k, v, mask, return_weights=True, "
                    "scale=decoder_states.shape[-1] ** -0.5)",
                ),
            ),
            (
                "encoder_mask_ignored",
                "when encoder_mask is given, hide the padded source positions (False) from every head and every "
                "decoder position: a mask of shape (B, 1, 1, S).",
                edit(MASK, "mask = None"),
            ),
            (
                "encoder_mask_inverted",
                "encoder_mask is True at real source tokens (attention allowed), False at padding; the code "
                "hides the real tokens instead.",
                edit(MASK, "mask = None if encoder_mask is None else ~encoder_mask[:, None, None, :]"),
            ),
            (
                "encoder_mask_on_queries",
                "encoder_mask marks source positions, which are the keys (the last axis of the scores): "
                "encoder_mask[:, None, None, :], not encoder_mask[:, None, :, None].",
                edit(MASK, "mask = None if encoder_mask is None else encoder_mask[:, None, :, None]"),
            ),
            (
                "detached_output",
                DETACHED_HINT,
                edit(RESULT, "return (ac.merge_heads(heads) @ w_o).detach(), weights.detach()"),
            ),
            (
                "heads_split_without_transpose",
                "split each projection with a reshape to (B, L, n_heads, d_head) then .transpose(1, 2) (or "
                "ac.split_heads), and merge back the same way; a direct reshape to (B, n_heads, L, d_head) mixes "
                "positions with features.",
                edit(
                    Q,
                    "q = (decoder_states @ w_q).reshape(decoder_states.shape[0], n_heads, decoder_states.shape[1], -1)",
                ),
                edit(
                    K,
                    "k = (encoder_states @ w_k).reshape(encoder_states.shape[0], n_heads, encoder_states.shape[1], -1)",
                ),
                edit(
                    V,
                    "v = (encoder_states @ w_v).reshape(encoder_states.shape[0], n_heads, encoder_states.shape[1], -1)",
                ),
                edit(RESULT, "return heads.reshape(decoder_states.shape) @ w_o, weights"),
            ),
            (
                "heads_merged_without_transpose",
                "merge the heads by moving them back next to d_head first: heads.transpose(1, 2).reshape(B, T, "
                "d_model) (or ac.merge_heads); heads.reshape(B, T, d_model) straight from (B, n_heads, T, d_head) "
                "mixes positions with features.",
                edit(RESULT, "return heads.reshape(decoder_states.shape) @ w_o, weights"),
            ),
            (
                "softmax_over_queries",
                "normalise each decoder position's weights over the source positions: softmax over the last axis "
                "(dim=-1, the keys), not dim=-2.",
                edit(
                    "heads, weights = " + ATTEND,
                    "scores = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5\n"
                    "if mask is not None:\n"
                    "    scores = scores.masked_fill(~mask, float('-inf'))\n"
                    "weights = torch.softmax(scores, dim=-2)\n"
                    "heads = weights @ v",
                ),
            ),
            (
                "masked_scores_set_to_zero",
                "a hidden source position's score must become -inf before the softmax (its weight is then 0); "
                "a score of 0 still gets weight exp(0) = 1 like any other.",
                edit(
                    "heads, weights = " + ATTEND,
                    "scores = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5\n"
                    "if mask is not None:\n"
                    "    scores = scores.masked_fill(~mask, 0.0)\n"
                    "weights = torch.softmax(scores, dim=-1)\n"
                    "heads = weights @ v",
                ),
            ),
            (
                "weights_transposed",
                "the weights are stored as in the equations, w_q: (d_model, d_model) with q = decoder_states @ w_q "
                "(likewise w_k, w_v, w_o); no .T and no F.linear(x, w), which computes x @ w.T.",
                edit(Q, "q = ac.split_heads(decoder_states @ w_q.T, n_heads)"),
                edit(K, "k = ac.split_heads(encoder_states @ w_k.T, n_heads)"),
                edit(V, "v = ac.split_heads(encoder_states @ w_v.T, n_heads)"),
                edit(RESULT, "return ac.merge_heads(heads) @ w_o.T, weights"),
            ),
            (
                "padding_zeroed_after_softmax",
                "hide the padded source positions BEFORE the softmax (a score of -inf); zeroing their weights "
                "afterwards leaves each row's weights summing to less than 1.",
                edit(
                    "heads, weights = " + ATTEND,
                    "weights = torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, dim=-1)\n"
                    "if mask is not None:\n"
                    "    weights = weights * mask\n"
                    "heads = weights @ v",
                ),
            ),
            (
                "softmax_without_max_subtraction",
                "exp of a score above ~88 overflows float32 to inf, and inf / inf is NaN: subtract each row's maximum "
                "before exp (the scores' shift cancels in the ratio), or use torch.softmax or the course's softmax.",
                edit(
                    "heads, weights = " + ATTEND,
                    "scores = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5\n"
                    "if mask is not None:\n"
                    "    scores = scores.masked_fill(~mask, float('-inf'))\n"
                    "weights = torch.exp(scores) / torch.exp(scores).sum(dim=-1, keepdim=True)\n"
                    "heads = weights @ v",
                ),
            ),
        ),
    )
)
