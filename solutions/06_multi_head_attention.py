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
# # Exercise 06 · Multi-head attention
#
# Lesson: [06 multi-head attention](../notebooks/06_multi_head_attention.ipynb). Three functions,
# each followed by a check cell that says **PASS**, **TODO** (not done yet) or **FAIL** with a hint.
#
# Weights are stored as in the equations: `q = x @ w_q` with `w_q` of shape `(d_model, d_model)`.

# %%
import torch

import attention_course as ac
from attention_course.grading import check

_ = torch.manual_seed(0)  # the same random numbers on every run

# %% [markdown]
# ## 1. Split the heads
#
# Cut the last axis of `(B, L, d_model)` into `n_heads` slices of width
# `d_head = d_model // n_heads` and make the heads a batch axis: `(B, n_heads, L, d_head)`.
# Head `h` holds columns `h*d_head : (h+1)*d_head` of every token.

# %%
def split_heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """(B, L, d_model) -> (B, n_heads, L, d_head).

    Hint: a reshape to (B, L, n_heads, d_head), **then** `.transpose(1, 2)`. A reshape straight to
    (B, n_heads, L, d_head) has the right shape but mixes tokens.
    """
    ### BEGIN SOLUTION
    batch, length, d_model = x.shape
    return x.reshape(batch, length, n_heads, d_model // n_heads).transpose(1, 2)
    ### END SOLUTION


# %%
check("split_heads", split_heads)

# %% [markdown]
# ## 2. Merge the heads
#
# The inverse: `(B, n_heads, L, d_head)` back to `(B, L, n_heads * d_head)`, head `h` in columns
# `h*d_head : (h+1)*d_head` of each token.

# %%
def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, n_heads, L, d_head) -> (B, L, n_heads * d_head).

    Hint: transpose back to (B, L, n_heads, d_head) first, then reshape.
    """
    ### BEGIN SOLUTION
    batch, n_heads, length, d_head = x.shape
    return x.transpose(1, 2).reshape(batch, length, n_heads * d_head)
    ### END SOLUTION


# %%
check("merge_heads", merge_heads)

# %% [markdown]
# ## 3. Multi-head attention
#
# $$\mathrm{MHA} = \mathrm{Concat}(\mathrm{head}_1, \dots, \mathrm{head}_h)\, W_O, \qquad
#   \mathrm{head}_i = \mathrm{softmax}\!\left(\frac{Q_i K_i^\top}{\sqrt{d_\text{head}}}\right) V_i$$
#
# Project (`query @ w_q + b_q`, ...), split, attend in every head at once, merge, project with
# `w_o` (+ `b_o`). This cell uses the course's `ac.split_heads`, `ac.merge_heads` and
# `ac.scaled_dot_product_attention`, so that a bug in your split above does not show up here
# twice (swap in your own once they pass).

# %%
def multi_head_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    w_q: torch.Tensor,
    w_k: torch.Tensor,
    w_v: torch.Tensor,
    w_o: torch.Tensor,
    n_heads: int,
    *,
    b_q: torch.Tensor | None = None,
    b_k: torch.Tensor | None = None,
    b_v: torch.Tensor | None = None,
    b_o: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    causal: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Multi-head attention. Returns (output (B, L, d_model), weights (B, n_heads, L, S)).

    query: (B, L, d_model); key, value: (B, S, d_model); w_*: (d_model, d_model); b_*: (d_model,) or None.
    mask: bool broadcastable to (B, n_heads, L, S), True = may attend; causal: hide keys j > i.

    Hints: `ac.scaled_dot_product_attention(q, k, v, mask, causal=causal, return_weights=True)`
    scales by the last dimension of q, which after the split is d_head. Don't forget w_o.
    """
    ### BEGIN SOLUTION
    def project(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        return x @ w if b is None else x @ w + b

    q = ac.split_heads(project(query, w_q, b_q), n_heads)  # (B, H, L, d_head)
    k = ac.split_heads(project(key, w_k, b_k), n_heads)  # (B, H, S, d_head)
    v = ac.split_heads(project(value, w_v, b_v), n_heads)  # (B, H, S, d_head)
    heads, weights = ac.scaled_dot_product_attention(q, k, v, mask, causal=causal, return_weights=True)
    return project(ac.merge_heads(heads), w_o, b_o), weights
    ### END SOLUTION


# %%
check("multi_head_attention", multi_head_attention)

# %% [markdown]
# Done? Lesson [07 cross-attention](../notebooks/07_cross_attention.ipynb) lets the queries come
# from one sequence and the keys and values from another.
