"""Lesson 12 exercises: the pieces of a real encoder (all-MiniLM-L6-v2) that the learner plugs in.

Each exercise is graded on a small readable case, then on the real model: the hidden states that
enter its first and last layer for a padded batch of two sentences, with that layer's weights.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

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
from ..casegen import generator, randn
from ..edits import DETACHED_HINT, catalogue, edit
from ..registry import register
from ..spec import Case, Exercise

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


def _small_batch(
    d_model: int, lengths: list[int], seed: int, scale: float = 1.0, left: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random hidden states of a padded batch and its key mask (padding on the right, or the left)."""
    hidden = randn(generator(seed), len(lengths), max(lengths), d_model, scale=scale)
    positions = torch.arange(max(lengths))
    lengths_t = torch.tensor(lengths)[:, None]
    real = positions >= max(lengths) - lengths_t if left else positions < lengths_t
    return hidden, real


def _real_rows(key_mask: torch.Tensor) -> Callable[[Any], Any]:
    """Keep what the exercise defines: the outputs and weights of real (not [PAD]) query positions.

    A padded position's own output is never used by the model (mean pooling skips it), so a learner who
    also masks the padded queries is right; their weights over the keys still must hide the [PAD] keys.
    """

    def select(result: Any) -> Any:
        if not (
            isinstance(result, tuple | list)
            and len(result) == 2
            and all(isinstance(t, torch.Tensor) for t in result)
            and result[0].shape[:2] == key_mask.shape
            and result[1].dim() == 4
            and result[1].shape[0] == key_mask.shape[0]
            and result[1].shape[2] == key_mask.shape[1]
        ):
            return result  # the comparison reports what is wrong with its type or shape
        output, weights = result
        return output[key_mask], weights.transpose(1, 2)[key_mask]

    return select


# ---------------------------------------------------------------- encoder_self_attention


def _attention_cases() -> list[Case]:
    weights = load_weights()
    hidden_states, key_mask = _real_hidden_states()
    last = weights.config.n_layers - 1
    one, one_mask = _small_batch(4, [3], seed=0)
    two, two_mask = _small_batch(8, [4, 2], seed=1)
    left, left_mask = _small_batch(12, [5, 3, 2], seed=3, left=True)
    grad, grad_mask = _small_batch(6, [3, 2], seed=4)
    large, large_mask = _small_batch(8, [4, 3], seed=9)
    large_layer = EncoderLayerWeights.random(8, 16, seed=9)
    return [
        Case(
            (one, EncoderLayerWeights.random(4, 8, seed=0), one_mask, 2),
            label="one sentence of 3 tokens, d_model 4, 2 heads, no padding",
        ),
        Case(
            (two, EncoderLayerWeights.random(8, 16, seed=1), two_mask, 2),
            select=_real_rows(two_mask),
            label="2 sentences of 4 and 2 tokens (the second padded), d_model 8, 2 heads",
        ),
        Case(
            (left, EncoderLayerWeights.random(12, 24, seed=3), left_mask, 4),
            select=_real_rows(left_mask),
            label="3 sentences of 5, 3 and 2 tokens padded on the LEFT, d_model 12, 4 heads (d_head 3)",
        ),
        Case(
            (hidden_states[0], weights.layers[0], key_mask, weights.config.n_heads),
            select=_real_rows(key_mask),
            label=_real_label(0),
        ),
        Case(
            (hidden_states[last], weights.layers[last], key_mask, weights.config.n_heads),
            select=_real_rows(key_mask),
            label=_real_label(last),
        ),
        Case(
            (grad, EncoderLayerWeights.random(6, 12, seed=4), grad_mask, 2),
            select=_real_rows(grad_mask),
            check_grad=True,
            label="gradients: 2 sentences of 3 and 2 tokens, d_model 6, 2 heads",
        ),
        # Scores beyond +-100 overflow exp in float32 unless each row's maximum is subtracted first; the
        # weights are then nearly one-hot, so float32 rounding of the scores stays far inside the tolerances.
        Case(
            (
                large,
                dataclasses.replace(large_layer, w_q=large_layer.w_q * 40, b_q=large_layer.b_q * 40),
                large_mask,
                2,
            ),
            select=_real_rows(large_mask),
            label="large scores (w_q and b_q x 40): 2 sentences of 4 and 3 tokens, d_model 8, 2 heads",
        ),
    ]


