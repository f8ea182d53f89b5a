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
# # Exercise 05 · Masks and masked attention
#
# Lesson: [05 masking](../notebooks/05_masking.ipynb). Three functions, each followed by a check
# cell that says **PASS**, **TODO** (not done yet) or **FAIL** with a hint.
#
# Convention used throughout the course: a boolean mask is `True` where attention is **allowed**.

# %%
import math

import torch

from attention_course.grading import check

_ = torch.manual_seed(0)  # the same random numbers on every run

# %% [markdown]
# ## 1. The causal mask
#
# A decoder trains on all positions at once, so query $i$ must not see keys $j > i$ (the future).
# Rows are queries, columns are keys. With more keys than queries, align at the top-left like
# PyTorch: query $i$ sees keys $0 \dots i$.

# %%
def causal_mask(n_queries: int, n_keys: int | None = None) -> torch.Tensor:
    """Boolean (n_queries, n_keys) mask, True where key j <= query i. n_keys defaults to n_queries.

    Hint: `torch.ones(..., dtype=torch.bool)` and `.tril()`.
    """
    ### BEGIN SOLUTION
    n_keys = n_queries if n_keys is None else n_keys
    return torch.ones(n_queries, n_keys, dtype=torch.bool).tril()
    ### END SOLUTION


# %%
check("causal_mask", causal_mask)

# %% [markdown]
# ## 2. The padding mask
#
# A batch holds sequences of different lengths, padded to the same length `max_len`. Mark the
# real tokens: `True` at positions `0 .. length-1` of each sequence, `False` at the padding.

# %%
def padding_mask(lengths: torch.Tensor, max_len: int | None = None) -> torch.Tensor:
    """Boolean (B, max_len) mask, True at real tokens. lengths: int (B,); max_len defaults to lengths.max().

    Hint: compare `torch.arange(max_len)` with `lengths[:, None]` (broadcasting builds the matrix).
    """
    ### BEGIN SOLUTION
    max_len = int(lengths.max()) if max_len is None else max_len
    return torch.arange(max_len) < lengths[:, None]
    ### END SOLUTION


# %%
check("padding_mask", padding_mask)

# %% [markdown]
# ## 3. Masked attention
#
# $$\mathrm{weights} = \mathrm{softmax}\!\left(\frac{QK^\top}{\sqrt{d_k}}
#   \;\text{with } -\infty \text{ where the mask is False}\right), \qquad
#   \mathrm{output} = \mathrm{weights}\, V$$
#
# A query whose keys are **all** masked has nothing to attend to: give it zero weights and a zero
# output (plain `torch.softmax` would give NaN there).

# %%
def masked_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scaled dot-product attention under a boolean mask.

    q: (..., L, d_k), k: (..., S, d_k), v: (..., S, d_v); mask: bool, broadcastable to (..., L, S),
    True = may attend (or None). Returns (output (..., L, d_v), weights (..., L, S)).

    Hints: mask the *scores* (before the softmax) with `masked_fill(~mask, float("-inf"))`;
    a query whose keys are all masked must get zero weights and a zero output, but its row of
    scores is all -inf and softmax gives 0/0 = NaN there (torch.softmax, and the softmax of
    exercise 04, which does not handle such rows): `torch.nan_to_num(weights, nan=0.0)` fixes it,
    or use the course's `attention_course.softmax`, which returns zeros for them.
    """
    ### BEGIN SOLUTION
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (..., L, S)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1).nan_to_num(nan=0.0)  # fully masked rows -> 0
    return weights @ v, weights
    ### END SOLUTION


# %%
check("masked_attention", masked_attention)

# %% [markdown]
# Done? Lesson [06 multi-head attention](../notebooks/06_multi_head_attention.ipynb) runs
# several of these attentions side by side.
