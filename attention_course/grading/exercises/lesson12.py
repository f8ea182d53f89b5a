"""Lesson 12 exercises: the pieces of a real encoder (all-MiniLM-L6-v2) that the learner plugs in.

Each exercise is graded on a small readable case, then on the real model: the hidden states that
enter its first and last layer for a padded batch of two sentences, with that layer's weights.
"""

from __future__ import annotations

import functools
import math

import torch

from ...pretrained import (
    EncoderLayerWeights,
    encode,
    encoder_feed_forward,
    encoder_self_attention,
    load_tokenizer,
    load_weights,
    mean_pooling,
    tokenize,
)
from ..registry import register
from ..spec import Case, Exercise, Mistake

LESSON = "12_capstone"
SENTENCES = ("The tiger jumped out of a tree to get a drink because it was thirsty.", "A mole dug a tunnel.")


@functools.cache
def _real_hidden_states() -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
    """The reference encoder's hidden states (n_layers + 1 of (2, L, 384)) and key mask for ``SENTENCES``."""
    batch = tokenize(load_tokenizer(), list(SENTENCES))
    with torch.no_grad():
        output = encode(load_weights(), batch.input_ids, batch.key_mask)
    return output.hidden_states, batch.key_mask


def _real_label(layer: int) -> str:
    return f"all-MiniLM-L6-v2 layer {layer}, a padded batch of 2 sentences (2, 17, 384), 12 heads"