Q = "q = split_heads(hidden @ layer.w_q + layer.b_q, n_heads)"
K = "k = split_heads(hidden @ layer.w_k + layer.b_k, n_heads)"
V = "v = split_heads(hidden @ layer.w_v + layer.b_v, n_heads)"
ATTEND = "heads, weights = masked_attention(q, k, v, key_mask[:, None, None, :])"
RESULT = "return merge_heads(heads) @ layer.w_o + layer.b_o, weights"
BY_D_MODEL = """
scores = (q @ k.transpose(-2, -1) / hidden.shape[-1] ** 0.5).masked_fill(~key_mask[:, None, None, :], float('-inf'))
weights = torch.softmax(scores, dim=-1)
heads = weights @ v
"""


def _reshaped(name: str) -> str:
    return f"{name} = (hidden @ layer.w_{name} + layer.b_{name}).reshape(hidden.shape[0], n_heads, hidden.shape[1], -1)"


register(
    Exercise(
        name="encoder_self_attention",
        lesson=LESSON,
        reference=encoder_self_attention,
        cases=_attention_cases,
        mistakes=catalogue(
            LESSON,
            "encoder_self_attention",
            (
                "no_padding_mask",
                "hide the padding: pass a mask built from key_mask, key_mask[:, None, None, :] of shape (B, 1, 1, L), "
                "so that no query attends to a [PAD] key.",
                edit(ATTEND, "heads, weights = masked_attention(q, k, v)"),
            ),
            (
                "mask_on_queries",
                "the padding mask acts on the keys (the last axis of the scores): key_mask[:, None, None, :], "
                "not key_mask[:, None, :, None], which hides padded queries and lets real ones attend to [PAD].",
                edit(ATTEND, "heads, weights = masked_attention(q, k, v, key_mask[:, None, :, None])"),
            ),
            (
                "padding_mask_inverted",
                "key_mask is True at real tokens: pass it as it is (True = may attend), not inverted, which lets every "
                "query attend only to [PAD].",
                edit(ATTEND, "heads, weights = masked_attention(q, k, v, ~key_mask[:, None, None, :])"),
            ),
            (
                "scale_by_d_model",
                "each head compares vectors of size d_head = d_model / n_heads: divide its scores by sqrt(d_head), "
                "not sqrt(d_model).",
                edit(ATTEND, BY_D_MODEL),
            ),
            (
                "heads_without_transpose",
                "split heads with a reshape to (B, L, n_heads, d_head) then .transpose(1, 2); reshaping straight "
                "to (B, n_heads, L, d_head) mixes tokens between heads (split_heads/merge_heads do it right).",
                edit(Q, _reshaped("q")),
                edit(K, _reshaped("k")),
                edit(V, _reshaped("v")),
                edit("merge_heads(heads)", "heads.reshape(hidden.shape)"),
            ),
            (
                "no_output_projection",
                "after merging the heads, apply the output projection: merged @ layer.w_o + layer.b_o.",
                edit(RESULT, "return merge_heads(heads), weights"),
            ),
            (
                "biases_ignored",
                "every projection has a bias: hidden @ layer.w_q + layer.b_q (and b_k, b_v, b_o), as in nn.Linear.",
                edit(Q, "q = split_heads(hidden @ layer.w_q, n_heads)"),
                edit(K, "k = split_heads(hidden @ layer.w_k, n_heads)"),
                edit(V, "v = split_heads(hidden @ layer.w_v, n_heads)"),
                edit(RESULT, "return merge_heads(heads) @ layer.w_o, weights"),
            ),
            (
                "transposed_weights",
                "the weights are stored as in the equations, w_q: (d_model, d_model) with q = hidden @ w_q + b_q; "
                "no .T (the checkpoint's nn.Linear layout was transposed when it was loaded).",
                edit(Q, "q = split_heads(hidden @ layer.w_q.T + layer.b_q, n_heads)"),
                edit(K, "k = split_heads(hidden @ layer.w_k.T + layer.b_k, n_heads)"),
                edit(V, "v = split_heads(hidden @ layer.w_v.T + layer.b_v, n_heads)"),
                edit(RESULT, "return merge_heads(heads) @ layer.w_o.T + layer.b_o, weights"),
            ),
            (
                "detached_output",
                DETACHED_HINT,
                edit(RESULT, "return (merge_heads(heads) @ layer.w_o + layer.b_o).detach(), weights.detach()"),
            ),
            (
                "output_bias_missing",
                "the output projection has a bias too: merge_heads(heads) @ layer.w_o + layer.b_o.",
                edit(RESULT, "return merge_heads(heads) @ layer.w_o, weights"),
            ),
            (
                "projection_biases_missing",
                "the query, key and value projections have biases: hidden @ layer.w_q + layer.b_q (likewise b_k, b_v).",
                edit(Q, "q = split_heads(hidden @ layer.w_q, n_heads)"),
                edit(K, "k = split_heads(hidden @ layer.w_k, n_heads)"),
                edit(V, "v = split_heads(hidden @ layer.w_v, n_heads)"),
            ),
            (
                "residual_added",
                "return the sublayer's output before the residual (the encoder adds hidden itself, then applies "
                "its layer norm): merge_heads(heads) @ layer.w_o + layer.b_o, without + hidden.",
                edit(RESULT, "return hidden + merge_heads(heads) @ layer.w_o + layer.b_o, weights"),
            ),
            (
                "nan_in_padded_query_rows",
                "the padded query rows come out NaN (a pair mask hides every key from them, and a softmax over "
                "only -inf gives 0/0): the check ignores those rows' values, but the NaN flows back into every "
                "gradient; mask only the keys, key_mask[:, None, None, :], or give a row with no allowed key zero "
                "weights (masked_attention does).",
                edit(
                    ATTEND,
                    "pair = key_mask[:, None, :, None] & key_mask[:, None, None, :]\n"
                    "scores = (q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5).masked_fill(~pair, float('-inf'))\n"
                    "weights = torch.softmax(scores, dim=-1)\n"
                    "heads = weights @ v",
                ),
            ),
            (
                "padding_zeroed_after_softmax",
                "hide the padded keys BEFORE the softmax (a score of -inf, as masked_attention does); zeroing their "
                "weights afterwards leaves each row's weights summing to less than 1.",
                edit(
                    ATTEND,
                    "weights = torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, dim=-1) "
                    "* key_mask[:, None, None, :]\n"
                    "heads = weights @ v",
                ),
            ),
            (
                "softmax_without_max_subtraction",
                "exp of a score above ~88 overflows float32 to inf, and inf / inf is NaN: subtract each row's maximum "
                "before exp (the scores' shift cancels in the ratio), or use torch.softmax or the course's softmax.",
                edit(
                    ATTEND,
                    "scores = (q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5).masked_fill(~key_mask[:, None, None, :], "
                    "float('-inf'))\n"
                    "weights = torch.exp(scores) / torch.exp(scores).sum(dim=-1, keepdim=True)\n"
                    "heads = weights @ v",
                ),
            ),
        ),
    )
)

