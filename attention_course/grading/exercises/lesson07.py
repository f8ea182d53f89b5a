"""Lesson 07 exercise: the cross-attention forward pass."""

from __future__ import annotations

import math

import torch

from ...cross_attention import cross_attention
from ..registry import register
from ..spec import Case, Exercise, Mistake


def _cases() -> list[Case]:
    generator = torch.Generator().manual_seed(7)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator)

    def weights(d_model: int) -> tuple[torch.Tensor, ...]:
        return tuple(randn(d_model, d_model) / math.sqrt(d_model) for _ in range(4))

    source_real = torch.tensor([[True, True, True, True, False, False], [True, True, True, True, True, True]])
    return [
        Case((randn(1, 2, 4), randn(1, 3, 4), *weights(4), 2),
             label="2 decoder positions, 3 encoder positions, d_model=4, n_heads=2"),
        Case((randn(2, 4, 8), randn(2, 6, 8), *weights(8), 2), {"encoder_mask": source_real},
             label="decoder (2, 4, 8), encoder (2, 6, 8), n_heads=2, encoder_mask hiding the last 2 source tokens of sequence 0"),
        Case((randn(2, 5, 6), randn(2, 3, 6), *weights(6), 3),
             label="decoder (2, 5, 6) longer than encoder (2, 3, 6), n_heads=3"),
        Case((randn(3, 1, 8), randn(3, 7, 8), *weights(8), 4),
             label="one decoding step: decoder (3, 1, 8), encoder (3, 7, 8), n_heads=4"),
    ]


def _causal_mask_applied(decoder_states, encoder_states, w_q, w_k, w_v, w_o, n_heads, encoder_mask=None):
    from attention_course import merge_heads, scaled_dot_product_attention, split_heads

    q = split_heads(decoder_states @ w_q, n_heads)
    k, v = split_heads(encoder_states @ w_k, n_heads), split_heads(encoder_states @ w_v, n_heads)
    mask = None if encoder_mask is None else encoder_mask[:, None, None, :]
    heads, weights = scaled_dot_product_attention(q, k, v, mask, causal=True, return_weights=True)
    return merge_heads(heads) @ w_o, weights


def _roles_swapped(decoder_states, encoder_states, w_q, w_k, w_v, w_o, n_heads, encoder_mask=None):
    from attention_course import merge_heads, scaled_dot_product_attention, split_heads

    q = split_heads(encoder_states @ w_q, n_heads)
    k, v = split_heads(decoder_states @ w_k, n_heads), split_heads(decoder_states @ w_v, n_heads)
    heads, weights = scaled_dot_product_attention(q, k, v, return_weights=True)
    return merge_heads(heads) @ w_o, weights


def _no_output_projection(decoder_states, encoder_states, w_q, w_k, w_v, w_o, n_heads, encoder_mask=None):
    from attention_course import merge_heads, scaled_dot_product_attention, split_heads

    q = split_heads(decoder_states @ w_q, n_heads)
    k, v = split_heads(encoder_states @ w_k, n_heads), split_heads(encoder_states @ w_v, n_heads)
    mask = None if encoder_mask is None else encoder_mask[:, None, None, :]
    heads, weights = scaled_dot_product_attention(q, k, v, mask, return_weights=True)
    return merge_heads(heads), weights


def _scale_by_d_model(decoder_states, encoder_states, w_q, w_k, w_v, w_o, n_heads, encoder_mask=None):
    from attention_course import merge_heads, scaled_dot_product_attention, split_heads

    q = split_heads(decoder_states @ w_q, n_heads)
    k, v = split_heads(encoder_states @ w_k, n_heads), split_heads(encoder_states @ w_v, n_heads)
    mask = None if encoder_mask is None else encoder_mask[:, None, None, :]
    heads, weights = scaled_dot_product_attention(q, k, v, mask, return_weights=True,
                                                  scale=1 / math.sqrt(decoder_states.shape[-1]))
    return merge_heads(heads) @ w_o, weights


def _encoder_mask_ignored(decoder_states, encoder_states, w_q, w_k, w_v, w_o, n_heads, encoder_mask=None):
    from attention_course import merge_heads, scaled_dot_product_attention, split_heads

    q = split_heads(decoder_states @ w_q, n_heads)
    k, v = split_heads(encoder_states @ w_k, n_heads), split_heads(encoder_states @ w_v, n_heads)
    heads, weights = scaled_dot_product_attention(q, k, v, return_weights=True)
    return merge_heads(heads) @ w_o, weights


def _encoder_mask_inverted(decoder_states, encoder_states, w_q, w_k, w_v, w_o, n_heads, encoder_mask=None):
    from attention_course import merge_heads, scaled_dot_product_attention, split_heads

    q = split_heads(decoder_states @ w_q, n_heads)
    k, v = split_heads(encoder_states @ w_k, n_heads), split_heads(encoder_states @ w_v, n_heads)
    mask = None if encoder_mask is None else ~encoder_mask[:, None, None, :]
    heads, weights = scaled_dot_product_attention(q, k, v, mask, return_weights=True)
    return merge_heads(heads) @ w_o, weights


register(Exercise(
    name="cross_attention",
    lesson="07_cross_attention",
    reference=cross_attention,
    cases=_cases,
    mistakes=(
        Mistake("causal_mask_applied",
                "no causal mask in cross-attention: the encoder's positions are the source sentence, not the "
                "decoder's future, so every decoder position may read all of them.",
                _causal_mask_applied),
        Mistake("roles_swapped",
                "queries come from the decoder (decoder_states @ w_q), keys and values from the encoder "
                "(encoder_states @ w_k, encoder_states @ w_v); the output has one row per decoder position.",
                _roles_swapped),
        Mistake("no_output_projection",
                "after merging the heads, apply the output projection: output = merged @ w_o.",
                _no_output_projection),
        Mistake("scale_by_d_model",
                "each head compares d_head-wide vectors: divide its scores by sqrt(d_head) = sqrt(d_model / n_heads), "
                "not by sqrt(d_model).",
                _scale_by_d_model),
        Mistake("encoder_mask_ignored",
                "when encoder_mask is given, hide the padded source positions (False) from every head and every "
                "decoder position: a mask of shape (B, 1, 1, S).",
                _encoder_mask_ignored),
        Mistake("encoder_mask_inverted",
                "encoder_mask is True at real source tokens (attention allowed), False at padding; the code "
                "hides the real tokens instead.",
                _encoder_mask_inverted),
    ),
))