def _small_batch(d_model: int, lengths: list[int], seed: int, scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    hidden = torch.randn(len(lengths), max(lengths), d_model, generator=generator) * scale
    return hidden, torch.arange(max(lengths)) < torch.tensor(lengths)[:, None]


# ---------------------------------------------------------------- encoder_self_attention


def _attention_cases() -> list[Case]:
    weights = load_weights()
    hidden_states, key_mask = _real_hidden_states()
    last = weights.config.n_layers - 1
    one, one_mask = _small_batch(4, [3], seed=0)
    two, two_mask = _small_batch(8, [4, 2], seed=1)
    return [
        Case((one, EncoderLayerWeights.random(4, 8, seed=0), one_mask, 2),
             label="one sentence of 3 tokens, d_model 4, 2 heads, no padding"),
        Case((two, EncoderLayerWeights.random(8, 16, seed=1), two_mask, 2),
             label="2 sentences of 4 and 2 tokens (the second padded), d_model 8, 2 heads"),
        Case((hidden_states[0], weights.layers[0], key_mask, weights.config.n_heads), label=_real_label(0)),
        Case((hidden_states[last], weights.layers[last], key_mask, weights.config.n_heads), label=_real_label(last)),
    ]


def _no_padding_mask(hidden, layer, key_mask, n_heads):
    from attention_course.pretrained import encoder_self_attention

    return encoder_self_attention(hidden, layer, torch.ones_like(key_mask), n_heads)


def _mask_on_queries(hidden, layer, key_mask, n_heads):
    from attention_course import masked_attention
    from attention_course.pretrained import encoder_self_attention

    def attend(q, k, v, mask):  # mask (B, 1, 1, L) turned into (B, 1, L, 1): hides padded queries
        return masked_attention(q, k, v, mask.transpose(-2, -1))

    return encoder_self_attention(hidden, layer, key_mask, n_heads, attention_fn=attend)


def _scale_by_d_model(hidden, layer, key_mask, n_heads):
    from attention_course import scaled_dot_product_attention
    from attention_course.pretrained import encoder_self_attention

    def attend(q, k, v, mask):
        d_model = q.shape[1] * q.shape[-1]
        return scaled_dot_product_attention(q, k, v, mask, scale=1 / math.sqrt(d_model), return_weights=True)

    return encoder_self_attention(hidden, layer, key_mask, n_heads, attention_fn=attend)


def _heads_without_transpose(hidden, layer, key_mask, n_heads):
    from attention_course import masked_attention

    batch, length, d_model = hidden.shape
    q = (hidden @ layer.w_q + layer.b_q).reshape(batch, n_heads, length, d_model // n_heads)
    k = (hidden @ layer.w_k + layer.b_k).reshape(batch, n_heads, length, d_model // n_heads)
    v = (hidden @ layer.w_v + layer.b_v).reshape(batch, n_heads, length, d_model // n_heads)
    heads, weights = masked_attention(q, k, v, key_mask[:, None, None, :])
    return heads.reshape(batch, length, d_model) @ layer.w_o + layer.b_o, weights


def _no_output_projection(hidden, layer, key_mask, n_heads):
    from attention_course import masked_attention, merge_heads, split_heads

    q = split_heads(hidden @ layer.w_q + layer.b_q, n_heads)
    k = split_heads(hidden @ layer.w_k + layer.b_k, n_heads)
    v = split_heads(hidden @ layer.w_v + layer.b_v, n_heads)
    heads, weights = masked_attention(q, k, v, key_mask[:, None, None, :])
    return merge_heads(heads), weights


def _transposed_weights(hidden, layer, key_mask, n_heads):
    from attention_course import masked_attention, merge_heads, split_heads

    q = split_heads(hidden @ layer.w_q.T + layer.b_q, n_heads)
    k = split_heads(hidden @ layer.w_k.T + layer.b_k, n_heads)
    v = split_heads(hidden @ layer.w_v.T + layer.b_v, n_heads)
    heads, weights = masked_attention(q, k, v, key_mask[:, None, None, :])
    return merge_heads(heads) @ layer.w_o.T + layer.b_o, weights


register(Exercise(
    name="encoder_self_attention",
    lesson=LESSON,
    reference=encoder_self_attention,
    cases=_attention_cases,
    mistakes=(
        Mistake("no_padding_mask",
                "hide the padding: pass a mask built from key_mask, key_mask[:, None, None, :] of shape (B, 1, 1, L), "
                "so that no query attends to a [PAD] key.",
                _no_padding_mask),
        Mistake("mask_on_queries",
                "the padding mask acts on the keys (the last axis of the scores): key_mask[:, None, None, :], "
                "not key_mask[:, None, :, None], which hides padded queries and lets real ones attend to [PAD].",
                _mask_on_queries),
        Mistake("scale_by_d_model",
                "each head compares vectors of size d_head = d_model / n_heads: divide its scores by sqrt(d_head), "
                "not sqrt(d_model).",
                _scale_by_d_model),
        Mistake("heads_without_transpose",
                "split heads with a reshape to (B, L, n_heads, d_head) then .transpose(1, 2); reshaping straight "
                "to (B, n_heads, L, d_head) mixes tokens between heads (split_heads/merge_heads do it right).",
                _heads_without_transpose),
        Mistake("no_output_projection",
                "after merging the heads, apply the output projection: merged @ layer.w_o + layer.b_o.",
                _no_output_projection),
        Mistake("transposed_weights",
                "the weights are stored as in the equations, w_q: (d_model, d_model) with q = hidden @ w_q + b_q; "
                "no .T (the checkpoint's nn.Linear layout was transposed when it was loaded).",
                _transposed_weights),
    ),
))

# ---------------------------------------------------------------- encoder_feed_forward


def _feed_forward_cases() -> list[Case]:
    weights = load_weights()
    hidden_states, _ = _real_hidden_states()
    last = weights.config.n_layers - 1
    one, _ = _small_batch(4, [3], seed=2, scale=3.0)  # spread the pre-activations over GELU's curved part
    return [
        Case((one, EncoderLayerWeights.random(4, 8, seed=2)), label="one sentence of 3 tokens, d_model 4, d_ff 8"),
        Case((hidden_states[1], weights.layers[0]), label=_real_label(0).replace(", 12 heads", "")),
        Case((hidden_states[last], weights.layers[last]), label=_real_label(last).replace(", 12 heads", "")),
    ]


def _tanh_gelu(hidden, layer):
    inner = hidden @ layer.w_ff1 + layer.b_ff1
    return torch.nn.functional.gelu(inner, approximate="tanh") @ layer.w_ff2 + layer.b_ff2


def _relu(hidden, layer):
    return torch.relu(hidden @ layer.w_ff1 + layer.b_ff1) @ layer.w_ff2 + layer.b_ff2


def _activation_after_output(hidden, layer):
    inner = torch.nn.functional.gelu(hidden @ layer.w_ff1 + layer.b_ff1)
    return torch.nn.functional.gelu(inner @ layer.w_ff2 + layer.b_ff2)


register(Exercise(
    name="encoder_feed_forward",
    lesson=LESSON,
    reference=encoder_feed_forward,
    cases=_feed_forward_cases,
    mistakes=(
        Mistake("tanh_gelu",
                "BERT uses the exact GELU, x * Phi(x) with the erf (torch.nn.functional.gelu(x)), not the tanh "
                "approximation (approximate='tanh'); the difference is small but grows through six layers.",
                _tanh_gelu),
        Mistake("relu",
                "the activation is GELU (torch.nn.functional.gelu), not ReLU.",
                _relu),
        Mistake("activation_after_output",
                "apply GELU only between the two linear maps; the second one's output goes out as it is.",
                _activation_after_output),
    ),
))

# ---------------------------------------------------------------- mean_pooling


def _pooling_cases() -> list[Case]:
    hidden_states, key_mask = _real_hidden_states()
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 0.0], [9.0, 9.0]], [[0.0, 4.0], [2.0, 2.0], [4.0, 0.0]]])
    return [
        Case((hidden, torch.tensor([[True, True, False], [True, True, True]])),
             label="hidden (2, 3, 2), the first sentence padded: key_mask [[True, True, False], [True, True, True]]"),
        Case((hidden_states[-1], key_mask), label="all-MiniLM-L6-v2's last hidden states, a padded batch (2, 17, 384)"),
    ]


def _cls_pooling(hidden, key_mask):
    return torch.nn.functional.normalize(hidden[:, 0], dim=-1)


def _mean_over_padding(hidden, key_mask):
    return torch.nn.functional.normalize(hidden.mean(dim=1), dim=-1)


def _not_normalised(hidden, key_mask):
    real = key_mask[..., None].to(hidden.dtype)
    return (hidden * real).sum(dim=1) / real.sum(dim=1)


register(Exercise(
    name="mean_pooling",
    lesson=LESSON,
    reference=mean_pooling,
    cases=_pooling_cases,
    mistakes=(
        Mistake("cls_pooling",
                "this model's sentence embedding is the mean of all real tokens, not the [CLS] vector hidden[:, 0].",
                _cls_pooling),
        Mistake("mean_over_padding",
                "average over the real tokens only: weight each token by key_mask and divide by the number of real "
                "tokens, not by L.",
                _mean_over_padding),
        Mistake("not_normalised",
                "divide the mean by its L2 norm (torch.nn.functional.normalize) so every embedding has length 1.",
                _not_normalised),
    ),
))