# ---------------------------------------------------------------- encoder_feed_forward


def _feed_forward_cases() -> list[Case]:
    weights = load_weights()
    hidden_states, _ = _real_hidden_states()
    last = weights.config.n_layers - 1
    one, _ = _small_batch(4, [3], seed=2, scale=3.0)  # spread the pre-activations over GELU's curved part
    three, _ = _small_batch(6, [4, 4, 4], seed=5, scale=3.0)
    return [
        Case((one, EncoderLayerWeights.random(4, 8, seed=2)), label="one sentence of 3 tokens, d_model 4, d_ff 8"),
        Case((three, EncoderLayerWeights.random(6, 10, seed=5)), label="3 sentences of 4 tokens, d_model 6, d_ff 10"),
        Case((hidden_states[1], weights.layers[0]), label=_real_label(0).replace(", 12 heads", "")),
        Case((hidden_states[last], weights.layers[last]), label=_real_label(last).replace(", 12 heads", "")),
        Case(
            (_small_batch(4, [2, 2], seed=6, scale=2.0)[0], EncoderLayerWeights.random(4, 6, seed=6)),
            check_grad=True,
            label="gradients: 2 sentences of 2 tokens, d_model 4, d_ff 6",
        ),
    ]


FF = "return F.gelu(hidden @ layer.w_ff1 + layer.b_ff1) @ layer.w_ff2 + layer.b_ff2"

