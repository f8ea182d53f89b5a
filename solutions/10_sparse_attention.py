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
# # Exercise 10 · Sparse attention
#
# Lesson: [10 sparse attention](../notebooks/10_sparse_attention.ipynb). Three functions, each
# followed by a check cell that says **PASS**, **TODO** (not done yet) or **FAIL** with a hint.
#
# Conventions: rows are queries $i$, columns are keys $j$; a boolean mask is `True` where
# attention is **allowed**; a query with no allowed key gets a zero output.

# %%
from collections.abc import Callable

import torch

from attention_course import scaled_dot_product_attention
from attention_course.grading import check

_ = torch.manual_seed(0)  # the same random numbers on every run

# %% [markdown]
# ## 1. The sliding-window mask
#
# Each query sees the keys at most `window` positions away:
#
# $$M_{ij} = \lvert i - j \rvert \le w \qquad\text{and, when causal,}\qquad 0 \le i - j \le w .$$
#
# So `window=1` lets a token see itself and its two neighbours (only its left neighbour when causal).

# %%
def sliding_window_mask(n: int, window: int, causal: bool = False) -> torch.Tensor:
    """Boolean (n, n) mask, True where |i - j| <= window (and j <= i when causal).

    Hint: `offset = torch.arange(n)[:, None] - torch.arange(n)[None, :]` holds i - j for every pair.
    """
    ### BEGIN SOLUTION
    offset = torch.arange(n)[:, None] - torch.arange(n)[None, :]  # (n, n): i - j
    if causal:
        return (offset >= 0) & (offset <= window)
    return offset.abs() <= window
    ### END SOLUTION


# %%
check("sliding_window_mask", sliding_window_mask)

# %% [markdown]
# ## 2. Global + local (Longformer)
#
# A few **global** tokens (a `[CLS]` token, the question in question answering) are linked to
# everything: a global token reads every token (a full **row**) and every token reads it (a full
# **column**). All other pairs follow the sliding window:
#
# $$M_{ij} = \lvert i-j \rvert \le w \;\lor\; i \in G \;\lor\; j \in G, \qquad \text{and } j \le i \text{ when causal.}$$

# %%
def global_local_mask(n: int, window: int, global_tokens: list[int], causal: bool = False) -> torch.Tensor:
    """Boolean (n, n) mask: the sliding window, plus full rows and columns at the global positions.

    global_tokens: positions in [0, n). With causal, no query may see a later key, global or not.
    Hint: a boolean vector `is_global` (n,) indexed as `is_global[:, None]` (rows) and `is_global[None, :]` (columns).
    """
    ### BEGIN SOLUTION
    is_global = torch.zeros(n, dtype=torch.bool)
    is_global[list(global_tokens)] = True
    offset = torch.arange(n)[:, None] - torch.arange(n)[None, :]
    allowed = (offset.abs() <= window) | is_global[:, None] | is_global[None, :]
    return allowed & (offset >= 0) if causal else allowed
    ### END SOLUTION


# %%
check("global_local_mask", global_local_mask)

# %% [markdown]
# ## 3. Block-sparse attention
#
# Cut the queries and the keys into blocks of `block_size`. `layout[I, J]` says whether query
# block $I$ needs anything from key block $J$. For each query block:
#
# 1. gather the keys (and values) of the blocks its layout row marks `True`;
# 2. inside those tiles, hide the pairs that `causal` ($j > i$) or `mask_fn(i, j) == False` forbid;
# 3. run ordinary attention over the gathered keys: **one** softmax over the whole row, not one per tile.
#
# A query block whose layout row is empty gets zeros. Never build the full $L \times S$ matrix.

# %%
def block_sparse_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    layout: torch.Tensor,
    block_size: int,
    *,
    mask_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    causal: bool = False,
    scale: float | None = None,
) -> torch.Tensor:
    """Attention over the tiles marked in layout only.

    q: (..., L, d_k); k: (..., S, d_k); v: (..., S, d_v); layout: bool (ceil(L / B), ceil(S / B)).
    mask_fn(q_idx, k_idx) -> bool, on broadcasting index tensors (e.g. q_idx (B, 1), k_idx (1, m)).
    Returns (..., L, d_v). The last block is shorter when block_size does not divide L or S.
    Hint: `scaled_dot_product_attention(q_blk, k_sel, v_sel, allowed, scale=scale)` from the course
    does step 3 (and gives zeros for a row with no allowed key); `k.index_select(-2, k_idx)` gathers keys.
    """
    ### BEGIN SOLUTION
    n_queries, n_keys = q.shape[-2], k.shape[-2]
    outputs = []
    for qb in range(layout.shape[0]):
        q_idx = torch.arange(qb * block_size, min((qb + 1) * block_size, n_queries))
        key_blocks = layout[qb].nonzero().flatten().tolist()
        if not key_blocks:
            outputs.append(torch.zeros(*q.shape[:-2], len(q_idx), v.shape[-1]))
            continue
        k_idx = torch.cat([torch.arange(kb * block_size, min((kb + 1) * block_size, n_keys)) for kb in key_blocks])
        allowed = torch.ones(len(q_idx), len(k_idx), dtype=torch.bool)  # (B, gathered keys)
        if causal:
            allowed = allowed & (k_idx[None, :] <= q_idx[:, None])
        if mask_fn is not None:
            allowed = allowed & mask_fn(q_idx[:, None], k_idx[None, :])
        outputs.append(scaled_dot_product_attention(
            q[..., q_idx, :], k.index_select(-2, k_idx), v.index_select(-2, k_idx), allowed, scale=scale))
    return torch.cat(outputs, dim=-2)
    ### END SOLUTION


# %%
check("block_sparse_attention", block_sparse_attention)

# %% [markdown]
# ## Done?
#
# Grade everything at once from a terminal: `attention-course grade exercises/10_sparse_attention.ipynb`.
# Back to the lesson: [10 sparse attention](../notebooks/10_sparse_attention.ipynb).
