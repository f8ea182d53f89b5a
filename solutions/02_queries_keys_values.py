# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Exercise 02 · Queries, keys, values and their scores
#
# Lesson: [02 queries, keys, values](../notebooks/02_queries_keys_values.ipynb). Write each
# function in its cell, then run the check cell right under it: it says **PASS**, **TODO** (not
# done yet) or **FAIL** with a hint and a small example that goes wrong.
#
# Run `attention-course grade exercises/02_queries_keys_values.ipynb` in a terminal to grade the
# whole notebook.

# %%
import math

import torch

from attention_course.grading import check

_ = torch.manual_seed(0)

# %% [markdown]
# ## 1. Project embeddings to queries, keys and values
#
# Every token embedding $x_i$ (a row of $X$) is multiplied by three learned matrices:
#
# $$Q = X W_Q, \qquad K = X W_K, \qquad V = X W_V$$
#
# | tensor | shape |
# |---|---|
# | `x` | `(..., L, d_model)`: any number of leading batch axes, then L tokens |
# | `w_q`, `w_k` | `(d_model, d_k)` |
# | `w_v` | `(d_model, d_v)` |
# | `q`, `k` | `(..., L, d_k)` |
# | `v` | `(..., L, d_v)` |
#
# The weights are stored the way the equation is written (`d_model` rows), so no transpose is needed.

# %%
def qkv_projection(
    x: torch.Tensor, w_q: torch.Tensor, w_k: torch.Tensor, w_v: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Queries, keys and values of the embeddings `x`.

    x: (..., L, d_model); w_q, w_k: (d_model, d_k); w_v: (d_model, d_v).
    Returns the tuple (q, k, v) with shapes (..., L, d_k), (..., L, d_k), (..., L, d_v).

    Hint: `@` multiplies the last axis of its left operand with the first axis of a 2-D right
    operand, and carries the leading batch axes of `x` along.
    """
    ### BEGIN SOLUTION
    return x @ w_q, x @ w_k, x @ w_v
    ### END SOLUTION


# %%
check("qkv_projection", qkv_projection)

# %% [markdown]
# ## 2. Score every query against every key
#
# The score of query $i$ for key $j$ is their dot product; all of them at once form the matrix
#
# $$S = Q K^\top, \qquad S_{ij} = q_i \cdot k_j = \sum_{c=1}^{d_k} q_{ic}\, k_{jc}$$
#
# `q` is `(..., L, d_k)` and `k` is `(..., S, d_k)`; the scores are `(..., L, S)`: one row per
# query, one column per key. The leading axes (batch, heads) may differ in size where one of them
# is 1 (they broadcast). Leave the $1/\sqrt{d_k}$ scaling out: that is the next lesson.

# %%
def attention_scores(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Raw scores S = Q K^T.

    q: (..., L, d_k); k: (..., S, d_k). Returns (..., L, S) with scores[..., i, j] = q_i · k_j.

    Hint: transpose only the last two axes of `k`, so that batch axes stay where they are.
    """
    ### BEGIN SOLUTION
    return q @ k.transpose(-2, -1)
    ### END SOLUTION


# %%
check("attention_scores", attention_scores)

# %% [markdown]
# Done? Lesson [03 scaling](../notebooks/03_scaling.ipynb) shows why these scores are divided by
# $\sqrt{d_k}$ before the softmax.