register(
    Exercise(
        name="encoder_feed_forward",
        lesson=LESSON,
        reference=encoder_feed_forward,
        cases=_feed_forward_cases,
        mistakes=catalogue(
            LESSON,
            "encoder_feed_forward",
            (
                "tanh_gelu",
                "BERT uses the exact GELU, x * Phi(x) with the erf (torch.nn.functional.gelu(x)), not the tanh "
                "approximation (approximate='tanh'); the difference is small but grows through six layers.",
                edit(
                    FF,
                    "return F.gelu(hidden @ layer.w_ff1 + layer.b_ff1, approximate='tanh') @ layer.w_ff2 + layer.b_ff2",
                ),
            ),
            (
                "relu",
                "the activation is GELU (torch.nn.functional.gelu), not ReLU.",
                edit(FF, "return torch.relu(hidden @ layer.w_ff1 + layer.b_ff1) @ layer.w_ff2 + layer.b_ff2"),
            ),
            (
                "activation_after_output",
                "apply GELU only between the two linear maps; the second one's output goes out as it is.",
                edit(FF, "return F.gelu(F.gelu(hidden @ layer.w_ff1 + layer.b_ff1) @ layer.w_ff2 + layer.b_ff2)"),
            ),
            (
                "biases_ignored",
                "both linear maps have a bias: (hidden @ w_ff1 + b_ff1), then (... @ w_ff2 + b_ff2).",
                edit(FF, "return F.gelu(hidden @ layer.w_ff1) @ layer.w_ff2"),
            ),
            (
                "detached_output",
                DETACHED_HINT,
                edit(FF, "return (F.gelu(hidden @ layer.w_ff1 + layer.b_ff1) @ layer.w_ff2 + layer.b_ff2).detach()"),
            ),
            (
                "residual_added",
                "return the feed-forward's output before the residual (the encoder adds hidden itself, then "
                "applies its layer norm): no + hidden.",
                edit(FF, "return hidden + F.gelu(hidden @ layer.w_ff1 + layer.b_ff1) @ layer.w_ff2 + layer.b_ff2"),
            ),
            (
                "second_bias_missing",
                "the second linear map has a bias too: (...) @ layer.w_ff2 + layer.b_ff2.",
                edit(FF, "return F.gelu(hidden @ layer.w_ff1 + layer.b_ff1) @ layer.w_ff2"),
            ),
            (
                "first_bias_after_gelu",
                "add b_ff1 before the activation: GELU(hidden @ w_ff1 + b_ff1), not GELU(hidden @ w_ff1) + b_ff1.",
                edit(FF, "return (F.gelu(hidden @ layer.w_ff1) + layer.b_ff1) @ layer.w_ff2 + layer.b_ff2"),
            ),
            (
                "sigmoid_gelu",
                "use the exact GELU, x * Phi(x) with the erf (F.gelu(x)); x * sigmoid(1.702 x) is an approximation "
                "that differs by up to ~0.02.",
                edit(
                    FF,
                    "h = hidden @ layer.w_ff1 + layer.b_ff1\n"
                    "return h * torch.sigmoid(1.702 * h) @ layer.w_ff2 + layer.b_ff2",
                ),
            ),
        ),
    )
)

# ---------------------------------------------------------------- mean_pooling


