# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Exercise 07 · Cross-attention
#
# Lesson: [07 cross-attention](../notebooks/07_cross_attention.ipynb). One function, followed by a
# check cell that says **PASS**, **TODO** (not done yet) or **FAIL** with a hint.
#
# Weights are stored as in the equations: `q = y @ w_q` with `w_q` of shape `(d_model, d_model)`.

# %%
import torch

import attention_course as ac
from attention_course.grading import check

_ = torch.manual_seed(0)  # the same random numbers on every run

# %% [markdown]
# ## Cross-attention
#
# The decoder asks, the encoder answers:
#
# $$Q = Y W_Q, \quad K = X W_K, \quad V = X W_V, \qquad
#   \mathrm{head}_i = \mathrm{softmax}\!\left(\frac{Q_i K_i^\top}{\sqrt{d_\text{head}}}\right) V_i, \qquad
#   \mathrm{output} = \mathrm{Concat}(\mathrm{head}_1, \dots, \mathrm{head}_h)\, W_O$$
#
# with decoder states $Y$ `(B, T, d_model)` and encoder states $X$ `(B, S, d_model)`. The weights
# are `(B, n_heads, T, S)`. The only mask is `encoder_mask` `(B, S)`, `True` at real source tokens:
# padded source positions get no weight. You may use `ac.split_heads`, `ac.merge_heads` and
# `ac.scaled_dot_product_attention` (or your own from exercise 06).

# %%
def cross_attention(
    decoder_states: torch.Tensor,
    encoder_states: torch.Tensor,
    w_q: torch.Tensor,
    w_k: torch.Tensor,
    w_v: torch.Tensor,
    w_o: torch.Tensor,
    n_heads: int,
    encoder_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Queries from the decoder, keys and values from the encoder.

    decoder_states: (B, T, d_model); encoder_states: (B, S, d_model); w_*: (d_model, d_model);
    encoder_mask: bool (B, S), True at real source tokens, or None.
    Returns (output (B, T, d_model), weights (B, n_heads, T, S)).

    Hints: is there a future to hide here? A per-key mask (B, S) becomes (B, 1, 1, S) to reach
    every head and every decoder position.
    """
    ### BEGIN SOLUTION
    q = ac.split_heads(decoder_states @ w_q, n_heads)  # (B, H, T, d_head)
    k = ac.split_heads(encoder_states @ w_k, n_heads)  # (B, H, S, d_head)
    v = ac.split_heads(encoder_states @ w_v, n_heads)  # (B, H, S, d_head)
    mask = None if encoder_mask is None else encoder_mask[:, None, None, :]  # (B, 1, 1, S)
    heads, weights = ac.scaled_dot_product_attention(q, k, v, mask, return_weights=True)  # no causal mask
    return ac.merge_heads(heads) @ w_o, weights
    ### END SOLUTION


# %%
check("cross_attention", cross_attention)

# %% [markdown]
# Done? Lesson [08 positional encodings](../notebooks/08_positional_encodings.ipynb) shows why
# the toy model of lesson 07 needed position embeddings at all.