def _pooling_cases() -> list[Case]:
    hidden_states, key_mask = _real_hidden_states()
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 0.0], [9.0, 9.0]], [[0.0, 4.0], [2.0, 2.0], [4.0, 0.0]]])
    left, left_mask = _small_batch(5, [4, 2, 1], seed=7, left=True)
    return [
        Case(
            (hidden, torch.tensor([[True, True, False], [True, True, True]])),
            label="hidden (2, 3, 2), the first sentence padded: key_mask [[True, True, False], [True, True, True]]",
        ),
        Case(
            (hidden, torch.tensor([[False, True, True], [True, True, True]])),
            label="hidden (2, 3, 2), the first sentence padded on the LEFT: key_mask [[False, True, True], [True, True, True]]",
        ),
        Case((left, left_mask), label="hidden (3, 4, 5), sentences of 4, 2 and 1 tokens padded on the left"),
        Case(
            (_small_batch(3, [4], seed=8)[0], torch.ones(1, 4, dtype=torch.bool)),
            label="one sentence of 4 tokens, no padding: hidden (1, 4, 3)",
        ),
        Case((hidden_states[-1], key_mask), label="all-MiniLM-L6-v2's last hidden states, a padded batch (2, 17, 384)"),
        Case(
            (_small_batch(4, [3, 1], seed=9)[0].double(), _small_batch(4, [3, 1], seed=9)[1]),
            label="float64 hidden (2, 3, 4), sentences of 3 and 1 tokens",
        ),
        Case(
            _small_batch(4, [3, 2], seed=10),
            check_grad=True,
            label="gradients: hidden (2, 3, 4), sentences of 3 and 2 tokens",
        ),
    ]


REAL = "real = key_mask[..., None].to(hidden.dtype)"
MEAN = "mean = (hidden * real).sum(dim=1) / real.sum(dim=1)"
NORMALISE = "return F.normalize(mean, dim=-1)"

register(
    Exercise(
        name="mean_pooling",
        lesson=LESSON,
        reference=mean_pooling,
        cases=_pooling_cases,
        mistakes=catalogue(
            LESSON,
            "mean_pooling",
            (
                "cls_pooling",
                "this model's sentence embedding is the mean of all real tokens, not the [CLS] vector hidden[:, 0].",
                edit(MEAN, "mean = hidden[:, 0]"),
            ),
            (
                "mean_over_padding",
                "average over the real tokens only: weight each token by key_mask and divide by the number of real "
                "tokens, not by L.",
                edit(MEAN, "mean = hidden.mean(dim=1)"),
            ),
            (
                "assumes_right_padding",
                "the real tokens are where key_mask is True, which need not be the first ones (a batch may be padded on "
                "the left): weight every position by key_mask instead of slicing hidden[b, :length].",
                edit(
                    MEAN,
                    "mean = torch.stack([hidden[b, :int(n)].mean(dim=0) for b, n in enumerate(key_mask.sum(dim=1))])",
                ),
            ),
            (
                "not_normalised",
                "divide the mean by its L2 norm (torch.nn.functional.normalize) so every embedding has length 1.",
                edit(NORMALISE, "return mean"),
            ),
            (
                "normalised_over_batch",
                "normalise each sentence's vector on its own: F.normalize(mean, dim=-1), not along the batch axis (dim=0).",
                edit(NORMALISE, "return F.normalize(mean, dim=0)"),
            ),
            ("detached_output", DETACHED_HINT, edit(NORMALISE, "return F.normalize(mean, dim=-1).detach()")),
            (
                "tokens_normalised_first",
                "average the raw token vectors, then scale the average to length 1; normalising each token "
                "before averaging weighs the tokens differently.",
                edit(MEAN, "mean = (F.normalize(hidden, dim=-1) * real).sum(dim=1) / real.sum(dim=1)"),
            ),
            (
                "max_pooling",
                "this model's embedding is the MEAN of the real tokens' vectors, not their element-wise maximum.",
                edit(MEAN, "mean = hidden.masked_fill(real == 0, float('-inf')).amax(dim=1)"),
            ),
        ),
    )
)
